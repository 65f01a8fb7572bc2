//! The mycopod controller: planner, policies, reconcile loop, telemetry and HTTP API. The
//! store is its own crate, `mycopod-store`, re-exported here as [`store`] (with its [`model`]
//! and [`events`]) so that paths stay `mycopod::store::...`.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod declarations;
pub mod demo;
pub mod desired;
pub mod device_clients;
pub mod plan;
pub mod policy;
pub mod reconcile;
pub mod secrets;
pub mod serve;
pub mod telemetry;

pub use mycopod_store as store;
pub use mycopod_store::{events, model};

/// An error and its sources as one line, `what failed: why: why`, for messages shown to people.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}
