//! The mycopod controller: planner, policies, reconcile loop, telemetry, store and HTTP API.

pub mod api;
pub mod cli;
pub mod config;
pub mod control;
pub mod declarations;
pub mod demo;
pub mod desired;
pub mod events;
pub mod model;
pub mod plan;
pub mod policy;
pub mod reconcile;
pub mod secrets;
pub mod serve;
pub mod store;
pub mod telemetry;

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
