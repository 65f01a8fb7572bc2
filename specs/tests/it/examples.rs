//! Every folder under `examples/` must validate clean, and its desired state must hold what
//! the example promises (the acceptance list for the examples).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use mycopod_specs::kinds::{GuestType, Verb};
use mycopod_specs::{check, load_path, render::render_human};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
        .join(name)
}

fn checked(name: &str) -> mycopod_specs::Checked {
    let loaded = load_path(&example(name)).unwrap();
    match check(&loaded) {
        Ok(c) => {
            assert!(
                c.warnings.is_empty(),
                "{}",
                render_human(&c.warnings, &loaded)
            );
            c
        }
        Err(findings) => panic!("{}", render_human(&findings, &loaded)),
    }
}

#[test]
fn every_example_folder_should_validate_without_findings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            checked(&entry.file_name().to_string_lossy());
            seen += 1;
        }
    }
    assert!(seen >= 2);
}

#[test]
fn homelab_example_should_declare_a_cluster_five_guests_and_a_prod_delete_guard() {
    let d = checked("homelab").desired;
    let cluster = d.cluster("home").unwrap();
    assert_eq!(
        cluster.spec.endpoint.url().as_str(),
        "https://pve.lan:8006/"
    );
    assert_eq!(cluster.spec.auth.secret_env.as_deref(), Some("PVE_TOKEN"));
    assert!(d.guests.len() >= 5);
    let qemu = d
        .guests
        .iter()
        .filter(|g| g.spec.guest_type == GuestType::Qemu)
        .count();
    assert!(qemu >= 1 && qemu < d.guests.len());
    assert!(
        d.guests
            .iter()
            .any(|g| g.spec.clone.as_ref().is_some_and(|c| c.from.get() == 9000))
    );
    assert!(d.guests.iter().any(|g| g.spec.ostemplate.is_some()));
    assert!(d.policies.iter().any(|p| {
        p.spec.match_.verbs.contains(&Verb::Delete)
            && p.spec.match_.labels.get("tier").map(String::as_str) == Some("prod")
            && p.spec.approvals >= 1
    }));
    let names: Vec<&str> = d.guests.iter().map(|g| g.name().as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "guests are sorted by name");
}

#[test]
fn plant_example_should_declare_three_transmitters_alerts_a_webhook_and_two_approvers_for_writes() {
    use mycopod_specs::kinds::{Condition, Table, ValueType};
    let d = checked("plant").desired;
    assert!(d.devices.len() >= 3);
    for dev in &d.devices {
        let reg = |n: &str| dev.spec.registers.iter().find(|r| r.name.as_str() == n);
        let flow = reg("flow_rate").unwrap();
        assert_eq!(flow.value_type, ValueType::F32);
        assert!(reg("totalizer").is_some() && reg("temperature").is_some());
        assert_eq!(reg("status").unwrap().value_type, ValueType::U16);
        let cutoff = reg("low_flow_cutoff").unwrap();
        assert!(cutoff.writable && cutoff.table == Table::Holding);
        assert!(cutoff.min.is_some() && cutoff.max.is_some() && cutoff.tolerance.is_some());
        assert!(dev.spec.setpoints.contains_key("low_flow_cutoff"));
    }
    let conditions: Vec<&Condition> = d.alert_rules.iter().map(|a| &a.spec.condition).collect();
    assert!(conditions.iter().any(|c| matches!(c, Condition::Below(_))));
    assert!(conditions.iter().any(|c| matches!(c, Condition::Above(_))));
    assert!(
        conditions
            .iter()
            .any(|c| matches!(c, Condition::Outside(_)))
    );
    assert!(
        conditions
            .iter()
            .any(|c| matches!(c, Condition::Offline(true)))
    );
    assert!(
        d.channels
            .iter()
            .any(|c| c.spec.webhook.secret_env.is_some())
    );
    assert!(
        d.policies
            .iter()
            .any(|p| p.spec.approvals == 2 && p.spec.match_.verbs.contains(&Verb::Write))
    );
    // The desired state keeps positions for the planner.
    let fm = d.device("fm-101").unwrap();
    let pos = fm.source.locate("spec.setpoints.low_flow_cutoff");
    assert!(fm.source.file.ends_with("devices.yaml") && pos.line > 1 && pos.column > 1);
}
