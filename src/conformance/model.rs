//! The outbox against a simple model, on both backends: random operation
//! sequences, every invariant checked after every step. The same ops and
//! the same observable checks run on sled and on PostgreSQL; each backend
//! adds its own deep check of its storage (sled's index against its trees,
//! PostgreSQL's lanes against its deliveries).

use super::harness::Harness;
use crate::backend::Backend;
use crate::outbox::{Attempt, Claim, Completion, Delivery, DeliveryStatus, Health, Verdict};
use crate::room::{RoomId, RoomStatus};
use crate::subscription::Subscription;
use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};

const ROOMS: [&str; 2] = ["r1", "r/2 ü"];

fn status(room: &str, n: u64) -> RoomStatus {
    RoomStatus::live_for_tests(room, n)
}

/// What a random poll sees: every third answer the class is over, so some
/// commits carry several events (a class starting: started, teacher
/// joined, participants), and a lane's run holds more than one entry.
fn polled(room: &str, n: u64) -> RoomStatus {
    let mut s = status(room, n);
    if n % 3 == 0 {
        s.is_active = false;
        s.has_teacher = Some(false);
        s.participant_count = Some(0);
    }
    s
}

#[derive(Clone, Debug)]
enum Op {
    Poll(usize),
    Test(usize),
    Claim(usize),
    Complete(usize, u8),
    /// Every claim in flight in one batch, the j-th with outcome `v + j`.
    CompleteAll(u8),
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
        2 => (0u8..4).prop_map(Op::CompleteAll),
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

/// A claim's completion with outcome `v` (mod 4): success, failure for
/// good, a retry in 5 s, or 410.
fn completion(claim: Claim, v: u8, now: DateTime<Utc>) -> Completion {
    let (verdict, health) = match v % 4 {
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
    Completion {
        claim,
        attempt,
        verdict,
        health,
    }
}

/// The world the model keeps beside the backend.
struct World {
    h: Harness,
    now: DateTime<Utc>,
    counts: [u64; ROOMS.len()],
    subs: Vec<String>,
    in_flight: Vec<Claim>,
    /// When each claim in flight was made, by delivery id: on PostgreSQL a
    /// claim held past its hold is lost (its holder counts as dead), and
    /// another claim may take the head again.
    claimed_at: HashMap<String, DateTime<Utc>>,
    /// Deliveries that a replay or retry made: they may go out of order.
    manual: BTreeSet<String>,
    /// Per lane, the last sequence whose first attempt was made.
    first_attempts: HashMap<crate::outbox::LaneId, u64>,
    next_sub: usize,
}

impl World {
    async fn new(h: Harness) -> Self {
        let now = Utc::now();
        let rooms: Vec<RoomId> = ROOMS.iter().map(|r| RoomId::parse(*r).unwrap()).collect();
        h.watch(&rooms).await;
        for (r, room) in ROOMS.iter().zip(&rooms) {
            h.db.record_poll(room, &status(r, 0), now, false)
                .await
                .unwrap();
        }
        let mut w = World {
            h,
            now,
            counts: [0; ROOMS.len()],
            subs: Vec::new(),
            in_flight: Vec::new(),
            claimed_at: HashMap::new(),
            manual: BTreeSet::new(),
            first_attempts: HashMap::new(),
            next_sub: 0,
        };
        w.create().await;
        w
    }

    fn db(&self) -> &Backend {
        &self.h.db
    }

    async fn create(&mut self) {
        let id = format!("sub_{:02}", self.next_sub);
        self.next_sub += 1;
        let s = Subscription::new(
            id.clone(),
            "http://x/".into(),
            vec![],
            vec![],
            None,
            self.now,
        );
        assert!(self.db().create_subscription(s, 10).await.unwrap());
        self.subs.push(id);
    }

    fn pick_sub(&self, i: usize) -> Option<String> {
        (!self.subs.is_empty()).then(|| self.subs[i % self.subs.len()].clone())
    }

    async fn all_deliveries(&self) -> Vec<Delivery> {
        let mut out = Vec::new();
        for s in self.db().subscriptions().await.unwrap() {
            let (page, _) = self
                .db()
                .list_deliveries_where(&s.id, None, 10_000, None)
                .await
                .unwrap();
            out.extend(page);
        }
        out
    }

    async fn apply(&mut self, op: Op) -> Result<(), String> {
        let now = self.now;
        match op {
            Op::Poll(r) => {
                self.counts[r] += 1;
                let room = RoomId::parse(ROOMS[r]).unwrap();
                let s = polled(ROOMS[r], self.counts[r]);
                self.db().record_poll(&room, &s, now, false).await.unwrap();
            }
            Op::Test(i) => {
                if let Some(id) = self.pick_sub(i) {
                    let event = crate::event::Event {
                        id: String::new(),
                        kind: crate::event::EventType::WebhookTest,
                        timestamp: now,
                        data: serde_json::json!({ "subscriptionId": id }).into(),
                    };
                    let queued = self.db().enqueue_test(&id, event, now).await.unwrap();
                    assert!(queued.is_some());
                }
            }
            Op::Claim(n) => {
                let claims = self.db().claim(now, n).await.unwrap();
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
                for c in &claims {
                    self.claimed_at.insert(c.delivery.id.clone(), now);
                }
                self.in_flight.extend(claims);
            }
            Op::Complete(i, v) => {
                if self.in_flight.is_empty() {
                    return Ok(());
                }
                let claim = self.in_flight.remove(i % self.in_flight.len());
                let c = completion(claim, v, now);
                self.db().complete(vec![c], now).await.unwrap();
            }
            Op::CompleteAll(v) => {
                let done = std::mem::take(&mut self.in_flight)
                    .into_iter()
                    .enumerate()
                    .map(|(j, claim)| completion(claim, v.wrapping_add(j as u8), now))
                    .collect();
                self.db().complete(done, now).await.unwrap();
            }
            Op::Retry(i) => {
                let failed: Vec<_> = self
                    .all_deliveries()
                    .await
                    .into_iter()
                    .filter(|d| d.status == DeliveryStatus::Failed)
                    .collect();
                if !failed.is_empty() {
                    let d = &failed[i % failed.len()];
                    let retried = self.db().retry(&d.subscription_id, &d.id).await.unwrap();
                    if let crate::outbox::Retried::Queued(d) = retried {
                        self.manual.insert(d.id);
                    }
                }
            }
            Op::Replay(i) => {
                if let Some(id) = self.pick_sub(i) {
                    let s = self.db().subscription(&id).await.unwrap().unwrap();
                    let before: BTreeSet<String> = self
                        .all_deliveries()
                        .await
                        .into_iter()
                        .map(|d| d.id)
                        .collect();
                    self.db()
                        .replay(&s, now - Duration::days(1), now)
                        .await
                        .unwrap();
                    for d in self.all_deliveries().await {
                        if !before.contains(&d.id) {
                            self.manual.insert(d.id);
                        }
                    }
                }
            }
            Op::Disable(i) | Op::Enable(i) => {
                if let Some(id) = self.pick_sub(i) {
                    let on = matches!(op, Op::Enable(_));
                    self.db()
                        .update_subscription(&id, now, |s| s.enabled = on)
                        .await
                        .unwrap();
                }
            }
            Op::Delete(i) => {
                if let Some(id) = self.pick_sub(i) {
                    assert!(self.db().delete_subscription(&id).await.unwrap());
                    self.subs.retain(|s| s != &id);
                    self.in_flight.retain(|c| *c.lane.sub != *id);
                }
            }
            Op::Create => {
                if self.subs.len() < 3 {
                    self.create().await;
                }
            }
            Op::Prune => self.prune().await?,
            Op::Reopen => {
                // A crash: claims in flight are lost and will be made again.
                self.in_flight.clear();
                self.first_attempts.clear();
                self.h.reopen().await;
                if self.h.is_postgres() {
                    self.h.watch(&[]).await;
                }
            }
            Op::Advance(s) => {
                self.now = now + Duration::seconds(s as i64);
                if self.h.is_postgres() {
                    let hold = Duration::from_std(crate::backend::CLAIM_HOLD).unwrap();
                    let expired = |c: &Claim| {
                        self.claimed_at
                            .get(&c.delivery.id)
                            .is_some_and(|at| *at + hold < self.now)
                    };
                    self.in_flight.retain(|c| !expired(c));
                }
            }
        }
        self.check().await
    }

    /// Retention keeps exactly what pending deliveries need.
    async fn prune(&mut self) -> Result<(), String> {
        let later = self.now + Duration::days(40);
        let retention = std::time::Duration::from_secs(86400);
        crate::retention::prune_once(self.db(), later, retention)
            .await
            .unwrap();
        let needed: BTreeSet<String> = self
            .all_deliveries()
            .await
            .into_iter()
            .map(|d| {
                if d.status != DeliveryStatus::Pending {
                    return Err(format!("finished delivery {} kept", d.id));
                }
                Ok(d.event_id)
            })
            .collect::<Result<_, _>>()?;
        let stored = self
            .db()
            .list_events(&crate::store::EventFilter {
                limit: 10_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .events;
        let left: BTreeSet<String> = stored.iter().map(|e| e.id.clone()).collect();
        if needed != left {
            return Err(format!("retention kept {left:?}, pending need {needed:?}"));
        }
        // Each room's index shows what is left of the room, no more.
        let mut by_room = BTreeSet::new();
        for room in ROOMS {
            let page = self
                .db()
                .list_events(&crate::store::EventFilter {
                    room: Some(room.to_string()),
                    limit: 10_000,
                    ..Default::default()
                })
                .await
                .unwrap();
            by_room.extend(page.events.into_iter().map(|e| e.id));
        }
        let of_rooms: BTreeSet<String> = stored
            .into_iter()
            .filter(|e| e.room_id().is_some())
            .map(|e| e.id)
            .collect();
        if by_room != of_rooms {
            return Err(format!(
                "rooms list {by_room:?} after retention, the store {of_rooms:?}"
            ));
        }
        Ok(())
    }

    /// What every backend must show, then each one's own deep check.
    async fn check(&self) -> Result<(), String> {
        let subs = self.db().subscriptions().await.unwrap();
        let all = self.all_deliveries().await;
        let pending: Vec<_> = all
            .iter()
            .filter(|d| d.status == DeliveryStatus::Pending)
            .collect();
        let (count, oldest) = self.db().pending().await.unwrap();
        if count != pending.len() as u64 {
            return Err(format!(
                "pending figure {count} but {} pending",
                pending.len()
            ));
        }
        if oldest.is_none() != pending.is_empty() {
            return Err("oldest figure disagrees".into());
        }
        let enabled: BTreeSet<_> = subs.iter().filter(|s| s.enabled).map(|s| &s.id).collect();
        let movable = pending
            .iter()
            .filter(|d| enabled.contains(&d.subscription_id))
            .count() as u64;
        let deliverable = self.db().deliverable().await.unwrap();
        if deliverable != movable {
            return Err(format!("deliverable {deliverable}, but {movable} can move"));
        }
        match self.db() {
            Backend::Sled(s) => crate::outbox::check::check(s.outbox()),
            Backend::Postgres(p) => p.check_outbox().await,
        }
    }
}

fn run(h: impl std::future::Future<Output = Harness>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut world = World::new(h.await).await;
        for (i, op) in ops.into_iter().enumerate() {
            let shown = format!("{op:?}");
            if let Err(e) = world.apply(op).await {
                prop_assert!(false, "step {i} ({shown}): {e}");
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_outbox_keeps_its_invariants_on_sled(ops in proptest::collection::vec(op(), 1..60)) {
        run(Harness::sled(), ops)?;
    }
}

proptest! {
    // Each case is a database of its own: fewer cases, the same ops.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    #[ignore = "needs PostgreSQL: run scripts/test.sh"]
    fn the_outbox_keeps_its_invariants_on_postgres(ops in proptest::collection::vec(op(), 1..60)) {
        run(Harness::postgres(), ops)?;
    }
}

/// Fixed sequences that once broke a lane, on both backends.
#[path = "model_regressions.rs"]
mod regressions;
