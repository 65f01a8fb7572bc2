//! Operational endpoints outside `/api/v1`: `/healthz` (the process answers), `/readyz` (the
//! database answers and the last source fetch is recent), `/metrics` (Prometheus text) and
//! `/openapi.json`; plus the request counter middleware and the process's Prometheus recorder.
//!
//! These routes need no credentials (probes and scrapers do not sign in) and reveal no
//! secrets: counts, ages and a generic reason, never an error text from a driver.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody, ErrorCode};
use crate::model::{ActionStatus, RunStatus};

/// The reconcile duration buckets, in seconds.
const RECONCILE_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The handle of the process's Prometheus recorder, installed as the global `metrics`
/// recorder on first use. The `metrics` macros only reach a global recorder, so this is the
/// one process-wide value of the API; every `AppState` renders through the same handle.
pub(super) fn prometheus_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = match builder.set_buckets_for_metric(
                Matcher::Full("mycopod_reconcile_duration_seconds".to_owned()),
                &RECONCILE_BUCKETS,
            ) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "histogram buckets refused; using summaries");
                    PrometheusBuilder::new()
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; /metrics shows only ours"
                );
            }
            handle
        })
        .clone()
}

/// Counts every answered request by method and status (`mycopod_http_requests_total`).
pub(super) async fn count_requests(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    metrics::counter!(
        "mycopod_http_requests_total",
        "method" => method,
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

pub(super) fn routes(_state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
        .routes(routes!(openapi_json))
}

/// `/healthz` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// The process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "the process is up", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `/readyz` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// Whether the database answered a ping.
    pub database: bool,
    /// Seconds since the last successful fetch of the declarations (or since start when
    /// none happened yet); absent when no repository is configured.
    pub fetch_age_seconds: Option<i64>,
    /// The bound the fetch age must stay under.
    pub max_fetch_age_seconds: i64,
    /// What is wrong, when not ready.
    pub reasons: Vec<String>,
}

/// Ready to serve: the database answers and the declarations were fetched recently.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "ready", body = Readiness),
        (status = 503, description = "not ready", body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> Response {
    let mut reasons = Vec::new();
    let database = match state.store().ping().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database ping failed");
            reasons.push("database unreachable".to_owned());
            false
        }
    };
    let status = state.control().status();
    let max = state.settings().max_fetch_age;
    let fetch_age_seconds = status.scope.as_ref().map(|_| {
        let since = status.last_fetch_at.unwrap_or(status.started_at);
        (state.now() - since).num_seconds()
    });
    if let Some(age) = fetch_age_seconds
        && age > max.num_seconds()
    {
        reasons.push(match status.last_fetch_at {
            Some(_) => format!("last successful fetch was {age}s ago"),
            None => format!("no successful fetch in the {age}s since start"),
        });
    }
    let ready = reasons.is_empty();
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        database,
        fetch_age_seconds,
        max_fetch_age_seconds: max.num_seconds(),
        reasons,
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// How long the database gauges of `/metrics` are reused: a scrape every second costs two
/// `GROUP BY` queries at most every five.
pub const METRICS_GAUGE_TTL: chrono::Duration = chrono::Duration::seconds(5);

/// The gauges `/metrics` counts in the database, with the time they were counted.
#[derive(Debug, Clone)]
pub struct Gauges {
    counted_at: chrono::DateTime<chrono::Utc>,
    runs: Vec<(RunStatus, i64)>,
    actions: Vec<(String, ActionStatus, i64)>,
}

/// The database gauges, counted again only once the cached ones are older than
/// [`METRICS_GAUGE_TTL`].
async fn gauges(state: &AppState) -> Result<Gauges, ApiError> {
    let now = state.now();
    let mut cached = state.gauges().lock().await;
    if let Some(g) = cached.as_ref()
        && now - g.counted_at < METRICS_GAUGE_TTL
        && g.counted_at <= now
    {
        return Ok(g.clone());
    }
    let fresh = Gauges {
        counted_at: now,
        runs: state.store().count_runs_by_status().await?,
        actions: state.store().count_actions_by_verb_and_status().await?,
    };
    *cached = Some(fresh.clone());
    Ok(fresh)
}

/// Whether the request carries the metrics bearer token (always, when none is set).
fn metrics_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(expected) = state.settings().metrics_token.as_deref() else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Compared in constant time: the token must not leak one byte at a time.
    super::session::constant_time_eq(given.as_bytes(), expected.as_bytes())
}

/// Prometheus metrics in the text exposition format; behind a bearer token when
/// `metrics_token` is set.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, description = "metrics_token is set and the request did not carry it", body = ErrorBody)))]
async fn metrics_text(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !metrics_allowed(&state, &headers) {
        return Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "send the metrics token as Authorization: Bearer TOKEN",
        ));
    }
    let Gauges { runs, actions, .. } = gauges(&state).await?;
    let mut text = String::new();
    let _ = writeln!(text, "# HELP mycopod_runs Runs by status.");
    let _ = writeln!(text, "# TYPE mycopod_runs gauge");
    for status in RunStatus::ALL {
        let n = runs
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(text, "mycopod_runs{{status=\"{status}\"}} {n}");
    }
    let _ = writeln!(text, "# HELP mycopod_actions Actions by verb and status.");
    let _ = writeln!(text, "# TYPE mycopod_actions gauge");
    for (verb, status, n) in &actions {
        let _ = writeln!(
            text,
            "mycopod_actions{{verb=\"{}\",status=\"{status}\"}} {n}",
            escape_label(verb)
        );
    }
    let waiting = runs
        .iter()
        .find(|(s, _)| *s == RunStatus::AwaitingApproval)
        .map_or(0, |(_, n)| *n);
    let _ = writeln!(
        text,
        "# HELP mycopod_approvals_waiting Runs waiting for approval."
    );
    let _ = writeln!(text, "# TYPE mycopod_approvals_waiting gauge");
    let _ = writeln!(text, "mycopod_approvals_waiting {waiting}");
    text.push_str(&state.metrics().render());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// A Prometheus label value with `\`, `"` and newlines escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The document of the served router, set by `app()` as an extension.
#[derive(Clone)]
pub(super) struct OpenApiDoc(pub Arc<utoipa::openapi::OpenApi>);

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json")))]
async fn openapi_json(
    axum::Extension(doc): axum::Extension<OpenApiDoc>,
) -> Json<utoipa::openapi::OpenApi> {
    Json(doc.0.as_ref().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_should_be_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
