//! Planner tests: snapshots of rendered plans per verb and classification, and properties
//! against a pure fake world (apply, plan again, nothing left; shuffled input, same hash).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use crate::plan::translate::guest::desired_guest;
use expect_test::{Expect, expect};
use mycopod_adapters::modbus::Value;
use mycopod_adapters::proxmox::api::GuestKind;
use mycopod_adapters::proxmox::compare::{ObservedConfig, PendingChange};
use mycopod_adapters::proxmox::propstring::parse_tags;
use mycopod_specs::DesiredState;
use proptest::prelude::*;

use super::*;

const CLUSTER: &str = "apiVersion: mycopod/v1\nkind: ProxmoxCluster\nmetadata: {name: home}\nspec:\n  endpoint: https://pve.lan:8006\n  auth: {tokenId: \"mycopod@pve!gitops\", secretEnv: PVE_TOKEN}\n  defaultNode: pve1\n";

fn desired(yaml: &str) -> DesiredState {
    let text = format!("{CLUSTER}---\n{yaml}");
    let loaded = mycopod_specs::load_str("decl.yaml", &text);
    mycopod_specs::check(&loaded)
        .unwrap_or_else(|d| panic!("declarations do not validate: {d:#?}"))
        .desired
}

fn guest_doc(name: &str, body: &str) -> String {
    let body: String = body.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: mycopod/v1\nkind: Guest\nmetadata: {{name: {name}}}\nspec:\n  cluster: home\n{body}"
    )
}

/// An empty, reachable cluster `home`.
fn world() -> Observed {
    let mut observed = Observed::default();
    observed.clusters.insert(
        "home".into(),
        ObservedCluster {
            reachable: true,
            guests: BTreeMap::new(),
        },
    );
    observed
}

fn render(planned: &Planned) -> String {
    let mut out = planned.plan.render();
    for note in &planned.notes {
        out.push_str(&format!("note: {}\n", serde_json::to_string(note).unwrap()));
    }
    for issue in &planned.issues {
        out.push_str(&format!("issue: {issue}\n"));
    }
    out
}

fn check_plan(desired: &DesiredState, observed: &Observed, prune: bool, expect: Expect) {
    let planned = plan("0123456789abcdef0123", desired, observed, Options { prune });
    expect.assert_eq(&render(&planned));
}

