//! The sync state of every declared resource, derived from the desired state and the plan the
//! last reconcile made (after applying, the verification plan). Pure: no I/O, no clock beyond
//! the `now` it is given.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use mycopod_specs::DesiredState;

use crate::control::{ResourceStatus, SyncState};
use crate::plan::{Note, Planned};

/// Every declared resource with its sync state, sorted by kind and name.
///
/// - an action in `planned` for it: `out_of_sync` (details: the field changes);
/// - `failed` names it (action key's resource -> error): `failed`;
/// - a restart-required note: `restart_required`; a drift note (`mode: detect`): `drift`;
/// - its cluster or device did not answer: `unknown`;
/// - a Declaration: `not_translated` (its translation is not part of the desired state);
/// - otherwise `in_sync`.
///
/// `changed_at` is kept from `previous` while the state stays the same, else set to `now`.
pub fn resource_statuses(
    desired: &DesiredState,
    planned: &Planned,
    failed: &BTreeMap<String, String>,
    previous: &[ResourceStatus],
    now: DateTime<Utc>,
) -> Vec<ResourceStatus> {
    let mut states: BTreeMap<(String, String), (SyncState, Vec<String>)> = BTreeMap::new();
    let mut declare = |kind: &str, name: &str| {
        states.insert(
            (kind.to_owned(), name.to_owned()),
            (SyncState::InSync, Vec::new()),
        );
    };
    for r in &desired.clusters {
        declare("ProxmoxCluster", r.name().as_str());
    }
    for r in &desired.guests {
        declare("Guest", r.name().as_str());
    }
    for r in &desired.devices {
        declare("ModbusDevice", r.name().as_str());
    }
    for r in &desired.alert_rules {
        declare("AlertRule", r.name().as_str());
    }
    for r in &desired.channels {
        declare("NotificationChannel", r.name().as_str());
    }
    for r in &desired.policies {
        declare("HandshakePolicy", r.name().as_str());
    }
    for r in &desired.declarations {
        states.insert(
            ("Declaration".to_owned(), r.name().as_str().to_owned()),
            (
                SyncState::NotTranslated,
                vec!["its generated resources are reviewed and committed as files".to_owned()],
            ),
        );
    }

    let mut set = |kind: &str, name: &str, state: SyncState, detail: Vec<String>| {
        if let Some(entry) = states.get_mut(&(kind.to_owned(), name.to_owned())) {
            // The most severe finding wins: failed > out of sync > restart > drift > unknown.
            if rank(state) >= rank(entry.0) {
                entry.0 = state;
            }
            entry.1.extend(detail);
        }
    };

    for note in &planned.notes {
        match note {
            Note::Unreachable { kind, name } => {
                set(
                    kind,
                    name,
                    SyncState::Unknown,
                    vec![format!("{kind} {name} did not answer")],
                );
                if kind == "ProxmoxCluster" {
                    for g in desired
                        .guests
                        .iter()
                        .filter(|g| g.spec.cluster.as_str() == name)
                    {
                        set(
                            "Guest",
                            g.name().as_str(),
                            SyncState::Unknown,
                            vec![format!("cluster {name} did not answer")],
                        );
                    }
                }
            }
            Note::RestartRequired { resource, keys } => set(
                resource.kind.as_str(),
                &resource.name,
                SyncState::RestartRequired,
                vec![format!("pending until restart: {}", keys.join(", "))],
            ),
            Note::Drift { resource, changes } => set(
                resource.kind.as_str(),
                &resource.name,
                SyncState::Drift,
                changes.clone(),
            ),
            Note::NotPruned { .. } => {}
        }
    }
    for action in &planned.plan.actions {
        let details = if action.changes.is_empty() {
            vec![format!("{} pending", action.verb)]
        } else {
            action
                .changes
                .iter()
                .map(|c| {
                    format!(
                        "{}: {} -> {}",
                        c.field,
                        show(c.observed.as_ref()),
                        show(c.desired.as_ref())
                    )
                })
                .collect()
        };
        set(
            action.resource.kind.as_str(),
            &action.resource.name,
            SyncState::OutOfSync,
            details,
        );
    }
    for issue in &planned.issues {
        set(
            issue.resource.kind.as_str(),
            &issue.resource.name,
            SyncState::Failed,
            vec![format!("{}: {}", issue.code, issue.message)],
        );
    }
    for (key, error) in failed {
        if let Some((kind, rest)) = key.split_once('/') {
            let name = rest.split(':').next().unwrap_or(rest);
            set(kind, name, SyncState::Failed, vec![error.clone()]);
        }
    }

    states
        .into_iter()
        .map(|((kind, name), (sync, details))| {
            let changed_at = previous
                .iter()
                .find(|p| p.kind == kind && p.name == name && p.sync == sync)
                .and_then(|p| p.changed_at)
                .unwrap_or(now);
            ResourceStatus {
                kind,
                name,
                sync,
                details,
                changed_at: Some(changed_at),
            }
        })
        .collect()
}

fn rank(state: SyncState) -> u8 {
    match state {
        SyncState::InSync => 0,
        SyncState::NotTranslated => 1,
        SyncState::Unknown => 2,
        SyncState::Drift => 3,
        SyncState::RestartRequired => 4,
        SyncState::OutOfSync => 5,
        SyncState::Failed => 6,
    }
}

fn show(value: Option<&serde_json::Value>) -> String {
    match value {
        None => "(absent)".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}
