//! Errors of the Proxmox VE client, each with the class that decides whether it is retried.
//!
//! This module only names and classifies failures; it never retries or decides anything itself.

use std::collections::BTreeMap;
use std::time::Duration;

pub use crate::error_class::ErrorClass;

/// A failure of one step of the Proxmox client, naming the object it concerned.
#[derive(Debug, thiserror::Error)]
pub enum ProxmoxError {
    /// The reqwest client could not be built (TLS configuration).
    #[error("build the http client for {endpoint}")]
    BuildClient {
        /// The cluster endpoint.
        endpoint: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The CA file named in the TLS settings could not be read or parsed.
    #[error("read the ca file {path}")]
    ReadCaFile {
        /// Path of the CA file.
        path: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The endpoint URL could not be joined with an API path.
    #[error("invalid endpoint url {endpoint}")]
    InvalidEndpoint {
        /// The endpoint as configured.
        endpoint: String,
    },
    /// The request could not be sent or its response not read (connection, TLS, timeout).
    #[error("{method} {path}: transport error")]
    Transport {
        /// HTTP method.
        method: String,
        /// API path below `/api2/json`.
        path: String,
        /// The reqwest error.
        #[source]
        source: reqwest::Error,
    },
    /// The request did not complete within the configured timeout.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was being done.
        what: String,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// PVE answered with an error status.
    #[error("{method} {path}: {status} {message}{}", render_field_errors(.errors))]
    Api {
        /// HTTP method.
        method: String,
        /// API path below `/api2/json`.
        path: String,
        /// The HTTP status code (595/596 are PVE's proxy errors).
        status: u16,
        /// PVE's message (the body's `message`, or the status reason).
        message: String,
        /// Per-parameter errors of a 400.
        errors: BTreeMap<String, String>,
    },
    /// A successful response's body did not have the expected shape.
    #[error("{method} {path}: decode the response")]
    Decode {
        /// HTTP method.
        method: String,
        /// API path below `/api2/json`.
        path: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// Login with user and password failed.
    #[error("log in as {user}")]
    Login {
        /// `user@realm`.
        user: String,
        /// The API error.
        #[source]
        source: Box<ProxmoxError>,
    },
    /// A UPID string could not be parsed.
    #[error("invalid task id {upid:?}")]
    InvalidUpid {
        /// The string received.
        upid: String,
    },
    /// A task ended with an error; the log tail is kept for the operator.
    #[error("task {upid} for {guest} failed: {exit_status}\n{}", .log_tail.join("\n"))]
    TaskFailed {
        /// The task's UPID.
        upid: String,
        /// The guest it acted on (`qemu/120`).
        guest: String,
        /// PVE's exit status (anything but `OK` or `WARNINGS: N`).
        exit_status: String,
        /// The last lines of the task log.
        log_tail: Vec<String>,
    },
    /// A disk would have to shrink, which PVE cannot do; the planner shows this as an error.
    #[error("disk {disk} of {guest} cannot shrink from {observed} to {desired}")]
    ShrinkRefused {
        /// The guest (`qemu/120`).
        guest: String,
        /// The disk key (`scsi0`).
        disk: String,
        /// The size it has.
        observed: String,
        /// The size asked for.
        desired: String,
    },
    /// A size string (`32G`) could not be understood.
    #[error("invalid size {value:?} for {key} of {guest}")]
    InvalidSize {
        /// `qemu/120 on pve1`.
        guest: String,
        /// The config key that holds the size (`scsi0`, `rootfs`).
        key: String,
        /// The size as it was given.
        value: String,
    },
    /// The guest to act on does not exist.
    #[error("{guest} not found")]
    GuestNotFound {
        /// The guest (`qemu/120` on `pve1`).
        guest: String,
    },
    /// The desired guest lacks what the operation needs (for example a disk to resize).
    #[error("{guest}: {reason}")]
    InvalidRequest {
        /// `qemu/120 on pve1`.
        guest: String,
        /// What is missing.
        reason: String,
    },
}

fn render_field_errors(errors: &BTreeMap<String, String>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.trim()))
        .collect();
    format!(" ({})", parts.join("; "))
}

/// Messages PVE uses for a held lock or a busy config file: the operation can be retried.
fn is_lock_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    (m.contains("is locked (") || m.contains("can't lock file")) && !m.contains("checksum")
}

/// Messages PVE uses when the digest passed with a config update no longer matches.
fn is_conflict_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("checksum mismatch") || m.contains("detected modified configuration")
}

fn is_not_found_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    (m.contains("configuration file") && m.contains("does not exist"))
        || m.contains("no such vm")
        || m.contains("no such task")
        || m.contains("no such cluster node")
}

