//! Sign-in: `POST /api/v1/auth/login`, `/auth/refresh`, `/auth/logout`, `GET /auth/me`.
//!
//! Login checks the argon2id hash, counts failures (five in a row lock the account for 15
//! minutes, on the app clock) and returns a 15-minute access JWT plus an opaque 7-day refresh
//! token that is stored only as its SHA-256. Every refresh rotates the token; presenting a
//! token that was already rotated revokes its whole family (someone copied it). The refresh
//! token also travels as the `mycopod_refresh` cookie for the web UI, guarded by the double
//! submit `mycopod_csrf` cookie and `X-CSRF-Token` header.
//!
//! This module never logs a password or a token, and answers the same 401 for an unknown
//! user and a wrong password (after spending the same argon2 work on both).

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, CallerKind, random_hex};
use super::error::{ApiError, ErrorCode};
use super::{AppState, limits};
use crate::model::{Role, Scope};
use crate::store::{RotateOutcome, User, hash_token, verify_password};

/// The refresh token cookie (HttpOnly).
pub const REFRESH_COOKIE: &str = "mycopod_refresh";
/// The CSRF cookie scripts read and echo in `X-CSRF-Token`.
pub const CSRF_COOKIE: &str = "mycopod_csrf";
/// The header carrying the CSRF value.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A PHC string of a random password, verified against when the user does not exist so that
/// unknown names cost as much as wrong passwords.
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                         9sTbSlTio3Biev89thdrlKKiCaYsjjYVJxGAL3swxpQ";

pub(super) fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let login = OpenApiRouter::new().routes(routes!(login));
    OpenApiRouter::new()
        .merge(limits::limited(login, state.settings().rate_limits.login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
}

/// A JSON body whose rejection is an [`ApiError`] (400 malformed, 413, 415, 422 per field).
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(rejection.into()),
        }
    }
}

/// `POST /auth/login` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The login name.
    pub username: String,
    /// In plain text, checked against the stored argon2 hash.
    pub password: String,
}

/// Tokens returned by login and refresh.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// The access token (JWT, HS256), sent as `Authorization: Bearer ...`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds the access token is valid.
    pub expires_in: i64,
    /// The refresh token (also set as the `mycopod_refresh` cookie). Single use. Absent when
    /// the refresh came by cookie: a page's script then never sees it, only the cookie holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// When the refresh token expires.
    pub refresh_expires_at: DateTime<Utc>,
    /// The signed-in user.
    pub user: UserInfo,
}

/// A user as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserInfo {
    /// User id.
    pub id: i64,
    /// Login name.
    pub name: String,
    /// Role.
    #[schema(value_type = String, example = "operator")]
    pub role: Role,
    /// Whether the account is disabled.
    pub disabled: bool,
    /// Locked until this time after too many failed logins.
    pub locked_until: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

impl From<&User> for UserInfo {
    fn from(user: &User) -> UserInfo {
        UserInfo {
            id: user.id,
            name: user.name.clone(),
            role: user.role,
            disabled: user.disabled,
            locked_until: user.locked_until,
            created_at: user.created_at,
        }
    }
}

/// `POST /auth/refresh` and `/auth/logout` body; empty when the cookie carries the token.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token; omit it to use the `mycopod_refresh` cookie (then `X-CSRF-Token`
    /// must equal the `mycopod_csrf` cookie).
    pub refresh_token: Option<String>,
}

/// Signs in with a user name and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "signed in; also sets the mycopod_refresh and mycopod_csrf cookies", body = TokenResponse),
        (status = 401, description = "wrong user name or password; also the answer for an unknown, locked or disabled account", body = super::error::ErrorBody),
        (status = 429, description = "rate limited", body = super::error::ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    Body(request): Body<LoginRequest>,
) -> Result<Response, ApiError> {
    let now = state.now();
    let auth = &state.settings().auth;
    let wrong = || ApiError::new(ErrorCode::InvalidCredentials, "wrong user name or password");
    // The attempt is counted before the password is checked, in one conditional update, so
    // parallel guesses cannot outrun the lockout. An unknown name, a locked account and a
    // disabled one all answer as a wrong password does, after the same work, so that whoever
    // guesses learns neither which names exist nor which are locked (an admin sees the lock
    // in `GET /users`).
    let counted = state
        .store()
        .count_login_attempt(
            &request.username,
            auth.max_failed_logins,
            now + auth.lockout,
            now,
        )
        .await?;
    let (phc, user) = match counted {
        Some(user) => (user.password_hash.clone(), Some(user)),
        None => (DUMMY_PHC.to_owned(), None),
    };
    let password = request.password;
    let good = tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .map_err(|e| ApiError::internal("verify password", &e))?;
    let user = match user {
        Some(user) if good && !user.disabled => user,
        Some(user) => {
            if user.is_locked(now) {
                tracing::warn!(user = %user.name, "account locked after repeated failed logins");
            }
            return Err(wrong());
        }
        None => return Err(wrong()),
    };
    // The attempt proved right: it no longer counts as a failure.
    state.store().reset_failed_logins(user.id, now).await?;
    let refresh = random_hex(32);
    let refresh_expires_at = now + auth.refresh_ttl;
    state
        .store()
        .insert_refresh_token(
            &hash_token(&refresh),
            user.id,
            &random_hex(16),
            refresh_expires_at,
            now,
        )
        .await?;
    tracing::info!(user = %user.name, "signed in");
    tokens(
        &state,
        &user,
        refresh,
        Carried::Body,
        refresh_expires_at,
        now,
    )
}

