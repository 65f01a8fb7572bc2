//! One reconcile of one scope: validate the commit, observe, plan, record a run when there is
//! something to do, and apply a run once it is approved — only if planning again gives the
//! very plan that was approved.
//!
//! Runs move only through the store's conditional transitions, so two replicas or two clicks
//! can never both apply one run. What is applied is exactly what was approved: an approved run
//! whose plan hash no longer matches a fresh plan is superseded, never applied.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mycopod_specs::{DesiredState, Loaded};
use serde_json::json;

use super::apply::{ApplyContext, ApplyError};
use super::decide::{Gate, KnownRun, Next, decide, gate, new_run_requirement};
use super::observe::{LiveWorld, ObserveProblem};
use crate::clock::Clock;
use crate::model::{ActionStatus, RunStatus, Trigger};
use crate::plan::{Action, Observed, Options, Planned, plan};
use crate::policy::{
    NamedPolicy, Requirement, expires_at, requirements_for_plan, stored_policies,
    stored_requirement,
};
use crate::store::{ActionUpdate, Fence, NewAction, NewRun, RunSummary, Store, StoreError};
use mycopod_adapters::backoff::Backoff;
use mycopod_specs::kinds::HandshakePolicySpec;

/// The name runs and audit entries give the controller itself.
pub const CONTROLLER: &str = "controller";

/// Settings of the run lifecycle.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// What one reconcile covers (a repository and ref); newer runs supersede waiting ones.
    pub scope: String,
    /// Planner options (pruning).
    pub options: Options,
    /// Attempts per action for transient errors, the first included.
    pub attempts: u32,
    /// First retry delay; doubles up to `retry_cap`.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_cap: Duration,
    /// How many actions of one phase run at once, at most; never more than a cluster's
    /// client lets requests be in flight (`ClientConfig::max_in_flight`).
    pub concurrency: usize,
    /// Whether a drift run (the world moved away from an unchanged commit) may apply without
    /// approval where the policies allow it. Off: every drift run waits for one approval.
    pub self_heal: bool,
    /// Whether this reconcile is for a commit already reconciled, so that any change it finds
    /// is drift (the loop sets it; a `Trigger::Drift` reconcile is drift too).
    pub drift: bool,
    /// The commits this reconcile covers (since the last converged commit), with their
    /// authors and committers; recorded with the run, and no author may approve it where
    /// the policies forbid self-approval. The loop sets it per reconcile.
    pub commits: Vec<mycopod_adapters::git::CommitInfo>,
    /// Who pushed, from a signed GitHub webhook; treated like an author.
    pub pusher: Option<String>,
    /// The leadership this reconcile applies under (the loop sets it while it leads). With it,
    /// the lease is renewed while actions run and every run and action transition is fenced:
    /// once another replica holds the lease, nothing more is written or applied.
    pub fencing: Option<Fencing>,
    /// The clock applying reads: every action transition is stamped with it and a policy's
    /// window is checked against it before each phase. The decision to apply uses the
    /// reconcile's `now`; applying takes time, so what follows reads this clock. Runs are
    /// recorded and claimed at this clock's time too, never at the reconcile's start.
    pub clock: Clock,
    /// The run recorded `observing` when the loop accepted this reconcile's trigger: this
    /// reconcile plans it, or ends it (nothing to change, observation failed, or the same
    /// plan is already held by another run) instead of recording a new one.
    pub accepted: Option<i64>,
    /// An observation of this commit's declared world already made by the caller
    /// (`mycopod apply` observes to show the plan first): planned from instead of observing
    /// again, so one apply costs one observation and the verification. It must cover
    /// everything declared (nothing unobserved).
    pub observed: Option<Arc<Observed>>,
}

/// A leader's fence and how long its lease lasts when renewed.
#[derive(Debug, Clone)]
pub struct Fencing {
    /// What transitions are written under.
    pub fence: Fence,
    /// The lease's time to live; it is renewed every third of it.
    pub ttl: Duration,
}

impl RunSettings {
    /// Defaults for `scope`: no pruning, 4 attempts from 1 s up to 30 s.
    pub fn new(scope: impl Into<String>) -> RunSettings {
        RunSettings {
            scope: scope.into(),
            options: Options::default(),
            attempts: 4,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(30),
            concurrency: 4,
            self_heal: false,
            drift: false,
            commits: Vec::new(),
            pusher: None,
            fencing: None,
            clock: Clock::system(),
            accepted: None,
            observed: None,
        }
    }
}

