//! The planner: (desired, observed) -> Plan.
//!
//! **Pure**: no async, no I/O, no clock (`now` is a parameter), no randomness, no environment.
//! The same inputs give a byte-identical plan and `plan_hash`.

mod model;

pub use model::{
    Action, FieldChange, Impact, Plan, PlanHash, ResourceKind, ResourceRef, Verb, action_key,
};
