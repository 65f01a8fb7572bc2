//! Steady-state observation of a simulated cluster of 1,000 guests: the wall time of one
//! observation, and the number of HTTP requests it costs (counted in the simulator's log).
//! Measures only; it asserts nothing about time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mycopod_adapters::proxmox::sim::{SimConfig, SimGuest, SimHandle};
use mycopod_adapters::proxmox::{
    Auth, ClientConfig, DeepReadTracker, DesiredGuest, GuestKind, ProxmoxClient, guest_fingerprint,
};

const GUESTS: u32 = 1_000;

fn seed(sim: &SimHandle) -> Vec<DesiredGuest> {
    let mut guests = Vec::new();
    let mut desired = Vec::new();
    for i in 0..GUESTS {
        let vmid = 1000 + i;
        let node = if i % 2 == 0 { "pve1" } else { "pve2" };
        let g = if i % 4 == 3 {
            SimGuest::lxc(vmid, node)
                .with("hostname", &format!("ct{vmid}"))
                .with("cores", "1")
                .with("memory", "512")
                .with("rootfs", &format!("local-lvm:vm-{vmid}-disk-0,size=8G"))
                .with(
                    "net0",
                    "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth",
                )
                .with("tags", "ct;managed-by-mycopod")
        } else {
            SimGuest::qemu(vmid, node)
                .with("name", &format!("vm{vmid}"))
                .with("cores", "2")
                .with("memory", "2048")
                .with("scsi0", &format!("local-lvm:vm-{vmid}-disk-0,size=32G"))
                .with("net0", "virtio=BC:24:11:00:00:02,bridge=vmbr0,tag=10")
                .with("tags", "managed-by-mycopod;vm")
        };
        let kind = if i % 4 == 3 {
            GuestKind::Lxc
        } else {
            GuestKind::Qemu
        };
        desired.push(
            DesiredGuest::new(vmid, node, kind)
                .with("cores", if kind == GuestKind::Lxc { "1" } else { "2" }),
        );
        guests.push(if i % 3 == 0 { g.running() } else { g });
    }
    sim.seed_guests(guests);
    desired
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (sim, client, desired) = rt.block_on(async {
        let sim = SimHandle::start(SimConfig::default()).await.unwrap();
        let desired = seed(&sim);
        let client = ProxmoxClient::new(ClientConfig::new(
            sim.base_url(),
            Auth::Token {
                token_id: "mycopod@pve!gitops".into(),
                secret: "tok-secret".into(),
            },
        ))
        .unwrap();
        (sim, client, desired)
    });
    // Every guest was read deeply once and its spec has not changed since.
    let mut tracker = DeepReadTracker::new(Duration::from_secs(3600));
    let hashes: Vec<(u32, u64)> = desired
        .iter()
        .map(|d| (d.vmid, guest_fingerprint(d)))
        .collect();
    let t0 = Instant::now();
    for (vmid, h) in &hashes {
        tracker.record(*vmid, *h, t0);
    }
    let tracker = Arc::new(tracker);

    // One steady-state observation, counted.
    sim.clear_requests();
    let started = Instant::now();
    let (listed, deep) = rt.block_on(async {
        let guests = client.observe_cluster().await.unwrap();
        let deep = tracker.select(
            guests
                .iter()
                .map(|g| (g.vmid, hashes[(g.vmid - 1000) as usize].1)),
            Instant::now(),
        );
        (guests.len(), deep.len())
    });
    let wall = started.elapsed();
    println!(
        "steady-state observation of {listed} guests: {} http request(s), {deep} deep read(s), {wall:?}",
        sim.request_count()
    );

    let iterations = Arc::new(AtomicU64::new(0));
    sim.clear_requests();
    let mut group = c.benchmark_group("proxmox_observe");
    group.bench_function("steady_state_1000_guests", |b| {
        b.to_async(&rt).iter(|| {
            let client = client.clone();
            let tracker = tracker.clone();
            let hashes = &hashes;
            let iterations = iterations.clone();
            async move {
                iterations.fetch_add(1, Ordering::Relaxed);
                let guests = client.observe_cluster().await.unwrap();
                let deep = tracker.select(
                    guests
                        .iter()
                        .map(|g| (g.vmid, hashes[(g.vmid - 1000) as usize].1)),
                    Instant::now(),
                );
                assert!(deep.is_empty());
                guests.len()
            }
        })
    });
    group.finish();
    let n = iterations.load(Ordering::Relaxed).max(1);
    println!(
        "requests per steady-state observation over {n} observations: {:.3}",
        sim.request_count() as f64 / n as f64
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
