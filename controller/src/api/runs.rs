//! Runs and what drives them: `GET /api/v1/runs` (filters, cursor), `GET /runs/{id}` (plan
//! with field diffs, actions, approvals), `POST /runs/{id}/approve` and `/reject`,
//! `POST /reconcile`, `GET /resources`.
//!
//! Approvals enforce the requirement stored with the run (`stored_requirement`): the
//! approver's role must be among its approver roles and, unless it allows self-approval, the
//! user who triggered the run may not approve it. Runs without a stored requirement take the
//! defaults (operator or admin, no self-approval). Recording the decision, the hash check and
//! "one decision per user" are the store's, in one transaction. This module never applies
//! anything: it records decisions and asks the loop for a reconcile.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::{Caller, CallerKind};
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::session::Body;
use crate::control::TriggerRequest;
use crate::model::{Decision, Role, RunStatus, Scope, Trigger};
use crate::policy::{
    DecisionRequest, Refusal, Requirement, check_decision, run_authors, stored_requirement,
};
use crate::store::{RunFilter, RunPage};

pub(super) fn routes(_state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(approve_run))
        .routes(routes!(reject_run))
        .routes(routes!(reconcile))
        .routes(routes!(list_resources))
}

/// `GET /runs` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// Only runs in this state (`awaiting_approval`, `succeeded`, ...).
    pub status: Option<String>,
    /// Only runs started by this trigger (`poll`, `webhook`, `manual`, `drift`, `cli`).
    pub trigger: Option<String>,
    /// Only runs of this commit (a full sha or a prefix).
    pub commit: Option<String>,
    /// Runs with an id below this (the previous page's `next_cursor`).
    pub before: Option<i64>,
    /// Page size (default 50, at most 1000).
    pub limit: Option<u32>,
}

/// One page of runs (see `RunSummary` in the store for the fields).
#[derive(Debug, Serialize, ToSchema)]
pub struct RunPageBody {
    /// Runs, newest first, without their plans.
    #[schema(value_type = Vec<Object>)]
    pub runs: Vec<Value>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_cursor: Option<i64>,
}

/// Lists runs, newest first.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs",
    security(("bearer" = []), ("api_key" = [])),
    params(RunsQuery),
    responses(
        (status = 200, description = "one page", body = RunPageBody),
        (status = 400, description = "bad filter", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<RunPage>, ApiError> {
    caller.require_any(Role::Viewer, Scope::Read)?;
    let Query(query) = query?;
    let bad = |field: &str, e: &dyn std::fmt::Display| {
        ApiError::new(ErrorCode::BadQuery, e.to_string())
            .with_details(json!({"fields": {field: e.to_string()}}))
    };
    let filter = RunFilter {
        status: query
            .status
            .as_deref()
            .map(str::parse::<RunStatus>)
            .transpose()
            .map_err(|e| bad("status", &e))?,
        trigger: query
            .trigger
            .as_deref()
            .map(str::parse::<Trigger>)
            .transpose()
            .map_err(|e| bad("trigger", &e))?,
        commit: query.commit.filter(|c| !c.is_empty()),
        before: query.before,
        limit: query.limit.unwrap_or(0),
    };
    // Serialized straight to the response body (no intermediate `Value`).
    Ok(Json(state.store().list_runs(&filter).await?))
}

/// A run with its plan, actions and decisions.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    /// The run, its plan (with field diffs) and plan hash.
    #[schema(value_type = Object)]
    pub run: Value,
    /// Its actions in plan order, with status, attempts and last error.
    #[schema(value_type = Vec<Object>)]
    pub actions: Vec<Value>,
    /// Approvals and rejections, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub approvals: Vec<Value>,
    /// For an approved run outside its policies' time windows: `{open: false, opens_at,
    /// message}`; null otherwise.
    #[schema(value_type = Option<Object>)]
    pub window: Option<Value>,
}

/// One run in detail.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = i64, Path, description = "the run id")),
    responses(
        (status = 200, description = "the run", body = RunDetail),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn get_run(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_any(Role::Viewer, Scope::Read)?;
    let Path(id) = id?;
    let run = state.store().get_run(id).await?;
    let actions = state.store().list_actions(id).await?;
    let approvals = state.store().list_approvals(id).await?;
    // An approved run applies only inside its policies' windows; say when it will.
    let window = (run.status == RunStatus::Approved)
        .then(|| requirement_of(&run.plan))
        .filter(|r| !r.window_open(state.now()))
        .map(|r| {
            let opens_at = r.next_open(state.now());
            json!({
                "open": false,
                "opens_at": opens_at,
                "message": format!(
                    "approved, {}",
                    crate::reconcile::driver::window_text(opens_at)
                ),
            })
        });
    Ok(Json(
        json!({"run": run, "actions": actions, "approvals": approvals, "window": window}),
    ))
}

/// `POST /runs/{id}/approve` and `/reject` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// The plan hash the decision is about (from `GET /runs/{id}`); another hash is a 409.
    pub plan_hash: String,
    /// A comment for the audit log.
    pub comment: Option<String>,
}

/// The run's state after a decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionOutcome {
    /// The run.
    pub run_id: i64,
    /// Its status now (`approved` once enough approvals are in, `rejected`, or still
    /// `awaiting_approval`).
    pub status: String,
    /// Approvals counted for this plan.
    pub approvals: i64,
    /// Approvals needed.
    pub required: i64,
}

