//! The service assembled: store, poller and admin API, run until shutdown.

use crate::api::{self, AppState, Limits};
use crate::backend::Backend;
use crate::cluster::PgStore;
use crate::config::Config;
use crate::delivery::{Engine, Sender};
use crate::metrics::Metrics;
use crate::poller::{PollSettings, Poller};
use crate::retention;
use crate::room::RoomId;
use crate::store::Store;
use crate::upstream::UpstreamClient;
use anyhow::Context;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Run the relay on `listener` until `shutdown` resolves, then drain: stop
/// polling, let work in flight finish within the grace period, flush the store.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    run_with_store(config, store, listener, shutdown).await
}

/// Open the store and prove it can be written, or say why not: PostgreSQL
/// when `RELAY_DATABASE_URL` is set, else sled in `RELAY_DATA_DIR`.
pub async fn open_store(config: &Config) -> anyhow::Result<Backend> {
    if let Some(url) = &config.database_url {
        let instance = config.instance_id.clone().unwrap_or_else(default_instance);
        // Room tasks, the engine, the API and leases share the pool.
        let size = (config.delivery_concurrency / 4).clamp(4, 32);
        let db = PgStore::open(&url.0, instance, size)
            .await
            .context("RELAY_DATABASE_URL: cannot open the database")?;
        info!(
            instance = db.instance(),
            "cluster mode: state in PostgreSQL"
        );
        return Ok(db.into());
    }
    prepare_data_dir(&config.data_dir)?;
    let dir = config.data_dir.display();
    let store = Store::open(&config.data_dir, config.cache_capacity)
        .with_context(|| format!("RELAY_DATA_DIR: cannot open the store in {dir}"))?;
    store.check_writable().await.with_context(|| {
        format!("RELAY_DATA_DIR: cannot write to the store in {dir} (read-only or full?)")
    })?;
    Ok(store.into())
}

/// A name for this process in leases: its host, its pid, and a random tail
/// (two processes must never share one, even after a pid is reused).
fn default_instance() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "relay".into());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// Webhook secrets live in the data dir: create it readable by this user
/// only, and warn when an existing one is open to the group or the world.
fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("RELAY_DATA_DIR: cannot create {}", dir.display()))?;
        return Ok(());
    }
    if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode();
        if meta.is_dir() && mode & 0o077 != 0 {
            warn!(
                dir = %dir.display(),
                mode = format!("{:o}", mode & 0o777),
                "the data directory holds webhook secrets and is readable by other users: chmod 700 it"
            );
        }
    }
    Ok(())
}

/// [`run`] with a store that is already open.
pub async fn run_with_store(
    config: Config,
    store: Backend,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (org_id, admin_token) = config.require_serve()?;
    let client = UpstreamClient::new(
        config.api_url.clone(),
        org_id.clone(),
        config.upstream_timeout,
    );
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let wake = Arc::new(Notify::new());
    let metrics = Arc::new(Metrics::default());
    let poller = Poller::new(
        client,
        store.clone(),
        PollSettings {
            interval: config.poll_interval,
            backoff_max: config.poll_backoff_max,
            max_in_flight: config.max_in_flight,
            max_rps: config.max_rps,
            initial_events: config.initial_events,
            budget: config.poll_budget,
            interval_max: config.poll_interval_max,
            lease_ttl: config.lease_ttl,
        },
        wake.clone(),
        metrics.clone(),
        cancel.clone(),
        tracker.clone(),
    );
    for raw in &config.rooms {
        let room = RoomId::parse(raw.as_str()).context("RELAY_ROOMS")?;
        poller.watch(&room).await?;
    }
    let watched = poller.start().await?;
    let engine = Engine::new(
        store.clone(),
        Sender::new(
            config.delivery_timeout,
            config.allow_private_targets,
            config.webhook_proxy.as_ref(),
            2 * config.delivery_concurrency,
        ),
        config.retry_schedule.clone(),
        config.delivery_concurrency,
        wake.clone(),
        metrics.clone(),
    );
    tracker.spawn(engine.run(cancel.clone(), tracker.clone()));
    tracker.spawn(retention::run(
        store.clone(),
        config.retention,
        cancel.clone(),
    ));
    let state = AppState {
        store: store.clone(),
        poller,
        admin_token: admin_token.clone(),
        org_id: org_id.clone(),
        allow_private_targets: config.allow_private_targets,
        wake,
        limits: Limits {
            max_subscriptions: config.max_subscriptions,
            max_rooms: config.max_rooms,
            max_body: config.max_body,
            request_timeout: config.request_timeout,
            ready_max_backlog: config.ready_max_backlog,
            max_requests: config.max_requests,
            cors_origins: config
                .cors_origins
                .iter()
                .filter_map(|o| axum::http::HeaderValue::from_str(o).ok())
                .collect(),
        },
        metrics,
        shutdown: cancel.clone(),
        ui: Arc::default(),
    };
    let router = api::router(state.clone());
    info!(
        listen = %listener.local_addr()?,
        upstream = %config.api_url,
        rooms = watched,
        interval = ?config.poll_interval,
        "verriflo-relay serving"
    );

    let trigger = cancel.clone();
    let watched_store = store.clone();
    let write_failed = Arc::new(std::sync::Mutex::new(None::<String>));
    let failure = write_failed.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => {}
            reason = watched_store.write_failure() => {
                // Polling on without a disk would see changes it cannot keep.
                tracing::error!(%reason, "the store cannot write to disk: stopping cleanly");
                *failure.lock().unwrap() = Some(reason);
            }
        }
        trigger.cancel();
    });
    let guards = crate::listener::Guards {
        header_timeout: config.header_timeout,
        max_connections: config.max_connections,
    };
    if let Some(addr) = config.public_listen {
        // Bound before serving, so a bad address stops start-up.
        let public = TcpListener::bind(addr)
            .await
            .with_context(|| format!("RELAY_PUBLIC_LISTEN: cannot listen on {addr}"))?;
        info!(listen = %addr, "public listener: drop-in status route and health checks only");
        let stop = cancel.clone().cancelled_owned();
        tokio::spawn(crate::listener::serve(
            public,
            api::public_router(state),
            guards,
            stop,
        ));
    }
    crate::listener::serve(listener, router, guards, cancel.clone().cancelled_owned())
        .await
        .context("admin API server failed")?;

    info!("shutting down: polling stopped, draining work in flight");
    cancel.cancel();
    tracker.close();
    if tokio::time::timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        warn!(grace = ?config.shutdown_grace, "work still in flight after the grace period; it will be retried after restart");
    }
    if let Some(reason) = write_failed.lock().unwrap().take() {
        anyhow::bail!("RELAY_DATA_DIR: the store cannot write to disk ({reason}); stopped cleanly, nothing flushed is lost");
    }
    store.flush().await.context("flushing the store")?;
    info!("store flushed; bye");
    Ok(())
}
