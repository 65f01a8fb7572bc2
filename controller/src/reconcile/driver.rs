//! The loop around [`super::run::reconcile_report`]: triggers (poll timer, drift timer,
//! webhook, manual, an approval) feed the [`WorkQueue`]; one reconcile of the scope runs at a
//! time; failures back off exponentially with a cap; every reconcile updates the controller
//! status. Only the leader reconciles: a PostgreSQL advisory lock, or on SQLite a lease in the
//! database, so two `serve` processes never apply at once.
//!
//! What a reconcile does is decided in `run.rs`; this module decides *when*, and keeps the last
//! good desired state when a fetch fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use mycopod_adapters::git::{CommitId, GitAuth, GitSource};
use mycopod_adapters::github::{CommitState, GitHub, RepoRef};
use mycopod_specs::Loaded;
use tokio::sync::{mpsc, watch};

use super::observe::LiveWorld;
use super::queue::{Requeue, WorkQueue};
use super::run::{
    Fencing, Outcome, Reconciled, RunSettings, describe_problems, reconcile_report,
    recover_interrupted,
};
use super::status::resource_statuses;
use crate::control::{Control, SyncState, TriggerRequest, Unobserved};
use crate::declarations::expand::{Expansion, expand};
use crate::desired::Snapshot;
use crate::events::Event;
use crate::model::{RunStatus, Trigger};
use crate::store::{Fence, LeaderLock, NewRun, Store};
use mycopod_adapters::backoff::Backoff;
use mycopod_adapters::llm::LlmClient;

/// Why the scope was queued. Ordered by precedence: the most explicit reason names the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// The poll timer: fetch, and reconcile if the commit moved or approved work waits.
    Poll,
    /// The drift timer: observe and plan against the current commit.
    Drift,
    /// A run became approved: apply it.
    Approved,
    /// A retry after a failed reconcile.
    Retry,
    /// A push reported by the GitHub webhook.
    Webhook,
    /// An operator or API key asked.
    Manual,
}

/// Settings of the loop.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// The run lifecycle (scope, pruning, retries, selfHeal).
    pub run: RunSettings,
    /// The repository: a local path or a Git URL.
    pub repo: String,
    /// The ref to follow.
    pub git_ref: String,
    /// Sub-folder holding the declarations.
    pub path: String,
    /// What one load of a commit's declarations may read.
    pub limits: mycopod_specs::Limits,
    /// Where the Git cache lives.
    pub cache_dir: PathBuf,
    /// Credentials for the remote.
    pub git_auth: GitAuth,
    /// How often the source is fetched.
    pub poll_interval: Duration,
    /// How often the world is compared with an unchanged commit; zero turns it off.
    pub drift_interval: Duration,
    /// The longest a declared guest goes without a full read (`deep_reads.rs`).
    pub full_read_interval: Duration,
    /// First backoff after a failed reconcile; doubles up to `backoff_cap`.
    pub backoff_base: Duration,
    /// Longest backoff.
    pub backoff_cap: Duration,
    /// How long a SQLite leadership lease lasts without renewal.
    pub lease_ttl: Duration,
    /// The secrets declarations may name, each bound to its destinations.
    pub secrets: crate::secrets::Registry,
    /// Commit statuses on GitHub, when configured.
    pub github: Option<(GitHub, RepoRef)>,
    /// The model that translates `Declaration` documents, when configured.
    pub llm: Option<LlmClient>,
    /// The Modbus clients shared with telemetry, so a setpoint write never interleaves with a
    /// poll of the same device. `None`: the loop makes its own.
    pub device_clients: Option<crate::device_clients::DeviceClients>,
}

/// Loads the declarations of `commit` under `path` within `limits`: a blob past them is not
/// read, and is a `limit-exceeded` finding naming the file.
pub async fn read_commit(
    source: &GitSource,
    commit: &CommitId,
    path: &str,
    limits: mycopod_specs::Limits,
) -> Result<Loaded, mycopod_adapters::git::GitError> {
    let mut loaded = Loaded::with_limits(limits);
    let files = source
        .read_declarations(commit, path, |file, size| loaded.admit(file, size))
        .await?;
    for file in files {
        if let Some(text) = file.text {
            loaded.add_admitted(&file.path, text);
        }
    }
    // Refused files were listed while Git listed the tree: put them back in path order.
    loaded.files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(loaded)
}