/// The token response plus the cookies.
fn tokens(
    state: &AppState,
    user: &User,
    refresh: String,
    carried: Carried,
    refresh_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Response, ApiError> {
    let auth = &state.settings().auth;
    let access = auth
        .keys
        .issue(
            &user.name,
            user.id,
            user.session_version,
            now,
            auth.access_ttl,
        )
        .map_err(|e| ApiError::internal("sign access token", &e))?;
    let max_age = (refresh_expires_at - now).num_seconds().max(0);
    let secure = if auth.secure_cookies { "; Secure" } else { "" };
    let refresh_cookie = format!(
        "{REFRESH_COOKIE}={refresh}; HttpOnly; SameSite=Strict; Path=/api/v1/auth; Max-Age={max_age}{secure}"
    );
    let csrf_cookie = format!(
        "{CSRF_COOKIE}={}; SameSite=Strict; Path=/; Max-Age={max_age}{secure}",
        random_hex(16)
    );
    let body = TokenResponse {
        access_token: access,
        token_type: "Bearer",
        expires_in: auth.access_ttl.num_seconds(),
        refresh_token: (carried == Carried::Body).then_some(refresh),
        refresh_expires_at,
        user: UserInfo::from(user),
    };
    let mut response = Json(body).into_response();
    for cookie in [refresh_cookie, csrf_cookie] {
        let value =
            HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal("build cookie", &e))?;
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The value of cookie `name` in the request, if any.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The refresh token from the body, or from the cookie after the double-submit check.
/// Where a refresh token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carried {
    /// In the JSON body: the new one is answered in the body too.
    Body,
    /// In the `HttpOnly` cookie: the new one goes only into the cookie.
    Cookie,
}

fn refresh_token_of(
    headers: &HeaderMap,
    body: Option<RefreshRequest>,
) -> Result<(String, Carried), ApiError> {
    if let Some(token) = body.and_then(|b| b.refresh_token) {
        return Ok((token, Carried::Body));
    }
    let Some(token) = cookie(headers, REFRESH_COOKIE) else {
        return Err(ApiError::new(
            ErrorCode::MissingRefreshToken,
            "send refresh_token in the body or the mycopod_refresh cookie",
        ));
    };
    let csrf_cookie = cookie(headers, CSRF_COOKIE);
    let csrf_header = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    match (csrf_cookie, csrf_header) {
        (Some(c), Some(h)) if !c.is_empty() && constant_time_eq(c.as_bytes(), h.as_bytes()) => {
            Ok((token.to_owned(), Carried::Cookie))
        }
        _ => Err(ApiError::new(
            ErrorCode::CsrfCheckFailed,
            "with the refresh cookie, X-CSRF-Token must equal the mycopod_csrf cookie",
        )),
    }
}

/// Whether `a` and `b` are equal, compared in time that does not depend on where they differ.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An optional JSON body: absent or empty is `None`.
async fn optional_body(request: Request) -> Result<(HeaderMap, Option<RefreshRequest>), ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| ApiError::new(ErrorCode::PayloadTooLarge, "body too large"))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok((parts.headers, None));
    }
    let body: RefreshRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ErrorCode::MalformedJson, format!("invalid body: {e}")))?;
    Ok((parts.headers, Some(body)))
}

/// Trades a refresh token for a new access token and a new refresh token.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth",
    request_body(content = RefreshRequest, description = "omit to use the mycopod_refresh cookie with X-CSRF-Token"),
    params(("X-CSRF-Token" = Option<String>, Header, description = "the mycopod_csrf cookie's value, when the cookie is used")),
    responses(
        (status = 200, description = "new tokens", body = TokenResponse),
        (status = 401, description = "unknown, expired or reused refresh token", body = super::error::ErrorBody),
        (status = 403, description = "CSRF check failed", body = super::error::ErrorBody)))]