/// Applies a plan the way the executor and PVE would, to plain data.
fn apply(world: &mut Observed, desired: &DesiredState, plan: &Plan) {
    for action in &plan.actions {
        let name = action.resource.name.as_str();
        match (action.resource.kind, action.verb) {
            (ResourceKind::Guest, Verb::Create) => {
                let spec = desired
                    .guests
                    .iter()
                    .find(|g| g.name().as_str() == name)
                    .unwrap();
                let d = desired_guest(
                    name,
                    &spec.spec,
                    spec.spec.vmid.unwrap().get(),
                    Some("pve1"),
                )
                .unwrap();
                let config = d.owned_config();
                world.clusters.get_mut("home").unwrap().guests.insert(
                    d.vmid,
                    ObservedGuest {
                        node: d.node.clone(),
                        kind: d.kind,
                        name: d.name.clone(),
                        running: false,
                        tags: parse_tags(config.get("tags").map(String::as_str).unwrap_or("")),
                        template: false,
                        previously_owned: config.keys().cloned().collect(),
                        config: Some(ObservedConfig {
                            config,
                            digest: Some("d1".into()),
                            pending: BTreeMap::new(),
                        }),
                    },
                );
            }
            (ResourceKind::Guest, verb) => {
                let guests = &mut world.clusters.get_mut("home").unwrap().guests;
                // A delete names its vmid; otherwise guest names here are declaration names.
                let named_vmid = action
                    .changes
                    .iter()
                    .find(|c| c.field == "vmid")
                    .and_then(|c| c.observed.as_ref())
                    .and_then(|v| v.as_u64())
                    .and_then(|v| u32::try_from(v).ok());
                let declared_vmid = desired
                    .guests
                    .iter()
                    .find(|g| g.name().as_str() == name)
                    .and_then(|g| g.spec.vmid)
                    .map(|v| v.get());
                let vmid = named_vmid.or(declared_vmid).unwrap_or_else(|| {
                    *guests
                        .iter()
                        .find(|(_, g)| g.name.as_deref() == Some(name))
                        .map(|(v, _)| v)
                        .unwrap_or_else(|| panic!("no guest {name} to {verb}"))
                });
                match verb {
                    Verb::Update => {
                        let g = guests.get_mut(&vmid).unwrap();
                        let config = g.config.as_mut().unwrap();
                        for c in &action.changes {
                            match &c.desired {
                                Some(serde_json::Value::String(v)) => {
                                    config.config.insert(c.field.clone(), v.clone());
                                    g.previously_owned.insert(c.field.clone());
                                }
                                _ => {
                                    config.config.remove(&c.field);
                                    g.previously_owned.remove(&c.field);
                                }
                            }
                        }
                        g.tags =
                            parse_tags(config.config.get("tags").map(String::as_str).unwrap_or(""));
                    }
                    Verb::Start => guests.get_mut(&vmid).unwrap().running = true,
                    Verb::Stop => guests.get_mut(&vmid).unwrap().running = false,
                    Verb::Delete => {
                        guests.remove(&vmid);
                    }
                    other => panic!("unexpected guest verb {other}"),
                }
            }
            (ResourceKind::ModbusDevice, Verb::Write) => {
                let device = world.devices.get_mut(name).unwrap();
                for c in &action.changes {
                    let register = c.field.trim_start_matches("setpoints.").to_owned();
                    let value = match c.desired.as_ref().unwrap() {
                        serde_json::Value::Bool(b) => Value::Bool(*b),
                        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap()),
                        other => Value::Text(other.as_str().unwrap().to_owned()),
                    };
                    device.values.insert(register, value);
                }
            }
            (kind, Verb::Upsert) => {
                let spec = match kind {
                    ResourceKind::AlertRule => serde_json::to_value(
                        &desired
                            .alert_rules
                            .iter()
                            .find(|r| r.name().as_str() == name)
                            .unwrap()
                            .spec,
                    ),
                    ResourceKind::NotificationChannel => serde_json::to_value(
                        &desired
                            .channels
                            .iter()
                            .find(|r| r.name().as_str() == name)
                            .unwrap()
                            .spec,
                    ),
                    ResourceKind::HandshakePolicy => serde_json::to_value(
                        &desired
                            .policies
                            .iter()
                            .find(|r| r.name().as_str() == name)
                            .unwrap()
                            .spec,
                    ),
                    other => panic!("no upsert for {other}"),
                }
                .unwrap();
                world
                    .config
                    .insert((kind, name.to_owned()), StoredConfig { spec });
            }
            (kind, Verb::Remove) => {
                world.config.remove(&(kind, name.to_owned()));
            }
            (kind, verb) => panic!("unexpected {verb} on {kind}"),
        }
    }
}

const WEB: &str = "type: qemu\nvmid: 120\nstate: running\ncores: 2\nmemory: 2GiB\ndisks: [{interface: scsi0, storage: local-lvm, size: 32G}]\nnetworks: [{model: virtio, bridge: vmbr0, vlan: 10}]\nclone: {from: 9000}\ntags: [web]";