/// What one reconcile did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The world matches the commit: no run recorded.
    InSync,
    /// Nothing to do was found, but something declared could not be observed (the report's
    /// `problems` say what and why): never reported as in sync.
    ObservationFailed,
    /// The commit's declarations do not validate: recorded (or already recorded) as invalid.
    Invalid {
        /// The invalid run.
        run_id: i64,
    },
    /// A run waits for approval (new, or the same plan already waiting).
    Waiting {
        /// The waiting run.
        run_id: i64,
    },
    /// An approved run waits for its policies' time window to open; nothing is applied
    /// outside it.
    WaitingForWindow {
        /// The approved run.
        run_id: i64,
        /// When the windows open next (within a week), if they do.
        opens_at: Option<DateTime<Utc>>,
    },
    /// A run was applied and ended in `status`.
    Applied {
        /// The run.
        run_id: i64,
        /// `succeeded`, `failed` or `partially_failed`.
        status: RunStatus,
    },
}

/// Why a reconcile could not finish; the loop retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The database failed.
    #[error("reconcile {scope}: {source}")]
    Store {
        /// The reconcile scope (`REPOSITORY@BRANCH`).
        scope: String,
        /// The store's error.
        source: StoreError,
    },
}

/// Everything one reconcile found out, for the controller status.
#[derive(Debug)]
pub struct Reconciled {
    /// What it did.
    pub outcome: Outcome,
    /// What it could not observe.
    pub problems: Vec<ObserveProblem>,
    /// The checked desired state (absent when the commit did not validate).
    pub desired: Option<DesiredState>,
    /// The last plan made: after applying, the plan of a fresh observation (empty when
    /// everything took effect).
    pub planned: Option<Planned>,
    /// Actions that failed or did not verify: action key -> why.
    pub failed: BTreeMap<String, String>,
}

