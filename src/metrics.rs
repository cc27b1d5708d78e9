//! Prometheus metrics: one registry per app (no globals), label values bounded
//! (outcomes, event types, health states; never a room id or a URL).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Why {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct State {
    pub state: &'static str,
}

/// What the relay counts while it runs, plus gauges set at each scrape.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub polls: Family<Outcome, Counter>,
    pub poll_seconds: Histogram,
    pub events: Family<Kind, Counter>,
    pub deliveries: Family<Outcome, Counter>,
    pub delivery_seconds: Histogram,
    pub rooms: Family<State, Gauge>,
    pub subscriptions: Family<State, Gauge>,
    pub pending: Gauge,
    pub oldest_pending_seconds: Gauge,
    /// Polls the budget scheduler sent, by why they were due.
    pub polls_by_reason: Family<Why, Counter>,
    /// The budget, and the upstream requests spent in the last full second.
    pub poll_budget: Gauge,
    pub poll_budget_spent: Gauge,
    /// Cluster mode: rooms this instance holds the lease of, leases it took
    /// over from an instance that stopped renewing, and the database's
    /// round-trip time.
    pub rooms_owned: Gauge,
    pub lease_takeovers: Counter,
    pub database_latency_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Self {
            registry: Mutex::new(Registry::with_prefix("relay")),
            polls: Family::default(),
            // 1 ms to ~16 s.
            poll_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            events: Family::default(),
            deliveries: Family::default(),
            delivery_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            rooms: Family::default(),
            subscriptions: Family::default(),
            pending: Gauge::default(),
            oldest_pending_seconds: Gauge::default(),
            polls_by_reason: Family::default(),
            poll_budget: Gauge::default(),
            poll_budget_spent: Gauge::default(),
            rooms_owned: Gauge::default(),
            lease_takeovers: Counter::default(),
            database_latency_seconds: Gauge::default(),
        };
        {
            let mut r = m.registry.lock().unwrap();
            r.register("polls", "Upstream polls by outcome", m.polls.clone());
            r.register(
                "poll_duration_seconds",
                "Upstream poll latency",
                m.poll_seconds.clone(),
            );
            r.register("events", "Room events emitted, by type", m.events.clone());
            r.register(
                "deliveries",
                "Delivery attempts by outcome",
                m.deliveries.clone(),
            );
            r.register(
                "delivery_duration_seconds",
                "Delivery attempt latency",
                m.delivery_seconds.clone(),
            );
            r.register("rooms", "Watched rooms by health", m.rooms.clone());
            r.register(
                "subscriptions",
                "Subscriptions by state",
                m.subscriptions.clone(),
            );
            r.register(
                "deliveries_pending",
                "Deliveries not yet finished",
                m.pending.clone(),
            );
            r.register(
                "oldest_pending_delivery_age_seconds",
                "Age of the oldest pending delivery (0 when none)",
                m.oldest_pending_seconds.clone(),
            );
            r.register(
                "polls_scheduled",
                "Polls sent by the budget scheduler, by reason (state, schedule, history, retry, new)",
                m.polls_by_reason.clone(),
            );
            r.register(
                "poll_budget",
                "RELAY_POLL_BUDGET: upstream requests per second to spend (0: fixed interval)",
                m.poll_budget.clone(),
            );
            r.register(
                "poll_budget_spent",
                "Upstream requests in the last second",
                m.poll_budget_spent.clone(),
            );
            r.register(
                "rooms_owned",
                "Cluster mode: rooms whose lease this instance holds",
                m.rooms_owned.clone(),
            );
            r.register(
                "lease_takeovers",
                "Cluster mode: leases taken over from an instance that stopped renewing",
                m.lease_takeovers.clone(),
            );
            r.register(
                "database_latency_seconds",
                "Cluster mode: the last round trip to PostgreSQL",
                m.database_latency_seconds.clone(),
            );
        }
        m
    }
}

impl Metrics {
    pub fn poll(&self, outcome: &'static str, took: Duration) {
        self.polls.get_or_create(&Outcome { outcome }).inc();
        self.poll_seconds.observe(took.as_secs_f64());
    }

    pub fn delivery(&self, outcome: &'static str, took: Duration) {
        self.deliveries.get_or_create(&Outcome { outcome }).inc();
        self.delivery_seconds.observe(took.as_secs_f64());
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_bounded_labels() {
        let m = Metrics::default();
        m.poll("unchanged", Duration::from_millis(3));
        m.poll("unchanged", Duration::from_millis(3));
        m.events
            .get_or_create(&Kind {
                r#type: "room.started",
            })
            .inc();
        let text = m.render();
        assert!(
            text.contains("relay_polls_total{outcome=\"unchanged\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("relay_events_total{type=\"room.started\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("relay_poll_duration_seconds_count 2"),
            "{text}"
        );
    }
}
