//! The budget scheduler in virtual time.

use super::*;
use std::collections::HashMap;

const T0: f64 = 1_800_000_000.0;

fn settings(budget: f64) -> Settings {
    Settings {
        budget,
        min: 1.0,
        max: 60.0,
    }
}

/// Drive `sched` from `from` to `to` one budget slot at a time; `answer`
/// says what each poll sees. Returns every poll as (time, room).
fn run(
    sched: &mut Scheduler<u32>,
    from: f64,
    to: f64,
    budget: f64,
    mut answer: impl FnMut(u32, f64) -> Seen,
) -> Vec<(f64, u32)> {
    let mut polls = Vec::new();
    let mut k = 0u64;
    loop {
        // Slots spaced exactly 1/budget apart, as the rate limiter does.
        let t = from + k as f64 / budget;
        k += 1;
        if t >= to {
            break;
        }
        if let Some((room, _)) = sched.pick(t) {
            polls.push((t, room));
            let seen = answer(room, t);
            sched.observe(&room, t, seen);
        }
    }
    polls
}

fn absent(_: u32, _: f64) -> Seen {
    Seen::Answer {
        exists: false,
        live: false,
        events: 0,
    }
}

fn most_in_one_second(polls: &[(f64, u32)]) -> usize {
    let mut most = 0;
    let mut j = 0;
    for i in 0..polls.len() {
        while polls[i].0 - polls[j].0 >= 1.0 {
            j += 1;
        }
        most = most.max(i - j + 1);
    }
    most
}

#[test]
fn the_square_root_rule_fills_the_budget_within_bounds() {
    let w = [1.0, 4.0, 9.0];
    let c = share(&w, 3.0, 0.0, 10.0);
    let total: f64 = w.iter().map(|x| (c * x).clamp(0.0, 10.0)).sum();
    assert!((total - 3.0).abs() < 1e-5);
    // Everyone at the shortest interval still spends less: no multiplier binds.
    assert_eq!(share(&w, 100.0, 0.0, 1.0), f64::MAX);
    // The longest interval alone overspends: everyone at it.
    assert_eq!(share(&w, 0.1, 1.0, 2.0), 0.0);
}

#[test]
fn the_budget_holds_at_every_instant_and_every_room_is_seen_within_the_longest_interval() {
    let mut sched = Scheduler::new(settings(20.0));
    for r in 0..500 {
        sched.insert(r, vec![], History::default(), T0);
    }
    // Budget slots are spaced 1/20 s apart by construction; the scheduler
    // must keep every room within 60 s all the same (500 rooms need 8.3/s).
    let polls = run(&mut sched, T0, T0 + 900.0, 20.0, |r, _| Seen::Answer {
        exists: r % 3 == 0,
        live: r % 6 == 0,
        events: 0,
    });
    assert!(most_in_one_second(&polls) <= 20);
    // Once every room has been seen (the first round takes rooms/budget),
    // none waits longer than the longest interval.
    let mut last: HashMap<u32, f64> = HashMap::new();
    for &(t, r) in &polls {
        if let Some(before) = last.get(&r).filter(|_| t > T0 + 120.0) {
            let gap = t - before;
            assert!(gap <= 60.0, "room {r} waited {gap} s");
        }
        last.insert(r, t);
    }
    assert_eq!(last.len(), 500);
    assert!(last.values().all(|&t| t > T0 + 900.0 - 60.0));
}

