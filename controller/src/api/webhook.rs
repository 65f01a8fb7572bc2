//! `POST /api/v1/webhooks/github`: GitHub deliveries. The `X-Hub-Signature-256` HMAC of the raw
//! body is checked (constant time) before anything is parsed; a missing or wrong signature is
//! 401 and triggers nothing. A push to `refs/heads/{git_ref}` asks the loop for a reconcile
//! (`Trigger::Webhook`); `ping` answers 200; other events and pushes elsewhere answer 204.
//! Without a configured webhook secret the route answers 404: an unsigned hook is never
//! accepted. The body size limit and a rate limit apply.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mycopod_adapters::github::{WebhookEvent, parse_webhook};
use mycopod_adapters::signing::verify_sha256;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody, ErrorCode};
use super::{AppState, limits};
use crate::control::TriggerRequest;
use crate::model::Trigger;

pub(super) fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    limits::limited(
        OpenApiRouter::new().routes(routes!(github)),
        state.settings().rate_limits.webhook,
    )
}

/// The answer to a ping or a push that triggered a reconcile.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAnswer {
    /// `pong` or `reconcile_requested`.
    pub status: &'static str,
}

/// Receives GitHub webhook deliveries (push and ping).
#[utoipa::path(post, path = "/api/v1/webhooks/github", tag = "webhooks",
    params(
        ("X-GitHub-Event" = String, Header, description = "push, ping, ..."),
        ("X-Hub-Signature-256" = String, Header, description = "sha256=HMAC of the body")),
    request_body(content = Object, description = "GitHub's payload"),
    responses(
        (status = 200, description = "ping answered, or a push to the tracked branch triggered a reconcile", body = WebhookAnswer),
        (status = 204, description = "ignored (another event or branch)"),
        (status = 400, description = "unreadable payload", body = ErrorBody),
        (status = 401, description = "missing or wrong signature", body = ErrorBody),
        (status = 404, description = "no webhook secret configured", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn github(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Some(secret) = state.settings().webhook_secret.as_deref() else {
        return Err(ApiError::not_found(
            "the GitHub webhook is not configured (set MYCOPOD_GITHUB_WEBHOOK_SECRET)",
        ));
    };
    let body = body?;
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !verify_sha256(secret, &body, signature) {
        tracing::warn!("github webhook with a missing or wrong signature refused");
        return Err(ApiError::new(
            ErrorCode::BadSignature,
            "missing or wrong X-Hub-Signature-256",
        ));
    }
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let parsed = parse_webhook(event, &body).map_err(|e| {
        ApiError::new(
            ErrorCode::BadPayload,
            format!("unreadable {event} payload: {e}"),
        )
    })?;
    match parsed {
        WebhookEvent::Ping => Ok(Json(WebhookAnswer { status: "pong" }).into_response()),
        push if push.moves_branch(&state.settings().git_ref) => {
            let pusher = match &push {
                WebhookEvent::Push { pusher, .. } => pusher.clone(),
                _ => None,
            };
            let sent = state.control().trigger(TriggerRequest {
                trigger: Trigger::Webhook,
                requested_by: None,
                pusher,
            });
            if !sent {
                return Err(ApiError::new(
                    ErrorCode::LoopUnavailable,
                    "the reconcile loop is not running",
                ));
            }
            tracing::info!("github push to the tracked branch: reconcile requested");
            Ok(Json(WebhookAnswer {
                status: "reconcile_requested",
            })
            .into_response())
        }
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}
