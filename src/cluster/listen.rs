//! One connection that LISTENs for the other instances' commits: queued
//! deliveries wake the delivery engine, stored events move the event
//! stream's horizon. It reconnects when the database drops it.

use super::store::{EVENTS_CHANNEL, OUTBOX_CHANNEL};
use crate::db::Result;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_postgres::AsyncMessage;

pub(super) struct Listener {
    events: watch::Sender<u128>,
    outbox: Arc<Notify>,
}

impl Listener {
    /// Listen from now on; `largest` is the largest event id stored so far.
    pub(super) async fn start(url: &str, largest: u128) -> Result<Self> {
        let events = watch::channel(largest).0;
        let outbox = Arc::new(Notify::new());
        // The first connection is made here, so a bad URL fails start-up.
        let first = connect(url, events.clone(), outbox.clone()).await?;
        let (url, ev, ob) = (url.to_string(), events.clone(), outbox.clone());
        tokio::spawn(async move {
            let mut ended = first;
            loop {
                let _ = ended.await;
                // Whatever was missed while away: wake everyone once.
                tracing::warn!("database listener lost its connection; reconnecting");
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Ok(next) = connect(&url, ev.clone(), ob.clone()).await {
                        ended = next;
                        ob.notify_waiters();
                        ob.notify_one();
                        break;
                    }
                }
            }
        });
        Ok(Self { events, outbox })
    }

    pub(super) fn events(&self) -> watch::Receiver<u128> {
        self.events.subscribe()
    }

    pub(super) fn outbox(&self) -> Arc<Notify> {
        self.outbox.clone()
    }
}

/// Connect and LISTEN; the handle resolves when the connection ends.
async fn connect(
    url: &str,
    events: watch::Sender<u128>,
    outbox: Arc<Notify>,
) -> Result<tokio::task::JoinHandle<()>> {
    let config: tokio_postgres::Config = url.parse()?;
    let (client, driven) = match super::wants_tls(&config) {
        true => {
            let (client, connection) = config.connect(super::tls()).await?;
            (client, drive(connection, events, outbox))
        }
        false => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            (client, drive(connection, events, outbox))
        }
    };
    client
        .batch_execute(&format!("LISTEN {OUTBOX_CHANNEL}; LISTEN {EVENTS_CHANNEL}"))
        .await?;
    // The client lives as long as the connection it listens on.
    Ok(tokio::spawn(async move {
        let _client = client;
        let _ = driven.await;
    }))
}

/// Drive a connection, turning its notifications into wake-ups.
fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    events: watch::Sender<u128>,
    outbox: Arc<Notify>,
) -> tokio::task::JoinHandle<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) if n.channel() == OUTBOX_CHANNEL => {
                    outbox.notify_one();
                }
                Ok(AsyncMessage::Notification(n)) if n.channel() == EVENTS_CHANNEL => {
                    if let Ok(k) = n.payload().parse::<u128>() {
                        events.send_if_modified(|v| {
                            let moved = k > *v;
                            *v = (*v).max(k);
                            moved
                        });
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    })
}