/// Reconciles `loaded` (the declarations of `commit`) once.
#[allow(clippy::too_many_arguments)]
pub async fn reconcile(
    store: &Store,
    world: &LiveWorld,
    settings: &RunSettings,
    commit: &str,
    loaded: &Loaded,
    trigger: Trigger,
    requested_by: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(Outcome, Vec<ObserveProblem>), ReconcileError> {
    let report = reconcile_report(
        store,
        world,
        settings,
        commit,
        loaded,
        trigger,
        requested_by,
        now,
    )
    .await?;
    Ok((report.outcome, report.problems))
}

/// [`reconcile`], returning everything it found out.
#[tracing::instrument(skip_all, fields(scope = %settings.scope, commit = %commit, trigger = %trigger))]
#[allow(clippy::too_many_arguments)]
pub async fn reconcile_report(
    store: &Store,
    world: &LiveWorld,
    settings: &RunSettings,
    commit: &str,
    loaded: &Loaded,
    trigger: Trigger,
    requested_by: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Reconciled, ReconcileError> {
    let scope = settings.scope.as_str();
    let db = |source| ReconcileError::Store {
        scope: scope.to_owned(),
        source,
    };
    store.expire_runs(CONTROLLER, now).await.map_err(db)?;

    // A commit may name only the secrets the server lists, toward their destinations: a
    // refused reference makes the run invalid before anything is observed or sent.
    let checked = mycopod_specs::check(loaded).and_then(|c| {
        let refused = world.secrets().check(&c.desired);
        if refused.is_empty() {
            Ok(c)
        } else {
            Err(refused)
        }
    });
    let desired = match checked {
        Ok(checked) => checked.desired,
        Err(findings) => {
            let run_id = record_invalid(
                store,
                settings,
                commit,
                trigger,
                requested_by,
                &findings,
                now,
            )
            .await
            .map_err(db)?;
            return Ok(Reconciled {
                outcome: Outcome::Invalid { run_id },
                problems: Vec::new(),
                desired: None,
                planned: None,
                failed: BTreeMap::new(),
            });
        }
    };

    let fresh;
    let (observed, problems): (&Observed, Vec<ObserveProblem>) = match &settings.observed {
        Some(seen) => (seen, Vec::new()),
        None => {
            fresh = world.observe(&desired, Some(store)).await;
            (&fresh.0, fresh.1)
        }
    };
    let planned = plan(commit, &desired, observed, settings.options);
    let hash = planned.plan.hash();

    // What to do is decided without I/O (`decide.rs`); here it is carried out.
    let approved = runs_of(store, scope, RunStatus::Approved)
        .await
        .map_err(db)?;
    let waiting = runs_of(store, scope, RunStatus::AwaitingApproval)
        .await
        .map_err(db)?;
    let decision = decide(
        commit,
        hash.as_str(),
        planned.plan.is_empty(),
        &known(&approved),
        &known(&waiting),
    );
    let superseded = [
        (
            &decision.supersede_approved,
            RunStatus::Approved,
            "the world or the declarations changed after approval; planned again",
        ),
        (
            &decision.supersede_waiting,
            RunStatus::AwaitingApproval,
            "nothing left to do",
        ),
    ];
    for (ids, from, why) in superseded {
        for &id in ids {
            store
                .transition_run(id, from, RunStatus::Superseded, CONTROLLER, Some(why), now)
                .await
                .map_err(db)?;
        }
    }
    match decision.next {
        Next::InSync => {
            // An empty plan over what could not be seen is not convergence.
            let outcome = if problems.is_empty() {
                settle(store, settings, RunStatus::NoChanges, None)
                    .await
                    .map_err(db)?;
                Outcome::InSync
            } else {
                let why = format!("observation failed: {}", describe_problems(&problems));
                settle(store, settings, RunStatus::Failed, Some(&why))
                    .await
                    .map_err(db)?;
                Outcome::ObservationFailed
            };
            return Ok(waited(outcome, problems, desired, planned));
        }
        Next::StillWaiting { run_id } => {
            let why = format!("the same plan already waits for approval in run {run_id}");
            settle(store, settings, RunStatus::Superseded, Some(&why))
                .await
                .map_err(db)?;
            return Ok(waited(
                Outcome::Waiting { run_id },
                problems,
                desired,
                planned,
            ));
        }
        Next::ApplyApproved { run_id } => {
            let why = format!("the same plan was approved in run {run_id}, which applies it");
            settle(store, settings, RunStatus::Superseded, Some(&why))
                .await
                .map_err(db)?;
            // Windows are checked when the run is applied, not only when it was approved.
            let needs = run_requirement_of(store, run_id).await.map_err(db)?;
            if let Gate::Window(opens_at) = gate(&needs, true, now) {
                return Ok(waited(
                    Outcome::WaitingForWindow { run_id, opens_at },
                    problems,
                    desired,
                    planned,
                ));
            }
            let applied = apply_run(
                store, world, settings, run_id, &needs, &desired, observed, &planned,
            )
            .await
            .map_err(db)?;
            return Ok(Reconciled {
                outcome: Outcome::Applied {
                    run_id,
                    status: applied.status,
                },
                problems,
                desired: Some(desired),
                planned: Some(applied.verified),
                failed: applied.failed,
            });
        }
        Next::RecordNew => {}
    }

    let trusted = trusted_policies(store, scope, observed).await.map_err(db)?;
    let trusted_refs: Option<Vec<NamedPolicy<'_>>> = trusted.as_ref().map(|list| {
        list.iter()
            .map(|(name, spec)| NamedPolicy { name, spec })
            .collect()
    });
    let requirements = requirements_for_plan(&desired, trusted_refs.as_deref(), &planned.plan);
    let is_drift = trigger == Trigger::Drift || settings.drift;
    let run_needs = new_run_requirement(&requirements, is_drift, settings.self_heal);
    let status = if run_needs.approvals == 0 {
        RunStatus::Approved
    } else {
        RunStatus::AwaitingApproval
    };
    let new = NewRun {
        scope: scope.to_owned(),
        commit_sha: commit.to_owned(),
        trigger,
        requested_by: requested_by.map(str::to_owned),
        status,
        plan: run_document(&planned, &run_needs, settings),
        plan_hash: hash.as_str().to_owned(),
        required_approvals: i64::from(run_needs.approvals),
        error: None,
        expires_at: expires_at(&run_needs, now),
        actions: planned
            .plan
            .actions
            .iter()
            .zip(&requirements)
            .map(|(a, r)| NewAction {
                key: a.key.clone(),
                kind: a.resource.kind.as_str().to_owned(),
                resource: a.resource.name.clone(),
                verb: a.verb.as_str().to_owned(),
                diff: serde_json::to_value(&a.changes).unwrap_or_else(|_| json!([])),
                required_approvals: i64::from(r.approvals),
                status: ActionStatus::Pending,
            })
            .collect(),
    };
    let run_id = record_run(store, settings, &new).await.map_err(db)?;
    store
        .supersede_waiting_runs(scope, run_id, CONTROLLER, now)
        .await
        .map_err(db)?;
    match gate(&run_needs, false, now) {
        Gate::Approvals => Ok(waited(
            Outcome::Waiting { run_id },
            problems,
            desired,
            planned,
        )),
        Gate::Window(opens_at) => Ok(waited(
            Outcome::WaitingForWindow { run_id, opens_at },
            problems,
            desired,
            planned,
        )),
        Gate::Open => {
            let applied = apply_run(
                store, world, settings, run_id, &run_needs, &desired, observed, &planned,
            )
            .await
            .map_err(db)?;
            Ok(Reconciled {
                outcome: Outcome::Applied {
                    run_id,
                    status: applied.status,
                },
                problems,
                desired: Some(desired),
                planned: Some(applied.verified),
                failed: applied.failed,
            })
        }
    }
}

