//! The polls' own thread: a single-threaded runtime for the rooms' tasks.
//!
//! Thousands of rooms wake, send a few hundred bytes and sleep again. On
//! the shared multi-threaded runtime every such wake-up may unpark an idle
//! worker, which then looks for work to steal, and the deliveries' bursts
//! delay them. On one thread of their own they run back to back: a poll
//! cost a fifth less CPU (BENCHMARKS.md, issue 11).

use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;

/// Start the thread; returns where to spawn polls. It ends, dropping
/// whatever is still spawned there, when `shutdown` is cancelled or the
/// runtime that called this one stops (a relay dropped without a
/// shutdown, as tests do).
pub(super) fn start(shutdown: &CancellationToken) -> std::io::Result<Handle> {
    let rt = Builder::new_current_thread()
        .enable_all()
        .thread_name("relay-polls")
        .build()?;
    let handle = rt.handle().clone();
    let stop = CancellationToken::new();
    let guard = stop.clone().drop_guard();
    let shutdown = shutdown.clone();
    // Not tracked: it is what lets the tracked polls end.
    tokio::spawn(async move {
        let _stop_with_me = guard;
        shutdown.cancelled().await;
    });
    // The polls log where their starter logs (a test's own subscriber too).
    let logs = tracing::dispatcher::get_default(|d| d.clone());
    std::thread::Builder::new()
        .name("relay-polls".into())
        .spawn(move || {
            tracing::dispatcher::with_default(&logs, || rt.block_on(stop.cancelled()))
        })?;
    Ok(handle)
}
