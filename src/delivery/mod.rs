//! Webhook delivery: the engine that sends the outbox, in order per room.

mod engine;
mod model;
pub mod retry;
mod sender;

pub use engine::Engine;
pub use model::{Attempt, Delivery, DeliveryStatus, Verdict};
pub use sender::Sender;