/// The runs as [`decide`] sees them.
fn known(runs: &[RunSummary]) -> Vec<KnownRun<'_>> {
    runs.iter()
        .map(|r| KnownRun {
            id: r.id,
            plan_hash: &r.plan_hash,
            commit: &r.commit_sha,
        })
        .collect()
}

/// The report of a reconcile that applied nothing.
fn waited(
    outcome: Outcome,
    problems: Vec<ObserveProblem>,
    desired: DesiredState,
    planned: Planned,
) -> Reconciled {
    Reconciled {
        outcome,
        problems,
        desired: Some(desired),
        planned: Some(planned),
        failed: BTreeMap::new(),
    }
}

/// What applying a run did.
struct AppliedRun {
    status: RunStatus,
    /// The plan of the observation made after applying.
    verified: Planned,
    /// Action key -> why it failed or did not verify.
    failed: BTreeMap<String, String>,
}

/// The plan as stored with a run: the plan itself (whose canonical JSON the hash covers) plus
/// what it leaves out, and the run's approval requirement (who may approve, whether the
/// requester may approve their own run), which the API checks each decision against.
fn run_document(
    planned: &Planned,
    requirement: &Requirement,
    settings: &RunSettings,
) -> serde_json::Value {
    json!({
        "plan": planned.plan,
        "notes": planned.notes,
        "issues": planned.issues,
        "requirement": requirement,
        "commits": settings.commits,
        "pusher": settings.pusher,
    })
}

/// The policies that govern a new plan of `scope`: those held in the database (the last
/// applied commit's), or `None` before anything of the scope was ever applied.
pub async fn trusted_policies(
    store: &Store,
    scope: &str,
    observed: &crate::plan::Observed,
) -> Result<Option<Vec<(String, HandshakePolicySpec)>>, StoreError> {
    let (policies, unreadable) = stored_policies(observed);
    for problem in &unreadable {
        tracing::error!("stored policy does not parse, left out: {problem}");
    }
    if policies.is_empty() && unreadable.is_empty() && !store.has_applied_run(scope).await? {
        return Ok(None);
    }
    Ok(Some(policies))
}

/// The requirement stored with run `id`; a run without one (recorded by an older version)
/// is held to one approval and no window, never to nothing.
async fn run_requirement_of(store: &Store, id: i64) -> Result<Requirement, StoreError> {
    let run = store.get_run(id).await?;
    Ok(
        stored_requirement(&run.plan).unwrap_or_else(|| Requirement {
            approvals: 1,
            ..Requirement::automatic()
        }),
    )
}

async fn runs_of(
    store: &Store,
    scope: &str,
    status: RunStatus,
) -> Result<Vec<RunSummary>, StoreError> {
    Ok(store
        .runs_in_status(status)
        .await?
        .into_iter()
        .filter(|r| r.scope == scope)
        .collect())
}

