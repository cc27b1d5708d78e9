//! End-to-end tests: the real relay against a simulated upstream and real
//! receivers, all on port 0.

mod api_input;
mod faults;
mod rooms;
mod support;
