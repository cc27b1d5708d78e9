//! bench_freshness: the budget scheduler against a uniform poller at the
//! same budget, in virtual time, over a synthetic school timetable.
//!
//! 2,000 rooms hold weekly classes between 08:00 and 21:00 (45 to 120
//! minutes, starts jittered by up to ±5 minutes, the teacher creating the
//! room 0 to 10 minutes before the start); some classes are cancelled, some
//! are ad hoc, and half the rooms come with schedule hints. Every poll goes
//! through the relay's own scheduler code (`poller::budget`), one budget
//! slot at a time. Week 1 starts with nothing learned; week 2 is what a
//! relay that has watched a week sees. A change counts as detected at the
//! first poll at or after it.
//!
//! `cargo run --release --example bench_freshness [rooms] [uniform interval s]`

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use verriflo_relay::poller::budget::{Scheduler, Seen, Settings, Window};
use verriflo_relay::poller::history::History;

const MIN: f64 = 60.0;
const HOUR: f64 = 3600.0;
const DAY: f64 = 86400.0;
const WEEK: f64 = 7.0 * DAY;
/// Monday 2024-01-01 00:00 UTC.
const MONDAY: f64 = 1_704_067_200.0;

const KINDS: [&str; 9] = [
    "room.created",
    "room.started",
    "teacher.joined",
    "recording.started",
    "participants.changed",
    "recording.stopped",
    "teacher.left",
    "room.ended",
    "room.deleted",
];

/// One true change of a room: when, what, and the state after it.
#[derive(Clone, Copy)]
struct Change {
    at: f64,
    kind: usize,
    exists: bool,
    live: bool,
    hinted_start: bool,
}

struct Room {
    changes: Vec<Change>,
    hints: Vec<Window>,
}

impl Room {
    /// Exists and live at `t`.
    fn state(&self, t: f64) -> (bool, bool) {
        let i = self.changes.partition_point(|c| c.at <= t);
        match i {
            0 => (false, false),
            i => (self.changes[i - 1].exists, self.changes[i - 1].live),
        }
    }

    /// Changes in (from, to].
    fn between(&self, from: f64, to: f64) -> &[Change] {
        let a = self.changes.partition_point(|c| c.at <= from);
        let b = self.changes.partition_point(|c| c.at <= to);
        &self.changes[a..b]
    }
}

/// One class: nominal slot, and whether it happens.
fn class(rng: &mut StdRng, changes: &mut Vec<Change>, start: f64, end: f64, hinted: bool) {
    let created = start - rng.gen_range(0.0..10.0 * MIN);
    let mut push = |at: f64, kind: usize, exists: bool, live: bool| {
        changes.push(Change {
            at,
            kind,
            exists,
            live,
            hinted_start: hinted,
        })
    };
    push(created, 0, true, false);
    push(start, 1, true, true);
    push(start, 2, true, true);
    let recording = rng.gen_bool(0.6);
    if recording {
        push(start + rng.gen_range(5.0..120.0), 3, true, true);
    }
    let students = rng.gen_range(5..30);
    for _ in 0..students {
        let join = start + (-90.0 * (1.0 - rng.gen::<f64>()).ln()).min(end - start - 60.0);
        push(join, 4, true, true);
    }
    let mut t = start + 300.0;
    loop {
        t += -300.0 * (1.0 - rng.gen::<f64>()).ln();
        if t >= end - 60.0 {
            break;
        }
        push(t, 4, true, true);
    }
    if recording {
        push(end, 5, true, false);
    }
    push(end, 6, true, false);
    push(end, 7, true, false);
    push(end + rng.gen_range(60.0..30.0 * MIN), 8, false, false);
}

