//! The mycopod controller: planner, policies, reconcile loop, telemetry, store and HTTP API.

pub mod model;
pub mod store;