/// The requirement a decision on this run must meet.
fn requirement_of(plan: &Value) -> Requirement {
    stored_requirement(plan).unwrap_or_else(|| {
        let mut r = Requirement::automatic();
        r.approvals = 1;
        r
    })
}

fn spec_role(role: Role) -> mycopod_specs::kinds::Role {
    use mycopod_specs::kinds::Role as R;
    match role {
        Role::Viewer => R::Viewer,
        Role::Operator => R::Operator,
        Role::Admin => R::Admin,
    }
}

/// The caller's role if it may approve or reject at all: a user, operator or above.
fn may_decide(caller: &Caller) -> Result<Role, ApiError> {
    let CallerKind::User { role, .. } = caller.kind else {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "API keys cannot approve or reject runs; sign in as a user",
        ));
    };
    caller.require_role(Role::Operator)?;
    Ok(role)
}

async fn decide(
    state: &AppState,
    caller: &Caller,
    id: i64,
    body: DecisionBody,
    decision: Decision,
) -> Result<Json<DecisionOutcome>, ApiError> {
    let role = may_decide(caller)?;
    let run = state.store().get_run(id).await?;
    if run.status != RunStatus::AwaitingApproval {
        return Err(ApiError::new(
            ErrorCode::RunNotWaiting,
            format!("run {id} is {}, not awaiting approval", run.status),
        )
        .with_details(json!({"status": run.status})));
    }
    let now = state.now();
    if decision == Decision::Approve {
        let requirement = requirement_of(&run.plan);
        let identities = state.store().user_git_emails(&caller.name).await?;
        let request = DecisionRequest {
            user: &caller.name,
            role: spec_role(role),
            plan_hash: &body.plan_hash,
            identities: &identities,
        };
        if let Err(refusal) = check_decision(
            &requirement,
            &run.plan_hash,
            run.requested_by.as_deref(),
            &run_authors(&run.plan),
            run.created_at,
            now,
            &request,
        ) {
            return Err(match &refusal {
                Refusal::StaleHash { current, given } => {
                    ApiError::new(ErrorCode::StalePlanHash, refusal.to_string())
                        .with_details(json!({"current": current, "given": given}))
                }
                Refusal::Expired { at } => {
                    ApiError::new(ErrorCode::RunExpired, refusal.to_string())
                        .with_details(json!({"expired_at": at}))
                }
                Refusal::RoleNotAllowed { .. } => {
                    ApiError::new(ErrorCode::RoleNotAllowed, refusal.to_string())
                }
                Refusal::SelfApproval { .. } | Refusal::OwnCommit { .. } => {
                    ApiError::new(ErrorCode::SelfApprovalForbidden, refusal.to_string())
                }
            });
        }
    }
    let outcome = state
        .store()
        .record_decision(
            id,
            &caller.name,
            &body.plan_hash,
            decision,
            body.comment.as_deref(),
            now,
        )
        .await?;
    if outcome.status == RunStatus::Approved {
        // The loop applies approved runs; ask it to look now rather than at its next tick.
        // The approver did not request any run: approving never makes anyone a requester.
        state.control().trigger(TriggerRequest {
            trigger: Trigger::Manual,
            requested_by: None,
            pusher: None,
        });
    }
    Ok(Json(DecisionOutcome {
        run_id: id,
        status: outcome.status.as_str().to_owned(),
        approvals: outcome.approvals,
        required: outcome.required,
    }))
}

