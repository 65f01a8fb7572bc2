//! `mycopod plan` end to end: the real binary against the Proxmox and Modbus simulators on
//! loopback. It must print the plan with the right exit code and send no write request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use crate::support;

use mycopod::plan::translate::device::device_def;
use mycopod_adapters::modbus::Value;
use mycopod_adapters::modbus::sim::{SimDevice, Simulator};
use mycopod_adapters::proxmox::sim::{SimConfig, SimHandle};
use support::run_mycopod;

fn declarations(pve: &str, modbus_port: u16) -> String {
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
metadata: {{name: web, labels: {{tier: prod}}}}
spec:
  cluster: home
  type: qemu
  vmid: 120
  state: running
  cores: 2
  memory: 2GiB
  disks: [{{interface: scsi0, storage: local-lvm, size: 32G}}]
  networks: [{{model: virtio, bridge: vmbr0}}]
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
kind: HandshakePolicy
metadata: {{name: guarded-writes}}
spec:
  match: {{verbs: [write]}}
  approvals: 2
"#
    )
}

async fn modbus_sim(yaml: &str) -> Simulator {
    let loaded = mycopod_specs::load_str("d.yaml", yaml);
    let checked = mycopod_specs::check(&loaded).expect("declarations validate");
    let device = &checked.desired.devices[0];
    SimDevice::new(device_def("fm-1", &device.spec))
        .value("cutoff", Value::Float(0.5))
        .start()
        .await
        .unwrap()
}

