//! Planning Proxmox guests: create, update, start, stop and delete, with field-level diffs in
//! PVE keys and each change classified as live, restart required, recreate or data loss.
//!
//! Pure. Only keys the declaration owns are compared (the adapter's `compare`), so PVE's own
//! normalizations never show up; changes already waiting in `/pending` are never written
//! again (that would be a sync loop). A running guest's pending changes, and the changes this
//! plan writes that PVE will keep pending, are a `restart` action when the guest's `restart`
//! policy is `approval` or `auto`, and a "restart required" note when it is `never`.

use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

use crate::plan::translate::guest::{MANAGED_TAG, desired_guest};
use mycopod_adapters::proxmox::api::GuestKind;
use mycopod_adapters::proxmox::compare::{
    CreateSource, DesiredGuest, FieldDiff, PowerState, compare, update_for,
};
use mycopod_adapters::proxmox::propstring::{is_disk_key, key_family};
use mycopod_specs::kinds::{GuestSpec, GuestState, Mode, RestartPolicy};
use mycopod_specs::{DesiredState, Resource};
use serde_json::Value as Json;

use super::observed::{Observed, ObservedGuest};
use super::{
    Action, Builder, FieldChange, Impact, Note, PlanIssue, ResourceKind, ResourceRef, Verb,
};

fn guest_ref(name: &str) -> ResourceRef {
    ResourceRef {
        kind: ResourceKind::Guest,
        name: name.to_owned(),
    }
}

/// What a change to `key` does to a running guest of `kind`, before PVE says so through
/// `/pending`. PVE's default hotplug set covers networks and disks; CPU and memory are not
/// hot-plugged unless the guest was set up for it, and cloud-init applies at the next boot.
pub fn impact_of(kind: GuestKind, key: &str, running: bool, removing: bool) -> Impact {
    if removing && is_disk_key(key) {
        return Impact::DestroysData;
    }
    if kind == GuestKind::Lxc && key == "unprivileged" {
        return Impact::Recreate;
    }
    if !running {
        return Impact::Live;
    }
    let family = key_family(key);
    let live = match kind {
        GuestKind::Qemu => {
            matches!(
                family,
                "name" | "description" | "tags" | "onboot" | "protection" | "startup" | "balloon"
            ) || matches!(family, "net" | "scsi" | "virtio" | "sata")
        }
        GuestKind::Lxc => matches!(
            family,
            "description"
                | "tags"
                | "onboot"
                | "protection"
                | "startup"
                | "memory"
                | "swap"
                | "cores"
                | "cpulimit"
                | "cpuunits"
                | "net"
                | "rootfs"
        ),
    };
    if live { Impact::Live } else { Impact::Restart }
}

fn text(value: &Option<String>) -> Option<Json> {
    value.as_ref().map(|v| Json::String(v.clone()))
}

