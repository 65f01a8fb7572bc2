//! The run lifecycle against the simulators and a real SQLite store: a commit's run waits for
//! approval, an approval naming another plan hash is refused, the approved run is applied only
//! when a fresh plan is the approved one, the next reconcile is a no-op, a newer commit
//! supersedes a waiting run, and invalid declarations are recorded once with their findings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use chrono::{TimeZone as _, Utc};
use mycopod::clock::Clock;
use mycopod::model::{ActionStatus, Decision, RunStatus, Trigger};
use mycopod::reconcile::apply::ApplyContext;
use mycopod::reconcile::observe::LiveWorld;
use mycopod::reconcile::run::{Outcome, RunSettings, reconcile};
use mycopod::store::StoreError;
use mycopod_adapters::modbus::Value;
use mycopod_adapters::proxmox::api::Upid;
use mycopod_adapters::proxmox::sim::SimStatus;
use support::{Rig, within};

fn settings() -> RunSettings {
    let mut s = RunSettings::new("site");
    s.retry_base = Duration::from_millis(10);
    s.retry_cap = Duration::from_millis(50);
    s
}

async fn reconcile_text(rig: &Rig, world: &LiveWorld, commit: &str, yaml: &str) -> Outcome {
    reconcile_with(rig, world, &settings(), commit, yaml, Trigger::Poll).await
}

