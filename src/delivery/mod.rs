//! Webhook delivery: the engine that sends the outbox, in order per room.

mod engine;
mod model;
pub mod retry;
mod sender;
mod step;

pub use engine::Engine;
pub use model::{Attempt, Delivery, DeliveryStatus, Verdict};
pub use sender::Sender;
pub use step::Attempted;
