//! The HTTP API of `mycopod serve` (axum): sign-in, roles and API keys, runs and approvals,
//! reconcile triggers, resources, audit, live events (SSE), the GitHub webhook, and the
//! operational endpoints (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`).
//!
//! [`app`] builds the whole router from an [`AppState`]; `serve` serves it with
//! `into_make_service_with_connect_info::<SocketAddr>()` (the rate limits key on the peer IP).
//! Every route is registered through `utoipa_axum` (`routes!`), so the router and
//! `/openapi.json` come from the same registrations and a route cannot be served undocumented
//! (a tidy test refuses a plain `.route(` in this folder).
//!
//! Adding another module's routes is one line in [`app`]: the module exposes
//! `pub fn routes(state: &AppState) -> OpenApiRouter<AppState>` with handlers annotated by
//! `#[utoipa::path]`, takes a [`Caller`] to authenticate and checks what it needs with
//! `caller.require_role(..)` / `caller.require_scope(..)`, returns `Result<_, ApiError>`, and
//! wraps routes an outsider can hammer in [`limits::limited`].
//!
//! Cookies for the web UI: `/auth/login` also sets `mycopod_refresh` (the refresh token,
//! `HttpOnly; SameSite=Strict; Path=/api/v1/auth`) and `mycopod_csrf` (readable by scripts,
//! `SameSite=Strict; Path=/`). `/auth/refresh` and `/auth/logout` take the refresh token from
//! the JSON body or from that cookie; with the cookie they require `X-CSRF-Token` equal to the
//! `mycopod_csrf` cookie (double submit), so another site cannot make the browser refresh or
//! log out. Access tokens are never put in cookies: the UI keeps them in memory and sends
//! `Authorization: Bearer`.
//!
//! Metrics (`GET /metrics`, Prometheus text), computed at scrape time from the store:
//! `mycopod_runs{status}` (gauge), `mycopod_actions{verb,status}` (gauge),
//! `mycopod_approvals_waiting` (gauge: runs in `awaiting_approval`); recorded by the reconcile
//! loop through the `metrics` macros and rendered from the process recorder:
//! `mycopod_reconcile_duration_seconds` (histogram) and
//! `mycopod_outside_requests_total{adapter,result}` (counter); recorded here:
//! `mycopod_http_requests_total{method,status}` (counter).
//!
//! This module decides nothing about plans or policies beyond enforcing the stored approval
//! requirement on a decision; it asks the reconcile loop for work through [`Control`] and never
//! runs a reconcile itself.

mod admin;
pub mod auth;
mod declarations;
pub mod error;
mod events;
pub mod limits;
mod ops;
mod runs;
pub mod session;
mod status;
mod telemetry;
pub mod ui;
mod webhook;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request};
use chrono::{DateTime, Duration, Utc};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use auth::{Caller, CallerKind};
pub use error::{ApiError, ErrorCode};
pub use limits::{RateLimit, RateLimits};
pub use session::Body;

pub use crate::clock::Clock;
use crate::config::Config;
use crate::control::Control;
use crate::store::Store;

