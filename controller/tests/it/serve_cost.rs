//! What one committed change costs `mycopod serve` against the Proxmox simulator: one
//! observation to plan and one to verify what was applied, and never another pass caused by
//! the loop's own writes (the `approved` event of a run it records as approved itself); and
//! the run of a change recorded the moment it is accepted, before the cluster answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mycopod::model::{RunStatus, Trigger};
use mycopod::store::{RunFilter, RunSummary, Store};
use mycopod_adapters::proxmox::sim::SimHandle;
use support::{git, within};

const GUESTS: std::ops::Range<u32> = 500..520;

fn declarations(pve: &str, cores_of_first: u32) -> String {
    let mut yaml = format!(
        "apiVersion: mycopod/v1\nkind: ProxmoxCluster\nmetadata: {{name: home}}\nspec:\n  \
         endpoint: {pve}\n  auth: {{tokenId: \"mycopod@pve!gitops\", secretEnv: PVE_TOKEN}}\n  \
         defaultNode: pve1\n"
    );
    for vmid in GUESTS {
        let cores = if vmid == GUESTS.start {
            cores_of_first
        } else {
            1
        };
        yaml.push_str(&format!(
            "---\napiVersion: mycopod/v1\nkind: Guest\nmetadata: {{name: ct{vmid}}}\nspec:\n  \
             cluster: home\n  type: lxc\n  vmid: {vmid}\n  state: stopped\n  \
             ostemplate: local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\n  \
             cores: {cores}\n  memory: 256MiB\n  rootfs: {{storage: local-lvm, size: 2G}}\n"
        ));
    }
    yaml
}

fn serve(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mycopod"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env("PVE_TOKEN", "tok-secret")
        .env("MYCOPOD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

async fn succeeded_runs(store: &Store) -> usize {
    store
        .list_runs(&RunFilter::default())
        .await
        .unwrap()
        .runs
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .count()
}

async fn wait_for_succeeded(store: &Store, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while succeeded_runs(store).await < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {n} succeeded run(s)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `serve` on the declarations (the guests of `GUESTS`, one core each) in `dir`, waits
/// until its first run has converged, and lets the loop settle (it reads the approved event
/// of the run it applied). Returns the server and a store on its database.
async fn converged_serve(pve: &SimHandle, dir: &std::path::Path) -> (Child, Store) {
    let config = support::serve_setup(dir, &declarations(&pve.base_url(), 1), &pve.base_url());
    let server = serve(&config);
    // The database exists once serve has started.
    let db = dir.join("m.db");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !db.exists() {
        assert!(tokio::time::Instant::now() < deadline, "serve started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = Store::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    wait_for_succeeded(&store, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    (server, store)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_committed_change_should_cost_one_observation_to_plan_and_one_to_verify() {
    within(async {
        let pve = SimHandle::start(Default::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (mut server, store) = converged_serve(&pve, dir.path()).await;
        pve.clear_requests();

        let repo = dir.path().join("repo");
        std::fs::write(repo.join("site.yaml"), declarations(&pve.base_url(), 2)).unwrap();
        git(
            &repo,
            &["commit", "--quiet", "--all", "-m", "more cores for ct500"],
        );
        wait_for_succeeded(&store, 2).await;
        // More than a poll interval: time for any further pass the change would cause.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server.kill().unwrap();
        server.wait().unwrap();

        let sent: Vec<String> = pve
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        let listings = sent
            .iter()
            .filter(|r| *r == "GET /cluster/resources")
            .count();
        assert_eq!(listings, 2, "plan and verify, nothing more: {sent:#?}");
        let full_reads: Vec<&String> = sent
            .iter()
            .filter(|r| r.starts_with("GET") && (r.ends_with("/config") || r.ends_with("/pending")))
            .collect();
        let changed = format!("GET /nodes/pve1/lxc/{}/pending", GUESTS.start);
        assert!(
            !full_reads.is_empty() && full_reads.iter().all(|r| **r == changed),
            "only the changed guest is read in full, by its /pending: {full_reads:?}"
        );
        store.close().await;
    })
    .await;
}

/// The runs of `commit`, once there is at least one in a state `done` accepts.
async fn runs_of_commit(
    store: &Store,
    commit: &str,
    done: impl Fn(&RunSummary) -> bool,
) -> Vec<RunSummary> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let runs: Vec<RunSummary> = store
            .list_runs(&RunFilter::default())
            .await
            .unwrap()
            .runs
            .into_iter()
            .filter(|r| r.commit_sha == commit)
            .collect();
        if runs.iter().any(&done) {
            return runs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for a run of {commit}: {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_committed_change_should_be_recorded_observing_before_the_cluster_answers() {
    within(async {
        let pve = SimHandle::start(Default::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (mut server, store) = converged_serve(&pve, dir.path()).await;

        // The cluster stops answering; a change is committed.
        pve.hold_requests();
        pve.clear_requests();
        let repo = dir.path().join("repo");
        std::fs::write(repo.join("site.yaml"), declarations(&pve.base_url(), 2)).unwrap();
        git(&repo, &["commit", "--quiet", "--all", "-m", "more cores"]);
        let head = git(&repo, &["rev-parse", "HEAD"]).trim().to_owned();

        // Its run is listed while nothing has been answered: observing, with its trigger.
        let runs = runs_of_commit(&store, &head, |_| true).await;
        assert_eq!(runs.len(), 1, "{runs:?}");
        let accepted = &runs[0];
        assert_eq!(accepted.status, RunStatus::Observing, "{accepted:?}");
        assert_eq!(accepted.trigger, Trigger::Poll);
        assert!(pve.requests().is_empty(), "{:?}", pve.requests());

        // Once the cluster answers, that same run is planned and applied; no second run.
        pve.release_requests();
        let runs = runs_of_commit(&store, &head, |r| r.status == RunStatus::Succeeded).await;
        assert_eq!(runs.len(), 1, "{runs:?}");
        let run = store.get_run(accepted.id).await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.plan_hash.len(), 64);
        assert!(run.created_at <= run.started_at.unwrap(), "{run:?}");

        // A commit that changes nothing declared is recorded too, and ends with no changes.
        std::fs::write(repo.join("NOTES.md"), "nothing declared changes here\n").unwrap();
        git(&repo, &["add", "--all"]);
        git(&repo, &["commit", "--quiet", "-m", "notes"]);
        let quiet = git(&repo, &["rev-parse", "HEAD"]).trim().to_owned();
        let runs = runs_of_commit(&store, &quiet, |r| r.status.is_terminal()).await;
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0].status, RunStatus::NoChanges, "{runs:?}");

        server.kill().unwrap();
        server.wait().unwrap();
        store.close().await;
    })
    .await;
}
