//! `GET /api/v1/status`: the controller's status (commit, last fetch and its error, leadership,
//! the last reconcile's outcome, what it could not observe, and counts of resources per sync
//! state). Reads the shared
//! [`crate::control::Control`]; never touches the outside world.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use crate::model::{Role, Scope};

pub(super) fn routes(_state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_status))
}

/// The controller's status. `resources` counts declared resources per sync state; the list
/// itself is `GET /api/v1/resources`.
#[utoipa::path(get, path = "/api/v1/status", tag = "runs",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "the controller's status", body = Object),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn get_status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_any(Role::Viewer, Scope::Read)?;
    let status = state.control().status();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in &status.resources {
        let key = serde_json::to_value(r.sync)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *counts.entry(key).or_default() += 1;
    }
    Ok(Json(json!({
        "started_at": status.started_at,
        "scope": status.scope,
        "leader": status.leader,
        "commit": status.commit,
        "last_fetch_at": status.last_fetch_at,
        "last_fetch_error": status.last_fetch_error,
        "last_reconcile_at": status.last_reconcile_at,
        "last_outcome": status.last_outcome,
        "last_reconcile_failed": status.last_reconcile_failed,
        "unobserved": status.unobserved,
        "resources": counts,
    })))
}