/// The shortest JWT signing key accepted, in bytes.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Why the API cannot be configured; `serve` refuses to start with it.
#[derive(Debug, thiserror::Error)]
pub enum ApiConfigError {
    /// Neither `MYCOPOD_JWT_SECRET` nor `jwt_secret_file` is set.
    #[error(
        "no JWT signing key: set MYCOPOD_JWT_SECRET (or jwt_secret in mycopod.toml) or \
         jwt_secret_file to a random value of at least {MIN_JWT_SECRET_BYTES} bytes \
         (e.g. `openssl rand -hex 32`)"
    )]
    MissingJwtSecret,
    /// The key is shorter than [`MIN_JWT_SECRET_BYTES`].
    #[error(
        "the JWT signing key from {setting} is {len} bytes; it must be at least \
         {MIN_JWT_SECRET_BYTES} (e.g. `openssl rand -hex 32`)"
    )]
    ShortJwtSecret {
        /// `MYCOPOD_JWT_SECRET` or `jwt_secret_file (PATH)`.
        setting: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The key file could not be read.
    #[error("read the JWT signing key from jwt_secret_file {path}")]
    ReadJwtSecretFile {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Sign-in settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The HS256 keys.
    pub keys: auth::JwtKeys,
    /// Access token lifetime (15 minutes).
    pub access_ttl: Duration,
    /// Refresh token lifetime (7 days).
    pub refresh_ttl: Duration,
    /// Failed logins in a row that lock an account (5).
    pub max_failed_logins: i64,
    /// How long a locked account stays locked (15 minutes).
    pub lockout: Duration,
    /// Whether cookies carry `Secure` (on unless the listener is plain-HTTP loopback).
    pub secure_cookies: bool,
}

/// Everything the API needs besides the store and the control handle.
#[derive(Clone)]
pub struct ApiSettings {
    /// Sign-in.
    pub auth: AuthSettings,
    /// The GitHub webhook secret; without it the webhook answers 404.
    pub webhook_secret: Option<Vec<u8>>,
    /// The tracked branch (`main`): a push to `refs/heads/{git_ref}` triggers a reconcile.
    pub git_ref: String,
    /// Rate limits per group of routes.
    pub rate_limits: RateLimits,
    /// Largest accepted request body (default 1 MiB).
    pub body_limit_bytes: usize,
    /// `/readyz` fails when the last successful fetch is older than this.
    pub max_fetch_age: Duration,
    /// Origins allowed by CORS; empty (the default) means no cross-origin access.
    pub cors_allowed_origins: Vec<HeaderValue>,
    /// How far in the future a pushed reading's time may be (default 30 s).
    pub ingest_future_skew: Duration,
    /// The bearer token `GET /metrics` demands, if one is set.
    pub metrics_token: Option<String>,
    /// How often an open event stream checks that its user is still signed in (5 s).
    pub session_recheck: std::time::Duration,
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("auth", &self.auth)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<set>"),
            )
            .field("git_ref", &self.git_ref)
            .field("rate_limits", &self.rate_limits)
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("max_fetch_age", &self.max_fetch_age)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("ingest_future_skew", &self.ingest_future_skew)
            .field("session_recheck", &self.session_recheck)
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

impl ApiSettings {
    /// Settings with the defaults of the issue and `jwt_secret` as signing key; refuses a key
    /// shorter than [`MIN_JWT_SECRET_BYTES`].
    pub fn new(jwt_secret: &[u8]) -> Result<ApiSettings, ApiConfigError> {
        if jwt_secret.len() < MIN_JWT_SECRET_BYTES {
            return Err(ApiConfigError::ShortJwtSecret {
                setting: "MYCOPOD_JWT_SECRET".to_owned(),
                len: jwt_secret.len(),
            });
        }
        Ok(ApiSettings {
            auth: AuthSettings {
                keys: auth::JwtKeys::from_secret(jwt_secret),
                access_ttl: Duration::minutes(15),
                refresh_ttl: Duration::days(7),
                max_failed_logins: 5,
                lockout: Duration::minutes(15),
                secure_cookies: true,
            },
            webhook_secret: None,
            git_ref: "main".to_owned(),
            rate_limits: RateLimits::default(),
            body_limit_bytes: 1024 * 1024,
            max_fetch_age: Duration::minutes(5),
            cors_allowed_origins: Vec::new(),
            ingest_future_skew: Duration::seconds(30),
            metrics_token: None,
            session_recheck: std::time::Duration::from_secs(5),
        })
    }

    /// Settings from the configuration: the signing key from `jwt_secret`
    /// (`MYCOPOD_JWT_SECRET`) or `jwt_secret_file` (trailing whitespace trimmed), the webhook
    /// secret, the tracked ref, and a fetch age bound of three poll intervals (at least 5
    /// minutes).
    pub fn from_config(config: &Config) -> Result<ApiSettings, ApiConfigError> {
        let (secret, setting) = match (&config.jwt_secret, &config.jwt_secret_file) {
            (Some(secret), _) => (
                secret.trim().as_bytes().to_vec(),
                "MYCOPOD_JWT_SECRET".to_owned(),
            ),
            (None, Some(path)) => {
                let text =
                    std::fs::read(path).map_err(|source| ApiConfigError::ReadJwtSecretFile {
                        path: path.display().to_string(),
                        source,
                    })?;
                let trimmed = text.trim_ascii_end().to_vec();
                (trimmed, format!("jwt_secret_file ({})", path.display()))
            }
            (None, None) => return Err(ApiConfigError::MissingJwtSecret),
        };
        let mut settings = ApiSettings::new(&secret).map_err(|e| match e {
            ApiConfigError::ShortJwtSecret { len, .. } => {
                ApiConfigError::ShortJwtSecret { setting, len }
            }
            other => other,
        })?;
        settings.webhook_secret = config
            .github
            .webhook_secret
            .as_ref()
            .map(|s| s.as_bytes().to_vec());
        settings.git_ref = config.git_ref.clone();
        let poll =
            Duration::from_std(config.poll_interval.as_std()).unwrap_or(Duration::minutes(1));
        settings.max_fetch_age = (poll * 3).max(Duration::minutes(5));
        settings.metrics_token = config.metrics_token.clone();
        settings.ingest_future_skew =
            Duration::from_std(config.telemetry.ingest_future_skew.as_std())
                .unwrap_or(Duration::seconds(30));
        // Plain HTTP on loopback (the default listener, the demo) cannot use Secure cookies.
        settings.auth.secure_cookies = !config.listen.ip().is_loopback();
        Ok(settings)
    }
}

/// What every handler gets: the store, the control handle, the settings, the clock and the
/// metrics handle. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

struct StateInner {
    store: Store,
    control: Control,
    settings: ApiSettings,
    clock: Clock,
    metrics: PrometheusHandle,
    /// The database gauges of `/metrics` and when they were counted: a scrape counts again
    /// only when they are older than [`ops::METRICS_GAUGE_TTL`].
    gauges: tokio::sync::Mutex<Option<ops::Gauges>>,
}

impl AppState {
    /// The state `serve` uses: settings from `config` (refusing a missing or short JWT key),
    /// the system clock, and the process's Prometheus recorder (installed on first use).
    pub fn new(
        store: Store,
        control: Control,
        config: &Config,
    ) -> Result<AppState, ApiConfigError> {
        let settings = ApiSettings::from_config(config)?;
        Ok(AppState::with_settings(
            store,
            control,
            settings,
            Clock::system(),
        ))
    }

    /// A state with explicit settings and clock (tests, benchmarks).
    pub fn with_settings(
        store: Store,
        control: Control,
        settings: ApiSettings,
        clock: Clock,
    ) -> AppState {
        AppState {
            inner: Arc::new(StateInner {
                store,
                control,
                settings,
                clock,
                metrics: ops::prometheus_handle(),
                gauges: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The control handle (triggers, status).
    pub fn control(&self) -> &Control {
        &self.inner.control
    }

    /// The settings.
    pub fn settings(&self) -> &ApiSettings {
        &self.inner.settings
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The current time from the clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// The Prometheus handle rendering the process recorder.
    pub fn metrics(&self) -> &PrometheusHandle {
        &self.inner.metrics
    }

    /// The cached database gauges of `/metrics`.
    pub(crate) fn gauges(&self) -> &tokio::sync::Mutex<Option<ops::Gauges>> {
        &self.inner.gauges
    }
}

/// The OpenAPI document's fixed parts; paths come from the registered routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "mycopod",
        description = "GitOps reconciliation controller: runs, approvals, resources, telemetry."
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&SecurityAddon)
)]
struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or myk_ API key")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
    }
}

/// Every route with its documentation, before the cross-cutting layers. `/openapi.json`
/// serves the document of exactly this router.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(ops::routes(state))
        .merge(session::routes(state))
        .merge(admin::routes(state))
        .merge(runs::routes(state))
        .merge(events::routes(state))
        .merge(webhook::routes(state))
        .merge(telemetry::routes(state))
        .merge(status::routes(state))
        .merge(declarations::routes(state))
        .merge(ui::routes())
}

/// The whole API: routes, `/openapi.json`, the 404 fallback, request ids, a tracing span per
/// request, body size limit, CORS, HTTP metrics.
pub fn app(state: AppState) -> Router {
    let (router, openapi) = routes(&state).split_for_parts();
    let openapi = ops::OpenApiDoc(Arc::new(openapi));
    let request_id = HeaderName::from_static("x-request-id");
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(
            state.settings().cors_allowed_origins.clone(),
        ))
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::PATCH,
            axum::http::Method::DELETE,
        ])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("x-csrf-token"),
        ])
        .max_age(StdDuration::from_secs(600));
    router
        .layer(axum::Extension(openapi))
        .fallback(error::not_found_fallback)
        .method_not_allowed_fallback(error::method_not_allowed_fallback)
        .layer(DefaultBodyLimit::max(state.settings().body_limit_bytes))
        .layer(axum::middleware::from_fn(ops::count_requests))
        .layer(cors)
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<axum::body::Body>| {
                let id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!(
                    "http",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %id,
                )
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}
