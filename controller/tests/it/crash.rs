//! Crash safety of `mycopod serve`: the process is killed with SIGKILL while it applies a run,
//! started again, and must converge with no guest created twice in the simulator's request log
//! and every action of the interrupted run accounted for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use crate::support;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mycopod::model::{ActionStatus, RunStatus};
use mycopod::store::{RunFilter, Store};
use mycopod_adapters::proxmox::sim::{SimConfig, SimHandle, SimStatus};

const GUESTS: [(u32, &str); 3] = [(301, "alpha"), (302, "beta"), (303, "gamma")];

fn declarations(pve: &str) -> String {
    let mut yaml = format!(
        "apiVersion: mycopod/v1\nkind: ProxmoxCluster\nmetadata: {{name: home}}\nspec:\n  \
         endpoint: {pve}\n  auth: {{tokenId: \"mycopod@pve!gitops\", secretEnv: PVE_TOKEN}}\n  \
         defaultNode: pve1\n"
    );
    for (vmid, name) in GUESTS {
        yaml.push_str(&format!(
            "---\napiVersion: mycopod/v1\nkind: Guest\nmetadata: {{name: {name}}}\nspec:\n  \
             cluster: home\n  type: lxc\n  vmid: {vmid}\n  state: running\n  \
             ostemplate: local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\n  cores: 1\n  \
             memory: 256MiB\n  rootfs: {{storage: local-lvm, size: 2G}}\n"
        ));
    }
    yaml
}

fn serve(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mycopod"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("PVE_TOKEN", "tok-secret")
        .env("MYCOPOD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Waits up to 90 s, checking every 50 ms.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn create_requests(pve: &SimHandle, vmid: u32) -> usize {
    pve.requests()
        .iter()
        .filter(|r| {
            r.method == "POST"
                && r.path.ends_with("/lxc")
                && r.form("vmid").as_deref() == Some(&vmid.to_string())
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_serve_killed_while_applying_should_converge_without_creating_anything_twice() {
    tokio::time::timeout(Duration::from_secs(240), async {
        // Slow tasks, so the kill lands while a create is in flight.
        let pve = SimHandle::start(SimConfig {
            task_duration: Duration::from_millis(1500),
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config =
            support::serve_setup(dir.path(), &declarations(&pve.base_url()), &pve.base_url());
        let db = dir.path().join("m.db");

        let mut first = serve(&config);
        wait_until("the first create request", || async {
            GUESTS
                .iter()
                .any(|(vmid, _)| create_requests(&pve, *vmid) > 0)
        })
        .await;
        // The run is recorded before anything is applied, so the database exists by now.
        let store = Store::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        // Kill it once a running action has recorded its PVE task (which still runs).
        wait_until("a running action to record its task", || async {
            let runs = store.list_runs(&RunFilter::default()).await.unwrap().runs;
            let mut recorded = false;
            for run in runs {
                recorded |= store.list_actions(run.id).await.unwrap().iter().any(|a| {
                    a.status == ActionStatus::Running
                        && a.external_ref
                            .as_deref()
                            .is_some_and(|r| r.starts_with("UPID:"))
                });
            }
            recorded
        })
        .await;
        first.kill().unwrap(); // SIGKILL
        first.wait().unwrap();
        assert!(
            GUESTS.iter().all(|(vmid, _)| pve
                .guest(*vmid)
                .is_none_or(|g| g.status != SimStatus::Running)),
            "killed before the run got to starting the guests"
        );

        let interrupted = store.list_runs(&RunFilter::default()).await.unwrap().runs;
        assert_eq!(interrupted.len(), 1);
        assert_eq!(
            interrupted[0].status,
            RunStatus::Applying,
            "killed mid-apply"
        );
        let interrupted_id = interrupted[0].id;

        let mut second = serve(&config);
        wait_until("every guest created and running", || async {
            GUESTS.iter().all(|(vmid, _)| {
                pve.guest(*vmid)
                    .is_some_and(|g| g.status == SimStatus::Running)
            })
        })
        .await;
        wait_until("the controller to record the outcome", || async {
            let runs = store.list_runs(&RunFilter::default()).await.unwrap().runs;
            runs.iter().any(|r| r.status == RunStatus::Succeeded)
        })
        .await;
        second.kill().unwrap();
        second.wait().unwrap();

        // No guest was created twice.
        for (vmid, name) in GUESTS {
            assert_eq!(
                create_requests(&pve, vmid),
                1,
                "{name} ({vmid}) created once"
            );
        }
        // The interrupted run is closed and none of its actions is lost or left running.
        let run = store.get_run(interrupted_id).await.unwrap();
        assert_eq!(run.status, RunStatus::Superseded, "{:?}", run.error);
        let actions = store.list_actions(interrupted_id).await.unwrap();
        assert_eq!(
            actions.len(),
            GUESTS.len() * 2,
            "create and start per guest"
        );
        for action in &actions {
            assert!(
                matches!(
                    action.status,
                    ActionStatus::Succeeded | ActionStatus::Failed | ActionStatus::Skipped
                ),
                "{} ended {:?}",
                action.key,
                action.status
            );
            if action.status != ActionStatus::Succeeded {
                assert!(action.last_error.is_some(), "{} says why", action.key);
            }
        }
        assert!(
            actions.iter().any(|a| a.status == ActionStatus::Failed
                && a.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("interrupted"))),
            "the action in flight is recorded as interrupted: {actions:#?}"
        );
        // ... and names the PVE task it had started, so an operator can look it up.
        assert!(
            actions.iter().any(|a| a.status == ActionStatus::Failed
                && a.external_ref
                    .as_deref()
                    .is_some_and(|task| a.last_error.as_deref().is_some_and(|e| e.contains(task)))),
            "the interrupted action names its task: {actions:#?}"
        );
        store.close().await;
    })
    .await
    .expect("the crash test finishes in time");
}