impl ProxmoxError {
    /// The class of this error: transient errors are retried, the others surface at once.
    pub fn class(&self) -> ErrorClass {
        match self {
            ProxmoxError::Transport { .. } | ProxmoxError::Timeout { .. } => ErrorClass::Transient,
            ProxmoxError::Api {
                status, message, ..
            } => classify_api(*status, message),
            ProxmoxError::TaskFailed { exit_status, .. } => {
                if is_conflict_message(exit_status) {
                    ErrorClass::Conflict
                } else if is_lock_message(exit_status) {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Rejected
                }
            }
            ProxmoxError::Login { source, .. } => match source.class() {
                ErrorClass::Transient => ErrorClass::Transient,
                _ => ErrorClass::Rejected,
            },
            ProxmoxError::GuestNotFound { .. } => ErrorClass::NotFound,
            ProxmoxError::BuildClient { .. }
            | ProxmoxError::ReadCaFile { .. }
            | ProxmoxError::InvalidEndpoint { .. }
            | ProxmoxError::Decode { .. }
            | ProxmoxError::InvalidUpid { .. }
            | ProxmoxError::ShrinkRefused { .. }
            | ProxmoxError::InvalidSize { .. }
            | ProxmoxError::InvalidRequest { .. } => ErrorClass::Rejected,
        }
    }

    /// True when retrying the same call may succeed.
    pub fn is_transient(&self) -> bool {
        self.class().is_transient()
    }

    /// The HTTP status of an API error, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProxmoxError::Api { status, .. } => Some(*status),
            ProxmoxError::Login { source, .. } => source.status(),
            _ => None,
        }
    }
}

/// Classifies an API error from its status and message, the way PVE reports them.
fn classify_api(status: u16, message: &str) -> ErrorClass {
    if is_conflict_message(message) {
        return ErrorClass::Conflict;
    }
    if is_lock_message(message) {
        return ErrorClass::Transient;
    }
    match status {
        404 => ErrorClass::NotFound,
        400 | 401 | 403 | 405 | 501 => ErrorClass::Rejected,
        500 if is_not_found_message(message) => ErrorClass::NotFound,
        500..=599 => ErrorClass::Transient,
        408 | 429 => ErrorClass::Transient,
        _ => ErrorClass::Rejected,
    }
}

/// Result type of the Proxmox client.
pub type Result<T, E = ProxmoxError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, message: &str) -> ProxmoxError {
        ProxmoxError::Api {
            method: "POST".into(),
            path: "/nodes/pve1/qemu/120/config".into(),
            status,
            message: message.into(),
            errors: BTreeMap::new(),
        }
    }

    #[test]
    fn classify_should_treat_locks_and_proxy_errors_as_transient() {
        assert_eq!(
            api(500, "VM 120 is locked (backup)").class(),
            ErrorClass::Transient
        );
        assert_eq!(
            api(
                500,
                "can't lock file '/var/lock/qemu-server/lock-120.conf' - got timeout"
            )
            .class(),
            ErrorClass::Transient
        );
        assert_eq!(
            api(595, "Connection refused").class(),
            ErrorClass::Transient
        );
        assert_eq!(
            api(596, "Connection timed out").class(),
            ErrorClass::Transient
        );
    }

    #[test]
    fn classify_should_separate_conflict_rejected_and_not_found() {
        assert_eq!(
            api(
                500,
                "detected modified configuration - file changed by other user? Try again."
            )
            .class(),
            ErrorClass::Conflict
        );
        assert_eq!(api(500, "checksum mismatch").class(), ErrorClass::Conflict);
        assert_eq!(
            api(400, "Parameter verification failed.").class(),
            ErrorClass::Rejected
        );
        assert_eq!(
            api(403, "Permission check failed").class(),
            ErrorClass::Rejected
        );
        assert_eq!(
            api(
                500,
                "Configuration file 'nodes/pve1/qemu-server/120.conf' does not exist"
            )
            .class(),
            ErrorClass::NotFound
        );
    }

    #[test]
    fn api_error_message_should_list_the_field_errors() {
        let mut errors = BTreeMap::new();
        errors.insert(
            "cores".to_string(),
            "type check ('integer') failed - got 'x'".to_string(),
        );
        let e = ProxmoxError::Api {
            method: "POST".into(),
            path: "/nodes/pve1/qemu".into(),
            status: 400,
            message: "Parameter verification failed.".into(),
            errors,
        };
        assert_eq!(
            e.to_string(),
            "POST /nodes/pve1/qemu: 400 Parameter verification failed. (cores: type check ('integer') failed - got 'x')"
        );
    }
}