async fn record_invalid(
    store: &Store,
    settings: &RunSettings,
    commit: &str,
    trigger: Trigger,
    requested_by: Option<&str>,
    findings: &[mycopod_specs::Diagnostic],
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let scope = settings.scope.as_str();
    let document = json!({ "diagnostics": findings });
    let hash = super::apply::spec_hash(&document);
    let existing = runs_of(store, scope, RunStatus::Invalid).await?;
    if let Some(run) = existing
        .iter()
        .find(|r| r.commit_sha == commit && r.plan_hash == hash)
    {
        let why = format!("the same findings are recorded in run {}", run.id);
        settle(store, settings, RunStatus::Superseded, Some(&why)).await?;
        return Ok(run.id);
    }
    let errors = findings
        .iter()
        .filter(|d| d.severity == mycopod_specs::Severity::Error)
        .count();
    let first = findings
        .iter()
        .find(|d| d.severity == mycopod_specs::Severity::Error)
        .map(|d| format!("{}:{}:{}: {}", d.file, d.line, d.column, d.message))
        .unwrap_or_default();
    let run_id = record_run(
        store,
        settings,
        &NewRun {
            scope: scope.to_owned(),
            commit_sha: commit.to_owned(),
            trigger,
            requested_by: requested_by.map(str::to_owned),
            status: RunStatus::Invalid,
            plan: document,
            plan_hash: hash,
            required_approvals: 0,
            error: Some(format!(
                "{errors} error(s) in the declarations; first: {first}"
            )),
            expires_at: None,
            actions: Vec::new(),
        },
    )
    .await?;
    // A newer commit, even an invalid one, makes the waiting plans of older commits stale.
    store
        .supersede_waiting_runs(scope, run_id, CONTROLLER, now)
        .await?;
    Ok(run_id)
}

/// Records `new`: plans the run accepted as `observing` when there is one (and it still
/// observes), records a new run otherwise. Returns the run's id.
async fn record_run(
    store: &Store,
    settings: &RunSettings,
    new: &NewRun,
) -> Result<i64, StoreError> {
    let now = settings.clock.now();
    if let Some(id) = settings.accepted
        && store
            .complete_observed_run(id, new, CONTROLLER, now)
            .await?
    {
        return Ok(id);
    }
    store.insert_run(new, CONTROLLER, now).await
}

/// Ends the run accepted as `observing`, if there is one, in `to` (a terminal state) with
/// `why` as its error or note.
async fn settle(
    store: &Store,
    settings: &RunSettings,
    to: RunStatus,
    why: Option<&str>,
) -> Result<(), StoreError> {
    if let Some(id) = settings.accepted {
        store
            .transition_run(
                id,
                RunStatus::Observing,
                to,
                CONTROLLER,
                why,
                settings.clock.now(),
            )
            .await?;
    }
    Ok(())
}

/// What could not be observed, as one line: `Guest/web: unauthorized; Guest/db: ...`.
pub fn describe_problems(problems: &[ObserveProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.resource, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Claims an approved run and applies its actions in order. Transient errors are retried with
/// backoff; a failed action fails the actions that depend on it (they are skipped); a conflict
/// (the world changed since the plan) stops the run. Returns the terminal status.
#[allow(clippy::too_many_arguments)]
async fn apply_run(
    store: &Store,
    world: &LiveWorld,
    settings: &RunSettings,
    run_id: i64,
    requirement: &Requirement,
    desired: &DesiredState,
    observed: &crate::plan::Observed,
    planned: &Planned,
) -> Result<AppliedRun, StoreError> {
    let fence = settings.fencing.as_ref().map(|f| &f.fence);
    if !store
        .claim_run(run_id, CONTROLLER, fence, settings.clock.now())
        .await?
    {
        // Another replica (or a concurrent reconcile) won the claim.
        return Ok(AppliedRun {
            status: RunStatus::Applying,
            verified: planned.clone(),
            failed: BTreeMap::new(),
        });
    }
    let work = apply_claimed(
        store,
        world,
        settings,
        run_id,
        requirement,
        desired,
        observed,
        planned,
    );
    match &settings.fencing {
        // The lease is kept for the whole apply; if it is lost, applying stops at once (what
        // was running is left `running` for the next leader to close as interrupted).
        Some(fencing) => tokio::select! {
            applied = work => applied,
            lost = keep_lease(store, fencing) => Err(lost),
        },
        None => work.await,
    }
}

/// Renews the lease of `fencing` every third of its time to live; returns when the lease is
/// no longer this replica's. A database error is retried at the next renewal (the fenced
/// transitions refuse to write meanwhile if the lease runs out).
async fn keep_lease(store: &Store, fencing: &Fencing) -> StoreError {
    let every = (fencing.ttl / 3).max(Duration::from_millis(50));
    let ttl = chrono::Duration::from_std(fencing.ttl).unwrap_or(chrono::Duration::seconds(15));
    loop {
        tokio::time::sleep(every).await;
        let now = Utc::now();
        match store.renew_fence(&fencing.fence, now + ttl, now).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(lease = %fencing.fence.name, epoch = fencing.fence.epoch,
                    "lost the leadership while applying; stopping");
                return StoreError::Fenced {
                    lease: fencing.fence.name.clone(),
                    epoch: fencing.fence.epoch,
                };
            }
            Err(e) => tracing::warn!(error = %e, "renew the lease while applying"),
        }
    }
}

