//! Adapters to the outside systems mycopod talks to, each beside its simulator.
//!
//! Adapters translate and transport; they never decide what should change.

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