/// The synthetic timetable for `weeks` weeks.
fn timetable(rooms: usize, weeks: usize, rng: &mut StdRng) -> Vec<Room> {
    (0..rooms)
        .map(|_| {
            let hinted = rng.gen_bool(0.5);
            let saturday = rng.gen_bool(0.3);
            let days = if saturday { 6 } else { 5 };
            // Weekly slots: (day, start minute, length), not overlapping.
            let mut slots: Vec<(u32, f64, f64)> = Vec::new();
            for _ in 0..rng.gen_range(3..12) {
                let day = rng.gen_range(0..days);
                let start = 8.0 * HOUR + rng.gen_range(0..48) as f64 * 15.0 * MIN;
                let len = rng.gen_range(45.0..=120.0) * MIN;
                if start + len > 21.0 * HOUR {
                    continue;
                }
                let clash = slots.iter().any(|&(d, s, l)| {
                    d == day && start < s + l + 45.0 * MIN && s < start + len + 45.0 * MIN
                });
                if !clash {
                    slots.push((day, start, len));
                }
            }
            let mut changes = Vec::new();
            let mut hints = Vec::new();
            for w in 0..weeks {
                let week = MONDAY + w as f64 * WEEK;
                for &(day, s, len) in &slots {
                    let nominal = week + day as f64 * DAY + s;
                    if hinted {
                        hints.push(Window {
                            start: nominal,
                            end: nominal + len,
                        });
                    }
                    if rng.gen_bool(0.05) {
                        continue; // cancelled
                    }
                    let start = nominal + rng.gen_range(-5.0..5.0) * MIN;
                    let end = nominal + len + rng.gen_range(-5.0..5.0) * MIN;
                    class(rng, &mut changes, start, end, hinted);
                }
                // Ad hoc: no slot, no hint, at most once a week.
                if rng.gen_bool(0.3) {
                    let day = rng.gen_range(0..5) as f64;
                    let start = week + day * DAY + 8.0 * HOUR + rng.gen_range(0.0..12.0) * HOUR;
                    if !slots.iter().any(|&(d, s, l)| {
                        let nominal = week + d as f64 * DAY + s;
                        start < nominal + l + HOUR && nominal < start + 2.0 * HOUR
                    }) {
                        let end = start + rng.gen_range(45.0..=90.0) * MIN;
                        class(rng, &mut changes, start, end, false);
                    }
                }
            }
            changes.sort_by(|a, b| a.at.total_cmp(&b.at));
            Room { changes, hints }
        })
        .collect()
}

#[derive(Default)]
struct Delays {
    by_kind: BTreeMap<usize, Vec<f64>>,
    started_hinted: Vec<f64>,
    started_unhinted: Vec<f64>,
    polls: u64,
    busiest_second: usize,
}

