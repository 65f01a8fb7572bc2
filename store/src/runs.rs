//! Runs, their actions and the approvals on them. State changes are conditional updates that
//! report whether they took effect; recording a decision and deciding whether the run is now
//! approved happen in one write transaction. Every run state change and every decision is
//! appended to the audit log in the same transaction. Policy decisions (who may approve,
//! self-approval, expiry times) are the caller's; this module only records them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::audit::{AuditTx, NewAuditEntry};
use super::codec::db_time;
use super::{Dialect, Fence, Result, Store, StoreError, db_err, on_pool};
use crate::events::Event;
use crate::model::{ActionStatus, Decision, RunStatus, Trigger};

/// A run to record, with its actions.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// What this run reconciles (a repository and ref, or `default`); newer runs of the same
    /// scope supersede waiting ones.
    pub scope: String,
    /// The commit the desired state came from.
    pub commit_sha: String,
    /// What started the run.
    pub trigger: Trigger,
    /// The user or key that asked for it, if any (for the self-approval rule).
    pub requested_by: Option<String>,
    /// The initial state: `awaiting_approval`, `approved` or `invalid`.
    pub status: RunStatus,
    /// The plan as canonical JSON (or the diagnostics of an invalid run).
    pub plan: Value,
    /// SHA-256 of the plan's canonical JSON.
    pub plan_hash: String,
    /// How many distinct approvals make the run approved.
    pub required_approvals: i64,
    /// Why the run is invalid, if it is.
    pub error: Option<String>,
    /// When a waiting run expires, if a policy says so.
    pub expires_at: Option<DateTime<Utc>>,
    /// The actions in plan order.
    pub actions: Vec<NewAction>,
}

impl NewRun {
    /// A run recorded the moment its trigger is accepted: `observing`, with no plan yet
    /// (an empty plan document and hash) until [`Store::complete_observed_run`] plans it.
    pub fn observing(
        scope: &str,
        commit: &str,
        trigger: Trigger,
        requested_by: Option<&str>,
    ) -> NewRun {
        NewRun {
            scope: scope.to_owned(),
            commit_sha: commit.to_owned(),
            trigger,
            requested_by: requested_by.map(str::to_owned),
            status: RunStatus::Observing,
            plan: json!({}),
            plan_hash: String::new(),
            required_approvals: 0,
            error: None,
            expires_at: None,
            actions: Vec::new(),
        }
    }
}

/// One action of a [`NewRun`].
#[derive(Debug, Clone)]
pub struct NewAction {
    /// Stable key, e.g. `Guest/pihole:update`.
    pub key: String,
    /// The resource kind (`Guest`, `ModbusDevice`, ...).
    pub kind: String,
    /// The resource name.
    pub resource: String,
    /// The verb (`create`, `update`, `write`, ...).
    pub verb: String,
    /// Field-level diff as JSON.
    pub diff: Value,
    /// Approvals this action needs (the run needs the maximum).
    pub required_approvals: i64,
    /// Initial status, usually `pending`.
    pub status: ActionStatus,
}

