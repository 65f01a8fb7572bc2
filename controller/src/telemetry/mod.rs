//! Telemetry: Modbus polling, readings, alert evaluation and notification dispatch.
//!
//! Polling never blocks reconciles; alert evaluation is pure and lives in [`alerts`].

pub mod alerts;
