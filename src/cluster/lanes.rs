//! The outbox in PostgreSQL: deliveries queued with their poll's commit,
//! and lanes (one subscription, one room) claimed across the cluster so
//! each lane has one head in flight at a time: FIFO per room per
//! subscriber, as in single-node mode. A claim is held until a deadline; a
//! dead holder's claim expires and its head is claimed again (at least
//! once). Queuing notifies `relay_outbox`, so idle instances wake without
//! polling the database.

use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Transaction};

/// The channel queued work is announced on.
pub const CHANNEL: &str = "relay_outbox";

/// One delivery to queue, in its lane's order.
pub struct NewDelivery<'a> {
    pub id: &'a str,
    pub subscription_id: &'a str,
    pub event_id: &'a str,
    pub room_id: &'a str,
    pub sequence: i64,
}

/// A lane's head, claimed by this instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub id: String,
    pub subscription_id: String,
    pub room_id: String,
    pub event_id: String,
    pub sequence: i64,
}

/// What an attempt at a head came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Succeeded,
    /// The retry schedule is spent.
    Failed,
    /// Try this head again then; the lane waits for it.
    RetryAt(DateTime<Utc>),
}

/// A completion refused: the claim expired and may be another's now.
#[derive(Debug, thiserror::Error)]
pub enum CompleteError {
    #[error("the lane's claim expired: another instance may hold it")]
    ClaimLost,
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// Queue deliveries inside the transaction that commits their events.
pub async fn enqueue(
    tx: &Transaction<'_>,
    deliveries: &[NewDelivery<'_>],
) -> Result<(), tokio_postgres::Error> {
    for d in deliveries {
        tx.execute(
            "INSERT INTO relay_deliveries (id, subscription_id, event_id, room_id, sequence)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subscription_id, event_id) DO NOTHING",
            &[
                &d.id,
                &d.subscription_id,
                &d.event_id,
                &d.room_id,
                &d.sequence,
            ],
        )
        .await?;
        // An idle lane is due now; a busy one keeps its head's time.
        tx.execute(
            "INSERT INTO relay_lanes (subscription_id, room_id, due_at) VALUES ($1, $2, now())
             ON CONFLICT (subscription_id, room_id)
             DO UPDATE SET due_at = COALESCE(relay_lanes.due_at, now())",
            &[&d.subscription_id, &d.room_id],
        )
        .await?;
    }
    if !deliveries.is_empty() {
        // Sent at commit, to every listening instance.
        tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).await?;
    }
    Ok(())
}

/// Claim up to `limit` due lanes nobody holds (or whose holder's claim
/// expired) and return their heads. Instances claiming at once skip each
/// other's rows instead of waiting.
pub async fn claim(
    client: &mut Client,
    me: &str,
    hold: Duration,
    limit: i64,
) -> Result<Vec<Head>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let heads = tx
        .query(
            "WITH picked AS (
                SELECT subscription_id, room_id FROM relay_lanes
                WHERE due_at <= now() AND (claimed_by IS NULL OR claim_until < now())
                ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED),
             claimed AS (
                UPDATE relay_lanes l SET claimed_by = $1,
                    claim_until = now() + make_interval(secs => $2)
                FROM picked
                WHERE l.subscription_id = picked.subscription_id AND l.room_id = picked.room_id
                RETURNING l.subscription_id, l.room_id)
             SELECT c.subscription_id, c.room_id, d.id, d.event_id, d.sequence
             FROM claimed c LEFT JOIN LATERAL (
                SELECT id, event_id, sequence FROM relay_deliveries
                WHERE subscription_id = c.subscription_id AND room_id = c.room_id
                  AND status = 'pending'
                ORDER BY sequence LIMIT 1) d ON TRUE",
            &[&me, &hold.as_secs_f64(), &limit],
        )
        .await?;
    let mut out = Vec::new();
    for row in heads {
        let (sub, room): (String, String) = (row.get(0), row.get(1));
        match row.get::<_, Option<String>>(2) {
            Some(id) => out.push(Head {
                id,
                subscription_id: sub,
                room_id: room,
                event_id: row.get(3),
                sequence: row.get(4),
            }),
            // Nothing pending after all (deleted meanwhile): the lane rests.
            None => {
                tx.execute(
                    "UPDATE relay_lanes SET due_at = NULL, claimed_by = NULL, claim_until = NULL
                     WHERE subscription_id = $1 AND room_id = $2",
                    &[&sub, &room],
                )
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// Record an attempt at a claimed head and release its lane: the next head
/// becomes due (or this one again, later). Refused if the claim expired.
pub async fn complete(
    client: &mut Client,
    me: &str,
    head: &Head,
    outcome: &Outcome,
    attempt: serde_json::Value,
) -> Result<(), CompleteError> {
    let tx = client.transaction().await?;
    let held = tx
        .query_opt(
            "SELECT 1 FROM relay_lanes WHERE subscription_id = $1 AND room_id = $2
               AND claimed_by = $3 AND claim_until > now() FOR UPDATE",
            &[&head.subscription_id, &head.room_id, &me],
        )
        .await?;
    if held.is_none() {
        return Err(CompleteError::ClaimLost);
    }
    let (status, next) = match outcome {
        Outcome::Succeeded => ("succeeded", None),
        Outcome::Failed => ("failed", None),
        Outcome::RetryAt(at) => ("pending", Some(*at)),
    };
    tx.execute(
        "UPDATE relay_deliveries SET status = $2, attempts = attempts || $3::jsonb,
             next_attempt_at = COALESCE($4, next_attempt_at)
         WHERE id = $1",
        &[
            &head.id,
            &status,
            &serde_json::Value::Array(vec![attempt]),
            &next,
        ],
    )
    .await?;
    tx.execute(
        "UPDATE relay_lanes SET claimed_by = NULL, claim_until = NULL,
             due_at = (SELECT next_attempt_at FROM relay_deliveries
                       WHERE subscription_id = $1 AND room_id = $2 AND status = 'pending'
                       ORDER BY sequence LIMIT 1)
         WHERE subscription_id = $1 AND room_id = $2",
        &[&head.subscription_id, &head.room_id],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A connection that listens on [`CHANNEL`]: each notification is one
/// message on the receiver. It ends when the connection does.
pub async fn listen(
    url: &str,
) -> Result<(Client, mpsc::UnboundedReceiver<()>), tokio_postgres::Error> {
    use futures_util::StreamExt;
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "database listener ended");
                    break;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok((client, rx))
}