/// Plans every declared guest and, with pruning on, the managed guests no longer declared.
pub(super) fn plan_guests(
    desired: &DesiredState,
    observed: &Observed,
    prune: bool,
    out: &mut Builder,
) {
    let mut declared: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    let mut unreachable_noted = BTreeSet::new();
    let mut jobs = Vec::with_capacity(desired.guests.len());
    for guest in &desired.guests {
        let cluster_name = guest.spec.cluster.as_str();
        let Some(cluster) = observed.clusters.get(cluster_name).filter(|c| c.reachable) else {
            if unreachable_noted.insert(cluster_name) {
                out.notes.push(Note::Unreachable {
                    kind: "ProxmoxCluster".into(),
                    name: cluster_name.to_owned(),
                });
            }
            // Guests of an unreachable cluster are neither planned nor pruned.
            declared.entry(cluster_name).or_default();
            continue;
        };
        let default_node = desired
            .cluster(cluster_name)
            .and_then(|c| c.spec.default_node.as_ref())
            .map(|n| n.as_str());
        let Some(vmid) = resolve_vmid(guest, &cluster.guests) else {
            out.issues.push(PlanIssue::at(
                guest_ref(guest.name().as_str()),
                &guest.source,
                "spec.vmid",
                "guest-without-vmid",
                format!(
                    "guest {} has no vmid and no managed guest of that name exists on cluster {cluster_name}: set spec.vmid",
                    guest.name()
                ),
            ));
            continue;
        };
        declared.entry(cluster_name).or_default().insert(vmid);
        jobs.push((guest, vmid, default_node, cluster.guests.get(&vmid)));
    }
    // Each guest is planned on its own (translation and comparison are the planner's main
    // cost), side by side on the machine's cores; the results are merged in declaration
    // order, so the plan is the same as planning them one after another.
    // `fold` plans a run of neighbouring guests into one builder and `reduce` joins the
    // builders left to right, so nothing is reordered.
    let planned = jobs
        .par_iter()
        .fold(
            Builder::default,
            |mut part, (guest, vmid, default_node, seen)| {
                plan_one(guest, *vmid, *default_node, *seen, &mut part);
                part
            },
        )
        .reduce(Builder::default, |mut left, right| {
            left.merge(right);
            left
        });
    out.merge(planned);

    for (cluster_name, cluster) in &observed.clusters {
        if !cluster.reachable {
            continue;
        }
        let known = declared.get(cluster_name.as_str());
        for (vmid, seen) in &cluster.guests {
            let is_declared = known.is_some_and(|k| k.contains(vmid));
            if is_declared || seen.template || !seen.tags.contains(MANAGED_TAG) {
                continue;
            }
            let name = seen.name.clone().unwrap_or_else(|| format!("vmid-{vmid}"));
            if prune {
                out.deletes.push(delete_action(&name, *vmid, seen));
            } else {
                out.notes.push(Note::NotPruned {
                    resource: guest_ref(&name),
                    detail: format!("managed guest {vmid} on {cluster_name} is no longer declared; pruning is off"),
                });
            }
        }
    }
}

/// The declared vmid, or the vmid of the managed guest that carries the declared name.
fn resolve_vmid(guest: &Resource<GuestSpec>, seen: &BTreeMap<u32, ObservedGuest>) -> Option<u32> {
    if let Some(vmid) = guest.spec.vmid {
        return Some(vmid.get());
    }
    let wanted = guest
        .spec
        .name
        .as_deref()
        .or(guest.spec.hostname.as_deref())
        .unwrap_or(guest.name().as_str());
    seen.iter()
        .find(|(_, g)| g.tags.contains(MANAGED_TAG) && g.name.as_deref() == Some(wanted))
        .map(|(vmid, _)| *vmid)
}

fn delete_action(name: &str, vmid: u32, seen: &ObservedGuest) -> Action {
    Action::new(
        guest_ref(name),
        Verb::Delete,
        vec![FieldChange {
            field: "vmid".into(),
            observed: Some(Json::from(vmid)),
            desired: None,
            impact: Impact::DestroysData,
        }]
        .into_iter()
        .chain(seen.running.then(|| FieldChange {
            field: "state".into(),
            observed: Some("running".into()),
            desired: None,
            impact: Impact::DestroysData,
        }))
        .collect(),
    )
}

