//! Proxmox VE: a client speaking PVE's own API vocabulary, and a stateful simulator of it.
//!
//! The client observes cheaply (one request per cluster in steady state), compares only the
//! keys a spec owns, and applies what it is told to; it never decides what should change.

pub mod api;
pub mod client;
pub mod compare;
pub mod error;
pub mod propstring;
pub mod sim;
pub mod translate;

pub use api::{ClusterResource, GuestKind, NodeInfo, Upid};
pub use client::{
    ApplyOutcome, Auth, ClientConfig, ProxmoxClient, RetryPolicy, ShutdownOutcome, Tls,
};
pub use compare::{
    ConfigUpdate, CreateSource, DeepReadTracker, DesiredGuest, FieldDiff, ObservedConfig,
    PendingChange, PowerState, compare, spec_hash, update_for,
};
pub use error::{ErrorClass, ProxmoxError};