/// Applies the actions of a claimed run; see [`apply_run`].
#[allow(clippy::too_many_arguments)]
async fn apply_claimed(
    store: &Store,
    world: &LiveWorld,
    settings: &RunSettings,
    run_id: i64,
    requirement: &Requirement,
    desired: &DesiredState,
    observed: &crate::plan::Observed,
    planned: &Planned,
) -> Result<AppliedRun, StoreError> {
    let fence = settings.fencing.as_ref().map(|f| &f.fence);
    let stored = store.list_actions(run_id).await?;
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    let mut succeeded = 0usize;
    let mut stop = false;
    let pairs: Vec<(&Action, &crate::store::StoredAction)> =
        planned.plan.actions.iter().zip(&stored).collect();
    for phase in phases(&pairs) {
        // A window that closes while the run applies stops it: what is left is not run.
        let window_closed = !requirement.window_open(settings.clock.now());
        // Actions of one phase run side by side, up to the concurrency bound, unless one of
        // them waits for another of the same phase.
        let mut ready = Vec::new();
        for &(action, row) in phase {
            let blocked = action.depends_on.iter().any(|d| failed.contains(d));
            if stop || blocked || window_closed {
                let why = if window_closed {
                    "not run: the policy's time window closed while the run was applied"
                } else if stop {
                    "not run: the run stopped after a conflict"
                } else {
                    "not run: an action it depends on failed"
                };
                store
                    .transition_action(
                        row.id,
                        ActionStatus::Pending,
                        ActionStatus::Skipped,
                        &ActionUpdate {
                            error: Some(why.to_owned()),
                            external_ref: None,
                        },
                        fence,
                        settings.clock.now(),
                    )
                    .await?;
                failed.insert(action.key.clone());
            } else {
                ready.push((action, row));
            }
        }
        let keys: BTreeSet<&str> = ready.iter().map(|(a, _)| a.key.as_str()).collect();
        let chained = ready
            .iter()
            .any(|(a, _)| a.depends_on.iter().any(|d| keys.contains(d.as_str())));
        // One bound for actions and requests: never more actions running than a cluster's
        // client lets requests be in flight, or an action would be marked running while it
        // waits to send anything (and after a crash look interrupted mid-request).
        let width = if chained {
            1
        } else {
            let client_bound = world.max_in_flight().unwrap_or(usize::MAX);
            settings.concurrency.min(client_bound).max(1)
        };
        let permits = tokio::sync::Semaphore::new(width);
        let mut work = Vec::with_capacity(ready.len());
        for (action, row) in ready {
            let permits = &permits;
            work.push(async move {
                // A closed semaphore is impossible here (it is never closed); run anyway.
                let _permit = permits.acquire().await.ok();
                let outcome = execute(
                    store, world, settings, desired, observed, planned, action, row,
                )
                .await?;
                Ok::<_, StoreError>((action.key.clone(), outcome))
            });
        }
        let results = futures::future::join_all(work).await;
        for result in results {
            let (key, outcome) = result?;
            match outcome {
                Ok(()) => succeeded += 1,
                Err(e) => {
                    stop |= e.is_conflict();
                    errors.insert(key.clone(), describe(&e));
                    failed.insert(key);
                }
            }
        }
    }
    // Verify: observe again and plan; an action that succeeded but whose resource still
    // differs in the same way did not take effect (a guest not in its power state, a setpoint
    // that does not read back).
    let (after, _) = world.observe(desired, Some(store)).await;
    let verified = crate::plan::plan(&planned.plan.commit, desired, &after, settings.options);
    let mut unverified = Vec::new();
    for action in &planned.plan.actions {
        if failed.contains(&action.key) {
            continue;
        }
        if let Some(still) = verified.plan.actions.iter().find(|a| a.key == action.key) {
            let fields: Vec<&str> = still.changes.iter().map(|c| c.field.as_str()).collect();
            let why = if fields.is_empty() {
                format!("applied, but {} still shows as needed", action.key)
            } else {
                format!(
                    "applied, but {} still differs after applying: {}",
                    action.resource,
                    fields.join(", ")
                )
            };
            tracing::warn!(action = %action.key, "{why}");
            errors.insert(action.key.clone(), why);
            unverified.push(action.key.clone());
            succeeded = succeeded.saturating_sub(1);
            failed.insert(action.key.clone());
        }
    }
    let status = match (succeeded, failed.len()) {
        (_, 0) => RunStatus::Succeeded,
        (0, _) => RunStatus::Failed,
        _ => RunStatus::PartiallyFailed,
    };
    let error = (!failed.is_empty()).then(|| {
        let mut text = format!(
            "{} of {} action(s) did not succeed: {}",
            failed.len(),
            planned.plan.actions.len(),
            failed.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        if !unverified.is_empty() {
            text.push_str(&format!(
                " (not verified after applying: {})",
                unverified.join(", ")
            ));
        }
        text
    });
    store
        .transition_run_fenced(
            run_id,
            RunStatus::Applying,
            status,
            CONTROLLER,
            error.as_deref(),
            fence,
            settings.clock.now(),
        )
        .await?;
    Ok(AppliedRun {
        status,
        verified,
        failed: errors,
    })
}

/// Consecutive actions of the same phase: database-held configuration (upserts, then
/// removals), guests created, configured, powered, device writes, deletions. The plan is
/// already in this order; grouping keeps it while letting one phase run side by side.
fn phases<'a, T>(pairs: &'a [(&Action, T)]) -> Vec<&'a [(&'a Action, T)]> {
    fn rank(action: &Action) -> u8 {
        use crate::plan::Verb;
        match (action.resource.kind.is_database_held(), action.verb) {
            (true, Verb::Remove) => 1,
            (true, _) => 0,
            (false, Verb::Create) => 2,
            (false, Verb::Update) => 3,
            (false, Verb::Start | Verb::Stop) => 4,
            (false, Verb::Write) => 5,
            (false, _) => 6,
        }
    }
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=pairs.len() {
        if i == pairs.len() || rank(pairs[i].0) != rank(pairs[start].0) {
            out.push(&pairs[start..i]);
            start = i;
        }
    }
    out
}

