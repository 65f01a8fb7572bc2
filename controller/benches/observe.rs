//! What the reconcile loop's observation costs against the Proxmox simulator with 1,000
//! declared guests: the HTTP requests of the first (full) observation and of a steady-state
//! one, counted in the simulator's request log, and the wall time of a steady-state one.
//! This is `LiveWorld::observe`, the function `plan`, `apply` and `serve` call.
//! Measures only; it asserts nothing about time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use mycopod::reconcile::observe::LiveWorld;
use mycopod::secrets::{Registry, SecretEntry};
use mycopod_adapters::proxmox::sim::{SimConfig, SimGuest, SimHandle};
use mycopod_specs::DesiredState;

const GUESTS: u32 = 1_000;

/// 1,000 guests on two nodes (a quarter lxc, a third running), in the simulator and declared
/// alike, so that the world is converged.
fn seed(sim: &SimHandle) -> DesiredState {
    let mut yaml = format!(
        "apiVersion: mycopod/v1\nkind: ProxmoxCluster\nmetadata: {{name: home}}\nspec: \
         {{endpoint: \"{}\", auth: {{tokenId: \"mycopod@pve!gitops\", secretEnv: PVE_TOKEN}}, \
         defaultNode: pve1}}\n",
        sim.base_url()
    );
    let mut guests = Vec::new();
    for i in 0..GUESTS {
        let vmid = 1000 + i;
        let node = if i % 2 == 0 { "pve1" } else { "pve2" };
        let running = i % 3 == 0;
        let state = if running { "running" } else { "stopped" };
        let guest = if i % 4 == 3 {
            let _ = write!(
                yaml,
                "---\napiVersion: mycopod/v1\nkind: Guest\nmetadata: {{name: ct{vmid}}}\nspec: \
                 {{cluster: home, node: {node}, type: lxc, vmid: {vmid}, state: {state}, \
                 ostemplate: \"local:vztmpl/d.tar.zst\", cores: 1, memory: 512MiB}}\n"
            );
            SimGuest::lxc(vmid, node)
                .with("hostname", &format!("ct{vmid}"))
                .with("cores", "1")
                .with("memory", "512")
                .with("tags", "managed-by-mycopod")
        } else {
            let _ = write!(
                yaml,
                "---\napiVersion: mycopod/v1\nkind: Guest\nmetadata: {{name: vm{vmid}}}\nspec: \
                 {{cluster: home, node: {node}, type: qemu, vmid: {vmid}, state: {state}, \
                 cores: 2, memory: 2GiB}}\n"
            );
            SimGuest::qemu(vmid, node)
                .with("name", &format!("vm{vmid}"))
                .with("cores", "2")
                .with("memory", "2048")
                .with("tags", "managed-by-mycopod")
        };
        guests.push(if running { guest.running() } else { guest });
    }
    sim.seed_guests(guests);
    // 1,001 documents in one text: read without the repository limits.
    let mut loaded = mycopod_specs::Loaded::with_limits(mycopod_specs::Limits::NONE);
    loaded.add_str("site.yaml", yaml.clone());
    mycopod_specs::check(&loaded)
        .unwrap_or_else(|d| panic!("{d:#?}"))
        .desired
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (sim, desired, world) = rt.block_on(async {
        let sim = SimHandle::start(SimConfig::default()).await.unwrap();
        let desired = seed(&sim);
        let env: BTreeMap<String, String> =
            [("PVE_TOKEN".to_owned(), "tok-secret".to_owned())].into();
        let secrets = Registry::of(
            vec![SecretEntry {
                env: Some("PVE_TOKEN".to_owned()),
                file: None,
                destinations: vec![sim.base_url()],
            }],
            &env,
        )
        .unwrap();
        let world = LiveWorld::new(&desired, &secrets);
        (sim, desired, world)
    });
    let world = Arc::new(world);
    let desired = Arc::new(desired);

    let observe_once = |what: &str| {
        sim.clear_requests();
        let started = Instant::now();
        let (observed, problems) = rt.block_on(world.observe(&desired, None));
        let wall = started.elapsed();
        assert!(problems.is_empty(), "{problems:?}");
        let plan = mycopod::plan::plan("c", &desired, &observed, Default::default());
        assert!(
            plan.plan.is_empty(),
            "the world is converged, yet {} action(s) are planned, first {:?}",
            plan.plan.actions.len(),
            plan.plan.actions.first()
        );
        println!(
            "{what} observation of {GUESTS} declared guests: {} http request(s), {wall:?}",
            sim.request_count()
        );
    };
    observe_once("first (full)");
    observe_once("steady-state");

    let iterations = Arc::new(AtomicU64::new(0));
    sim.clear_requests();
    let mut group = c.benchmark_group("observe");
    group.bench_function("steady_state_1000_guests", |b| {
        b.to_async(&rt).iter(|| {
            let world = world.clone();
            let desired = desired.clone();
            let iterations = iterations.clone();
            async move {
                iterations.fetch_add(1, Ordering::Relaxed);
                let (observed, problems) = world.observe(&desired, None).await;
                assert!(problems.is_empty());
                observed.clusters.len()
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
