//! Rate limits (tower_governor) for the routes an outsider can hammer: login, the GitHub
//! webhook and telemetry ingest. Each limited group has its own bucket per client IP; an
//! exhausted bucket answers 429 with `Retry-After` in the API's error format.
//!
//! The client IP is the TCP peer (`ConnectInfo<SocketAddr>`, which `serve` provides). Forwarded
//! headers are not trusted: behind a reverse proxy every client shares the proxy's bucket.
//! Requests without connection info (router tests through `oneshot`) share one bucket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::IntoResponse;
use tower_governor::GovernorError;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;
use utoipa_axum::router::OpenApiRouter;

use super::AppState;
use super::error::ApiError;

/// One rate limit: a bucket of `burst` requests refilled by one every `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Time to earn back one request.
    pub period: Duration,
    /// Requests allowed at once.
    pub burst: u32,
}

impl RateLimit {
    /// `burst` at once, then one per `period`.
    pub const fn new(period: Duration, burst: u32) -> RateLimit {
        RateLimit { period, burst }
    }
}

/// The limits of each limited group of routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `POST /api/v1/auth/login` (default: 10 at once, then one every 6 s).
    pub login: RateLimit,
    /// `POST /api/v1/webhooks/github` (default: 30 at once, then 1 per second).
    pub webhook: RateLimit,
    /// Telemetry ingest (default: 200 at once, then 100 per second).
    pub ingest: RateLimit,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            login: RateLimit::new(Duration::from_secs(6), 10),
            webhook: RateLimit::new(Duration::from_secs(1), 30),
            ingest: RateLimit::new(Duration::from_millis(10), 200),
        }
    }
}

/// The peer IP, or one shared key when the server runs without connection info.
#[derive(Debug, Clone, Copy)]
pub struct PeerIp;

impl KeyExtractor for PeerIp {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        Ok(req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
    }
}

/// Wraps every route of `router` in a limiter with its own buckets. Use it once per group:
/// `.merge(limits::limited(login_routes, state.settings().rate_limits.login))`.
pub fn limited(router: OpenApiRouter<AppState>, limit: RateLimit) -> OpenApiRouter<AppState> {
    let period = limit.period.max(Duration::from_nanos(1));
    let config = GovernorConfigBuilder::default()
        .key_extractor(PeerIp)
        .period(period)
        .burst_size(limit.burst.max(1))
        .finish();
    let Some(config) = config else {
        // Only a zero period or burst makes `finish` fail, and both are clamped above.
        tracing::error!(?limit, "invalid rate limit; routes left unlimited");
        return router;
    };
    let config = Arc::new(config);
    // Buckets of clients that went quiet are forgotten now and then, while the router lives.
    let weak = Arc::downgrade(&config);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(config) => config.limiter().retain_recent(),
                    None => break,
                }
            }
        });
    }
    router.layer(
        tower_governor::GovernorLayer::new(config).error_handler(|err| match err {
            GovernorError::TooManyRequests { wait_time, .. } => {
                ApiError::too_many_requests(wait_time).into_response()
            }
            other => ApiError::internal("rate limit", &other).into_response(),
        }),
    )
}
