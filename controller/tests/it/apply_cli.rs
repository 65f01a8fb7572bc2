//! `mycopod apply` end to end: the real binary against the simulators with a SQLite file.
//! A plan needing one approval waits until `--approve`; one needing two is refused and points
//! at the server; a second apply has nothing to do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::path::Path;

use mycopod_adapters::modbus::Value;
use mycopod_adapters::proxmox::sim::SimStatus;
use support::{Rig, run_mycopod, within};

fn apply(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let repo = dir.join("repo");
    let db = format!("sqlite://{}/m.db", dir.display());
    let mut args = vec!["apply", "--repo", repo.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_mycopod(
        dir,
        &args,
        &[
            ("PVE_TOKEN", Some("tok-secret")),
            ("USER", Some("olivia")),
            ("MYCOPOD_DATABASE_URL", Some(&db)),
        ],
    )
}

async fn apply_async(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let dir = dir.to_owned();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
        apply(&dir, &refs)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_should_need_approve_for_one_approval_then_converge_and_then_do_nothing() {
    within(async {
        let rig = Rig::start().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("repo")).unwrap();
        std::fs::write(dir.path().join("repo/site.yaml"), rig.yaml(2, 0.75)).unwrap();
        std::fs::write(
            dir.path().join("mycopod.toml"),
            support::secrets_toml(&rig.pve.base_url()),
        )
        .unwrap();

        let (code, stdout, stderr) = apply_async(dir.path(), &[]).await;
        assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stdout.contains("~ ModbusDevice/fm-1 write"), "{stdout}");
        assert!(stderr.contains("this plan needs one approval"), "{stderr}");
        assert!(stderr.contains("mycopod apply --approve"), "{stderr}");
        assert!(
            rig.pve.guest(120).is_none(),
            "nothing applied without approval"
        );

        let (code, stdout, stderr) = apply_async(dir.path(), &["--approve"]).await;
        assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stdout.contains("approved run"), "{stdout}");
        assert!(stdout.contains("ok  Guest/web:create"), "{stdout}");
        assert!(stdout.contains(": succeeded"), "{stdout}");
        assert_eq!(rig.pve.guest(120).unwrap().status, SimStatus::Running);
        let Value::Float(cutoff) = rig.modbus.value("cutoff").unwrap() else {
            panic!()
        };
        assert!((cutoff - 0.75).abs() < 1e-6);

        let (code, stdout, _) = apply_async(dir.path(), &[]).await;
        assert_eq!(code, 0, "{stdout}");
        assert!(stdout.contains("nothing to apply"), "{stdout}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_should_refuse_a_plan_that_needs_two_approvers_and_point_at_the_server() {
    within(async {
        let rig = Rig::start().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("repo")).unwrap();
        let policy = "---\napiVersion: mycopod/v1\nkind: HandshakePolicy\nmetadata: {name: two-man}\nspec: {match: {verbs: [write]}, approvals: 2}\n";
        std::fs::write(dir.path().join("repo/site.yaml"), rig.yaml(2, 0.75) + policy).unwrap();
        std::fs::write(
            dir.path().join("mycopod.toml"),
            support::secrets_toml(&rig.pve.base_url()),
        )
        .unwrap();
        let (code, _, stderr) = apply_async(dir.path(), &["--approve"]).await;
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("this plan needs 2 approvals"), "{stderr}");
        assert!(stderr.contains("/api/v1/runs/"), "{stderr}");
        assert!(rig.pve.guest(120).is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_should_apply_nothing_when_a_declared_device_cannot_be_observed() {
    within(async {
        let rig = Rig::start().await;
        // A port nobody listens on: the device is declared but cannot be observed.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("repo")).unwrap();
        std::fs::write(
            dir.path().join("repo/site.yaml"),
            support::declarations(&rig.pve.base_url(), closed, 2, 0.75),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("mycopod.toml"),
            support::secrets_toml(&rig.pve.base_url()),
        )
        .unwrap();

        let (code, stdout, stderr) = apply_async(dir.path(), &["--approve"]).await;
        assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(
            stderr.contains("error: could not observe ModbusDevice/fm-1:"),
            "{stderr}"
        );
        assert!(stderr.contains("error: nothing was applied"), "{stderr}");
        // Regression: the guests were created although the view was incomplete.
        assert!(rig.pve.guest(120).is_none(), "nothing applied");
        let store =
            mycopod::store::Store::connect(&format!("sqlite://{}/m.db", dir.path().display()))
                .await
                .unwrap();
        for status in mycopod::model::RunStatus::ALL {
            assert!(
                store.runs_in_status(*status).await.unwrap().is_empty(),
                "no run recorded, none {status}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_apply_a_plan_should_read_only_the_listing_and_still_find_edits_past_the_bound() {
    within(async {
        let pve = mycopod_adapters::proxmox::sim::SimHandle::start(Default::default())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("repo")).unwrap();
        let mut yaml = format!(
            "apiVersion: mycopod/v1\nkind: ProxmoxCluster\nmetadata: {{name: home}}\nspec:\n  \
             endpoint: {}\n  auth: {{tokenId: \"mycopod@pve!gitops\", secretEnv: PVE_TOKEN}}\n  \
             defaultNode: pve1\n",
            pve.base_url()
        );
        for vmid in 300..330 {
            yaml.push_str(&format!(
                "---\napiVersion: mycopod/v1\nkind: Guest\nmetadata: {{name: ct{vmid}}}\nspec:\n  \
                 cluster: home\n  type: lxc\n  vmid: {vmid}\n  state: stopped\n  \
                 ostemplate: local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\n  cores: 1\n  \
                 memory: 256MiB\n  rootfs: {{storage: local-lvm, size: 2G}}\n  onboot: true\n"
            ));
        }
        std::fs::write(dir.path().join("repo/site.yaml"), yaml).unwrap();
        std::fs::write(
            dir.path().join("mycopod.toml"),
            support::secrets_toml(&pve.base_url()),
        )
        .unwrap();
        let (code, stdout, stderr) = apply_async(dir.path(), &[]).await;
        assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert_eq!(pve.vmids().len(), 30);

        // A one-shot plan in a new process reuses what apply read: one listing, no guest read.
        pve.clear_requests();
        let path = dir.path().to_owned();
        let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
            let db = format!("sqlite://{}/m.db", path.display());
            let repo = path.join("repo");
            run_mycopod(
                &path,
                &["plan", "--repo", repo.to_str().unwrap()],
                &[
                    ("PVE_TOKEN", Some("tok-secret")),
                    ("MYCOPOD_DATABASE_URL", Some(&db)),
                ],
            )
        })
        .await
        .unwrap();
        assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stdout.contains("no changes"), "{stdout}");
        let sent: Vec<String> = pve
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(sent.len() <= 3, "{sent:?}");
        assert_eq!(sent, ["GET /cluster/resources"]);

        // So does an apply with nothing to do: the plan it shows is the one it records.
        pve.clear_requests();
        let (code, stdout, stderr) = apply_async(dir.path(), &[]).await;
        assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stdout.contains("nothing to apply"), "{stdout}");
        let sent: Vec<String> = pve
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert_eq!(
            sent,
            ["GET /cluster/resources"],
            "one observation per apply"
        );

        // An edit the listing does not show is planned once the full-read bound has passed.
        assert!(pve.modify_guest(300, |g| {
            g.config.insert("onboot".into(), "0".into());
        }));
        std::fs::write(
            dir.path().join("mycopod.toml"),
            format!(
                "full_read_interval = \"1s\"\n{}",
                support::secrets_toml(&pve.base_url())
            ),
        )
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let path = dir.path().to_owned();
        let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
            let db = format!("sqlite://{}/m.db", path.display());
            let repo = path.join("repo");
            run_mycopod(
                &path,
                &["plan", "--repo", repo.to_str().unwrap()],
                &[
                    ("PVE_TOKEN", Some("tok-secret")),
                    ("MYCOPOD_DATABASE_URL", Some(&db)),
                ],
            )
        })
        .await
        .unwrap();
        assert_eq!(code, 3, "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stdout.contains("~ Guest/ct300 update"), "{stdout}");
        assert!(stdout.contains("onboot"), "{stdout}");
        assert!(
            !stdout.contains("Guest/ct301"),
            "only the edited guest: {stdout}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_increase_under_restart_approval_should_wait_then_take_effect_by_a_restart() {
    within(async {
        let rig = Rig::start().await;
        rig.modbus.set_value("cutoff", &Value::Float(0.75)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("repo")).unwrap();
        std::fs::write(dir.path().join("repo/site.yaml"), rig.yaml(2, 0.75)).unwrap();
        std::fs::write(
            dir.path().join("mycopod.toml"),
            support::secrets_toml(&rig.pve.base_url()),
        )
        .unwrap();
        let (code, stdout, stderr) = apply_async(dir.path(), &[]).await;
        assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert_eq!(rig.pve.guest(120).unwrap().status, SimStatus::Running);

        let raised = rig
            .yaml(2, 0.75)
            .replace("  memory: 2GiB\n", "  memory: 4GiB\n  restart: approval\n");
        assert!(raised.contains("restart: approval"));
        std::fs::write(dir.path().join("repo/site.yaml"), raised).unwrap();
        let reboots = || {
            rig.pve
                .requests()
                .iter()
                .filter(|r| r.method == "POST" && r.path.ends_with("/status/reboot"))
                .count()
        };

        let (code, stdout, stderr) = apply_async(dir.path(), &[]).await;
        assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stdout.contains("~ Guest/web restart"), "{stdout}");
        assert!(stderr.contains("this plan needs one approval"), "{stderr}");
        assert_eq!(reboots(), 0, "not restarted without approval");
        assert_eq!(rig.pve.guest(120).unwrap().config["memory"], "2048");

        let (code, stdout, stderr) = apply_async(dir.path(), &["--approve"]).await;
        assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stdout.contains("ok  Guest/web:restart"), "{stdout}");
        let web = rig.pve.guest(120).unwrap();
        assert_eq!(web.config["memory"], "4096", "in effect after the restart");
        assert!(web.pending.is_empty(), "{:?}", web.pending);
        assert_eq!(web.status, SimStatus::Running);
        assert_eq!(reboots(), 1);

        let (code, stdout, _) = apply_async(dir.path(), &[]).await;
        assert_eq!(code, 0, "{stdout}");
        assert!(stdout.contains("nothing to apply"), "{stdout}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_after_apply_should_not_read_unchanged_guests_again() {
    within(async {
        let pve = mycopod_adapters::proxmox::sim::SimHandle::start(Default::default())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut yaml = format!(
            "apiVersion: mycopod/v1\nkind: ProxmoxCluster\nmetadata: {{name: home}}\nspec:\n  \
             endpoint: {}\n  auth: {{tokenId: \"mycopod@pve!gitops\", secretEnv: PVE_TOKEN}}\n  \
             defaultNode: pve1\n",
            pve.base_url()
        );
        for vmid in 400..410 {
            yaml.push_str(&format!(
                "---\napiVersion: mycopod/v1\nkind: Guest\nmetadata: {{name: ct{vmid}}}\nspec:\n  \
                 cluster: home\n  type: lxc\n  vmid: {vmid}\n  state: stopped\n  \
                 ostemplate: local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\n  cores: 1\n  \
                 memory: 256MiB\n  rootfs: {{storage: local-lvm, size: 2G}}\n"
            ));
        }
        let config = support::serve_setup(dir.path(), &yaml, &pve.base_url());
        let config_arg = config.to_str().unwrap().to_owned();
        let path = dir.path().to_owned();
        let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
            run_mycopod(
                &path,
                &["--config", &config_arg, "apply"],
                &[("PVE_TOKEN", Some("tok-secret")), ("USER", Some("olivia"))],
            )
        })
        .await
        .unwrap();
        assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert_eq!(pve.vmids().len(), 10);

        pve.clear_requests();
        let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_mycopod"))
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("PVE_TOKEN", "tok-secret")
            .env("MYCOPOD_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let store = mycopod::store::Store::connect(&format!(
            "sqlite://{}",
            dir.path().join("m.db").display()
        ))
        .await
        .unwrap();
        // serve reconciles the commit once; it finds the world as apply left it.
        let scope = format!("{}@main", dir.path().join("repo").display());
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let reconciled = store
                .get_setting(&format!("reconciled_commit:{scope}"))
                .await
                .unwrap();
            if reconciled.is_some_and(|c| c != "worktree") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "serve reconciled");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        serve.kill().unwrap();
        serve.wait().unwrap();
        let sent: Vec<String> = pve
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(
            sent.iter().all(|r| r == "GET /cluster/resources"),
            "serve read only the listing: {sent:?}"
        );
        assert!(!sent.is_empty(), "serve observed");
        let runs = store
            .list_runs(&mycopod::store::RunFilter::default())
            .await
            .unwrap()
            .runs;
        assert_eq!(runs.len(), 2, "apply's run and serve's: {runs:?}");
        // Listed newest first: serve's run of the repository's commit found nothing to do.
        assert_eq!(
            runs[0].status,
            mycopod::model::RunStatus::NoChanges,
            "serve found nothing to do: {runs:?}"
        );
        assert_eq!(runs[1].commit_sha, "worktree");
        store.close().await;
    })
    .await;
}