#[test]
fn a_room_that_appears_is_polled_many_times_faster_than_its_peers_until_it_starts() {
    let mut sched = Scheduler::new(settings(10.0));
    for r in 0..200 {
        sched.insert(r, vec![], History::default(), T0);
    }
    // Room 7 appears at T0 + 100 and stays waiting.
    let polls = run(&mut sched, T0, T0 + 300.0, 10.0, |r, t| Seen::Answer {
        exists: r == 7 && t >= T0 + 100.0,
        live: false,
        events: 0,
    });
    let room7: Vec<f64> = polls
        .iter()
        .filter(|p| p.1 == 7 && p.0 > T0 + 160.0)
        .map(|p| p.0)
        .collect();
    let gaps: Vec<f64> = room7.windows(2).map(|w| w[1] - w[0]).collect();
    // A budget of one poll per 20 s per room, and the room about to start
    // gets one every 2 s or sooner.
    assert!(
        !gaps.is_empty() && gaps.iter().all(|g| *g <= 2.0),
        "{gaps:?}"
    );
    let others = polls
        .iter()
        .filter(|p| p.1 == 8 && p.0 > T0 + 160.0)
        .count();
    assert!(
        others * 10 <= room7.len(),
        "an absent room is polled rarely: {others}"
    );
}

#[test]
fn a_hint_brings_polls_forward_before_the_expected_start() {
    let start = T0 + 3600.0;
    let mut sched = Scheduler::new(settings(5.0));
    for r in 0..200u32 {
        let hints = if r == 1 {
            vec![Window {
                start,
                end: start + 3600.0,
            }]
        } else {
            vec![]
        };
        sched.insert(r, hints, History::default(), T0);
    }
    let polls = run(&mut sched, T0, start, 5.0, absent);
    let count = |room: u32, from: f64, to: f64| {
        polls
            .iter()
            .filter(|p| p.1 == room && p.0 >= from && p.0 < to)
            .count()
    };
    let window = start - 20.0 * 60.0;
    // In its window the hinted room is polled more than twice as often as
    // in as long a stretch before it, and more often than its peers.
    let before = count(1, window - 1200.0, window);
    let within = count(1, window, start);
    assert!(within >= 2 * before.max(1), "{before} then {within}");
    assert!(within > count(2, window, start));
    let (_, why) = sched.next_poll(&1).unwrap();
    assert_eq!(why, Reason::Schedule);
    assert_eq!(sched.next_poll(&2).unwrap().1, Reason::State);
}

#[test]
fn a_learned_week_brings_polls_forward_a_week_later() {
    let mut h = History::default();
    let start = T0 + 3600.0;
    h.record_start(start);
    assert!(h.expects_start(start + 7.0 * 86400.0 - 60.0, 900.0, 600.0));
    assert!(!h.expects_start(start + 7.0 * 86400.0 - 3600.0, 900.0, 600.0));
    let signals = Signals {
        phase: Phase::Absent,
        in_phase: 1e5,
        hints: &[],
        history: &h,
    };
    let (_, why) = rate(&signals, start + 7.0 * 86400.0);
    assert_eq!(why, Reason::History);
}

#[test]
fn a_failed_poll_backs_off_and_the_room_is_retried() {
    let mut sched = Scheduler::new(settings(10.0));
    sched.insert(1u32, vec![], History::default(), T0);
    let (room, why) = sched.pick(T0).unwrap();
    assert_eq!((room, why), (1, Reason::New));
    assert!(sched.pick(T0).is_none(), "in flight until observed");
    sched.observe(&1, T0, Seen::Failed { backoff: 8.0 });
    assert_eq!(sched.next_poll(&1), Some((T0 + 8.0, Reason::Retry)));
    assert!(sched.pick(T0 + 7.9).is_none());
    assert_eq!(sched.pick(T0 + 8.0).unwrap().0, 1);
}

#[test]
fn history_survives_a_round_trip_through_json() {
    let mut h = History::default();
    h.record_start(T0);
    h.record_start(T0 + 86400.0);
    h.dwell(Phase::Live, 3600.0, 100.0);
    let back: History = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
    assert_eq!(back, h);
    assert_eq!(back.starts(), 2);
    // One start and the same slot a week later are one slot.
    h.record_start(T0 + 7.0 * 86400.0 + 300.0);
    assert_eq!(h.starts(), 2);
}
