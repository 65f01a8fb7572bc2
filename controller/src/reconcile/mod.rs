//! The reconcile loop: triggers feed a work queue; each reconcile fetches desired state,
//! observes, plans, gates with policies, applies and records.
//!
//! The loop itself is thin; what it runs is a step function that tests drive directly.

pub mod apply;
pub mod decide;
pub mod deep_reads;
pub mod driver;
pub mod observe;
pub mod queue;
pub mod run;
pub mod status;