/// Runs one action: marks it running, applies it, retries transient errors with backoff,
/// and records the end. The outer error is the database's; the inner one the action's.
#[allow(clippy::too_many_arguments)]
async fn execute(
    store: &Store,
    world: &LiveWorld,
    settings: &RunSettings,
    desired: &DesiredState,
    observed: &crate::plan::Observed,
    planned: &Planned,
    action: &Action,
    row: &crate::store::StoredAction,
) -> Result<Result<(), ApplyError>, StoreError> {
    let fence = settings.fencing.as_ref().map(|f| &f.fence);
    let mut from = ActionStatus::Pending;
    let mut attempt = 0u32;
    let result = loop {
        attempt += 1;
        let started = store
            .transition_action(
                row.id,
                from,
                ActionStatus::Running,
                &ActionUpdate::default(),
                fence,
                settings.clock.now(),
            )
            .await?;
        if !started {
            // Someone else moved it (a leader closing an interrupted run): never apply an
            // action this replica could not mark as running.
            return Ok(Err(ApplyError::Precondition {
                action: action.key.clone(),
                message: "not run: its state was changed by another writer".to_owned(),
            }));
        }
        let result = apply_recording_tasks(
            store,
            world,
            settings,
            desired,
            observed,
            action,
            row.id,
            &planned.plan.commit,
        )
        .await;
        match result {
            Err(e) if e.is_transient() && !e.is_conflict() && attempt < settings.attempts => {
                tracing::warn!(action = %action.key, attempt, error = %e, "transient failure, retrying");
                store
                    .transition_action(
                        row.id,
                        ActionStatus::Running,
                        ActionStatus::Pending,
                        &ActionUpdate {
                            error: Some(e.to_string()),
                            external_ref: None,
                        },
                        fence,
                        settings.clock.now(),
                    )
                    .await?;
                from = ActionStatus::Pending;
                let wait = Backoff::new(settings.retry_base, settings.retry_cap).delay(attempt);
                tokio::time::sleep(wait).await;
            }
            other => break other,
        }
    };
    let (to, error) = match &result {
        Ok(_) => (ActionStatus::Succeeded, None),
        Err(e) => (ActionStatus::Failed, Some(describe(e))),
    };
    store
        .transition_action(
            row.id,
            ActionStatus::Running,
            to,
            &ActionUpdate {
                error,
                external_ref: None,
            },
            fence,
            settings.clock.now(),
        )
        .await?;
    Ok(result.map(|_| ()))
}