impl LoopSettings {
    /// The scope name of a repository and ref.
    pub fn scope_of(repo: &str, git_ref: &str) -> String {
        format!("{repo}@{git_ref}")
    }
}

/// The advisory lock key of a scope (stable across processes and versions).
pub fn leader_key(scope: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("mycopod-leader:{scope}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

enum Leadership {
    None,
    Advisory(LeaderLock),
    Lease,
}

/// The loop's state between reconciles: the source, the last good commit, the clients.
pub struct Driver {
    store: Store,
    control: Control,
    settings: LoopSettings,
    source: GitSource,
    holder: String,
    leadership: Leadership,
    /// The last commit fetched that could be read, and its files.
    current: Option<(String, Arc<Loaded>)>,
    /// The commit the last finished reconcile was for.
    reconciled: Option<String>,
    /// The last reconcile could not observe something: the next poll observes again, even
    /// of an unchanged commit.
    observe_again: bool,
    /// The clients, rebuilt when the declared clusters or devices change.
    world: Option<(String, Arc<LiveWorld>)>,
    failures: u32,
    /// Who pushed, from the last signed webhook, for the next run.
    pusher: Option<String>,
    /// The run recorded `observing` for the reconcile under way, ended by it or, when the
    /// reconcile fails, by the step.
    accepted: Option<i64>,
    /// The last commit a run was recorded for on acceptance: a poll records one run per new
    /// commit, not one per retry while the commit cannot be read or observed.
    accepted_commit: Option<String>,
}

impl Driver {
    /// A driver for `settings`; nothing is fetched until the first reconcile.
    pub fn new(store: Store, control: Control, settings: LoopSettings) -> Driver {
        let source = GitSource::new(&settings.repo, &settings.cache_dir)
            .with_auth(settings.git_auth.clone());
        let holder = format!(
            "{}:{}:{}",
            hostname(),
            std::process::id(),
            rand::random::<u32>()
        );
        control.update_status(|s| s.scope = Some(settings.run.scope.clone()));
        control.set_model(settings.llm.clone());
        Driver {
            store,
            control,
            settings,
            source,
            holder,
            leadership: Leadership::None,
            current: None,
            reconciled: None,
            observe_again: false,
            world: None,
            failures: 0,
            pusher: None,
            accepted: None,
            accepted_commit: None,
        }
    }

    /// Takes, keeps or loses the reconcile leadership; returns whether this process leads.
    /// On becoming leader, runs left `applying` by a previous leader are closed.
    pub async fn ensure_leadership(&mut self) -> bool {
        let now = Utc::now();
        let scope = self.settings.run.scope.clone();
        let lease = format!("reconcile:{scope}");
        let was = !matches!(self.leadership, Leadership::None);
        let is_postgres = self.store.backend_name() == "postgres";
        let ttl = chrono::Duration::from_std(self.settings.lease_ttl)
            .unwrap_or(chrono::Duration::seconds(15));
        // On PostgreSQL the advisory lock decides who leads; the lease row then only carries
        // the fencing epoch, taken over by whoever holds the lock. Elsewhere the lease decides.
        let alive = match &mut self.leadership {
            Leadership::Advisory(lock) => lock.is_alive().await,
            _ => false,
        };
        let fence = match &self.leadership {
            Leadership::Advisory(_) if alive => self.seize_fence(&lease, now, ttl).await,
            Leadership::Advisory(_) => None,
            _ if is_postgres => {
                match self.store.try_advisory_leadership(leader_key(&scope)).await {
                    Ok(Some(lock)) => {
                        self.leadership = Leadership::Advisory(lock);
                        self.seize_fence(&lease, now, ttl).await
                    }
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "leadership: advisory lock");
                        None
                    }
                }
            }
            _ => match self
                .store
                .acquire_fence(&lease, &self.holder, now + ttl, now)
                .await
            {
                Ok(Some(fence)) => {
                    self.leadership = Leadership::Lease;
                    Some(fence)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "leadership: lease");
                    None
                }
            },
        };
        let leads = fence.is_some();
        self.settings.run.fencing = fence.map(|fence| Fencing {
            fence,
            ttl: self.settings.lease_ttl,
        });
        if !leads {
            self.leadership = Leadership::None;
        }
        if leads && !was {
            tracing::info!(scope = %scope, holder = %self.holder, "took the reconcile leadership");
            let fence = self.settings.run.fencing.as_ref().map(|f| &f.fence);
            match recover_interrupted(&self.store, &scope, fence, now).await {
                Ok(closed) if !closed.is_empty() => {
                    tracing::warn!(runs = ?closed, "closed runs interrupted by a restart; planning again");
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "recover interrupted runs"),
            }
            // Start from the commit recorded by the previous leader, so an unchanged commit
            // after a restart counts as drift, not as new.
            self.reconciled = self
                .store
                .get_setting(&reconciled_key(&scope))
                .await
                .ok()
                .flatten();
        }
        if was && !leads {
            tracing::warn!(scope = %scope, "lost the reconcile leadership");
            // Telemetry polls what the desired state declares: a replica that no longer
            // leads must not keep polling beside the new leader.
            self.control.clear_desired();
        }
        if was != leads {
            self.control.update_status(|s| s.leader = leads);
        }
        leads
    }

    /// The fence of a replica that holds the advisory lock; `None` (not leading) if the
    /// lease row cannot be written.
    async fn seize_fence(
        &self,
        lease: &str,
        now: chrono::DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> Option<Fence> {
        match self
            .store
            .seize_fence(lease, &self.holder, now + ttl, now)
            .await
        {
            Ok(fence) => Some(fence),
            Err(e) => {
                tracing::warn!(error = %e, "leadership: fencing epoch");
                None
            }
        }
    }

    /// Gives up the leadership (on shutdown), so another replica takes over at once.
    pub async fn release_leadership(&mut self) {
        self.settings.run.fencing = None;
        match std::mem::replace(&mut self.leadership, Leadership::None) {
            Leadership::Advisory(lock) => {
                if let Err(e) = lock.release().await {
                    tracing::warn!(error = %e, "release advisory lock");
                }
            }
            Leadership::Lease => {
                let name = format!("reconcile:{}", self.settings.run.scope);
                if let Err(e) = self.store.release_lease(&name, &self.holder).await {
                    tracing::warn!(error = %e, "release lease");
                }
            }
            Leadership::None => {}
        }
    }

    /// Remembers who pushed (from a signed webhook) for the next run.
    pub fn note_pusher(&mut self, pusher: Option<String>) {
        if pusher.is_some() {
            self.pusher = pusher;
        }
    }

    /// Fetches the source. On failure the last good commit stays in force and the status
    /// shows the error. Returns the commit fetched when it is not the one whose declarations
    /// are loaded (read them with [`Driver::load`]); fails when no commit is available.
    async fn fetch(&mut self) -> Result<Option<CommitId>, String> {
        let started = Instant::now();
        let fetched = self.source.fetch(&self.settings.git_ref).await;
        metrics::histogram!("mycopod_git_fetch_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        let commit = match fetched {
            Ok(commit) => commit,
            Err(e) => {
                metrics::counter!("mycopod_outside_requests_total", "adapter" => "git", "result" => "error").increment(1);
                let message = format!("fetch {}: {e}", self.source.display_remote());
                tracing::warn!("{message}");
                self.control
                    .update_status(|s| s.last_fetch_error = Some(message.clone()));
                return if self.current.is_some() {
                    Ok(None)
                } else {
                    Err(message)
                };
            }
        };
        metrics::counter!("mycopod_outside_requests_total", "adapter" => "git", "result" => "ok")
            .increment(1);
        let now = Utc::now();
        self.control.update_status(|s| {
            s.last_fetch_at = Some(now);
            s.last_fetch_error = None;
            s.commit = Some(commit.as_str().to_owned());
        });
        let loaded = self.current.as_ref().map(|(c, _)| c.as_str());
        Ok((loaded != Some(commit.as_str())).then_some(commit))
    }

    /// Reads the declarations of a newly fetched commit and makes it the current one.
    async fn load(&mut self, commit: &CommitId) -> Result<(), String> {
        let loaded = self.read(commit).await?;
        // One copy, shared with the API (`GET /declarations` shows the files).
        let loaded = Arc::new(loaded);
        self.control.set_files(loaded.clone());
        self.current = Some((commit.as_str().to_owned(), loaded));
        Ok(())
    }

    /// Records a run `observing` the moment a trigger is accepted for `commit`, so that the
    /// API and the event stream show it before anything is read or observed: once per new
    /// commit, and for every webhook or manual trigger (a drift check of an unchanged commit
    /// on the timer records a run only when it finds something). A failure to record is
    /// logged; the reconcile then records its run when planned, as without.
    async fn accept(
        &mut self,
        commit: &str,
        top: Reason,
        unchanged: bool,
        trigger: Trigger,
        requested_by: Option<&str>,
    ) {
        let new_commit = !unchanged && self.accepted_commit.as_deref() != Some(commit);
        if !new_commit && !matches!(top, Reason::Manual | Reason::Webhook) {
            return;
        }
        self.accepted_commit = Some(commit.to_owned());
        let run = NewRun::observing(&self.settings.run.scope, commit, trigger, requested_by);
        match self
            .store
            .insert_run(&run, super::run::CONTROLLER, Utc::now())
            .await
        {
            Ok(id) => self.accepted = Some(id),
            Err(e) => tracing::warn!(error = %e, commit, "record the accepted run"),
        }
    }

    async fn read(&self, commit: &CommitId) -> Result<Loaded, String> {
        read_commit(
            &self.source,
            commit,
            &self.settings.path,
            self.settings.limits,
        )
        .await
        .map_err(|e| format!("read declarations at {}: {e}", commit.short()))
    }

    /// One pass for the reasons queued: fetch, decide whether to reconcile, reconcile.
    /// Returns what the queue should do next.
    pub async fn step(&mut self, reasons: &[Reason], requested_by: Option<&str>) -> Requeue {
        match self.try_step(reasons, requested_by).await {
            Ok(()) => {
                self.accepted = None;
                self.failures = 0;
                Requeue::AwaitChange
            }
            Err(message) => {
                if let Some(id) = self.accepted.take() {
                    // Ends it only if the reconcile did not get to (a conditional change).
                    let ended = self
                        .store
                        .transition_run(
                            id,
                            RunStatus::Observing,
                            RunStatus::Failed,
                            super::run::CONTROLLER,
                            Some(&message),
                            Utc::now(),
                        )
                        .await;
                    if let Err(e) = ended {
                        tracing::warn!(run_id = id, error = %e, "end the accepted run");
                    }
                }
                self.failures = self.failures.saturating_add(1);
                // Not jittered: one loop per scope, nobody to collide with.
                let delay = Backoff::new(self.settings.backoff_base, self.settings.backoff_cap)
                    .delay(self.failures);
                tracing::warn!(error = %message, retry_in = ?delay, "reconcile failed");
                let now = Utc::now();
                self.control.update_status(|s| {
                    s.last_reconcile_at = Some(now);
                    s.last_outcome = Some(message.clone());
                    s.last_reconcile_failed = true;
                });
                Requeue::After(delay)
            }
        }
    }

    async fn try_step(
        &mut self,
        reasons: &[Reason],
        requested_by: Option<&str>,
    ) -> Result<(), String> {
        let now = Utc::now();
        let scope = self.settings.run.scope.clone();
        // Expiry does not wait for a reconcile.
        self.store
            .expire_runs(super::run::CONTROLLER, now)
            .await
            .map_err(|e| format!("expire runs: {e}"))?;
        let fetched = self.fetch().await?;
        let Some(commit) = fetched
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .or_else(|| self.current.as_ref().map(|(c, _)| c.clone()))
        else {
            return Err("no commit fetched yet".to_owned());
        };
        let unchanged = self.reconciled.as_deref() == Some(commit.as_str());
        let top = reasons.iter().max().copied().unwrap_or(Reason::Poll);
        if unchanged && top == Reason::Poll && !self.observe_again {
            // Nothing new: reconcile only if approved work waits (e.g. for a time window).
            let approved = self
                .store
                .runs_in_status(RunStatus::Approved)
                .await
                .map_err(|e| format!("list approved runs: {e}"))?;
            if !approved.iter().any(|r| r.scope == scope) {
                return Ok(());
            }
        }
        let trigger = match top {
            Reason::Manual => Trigger::Manual,
            Reason::Webhook => Trigger::Webhook,
            _ if unchanged => Trigger::Drift,
            _ => Trigger::Poll,
        };
        self.accept(&commit, top, unchanged, trigger, requested_by)
            .await;
        if let Some(fetched) = &fetched {
            self.load(fetched).await?;
        }
        let Some((commit, loaded)) = self.current.clone() else {
            return Err("no commit fetched yet".to_owned());
        };
        // Declarations become documents (translated once per text and model, then cached).
        let (loaded, declarations) =
            expand(&self.store, self.settings.llm.as_ref(), &loaded, now).await;
        let world = self.world_for(&loaded);
        let mut settings = self.settings.run.clone();
        // Changes found against a commit already reconciled are drift, whatever asked.
        settings.drift = unchanged;
        // Who had a hand in what this run covers: every commit since the last one the world
        // converged to. Without that list self-approval could not be checked, so a failure
        // to read it fails the reconcile.
        let since = self
            .store
            .get_setting(&converged_key(&scope))
            .await
            .map_err(|e| format!("read the converged commit: {e}"))?
            .and_then(|c| CommitId::parse(&c));
        if let Some(to) = CommitId::parse(&commit) {
            settings.commits = self
                .source
                .commits_between(since.as_ref(), &to, MAX_COVERED_COMMITS)
                .await
                .map_err(|e| format!("list the commits since the last converged one: {e}"))?;
        }
        settings.pusher = self.pusher.take();
        settings.accepted = self.accepted;
        let started = Instant::now();
        let report = reconcile_report(
            &self.store,
            &world,
            &settings,
            &commit,
            &loaded,
            trigger,
            requested_by,
            now,
        )
        .await
        .map_err(|e| e.to_string())?;
        metrics::histogram!("mycopod_reconcile_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        for p in &report.problems {
            tracing::warn!(resource = %p.resource, "{}", p.message);
        }
        self.record(&commit, &report, &declarations).await;
        self.observe_again = !report.problems.is_empty();
        if self.observe_again {
            // Not converged and not reconciled: the next poll observes again rather than
            // taking what could not be seen as settled. (A commit reconciled before stays
            // so, so that what is found then counts as drift.)
            metrics::counter!("mycopod_observation_failures_total").increment(1);
            return Ok(());
        }
        remember_reconciled(&self.store, &scope, &commit, &report.outcome).await;
        self.reconciled = Some(commit);
        Ok(())
    }

    /// The clients for `loaded`, made again only when the declared clusters or devices change.
    fn world_for(&mut self, loaded: &Loaded) -> Arc<LiveWorld> {
        let desired = mycopod_specs::DesiredState::from_loaded(loaded);
        let fingerprint = client_fingerprint(&desired);
        if let Some((f, world)) = &self.world
            && *f == fingerprint
        {
            return world.clone();
        }
        let world = Arc::new(
            match &self.settings.device_clients {
                Some(clients) => {
                    LiveWorld::with_device_clients(&desired, &self.settings.secrets, clients)
                }
                None => LiveWorld::new(&desired, &self.settings.secrets),
            }
            .with_full_read_interval(self.settings.full_read_interval),
        );
        self.world = Some((fingerprint, world.clone()));
        world
    }

    async fn record(
        &mut self,
        commit: &str,
        report: &Reconciled,
        declarations: &BTreeMap<String, Expansion>,
    ) {
        let now = Utc::now();
        if let Some(desired) = &report.desired {
            let changed =
                self.control.current().map(|s| s.commit.clone()) != Some(commit.to_owned());
            if changed {
                self.control.set_desired(Snapshot {
                    commit: commit.to_owned(),
                    desired: Arc::new(desired.clone()),
                    loaded_at: now,
                });
            }
        }
        let previous = self.control.status().resources;
        let mut resources = match (&report.desired, &report.planned) {
            (Some(desired), Some(planned)) => {
                resource_statuses(desired, planned, &report.failed, &previous, now)
            }
            _ => previous,
        };
        for resource in resources.iter_mut().filter(|r| r.kind == "Declaration") {
            let (sync, detail) = match declarations.get(&resource.name) {
                Some(Expansion::Translated {
                    model,
                    cached,
                    file,
                }) => (
                    SyncState::InSync,
                    format!(
                        "translated by {model}{} into {file}; its resources carry the label mycopod/declaration: {}",
                        if *cached { " (cached)" } else { "" },
                        resource.name
                    ),
                ),
                Some(Expansion::Failed { reason }) => {
                    (SyncState::Failed, format!("not translated: {reason}"))
                }
                Some(Expansion::NoModel) | None => (
                    SyncState::NotTranslated,
                    "not translated: no model is configured ([llm] in mycopod.toml)".to_owned(),
                ),
            };
            resource.sync = sync;
            resource.details = vec![detail];
        }
        let outcome = describe(report);
        let unobserved: Vec<Unobserved> = report
            .problems
            .iter()
            .map(|p| Unobserved {
                resource: p.resource.clone(),
                reason: p.message.clone(),
            })
            .collect();
        metrics::gauge!("mycopod_unobserved_resources").set(unobserved.len() as f64);
        tracing::info!(outcome = %outcome, commit = %commit, "reconciled");
        self.control.update_status(|s| {
            s.last_reconcile_at = Some(now);
            s.last_outcome = Some(outcome);
            s.last_reconcile_failed = false;
            s.resources = resources;
            s.unobserved = unobserved;
        });
        if let Some((github, repo)) = &self.settings.github {
            let (state, text) = match &report.outcome {
                Outcome::InSync => (
                    CommitState::Success,
                    "in sync: nothing to change".to_owned(),
                ),
                Outcome::ObservationFailed => (CommitState::Failure, describe(report)),
                Outcome::Invalid { run_id } => (
                    CommitState::Failure,
                    format!("run {run_id}: the declarations do not validate"),
                ),
                Outcome::Waiting { run_id } => (
                    CommitState::Pending,
                    format!("run {run_id} waits for approval: {}", summary(report)),
                ),
                Outcome::WaitingForWindow { run_id, opens_at } => (
                    CommitState::Pending,
                    format!("run {run_id} approved, {}", window_text(*opens_at)),
                ),
                Outcome::Applied { run_id, status } => (
                    if *status == RunStatus::Succeeded {
                        CommitState::Success
                    } else {
                        CommitState::Failure
                    },
                    format!("run {run_id} {status}"),
                ),
            };
            match github.post_status(repo, commit, state, &text, None).await {
                Ok(()) => metrics::counter!("mycopod_outside_requests_total", "adapter" => "github", "result" => "ok").increment(1),
                Err(e) => {
                    metrics::counter!("mycopod_outside_requests_total", "adapter" => "github", "result" => "error").increment(1);
                    tracing::warn!(error = %e, "post commit status");
                }
            }
        }
    }
}

