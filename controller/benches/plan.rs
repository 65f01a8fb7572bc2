//! Planner speed: 10,000 guests, 1,000 devices and 10,000 alert rules, with nothing to change
//! and with 10% changed. Goal (issue 6): under 50 ms with nothing to change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use criterion::{Criterion, criterion_group, criterion_main};
use mycopod::plan::translate::guest::desired_guest;
use mycopod::plan::{
    Observed, ObservedCluster, ObservedDevice, ObservedGuest, Options, ResourceKind, StoredConfig,
    plan,
};
use mycopod_adapters::modbus::Value;
use mycopod_adapters::proxmox::api::GuestKind;
use mycopod_adapters::proxmox::compare::ObservedConfig;
use mycopod_adapters::proxmox::propstring::{allocation, format_size, is_disk_key, parse_tags};
use mycopod_specs::DesiredState;

const GUESTS: usize = 10_000;
const DEVICES: usize = 1_000;
const RULES: usize = 10_000;

fn declarations() -> String {
    let mut y = String::from(
        "apiVersion: mycopod/v1\nkind: ProxmoxCluster\nmetadata: {name: home}\nspec: {endpoint: \"https://127.0.0.1:8006\", auth: {tokenId: \"a@pve!b\", secretEnv: T}, defaultNode: pve1}\n",
    );
    y.push_str("---\napiVersion: mycopod/v1\nkind: NotificationChannel\nmetadata: {name: ops}\nspec: {webhook: {url: \"http://127.0.0.1:9/hook\", secretEnv: S}}\n");
    for i in 0..GUESTS {
        let vmid = 1000 + i;
        if i % 2 == 0 {
            let _ = write!(
                y,
                "---\napiVersion: mycopod/v1\nkind: Guest\nmetadata: {{name: g{i}}}\nspec: {{cluster: home, type: qemu, vmid: {vmid}, cores: 2, memory: 2GiB, disks: [{{interface: scsi0, storage: local-lvm, size: 32G}}], networks: [{{bridge: vmbr0, vlan: 10}}], tags: [web]}}\n"
            );
        } else {
            let _ = write!(
                y,
                "---\napiVersion: mycopod/v1\nkind: Guest\nmetadata: {{name: g{i}}}\nspec: {{cluster: home, type: lxc, vmid: {vmid}, ostemplate: \"local:vztmpl/d.tar.zst\", cores: 1, memory: 512MiB, rootfs: {{storage: local-lvm, size: 4G}}, networks: [{{name: eth0, bridge: vmbr0, ip: dhcp}}]}}\n"
            );
        }
    }
    for i in 0..DEVICES {
        let _ = write!(
            y,
            "---\napiVersion: mycopod/v1\nkind: ModbusDevice\nmetadata: {{name: d{i}}}\nspec:\n  connection: {{tcp: {{host: 127.0.0.1, port: 502}}}}\n  registers:\n    - {{name: flow, table: holding, address: 0, type: f32}}\n    - {{name: cutoff, table: holding, address: 2, type: f32, writable: true, tolerance: 0.001}}\n  setpoints: {{cutoff: 0.75}}\n"
        );
    }
    for i in 0..RULES {
        let _ = write!(
            y,
            "---\napiVersion: mycopod/v1\nkind: AlertRule\nmetadata: {{name: r{i}}}\nspec: {{device: d{}, register: flow, condition: {{below: 2.0}}, for: 5m, notify: [ops]}}\n",
            i % DEVICES
        );
    }
    y
}

/// A value the way PVE returns it after storing it, so comparisons do the work they do
/// against a real cluster: NICs get a MAC (and lxc a `type`), new volumes a name and a size.
fn as_pve_keeps_it(vmid: u32, kind: GuestKind, key: &str, value: &str) -> String {
    let mac = format!(
        "BC:24:11:{:02X}:{:02X}:{:02X}",
        (vmid >> 16) & 0xff,
        (vmid >> 8) & 0xff,
        vmid & 0xff
    );
    if key.starts_with("net") {
        return match kind {
            GuestKind::Qemu => match value.split_once(',') {
                Some((model, rest)) => format!("{model}={mac},{rest}"),
                None => format!("{value}={mac}"),
            },
            GuestKind::Lxc => format!("{value},hwaddr={mac},type=veth"),
        };
    }
    if is_disk_key(key) {
        let (file, rest) = value.split_once(',').unwrap_or((value, ""));
        if let Some((storage, bytes)) = allocation(file) {
            let options = if rest.is_empty() {
                String::new()
            } else {
                format!(",{rest}")
            };
            return format!(
                "{storage}:vm-{vmid}-disk-0{options},size={}",
                format_size(bytes)
            );
        }
    }
    value.to_owned()
}