/// Applies one action while writing the UPID of each PVE task it starts into the action's
/// `external_ref` as soon as PVE answers, so a run that is interrupted while waiting still
/// names the task that was doing its work. Failing to record a UPID is logged, never fatal:
/// the action's own outcome is what counts.
#[allow(clippy::too_many_arguments)]
async fn apply_recording_tasks(
    store: &Store,
    world: &LiveWorld,
    settings: &RunSettings,
    desired: &DesiredState,
    observed: &crate::plan::Observed,
    action: &Action,
    action_id: i64,
    commit: &str,
) -> Result<super::apply::Applied, ApplyError> {
    let (sink, mut tasks) = tokio::sync::mpsc::unbounded_channel::<String>();
    let applying = async move {
        let at = ApplyContext {
            store: Some(store),
            commit,
            now: settings.clock.now(),
            tasks: Some(&sink),
        };
        world.apply(desired, observed, action, at).await
        // `sink` drops here, which ends the recording loop below.
    };
    let recording = async {
        while let Some(upid) = tasks.recv().await {
            if let Err(e) = store
                .set_action_external_ref(action_id, &upid, settings.clock.now())
                .await
            {
                tracing::warn!(action = %action.key, %upid, error = %e, "could not record the task's UPID");
            }
        }
    };
    let (result, ()) = tokio::join!(applying, recording);
    result
}

fn describe(e: &ApplyError) -> String {
    if e.is_conflict() {
        format!("{e} (changed since the plan was made; the next reconcile plans again)")
    } else {
        e.to_string()
    }
}

/// After a crash or restart: closes every run of `scope` left in `applying`, and fails those
/// left `observing` (never planned). An action left `running` may or may not have reached the
/// outside world, so it is never retried blindly: it is marked failed as interrupted, the
/// actions not started are skipped, and the run ends `superseded`. The next reconcile observes and plans again, so what the interrupted run did
/// is not planned twice and what it did not do is planned anew. Returns the closed run ids.
pub async fn recover_interrupted(
    store: &Store,
    scope: &str,
    fence: Option<&Fence>,
    now: DateTime<Utc>,
) -> Result<Vec<i64>, StoreError> {
    let mut closed = Vec::new();
    for run in runs_of(store, scope, RunStatus::Applying).await? {
        for action in store.list_actions(run.id).await? {
            let (to, why) = match action.status {
                ActionStatus::Running => (
                    ActionStatus::Failed,
                    match &action.external_ref {
                        Some(task) => format!(
                            "interrupted by a restart while running (its PVE task was {task}); \
                             the next plan shows whether it took effect"
                        ),
                        None => "interrupted by a restart while running; the next plan shows \
                                 whether it took effect"
                            .to_owned(),
                    },
                ),
                ActionStatus::Pending | ActionStatus::Waiting => (
                    ActionStatus::Skipped,
                    "not run: the controller restarted".to_owned(),
                ),
                _ => continue,
            };
            store
                .transition_action(
                    action.id,
                    action.status,
                    to,
                    &ActionUpdate {
                        error: Some(why),
                        external_ref: None,
                    },
                    fence,
                    now,
                )
                .await?;
        }
        if store
            .transition_run_fenced(
                run.id,
                RunStatus::Applying,
                RunStatus::Superseded,
                CONTROLLER,
                Some("interrupted by a restart; planned again from what was observed"),
                fence,
                now,
            )
            .await?
        {
            closed.push(run.id);
        }
    }
    // A run accepted but never planned: its commit is planned again by the next reconcile.
    for run in runs_of(store, scope, RunStatus::Observing).await? {
        if store
            .transition_run_fenced(
                run.id,
                RunStatus::Observing,
                RunStatus::Failed,
                CONTROLLER,
                Some("interrupted by a restart while observing; the commit is planned again"),
                fence,
                now,
            )
            .await?
        {
            closed.push(run.id);
        }
    }
    Ok(closed)
}
