//! The mycopod controller: planner, policies, reconcile loop, telemetry, store and HTTP API.

pub mod api;
pub mod cli;
pub mod config;
pub mod control;
pub mod declarations;
pub mod demo;
pub mod events;
pub mod model;
pub mod plan;
pub mod policy;
pub mod reconcile;
pub mod serve;
pub mod store;
pub mod telemetry;
