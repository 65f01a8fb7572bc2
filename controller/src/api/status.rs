//! `GET /api/v1/status`: the controller's status as the reconcile loop last recorded it in
//! the [`Control`](crate::control::Control) handle (scope, leadership, last fetch and its
//! error, commit, last reconcile and its outcome, every declared resource with its sync
//! state). The web page's overview reads it.
//!
//! It only reads the handle: it never triggers a reconcile or touches the store.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use crate::control::ControllerStatus;
use crate::model::{Role, Scope};

pub(super) fn routes(_state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(status))
}

/// The controller's status.
#[utoipa::path(get, path = "/api/v1/status", tag = "runs",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "`started_at`, `scope`, `leader`, `last_fetch_at`, \
            `last_fetch_error`, `commit`, `last_reconcile_at`, `last_outcome`, \
            `last_reconcile_failed`, `resources` (as `GET /api/v1/resources`)",
            body = Object),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ControllerStatus>, ApiError> {
    caller.require_any(Role::Viewer, Scope::Read)?;
    Ok(Json(state.control().status()))
}