fn summary(report: &Reconciled) -> String {
    report
        .planned
        .as_ref()
        .map(|p| p.plan.summary())
        .unwrap_or_default()
}

/// The status line of a reconcile; what could not be observed is always said.
fn describe(report: &Reconciled) -> String {
    let done = match &report.outcome {
        Outcome::InSync => "in sync".to_owned(),
        Outcome::ObservationFailed => "observation failed".to_owned(),
        Outcome::Invalid { run_id } => format!("invalid: run {run_id}"),
        Outcome::Waiting { run_id } => format!("waiting for approval: run {run_id}"),
        Outcome::WaitingForWindow { run_id, opens_at } => {
            format!("run {run_id} approved, {}", window_text(*opens_at))
        }
        Outcome::Applied { run_id, status } => format!("applied run {run_id}: {status}"),
    };
    if report.problems.is_empty() {
        return done;
    }
    let lead = if report.outcome == Outcome::ObservationFailed {
        done
    } else {
        format!("{done}; observation failed")
    };
    format!(
        "{lead} (not observed, nothing planned for it: {})",
        describe_problems(&report.problems)
    )
}

/// "waits for window opening at …", as the status and commit status say it.
pub fn window_text(opens_at: Option<chrono::DateTime<Utc>>) -> String {
    match opens_at {
        Some(at) => format!("waits for window opening at {}", at.to_rfc3339()),
        None => "waits for a window that does not open within a week".to_owned(),
    }
}