/// Approves a waiting run's plan.
#[utoipa::path(post, path = "/api/v1/runs/{id}/approve", tag = "runs",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "the run id")),
    request_body = DecisionBody,
    responses(
        (status = 200, description = "recorded", body = DecisionOutcome),
        (status = 403, description = "role not allowed, self-approval, or an API key", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "stale plan hash, already decided, run not waiting or expired", body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn approve_run(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Body<DecisionBody>, ApiError>,
) -> Result<Json<DecisionOutcome>, ApiError> {
    may_decide(&caller)?;
    let (Path(id), Body(body)) = (id?, body?);
    decide(&state, &caller, id, body, Decision::Approve).await
}

/// Rejects a waiting run.
#[utoipa::path(post, path = "/api/v1/runs/{id}/reject", tag = "runs",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "the run id")),
    request_body = DecisionBody,
    responses(
        (status = 200, description = "recorded; the run is rejected", body = DecisionOutcome),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "stale plan hash, already decided or run not waiting", body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn reject_run(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Body<DecisionBody>, ApiError>,
) -> Result<Json<DecisionOutcome>, ApiError> {
    may_decide(&caller)?;
    let (Path(id), Body(body)) = (id?, body?);
    decide(&state, &caller, id, body, Decision::Reject).await
}

/// `POST /reconcile` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Always `accepted`: the loop reconciles as soon as it can; watch `/runs` or `/events`.
    pub status: &'static str,
}

/// Starts a reconcile now.
#[utoipa::path(post, path = "/api/v1/reconcile", tag = "runs",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "the loop was asked to reconcile", body = Accepted),
        (status = 503, description = "no reconcile loop is running", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn reconcile(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require_any(Role::Operator, Scope::Trigger)?;
    let sent = state.control().trigger(TriggerRequest {
        trigger: Trigger::Manual,
        requested_by: Some(caller.name.clone()),
        pusher: None,
    });
    if !sent {
        return Err(ApiError::new(
            ErrorCode::LoopUnavailable,
            "the reconcile loop is not running",
        ));
    }
    tracing::info!(by = %caller.name, "reconcile requested");
    Ok((StatusCode::ACCEPTED, Json(Accepted { status: "accepted" })).into_response())
}

/// Every declared resource with its sync state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResourcesBody {
    /// The commit the resources were declared at, if one was loaded.
    pub commit: Option<String>,
    /// Resources sorted by kind and name: `kind`, `name`, `sync` (`in_sync`, `out_of_sync`,
    /// `restart_required`, `failed`, `drift`, `not_translated`, `unknown`), `details`,
    /// `changed_at`.
    #[schema(value_type = Vec<Object>)]
    pub resources: Vec<Value>,
}

/// Lists every declared resource with its sync state.
#[utoipa::path(get, path = "/api/v1/resources", tag = "runs",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "the resources", body = ResourcesBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_resources(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_any(Role::Viewer, Scope::Read)?;
    let status = state.control().status();
    Ok(Json(
        json!({"commit": status.commit, "resources": status.resources}),
    ))
}
