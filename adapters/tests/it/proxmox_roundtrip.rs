//! Property test: random desired guest sets applied through the real client to the simulator,
//! observed back and compared, leave nothing to change. Must not talk to anything but the sim.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mycopod_adapters::proxmox::sim::{SimConfig, SimHandle};
use mycopod_adapters::proxmox::{
    Auth, ClientConfig, CreateSource, DesiredGuest, GuestKind, PowerState, ProxmoxClient,
    RetryPolicy, compare,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Spec {
    kind: GuestKind,
    cores: u32,
    memory: u32,
    tags: Vec<String>,
    onboot: Option<&'static str>,
    disk_gib: u32,
    ssd: bool,
    vlan: Option<u16>,
    startup: Option<(u32, u32)>,
    description: Option<String>,
    running: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![Just(GuestKind::Qemu), Just(GuestKind::Lxc)],
        1u32..8,
        prop::sample::select(vec![512u32, 1024, 2048, 4096]),
        prop::collection::vec(
            prop::sample::select(vec!["web", "Prod", "DB", "dns", "lab"]),
            0..4,
        ),
        prop::option::of(prop::sample::select(vec!["0", "1", "yes", "no"])),
        1u32..64,
        any::<bool>(),
        prop::option::of(1u16..4094),
        prop::option::of((1u32..10, 0u32..120)),
        prop::option::of("[a-z ]{1,20}"),
        any::<bool>(),
    )
        .prop_map(
            |(
                kind,
                cores,
                memory,
                tags,
                onboot,
                disk_gib,
                ssd,
                vlan,
                startup,
                description,
                running,
            )| Spec {
                kind,
                cores,
                memory,
                tags: tags.into_iter().map(str::to_string).collect(),
                onboot,
                disk_gib,
                ssd,
                vlan,
                startup,
                description,
                running,
            },
        )
}

fn desired(vmid: u32, s: &Spec) -> DesiredGuest {
    let mut d = DesiredGuest::new(vmid, "pve1", s.kind)
        .with("cores", s.cores.to_string())
        .with("memory", s.memory.to_string());
    d.name = Some(format!("g{vmid}"));
    if !s.tags.is_empty() {
        d = d.with("tags", s.tags.join(","));
    }
    if let Some(b) = s.onboot {
        d = d.with("onboot", b);
    }
    if let Some((order, up)) = s.startup {
        d = d.with("startup", format!("order={order},up={up}"));
    }
    if let Some(text) = &s.description {
        d = d.with("description", text.clone());
    }
    let tag = s.vlan.map(|t| format!(",tag={t}")).unwrap_or_default();
    match s.kind {
        GuestKind::Qemu => {
            let ssd = if s.ssd { ",ssd=1" } else { "" };
            d = d
                .with("scsi0", format!("local-lvm:{}{ssd}", s.disk_gib))
                .with("net0", format!("virtio,bridge=vmbr0{tag}"));
        }
        GuestKind::Lxc => {
            d = d
                .with("rootfs", format!("local-lvm:{}", s.disk_gib))
                .with("net0", format!("name=eth0,bridge=vmbr0,ip=dhcp{tag}"));
            d.source = CreateSource::OsTemplate(
                "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
            );
        }
    }
    d.power = if s.running {
        PowerState::Running
    } else {
        PowerState::Stopped
    };
    d
}

/// The second generation of a spec: other values, disks only growing, kind kept.
fn evolve(first: &Spec, next: &Spec) -> Spec {
    Spec {
        kind: first.kind,
        disk_gib: first.disk_gib.max(next.disk_gib),
        ..next.clone()
    }
}

async fn converge(client: &ProxmoxClient, d: &DesiredGuest, exists: bool) {
    if !exists {
        client.create_guest(d).await.unwrap();
    } else {
        let out = client.apply_config(d).await.unwrap();
        if !out.restart_required.is_empty() {
            client.reboot(&d.node, d.kind, d.vmid).await.unwrap();
        }
    }
    let status = client.guest_status(&d.node, d.kind, d.vmid).await.unwrap();
    match (d.power, status.as_str()) {
        (PowerState::Running, "stopped") => client.start(&d.node, d.kind, d.vmid).await.unwrap(),
        (PowerState::Stopped, "running") => {
            client
                .shutdown(&d.node, d.kind, d.vmid, Duration::from_secs(5), true)
                .await
                .unwrap();
        }
        _ => {}
    }
}

async fn assert_converged(client: &ProxmoxClient, guests: &[DesiredGuest]) {
    let observed = client.observe_cluster().await.unwrap();
    for d in guests {
        let o = client
            .observe_guest_config(&d.node, d.kind, d.vmid)
            .await
            .unwrap();
        let diffs = compare(d, &o);
        assert!(
            diffs.is_empty(),
            "guest {} still differs: {diffs:?}\nobserved: {o:?}",
            d.vmid
        );
        let summary = observed.iter().find(|g| g.vmid == d.vmid).unwrap();
        let want = match d.power {
            PowerState::Running => "running",
            PowerState::Stopped => "stopped",
        };
        assert_eq!(summary.status.as_deref(), Some(want));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn applied_guest_sets_should_observe_back_with_nothing_left_to_change(
        first in prop::collection::vec(spec(), 1..5),
        second in prop::collection::vec(spec(), 5),
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), async {
            let sim = SimHandle::start(SimConfig { task_duration: Duration::ZERO, ..SimConfig::default() })
                .await
                .unwrap();
            let mut cfg = ClientConfig::new(
                sim.base_url(),
                Auth::Token { token_id: "mycopod@pve!gitops".into(), secret: "tok-secret".into() },
            );
            cfg.retry = RetryPolicy { max_attempts: 3, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(2) };
            cfg.task_poll_interval = Duration::from_millis(1);
            let client = ProxmoxClient::new(cfg).unwrap();

            let gen1: Vec<DesiredGuest> =
                first.iter().enumerate().map(|(i, s)| desired(200 + i as u32, s)).collect();
            for d in &gen1 {
                converge(&client, d, false).await;
            }
            assert_converged(&client, &gen1).await;

            let gen2: Vec<DesiredGuest> = first
                .iter()
                .zip(&second)
                .enumerate()
                .map(|(i, (a, b))| desired(200 + i as u32, &evolve(a, b)))
                .collect();
            for d in &gen2 {
                converge(&client, d, true).await;
            }
            assert_converged(&client, &gen2).await;
        }).await })
        .expect("property case timed out");
    }
}
