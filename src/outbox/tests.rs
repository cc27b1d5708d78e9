//! The outbox against a simple model: random operation sequences on a real
//! sled store, every invariant checked after every step.

use super::check::check;
use super::index::LaneId;
use super::model::{Attempt, DeliveryStatus, Verdict};
use super::{Completion, Health, Outbox};
use crate::room::{RoomId, RoomStatus};
use crate::store::Store;
use crate::subscription::Subscription;
use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};

const ROOMS: [&str; 2] = ["r1", "r/2 ü"];

fn status(room: &str, n: u64) -> RoomStatus {
    RoomStatus::live_for_tests(room, n)
}

fn sub(id: &str, now: DateTime<Utc>) -> Subscription {
    Subscription::new(id.into(), "http://x/".into(), vec![], vec![], None, now)
}

#[derive(Clone, Debug)]
enum Op {
    Poll(usize),
    Test(usize),
    Claim(usize),
    Complete(usize, u8),
    Retry(usize),
    Replay(usize),
    Disable(usize),
    Enable(usize),
    Delete(usize),
    Create,
    Prune,
    Reopen,
    Advance(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..ROOMS.len()).prop_map(Op::Poll),
        1 => (0usize..3).prop_map(Op::Test),
        4 => (1usize..4).prop_map(Op::Claim),
        4 => (0usize..4, 0u8..4).prop_map(|(i, v)| Op::Complete(i, v)),
        2 => (0usize..64).prop_map(Op::Retry),
        1 => (0usize..3).prop_map(Op::Replay),
        1 => (0usize..3).prop_map(Op::Disable),
        1 => (0usize..3).prop_map(Op::Enable),
        1 => (0usize..3).prop_map(Op::Delete),
        1 => Just(Op::Create),
        1 => Just(Op::Prune),
        1 => Just(Op::Reopen),
        2 => (0u8..30).prop_map(Op::Advance),
    ]
}

/// The world the model keeps beside the outbox.
struct World {
    _dir: tempfile::TempDir,
    store: Option<Store>,
    now: DateTime<Utc>,
    counts: [u64; ROOMS.len()],
    subs: Vec<String>,
    in_flight: Vec<super::Claim>,
    /// Deliveries that a replay or retry made: they may go out of order.
    manual: BTreeSet<String>,
    /// Per lane, the last sequence whose first attempt was made.
    first_attempts: HashMap<LaneId, u64>,
    next_sub: usize,
    rt: tokio::runtime::Runtime,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::TempDir::new().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let now = Utc::now();
        for r in ROOMS {
            let room = RoomId::parse(r).unwrap();
            store.watch(&room, now).unwrap();
            store.record_poll(&room, &status(r, 0), now, false).unwrap();
        }
        let mut w = World {
            _dir: dir,
            store: Some(store),
            now,
            counts: [0; ROOMS.len()],
            subs: Vec::new(),
            in_flight: Vec::new(),
            manual: BTreeSet::new(),
            first_attempts: HashMap::new(),
            next_sub: 0,
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
        };
        w.create();
        w
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    fn outbox(&self) -> &Outbox {
        self.store().outbox()
    }

    fn create(&mut self) {
        let id = format!("sub_{:02}", self.next_sub);
        self.next_sub += 1;
        self.outbox()
            .create_subscription(sub(&id, self.now), 10)
            .unwrap()
            .unwrap();
        self.subs.push(id);
    }

    fn pick_sub(&self, i: usize) -> Option<String> {
        (!self.subs.is_empty()).then(|| self.subs[i % self.subs.len()].clone())
    }

