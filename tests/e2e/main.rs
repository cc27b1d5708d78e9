//! End-to-end tests: the real relay against a simulated upstream and real
//! receivers, all on port 0.

mod api_input;
mod browser;
mod budget;
mod chaos;
mod child;
mod cli;
mod cluster;
mod dashboard;
mod delivery;
mod demo;
mod faults;
mod fuzz;
mod hardening;
mod listeners;
mod logs;
mod openapi;
mod operations;
mod operator;
mod outage;
mod receiver;
mod rooms;
mod sessions;
mod shutdown;
mod spent;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod stamped;
mod storage;
mod stream;
mod subscription_input;
mod support;
mod upstream_chaos;
mod xlang;
