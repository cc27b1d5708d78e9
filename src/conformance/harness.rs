//! A backend to test, sled in a temporary directory or a fresh PostgreSQL
//! database, that can be reopened as a restart would.

use crate::backend::Backend;
use crate::cluster::lease::Leases;
use crate::cluster::PgStore;
use crate::room::RoomId;
use crate::store::Store;
use std::time::Duration;

/// The instance name the PostgreSQL runs use; a reopen keeps it, as a
/// restarted relay with `RELAY_INSTANCE_ID` would.
const INSTANCE: &str = "conformance";

pub struct Harness {
    pub db: Backend,
    place: Place,
}

enum Place {
    /// Kept so the directory lives as long as the store.
    Sled(#[allow(dead_code)] tempfile::TempDir),
    Postgres(String),
}

impl Harness {
    pub async fn sled() -> Self {
        let dir = tempfile::TempDir::new().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        Self {
            db: store.into(),
            place: Place::Sled(dir),
        }
    }

    pub async fn postgres() -> Self {
        let url = fresh_database().await;
        let db = PgStore::open(&url, INSTANCE.into(), 4).await.unwrap();
        Self {
            db: db.into(),
            place: Place::Postgres(url),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.place, Place::Postgres(_))
    }

    /// Watch `rooms` and, on PostgreSQL, win their leases, so this
    /// instance may commit their polls.
    pub async fn watch(&self, rooms: &[RoomId]) {
        for r in rooms {
            self.db.watch(r).await.unwrap();
        }
        if let Backend::Postgres(p) = &self.db {
            let leases = Leases::new(INSTANCE, Duration::from_secs(600));
            p.lease_round(&leases).await.unwrap();
        }
    }

    /// A restart: everything durable read back, nothing in memory kept.
    pub async fn reopen(&mut self) {
        self.db.flush().await.unwrap();
        self.db = match &self.place {
            Place::Sled(_) => {
                let Backend::Sled(s) = &self.db else {
                    unreachable!()
                };
                s.reopen().unwrap().into()
            }
            Place::Postgres(url) => PgStore::open(url, INSTANCE.into(), 4).await.unwrap().into(),
        };
    }
}

/// A database of its own on the test server.
pub async fn fresh_database() -> String {
    let admin_url = std::env::var("RELAY_TEST_DATABASE_URL")
        .expect("RELAY_TEST_DATABASE_URL: run scripts/test.sh, which starts PostgreSQL");
    let admin = crate::cluster::connect(&admin_url)
        .await
        .expect("the test server answers");
    let name = format!("relay_t_{}", ulid::Ulid::new().to_string().to_lowercase());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}
