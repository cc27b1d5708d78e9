//! verriflo-relay: push events for Verriflo's poll-only Room Status API.
//!
//! # Layout
//!
//! The pure core:
//! - `room`: room ids and snapshots in the upstream's shape
//! - `event`: event types and the stored event / webhook body
//! - `changes`: a room event's changed fields, typed
//! - `diff`: the pure diff from two snapshots to events
//! - `signing`: Standard Webhooks signer and verifier
//! - `subscription`: subscriptions, their filters and secrets
//! - `secret`: newtypes for the org id and admin token that never print
//!
//! Its edges:
//! - `config`: settings from a TOML file and the environment, typed and validated
//! - `upstream`: the Room Status client and its typed failures; `upstream::wire`, its GETs on kept connections parsed with httparse
//! - `keepalive`: keep-alive HTTP/1.1 connections driven by the request that uses them (webhooks)
//! - `retry_after`: parsing `Retry-After`
//! - `ids`: public ids and the monotonic ULID source behind them
//! - `db`: what the store and the outbox share over sled (errors, record coding)
//! - `store`: the sled store (rooms, snapshots, events), which opens the outbox
//! - `outbox`: subscriptions, deliveries and their per-room lanes, kept in step on disk and in memory
//! - `poller`: per-room polling loops around `poll_once` on a thread of their own, backoff and upstream limits
//! - `delivery`: the webhook engine around the outbox: concurrency, HTTP, signing, retries
//! - `ssrf`: refusing private webhook targets, at check time and at connect time
//! - `backend`: the one storage facade, sled or PostgreSQL, that the API, poller and engine call
//! - `cluster`: PostgreSQL cluster mode: migrations, the shared store and outbox, room leases with epoch fencing
//! - `retention`: background pruning of old events and finished deliveries
//! - `metrics`: Prometheus counters, histograms and scrape-time gauges
//! - `api`: the admin HTTP API (routes, bearer auth, the envelope, OpenAPI)
//! - `ui`: the dashboard at `/ui/`: embedded pages, cookie sessions, one-time login links
//! - `listener`: serving HTTP with header deadlines and a connection cap
//!
//! Assembly and tools:
//! - `app`: the service assembled from a config and a listener, run until shutdown
//! - `telemetry`: log set-up
//! - `shutdown`: SIGTERM / Ctrl-C
//! - `cli`: the admin command line (rooms, subs, events) over the admin API
//! - `mock`: the simulated upstream, scriptable, with a self-running scenario
//! - `demo`: the one-command demo (simulated upstream, relay, verifying receiver)

pub mod api;
pub mod app;
pub mod backend;
pub mod changes;
pub mod cli;
pub mod cluster;
pub mod config;
#[cfg(test)]
mod conformance;
pub mod db;
pub mod delivery;
pub mod demo;
pub mod diff;
pub mod event;
pub mod ids;
pub mod keepalive;
pub mod listener;
pub mod metrics;
pub mod mock;
pub mod outbox;
pub mod poller;
pub mod retention;
pub mod retry_after;
pub mod room;
pub mod secret;
pub mod shutdown;
pub mod signing;
pub mod ssrf;
pub mod store;
pub mod subscription;
pub mod telemetry;
pub mod ui;
pub mod upstream;
