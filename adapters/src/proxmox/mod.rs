//! Proxmox VE: a client speaking PVE's own API vocabulary, and a stateful simulator of it.
//!
//! The client observes cheaply (one request per cluster in steady state), compares only the
//! keys a spec owns, and applies what it is told to; it never decides what should change.
//!
//! How a reconcile uses it:
//! 1. `ProxmoxClient::observe_cluster` (one request) lists every guest with status, tags,
//!    CPUs, memory, disk and lock.
//! 2. The controller (`reconcile/deep_reads.rs`) decides which guests may have changed; only
//!    those get `ProxmoxClient::observe_guest_config` (config, digest, pending: one `/pending`
//!    request).
//! 3. `compare(&desired, &observed)` gives `FieldDiff`s on owned keys (`pending: true` means
//!    "restart required"); `update_for` turns them into requests, refusing a disk shrink.
//! 4. The executor calls `create_guest`, `apply_config` (or `apply_update` with an approved
//!    `ConfigUpdate` and digest), `start`, `shutdown`, `stop`, `reboot`, `delete_guest`;
//!    failures carry an `ErrorClass` for the retry policy.

pub mod api;
pub mod client;
pub mod compare;
pub mod error;
pub mod propstring;
pub mod sim;

pub use api::{ClusterResource, GuestKind, NodeInfo, Upid};
pub use client::{
    ApplyOutcome, Auth, ClientConfig, ProxmoxClient, RetryPolicy, ShutdownOutcome, Tls,
};
pub use compare::{
    ConfigUpdate, CreateSource, DesiredGuest, FieldDiff, ObservedConfig, PendingChange, PowerState,
    compare, guest_fingerprint, update_for,
};
pub use error::{ErrorClass, ProxmoxError};
