//! The outbox as the API sees it: test events, replays, retries by hand,
//! a subscription's history and the backlog.

use super::keys::*;
use super::{decode, encode, Result, Store};
use crate::delivery::{Delivery, DeliveryStatus};
use crate::event::Event;
use crate::subscription::Subscription;
use chrono::{DateTime, Utc};
use sled::transaction::ConflictableTransactionError as Abort;

use super::deliveries::ms;

impl Store {
    /// Store a `webhook.test` event and queue it for one subscription.
    pub fn enqueue_test(&self, sub_id: &str, event: &Event, now: DateTime<Utc>) -> Result<()> {
        let ek = event_key_of(&event.id).expect("our own id");
        self.in_outbox(|o| {
            o.enqueue(self, event, sub_id, now)?;
            Ok(())
        })?;
        self.events.insert(ek, encode(event))?;
        self.note_queued();
        Ok(())
    }

    /// Queue again every stored event since `since` that `sub` wants, a few
    /// hundred per transaction.
    pub fn replay(
        &self,
        sub: &Subscription,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        const CHUNK: usize = 256;
        let start = u128::from(ulid::Ulid::from_parts(ms(since), 0)).to_be_bytes();
        let mut queued = 0;
        let mut chunk: Vec<Event> = Vec::with_capacity(CHUNK);
        let mut items = self.events.range(start..);
        loop {
            let next = items.next().transpose()?;
            if let Some((_, v)) = &next {
                let event: Event = decode("events", v)?;
                if event.timestamp >= since && sub.wants(&event) {
                    chunk.push(event);
                }
            }
            if chunk.len() >= CHUNK || (next.is_none() && !chunk.is_empty()) {
                queued += self.in_outbox(|o| {
                    let mut n = 0;
                    for event in &chunk {
                        n += usize::from(o.enqueue(self, event, &sub.id, now)?.is_some());
                    }
                    Ok(n)
                })?;
                chunk.clear();
            }
            if next.is_none() {
                break;
            }
        }
        self.note_queued();
        Ok(queued)
    }

    /// Send a failed delivery again: back into its lane, due now.
    pub fn retry_delivery(&self, key: &[u8; 16], now: DateTime<Utc>) -> Result<Option<Delivery>> {
        self.in_outbox(|o| {
            let Some(v) = o.deliveries.get(key)? else {
                return Ok(None);
            };
            let mut d: Delivery = decode("deliveries", &v).map_err(Abort::Abort)?;
            if d.status != DeliveryStatus::Failed {
                return Ok(Some(d));
            }
            d.status = DeliveryStatus::Pending;
            d.schedule_start = d.attempts.len();
            let ek = event_key_of(&d.event_id).unwrap_or_default();
            let lk = lane_key(&d.subscription_id, d.lane(), &ek);
            if o.join_lane(&lane_prefix(&d.subscription_id, d.lane()), lk, key)? {
                d.next_attempt_at = Some(now);
                o.due.insert(&due_key(ms(now), key), &[])?;
            }
            o.deliveries.insert(key, encode(&d))?;
            Ok(Some(d))
        })
        .inspect(|_| self.note_queued())
    }

    /// Pending deliveries (every one waits in a lane) and when the oldest of
    /// them was queued. One pass over the lanes: cost grows with the backlog,
    /// not with history.
    pub fn pending_stats(&self) -> Result<(u64, Option<DateTime<Utc>>)> {
        let mut count = 0;
        let mut oldest: Option<u128> = None;
        for item in self.lanes.iter() {
            let (_, v) = item?;
            count += 1;
            if let Ok(k) = <[u8; 16]>::try_from(v.as_ref()) {
                let id = u128::from_be_bytes(k);
                oldest = Some(oldest.map_or(id, |o| o.min(id)));
            }
        }
        let when = oldest.and_then(|id| {
            let ms = ulid::Ulid::from(id).timestamp_ms();
            DateTime::<Utc>::from_timestamp_millis(ms as i64)
        });
        Ok((count, when))
    }

    /// A subscription's deliveries, newest first, before the cursor.
    pub fn list_deliveries(
        &self,
        sub_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<String>)> {
        let mut prefix = sub_delivery_key(sub_id, &[0; 16]);
        prefix.truncate(sub_id.len() + 1);
        let end = match before.and_then(delivery_key_of) {
            Some(k) => sub_delivery_key(sub_id, &k),
            None => {
                let mut e = prefix.clone();
                e.extend_from_slice(&[0xff; 17]);
                e
            }
        };
        let mut out = Vec::new();
        for item in self.sub_deliveries.range(prefix.clone()..end).rev() {
            let (k, _) = item?;
            let Ok(dk) = <[u8; 16]>::try_from(&k[k.len() - 16..]) else {
                continue;
            };
            if let Some(d) = self.delivery_at(&dk)? {
                out.push(d);
            }
            if out.len() >= limit {
                let next = out.last().map(|d| d.id.clone());
                return Ok((out, next));
            }
        }
        Ok((out, None))
    }
}