fn plan_one(
    guest: &Resource<GuestSpec>,
    vmid: u32,
    default_node: Option<&str>,
    seen: Option<&ObservedGuest>,
    out: &mut Builder,
) {
    let name = guest.name().as_str();
    let resource = guest_ref(name);
    let issue = |path: &str, code: &'static str, message: String| {
        PlanIssue::at(guest_ref(name), &guest.source, path, code, message)
    };

    if guest.spec.state == GuestState::Absent {
        match seen {
            Some(s) if s.tags.contains(MANAGED_TAG) && !s.template => {
                if guest.spec.mode == Mode::Detect {
                    out.notes.push(Note::Drift {
                        resource,
                        changes: vec!["declared absent but exists".into()],
                    });
                } else {
                    out.deletes.push(delete_action(name, vmid, s));
                }
            }
            Some(_) => out.issues.push(issue(
                "spec.state",
                "not-managed",
                format!("guest {name} is declared absent, but vmid {vmid} is not managed by mycopod (no {MANAGED_TAG} tag): it is left alone"),
            )),
            None => {}
        }
        return;
    }

    let mut want = match desired_guest(name, &guest.spec, vmid, default_node) {
        Ok(d) => d,
        Err(e) => {
            out.issues
                .push(issue("spec.node", "no-node", e.to_string()));
            return;
        }
    };

    let Some(seen) = seen else {
        plan_create(&resource, &want, out);
        return;
    };

    if seen.template {
        out.issues.push(issue(
            "spec.vmid",
            "vmid-is-template",
            format!(
                "vmid {vmid} is a template on cluster {}; pick another vmid",
                guest.spec.cluster
            ),
        ));
        return;
    }
    let managed = seen.tags.contains(MANAGED_TAG);
    if !managed && seen.name.as_deref() != want.name.as_deref() {
        out.issues.push(issue(
            "spec.vmid",
            "vmid-taken",
            format!(
                "vmid {vmid} is taken by {:?}, which mycopod does not manage; pick another vmid or rename the declaration to adopt it",
                seen.name.as_deref().unwrap_or("an unnamed guest")
            ),
        ));
        return;
    }
    if seen.kind != want.kind {
        out.issues.push(issue(
            "spec.type",
            "type-mismatch",
            format!(
                "vmid {vmid} is a {} guest, declared as {}; mycopod does not convert guests",
                seen.kind, want.kind
            ),
        ));
        return;
    }
    if seen.node != want.node {
        out.issues.push(issue(
            "spec.node",
            "node-mismatch",
            format!("guest {name} runs on node {}, declared on {}; mycopod does not migrate guests: migrate it in Proxmox or change spec.node", seen.node, want.node),
        ));
        return;
    }

    if !seen.previously_owned.is_empty() {
        want.remove = seen
            .previously_owned
            .iter()
            .filter(|key| !want.owns(key))
            .cloned()
            .collect();
    }

    let diffs: Vec<FieldDiff> = match &seen.config {
        Some(config) => {
            let diffs = compare(&want, config);
            // Turning the diffs into requests is where a shrinking disk is refused.
            if let Err(e) = update_for(&want, config, &diffs) {
                out.issues
                    .push(issue("spec.disks", "disk-shrink", e.to_string()));
                return;
            }
            diffs
        }
        // Not read deeply this time: only what the listing shows (tags) is compared.
        None => {
            let wanted_tags = want.config.get("tags").cloned().unwrap_or_default();
            let wanted: BTreeSet<String> = wanted_tags.split(';').map(str::to_owned).collect();
            if wanted != seen.tags {
                vec![FieldDiff {
                    key: "tags".into(),
                    observed: Some(seen.tags.iter().cloned().collect::<Vec<_>>().join(";")),
                    desired: Some(wanted_tags),
                    pending: false,
                }]
            } else {
                Vec::new()
            }
        }
    };

    let (pending, to_write): (Vec<&FieldDiff>, Vec<&FieldDiff>) =
        diffs.iter().partition(|d| d.pending);
    let changes: Vec<FieldChange> = to_write
        .iter()
        .map(|d| FieldChange {
            field: d.key.clone(),
            observed: text(&d.observed),
            desired: text(&d.desired),
            impact: impact_of(want.kind, &d.key, seen.running, d.desired.is_none()),
        })
        .collect();

    let power = match (want.power, seen.running) {
        (PowerState::Running, false) => Some(Verb::Start),
        (PowerState::Stopped, true) => Some(Verb::Stop),
        _ => None,
    };
    // What waits for a restart of a guest that stays running: what PVE already keeps
    // pending, and what this plan writes that it will keep pending.
    let mut restart_changes: Vec<FieldChange> = pending
        .iter()
        .map(|d| FieldChange {
            field: d.key.clone(),
            observed: text(&d.observed),
            desired: text(&d.desired),
            impact: Impact::Restart,
        })
        .collect();
    restart_changes.extend(
        changes
            .iter()
            .filter(|c| c.impact == Impact::Restart)
            .cloned(),
    );
    let restart = seen.running
        && want.power == PowerState::Running
        && guest.spec.mode == Mode::Enforce
        && guest.spec.restart != RestartPolicy::Never
        && !restart_changes.is_empty();
    if !pending.is_empty() && !restart {
        out.notes.push(Note::RestartRequired {
            resource: resource.clone(),
            keys: pending.iter().map(|d| d.key.clone()).collect(),
        });
    }

    if guest.spec.mode == Mode::Detect {
        let mut described: Vec<String> = changes.iter().map(|c| c.field.clone()).collect();
        if let Some(verb) = power {
            described.push(format!("power ({verb} needed)"));
        }
        if !described.is_empty() {
            out.notes.push(Note::Drift {
                resource,
                changes: described,
            });
        }
        return;
    }

    let mut update_key = None;
    if !changes.is_empty() {
        let action = Action::new(resource.clone(), Verb::Update, changes);
        update_key = Some(action.key.clone());
        out.updates.push(action);
    }
    if restart {
        let mut action = Action::new(resource.clone(), Verb::Restart, restart_changes);
        action.depends_on.extend(update_key.clone());
        out.power.push(action);
    }
    if let Some(verb) = power {
        let mut action = Action::new(
            resource,
            verb,
            vec![FieldChange {
                field: "state".into(),
                observed: Some(if seen.running { "running" } else { "stopped" }.into()),
                desired: Some(
                    if verb == Verb::Start {
                        "running"
                    } else {
                        "stopped"
                    }
                    .into(),
                ),
                impact: Impact::Live,
            }],
        );
        action.depends_on.extend(update_key);
        out.power.push(action);
    }
}