/// A stored run with its plan.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Run {
    /// Run id.
    pub id: i64,
    /// Reconcile scope.
    pub scope: String,
    /// Commit of the desired state.
    pub commit_sha: String,
    /// What started it.
    #[sqlx(rename = "trigger_source")]
    pub trigger: Trigger,
    /// Who asked for it.
    pub requested_by: Option<String>,
    /// Current state.
    pub status: RunStatus,
    /// The plan JSON.
    #[sqlx(json, rename = "plan_json")]
    pub plan: Value,
    /// The plan's hash, which approvals must name.
    pub plan_hash: String,
    /// Approvals needed.
    pub required_approvals: i64,
    /// Last error (invalid specs, apply failure).
    pub error: Option<String>,
    /// The run that superseded this one.
    pub superseded_by: Option<i64>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Became approved.
    pub approved_at: Option<DateTime<Utc>>,
    /// Started applying.
    pub started_at: Option<DateTime<Utc>>,
    /// Reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Expires if still waiting.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A run without its plan, as listed.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RunSummary {
    /// Run id.
    pub id: i64,
    /// Reconcile scope.
    pub scope: String,
    /// Commit of the desired state.
    pub commit_sha: String,
    /// What started it.
    #[sqlx(rename = "trigger_source")]
    pub trigger: Trigger,
    /// Who asked for it.
    pub requested_by: Option<String>,
    /// Current state.
    pub status: RunStatus,
    /// The plan's hash.
    pub plan_hash: String,
    /// Approvals needed.
    pub required_approvals: i64,
    /// Last error.
    pub error: Option<String>,
    /// The run that superseded this one.
    pub superseded_by: Option<i64>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Filters and cursor of [`Store::list_runs`].
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs in this state.
    pub status: Option<RunStatus>,
    /// Only runs started by this trigger.
    pub trigger: Option<Trigger>,
    /// Only runs whose commit starts with this (full sha or a prefix).
    pub commit: Option<String>,
    /// Only runs with an id below this (the `next_cursor` of the previous page).
    pub before: Option<i64>,
    /// Page size; 0 means 50. Capped at 1000.
    pub limit: u32,
}

/// One page of runs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunPage {
    /// At most the page size of them, newest first, without their plans.
    pub runs: Vec<RunSummary>,
    /// Pass as `before` to get the next page; `None` on the last page.
    pub next_cursor: Option<i64>,
}

/// An action of a run as stored (made from the planner's `plan::Action`).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct StoredAction {
    /// Its id.
    pub id: i64,
    /// Its run.
    pub run_id: i64,
    /// Position in the plan, from 0.
    pub seq: i64,
    /// Stable key.
    #[sqlx(rename = "action_key")]
    pub key: String,
    /// Resource kind.
    pub kind: String,
    /// Resource name.
    pub resource: String,
    /// What the action does to the resource (`create`, `update`, `write`, ...).
    pub verb: String,
    /// Field-level diff.
    #[sqlx(json, rename = "diff_json")]
    pub diff: Value,
    /// Approvals this action needs.
    pub required_approvals: i64,
    /// Current status.
    pub status: ActionStatus,
    /// How many times it started running.
    pub attempts: i64,
    /// The error of its most recent failed attempt (kept when a later attempt succeeds).
    pub last_error: Option<String>,
    /// A reference in the outside system (a Proxmox task UPID).
    pub external_ref: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// First started running.
    pub started_at: Option<DateTime<Utc>>,
    /// Reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Extra fields written with an action transition.
#[derive(Debug, Clone, Default)]
pub struct ActionUpdate {
    /// Sets `last_error` when given.
    pub error: Option<String>,
    /// Sets `external_ref` when given.
    pub external_ref: Option<String>,
}

/// A recorded approval or rejection.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ApprovalRecord {
    /// Approval id.
    pub id: i64,
    /// The run.
    pub run_id: i64,
    /// Who decided.
    pub user_name: String,
    /// The plan hash the decision is about.
    pub plan_hash: String,
    /// Approve or reject.
    pub decision: Decision,
    /// Free comment.
    pub comment: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// The state of a run after a decision was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ApprovalOutcome {
    /// The run's status after the decision (`approved` once enough approvals are in).
    pub status: RunStatus,
    /// Approvals counted for the current plan hash.
    pub approvals: i64,
    /// Approvals needed.
    pub required: i64,
}

macro_rules! run_columns {
    () => {
        "id, scope, commit_sha, trigger_source, requested_by, status, plan_json, plan_hash, \
         required_approvals, error, superseded_by, created_at, updated_at, approved_at, \
         started_at, finished_at, expires_at"
    };
}

macro_rules! run_summary_columns {
    () => {
        "id, scope, commit_sha, trigger_source, requested_by, status, plan_hash, \
         required_approvals, error, superseded_by, created_at, updated_at, finished_at"
    };
}

macro_rules! action_columns {
    () => {
        "id, run_id, seq, action_key, kind, resource, verb, diff_json, required_approvals, \
         status, attempts, last_error, external_ref, created_at, updated_at, started_at, \
         finished_at"
    };
}