/// The most commits one run records as covered (the newest; a run covering more is
/// still checked against the authors of those).
const MAX_COVERED_COMMITS: usize = 200;

/// Records that `commit` of `scope` was reconciled (and, when `outcome` says the world
/// matches it, converged), so that the next process, `serve` after `mycopod apply` or after a
/// restart, does not take it as new. Failures are logged: the cost is one more observation.
pub async fn remember_reconciled(store: &Store, scope: &str, commit: &str, outcome: &Outcome) {
    let converged = matches!(
        outcome,
        Outcome::InSync
            | Outcome::Applied {
                status: RunStatus::Succeeded,
                ..
            }
    );
    if converged
        && let Err(e) = store
            .set_setting(&converged_key(scope), commit, Utc::now())
            .await
    {
        tracing::warn!(error = %e, "remember the converged commit");
    }
    if let Err(e) = store
        .set_setting(&reconciled_key(scope), commit, Utc::now())
        .await
    {
        tracing::warn!(error = %e, "remember the reconciled commit");
    }
}

fn converged_key(scope: &str) -> String {
    format!("converged_commit:{scope}")
}

fn reconciled_key(scope: &str) -> String {
    format!("reconciled_commit:{scope}")
}

/// What the clients depend on: the cluster and device specs.
fn client_fingerprint(desired: &mycopod_specs::DesiredState) -> String {
    let clusters: Vec<_> = desired
        .clusters
        .iter()
        .map(|c| (c.name().as_str(), serde_json::to_value(&c.spec).ok()))
        .collect();
    let devices: Vec<_> = desired
        .devices
        .iter()
        .map(|d| (d.name().as_str(), serde_json::to_value(&d.spec).ok()))
        .collect();
    serde_json::json!({"clusters": clusters, "devices": devices}).to_string()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned())
}

