//! The reconcile loop's step function against real parts: a Git repository made in a temp
//! folder, the Proxmox and Modbus simulators, and SQLite (PostgreSQL for the leadership test).
//! Each test drives `Driver::step` directly, the way the loop does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::store_support;
use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use mycopod::control::{Control, SyncState};
use mycopod::model::{Decision, RunStatus, Trigger};
use mycopod::reconcile::driver::{Driver, LoopSettings, Reason};
use mycopod::reconcile::queue::Requeue;
use mycopod::reconcile::run::RunSettings;
use mycopod::store::{RunFilter, Store};
use mycopod_adapters::git::GitAuth;
use mycopod_adapters::modbus::Value;
use support::{Rig, git, within};

struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "--quiet", "--initial-branch=main"]);
        Repo { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("")
    }

    /// Writes `site.yaml` and commits it; returns the commit id.
    fn commit(&self, yaml: &str, message: &str) -> String {
        std::fs::write(self.dir.path().join("site.yaml"), yaml).unwrap();
        git(self.dir.path(), &["add", "--all"]);
        git(self.dir.path(), &["commit", "--quiet", "-m", message]);
        git(self.dir.path(), &["rev-parse", "HEAD"])
            .trim()
            .to_owned()
    }
}

fn settings(rig: &Rig, repo: &str, cache: &Path) -> LoopSettings {
    LoopSettings {
        run: {
            let mut run = RunSettings::new(LoopSettings::scope_of(repo, "main"));
            run.retry_base = Duration::from_millis(10);
            run.retry_cap = Duration::from_millis(50);
            run
        },
        repo: repo.to_owned(),
        git_ref: "main".to_owned(),
        path: String::new(),
        limits: mycopod_specs::Limits::default(),
        cache_dir: cache.to_owned(),
        git_auth: GitAuth::None,
        poll_interval: Duration::from_secs(60),
        drift_interval: Duration::from_secs(600),
        full_read_interval: Duration::from_secs(600),
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(100),
        lease_ttl: Duration::from_secs(15),
        secrets: rig.env.clone(),
        github: None,
        llm: None,
        device_clients: None,
    }
}

struct Loop {
    driver: Driver,
    control: Control,
    _triggers: tokio::sync::mpsc::UnboundedReceiver<mycopod::control::TriggerRequest>,
    _cache: tempfile::TempDir,
}

async fn new_loop(
    rig: &Rig,
    store: &Store,
    repo: &Repo,
    tweak: impl FnOnce(&mut LoopSettings),
) -> Loop {
    let cache = tempfile::tempdir().unwrap();
    let mut s = settings(rig, &repo.path().display().to_string(), cache.path());
    tweak(&mut s);
    let (control, triggers) = Control::new(store.events().clone(), Utc::now());
    let mut driver = Driver::new(store.clone(), control.clone(), s);
    assert!(driver.ensure_leadership().await, "a lone driver leads");
    Loop {
        driver,
        control,
        _triggers: triggers,
        _cache: cache,
    }
}

async fn runs(store: &Store) -> Vec<mycopod::store::RunSummary> {
    let mut runs = store
        .list_runs(&RunFilter {
            limit: 100,
            ..RunFilter::default()
        })
        .await
        .unwrap()
        .runs;
    runs.reverse();
    runs
}