fn status_change_entry(
    actor: &str,
    run_id: i64,
    from: RunStatus,
    to: RunStatus,
    extra: Value,
) -> NewAuditEntry {
    NewAuditEntry {
        actor: actor.to_owned(),
        event: "run.status".to_owned(),
        subject: format!("run/{run_id}"),
        details: json!({"from": from.as_str(), "to": to.as_str(), "extra": extra}),
    }
}

/// Inserts a run's actions in plan order, inside the transaction `$tx` (either backend).
macro_rules! insert_actions {
    ($tx:ident, $run_id:expr, $actions:expr, $now:expr) => {
        for (seq, action) in $actions.iter().enumerate() {
            sqlx::query(
                "INSERT INTO actions (run_id, seq, action_key, kind, resource, verb, \
                 diff_json, required_approvals, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
            )
            .bind($run_id)
            .bind(i64::try_from(seq).unwrap_or(i64::MAX))
            .bind(&action.key)
            .bind(&action.kind)
            .bind(&action.resource)
            .bind(&action.verb)
            .bind(sqlx::types::Json(&action.diff))
            .bind(action.required_approvals)
            .bind(action.status)
            .bind($now)
            .execute(&mut *$tx)
            .await
            .map_err(db_err("insert action"))?;
        }
    };
}