/// A world in which everything already is as declared.
fn converged(desired: &DesiredState) -> Observed {
    let mut guests = BTreeMap::new();
    for g in &desired.guests {
        let d = desired_guest(
            g.name().as_str(),
            &g.spec,
            g.spec.vmid.unwrap().get(),
            Some("pve1"),
        )
        .unwrap();
        let config: BTreeMap<String, String> = d
            .owned_config()
            .into_iter()
            .map(|(key, value)| {
                let stored = as_pve_keeps_it(d.vmid, d.kind, &key, &value);
                (key, stored)
            })
            .collect();
        guests.insert(
            d.vmid,
            ObservedGuest {
                node: d.node.clone(),
                kind: d.kind,
                name: d.name.clone(),
                running: true,
                tags: parse_tags(config.get("tags").map(String::as_str).unwrap_or("")),
                template: false,
                previously_owned: config.keys().cloned().collect::<BTreeSet<_>>(),
                config: Some(ObservedConfig {
                    config,
                    digest: None,
                    pending: BTreeMap::new(),
                }),
            },
        );
    }
    let mut observed = Observed::default();
    observed.clusters.insert(
        "home".into(),
        ObservedCluster {
            reachable: true,
            guests,
        },
    );
    for d in &desired.devices {
        observed.devices.insert(
            d.name().as_str().to_owned(),
            ObservedDevice {
                reachable: true,
                values: [("cutoff".to_owned(), Value::Float(0.75))].into(),
            },
        );
    }
    for r in &desired.alert_rules {
        observed.config.insert(
            (ResourceKind::AlertRule, r.name().as_str().to_owned()),
            StoredConfig {
                spec: serde_json::to_value(&r.spec).unwrap(),
            },
        );
    }
    for c in &desired.channels {
        observed.config.insert(
            (
                ResourceKind::NotificationChannel,
                c.name().as_str().to_owned(),
            ),
            StoredConfig {
                spec: serde_json::to_value(&c.spec).unwrap(),
            },
        );
    }
    observed
}

/// Changes one resource in ten behind the declaration's back.
fn drift_ten_percent(observed: &mut Observed) {
    let guests = &mut observed.clusters.get_mut("home").unwrap().guests;
    for (i, g) in guests.values_mut().enumerate() {
        if i % 10 == 0 {
            g.config
                .as_mut()
                .unwrap()
                .config
                .insert("cores".into(), "7".into());
        }
    }
    for (i, d) in observed.devices.values_mut().enumerate() {
        if i % 10 == 0 {
            d.values.insert("cutoff".into(), Value::Float(0.5));
        }
    }
    for (i, c) in observed.config.values_mut().enumerate() {
        if i % 10 == 0 {
            c.spec["condition"] = serde_json::json!({"below": 1.0});
        }
    }
}

fn bench(c: &mut Criterion) {
    let text = declarations();
    // Generated here, and bigger than the limits a repository's declarations are read under.
    let mut loaded = mycopod_specs::Loaded::with_limits(mycopod_specs::Limits::NONE);
    loaded.add_str("bench.yaml", text.clone());
    let desired = mycopod_specs::check(&loaded)
        .expect("generated declarations validate")
        .desired;
    let in_sync = converged(&desired);
    let first = plan("c", &desired, &in_sync, Options::default());
    assert!(
        first.plan.is_empty(),
        "the converged world must need nothing: {}",
        first.plan.summary()
    );
    let mut drifted = in_sync.clone();
    drift_ten_percent(&mut drifted);
    let changed = plan("c", &desired, &drifted, Options::default());
    eprintln!(
        "10% changed: {} actions ({})",
        changed.plan.actions.len(),
        changed.plan.summary()
    );

    let mut group = c.benchmark_group("plan");
    group.sample_size(20);
    group.bench_function(
        "10k guests, 1k devices, 10k rules, nothing to change",
        |b| b.iter(|| plan("c", &desired, &in_sync, Options::default())),
    );
    group.bench_function("10k guests, 1k devices, 10k rules, 10% changed", |b| {
        b.iter(|| plan("c", &desired, &drifted, Options::default()))
    });
    group.bench_function("10% changed, plan and hash", |b| {
        b.iter(|| {
            plan("c", &desired, &drifted, Options::default())
                .plan
                .hash()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
