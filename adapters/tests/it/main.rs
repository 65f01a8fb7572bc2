//! The adapters crate's integration tests, as one binary: each module is one former test file,
//! named as before.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod git_source;
mod github_status;
mod llm_client;
mod modbus_client;
mod modbus_interop;
mod mqtt_broker;
mod notify_webhook;
mod proxmox_client;
mod proxmox_roundtrip;
