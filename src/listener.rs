//! Serving HTTP on a listener with defences against slow and idle clients:
//! a deadline for each request's headers (which also ends idle keep-alive
//! connections), a cap on open connections, and a graceful drain.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

#[derive(Clone, Copy, Debug)]
pub struct Guards {
    /// How long a client may take to send a request's headers, and how long
    /// a keep-alive connection may sit idle.
    pub header_timeout: Duration,
    /// Open connections at most; further ones are closed at once.
    pub max_connections: usize,
}

/// Serve `router` on `listener` until `shutdown`, then let requests in
/// progress finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    guards: Guards,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(guards.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(guards.header_timeout);
    tokio::pin!(shutdown);
    let mut warned = false;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, don't spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if !warned {
                warn!(
                    max = guards.max_connections,
                    "connection cap reached; closing new connections"
                );
                warned = true;
            }
            drop(stream);
            continue;
        };
        warned = false;
        let service = TowerToHyperService::new(router.clone());
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "connection closed");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