fn plan_create(resource: &ResourceRef, want: &DesiredGuest, out: &mut Builder) {
    let mut changes: Vec<FieldChange> = want
        .owned_config()
        .into_iter()
        .map(|(key, value)| FieldChange {
            field: key,
            observed: None,
            desired: Some(Json::String(value)),
            impact: Impact::Live,
        })
        .collect();
    changes.push(FieldChange {
        field: "vmid".into(),
        observed: None,
        desired: Some(Json::from(want.vmid)),
        impact: Impact::Live,
    });
    let source = match &want.source {
        CreateSource::Plain => None,
        CreateSource::Clone { from, full, .. } => Some((
            "clone",
            format!("{from} ({})", if *full { "full" } else { "linked" }),
        )),
        CreateSource::OsTemplate(template) => Some(("ostemplate", template.clone())),
    };
    if let Some((field, value)) = source {
        changes.push(FieldChange {
            field: field.into(),
            observed: None,
            desired: Some(Json::String(value)),
            impact: Impact::Live,
        });
    }
    changes.push(FieldChange {
        field: "type".into(),
        observed: None,
        desired: Some(Json::String(want.kind.as_str().to_owned())),
        impact: Impact::Live,
    });
    changes.push(FieldChange {
        field: "node".into(),
        observed: None,
        desired: Some(Json::String(want.node.clone())),
        impact: Impact::Live,
    });
    let create = Action::new(resource.clone(), Verb::Create, changes);
    let create_key = create.key.clone();
    out.creates.push(create);
    if want.power == PowerState::Running {
        let mut start = Action::new(
            resource.clone(),
            Verb::Start,
            vec![FieldChange {
                field: "state".into(),
                observed: None,
                desired: Some("running".into()),
                impact: Impact::Live,
            }],
        );
        start.depends_on.push(create_key);
        out.power.push(start);
    }
}