/// One reconcile of `yaml` as `commit` with `settings`; everything declared must be observed.
async fn reconcile_with(
    rig: &Rig,
    world: &LiveWorld,
    settings: &RunSettings,
    commit: &str,
    yaml: &str,
    trigger: Trigger,
) -> Outcome {
    let loaded = mycopod_specs::load_str("site.yaml", yaml);
    let (outcome, problems) = reconcile(
        &rig.store,
        world,
        settings,
        commit,
        &loaded,
        trigger,
        None,
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    outcome
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_should_wait_for_approval_apply_exactly_what_was_approved_and_then_be_a_no_op() {
    within(async {
        let rig = Rig::start().await;
        let yaml = rig.yaml(2, 0.75);
        let world = LiveWorld::new(&rig.desired(2), &rig.env);

        // The setpoint write needs one approval by default, so the whole run waits.
        let Outcome::Waiting { run_id } = reconcile_text(&rig, &world, "c1", &yaml).await else {
            panic!("the first run must wait")
        };
        let run = rig.store.get_run(run_id).await.unwrap();
        assert_eq!(run.status, RunStatus::AwaitingApproval);
        assert_eq!(run.required_approvals, 1);
        assert!(
            rig.pve.guest(120).is_none(),
            "nothing is applied before approval"
        );

        // Polling again records no second run.
        assert_eq!(
            reconcile_text(&rig, &world, "c1", &yaml).await,
            Outcome::Waiting { run_id }
        );

        // An approval must name the plan that waits.
        let stale = rig
            .store
            .record_decision(
                run_id,
                "olivia",
                &"0".repeat(64),
                Decision::Approve,
                None,
                Utc::now(),
            )
            .await
            .unwrap_err();
        assert!(matches!(stale, StoreError::StalePlanHash { .. }), "{stale}");
        let outcome = rig
            .store
            .record_decision(
                run_id,
                "olivia",
                &run.plan_hash,
                Decision::Approve,
                Some("ok"),
                Utc::now(),
            )
            .await
            .unwrap();
        assert_eq!(outcome.status, RunStatus::Approved);

        assert_eq!(
            reconcile_text(&rig, &world, "c1", &yaml).await,
            Outcome::Applied {
                run_id,
                status: RunStatus::Succeeded
            }
        );
        assert_eq!(rig.pve.guest(120).unwrap().status, SimStatus::Running);
        let actions = rig.store.list_actions(run_id).await.unwrap();
        assert!(
            actions.iter().all(|a| a.status == ActionStatus::Succeeded),
            "{actions:#?}"
        );
        assert!(actions.iter().all(|a| a.attempts == 1));

        assert_eq!(
            reconcile_text(&rig, &world, "c1", &yaml).await,
            Outcome::InSync
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_needing_no_approval_should_apply_at_once() {
    within(async {
        let rig = Rig::start().await;
        // Make the setpoint already right, so that only automatic verbs remain.
        rig.modbus.set_value("cutoff", &Value::Float(0.75)).unwrap();
        let world = LiveWorld::new(&rig.desired(2), &rig.env);
        let outcome = reconcile_text(&rig, &world, "c1", &rig.yaml(2, 0.75)).await;
        let Outcome::Applied { run_id, status } = outcome else {
            panic!("expected an applied run, got {outcome:?}")
        };
        assert_eq!(status, RunStatus::Succeeded);
        assert_eq!(
            rig.store.get_run(run_id).await.unwrap().required_approvals,
            0
        );
        // A CPU change is an update: automatic too. On a running qemu guest PVE parks it in
        // the pending configuration, and mycopod must not plan it again (no sync loop).
        let outcome = reconcile_text(&rig, &world, "c2", &rig.yaml(4, 0.75)).await;
        assert!(
            matches!(
                outcome,
                Outcome::Applied {
                    status: RunStatus::Succeeded,
                    ..
                }
            ),
            "{outcome:?}"
        );
        let web = rig.pve.guest(120).unwrap();
        assert_eq!(web.config["cores"], "2");
        assert_eq!(web.pending.get("cores"), Some(&Some("4".to_owned())));
        assert_eq!(
            reconcile_text(&rig, &world, "c2", &rig.yaml(4, 0.75)).await,
            Outcome::InSync
        );
    })
    .await;
}

/// PVE lists a guest's status from the statistics `pvestatd` broadcasts every 10 s, so right
/// after mycopod creates and starts a guest the listing still shows it as it was at the last
/// broadcast (here: not there yet, so `unknown`). Where the listing disagrees with the
/// declared state, the guest's own status is read: the run verifies its start instead of
/// failing it, and no later reconcile, in this process or another, starts it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_start_should_verify_by_the_guests_status_while_the_listing_still_lags() {
    within(async {
        let rig = Rig::start().await;
        rig.modbus.set_value("cutoff", &Value::Float(0.75)).unwrap();
        // No broadcast after the first listing for the whole test.
        rig.pve.set_stats_every(Duration::from_secs(3600));
        let world = LiveWorld::new(&rig.desired(2), &rig.env);
        let outcome = reconcile_text(&rig, &world, "c1", &rig.yaml(2, 0.75)).await;
        let Outcome::Applied { run_id, status } = outcome else {
            panic!("expected an applied run, got {outcome:?}")
        };
        let run = rig.store.get_run(run_id).await.unwrap();
        assert_eq!(status, RunStatus::Succeeded, "{:?}", run.error);
        assert_eq!(rig.pve.guest(120).unwrap().status, SimStatus::Running);

        // The listing does lag...
        let listed = world
            .cluster("home")
            .unwrap()
            .observe_cluster()
            .await
            .unwrap();
        let web = listed.iter().find(|g| g.vmid == 120).unwrap();
        assert_eq!(web.status.as_deref(), Some("unknown"), "{listed:?}");

        // ... so web's own status is read, and another process has nothing to do either.
        let other = LiveWorld::new(&rig.desired(2), &rig.env);
        rig.pve.clear_requests();
        assert_eq!(
            reconcile_text(&rig, &other, "c1", &rig.yaml(2, 0.75)).await,
            Outcome::InSync
        );
        let status_reads: Vec<String> = rig
            .pve
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/status/current"))
            .map(|r| r.path.clone())
            .collect();
        assert_eq!(status_reads, ["/nodes/pve1/qemu/120/status/current"]);

        // Once the listing agrees with the declarations, nothing more is read.
        rig.pve.set_stats_every(Duration::ZERO);
        rig.pve.clear_requests();
        assert!(observe_running(&world, &rig).await);
        assert!(
            rig.pve
                .requests()
                .iter()
                .all(|r| !r.path.ends_with("/status/current"))
        );
        // A stop made outside mycopod is confirmed by the guest's own status, and seen.
        rig.pve.modify_guest(120, |g| g.status = SimStatus::Stopped);
        assert!(!observe_running(&world, &rig).await);
    })
    .await;
}

/// Whether `world` observes web (vmid 120) running.
async fn observe_running(world: &LiveWorld, rig: &Rig) -> bool {
    let (observed, problems) = world.observe(&rig.desired(2), Some(&rig.store)).await;
    assert!(problems.is_empty(), "{problems:?}");
    observed.clusters["home"].guests[&120].running
}

#[tokio::test(flavor = "multi_thread")]
async fn each_guest_action_should_record_the_pve_task_that_did_its_work() {
    within(async {
        let rig = Rig::start().await;
        rig.modbus.set_value("cutoff", &Value::Float(0.75)).unwrap();
        let world = LiveWorld::new(&rig.desired(2), &rig.env);
        let outcome = reconcile_text(&rig, &world, "c1", &rig.yaml(2, 0.75)).await;
        let Outcome::Applied { run_id, .. } = outcome else {
            panic!("expected an applied run, got {outcome:?}")
        };
        let actions = rig.store.list_actions(run_id).await.unwrap();
        let task_of = |key: &str| {
            let action = actions
                .iter()
                .find(|a| a.key == key)
                .unwrap_or_else(|| panic!("no action {key} in {actions:#?}"));
            let upid: Upid = action
                .external_ref
                .as_deref()
                .unwrap_or_else(|| panic!("{key} recorded no task: {action:#?}"))
                .parse()
                .unwrap();
            upid
        };
        let create = task_of("Guest/web:create");
        assert_eq!(
            (create.task_type.as_str(), create.id.as_str()),
            ("qmcreate", "120")
        );
        let start = task_of("Guest/web:start");
        assert_eq!(
            (start.task_type.as_str(), start.id.as_str()),
            ("qmstart", "120")
        );
    })
    .await;
}

/// The rig's declarations with `web` at `cores`, its `restart` policy, and (when given) a
/// handshake policy letting restarts of guests through with `approvals` approvals.
fn with_restart(rig: &Rig, cores: u32, restart: &str, approvals: Option<u32>) -> String {
    let mut yaml = rig.yaml(cores, 0.75).replace(
        "  tags: [web]\n",
        &format!("  tags: [web]\n  restart: {restart}\n"),
    );
    if let Some(n) = approvals {
        yaml.push_str(&format!(
            "---\napiVersion: mycopod/v1\nkind: HandshakePolicy\nmetadata: {{name: restarts}}\n\
             spec: {{match: {{kinds: [Guest], verbs: [restart]}}, approvals: {n}}}\n"
        ));
    }
    assert!(yaml.contains(&format!("restart: {restart}")), "{yaml}");
    yaml
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_change_should_take_effect_by_a_restart_only_as_the_policies_allow() {
    within(async {
        let rig = Rig::start().await;
        rig.modbus.set_value("cutoff", &Value::Float(0.75)).unwrap();
        let world = LiveWorld::new(&rig.desired(2), &rig.env);
        // The first commit brings a policy letting guest restarts through unapproved; a
        // policy change needs an admin's approval before it is trusted.
        let yaml = with_restart(&rig, 2, "auto", Some(0));
        let run_id = match reconcile_text(&rig, &world, "c1", &yaml).await {
            Outcome::Waiting { run_id } => run_id,
            other => panic!("a new policy waits for an admin: {other:?}"),
        };
        let run = rig.store.get_run(run_id).await.unwrap();
        rig.store
            .record_decision(
                run_id,
                "ada",
                &run.plan_hash,
                Decision::Approve,
                None,
                Utc::now(),
            )
            .await
            .unwrap();
        let outcome = reconcile_text(&rig, &world, "c1", &yaml).await;
        assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
        let running = |rig: &Rig| rig.pve.guest(120).unwrap().status == SimStatus::Running;
        assert!(running(&rig));

        // `auto` under that policy: the CPU change PVE keeps pending is written and the guest
        // restarted in the same run, and the change takes effect.
        let yaml = with_restart(&rig, 4, "auto", Some(0));
        let outcome = reconcile_text(&rig, &world, "c2", &yaml).await;
        assert!(
            matches!(
                outcome,
                Outcome::Applied {
                    status: RunStatus::Succeeded,
                    ..
                }
            ),
            "{outcome:?}"
        );
        let web = rig.pve.guest(120).unwrap();
        assert_eq!(web.config["cores"], "4", "the change took effect");
        assert!(web.pending.is_empty(), "{:?}", web.pending);
        assert!(running(&rig), "running again after the restart");
        let reboots = || {
            rig.pve
                .requests()
                .iter()
                .filter(|r| r.method == "POST" && r.path.ends_with("/status/reboot"))
                .count()
        };
        assert_eq!(reboots(), 1);
        assert_eq!(
            reconcile_text(&rig, &world, "c2", &yaml).await,
            Outcome::InSync
        );

        // `approval` waits for one even though the policy says none; nothing is restarted.
        let yaml = with_restart(&rig, 6, "approval", Some(0));
        let Outcome::Waiting { run_id } = reconcile_text(&rig, &world, "c3", &yaml).await else {
            panic!("a restart under `restart: approval` must wait")
        };
        let run = rig.store.get_run(run_id).await.unwrap();
        assert_eq!(run.required_approvals, 1);
        let actions = rig.store.list_actions(run_id).await.unwrap();
        let restart = actions
            .iter()
            .find(|a| a.key == "Guest/web:restart")
            .unwrap_or_else(|| panic!("{actions:#?}"));
        assert_eq!(restart.required_approvals, 1);
        assert_eq!(reboots(), 1, "not restarted before approval");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_commit_should_supersede_a_waiting_run() {
    within(async {
        let rig = Rig::start().await;
        let world = LiveWorld::new(&rig.desired(2), &rig.env);
        let Outcome::Waiting { run_id: first } =
            reconcile_text(&rig, &world, "c1", &rig.yaml(2, 0.75)).await
        else {
            panic!("waits")
        };
        let Outcome::Waiting { run_id: second } =
            reconcile_text(&rig, &world, "c2", &rig.yaml(2, 0.8)).await
        else {
            panic!("waits")
        };
        assert_ne!(first, second);
        let old = rig.store.get_run(first).await.unwrap();
        assert_eq!(old.status, RunStatus::Superseded);
        assert_eq!(old.superseded_by, Some(second));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approved_run_whose_world_changed_should_be_superseded_not_applied() {
    within(async {
        let rig = Rig::start().await;
        let yaml = rig.yaml(2, 0.75);
        let world = LiveWorld::new(&rig.desired(2), &rig.env);
        let Outcome::Waiting { run_id } = reconcile_text(&rig, &world, "c1", &yaml).await else {
            panic!("waits")
        };
        let hash = rig.store.get_run(run_id).await.unwrap().plan_hash;
        rig.store
            .record_decision(run_id, "olivia", &hash, Decision::Approve, None, Utc::now())
            .await
            .unwrap();
        // The device's value moves before the approved run is applied: the plan that was
        // approved ("0.5 -> 0.75") is no longer the plan.
        rig.modbus.set_value("cutoff", &Value::Float(0.6)).unwrap();
        let outcome = reconcile_text(&rig, &world, "c1", &yaml).await;
        let Outcome::Waiting { run_id: replanned } = outcome else {
            panic!("a new run must wait for approval, got {outcome:?}")
        };
        assert_ne!(replanned, run_id);
        assert_eq!(
            rig.store.get_run(run_id).await.unwrap().status,
            RunStatus::Superseded
        );
        assert!(
            rig.pve.guest(120).is_none(),
            "the superseded run applied nothing"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_declarations_should_be_recorded_once_with_their_findings_and_change_nothing() {
    within(async {
        let rig = Rig::start().await;
        let world = LiveWorld::new(&rig.desired(2), &rig.env);
        let bad = rig.yaml(2, 0.75).replace("memory: 2GiB", "memroy: 2GiB");
        let Outcome::Invalid { run_id } = reconcile_text(&rig, &world, "c9", &bad).await else {
            panic!("invalid")
        };
        let run = rig.store.get_run(run_id).await.unwrap();
        assert_eq!(run.status, RunStatus::Invalid);
        let error = run.error.unwrap();
        assert!(error.contains("site.yaml:"), "{error}");
        assert!(error.contains("memroy"), "{error}");
        let codes: Vec<&str> = run.plan["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["code"].as_str())
            .collect();
        assert!(codes.contains(&"unknown-field"), "{codes:?}");
        assert_eq!(
            reconcile_text(&rig, &world, "c9", &bad).await,
            Outcome::Invalid { run_id }
        );
        assert_eq!(rig.pve.request_count(), 0, "nothing was even observed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_interrupted_while_applying_should_converge_without_repeating_what_it_did() {
    within(async {
        let rig = Rig::start().await;
        let yaml = rig.yaml(2, 0.75);
        let d = rig.desired(2);
        let world = LiveWorld::new(&d, &rig.env);
        let Outcome::Waiting { run_id } = reconcile_text(&rig, &world, "c1", &yaml).await else {
            panic!("waits")
        };
        let hash = rig.store.get_run(run_id).await.unwrap().plan_hash;
        rig.store
            .record_decision(run_id, "olivia", &hash, Decision::Approve, None, Utc::now())
            .await
            .unwrap();

        // The controller claims the run, starts the create, and the create reaches Proxmox;
        // then the process dies before it can record the result.
        assert!(
            rig.store
                .claim_run(run_id, "controller", None, Utc::now())
                .await
                .unwrap()
        );
        let actions = rig.store.list_actions(run_id).await.unwrap();
        let create = actions
            .iter()
            .find(|a| a.key == "Guest/web:create")
            .unwrap();
        rig.store
            .transition_action(
                create.id,
                ActionStatus::Pending,
                ActionStatus::Running,
                &Default::default(),
                None,
                Utc::now(),
            )
            .await
            .unwrap();
        let (planned, observed) = rig.plan(&world, &d).await;
        let action = planned
            .plan
            .actions
            .iter()
            .find(|a| a.key == "Guest/web:create")
            .unwrap();
        world
            .apply(
                &d,
                &observed,
                action,
                ApplyContext {
                    store: Some(&rig.store),
                    commit: "c1",
                    now: Utc::now(),
                    tasks: None,
                },
            )
            .await
            .unwrap();

        // Restart: the interrupted run is closed, nothing is retried blindly.
        let closed =
            mycopod::reconcile::run::recover_interrupted(&rig.store, "site", None, Utc::now())
                .await
                .unwrap();
        assert_eq!(closed, [run_id]);
        assert_eq!(
            rig.store.get_run(run_id).await.unwrap().status,
            RunStatus::Superseded
        );
        let after = rig.store.list_actions(run_id).await.unwrap();
        let create = after.iter().find(|a| a.key == "Guest/web:create").unwrap();
        assert_eq!(create.status, ActionStatus::Failed);
        assert!(
            create
                .last_error
                .as_deref()
                .unwrap()
                .contains("interrupted")
        );
        assert!(
            after
                .iter()
                .filter(|a| a.key != "Guest/web:create")
                .all(|a| a.status == ActionStatus::Skipped),
            "{after:#?}"
        );

        // Planning again from what is observed: the guest exists, so no second create.
        let Outcome::Waiting { run_id: next } = reconcile_text(&rig, &world, "c1", &yaml).await
        else {
            panic!("the rest waits for approval")
        };
        let keys: Vec<String> = rig
            .store
            .list_actions(next)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.key)
            .collect();
        assert!(!keys.contains(&"Guest/web:create".to_owned()), "{keys:?}");
        assert!(keys.contains(&"Guest/web:start".to_owned()), "{keys:?}");
        let hash = rig.store.get_run(next).await.unwrap().plan_hash;
        rig.store
            .record_decision(next, "olivia", &hash, Decision::Approve, None, Utc::now())
            .await
            .unwrap();
        assert_eq!(
            reconcile_text(&rig, &world, "c1", &yaml).await,
            Outcome::Applied {
                run_id: next,
                status: RunStatus::Succeeded
            }
        );
        let creates = rig
            .pve
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/nodes/pve1/qemu")
            .count();
        assert_eq!(creates, 1, "the guest was created exactly once");
        assert_eq!(
            reconcile_text(&rig, &world, "c1", &yaml).await,
            Outcome::InSync
        );
    })
    .await;
}

/// Containers `vmids`, created and started without approval.
fn containers(pve: &str, vmids: &[u32]) -> String {
    let mut yaml = format!(
        "apiVersion: mycopod/v1\nkind: ProxmoxCluster\nmetadata: {{name: home}}\nspec:\n  \
         endpoint: {pve}\n  auth: {{tokenId: \"mycopod@pve!gitops\", secretEnv: PVE_TOKEN}}\n  \
         defaultNode: pve1\n"
    );
    for vmid in vmids {
        yaml.push_str(&format!(
            "---\napiVersion: mycopod/v1\nkind: Guest\nmetadata: {{name: ct{vmid}}}\nspec:\n  \
             cluster: home\n  type: lxc\n  vmid: {vmid}\n  state: running\n  \
             ostemplate: local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\n  \
             memory: 256MiB\n  rootfs: {{storage: local-lvm, size: 2G}}\n"
        ));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread")]
async fn actions_of_one_phase_should_run_side_by_side_up_to_the_bound() {
    within(async {
        for (bound, expect_parallel) in [(1usize, false), (4, true)] {
            let rig = Rig::start().await;
            rig.pve.set_task_duration(Duration::from_millis(200));
            rig.pve.set_latency(Duration::from_millis(30));
            let vmids = [401, 402, 403, 404, 405, 406];
            let yaml = containers(&rig.pve.base_url(), &vmids);
            let desired = support::desired(&yaml);
            let world = LiveWorld::new(&desired, &rig.env);
            let mut s = settings();
            s.concurrency = bound;
            let loaded = mycopod_specs::load_str("site.yaml", &yaml);
            let (outcome, _) = reconcile(
                &rig.store,
                &world,
                &s,
                "c1",
                &loaded,
                Trigger::Poll,
                None,
                Utc::now(),
            )
            .await
            .unwrap();
            let Outcome::Applied { status, .. } = outcome else {
                panic!("creates and starts apply without approval: {outcome:?}")
            };
            assert_eq!(status, RunStatus::Succeeded);
            for vmid in vmids {
                let guest = rig.pve.guest(vmid).expect("created");
                assert_eq!(guest.status, SimStatus::Running, "started after its create");
            }
            // How many requests were in flight while each create was answered.
            let peak = rig
                .pve
                .requests()
                .iter()
                .filter(|r| r.method == "POST" && r.path.ends_with("/lxc"))
                .map(|r| r.in_flight)
                .max()
                .unwrap_or(0);
            if expect_parallel {
                assert!(peak > 1, "bound {bound}: creates overlapped (peak {peak})");
            } else {
                assert_eq!(peak, 1, "bound 1 runs one action at a time");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_more_actions_should_be_running_than_the_client_lets_requests_be_in_flight() {
    within(async {
        let rig = Rig::start().await;
        rig.pve.set_task_duration(Duration::from_millis(200));
        rig.pve.set_latency(Duration::from_millis(30));
        let vmids = [411, 412, 413, 414, 415, 416, 417, 418];
        let yaml = containers(&rig.pve.base_url(), &vmids);
        let desired = support::desired(&yaml);
        let world = LiveWorld::new(&desired, &rig.env);
        let client_bound = world.max_in_flight().unwrap();
        let mut s = settings();
        s.concurrency = client_bound + 3;
        // Follow the actions' transitions as the API's event stream sees them.
        let mut events = rig.store.events().subscribe();
        let watcher = tokio::spawn(async move {
            let (mut running, mut peak) = (std::collections::BTreeSet::new(), 0usize);
            while let Ok(event) = events.recv().await {
                match event {
                    mycopod::events::Event::Action {
                        action_id, status, ..
                    } => {
                        if status == "running" {
                            running.insert(action_id);
                        } else {
                            running.remove(&action_id);
                        }
                        peak = peak.max(running.len());
                    }
                    mycopod::events::Event::Run { status, .. } if status == "succeeded" => break,
                    _ => {}
                }
            }
            peak
        });
        let loaded = mycopod_specs::load_str("site.yaml", &yaml);
        let (outcome, _) = reconcile(
            &rig.store,
            &world,
            &s,
            "c1",
            &loaded,
            Trigger::Poll,
            None,
            Utc::now(),
        )
        .await
        .unwrap();
        assert!(
            matches!(
                outcome,
                Outcome::Applied {
                    status: RunStatus::Succeeded,
                    ..
                }
            ),
            "{outcome:?}"
        );
        let peak = watcher.await.unwrap();
        assert!(peak > 1, "actions still run side by side (peak {peak})");
        assert!(
            peak <= client_bound,
            "{peak} actions running at once, the client sends {client_bound} requests at a time"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn applying_should_stamp_and_check_windows_with_its_own_clock_not_the_reconcile_start() {
    within(async {
        let rig = Rig::start().await;
        // Everything waits for one approval and applies only from 10:00 to 10:30 UTC.
        let yaml = format!(
            "{}---\napiVersion: mycopod/v1\nkind: HandshakePolicy\nmetadata: {{name: window}}\n\
             spec:\n  match: {{}}\n  approvals: 1\n  windows:\n    \
             - {{start: \"10:00\", end: \"10:30\", timezone: UTC}}\n",
            rig.yaml(2, 0.75)
        );
        let world = LiveWorld::new(&rig.desired(2), &rig.env);
        let in_window = Utc.with_ymd_and_hms(2026, 12, 7, 10, 10, 0).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 12, 7, 10, 45, 0).unwrap();
        let reconcile_at = |settings: RunSettings| {
            let loaded = mycopod_specs::load_str("site.yaml", &yaml);
            let rig = &rig;
            let world = &world;
            async move {
                reconcile(
                    &rig.store,
                    world,
                    &settings,
                    "c1",
                    &loaded,
                    Trigger::Poll,
                    None,
                    in_window,
                )
                .await
                .unwrap()
                .0
            }
        };
        let Outcome::Waiting { run_id } = reconcile_at(settings()).await else {
            panic!("the run must wait for its approval")
        };
        let run = rig.store.get_run(run_id).await.unwrap();
        rig.store
            .record_decision(
                run_id,
                "olivia",
                &run.plan_hash,
                Decision::Approve,
                None,
                in_window,
            )
            .await
            .unwrap();

        // The reconcile starts inside the window, but by the time applying begins (its clock)
        // the window has closed: nothing is applied, and each skip is stamped with that time.
        let mut late = settings();
        late.clock = Clock::manual(after);
        let outcome = reconcile_at(late).await;
        assert!(
            matches!(outcome, Outcome::Applied { run_id: id, .. } if id == run_id),
            "{outcome:?}"
        );
        assert!(
            rig.pve.guest(120).is_none(),
            "nothing applied after the window closed"
        );
        let actions = rig.store.list_actions(run_id).await.unwrap();
        assert!(!actions.is_empty());
        for action in &actions {
            assert_eq!(action.status, ActionStatus::Skipped, "{action:?}");
            assert_eq!(
                action.updated_at, after,
                "stamped by the apply clock: {action:?}"
            );
            assert!(
                action
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("time window closed")),
                "{action:?}"
            );
        }
    })
    .await;
}

/// Records a run `observing` as the loop does when it accepts a trigger for `commit`.
async fn accept(rig: &Rig, commit: &str) -> i64 {
    rig.store
        .insert_run(
            &mycopod::store::NewRun::observing("site", commit, Trigger::Webhook, None),
            "controller",
            Utc::now(),
        )
        .await
        .unwrap()
}

async fn reconcile_accepted(
    rig: &Rig,
    world: &LiveWorld,
    commit: &str,
    yaml: &str,
    accepted: i64,
) -> Outcome {
    let mut settings = settings();
    settings.accepted = Some(accepted);
    reconcile_with(rig, world, &settings, commit, yaml, Trigger::Webhook).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_accepted_observing_should_become_the_plan_or_end_saying_why_not() {
    within(async {
        let rig = Rig::start().await;
        let yaml = rig.yaml(2, 0.75);
        let world = LiveWorld::new(&rig.desired(2), &rig.env);

        // Planned: the accepted run itself holds the plan and waits; no second run.
        let first = accept(&rig, "c1").await;
        assert_eq!(
            reconcile_accepted(&rig, &world, "c1", &yaml, first).await,
            Outcome::Waiting { run_id: first }
        );
        let run = rig.store.get_run(first).await.unwrap();
        assert_eq!(run.status, RunStatus::AwaitingApproval);
        assert_eq!(run.trigger, Trigger::Webhook);
        assert_eq!(run.plan_hash.len(), 64, "{run:?}");
        assert!(!rig.store.list_actions(first).await.unwrap().is_empty());
        let listed = rig.store.list_runs(&Default::default()).await.unwrap();
        assert_eq!(listed.runs.len(), 1, "{listed:?}");

        // The same plan again (another push of the commit): the waiting run holds it.
        let again = accept(&rig, "c1").await;
        assert_eq!(
            reconcile_accepted(&rig, &world, "c1", &yaml, again).await,
            Outcome::Waiting { run_id: first }
        );
        let run = rig.store.get_run(again).await.unwrap();
        assert_eq!(run.status, RunStatus::Superseded);
        assert!(
            run.error
                .as_deref()
                .unwrap()
                .contains(&format!("run {first}")),
            "{run:?}"
        );

        // Approved and applied; then a commit that changes nothing ends `no_changes`.
        let hash = rig.store.get_run(first).await.unwrap().plan_hash;
        rig.store
            .record_decision(first, "olivia", &hash, Decision::Approve, None, Utc::now())
            .await
            .unwrap();
        assert_eq!(
            reconcile_text(&rig, &world, "c1", &yaml).await,
            Outcome::Applied {
                run_id: first,
                status: RunStatus::Succeeded
            }
        );
        let quiet = accept(&rig, "c2").await;
        assert_eq!(
            reconcile_accepted(&rig, &world, "c2", &yaml, quiet).await,
            Outcome::InSync
        );
        let run = rig.store.get_run(quiet).await.unwrap();
        assert_eq!(run.status, RunStatus::NoChanges);
        assert!(run.finished_at.is_some());

        // Invalid declarations: the accepted run records the findings.
        let bad = accept(&rig, "c3").await;
        let outcome = reconcile_accepted(
            &rig,
            &world,
            "c3",
            "apiVersion: mycopod/v1\nkind: Nope\n",
            bad,
        )
        .await;
        assert_eq!(outcome, Outcome::Invalid { run_id: bad });
        assert_eq!(
            rig.store.get_run(bad).await.unwrap().status,
            RunStatus::Invalid
        );

        // A run left observing by a crash is failed on restart, not left to look busy.
        let orphan = accept(&rig, "c4").await;
        let closed =
            mycopod::reconcile::run::recover_interrupted(&rig.store, "site", None, Utc::now())
                .await
                .unwrap();
        assert_eq!(closed, [orphan]);
        let run = rig.store.get_run(orphan).await.unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert!(
            run.error.as_deref().unwrap().contains("observing"),
            "{run:?}"
        );
    })
    .await;
}