#[test]
fn an_empty_cluster_should_get_creates_then_starts_in_key_order() {
    let d = desired(&format!(
        "{}---\n{}",
        guest_doc("web", WEB),
        guest_doc(
            "dns",
            "type: lxc\nvmid: 121\nstate: stopped\nostemplate: local:vztmpl/debian-12.tar.zst\ncores: 1\nmemory: 512MiB\nrootfs: {storage: local-lvm, size: 4G}"
        )
    ));
    check_plan(
        &d,
        &world(),
        false,
        expect![[r#"
            plan for commit 0123456789ab: 2 to create, 1 to start
            + Guest/dns create
                cores       (none) -> "1"
                hostname    (none) -> "dns"
                memory      (none) -> "512"
                node        (none) -> "pve1"
                ostemplate  (none) -> "local:vztmpl/debian-12.tar.zst"
                rootfs      (none) -> "local-lvm:4"
                tags        (none) -> "managed-by-mycopod"
                type        (none) -> "lxc"
                vmid        (none) -> 121
            + Guest/web create
                clone   (none) -> "9000 (full)"
                cores   (none) -> "2"
                memory  (none) -> "2048"
                name    (none) -> "web"
                net0    (none) -> "virtio,bridge=vmbr0,tag=10"
                node    (none) -> "pve1"
                scsi0   (none) -> "local-lvm:32"
                tags    (none) -> "managed-by-mycopod;web"
                type    (none) -> "qemu"
                vmid    (none) -> 120
            ~ Guest/web start
                state  (none) -> "running"
        "#]],
    );
}

/// A world where `web` exists exactly as declared, running.
fn web_in_sync() -> (DesiredState, Observed) {
    let d = desired(&guest_doc("web", WEB));
    let mut w = world();
    let first = plan("c1", &d, &w, Options::default());
    apply(&mut w, &d, &first.plan);
    (d, w)
}

#[test]
fn a_world_that_matches_should_plan_nothing() {
    let (d, w) = web_in_sync();
    check_plan(
        &d,
        &w,
        false,
        expect![[r#"
        plan for commit 0123456789ab: no changes
    "#]],
    );
}

#[test]
fn pve_normalisations_should_not_show_as_changes() {
    let (d, mut w) = web_in_sync();
    let g = w
        .clusters
        .get_mut("home")
        .unwrap()
        .guests
        .get_mut(&120)
        .unwrap();
    let config = &mut g.config.as_mut().unwrap().config;
    config.insert(
        "net0".into(),
        "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,tag=10".into(),
    );
    config.insert("scsi0".into(), "local-lvm:vm-120-disk-0,size=32G".into());
    config.insert("memory".into(), "2048".into());
    config.insert("vmgenid".into(), "1f2e3d4c".into());
    config.insert("tags".into(), "web;managed-by-mycopod".into());
    check_plan(
        &d,
        &w,
        false,
        expect![[r#"
        plan for commit 0123456789ab: no changes
    "#]],
    );
}

#[test]
fn a_memory_change_on_a_running_qemu_guest_should_be_marked_restart_required() {
    let (_, w) = web_in_sync();
    let d = desired(&guest_doc(
        "web",
        &WEB.replace("memory: 2GiB", "memory: 4GiB")
            .replace("tags: [web]", "tags: [web, prod]"),
    ));
    check_plan(
        &d,
        &w,
        false,
        expect![[r#"
        plan for commit 0123456789ab: 1 to update
        ~ Guest/web update
          ! memory  "2048" -> "4096"  (restart required)
            tags    "managed-by-mycopod;web" -> "managed-by-mycopod;prod;web"
    "#]],
    );
}

#[test]
fn a_change_already_pending_should_be_a_note_and_never_planned_again() {
    let (_, mut w) = web_in_sync();
    let g = w
        .clusters
        .get_mut("home")
        .unwrap()
        .guests
        .get_mut(&120)
        .unwrap();
    g.config
        .as_mut()
        .unwrap()
        .pending
        .insert("memory".into(), PendingChange::Set("4096".into()));
    let d = desired(&guest_doc(
        "web",
        &WEB.replace("memory: 2GiB", "memory: 4GiB"),
    ));
    check_plan(
        &d,
        &w,
        false,
        expect![[r#"
        plan for commit 0123456789ab: no changes
        note: {"note":"restart_required","resource":{"kind":"Guest","name":"web"},"keys":["memory"]}
    "#]],
    );
}

/// `web` in sync and running, with `memory: 4096` already pending in PVE.
fn web_with_pending_memory() -> Observed {
    let (_, mut w) = web_in_sync();
    let g = w
        .clusters
        .get_mut("home")
        .unwrap()
        .guests
        .get_mut(&120)
        .unwrap();
    assert!(g.running);
    g.config
        .as_mut()
        .unwrap()
        .pending
        .insert("memory".into(), PendingChange::Set("4096".into()));
    w
}

#[test]
fn a_restart_policy_should_turn_pending_changes_into_a_restart_action() {
    let w = web_with_pending_memory();
    for policy in ["approval", "auto"] {
        let d = desired(&guest_doc(
            "web",
            &format!(
                "{}
restart: {policy}",
                WEB.replace("memory: 2GiB", "memory: 4GiB")
            ),
        ));
        check_plan(
            &d,
            &w,
            false,
            expect![[r#"
            plan for commit 0123456789ab: 1 to restart
            ~ Guest/web restart
              ! memory  "2048" -> "4096"  (restart required)
        "#]],
        );
    }
}

#[test]
fn a_change_pve_will_keep_pending_should_be_written_then_restarted_in_one_plan() {
    let (_, w) = web_in_sync();
    let d = desired(&guest_doc(
        "web",
        &format!(
            "{}
restart: auto",
            WEB.replace("memory: 2GiB", "memory: 4GiB")
        ),
    ));
    let planned = plan("c1", &d, &w, Options::default());
    let keys: Vec<(&str, Vec<&str>)> = planned
        .plan
        .actions
        .iter()
        .map(|a| {
            (
                a.key.as_str(),
                a.depends_on.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("Guest/web:update", vec![]),
            ("Guest/web:restart", vec!["Guest/web:update"])
        ]
    );
}

#[test]
fn no_restart_should_be_planned_when_the_policy_is_never_the_guest_stops_or_mode_is_detect() {
    let w = web_with_pending_memory();
    let base = WEB.replace("memory: 2GiB", "memory: 4GiB");
    for (what, body) in [
        ("default (never)", base.clone()),
        (
            "never",
            format!(
                "{base}
restart: never"
            ),
        ),
        (
            "detect",
            format!(
                "{base}
restart: auto
mode: detect"
            ),
        ),
        (
            "stopping",
            format!(
                "{base}
restart: auto"
            )
            .replace("state: running", "state: stopped"),
        ),
    ] {
        let planned = plan(
            "c1",
            &desired(&guest_doc("web", &body)),
            &w,
            Options::default(),
        );
        assert!(
            planned.plan.actions.iter().all(|a| a.verb != Verb::Restart),
            "{what}: {:?}",
            planned.plan.actions
        );
    }
    // Without a restart the pending change stays a note.
    let planned = plan(
        "c1",
        &desired(&guest_doc("web", &base)),
        &w,
        Options::default(),
    );
    assert!(
        planned
            .notes
            .iter()
            .any(|n| matches!(n, Note::RestartRequired { keys, .. } if keys == &["memory"])),
        "{:?}",
        planned.notes
    );
}

#[test]
fn power_states_should_plan_start_and_stop() {
    let (d, mut w) = web_in_sync();
    w.clusters
        .get_mut("home")
        .unwrap()
        .guests
        .get_mut(&120)
        .unwrap()
        .running = false;
    check_plan(
        &d,
        &w,
        false,
        expect![[r#"
        plan for commit 0123456789ab: 1 to start
        ~ Guest/web start
            state  "stopped" -> "running"
    "#]],
    );
    let (_, w) = web_in_sync();
    let stopped = desired(&guest_doc(
        "web",
        &WEB.replace("state: running", "state: stopped"),
    ));
    check_plan(
        &stopped,
        &w,
        false,
        expect![[r#"
        plan for commit 0123456789ab: 1 to stop
        ~ Guest/web stop
            state  "running" -> "stopped"
    "#]],
    );
}

#[test]
fn keys_dropped_from_the_declaration_should_be_removed_and_disks_destroy_data() {
    let (_, w) = web_in_sync();
    let d = desired(&guest_doc(
        "web",
        &WEB.replace(
            "disks: [{interface: scsi0, storage: local-lvm, size: 32G}]\n",
            "",
        )
        .replace("cores: 2\n", ""),
    ));
    check_plan(
        &d,
        &w,
        false,
        expect![[r#"
        plan for commit 0123456789ab: 1 to update
        ~ Guest/web update
          ! cores  "2" -> (none)  (restart required)
          ! scsi0  "local-lvm:32" -> (none)  (destroys data)
    "#]],
    );
}

#[test]
fn managed_guests_no_longer_declared_should_be_deleted_only_with_pruning() {
    let (_, w) = web_in_sync();
    let nothing = desired(
        "apiVersion: mycopod/v1\nkind: AlertRule\nmetadata: {name: r}\nspec: {device: fm, condition: {offline: true}}\n---\napiVersion: mycopod/v1\nkind: ModbusDevice\nmetadata: {name: fm}\nspec: {connection: {tcp: {host: 127.0.0.1}}}\n",
    );
    let planned = plan("c", &nothing, &w, Options { prune: false });
    assert!(planned.plan.actions.iter().all(|a| a.verb != Verb::Delete));
    assert!(
        matches!(planned.notes.as_slice(), [Note::NotPruned { .. }]),
        "{:?}",
        planned.notes
    );
    let pruned = plan("c", &nothing, &w, Options { prune: true });
    let deletes: Vec<&str> = pruned
        .plan
        .actions
        .iter()
        .filter(|a| a.verb == Verb::Delete)
        .map(|a| a.key.as_str())
        .collect();
    assert_eq!(deletes, ["Guest/web:delete"]);
    assert_eq!(
        pruned.plan.actions.last().unwrap().verb,
        Verb::Delete,
        "deletes come last"
    );
}

#[test]
fn a_guest_declared_absent_should_be_deleted_if_managed_and_left_alone_otherwise() {
    let (_, mut w) = web_in_sync();
    let absent = desired(&guest_doc("web", "type: qemu\nvmid: 120\nstate: absent"));
    check_plan(
        &absent,
        &w,
        false,
        expect![[r#"
        plan for commit 0123456789ab: 1 to delete
        - Guest/web delete
          ! state  "running" -> (none)  (destroys data)
          ! vmid   120 -> (none)  (destroys data)
    "#]],
    );
    w.clusters
        .get_mut("home")
        .unwrap()
        .guests
        .get_mut(&120)
        .unwrap()
        .tags
        .clear();
    check_plan(
        &absent,
        &w,
        false,
        expect![[r#"
            plan for commit 0123456789ab: no changes
            issue: decl.yaml:16:10: guest web is declared absent, but vmid 120 is not managed by mycopod (no managed-by-mycopod tag): it is left alone [not-managed]
        "#]],
    );
}

#[test]
fn conflicts_should_be_issues_that_point_at_the_field() {
    let mut w = world();
    w.clusters.get_mut("home").unwrap().guests.insert(
        120,
        ObservedGuest {
            node: "pve1".into(),
            kind: GuestKind::Qemu,
            name: Some("legacy".into()),
            running: true,
            tags: BTreeSet::new(),
            template: false,
            config: None,
            previously_owned: BTreeSet::new(),
        },
    );
    let d = desired(&guest_doc("web", WEB));
    check_plan(
        &d,
        &w,
        false,
        expect![[r#"
            plan for commit 0123456789ab: no changes
            issue: decl.yaml:15:9: vmid 120 is taken by "legacy", which mycopod does not manage; pick another vmid or rename the declaration to adopt it [vmid-taken]
        "#]],
    );

    let (_, w) = web_in_sync();
    let moved = desired(&guest_doc("web", &format!("node: pve2\n{WEB}")));
    let planned = plan("c", &moved, &w, Options::default());
    assert_eq!(planned.issues.len(), 1);
    assert_eq!(planned.issues[0].code, "node-mismatch");
    assert_eq!(planned.issues[0].path, "spec.node");

    let shrunk = desired(&guest_doc("web", &WEB.replace("size: 32G", "size: 16G")));
    let planned = plan("c", &shrunk, &w, Options::default());
    assert!(planned.plan.is_empty());
    assert_eq!(
        planned.issues[0].code, "disk-shrink",
        "{:?}",
        planned.issues
    );
}

#[test]
fn detect_mode_should_report_drift_and_change_nothing() {
    let (_, w) = web_in_sync();
    let d = desired(&guest_doc(
        "web",
        &format!("mode: detect\n{}", WEB.replace("cores: 2", "cores: 4")),
    ));
    check_plan(
        &d,
        &w,
        false,
        expect![[r#"
        plan for commit 0123456789ab: no changes
        note: {"note":"drift","resource":{"kind":"Guest","name":"web"},"changes":["cores"]}
    "#]],
    );
}

#[test]
fn an_unreachable_cluster_should_plan_nothing_for_its_guests_and_prune_nothing() {
    let (d, mut w) = web_in_sync();
    w.clusters.get_mut("home").unwrap().reachable = false;
    check_plan(
        &d,
        &w,
        true,
        expect![[r#"
        plan for commit 0123456789ab: no changes
        note: {"note":"unreachable","kind":"ProxmoxCluster","name":"home"}
    "#]],
    );
}

const PLANT: &str = "apiVersion: mycopod/v1\nkind: ModbusDevice\nmetadata: {name: fm-1}\nspec:\n  connection: {tcp: {host: 127.0.0.1, port: 5020}}\n  registers:\n    - {name: flow_rate, table: holding, address: 0, type: f32}\n    - {name: cutoff, table: holding, address: 20, type: f32, writable: true, min: 0, max: 5, tolerance: 0.001}\n    - {name: pump, table: coil, address: 0, type: bool, writable: true}\n  setpoints: {cutoff: 0.75, pump: true}\n---\napiVersion: mycopod/v1\nkind: NotificationChannel\nmetadata: {name: ops}\nspec: {webhook: {url: \"http://127.0.0.1:9000/hook\", secretEnv: OPS_SECRET}}\n---\napiVersion: mycopod/v1\nkind: AlertRule\nmetadata: {name: low-flow}\nspec: {device: fm-1, register: flow_rate, condition: {below: 2.0}, for: 5m, notify: [ops]}\n";

fn plant_world(cutoff: f64, pump: bool, reachable: bool) -> Observed {
    let mut w = world();
    w.devices.insert(
        "fm-1".into(),
        ObservedDevice {
            reachable,
            values: [
                ("cutoff".to_owned(), Value::Float(cutoff)),
                ("pump".to_owned(), Value::Bool(pump)),
            ]
            .into(),
        },
    );
    w
}

#[test]
fn setpoints_should_be_written_only_outside_tolerance_and_only_to_reachable_devices() {
    let d = desired(PLANT);
    let mut w = plant_world(0.7, true, true);
    for key in [ResourceKind::AlertRule, ResourceKind::NotificationChannel] {
        let name = if key == ResourceKind::AlertRule {
            "low-flow"
        } else {
            "ops"
        };
        let spec = if key == ResourceKind::AlertRule {
            serde_json::to_value(&d.alert_rules[0].spec).unwrap()
        } else {
            serde_json::to_value(&d.channels[0].spec).unwrap()
        };
        w.config.insert((key, name.into()), StoredConfig { spec });
    }
    check_plan(
        &d,
        &w,
        false,
        expect![[r#"
        plan for commit 0123456789ab: 1 to write
        ~ ModbusDevice/fm-1 write
            setpoints.cutoff  0.7 -> 0.75
    "#]],
    );
    // 0.7504 is within the tolerance of 0.001.
    w.devices
        .get_mut("fm-1")
        .unwrap()
        .values
        .insert("cutoff".into(), Value::Float(0.7504));
    check_plan(
        &d,
        &w,
        false,
        expect![[r#"
        plan for commit 0123456789ab: no changes
    "#]],
    );
    w.devices.get_mut("fm-1").unwrap().reachable = false;
    w.devices
        .get_mut("fm-1")
        .unwrap()
        .values
        .insert("cutoff".into(), Value::Float(0.1));
    check_plan(
        &d,
        &w,
        false,
        expect![[r#"
        plan for commit 0123456789ab: no changes
        note: {"note":"unreachable","kind":"ModbusDevice","name":"fm-1"}
    "#]],
    );
}

#[test]
fn database_held_configuration_should_be_upserted_with_field_diffs_and_removed_when_undeclared() {
    let d = desired(PLANT);
    let mut w = plant_world(0.75, true, true);
    w.config.insert(
        (ResourceKind::AlertRule, "low-flow".into()),
        StoredConfig { spec: serde_json::json!({"device": "fm-1", "register": "flow_rate", "condition": {"below": 1.5}, "for": "5m", "notify": ["ops"], "severity": "warning"}) },
    );
    w.config.insert(
        (ResourceKind::AlertRule, "old-rule".into()),
        StoredConfig {
            spec: serde_json::json!({"device": "fm-1", "condition": {"offline": true}}),
        },
    );
    let planned = plan("c", &d, &w, Options::default());
    let rendered = planned.plan.render();
    expect![[r#"
        plan for commit c: 2 to upsert, 1 to remove
        + NotificationChannel/ops upsert
            webhook.secretEnv  (none) -> "OPS_SECRET"
            webhook.url        (none) -> "http://127.0.0.1:9000/hook"
        + AlertRule/low-flow upsert
            condition.below  1.5 -> 2.0
        - AlertRule/old-rule remove
            condition.offline  true -> (none)
            device             "fm-1" -> (none)
    "#]]
    .assert_eq(&rendered);
}

// ---------------------------------------------------------------------------------------------
// Properties

fn arb_guest(index: usize) -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        1u32..=8,
        prop::sample::select(vec!["512MiB", "1GiB", "2GiB", "3GiB"]),
        any::<bool>(),
        prop::sample::select(vec!["a", "b", "web", "prod"]),
        0u16..3,
    )
        .prop_map(move |(qemu, cores, memory, running, tag, vlan)| {
            let state = if running { "running" } else { "stopped" };
            // Each type has its own vmids: a guest changing type is a new guest.
            let vmid = if qemu { 200 + index } else { 300 + index };
            if qemu {
                let vlan = if vlan == 0 { String::new() } else { format!(", vlan: {vlan}") };
                guest_doc(
                    &format!("g{index}"),
                    &format!("type: qemu\nvmid: {vmid}\nstate: {state}\ncores: {cores}\nmemory: {memory}\nnetworks: [{{bridge: vmbr0{vlan}}}]\ndisks: [{{interface: scsi0, storage: local-lvm, size: 8G}}]\ntags: [{tag}]"),
                )
            } else {
                guest_doc(
                    &format!("g{index}"),
                    &format!("type: lxc\nvmid: {vmid}\nstate: {state}\nostemplate: local:vztmpl/d.tar.zst\ncores: {cores}\nmemory: {memory}\nrootfs: {{storage: local-lvm, size: 4G}}\ntags: [{tag}]"),
                )
            }
        })
}

fn arb_declarations() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(any::<u8>(), 1..6).prop_flat_map(|seeds| {
        seeds
            .iter()
            .enumerate()
            .map(|(i, _)| arb_guest(i))
            .collect::<Vec<_>>()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn applying_a_plan_and_planning_again_should_leave_nothing_to_do(
        before in arb_declarations(),
        after in arb_declarations(),
        (cutoff, pump) in (0.0f64..5.0, any::<bool>()),
    ) {
        let mut w = plant_world(cutoff, pump, true);
        // Reach the first state, then move to the second: both steps must converge.
        for docs in [&before, &after] {
            let d = desired(&format!("{}---\n{}", PLANT, docs.join("---\n")));
            let first = plan("c", &d, &w, Options { prune: true });
            prop_assert!(first.issues.is_empty(), "{:?}", first.issues);
            apply(&mut w, &d, &first.plan);
            let again = plan("c", &d, &w, Options { prune: true });
            prop_assert!(again.plan.is_empty(), "left over:\n{}", again.plan.render());
        }
    }

    #[test]
    fn shuffled_declarations_should_give_the_same_plan_hash(
        docs in arb_declarations(),
        seed in any::<u64>(),
    ) {
        let mut shuffled = docs.clone();
        // A deterministic shuffle from the seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let w = plant_world(1.0, false, true);
        let a = plan("c", &desired(&format!("{}---\n{}", PLANT, docs.join("---\n"))), &w, Options::default());
        let b = plan("c", &desired(&format!("{}---\n{}", shuffled.join("---\n"), PLANT)), &w, Options::default());
        prop_assert_eq!(a.plan.hash(), b.plan.hash());
    }
}

#[test]
fn flatten_should_leave_out_empty_values_and_walk_objects() {
    let spec = serde_json::json!({"match": {"kinds": [], "labels": {}, "verbs": ["write"]}, "approvals": 2, "expiresAfter": null});
    let flat = flatten(&spec);
    let keys: Vec<&str> = flat.keys().map(String::as_str).collect();
    assert_eq!(keys, ["approvals", "match.verbs"]);
}
