//! Webhook delivery: the engine that sends the outbox's due deliveries,
//! signed, with retries and concurrency.

mod cluster;
mod engine;
pub mod retry;
mod sender;
mod step;

pub use engine::Engine;
pub use sender::Sender;