    fn apply(&mut self, op: Op) -> Result<(), String> {
        let now = self.now;
        match op {
            Op::Poll(r) => {
                self.counts[r] += 1;
                let room = RoomId::parse(ROOMS[r]).unwrap();
                self.store()
                    .record_poll(&room, &status(ROOMS[r], self.counts[r]), now, false)
                    .unwrap();
            }
            Op::Test(i) => {
                if let Some(id) = self.pick_sub(i) {
                    let event = test_event(self.store(), &id, now);
                    assert!(self
                        .outbox()
                        .enqueue_test(&id, event, now)
                        .unwrap()
                        .is_some());
                }
            }
            Op::Claim(n) => {
                let claims = self.outbox().claim(now, n).unwrap().claims;
                for c in &claims {
                    if c.delivery.attempts.is_empty() && !self.manual.contains(&c.delivery.id) {
                        let seq = c.delivery.sequence.unwrap_or(0);
                        let last = self.first_attempts.entry(c.lane.clone()).or_insert(0);
                        if seq < *last {
                            return Err(format!("first attempt of seq {seq} after {last}"));
                        }
                        *last = seq;
                    }
                    if self.in_flight.iter().any(|f| f.lane == c.lane) {
                        return Err("two heads of one lane in flight".into());
                    }
                }
                self.in_flight.extend(claims);
            }
            Op::Complete(i, v) => {
                if self.in_flight.is_empty() {
                    return Ok(());
                }
                let claim = self.in_flight.remove(i % self.in_flight.len());
                let (verdict, health) = match v {
                    0 => (Verdict::Succeeded, Health::Success),
                    1 => (Verdict::Failed, Health::Failure),
                    2 => (
                        Verdict::RetryAt(now + Duration::seconds(5)),
                        Health::Failure,
                    ),
                    _ => (Verdict::Hold, Health::Gone),
                };
                let attempt = Attempt {
                    at: now,
                    status_code: Some(200),
                    error: None,
                    duration_ms: 1,
                    response: None,
                };
                let c = Completion {
                    claim,
                    attempt,
                    verdict,
                    health,
                };
                self.outbox().complete(vec![c], now).unwrap();
            }
            Op::Retry(i) => {
                let failed: Vec<_> = self
                    .outbox()
                    .all_deliveries()
                    .into_iter()
                    .filter(|d| d.status == DeliveryStatus::Failed)
                    .collect();
                if !failed.is_empty() {
                    let d = &failed[i % failed.len()];
                    if let super::Retried::Queued(d) =
                        self.outbox().retry(&d.subscription_id, &d.id).unwrap()
                    {
                        self.manual.insert(d.id);
                    }
                }
            }
            Op::Replay(i) => {
                if let Some(id) = self.pick_sub(i) {
                    let s = self.outbox().subscription(&id).unwrap();
                    let before: BTreeSet<String> = self
                        .outbox()
                        .all_deliveries()
                        .into_iter()
                        .map(|d| d.id)
                        .collect();
                    self.outbox()
                        .replay(&s, now - Duration::days(1), now)
                        .unwrap();
                    for d in self.outbox().all_deliveries() {
                        if !before.contains(&d.id) {
                            self.manual.insert(d.id);
                        }
                    }
                }
            }
            Op::Disable(i) | Op::Enable(i) => {
                if let Some(id) = self.pick_sub(i) {
                    let on = matches!(op, Op::Enable(_));
                    self.outbox()
                        .update_subscription(&id, now, |s| s.enabled = on)
                        .unwrap();
                }
            }
            Op::Delete(i) => {
                if let Some(id) = self.pick_sub(i) {
                    assert!(self.outbox().delete_subscription(&id).unwrap());
                    self.subs.retain(|s| s != &id);
                }
            }
            Op::Create => {
                if self.subs.len() < 3 {
                    self.create();
                }
            }
            Op::Prune => {
                let later = now + Duration::days(40);
                let retention = std::time::Duration::from_secs(86400);
                self.rt
                    .block_on(crate::retention::prune_once(self.store(), later, retention))
                    .unwrap();
                // Retention kept exactly what pending deliveries need.
                let needed: BTreeSet<String> = self
                    .outbox()
                    .all_deliveries()
                    .into_iter()
                    .map(|d| {
                        if d.status != DeliveryStatus::Pending {
                            return Err(format!("finished delivery {} kept", d.id));
                        }
                        Ok(d.event_id)
                    })
                    .collect::<Result<_, _>>()?;
                let left: BTreeSet<String> = self
                    .store()
                    .list_events(&crate::store::EventFilter {
                        limit: 10_000,
                        ..Default::default()
                    })
                    .unwrap()
                    .events
                    .into_iter()
                    .map(|e| e.id)
                    .collect();
                if needed != left {
                    return Err(format!("retention kept {left:?}, pending need {needed:?}"));
                }
            }
            Op::Reopen => {
                // A crash: claims in flight are lost and will be made again.
                self.in_flight.clear();
                self.first_attempts.clear();
                let store = self.store.take().unwrap();
                self.rt.block_on(store.flush()).unwrap();
                self.store = Some(store.reopen().unwrap());
            }
            Op::Advance(s) => self.now = now + Duration::seconds(s as i64),
        }
        check(self.outbox())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_outbox_keeps_its_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let mut world = World::new();
        for (i, op) in ops.into_iter().enumerate() {
            let shown = format!("{op:?}");
            if let Err(e) = world.apply(op) {
                prop_assert!(false, "step {i} ({shown}): {e}");
            }
        }
    }
}

