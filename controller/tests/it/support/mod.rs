//! Shared rig for the controller's end-to-end tests: a Proxmox simulator, a Modbus simulator
//! and a migrated SQLite store, with declarations that point at them.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use mycopod::plan::translate::device::device_def;
use mycopod::plan::{Options, Planned, plan};
use mycopod::reconcile::observe::LiveWorld;
use mycopod::store::Store;
use mycopod_adapters::modbus::Value;
use mycopod_adapters::modbus::sim::{SimDevice, Simulator};
use mycopod_adapters::proxmox::sim::{SimConfig, SimHandle};
use mycopod_specs::DesiredState;

pub fn declarations(pve: &str, modbus_port: u16, web_cores: u32, cutoff: f64) -> String {
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
  setpoints: {{cutoff: {cutoff}}}
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

/// `mycopod.toml` lines listing the secrets the rig's declarations name: `PVE_TOKEN` toward
/// the simulator at `pve_url`, `OPS_SECRET` toward the notification hook.
#[allow(dead_code)]
pub fn secrets_toml(pve_url: &str) -> String {
    format!(
        "[[secrets]]\nenv = \"PVE_TOKEN\"\ndestinations = [\"{pve_url}\"]\n\n\
         [[secrets]]\nenv = \"OPS_SECRET\"\ndestinations = [\"http://127.0.0.1:9\"]\n"
    )
}

/// The registry the rig's declarations need: `PVE_TOKEN` toward the simulator at `pve_url`,
/// `OPS_SECRET` toward the notification hook.
pub fn rig_secrets(pve_url: &str) -> mycopod::secrets::Registry {
    use mycopod::secrets::{Registry, SecretEntry};
    let env: BTreeMap<String, String> = [("PVE_TOKEN".to_owned(), "tok-secret".to_owned())].into();
    Registry::of(
        vec![
            SecretEntry {
                env: Some("PVE_TOKEN".to_owned()),
                file: None,
                destinations: vec![pve_url.to_owned()],
            },
            SecretEntry {
                env: Some("OPS_SECRET".to_owned()),
                file: None,
                destinations: vec!["http://127.0.0.1:9".to_owned()],
            },
        ],
        &env,
    )
    .expect("the rig's secrets are valid")
}

pub fn desired(yaml: &str) -> DesiredState {
    let loaded = mycopod_specs::load_str("site.yaml", yaml);
    mycopod_specs::check(&loaded)
        .unwrap_or_else(|d| panic!("{d:#?}"))
        .desired
}

pub struct Rig {
    pub pve: SimHandle,
    pub modbus: Simulator,
    pub store: Store,
    /// The secrets the rig's declarations may name, bound to the simulator and the hook.
    pub env: mycopod::secrets::Registry,
    _dir: tempfile::TempDir,
}

impl Rig {
    pub async fn start() -> Rig {
        let pve = SimHandle::start(SimConfig::default()).await.unwrap();
        let probe = desired(&declarations(&pve.base_url(), 1502, 2, 0.75));
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
        let env = rig_secrets(&pve.base_url());
        Rig {
            pve,
            modbus,
            store,
            env,
            _dir: dir,
        }
    }

    /// The declarations with `web` at `cores` and the cutoff setpoint at 0.75.
    pub fn desired(&self, cores: u32) -> DesiredState {
        desired(&self.yaml(cores, 0.75))
    }

    /// The declarations' text.
    pub fn yaml(&self, cores: u32, cutoff: f64) -> String {
        declarations(
            &self.pve.base_url(),
            self.modbus.addr().port(),
            cores,
            cutoff,
        )
    }

    pub async fn plan(
        &self,
        world: &LiveWorld,
        d: &DesiredState,
    ) -> (Planned, mycopod::plan::Observed) {
        let (observed, problems) = world.observe(d, Some(&self.store)).await;
        assert!(problems.is_empty(), "{problems:?}");
        (plan("c1", d, &observed, Options::default()), observed)
    }

    /// Observes, plans and applies every action in order; returns the plan it applied.
    pub async fn converge_once(&self, world: &LiveWorld, d: &DesiredState) -> Planned {
        let (planned, observed) = self.plan(world, d).await;
        assert!(planned.issues.is_empty(), "{:?}", planned.issues);
        for action in &planned.plan.actions {
            world
                .apply(
                    d,
                    &observed,
                    action,
                    mycopod::reconcile::apply::ApplyContext {
                        store: Some(&self.store),
                        commit: "c1",
                        now: Utc::now(),
                        tasks: None,
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("apply {}: {e}", action.key));
        }
        planned
    }
}

/// Runs `f` under a generous bound so that a hang fails instead of blocking CI.
pub async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(90), f)
        .await
        .expect("in time")
}

/// Runs the `mycopod` binary in `dir` with `args` and extra environment (`None` removes a
/// variable); returns the exit code, standard output and standard error. Blocking: call it
/// from `spawn_blocking` inside async tests.
pub fn run_mycopod(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, Option<&str>)],
) -> (i32, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mycopod"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("MYCOPOD_CONFIG");
    for (key, value) in env {
        match value {
            Some(v) => command.env(key, v),
            None => command.env_remove(key),
        };
    }
    let out = command.output().expect("the mycopod binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `git` in `dir` as a fixed test identity and returns what it printed; fails the test
/// when git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// For tests that run `mycopod serve`: a Git repository `dir/repo` whose one commit holds
/// `yaml` as `site.yaml`, and a `dir/mycopod.toml` that serves it on a free port with the
/// database `dir/m.db`, polling every second, `PVE_TOKEN` listed for `pve_url`. Returns the
/// configuration's path.
pub fn serve_setup(dir: &Path, yaml: &str, pve_url: &str) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("site.yaml"), yaml).unwrap();
    git(&repo, &["add", "--all"]);
    git(&repo, &["commit", "--quiet", "-m", "declarations"]);
    let config = dir.join("mycopod.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"sqlite://{}\"\nrepo = \"{}\"\ncache_dir = \"{}\"\n\
             listen = \"127.0.0.1:0\"\npoll_interval = \"1s\"\n\
             jwt_secret = \"serve-test-secret-of-at-least-32-bytes\"\n\
             [[secrets]]\nenv = \"PVE_TOKEN\"\ndestinations = [\"{}\"]\n",
            dir.join("m.db").display(),
            repo.display(),
            dir.join("cache").display(),
            pve_url
        ),
    )
    .unwrap();
    config
}
