//! The planner: (desired, observed) -> Plan.
//!
//! **Pure**: no async, no I/O, no clock, no randomness, no environment. The same inputs give a
//! byte-identical plan and `plan_hash`. Policies are applied to the plan afterwards
//! (`crate::policy`); they never change what the plan is.
//!
//! Order of a plan: database-held configuration (upserts, then removals), then guests
//! (created, configured, powered), then Modbus writes to reachable devices, then deletions.

mod config_objects;
mod devices;
mod guests;
mod model;
pub mod observed;
pub mod translate;

use serde::{Deserialize, Serialize};

pub use config_objects::{flatten, json_changes};
pub use devices::value_json;
pub use guests::impact_of;
pub use model::{
    Action, FieldChange, Impact, Plan, PlanHash, ResourceKind, ResourceRef, Verb, action_key,
    marker,
};
pub use observed::{Observed, ObservedCluster, ObservedDevice, ObservedGuest, StoredConfig};

/// What the planner may do beyond what is declared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Delete managed guests that are no longer declared.
    pub prune: bool,
}

/// Something the plan does not act on but a person should see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum Note {
    /// A cluster or device did not answer: its resources were not planned.
    Unreachable {
        /// `ProxmoxCluster` or `ModbusDevice`.
        kind: String,
        /// Its name.
        name: String,
    },
    /// Changes wait in the guest's pending configuration for its next restart.
    RestartRequired {
        /// The guest.
        resource: ResourceRef,
        /// The pending keys.
        keys: Vec<String>,
    },
    /// A resource in `mode: detect` differs from its declaration; nothing is changed.
    Drift {
        /// Which resource (`ModbusDevice/fm-1`).
        resource: ResourceRef,
        /// What differs.
        changes: Vec<String>,
    },
    /// A managed resource is no longer declared and pruning is off.
    NotPruned {
        /// Which resource (`Guest/old-web`).
        resource: ResourceRef,
        /// What it is.
        detail: String,
    },
}

/// A declared resource the planner cannot act on, pointing at the field to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanIssue {
    /// Which resource (`Guest/web`).
    pub resource: ResourceRef,
    /// The file it is declared in.
    pub file: String,
    /// 1-based line of the field.
    pub line: u32,
    /// 1-based column of the field.
    pub column: u32,
    /// The field path (`spec.vmid`).
    pub path: String,
    /// A stable code (`vmid-taken`, `disk-shrink`, ...).
    pub code: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl PlanIssue {
    fn at(
        resource: ResourceRef,
        source: &mycopod_specs::Source,
        path: &str,
        code: &str,
        message: String,
    ) -> PlanIssue {
        let pos = source.locate(path);
        PlanIssue {
            resource,
            file: source.file.to_string(),
            line: pos.line,
            column: pos.column,
            path: path.to_owned(),
            code: code.to_owned(),
            message,
        }
    }
}

impl std::fmt::Display for PlanIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {} [{}]",
            self.file, self.line, self.column, self.message, self.code
        )
    }
}

/// The plan with what it leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The actions.
    pub plan: Plan,
    /// What a person should see but nothing acts on.
    pub notes: Vec<Note>,
    /// Declared resources that cannot be planned.
    pub issues: Vec<PlanIssue>,
}

/// Actions collected per phase; `finish` orders them.
#[derive(Debug, Default)]
struct Builder {
    upserts: Vec<Action>,
    removes: Vec<Action>,
    creates: Vec<Action>,
    updates: Vec<Action>,
    power: Vec<Action>,
    writes: Vec<Action>,
    deletes: Vec<Action>,
    notes: Vec<Note>,
    issues: Vec<PlanIssue>,
}

impl Builder {
    /// Appends what `other` collected, after what this one holds.
    fn merge(&mut self, other: Builder) {
        self.upserts.extend(other.upserts);
        self.removes.extend(other.removes);
        self.creates.extend(other.creates);
        self.updates.extend(other.updates);
        self.power.extend(other.power);
        self.writes.extend(other.writes);
        self.deletes.extend(other.deletes);
        self.notes.extend(other.notes);
        self.issues.extend(other.issues);
    }

    fn finish(self, commit: &str) -> Planned {
        let mut actions = Vec::new();
        // Within a phase, the order of declaration files must not matter: sort by key.
        // Configuration keeps its kind order (channels, policies, rules).
        actions.extend(self.upserts);
        actions.extend(self.removes);
        for mut phase in [
            self.creates,
            self.updates,
            self.power,
            self.writes,
            self.deletes,
        ] {
            phase.sort_by(|a, b| a.key.cmp(&b.key));
            actions.extend(phase);
        }
        let mut notes = self.notes;
        notes.sort_by_key(|n| serde_json::to_string(n).unwrap_or_default());
        let mut issues = self.issues;
        issues.sort_by(|a, b| (&a.file, a.line, &a.code).cmp(&(&b.file, b.line, &b.code)));
        Planned {
            plan: Plan {
                commit: commit.to_owned(),
                actions,
            },
            notes,
            issues,
        }
    }
}

/// Plans what it takes to bring `observed` to what `commit` declares in `desired`.
pub fn plan(
    commit: &str,
    desired: &mycopod_specs::DesiredState,
    observed: &Observed,
    options: Options,
) -> Planned {
    let mut out = Builder::default();
    config_objects::plan_config(desired, observed, &mut out);
    guests::plan_guests(desired, observed, options.prune, &mut out);
    devices::plan_devices(desired, observed, &mut out);
    out.finish(commit)
}

#[cfg(test)]
mod tests;