fn run_plan(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let db = format!("sqlite://{}/absent.db", dir.display());
    let mut args = vec![
        "plan",
        "--repo",
        dir.to_str().unwrap(),
        "--allow-new-database",
    ];
    args.extend_from_slice(extra);
    run_mycopod(
        dir,
        &args,
        &[
            ("PVE_TOKEN", Some("tok-secret")),
            ("MYCOPOD_DATABASE_URL", Some(&db)),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_should_show_the_changes_exit_3_and_send_no_write_request() {
    let pve = SimHandle::start(SimConfig::default()).await.unwrap();
    // Bind the Modbus simulator first to learn its port, then write declarations naming it.
    let probe = declarations(&pve.base_url(), 1502);
    let sim = modbus_sim(&probe).await;
    let yaml = declarations(&pve.base_url(), sim.addr().port());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("site.yaml"), &yaml).unwrap();
    std::fs::write(
        dir.path().join("mycopod.toml"),
        support::secrets_toml(&pve.base_url()),
    )
    .unwrap();
    let json_out = dir.path().join("plan.json");

    let path = dir.path().to_owned();
    let json_arg = json_out.to_string_lossy().into_owned();
    let (code, stdout, stderr) = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || run_plan(&path, &["--out", &json_arg])),
    )
    .await
    .unwrap()
    .unwrap();

    assert_eq!(code, 3, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("+ Guest/web create"), "{stdout}");
    assert!(stdout.contains("~ Guest/web start"), "{stdout}");
    assert!(stdout.contains("~ ModbusDevice/fm-1 write"), "{stdout}");
    assert!(stdout.contains("setpoints.cutoff  0.5 -> 0.75"), "{stdout}");
    assert!(
        stdout.contains("+ HandshakePolicy/guarded-writes upsert"),
        "{stdout}"
    );
    assert!(stdout.contains("approvals: 2 needed"), "{stdout}");
    assert!(
        stdout.contains("ModbusDevice/fm-1:write: 2 approval(s) (guarded-writes)"),
        "{stdout}"
    );

    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_out).unwrap()).unwrap();
    assert_eq!(document["commit"], "worktree");
    assert_eq!(document["plan_hash"].as_str().unwrap().len(), 64);
    assert!(stdout.contains(document["plan_hash"].as_str().unwrap()));

    // Nothing was written anywhere.
    let requests = pve.requests();
    assert!(!requests.is_empty(), "the cluster was observed");
    let writes: Vec<_> = requests.iter().filter(|r| r.method != "GET").collect();
    assert!(writes.is_empty(), "plan sent writes to Proxmox: {writes:?}");
    for function in [5u8, 6, 15, 16] {
        assert_eq!(
            sim.requests(function),
            0,
            "plan sent Modbus function {function}"
        );
    }
    assert!(sim.requests(3) > 0, "the setpoint was read");
    assert!(
        !dir.path().join("absent.db").exists(),
        "plan must not create a database"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_of_invalid_declarations_should_exit_1_with_the_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: mycopod/v1\nkind: Guest\nmetadata: {name: web}\nspec:\n  cluster: nowhere\n  type: qemu\n  vmid: 120\n",
    )
    .unwrap();
    let path = dir.path().to_owned();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run_plan(&path, &[]))
        .await
        .unwrap();
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("bad.yaml:5:"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_whose_secret_is_missing_should_fail_the_plan_and_name_the_cluster() {
    let pve = SimHandle::start(SimConfig::default()).await.unwrap();
    let sim = modbus_sim(&declarations(&pve.base_url(), 1502)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("site.yaml"),
        declarations(&pve.base_url(), sim.addr().port()),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("mycopod.toml"),
        support::secrets_toml(&pve.base_url()),
    )
    .unwrap();
    let path = dir.path().to_owned();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let db = format!("sqlite://{}/absent.db", path.display());
        run_mycopod(
            &path,
            &[
                "plan",
                "--repo",
                path.to_str().unwrap(),
                "--allow-new-database",
            ],
            &[("PVE_TOKEN", None), ("MYCOPOD_DATABASE_URL", Some(&db))],
        )
    })
    .await
    .unwrap();
    assert!(
        stderr.contains(
            "spec.auth.secretEnv: environment variable PVE_TOKEN is listed but cannot be read: the variable is not set"
        ),
        "{stderr}"
    );
    assert!(
        stdout.contains("ProxmoxCluster/home did not answer"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("Guest/web"),
        "no guest is planned on an unobserved cluster: {stdout}"
    );
    assert!(
        stderr.contains("error: could not observe ProxmoxCluster/home:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: the plan is incomplete: 1 resource could not be observed"),
        "{stderr}"
    );
    // Regression: this plan used to exit 3 (or 0 with nothing else to do), as if the
    // cluster's guests were converged.
    assert_eq!(code, 1, "an unobserved cluster fails the plan: {stdout}");
    assert_eq!(pve.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_and_a_silent_device_should_fail_the_plan_and_name_both() {
    let pve = SimHandle::start(SimConfig::default()).await.unwrap();
    // Nothing listens on the device's port: take a free one and let it go.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    drop(silent);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("site.yaml"),
        declarations(&pve.base_url(), port),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("mycopod.toml"),
        support::secrets_toml(&pve.base_url()),
    )
    .unwrap();
    let path = dir.path().to_owned();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let db = format!("sqlite://{}/absent.db", path.display());
        run_mycopod(
            &path,
            &[
                "plan",
                "--repo",
                path.to_str().unwrap(),
                "--allow-new-database",
            ],
            &[
                ("PVE_TOKEN", Some("not-the-token")),
                ("MYCOPOD_DATABASE_URL", Some(&db)),
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("error: could not observe ProxmoxCluster/home:") && stderr.contains("401"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: could not observe ModbusDevice/fm-1:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 resources could not be observed"),
        "{stderr}"
    );
    assert!(!stdout.contains("no changes"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configured_database_that_does_not_exist_should_stop_the_plan_unless_allowed() {
    let pve = SimHandle::start(SimConfig::default()).await.unwrap();
    let sim = modbus_sim(&declarations(&pve.base_url(), 1502)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("site.yaml"),
        declarations(&pve.base_url(), sim.addr().port()),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("mycopod.toml"),
        support::secrets_toml(&pve.base_url()),
    )
    .unwrap();
    let path = dir.path().to_owned();
    let (typo, default) = tokio::task::spawn_blocking(move || {
        let repo = path.to_str().unwrap();
        // A mistyped URL: refused, rather than planned against nothing.
        let typo = run_mycopod(
            &path,
            &[
                "plan",
                "--repo",
                repo,
                "--database-url",
                "sqlite://./mycopdo.db",
            ],
            &[("PVE_TOKEN", Some("tok-secret"))],
        );
        // The default database, not created yet: planned with a warning.
        let default = run_mycopod(
            &path,
            &["plan", "--repo", repo],
            &[
                ("PVE_TOKEN", Some("tok-secret")),
                ("MYCOPOD_DATABASE_URL", None),
            ],
        );
        (typo, default)
    })
    .await
    .unwrap();
    let (code, stdout, stderr) = typo;
    assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("the database sqlite://./mycopdo.db does not exist"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-new-database"), "{stderr}");
    assert!(stdout.is_empty(), "nothing planned: {stdout}");
    let (code, stdout, stderr) = default;
    assert_eq!(code, 3, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("warning: no database at sqlite://mycopod.db"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("mycopdo.db").exists() && !dir.path().join("mycopod.db").exists(),
        "plan never creates a database"
    );
}