impl Delays {
    fn detect(&mut self, changes: &[Change], at: f64, from: f64, to: f64) {
        for c in changes.iter().filter(|c| c.at >= from && c.at < to) {
            let d = at - c.at;
            self.by_kind.entry(c.kind).or_default().push(d);
            if c.kind == 1 {
                if c.hinted_start {
                    self.started_hinted.push(d);
                } else {
                    self.started_unhinted.push(d);
                }
            }
        }
    }
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Every room every `interval`, phases spread by the golden ratio.
fn uniform(rooms: &[Room], interval: f64, from: f64, to: f64) -> Delays {
    let mut out = Delays::default();
    for (i, room) in rooms.iter().enumerate() {
        let phase = (i as f64 * 0.618_033_988_749_894_9).fract() * interval;
        let mut t = from - interval + phase;
        while t < to + interval {
            out.detect(room.between(t - interval, t), t, from, to);
            if t >= from && t < to {
                out.polls += 1;
            }
            t += interval;
        }
    }
    out.busiest_second = (rooms.len() as f64 / interval).ceil() as usize;
    out
}

/// The relay's scheduler, one budget slot at a time, from `MONDAY`.
fn scheduled(rooms: &[Room], budget: f64, weeks: usize, use_hints: bool) -> Vec<Delays> {
    let settings = Settings {
        budget,
        min: 1.0,
        max: 60.0,
    };
    let mut sched = Scheduler::new(settings);
    for (i, room) in rooms.iter().enumerate() {
        let hints = if use_hints {
            room.hints.clone()
        } else {
            vec![]
        };
        sched.insert(i as u32, hints, History::default(), MONDAY);
    }
    let mut last = vec![MONDAY; rooms.len()];
    let mut out: Vec<Delays> = (0..weeks).map(|_| Delays::default()).collect();
    let mut window: std::collections::VecDeque<f64> = Default::default();
    let end = MONDAY + weeks as f64 * WEEK;
    let mut k: u64 = 0;
    loop {
        let t = MONDAY + k as f64 / budget;
        if t >= end {
            break;
        }
        k += 1;
        let Some((r, _)) = sched.pick(t) else {
            // Nothing due: skip to the slot at or after the next due time.
            if let Some(due) = sched.next_due() {
                k = k.max(((due - MONDAY) * budget).ceil() as u64);
            }
            continue;
        };
        let w = ((t - MONDAY) / WEEK) as usize;
        let room = &rooms[r as usize];
        let changes = room.between(last[r as usize], t);
        let week_start = MONDAY + w as f64 * WEEK;
        out[w].detect(changes, t, week_start, week_start + WEEK);
        out[w].polls += 1;
        window.push_back(t);
        while t - window[0] >= 1.0 {
            window.pop_front();
        }
        out[w].busiest_second = out[w].busiest_second.max(window.len());
        let (exists, live) = room.state(t);
        let events = changes.len();
        last[r as usize] = t;
        sched.observe(
            &r,
            t,
            Seen::Answer {
                exists,
                live,
                events,
            },
        );
    }
    out
}

fn row(name: &str, base: &mut [f64], ours: &mut [f64]) {
    let (bm, bp) = (quantile(base, 0.5), quantile(base, 0.95));
    let (m, p) = (quantile(ours, 0.5), quantile(ours, 0.95));
    println!(
        "| {name} | {} | {bm:.1} | {bp:.1} | {m:.1} | {p:.1} | {:.2} | {:.2} |",
        ours.len(),
        m / bm,
        p / bp
    );
}

fn report(title: &str, base: &mut Delays, ours: &mut Delays, budget: f64) {
    println!("\n### {title}\n");
    println!(
        "requests: uniform {}, budget {} (budget {}/s; busiest second: uniform {}, budget {})\n",
        base.polls, ours.polls, budget, base.busiest_second, ours.busiest_second
    );
    println!("| event | count | uniform median s | uniform p95 s | budget median s | budget p95 s | median ratio | p95 ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    for (k, name) in KINDS.iter().enumerate() {
        let mut empty = Vec::new();
        let b = base.by_kind.get_mut(&k).unwrap_or(&mut empty);
        let mut b = std::mem::take(b);
        if let Some(o) = ours.by_kind.get_mut(&k) {
            row(name, &mut b, o);
        }
    }
    let mut b_h = std::mem::take(&mut base.started_hinted);
    let mut b_u = std::mem::take(&mut base.started_unhinted);
    row(
        "room.started, hinted rooms",
        &mut b_h,
        &mut ours.started_hinted,
    );
    row(
        "room.started, rooms without hints",
        &mut b_u,
        &mut ours.started_unhinted,
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let interval: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10.0);
    let budget = n as f64 / interval;
    let weeks = 2;
    let mut rng = StdRng::seed_from_u64(7);
    let rooms = timetable(n, weeks, &mut rng);
    let started = std::time::Instant::now();
    let mut ours = scheduled(&rooms, budget, weeks, true);
    println!(
        "# bench_freshness: {n} rooms, budget {budget}/s (uniform interval {interval} s), {weeks} weeks simulated in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    for (w, ours) in ours.iter_mut().enumerate() {
        let from = MONDAY + w as f64 * WEEK;
        let mut base = uniform(&rooms, interval, from, from + WEEK);
        let title = if w == 0 {
            "Week 1: nothing learned yet"
        } else {
            "Week 2: one week learned"
        };
        report(title, &mut base, ours, budget);
    }
}