fn test_event(store: &Store, sub: &str, now: DateTime<Utc>) -> crate::event::Event {
    crate::event::Event {
        id: crate::ids::event_id(store.next_ulid().into()),
        kind: crate::event::EventType::WebhookTest,
        timestamp: now,
        data: serde_json::json!({ "subscriptionId": sub }),
    }
}

#[test]
fn a_test_parked_on_a_failing_endpoint_never_holds_up_the_next() {
    let mut w = World::new();
    w.apply(Op::Test(0)).unwrap();
    w.apply(Op::Claim(1)).unwrap();
    w.apply(Op::Complete(0, 2)).unwrap(); // retrying in 5 s
    w.apply(Op::Test(0)).unwrap();
    let claims = w.outbox().claim(w.now, 5).unwrap().claims;
    assert_eq!(claims.len(), 1, "the new test goes out now");
    assert!(claims[0].delivery.attempts.is_empty());
}

#[test]
fn a_retry_behind_a_retrying_head_goes_first_and_the_lane_moves_on() {
    let mut w = World::new();
    // Event 1 fails for good; event 2 is retrying when 1 is retried by hand.
    w.apply(Op::Poll(0)).unwrap();
    w.apply(Op::Claim(1)).unwrap();
    w.apply(Op::Complete(0, 1)).unwrap();
    w.apply(Op::Poll(0)).unwrap();
    w.apply(Op::Claim(1)).unwrap();
    w.apply(Op::Complete(0, 2)).unwrap();
    w.apply(Op::Retry(0)).unwrap();
    let claims = w.outbox().claim(w.now, 5).unwrap().claims;
    assert_eq!(claims.len(), 1);
    assert_eq!(
        claims[0].delivery.sequence,
        Some(1),
        "the retried event goes first"
    );
    w.in_flight.extend(claims);
    w.apply(Op::Complete(0, 0)).unwrap();
    w.apply(Op::Advance(10)).unwrap();
    w.apply(Op::Claim(1)).unwrap();
    assert_eq!(w.in_flight[0].delivery.sequence, Some(2));
    w.apply(Op::Complete(0, 0)).unwrap();
    assert_eq!(w.outbox().pending().0, 0);
}

#[test]
fn replay_then_retry_of_one_event_leaves_nothing_stuck() {
    let mut w = World::new();
    w.apply(Op::Poll(0)).unwrap();
    w.apply(Op::Claim(1)).unwrap();
    w.apply(Op::Complete(0, 1)).unwrap();
    w.apply(Op::Replay(0)).unwrap();
    let failed = w
        .outbox()
        .all_deliveries()
        .into_iter()
        .find(|d| d.status == DeliveryStatus::Failed)
        .unwrap();
    assert!(matches!(
        w.outbox()
            .retry(&failed.subscription_id, &failed.id)
            .unwrap(),
        super::Retried::AlreadyQueued(_)
    ));
    w.apply(Op::Poll(0)).unwrap();
    for _ in 0..2 {
        w.apply(Op::Claim(1)).unwrap();
        w.apply(Op::Complete(0, 0)).unwrap();
    }
    assert_eq!(w.outbox().pending().0, 0);
}

#[test]
fn a_disabled_subscription_does_not_pin_retention() {
    let mut w = World::new();
    w.apply(Op::Poll(0)).unwrap();
    w.apply(Op::Claim(1)).unwrap();
    w.apply(Op::Complete(0, 3)).unwrap(); // 410: disabled, delivery held
    assert!(!w.outbox().subscription("sub_00").unwrap().enabled);
    w.apply(Op::Poll(0)).unwrap(); // not queued for the disabled one
    w.apply(Op::Poll(1)).unwrap();
    w.apply(Op::Prune).unwrap(); // checks that only the held event stays
    assert_eq!(w.outbox().pending().0, 1);
    assert_eq!(w.outbox().deliverable(), 0);
}
