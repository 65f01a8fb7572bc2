//! The desired state as the reconcile loop last loaded it, shared with what follows it
//! (telemetry polls the devices it declares; the API shows it). Plain data, no I/O.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use mycopod_specs::DesiredState;

/// The desired state of the last commit that validated, as the loop loaded it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The commit the declarations come from.
    pub commit: String,
    /// The checked declarations.
    pub desired: Arc<DesiredState>,
    /// When the loop loaded it.
    pub loaded_at: DateTime<Utc>,
}
