//! verriflo-relay: push events for Verriflo's poll-only Room Status API.
//!
//! # Layout
//!
//! - `config`: settings from a TOML file and the environment, typed and validated
//! - `secret`: newtypes for the org id and admin token that never print
//! - `room`: room ids and snapshots in the upstream's shape
//! - `event`: event types and the stored event / webhook body
//! - `diff`: the pure diff from two snapshots to events
//! - `upstream`: the Room Status client and its typed failures
//! - `retry_after`: parsing `Retry-After`
//! - `store`: the sled store (rooms, snapshots, events)

pub mod config;
pub mod diff;
pub mod event;
pub mod retry_after;
pub mod room;
pub mod secret;
pub mod store;
pub mod upstream;
