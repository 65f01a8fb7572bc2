//! Observe, plan and apply through the real adapters against the Proxmox and Modbus
//! simulators and a real SQLite store: the world converges, a second plan is empty, drift is
//! corrected, and an update planned against a configuration that changed since is refused as a
//! conflict instead of overwriting it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use mycopod::model::ConfigKind;
use mycopod::plan::{Options, Planned, plan};
use mycopod::reconcile::observe::LiveWorld;
use mycopod::store::Store;
use mycopod_adapters::modbus::Value;
use mycopod_adapters::modbus::sim::{SimDevice, Simulator};
use mycopod_adapters::modbus::translate::device_def;
use mycopod_adapters::proxmox::sim::{SimConfig, SimHandle, SimStatus};
use mycopod_specs::DesiredState;

fn declarations(pve: &str, modbus_port: u16, web_cores: u32) -> String {
    format!(
        r#"apiVersion: mycopod/v1
kind: ProxmoxCluster
metadata: {{name: home}}
spec:
  endpoint: {pve}
  auth: {{tokenId: "mycopod@pve!gitops", secretEnv: PVE_TOKEN}}
  defaultNode: pve1
---
apiVersion: mycopod/v1
kind: Guest
metadata: {{name: web}}
spec:
  cluster: home
  type: qemu
  vmid: 120
  state: running
  cores: {web_cores}
  memory: 2GiB
  disks: [{{interface: scsi0, storage: local-lvm, size: 32G}}]
  networks: [{{model: virtio, bridge: vmbr0, vlan: 10}}]
  tags: [web]
---
apiVersion: mycopod/v1
kind: Guest
metadata: {{name: dns}}
spec:
  cluster: home
  type: lxc
  vmid: 121
  state: stopped
  ostemplate: local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst
  cores: 1
  memory: 512MiB
  rootfs: {{storage: local-lvm, size: 4G}}
  networks: [{{name: eth0, bridge: vmbr0, ip: dhcp}}]
---
apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {{name: fm-1}}
spec:
  connection: {{tcp: {{host: 127.0.0.1, port: {modbus_port}}}}}
  timeout: 2s
  registers:
    - {{name: flow_rate, table: holding, address: 0, type: f32}}
    - {{name: cutoff, table: holding, address: 20, type: f32, writable: true, min: 0, max: 5, tolerance: 0.001}}
  setpoints: {{cutoff: 0.75}}
---
apiVersion: mycopod/v1
kind: NotificationChannel
metadata: {{name: ops}}
spec: {{webhook: {{url: "http://127.0.0.1:9/hook", secretEnv: OPS_SECRET}}}}
---
apiVersion: mycopod/v1
kind: AlertRule
metadata: {{name: low-flow}}
spec: {{device: fm-1, register: flow_rate, condition: {{below: 2.0}}, for: 5m, notify: [ops]}}
"#
    )
}

fn desired(yaml: &str) -> DesiredState {
    let loaded = mycopod_specs::load_str("site.yaml", yaml);
    mycopod_specs::check(&loaded)
        .unwrap_or_else(|d| panic!("{d:#?}"))
        .desired
}

struct Rig {
    pve: SimHandle,
    modbus: Simulator,
    store: Store,
    env: BTreeMap<String, String>,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Rig {
        let pve = SimHandle::start(SimConfig::default()).await.unwrap();
        let probe = desired(&declarations(&pve.base_url(), 1502, 2));
        let modbus = SimDevice::new(device_def("fm-1", &probe.devices[0].spec))
            .value("cutoff", Value::Float(0.5))
            .start()
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/m.db", dir.path().display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let env = [("PVE_TOKEN".to_owned(), "tok-secret".to_owned())].into();
        Rig {
            pve,
            modbus,
            store,
            env,
            _dir: dir,
        }
    }

    fn desired(&self, cores: u32) -> DesiredState {
        desired(&declarations(
            &self.pve.base_url(),
            self.modbus.addr().port(),
            cores,
        ))
    }

    async fn plan(
        &self,
        world: &LiveWorld,
        d: &DesiredState,
    ) -> (Planned, mycopod::plan::Observed) {
        let (observed, problems) = world.observe(d, Some(&self.store)).await;
        assert!(problems.is_empty(), "{problems:?}");
        (plan("c1", d, &observed, Options::default()), observed)
    }

