//! Adapters to the outside systems mycopod talks to, each beside its simulator.
//!
//! Adapters speak protocols and transport; they never decide what should change, and they
//! never see a spec type (turning a declaration into adapter terms is the planner's job).

pub mod backoff;
pub mod error_class;
pub mod git;
pub mod github;
pub mod llm;
pub mod modbus;
pub mod mqtt;
pub mod notify;
pub mod proxmox;
pub mod signing;

pub use error_class::ErrorClass;
