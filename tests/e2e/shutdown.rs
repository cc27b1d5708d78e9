//! Shutdown: SIGTERM drains, flushes and exits 0, leaving a store that opens
//! again. (SIGKILL under load is in `chaos.rs`.)

use crate::child::{api, start};
use crate::support::*;
use std::process::Command;

const ROOMS: [&str; 4] = ["c0", "c1", "c2", "c3"];

fn settings() -> Vec<(&'static str, String)> {
    vec![("RELAY_ROOMS", ROOMS.join(","))]
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let up = spawn_upstream().await;
    let dir = tempfile::TempDir::new().unwrap();
    for r in ROOMS {
        up.mock.set_room(idle(r));
    }
    let mut relay = start(&up, dir.path(), &settings()).await;
    let pid = relay.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let status = eventually("the relay to exit", || {
        let done = relay.child.try_wait().unwrap();
        async move { done }
    })
    .await;
    assert_eq!(status.code(), Some(0));
    // The store it left opens again, with its rooms.
    let relay = start(&up, dir.path(), &settings()).await;
    let rooms = api(&relay.base, reqwest::Method::GET, "/v1/rooms", None).await;
    assert_eq!(rooms["data"].as_array().unwrap().len(), ROOMS.len());
    drop(relay);
}