/// Whether an approved run still waits to be applied. A run the loop recorded as approved
/// itself was applied in the step that recorded it, so by the time its event is read it has
/// moved on and must not cost another observation pass. When in doubt, it waits.
async fn still_approved(store: &Store, run_id: i64) -> bool {
    match store.get_run(run_id).await {
        Ok(run) => run.status == RunStatus::Approved,
        Err(e) => {
            tracing::warn!(run_id, error = %e, "read an approved run");
            true
        }
    }
}

/// Runs the loop until `shutdown` turns true: feeds the queue from `triggers`, the timers and
/// approvals, and runs one reconcile at a time while this process leads.
pub async fn run(
    mut driver: Driver,
    mut triggers: mpsc::UnboundedReceiver<TriggerRequest>,
    mut shutdown: watch::Receiver<bool>,
) {
    let scope = driver.settings.run.scope.clone();
    let queue: Arc<WorkQueue<String, Reason>> = Arc::new(WorkQueue::new());
    let mut events = driver.store.events().subscribe();
    let mut poll = tokio::time::interval(
        driver
            .settings
            .poll_interval
            .max(Duration::from_millis(100)),
    );
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let drift_every = if driver.settings.drift_interval.is_zero() {
        Duration::from_secs(365 * 24 * 3600)
    } else {
        driver.settings.drift_interval
    };
    let mut drift =
        tokio::time::interval_at(tokio::time::Instant::now() + drift_every, drift_every);
    drift.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lease_every = (driver.settings.lease_ttl / 3).max(Duration::from_millis(200));
    let mut leadership = tokio::time::interval(lease_every);
    leadership.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut requested_by: Option<String> = None;
    let mut leading = false;

    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            _ = leadership.tick() => {
                let now_leading = driver.ensure_leadership().await;
                if now_leading && !leading {
                    queue.trigger(scope.clone(), Reason::Poll);
                }
                leading = now_leading;
            }
            Some(request) = triggers.recv() => {
                let reason = match request.trigger {
                    Trigger::Webhook => Reason::Webhook,
                    Trigger::Drift => Reason::Drift,
                    Trigger::Poll => Reason::Poll,
                    Trigger::Manual | Trigger::Cli => Reason::Manual,
                };
                if request.requested_by.is_some() {
                    requested_by = request.requested_by;
                }
                driver.note_pusher(request.pusher);
                queue.trigger(scope.clone(), reason);
            }
            event = events.recv() => {
                if let Ok(Event::Run { run_id, status }) = event
                    && status == RunStatus::Approved.as_str()
                    && still_approved(&driver.store, run_id).await
                {
                    queue.trigger(scope.clone(), Reason::Approved);
                }
            }
            _ = poll.tick() => queue.trigger(scope.clone(), Reason::Poll),
            _ = drift.tick() => queue.trigger(scope.clone(), Reason::Drift),
            Some(work) = queue.next(), if leading => {
                let reasons: Vec<Reason> = work.reasons.iter().copied().collect();
                let who = requested_by.take();
                let requeue = driver.step(&reasons, who.as_deref()).await;
                queue.finish(&work.scope, requeue, Reason::Retry);
            }
        }
    }
    queue.close();
    driver.release_leadership().await;
    tracing::info!("reconcile loop stopped");
}