    /// Observes, plans and applies every action in order; returns the plan it applied.
    async fn converge_once(&self, world: &LiveWorld, d: &DesiredState) -> Planned {
        let (planned, observed) = self.plan(world, d).await;
        assert!(planned.issues.is_empty(), "{:?}", planned.issues);
        for action in &planned.plan.actions {
            world
                .apply(d, &observed, action, Some(&self.store), "c1", Utc::now())
                .await
                .unwrap_or_else(|e| panic!("apply {}: {e}", action.key));
        }
        planned
    }
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(90), f)
        .await
        .expect("in time")
}

#[tokio::test(flavor = "multi_thread")]
async fn applying_a_plan_should_converge_so_that_the_next_plan_is_empty() {
    within(async {
        let rig = Rig::start().await;
        let d = rig.desired(2);
        let world = LiveWorld::new(&d, &rig.env);

        let first = rig.converge_once(&world, &d).await;
        let keys: Vec<&str> = first.plan.actions.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "NotificationChannel/ops:upsert",
                "AlertRule/low-flow:upsert",
                "Guest/dns:create",
                "Guest/web:create",
                "Guest/web:start",
                "ModbusDevice/fm-1:write"
            ]
        );

        let (second, _) = rig.plan(&world, &d).await;
        assert!(
            second.plan.is_empty(),
            "left over:\n{}",
            second.plan.render()
        );

        let web = rig.pve.guest(120).expect("web exists");
        assert_eq!(web.status, SimStatus::Running);
        assert_eq!(web.config.get("cores").map(String::as_str), Some("2"));
        assert_eq!(web.config.get("memory").map(String::as_str), Some("2048"));
        assert!(web.config["tags"].contains("managed-by-mycopod"));
        let dns = rig.pve.guest(121).expect("dns exists");
        assert_eq!(dns.status, SimStatus::Stopped);
        assert_eq!(dns.config.get("hostname").map(String::as_str), Some("dns"));
        let Value::Float(cutoff) = rig.modbus.value("cutoff").unwrap() else {
            panic!("cutoff is a float")
        };
        assert!((cutoff - 0.75).abs() < 1e-6, "{cutoff}");
        let rules = rig
            .store
            .list_config_objects(ConfigKind::AlertRule)
            .await
            .unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].name, "low-flow");
        assert_eq!(rules[0].commit_sha, "c1");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_behind_mycopods_back_should_be_planned_and_corrected() {
    within(async {
        let rig = Rig::start().await;
        let d = rig.desired(2);
        let world = LiveWorld::new(&d, &rig.env);
        rig.converge_once(&world, &d).await;

        rig.pve.modify_guest(120, |g| {
            g.config.insert("cores".into(), "4".into());
            g.status = SimStatus::Stopped;
        });
        rig.modbus.set_value("cutoff", &Value::Float(1.5)).unwrap();

        let fix = rig.converge_once(&world, &d).await;
        let rendered = fix.plan.render();
        assert!(rendered.contains("~ Guest/web update"), "{rendered}");
        assert!(rendered.contains(r#"cores  "4" -> "2""#), "{rendered}");
        assert!(rendered.contains("~ Guest/web start"), "{rendered}");
        assert!(
            rendered.contains("setpoints.cutoff  1.5 -> 0.75"),
            "{rendered}"
        );

        let (after, _) = rig.plan(&world, &d).await;
        assert!(after.plan.is_empty(), "left over:\n{}", after.plan.render());
        assert_eq!(rig.pve.guest(120).unwrap().config["cores"], "2");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_planned_before_a_concurrent_change_should_be_refused_as_a_conflict() {
    within(async {
        let rig = Rig::start().await;
        let d = rig.desired(2);
        let world = LiveWorld::new(&d, &rig.env);
        rig.converge_once(&world, &d).await;

        let wider = rig.desired(3);
        let (planned, observed) = rig.plan(&world, &wider).await;
        let update = planned
            .plan
            .actions
            .iter()
            .find(|a| a.key == "Guest/web:update")
            .expect("an update is planned");

        // Someone changes the guest after the plan was made (and, say, approved).
        rig.pve.modify_guest(120, |g| {
            g.config.insert("description".into(), "hand edit".into());
        });
        // The simulator recomputes the digest from the config, as PVE does.
        let err = world
            .apply(
                &wider,
                &observed,
                update,
                Some(&rig.store),
                "c2",
                Utc::now(),
            )
            .await
            .expect_err("a stale digest must be refused");
        assert!(err.is_conflict(), "{err}");
        assert_eq!(
            rig.pve.guest(120).unwrap().config["cores"],
            "2",
            "nothing was overwritten"
        );
    })
    .await;
}