async fn approve(store: &Store, run_id: i64) {
    let run = store.get_run(run_id).await.unwrap();
    store
        .record_decision(
            run_id,
            "ops",
            &run.plan_hash,
            Decision::Approve,
            None,
            Utc::now(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_loop_should_wait_for_approval_apply_verify_and_then_stay_quiet() {
    within(async {
        let rig = Rig::start().await;
        let repo = Repo::new();
        let commit = repo.commit(&rig.yaml(2, 0.75), "first");
        let mut lp = new_loop(&rig, &rig.store, &repo, |_| {}).await;

        assert_eq!(
            lp.driver.step(&[Reason::Poll], None).await,
            Requeue::AwaitChange
        );
        let status = lp.control.status();
        assert_eq!(status.commit.as_deref(), Some(commit.as_str()));
        assert!(status.leader);
        let all = runs(&rig.store).await;
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].status, RunStatus::AwaitingApproval);
        assert_eq!(all[0].commit_sha, commit);
        let web = status
            .resources
            .iter()
            .find(|r| r.kind == "Guest" && r.name == "web")
            .unwrap();
        assert_eq!(web.sync, SyncState::OutOfSync);
        assert!(
            rig.pve.guest(120).is_none(),
            "nothing applied before approval"
        );
        assert!(lp.control.current().is_some(), "the snapshot is published");

        approve(&rig.store, all[0].id).await;
        lp.driver.step(&[Reason::Approved], None).await;
        let run = rig.store.get_run(all[0].id).await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
        let web = rig.pve.guest(120).expect("web exists");
        assert_eq!(web.config.get("cores").map(String::as_str), Some("2"));
        assert_eq!(
            web.status,
            mycopod_adapters::proxmox::sim::SimStatus::Running
        );
        assert_eq!(rig.modbus.value("cutoff").unwrap(), Value::Float(0.75));
        let status = lp.control.status();
        assert!(
            status.resources.iter().all(|r| r.sync == SyncState::InSync),
            "{:#?}",
            status.resources
        );

        // An unchanged commit: a poll does not even plan; a manual reconcile plans nothing.
        let before = rig.pve.request_count();
        lp.driver.step(&[Reason::Poll], None).await;
        assert_eq!(
            rig.pve.request_count(),
            before,
            "a poll of an unchanged commit observes nothing"
        );
        lp.driver.step(&[Reason::Manual], Some("ops")).await;
        let all = runs(&rig.store).await;
        assert_eq!(all.len(), 2, "the manual trigger is recorded: {all:?}");
        assert_eq!(all[1].status, RunStatus::NoChanges, "{all:?}");
        assert_eq!(all[1].trigger, Trigger::Manual);
        assert_eq!(all[1].requested_by.as_deref(), Some("ops"));
        assert!(
            rig.store.list_actions(all[1].id).await.unwrap().is_empty(),
            "a no-op reconcile plans nothing"
        );
        assert_eq!(lp.control.status().last_outcome.as_deref(), Some("in sync"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_commit_should_supersede_the_waiting_run() {
    within(async {
        let rig = Rig::start().await;
        let repo = Repo::new();
        repo.commit(&rig.yaml(2, 0.75), "first");
        let mut lp = new_loop(&rig, &rig.store, &repo, |_| {}).await;
        lp.driver.step(&[Reason::Poll], None).await;
        let second = repo.commit(&rig.yaml(2, 1.25), "second");
        lp.driver.step(&[Reason::Poll], None).await;
        let all = runs(&rig.store).await;
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].status, RunStatus::Superseded);
        assert_eq!(all[1].status, RunStatus::AwaitingApproval);
        assert_eq!(all[1].commit_sha, second);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_fetch_should_keep_the_last_good_commit_and_show_the_error() {
    within(async {
        let rig = Rig::start().await;
        let repo = Repo::new();
        let commit = repo.commit(&rig.yaml(2, 0.75), "first");
        let mut lp = new_loop(&rig, &rig.store, &repo, |_| {}).await;
        lp.driver.step(&[Reason::Poll], None).await;
        assert!(lp.control.status().last_fetch_error.is_none());

        // The remote disappears.
        let moved = repo.dir.path().with_extension("moved");
        std::fs::rename(repo.dir.path(), &moved).unwrap();
        let requeue = lp.driver.step(&[Reason::Manual], None).await;
        std::fs::rename(&moved, repo.dir.path()).unwrap();
        assert_eq!(
            requeue,
            Requeue::AwaitChange,
            "the last good commit still reconciles"
        );
        let status = lp.control.status();
        assert_eq!(status.commit.as_deref(), Some(commit.as_str()));
        let error = status.last_fetch_error.expect("the fetch error shows");
        assert!(error.contains("fetch"), "{error}");

        lp.driver.step(&[Reason::Poll], None).await;
        assert!(
            lp.control.status().last_fetch_error.is_none(),
            "a good fetch clears it"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_fetch_that_fails_should_back_off() {
    within(async {
        let rig = Rig::start().await;
        let cache = tempfile::tempdir().unwrap();
        let missing = cache.path().join("no-such-repo").display().to_string();
        let (control, _rx) = Control::new(rig.store.events().clone(), Utc::now());
        let mut driver = Driver::new(
            rig.store.clone(),
            control.clone(),
            settings(&rig, &missing, &cache.path().join("cache")),
        );
        assert!(driver.ensure_leadership().await);
        let first = driver.step(&[Reason::Poll], None).await;
        let second = driver.step(&[Reason::Retry], None).await;
        let (Requeue::After(a), Requeue::After(b)) = (first, second) else {
            panic!("a failed first fetch must back off: {first:?} {second:?}");
        };
        assert!(b > a, "the backoff grows: {a:?} then {b:?}");
        assert!(control.status().last_reconcile_failed);
        assert!(runs(&rig.store).await.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_commit_should_record_an_invalid_run_and_change_nothing() {
    within(async {
        let rig = Rig::start().await;
        let repo = Repo::new();
        let broken = rig.yaml(2, 0.75).replace("memory: 2GiB", "memory: lots");
        let commit = repo.commit(&broken, "broken");
        let mut lp = new_loop(&rig, &rig.store, &repo, |_| {}).await;
        lp.driver.step(&[Reason::Poll], None).await;
        let all = runs(&rig.store).await;
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].status, RunStatus::Invalid);
        assert_eq!(all[0].commit_sha, commit);
        let run = rig.store.get_run(all[0].id).await.unwrap();
        let diagnostics = run.plan["diagnostics"].as_array().unwrap();
        assert!(
            diagnostics
                .iter()
                .any(|d| d["path"].as_str() == Some("spec.memory")),
            "{diagnostics:?}"
        );
        assert!(
            rig.pve.requests().iter().all(|r| !r.is_write()),
            "an invalid commit sends no write"
        );
        assert!(
            lp.control.current().is_none(),
            "no desired state was published"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_should_wait_for_approval_without_self_heal_and_apply_with_it() {
    within(async {
        for self_heal in [false, true] {
            let rig = Rig::start().await;
            let repo = Repo::new();
            repo.commit(&rig.yaml(2, 0.75), "first");
            let mut lp = new_loop(&rig, &rig.store, &repo, |s| s.run.self_heal = self_heal).await;
            lp.driver.step(&[Reason::Poll], None).await;
            approve(&rig.store, runs(&rig.store).await[0].id).await;
            lp.driver.step(&[Reason::Approved], None).await;
            assert_eq!(runs(&rig.store).await[0].status, RunStatus::Succeeded);

            // Someone changes the VM by hand.
            assert!(rig.pve.modify_guest(120, |g| {
                g.config.insert("cores".into(), "8".into());
            }));
            lp.driver.step(&[Reason::Drift], None).await;
            let all = runs(&rig.store).await;
            assert_eq!(all.len(), 2, "self_heal={self_heal}");
            assert_eq!(all[1].trigger, Trigger::Drift);
            // What the VM will run with: a running VM takes `cores` as a pending change.
            let guest = rig.pve.guest(120).unwrap();
            let cores = match guest.pending.get("cores") {
                Some(pending) => pending.clone(),
                None => guest.config.get("cores").cloned(),
            };
            if self_heal {
                assert_eq!(all[1].status, RunStatus::Succeeded);
                assert_eq!(cores.as_deref(), Some("2"), "healed");
            } else {
                assert_eq!(all[1].status, RunStatus::AwaitingApproval);
                assert_eq!(cores.as_deref(), Some("8"), "left alone until approved");
                let web = lp
                    .control
                    .status()
                    .resources
                    .into_iter()
                    .find(|r| r.name == "web")
                    .unwrap();
                assert_eq!(web.sync, SyncState::OutOfSync);
                assert!(
                    web.details.iter().any(|d| d.starts_with("cores: 8 -> 2")),
                    "{:?}",
                    web.details
                );
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_one_driver_should_lead_on_sqlite_until_the_leader_lets_go() {
    within(async {
        let rig = Rig::start().await;
        let repo = Repo::new();
        repo.commit(&rig.yaml(2, 0.75), "first");
        let mut first = new_loop(&rig, &rig.store, &repo, |_| {}).await;
        let cache = tempfile::tempdir().unwrap();
        let (control, _rx) = Control::new(rig.store.events().clone(), Utc::now());
        let mut second = Driver::new(
            rig.store.clone(),
            control.clone(),
            settings(&rig, &repo.path().display().to_string(), cache.path()),
        );
        assert!(!second.ensure_leadership().await, "the lease is held");
        assert!(!control.status().leader);
        first.driver.release_leadership().await;
        assert!(second.ensure_leadership().await, "taken over once released");
        assert!(control.status().leader);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_driver_whose_lease_was_taken_should_stop_leading_and_forget_its_desired_state() {
    within(async {
        let rig = Rig::start().await;
        let repo = Repo::new();
        repo.commit(&rig.yaml(2, 0.75), "first");
        let short = Duration::from_millis(300);
        let mut first = new_loop(&rig, &rig.store, &repo, |s| s.lease_ttl = short).await;
        first.driver.step(&[Reason::Poll], None).await;
        assert!(
            first.control.desired().borrow().is_some(),
            "the leader loaded the commit"
        );

        // The first stops renewing (a stall, a partition); the lease runs out and another
        // replica takes it.
        tokio::time::sleep(short * 2).await;
        let cache = tempfile::tempdir().unwrap();
        let mut s = settings(&rig, &repo.path().display().to_string(), cache.path());
        s.lease_ttl = short;
        let (control, _rx) = Control::new(rig.store.events().clone(), Utc::now());
        let mut second = Driver::new(rig.store.clone(), control.clone(), s);
        assert!(
            second.ensure_leadership().await,
            "the expired lease is taken"
        );

        assert!(
            !first.driver.ensure_leadership().await,
            "the first has lost it"
        );
        assert!(!first.control.status().leader);
        assert!(
            first.control.desired().borrow().is_none(),
            "a replica that lost the leadership holds no desired state (so it polls nothing)"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_whose_lease_was_taken_mid_apply_should_write_and_apply_nothing_more() {
    within(async {
        let rig = Rig::start().await;
        let repo = Repo::new();
        repo.commit(&rig.yaml(2, 0.75), "first");
        let ttl = Duration::from_millis(300);
        let mut first = new_loop(&rig, &rig.store, &repo, |s| s.lease_ttl = ttl).await;
        first.driver.step(&[Reason::Poll], None).await;
        let run_id = runs(&rig.store).await[0].id;
        approve(&rig.store, run_id).await;

        // Creating a guest takes a while, long past the lease's time to live.
        rig.pve.set_task_duration(Duration::from_secs(3));
        let applying = tokio::spawn(async move {
            first.driver.step(&[Reason::Approved], None).await;
            first
        });
        let running = loop {
            let actions = rig.store.list_actions(run_id).await.unwrap();
            // The database-held configuration is applied first and may be caught running
            // for a moment; wait for the slow guest create.
            if let Some(a) = actions.iter().find(|a| {
                a.status == mycopod::model::ActionStatus::Running && a.key.starts_with("Guest/")
            }) {
                break a.key.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(running.starts_with("Guest/"), "{running}");

        // While it applies, the leader renews its lease: no one else can take it.
        tokio::time::sleep(ttl * 2).await;
        let scope = LoopSettings::scope_of(&repo.path().display().to_string(), "main");
        let lease = format!("reconcile:{scope}");
        let (holder, _) = rig.store.lease_holder(&lease).await.unwrap().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let mut s = settings(&rig, &repo.path().display().to_string(), cache.path());
        s.lease_ttl = ttl;
        let (control, _rx) = Control::new(rig.store.events().clone(), Utc::now());
        let mut second = Driver::new(rig.store.clone(), control.clone(), s);
        assert!(
            !second.ensure_leadership().await,
            "the lease is renewed while the run applies"
        );

        // The lease is taken from it (as after a stall or a partition): the second replica
        // leads and closes the run as interrupted.
        assert!(rig.store.release_lease(&lease, &holder).await.unwrap());
        assert!(second.ensure_leadership().await, "the second takes over");
        let closed = rig.store.get_run(run_id).await.unwrap();
        assert_eq!(closed.status, RunStatus::Superseded, "{:?}", closed.error);
        let after_takeover = rig.store.list_actions(run_id).await.unwrap();
        let writes = |pve: &mycopod_adapters::proxmox::sim::SimHandle| {
            pve.requests().iter().filter(|r| r.is_write()).count()
        };
        let writes_at_takeover = writes(&rig.pve);

        // The first replica finishes its step long after its task would have completed.
        let mut first = applying.await.unwrap();
        assert!(second.ensure_leadership().await, "the second keeps leading");
        assert!(
            !first.driver.ensure_leadership().await,
            "the first does not"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let actions = rig.store.list_actions(run_id).await.unwrap();
        assert_eq!(
            actions, after_takeover,
            "the replica that lost the lease recorded no further action transition"
        );
        assert_eq!(
            rig.store.get_run(run_id).await.unwrap().status,
            RunStatus::Superseded
        );
        assert_eq!(
            writes(&rig.pve),
            writes_at_takeover,
            "nothing more was sent to Proxmox"
        );
        assert_eq!(
            rig.modbus.value("cutoff").unwrap(),
            Value::Float(0.5),
            "the setpoint of a later phase was never written"
        );
        let status = first.control.status();
        let last = status.last_outcome.unwrap_or_default();
        assert!(status.last_reconcile_failed);
        assert!(last.contains("lost the leadership"), "{last}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs MYCOPOD_TEST_DATABASE_URL"]
async fn only_the_advisory_lock_holder_should_lead_on_postgres_and_a_survivor_takes_over() {
    within(store_support::with_postgres(|store, url| async move {
        let rig = Rig::start().await;
        let repo = Repo::new();
        repo.commit(&rig.yaml(2, 0.75), "first");
        let mut first = new_loop(&rig, &store, &repo, |_| {}).await;

        let other = Store::connect(&url).await.unwrap();
        let cache = tempfile::tempdir().unwrap();
        let (control, _rx) = Control::new(other.events().clone(), Utc::now());
        let mut second = Driver::new(
            other.clone(),
            control,
            settings(&rig, &repo.path().display().to_string(), cache.path()),
        );
        assert!(
            !second.ensure_leadership().await,
            "the lock is held by the first"
        );
        assert!(first.driver.ensure_leadership().await, "the first keeps it");

        // The first replica dies: its session (and so the lock) goes away.
        drop(first);
        let mut took_over = false;
        for _ in 0..50 {
            if second.ensure_leadership().await {
                took_over = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(took_over, "the survivor takes over within seconds");
        second.step(&[Reason::Poll], None).await;
        assert_eq!(runs(&other).await.len(), 1, "and reconciles");
        second.release_leadership().await;
        other.close().await;
    }))
    .await;
}

const DECLARATION: &str = "---
apiVersion: mycopod/v1
kind: Declaration
metadata: {name: slow-flow}
spec:
  text: alert ops when fm-1 flows below 1 for ten minutes
  kinds: [AlertRule]
";

const SLOW_FLOW_JSON: &str = r#"{"apiVersion": "mycopod/v1", "kind": "AlertRule", "metadata": {"name": "slow-flow"},
  "spec": {"device": "fm-1", "register": "flow_rate", "condition": {"below": 1.0}, "for": "10m", "notify": ["ops"]}}"#;

fn llm(sim: &mycopod_adapters::llm::sim::LlmSim) -> mycopod_adapters::llm::LlmClient {
    let mut settings = mycopod_adapters::llm::LlmSettings::new(sim.base_url(), "test-model");
    settings.timeout = Duration::from_secs(5);
    settings.backoff = Duration::from_millis(10);
    mycopod_adapters::llm::LlmClient::new(settings).unwrap()
}

/// Converges the rig's declarations, then commits `extra` on top; returns the loop.
async fn converged_then(
    rig: &Rig,
    repo: &Repo,
    llm: Option<mycopod_adapters::llm::LlmClient>,
    extra: &str,
) -> Loop {
    repo.commit(&rig.yaml(2, 0.75), "first");
    let mut lp = new_loop(rig, &rig.store, repo, |s| s.llm = llm).await;
    lp.driver.step(&[Reason::Poll], None).await;
    approve(&rig.store, runs(&rig.store).await[0].id).await;
    lp.driver.step(&[Reason::Approved], None).await;
    assert_eq!(runs(&rig.store).await[0].status, RunStatus::Succeeded);
    repo.commit(&format!("{}{extra}", rig.yaml(2, 0.75)), "a declaration");
    lp
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declaration_should_be_translated_once_and_its_resources_need_approval() {
    use mycopod_adapters::llm::sim::{LlmSim, Reply};
    within(async {
        let rig = Rig::start().await;
        let repo = Repo::new();
        let sim = LlmSim::start(vec![Reply::content(SLOW_FLOW_JSON)])
            .await
            .unwrap();
        let mut lp = converged_then(&rig, &repo, Some(llm(&sim)), DECLARATION).await;

        lp.driver.step(&[Reason::Poll], None).await;
        assert_eq!(sim.requests().len(), 1, "translated once");
        let all = runs(&rig.store).await;
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[1].status,
            RunStatus::AwaitingApproval,
            "an upsert applies by itself, but not one generated from a declaration"
        );
        let actions = rig.store.list_actions(all[1].id).await.unwrap();
        let keys: Vec<&str> = actions.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["AlertRule/slow-flow:upsert"]);
        let declaration = lp
            .control
            .status()
            .resources
            .into_iter()
            .find(|r| r.kind == "Declaration")
            .unwrap();
        assert_eq!(declaration.sync, SyncState::InSync);
        assert!(
            declaration.details[0].contains("translated by test-model"),
            "{:?}",
            declaration.details
        );

        // The same commit plans the same way again, from the cache: no second question.
        lp.driver.step(&[Reason::Manual], None).await;
        assert_eq!(sim.requests().len(), 1, "the cache answered");
        let all = runs(&rig.store).await;
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(
            all[1].status,
            RunStatus::AwaitingApproval,
            "the same plan still waits"
        );
        assert_eq!(all[2].status, RunStatus::Superseded, "{all:?}");
        assert!(
            all[2]
                .error
                .as_deref()
                .unwrap_or_default()
                .contains(&format!("run {}", all[1].id)),
            "the trigger's run names the run that holds its plan: {all:?}"
        );
        let declaration = lp
            .control
            .status()
            .resources
            .into_iter()
            .find(|r| r.kind == "Declaration")
            .unwrap();
        assert!(
            declaration.details[0].contains("(cached)"),
            "{:?}",
            declaration.details
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_model_a_declaration_should_show_as_not_translated_and_fail_nothing() {
    within(async {
        let rig = Rig::start().await;
        let repo = Repo::new();
        let mut lp = converged_then(&rig, &repo, None, DECLARATION).await;
        lp.driver.step(&[Reason::Poll], None).await;
        let all = runs(&rig.store).await;
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(
            all[1].status,
            RunStatus::NoChanges,
            "nothing to do, nothing failed"
        );
        let status = lp.control.status();
        assert!(!status.last_reconcile_failed);
        assert_eq!(status.last_outcome.as_deref(), Some("in sync"));
        let declaration = status
            .resources
            .into_iter()
            .find(|r| r.kind == "Declaration")
            .unwrap();
        assert_eq!(declaration.sync, SyncState::NotTranslated);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_answering_garbage_should_fail_only_its_declaration() {
    use mycopod_adapters::llm::sim::{LlmSim, Reply};
    within(async {
        let rig = Rig::start().await;
        let repo = Repo::new();
        let sim = LlmSim::start(vec![
            Reply::content("no idea, sorry"),
            Reply::content("still no"),
        ])
        .await
        .unwrap();
        let mut lp = converged_then(&rig, &repo, Some(llm(&sim)), DECLARATION).await;
        lp.driver.step(&[Reason::Poll], None).await;
        assert_eq!(sim.requests().len(), 2, "one answer and one correction");
        let all = runs(&rig.store).await;
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(
            all[1].status,
            RunStatus::NoChanges,
            "nothing generated, nothing planned"
        );
        let status = lp.control.status();
        assert!(
            !status.last_reconcile_failed,
            "the rest of the commit reconciled"
        );
        let declaration = status
            .resources
            .into_iter()
            .find(|r| r.kind == "Declaration")
            .unwrap();
        assert_eq!(declaration.sync, SyncState::Failed);
        assert!(
            declaration.details[0].starts_with("not translated:"),
            "{:?}",
            declaration.details
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_that_cannot_be_observed_should_fail_the_status_not_look_in_sync() {
    use mycopod_adapters::proxmox::sim::Fault;
    within(async {
        let rig = Rig::start().await;
        // Only automatic verbs: the first reconcile converges on its own.
        rig.modbus.set_value("cutoff", &Value::Float(0.75)).unwrap();
        let repo = Repo::new();
        repo.commit(&rig.yaml(2, 0.75), "first");
        let mut lp = new_loop(&rig, &rig.store, &repo, |_| {}).await;
        lp.driver.step(&[Reason::Poll], None).await;
        let first = lp.control.status().last_outcome.unwrap_or_default();
        assert!(first.contains("succeeded"), "{first}");
        let converged = runs(&rig.store).await.len();

        // The token is refused from now on (twice: this reconcile and the next poll).
        rig.pve.inject_fault(Fault::new(
            "/cluster/resources",
            2,
            401,
            "authentication failure",
        ));
        lp.driver.step(&[Reason::Manual], Some("ops")).await;
        let status = lp.control.status();
        let outcome = status.last_outcome.clone().unwrap_or_default();
        assert!(
            outcome.starts_with("observation failed") && outcome.contains("ProxmoxCluster/home"),
            "{outcome}"
        );
        assert_eq!(status.unobserved.len(), 1, "{:?}", status.unobserved);
        assert_eq!(status.unobserved[0].resource, "ProxmoxCluster/home");
        assert!(
            status.unobserved[0].reason.contains("401"),
            "{:?}",
            status.unobserved[0]
        );
        let web = status
            .resources
            .iter()
            .find(|r| r.kind == "Guest" && r.name == "web")
            .unwrap();
        assert_eq!(web.sync, SyncState::Unknown, "{web:?}");
        let all = runs(&rig.store).await;
        assert_eq!(all.len(), converged + 1, "{all:?}");
        let failed = &all[converged];
        assert_eq!(failed.status, RunStatus::Failed, "{failed:?}");
        let why = failed.error.as_deref().unwrap_or_default();
        assert!(
            why.starts_with("observation failed") && why.contains("ProxmoxCluster/home"),
            "the trigger's run says what could not be seen: {why}"
        );
        assert!(
            rig.store.list_actions(failed.id).await.unwrap().is_empty(),
            "nothing is planned for what could not be seen"
        );

        // What could not be seen is not settled: the next plain poll observes again.
        let before = rig.pve.request_count();
        lp.driver.step(&[Reason::Poll], None).await;
        assert!(rig.pve.request_count() > before, "the poll observed again");
        assert!(!lp.control.status().unobserved.is_empty());

        // Once the cluster answers, the status is true again.
        lp.driver.step(&[Reason::Poll], None).await;
        let status = lp.control.status();
        assert_eq!(status.last_outcome.as_deref(), Some("in sync"));
        assert!(status.unobserved.is_empty(), "{:?}", status.unobserved);
    })
    .await;
}

/// A pushed commit with a file past the limits: the file is listed with a `limit-exceeded`
/// error naming it and is never read; the files keep their path order.
#[tokio::test]
async fn a_commit_with_a_file_past_the_limits_should_list_it_unread() {
    within(async {
        let work = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        git(work.path(), &["init", "--quiet", "--initial-branch=main"]);
        let doc = "apiVersion: mycopod/v1\nkind: Declaration\nmetadata: {name: a}\nspec: {text: hi, kinds: [Guest]}\n";
        std::fs::write(work.path().join("a.yaml"), doc).unwrap();
        std::fs::write(work.path().join("b-big.yaml"), "# x\n".repeat(1_000)).unwrap();
        std::fs::write(work.path().join("c.yaml"), doc.replace("name: a", "name: c")).unwrap();
        git(work.path(), &["add", "-A"]);
        git(work.path(), &["commit", "--quiet", "-m", "big"]);
        let source =
            mycopod_adapters::git::GitSource::new(work.path().to_string_lossy(), cache.path());
        let commit = source.fetch("main").await.unwrap();
        let limits = mycopod_specs::Limits {
            file_bytes: 1_000,
            ..mycopod_specs::Limits::default()
        };
        let loaded = mycopod::reconcile::driver::read_commit(&source, &commit, "", limits)
            .await
            .unwrap();
        let files: Vec<(&str, usize)> = loaded
            .files
            .iter()
            .map(|f| (&*f.name, f.text.len()))
            .collect();
        assert_eq!(
            files,
            [("a.yaml", doc.len()), ("b-big.yaml", 0), ("c.yaml", doc.len())]
        );
        let found: Vec<(&str, mycopod_specs::Code)> = loaded
            .diagnostics
            .iter()
            .map(|d| (d.file.as_str(), d.code))
            .collect();
        assert_eq!(found, [("b-big.yaml", mycopod_specs::Code::LimitExceeded)]);
        assert_eq!(loaded.documents.len(), 2);
    })
    .await;
}
