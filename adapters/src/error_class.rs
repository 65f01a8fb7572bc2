//! How a caller should treat an adapter's failure. One classification for every protocol
//! (Proxmox, Modbus, the LLM endpoint): it decides retries (only [`ErrorClass::Transient`]
//! is retried, with [`crate::backoff::Backoff`]) and how a run reports the failure.

/// The class of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Unreachable, too slow, busy or overloaded (timeouts, connection failures, 5xx, held
    /// locks, rate limits): worth retrying later with backoff.
    Transient,
    /// Refused by the peer (a bad request, a Modbus exception, 403, a shrink): retrying the
    /// same request cannot help.
    Rejected,
    /// What the request was based on changed meanwhile (a Proxmox digest mismatch): plan again
    /// rather than retry.
    Conflict,
    /// The guest, node, task or register does not exist.
    NotFound,
}

impl ErrorClass {
    /// Whether retrying the same request may succeed.
    pub fn is_transient(self) -> bool {
        self == ErrorClass::Transient
    }
}