impl Store {
    /// Records a run and its actions in one transaction (plus a `run.created` audit entry) and
    /// returns the run id.
    pub async fn insert_run(&self, run: &NewRun, actor: &str, now: DateTime<Utc>) -> Result<i64> {
        if !run.status.is_initial() {
            return Err(StoreError::InvalidInput {
                what: "run",
                message: format!("a run cannot start in state {}", run.status),
            });
        }
        let now = db_time(now);
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err("begin insert run"))?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO runs (scope, commit_sha, trigger_source, requested_by, status, \
                 plan_json, plan_hash, required_approvals, error, created_at, updated_at, \
                 approved_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12) RETURNING id",
            )
            .bind(&run.scope)
            .bind(&run.commit_sha)
            .bind(run.trigger)
            .bind(&run.requested_by)
            .bind(run.status)
            .bind(sqlx::types::Json(&run.plan))
            .bind(&run.plan_hash)
            .bind(run.required_approvals)
            .bind(&run.error)
            .bind(now)
            .bind((run.status == RunStatus::Approved).then_some(now))
            .bind(run.expires_at.map(db_time))
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err("insert run"))?;
            insert_actions!(tx, id, run.actions, now);
            tx.append_audit(
                &NewAuditEntry {
                    actor: actor.to_owned(),
                    event: "run.created".to_owned(),
                    subject: format!("run/{id}"),
                    details: json!({
                        "scope": run.scope,
                        "commit": run.commit_sha,
                        "trigger": run.trigger.as_str(),
                        "status": run.status.as_str(),
                        "plan_hash": run.plan_hash,
                        "actions": run.actions.len(),
                    }),
                },
                now,
            )
            .await?;
            tx.commit().await.map_err(db_err("commit insert run"))?;
            self.events().publish(Event::Run { run_id: id, status: run.status.as_str().to_owned() });
            Ok(id)
        })
    }

    /// Completes a run recorded as `observing` with what observing and planning found: its
    /// plan, actions, approvals needed and the state it is planned into (`awaiting_approval`,
    /// `approved` or `invalid`; `run.scope`, `commit_sha`, `trigger` and `requested_by` stay
    /// as recorded). One transaction, audited as a state change. Returns whether the run was
    /// still observing (nothing is written when it was not).
    pub async fn complete_observed_run(
        &self,
        id: i64,
        run: &NewRun,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        if !run.status.is_planned() {
            return Err(StoreError::InvalidInput {
                what: "run",
                message: format!(
                    "an observed run cannot be planned into state {}",
                    run.status
                ),
            });
        }
        let now = db_time(now);
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err("begin plan observed run"))?;
            let done = sqlx::query(
                "UPDATE runs SET status = $2, plan_json = $3, plan_hash = $4, \
                 required_approvals = $5, error = $6, expires_at = $7, approved_at = $8, \
                 finished_at = $9, updated_at = $10 WHERE id = $1 AND status = 'observing'",
            )
            .bind(id)
            .bind(run.status)
            .bind(sqlx::types::Json(&run.plan))
            .bind(&run.plan_hash)
            .bind(run.required_approvals)
            .bind(&run.error)
            .bind(run.expires_at.map(db_time))
            .bind((run.status == RunStatus::Approved).then_some(now))
            .bind(run.status.is_terminal().then_some(now))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err("plan observed run"))?
            .rows_affected()
                == 1;
            if !done {
                return Ok(false);
            }
            insert_actions!(tx, id, run.actions, now);
            tx.append_audit(
                &status_change_entry(
                    actor,
                    id,
                    RunStatus::Observing,
                    run.status,
                    json!({"plan_hash": run.plan_hash, "actions": run.actions.len()}),
                ),
                now,
            )
            .await?;
            tx.commit().await.map_err(db_err("commit plan observed run"))?;
            self.events().publish(Event::Run { run_id: id, status: run.status.as_str().to_owned() });
            Ok(true)
        })
    }

    /// Reads one run with its plan.
    pub async fn get_run(&self, id: i64) -> Result<Run> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, Run>(concat!("SELECT ", run_columns!(), " FROM runs WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(db_err("get run"))?
                .ok_or_else(|| StoreError::not_found("run", id))
        })
    }

    /// Lists runs newest first, filtered, one page at a time.
    pub async fn list_runs(&self, filter: &RunFilter) -> Result<RunPage> {
        let limit = match filter.limit {
            0 => 50,
            n => n.min(1000),
        };
        // Only the filters given become conditions, so a status filter can use its index;
        // each text is prepared once per connection and cached.
        let mut sql = String::from(concat!("SELECT ", run_summary_columns!(), " FROM runs"));
        let mut conditions: Vec<String> = Vec::new();
        let mut param = 0;
        let mut next = || {
            param += 1;
            format!("${param}")
        };
        if filter.status.is_some() {
            conditions.push(format!("status = {}", next()));
        }
        if filter.trigger.is_some() {
            conditions.push(format!("trigger_source = {}", next()));
        }
        if filter.commit.is_some() {
            let p = next();
            conditions.push(format!("substr(commit_sha, 1, length({p})) = {p}"));
        }
        if filter.before.is_some() {
            conditions.push(format!("id < {}", next()));
        }
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        // The limit is written into the text, not bound: SQLite reads a bound LIMIT while
        // planning and then prepares the statement again whenever it is re-bound. It is a
        // number computed here, never caller text.
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", u64::from(limit) + 1));
        let mut runs = on_pool!(self, pool => {
            // Built above from fixed fragments only; every value is bound.
            let mut query = sqlx::query_as::<_, RunSummary>(sqlx::AssertSqlSafe(sql.as_str()));
            if let Some(status) = filter.status {
                query = query.bind(status);
            }
            if let Some(trigger) = filter.trigger {
                query = query.bind(trigger);
            }
            if let Some(commit) = filter.commit.as_deref() {
                query = query.bind(commit);
            }
            if let Some(before) = filter.before {
                query = query.bind(before);
            }
            query
                .fetch_all(pool)
                .await
                .map_err(db_err("list runs"))?
        });
        let next_cursor = if runs.len() > limit as usize {
            runs.truncate(limit as usize);
            runs.last().map(|r| r.id)
        } else {
            None
        };
        Ok(RunPage { runs, next_cursor })
    }

    /// How many runs are in each state (for metrics); states without runs are omitted.
    pub async fn count_runs_by_status(&self) -> Result<Vec<(RunStatus, i64)>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, (RunStatus, i64)>(
                "SELECT status, COUNT(*) FROM runs GROUP BY status ORDER BY status",
            )
            .fetch_all(pool)
            .await
            .map_err(db_err("count runs by status"))
        })
    }

    /// Whether any run of `scope` was ever applied (ended `succeeded` or
    /// `partially_failed`): after that, the policies held in the database govern new plans.
    pub async fn has_applied_run(&self, scope: &str) -> Result<bool> {
        on_pool!(self, pool => {
            let row: Option<(i64,)> = sqlx::query_as(
                "SELECT id FROM runs WHERE scope = $1 \
                 AND status IN ('succeeded', 'partially_failed') LIMIT 1",
            )
            .bind(scope)
            .fetch_optional(pool)
            .await
            .map_err(db_err("find an applied run"))?;
            Ok(row.is_some())
        })
    }

    /// Runs currently in `status`, oldest first (e.g. `applying` after a restart).
    pub async fn runs_in_status(&self, status: RunStatus) -> Result<Vec<RunSummary>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, RunSummary>(concat!(
                "SELECT ", run_summary_columns!(), " FROM runs WHERE status = $1 ORDER BY id"
            ))
            .bind(status)
            .fetch_all(pool)
            .await
            .map_err(db_err("list runs by status"))
        })
    }

    /// Moves a run from `from` to `to` if and only if it is still in `from`; returns whether
    /// the change took effect. This is the only way a run changes state, so two replicas or
    /// two clicks can never both move it (exactly one `approved -> applying` wins).
    /// `error` is stored when given. The change is audited in the same transaction.
    pub async fn transition_run(
        &self,
        id: i64,
        from: RunStatus,
        to: RunStatus,
        actor: &str,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.transition_run_fenced(id, from, to, actor, error, None, now)
            .await
    }

    /// [`Store::transition_run`] for a leader: with a fence, the change takes effect only while
    /// the fence holds its lease, and [`StoreError::Fenced`] says when it no longer does.
    #[allow(clippy::too_many_arguments)]
    pub async fn transition_run_fenced(
        &self,
        id: i64,
        from: RunStatus,
        to: RunStatus,
        actor: &str,
        error: Option<&str>,
        fence: Option<&Fence>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        if !from.can_transition_to(to) {
            return Err(StoreError::IllegalRunTransition { from, to });
        }
        let now = db_time(now);
        let approved_at = (to == RunStatus::Approved).then_some(now);
        let started_at = (to == RunStatus::Applying).then_some(now);
        let finished_at = to.is_terminal().then_some(now);
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err("begin run transition"))?;
            let done = sqlx::query(
                "UPDATE runs SET status = $3, updated_at = $4, error = COALESCE($5, error), \
                 approved_at = COALESCE($6, approved_at), \
                 started_at = COALESCE(started_at, $7), \
                 finished_at = COALESCE($8, finished_at) \
                 WHERE id = $1 AND status = $2 AND ($9 IS NULL OR EXISTS (\
                     SELECT 1 FROM leader_leases WHERE name = $9 AND holder = $10 \
                     AND epoch = $11 AND expires_at > $4))",
            )
            .bind(id)
            .bind(from)
            .bind(to)
            .bind(now)
            .bind(error)
            .bind(approved_at)
            .bind(started_at)
            .bind(finished_at)
            .bind(fence.map(|f| f.name.as_str()))
            .bind(fence.map(|f| f.holder.as_str()))
            .bind(fence.map(|f| f.epoch))
                .execute(&mut *tx)
                .await
                .map_err(db_err("update run status"))?
                .rows_affected()
                == 1;
            if !done {
                drop(tx);
                self.check_fence(fence, now).await?;
                return Ok(false);
            }
            tx.append_audit(
                &status_change_entry(actor, id, from, to, json!({"error": error})),
                now,
            )
            .await?;
            tx.commit().await.map_err(db_err("commit run transition"))?;
            self.events().publish(Event::Run { run_id: id, status: to.as_str().to_owned() });
            Ok(true)
        })
    }

    /// Claims an approved run for applying (`approved -> applying`); exactly one caller wins.
    /// With a fence, only while it holds its lease.
    pub async fn claim_run(
        &self,
        id: i64,
        actor: &str,
        fence: Option<&Fence>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.transition_run_fenced(
            id,
            RunStatus::Approved,
            RunStatus::Applying,
            actor,
            None,
            fence,
            now,
        )
        .await
    }

    /// `Ok` when there is no fence or it still holds its lease at `now`.
    async fn check_fence(&self, fence: Option<&Fence>, now: DateTime<Utc>) -> Result<()> {
        match fence {
            Some(f) if !self.fence_holds(f, now).await? => Err(StoreError::Fenced {
                lease: f.name.clone(),
                epoch: f.epoch,
            }),
            _ => Ok(()),
        }
    }

    /// Marks every waiting (`awaiting_approval` or `approved`, not yet applying) run of `scope`
    /// other than `by` as superseded by `by`. Returns the superseded run ids.
    pub async fn supersede_waiting_runs(
        &self,
        scope: &str,
        by: i64,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>> {
        let now = db_time(now);
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err("begin supersede runs"))?;
            let rows: Vec<(i64, RunStatus)> = sqlx::query_as(
                "SELECT id, status FROM runs WHERE scope = $1 AND id <> $2 \
                 AND status IN ('awaiting_approval', 'approved') ORDER BY id",
            )
            .bind(scope)
            .bind(by)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err("find waiting runs"))?;
            let mut superseded = Vec::with_capacity(rows.len());
            for (id, from) in rows {
                let done = sqlx::query(
                    "UPDATE runs SET status = 'superseded', superseded_by = $3, \
                     updated_at = $4, finished_at = $4 WHERE id = $1 AND status = $2",
                )
                .bind(id)
                .bind(from)
                .bind(by)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_err("supersede run"))?
                .rows_affected()
                    == 1;
                if done {
                    tx.append_audit(
                        &status_change_entry(
                            actor,
                            id,
                            from,
                            RunStatus::Superseded,
                            json!({"superseded_by": by}),
                        ),
                        now,
                    )
                    .await?;
                    superseded.push(id);
                }
            }
            tx.commit().await.map_err(db_err("commit supersede runs"))?;
            for id in &superseded {
                self.events().publish(Event::Run {
                    run_id: *id,
                    status: RunStatus::Superseded.as_str().to_owned(),
                });
            }
            Ok(superseded)
        })
    }

    /// Expires waiting runs whose `expires_at` passed; returns their ids.
    pub async fn expire_runs(&self, actor: &str, now: DateTime<Utc>) -> Result<Vec<i64>> {
        let now = db_time(now);
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err("begin expire runs"))?;
            let rows: Vec<(i64, RunStatus)> = sqlx::query_as(
                "SELECT id, status FROM runs WHERE status IN ('awaiting_approval', 'approved') \
                 AND expires_at IS NOT NULL AND expires_at <= $1 ORDER BY id",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err("find expired runs"))?;
            let mut expired = Vec::with_capacity(rows.len());
            for (id, from) in rows {
                let done = sqlx::query(
                    "UPDATE runs SET status = 'expired', updated_at = $3, finished_at = $3 \
                     WHERE id = $1 AND status = $2",
                )
                .bind(id)
                .bind(from)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_err("expire run"))?
                .rows_affected()
                    == 1;
                if done {
                    tx.append_audit(
                        &status_change_entry(actor, id, from, RunStatus::Expired, Value::Null),
                        now,
                    )
                    .await?;
                    expired.push(id);
                }
            }
            tx.commit().await.map_err(db_err("commit expire runs"))?;
            for id in &expired {
                self.events().publish(Event::Run {
                    run_id: *id,
                    status: RunStatus::Expired.as_str().to_owned(),
                });
            }
            Ok(expired)
        })
    }

    /// Records `user`'s decision on a run and, in the same transaction, moves the run to
    /// `approved` once enough approvals for the current plan hash are in, or to `rejected` on
    /// a rejection. Refuses a run that no longer waits ([`StoreError::RunNotInState`]), a
    /// different plan hash ([`StoreError::StalePlanHash`]) and a second decision by the same
    /// user ([`StoreError::AlreadyDecided`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_decision(
        &self,
        run_id: i64,
        user: &str,
        plan_hash: &str,
        decision: Decision,
        comment: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<ApprovalOutcome> {
        let now = db_time(now);
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err("begin record decision"))?;
            // On PostgreSQL the row lock serializes concurrent approvers of one run; on SQLite
            // the IMMEDIATE transaction already holds the database write lock.
            let row: Option<(RunStatus, String, i64)> = sqlx::query_as(pool.pick(
                "SELECT status, plan_hash, required_approvals FROM runs WHERE id = $1",
                "SELECT status, plan_hash, required_approvals FROM runs WHERE id = $1 FOR UPDATE",
            ))
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("lock run"))?;
            let (status, current_hash, required) =
                row.ok_or_else(|| StoreError::not_found("run", run_id))?;
            if status != RunStatus::AwaitingApproval {
                return Err(StoreError::RunNotInState { run_id, status, op: "a decision" });
            }
            if current_hash != plan_hash {
                return Err(StoreError::StalePlanHash {
                    run_id,
                    current: current_hash,
                    given: plan_hash.to_owned(),
                });
            }
            let already: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM approvals WHERE run_id = $1 AND user_name = $2",
            )
            .bind(run_id)
            .bind(user)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("find earlier decision"))?;
            if already.is_some() {
                return Err(StoreError::AlreadyDecided { run_id, user: user.to_owned() });
            }
            sqlx::query(
                "INSERT INTO approvals (run_id, user_name, plan_hash, decision, comment, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(run_id)
            .bind(user)
            .bind(plan_hash)
            .bind(decision)
            .bind(comment)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                let err = StoreError::from_sqlx("insert approval", e);
                if err.is_unique_violation() {
                    StoreError::AlreadyDecided { run_id, user: user.to_owned() }
                } else {
                    err
                }
            })?;
            tx.append_audit(
                &NewAuditEntry {
                    actor: user.to_owned(),
                    event: format!("run.{}", match decision {
                        Decision::Approve => "approved_by",
                        Decision::Reject => "rejected_by",
                    }),
                    subject: format!("run/{run_id}"),
                    details: json!({"plan_hash": plan_hash, "comment": comment}),
                },
                now,
            )
            .await?;
            let approvals: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM approvals WHERE run_id = $1 AND plan_hash = $2 \
                 AND decision = 'approve'",
            )
            .bind(run_id)
            .bind(plan_hash)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err("count approvals"))?;
            let next = match decision {
                Decision::Reject => Some(RunStatus::Rejected),
                Decision::Approve if approvals >= required => Some(RunStatus::Approved),
                Decision::Approve => None,
            };
            let mut status = RunStatus::AwaitingApproval;
            if let Some(to) = next {
                let approved_at = (to == RunStatus::Approved).then_some(now);
                let finished_at = to.is_terminal().then_some(now);
                let done = sqlx::query(
                    "UPDATE runs SET status = $3, updated_at = $4, \
                     approved_at = COALESCE($5, approved_at), \
                     finished_at = COALESCE($6, finished_at) \
                     WHERE id = $1 AND status = $2",
                )
                .bind(run_id)
                .bind(RunStatus::AwaitingApproval)
                .bind(to)
                .bind(now)
                .bind(approved_at)
                .bind(finished_at)
                .execute(&mut *tx)
                .await
                .map_err(db_err("update run after decision"))?
                .rows_affected()
                    == 1;
                if done {
                    tx.append_audit(
                        &status_change_entry(
                            user,
                            run_id,
                            RunStatus::AwaitingApproval,
                            to,
                            json!({"approvals": approvals, "required": required}),
                        ),
                        now,
                    )
                    .await?;
                    status = to;
                }
            }
            tx.commit().await.map_err(db_err("commit decision"))?;
            self.events().publish(Event::Approval {
                run_id,
                user: user.to_owned(),
                decision: decision.as_str().to_owned(),
            });
            if status != RunStatus::AwaitingApproval {
                self.events().publish(Event::Run { run_id, status: status.as_str().to_owned() });
            }
            Ok(ApprovalOutcome { status, approvals, required })
        })
    }

    /// The decisions recorded on a run, oldest first.
    pub async fn list_approvals(&self, run_id: i64) -> Result<Vec<ApprovalRecord>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, ApprovalRecord>(
                "SELECT id, run_id, user_name, plan_hash, decision, comment, created_at \
                 FROM approvals WHERE run_id = $1 ORDER BY id",
            )
            .bind(run_id)
            .fetch_all(pool)
            .await
            .map_err(db_err("list approvals"))
        })
    }

    /// How many actions there are per verb and status (for metrics), sorted.
    pub async fn count_actions_by_verb_and_status(
        &self,
    ) -> Result<Vec<(String, ActionStatus, i64)>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, (String, ActionStatus, i64)>(
                "SELECT verb, status, COUNT(*) FROM actions GROUP BY verb, status \
                 ORDER BY verb, status",
            )
            .fetch_all(pool)
            .await
            .map_err(db_err("count actions by verb and status"))
        })
    }

    /// The actions of a run in plan order.
    pub async fn list_actions(&self, run_id: i64) -> Result<Vec<StoredAction>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, StoredAction>(concat!(
                "SELECT ", action_columns!(), " FROM actions WHERE run_id = $1 ORDER BY seq"
            ))
            .bind(run_id)
            .fetch_all(pool)
            .await
            .map_err(db_err("list actions"))
        })
    }

    /// Reads one action.
    pub async fn get_action(&self, id: i64) -> Result<StoredAction> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, StoredAction>(concat!(
                "SELECT ", action_columns!(), " FROM actions WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(db_err("get action"))?
            .ok_or_else(|| StoreError::not_found("action", id))
        })
    }

    /// Moves an action from `from` to `to` if it is still in `from`; returns whether it took
    /// effect. Entering `running` counts an attempt; a terminal state sets `finished_at`.
    /// With a fence, the change takes effect only while the fence holds its lease, and
    /// [`StoreError::Fenced`] says when it no longer does.
    pub async fn transition_action(
        &self,
        id: i64,
        from: ActionStatus,
        to: ActionStatus,
        update: &ActionUpdate,
        fence: Option<&Fence>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        if !from.can_transition_to(to) {
            return Err(StoreError::IllegalActionTransition { from, to });
        }
        let now_utc = now;
        let now = db_time(now);
        let attempt = i64::from(to == ActionStatus::Running);
        let started_at = (to == ActionStatus::Running).then_some(now);
        let finished_at = to.is_terminal().then_some(now);
        let run_id: Option<i64> = on_pool!(self, pool => {
            sqlx::query_scalar(
                "UPDATE actions SET status = $3, updated_at = $4, attempts = attempts + $5, \
                 started_at = COALESCE(started_at, $6), finished_at = COALESCE($7, finished_at), \
                 last_error = COALESCE($8, last_error), \
                 external_ref = COALESCE($9, external_ref) \
                 WHERE id = $1 AND status = $2 AND ($10 IS NULL OR EXISTS (\
                     SELECT 1 FROM leader_leases WHERE name = $10 AND holder = $11 \
                     AND epoch = $12 AND expires_at > $4)) \
                 RETURNING run_id",
            )
            .bind(id)
            .bind(from)
            .bind(to)
            .bind(now)
            .bind(attempt)
            .bind(started_at)
            .bind(finished_at)
            .bind(update.error.as_deref())
            .bind(update.external_ref.as_deref())
            .bind(fence.map(|f| f.name.as_str()))
            .bind(fence.map(|f| f.holder.as_str()))
            .bind(fence.map(|f| f.epoch))
                .fetch_optional(pool)
                .await
                .map_err(db_err("update action status"))?
        });
        let Some(run_id) = run_id else {
            self.check_fence(fence, now_utc).await?;
            return Ok(false);
        };
        self.events().publish(Event::Action {
            run_id,
            action_id: id,
            status: to.as_str().to_owned(),
        });
        Ok(true)
    }

    /// Records the outside system's reference of a running action (e.g. a Proxmox UPID) so a
    /// restarted controller, and the operator, can find the task that was doing its work.
    pub async fn set_action_external_ref(
        &self,
        id: i64,
        external_ref: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let now = db_time(now);
        on_pool!(self, pool => {
            Ok(sqlx::query(
                "UPDATE actions SET external_ref = $2, updated_at = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(external_ref)
            .bind(now)
            .execute(pool)
            .await
            .map_err(db_err("set action external ref"))?
            .rows_affected()
                == 1)
        })
    }
}