async fn refresh(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (headers, body) = optional_body(request).await?;
    let (token, carried) = refresh_token_of(&headers, body)?;
    let now = state.now();
    let auth = &state.settings().auth;
    let new = random_hex(32);
    let expires = now + auth.refresh_ttl;
    let invalid = || {
        ApiError::new(
            ErrorCode::InvalidRefreshToken,
            "the refresh token is invalid or expired",
        )
    };
    match state
        .store()
        .rotate_refresh_token(&hash_token(&token), &hash_token(&new), expires, now)
        .await?
    {
        RotateOutcome::Rotated(stored) => {
            let user = state.store().get_user(stored.user_id).await?;
            if user.disabled {
                state.store().revoke_refresh_family(&stored.family).await?;
                return Err(invalid());
            }
            tokens(&state, &user, new, carried, expires, now)
        }
        RotateOutcome::Reused { user_id, .. } => {
            tracing::warn!(
                user_id,
                "a rotated refresh token was reused; its family is revoked"
            );
            Err(ApiError::new(
                ErrorCode::RefreshTokenReused,
                "this refresh token was already used; every session from that sign-in is revoked",
            ))
        }
        RotateOutcome::Expired | RotateOutcome::Unknown => Err(invalid()),
    }
}

/// Ends the session: revokes the refresh token's family and clears the cookies.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    request_body(content = RefreshRequest, description = "omit to use the mycopod_refresh cookie with X-CSRF-Token"),
    responses(
        (status = 204, description = "signed out (also when the token was unknown)"),
        (status = 403, description = "CSRF check failed", body = super::error::ErrorBody)))]
async fn logout(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (headers, body) = optional_body(request).await?;
    let (token, _) = refresh_token_of(&headers, body)?;
    if let Some(stored) = state
        .store()
        .find_refresh_token(&hash_token(&token))
        .await?
    {
        state.store().revoke_refresh_family(&stored.family).await?;
        // Signing out ends the user's access tokens at once, not when they expire.
        state
            .store()
            .end_sessions(stored.user_id, state.now())
            .await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    for cookie in [
        format!("{REFRESH_COOKIE}=; HttpOnly; SameSite=Strict; Path=/api/v1/auth; Max-Age=0"),
        format!("{CSRF_COOKIE}=; SameSite=Strict; Path=/; Max-Age=0"),
    ] {
        let value =
            HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal("build cookie", &e))?;
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// Who the caller is.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The user name, or `key:NAME` for an API key.
    pub name: String,
    /// `user` or `api_key`.
    pub kind: &'static str,
    /// The user's role (users only).
    #[schema(value_type = Option<String>)]
    pub role: Option<Role>,
    /// What the caller may do as scopes (keys: their scopes; admin users: all).
    #[schema(value_type = Vec<String>)]
    pub scopes: Vec<Scope>,
}

/// The signed-in user or API key.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "the caller", body = Me),
        (status = 401, description = "not signed in", body = super::error::ErrorBody)))]
async fn me(caller: Caller) -> Json<Me> {
    let scopes = Scope::ALL
        .iter()
        .copied()
        .filter(|s| caller.has_scope(*s))
        .collect();
    Json(Me {
        kind: match caller.kind {
            CallerKind::User { .. } => "user",
            CallerKind::ApiKey { .. } => "api_key",
        },
        role: caller.role(),
        name: caller.name,
        scopes,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn cookies_should_be_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; mycopod_refresh=abc ; mycopod_csrf=xyz"),
        );
        assert_eq!(cookie(&headers, REFRESH_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, CSRF_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, "b"), None);
    }

    #[test]
    fn the_dummy_hash_should_parse_so_unknown_users_cost_a_full_check() {
        use argon2::PasswordHash;
        assert!(PasswordHash::new(DUMMY_PHC).is_ok());
    }

    /// An unknown name is checked against the dummy hash, a known one against its own: the
    /// work is the same only while both use the same algorithm and cost parameters. Timing
    /// cannot tell names apart unless this drifts (a new argon2 default, say).
    #[test]
    fn the_dummy_hash_should_cost_what_a_stored_password_costs() {
        use argon2::PasswordHash;
        let stored = crate::store::hash_password("a password of some length").unwrap();
        let stored = PasswordHash::new(&stored).unwrap();
        let dummy = PasswordHash::new(DUMMY_PHC).unwrap();
        assert_eq!(dummy.algorithm, stored.algorithm);
        assert_eq!(dummy.version, stored.version);
        assert_eq!(dummy.params, stored.params);
        assert_eq!(
            dummy.hash.map(|h| h.len()),
            stored.hash.map(|h| h.len()),
            "same output length"
        );
    }
}
