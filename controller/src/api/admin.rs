//! Admin routes: users (`/api/v1/users`), API keys (`/api/v1/api-keys`, the key shown once at
//! creation and stored only as its SHA-256) and the audit log (`/api/v1/audit`).
//!
//! Every route here needs the admin role; API keys never reach them. Input is validated into
//! per-field 422 details before anything is stored; nothing here logs a password or a key.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::{Caller, new_api_key};
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::session::{Body, UserInfo};
use crate::model::{Role, Scope};
use crate::store::{ApiKey, hash_password, hash_token, password_problem, valid_user_name};

pub(super) fn routes(_state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(update_user))
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
        .routes(routes!(list_audit))
}

/// `POST /users` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserRequest {
    /// Login name: 1 to 64 characters, letters, digits, `.`, `_`, `-`, `@`.
    pub name: String,
    /// At least 12 characters.
    pub password: String,
    /// `viewer`, `operator` or `admin`.
    #[schema(value_type = String, example = "operator")]
    pub role: Role,
}

/// `PATCH /users/{name}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// Disable (true) or enable (false) the account. Disabling also ends its sessions.
    #[serde(default)]
    pub disabled: Option<bool>,
    /// The user's git identities (commit emails), replacing the old ones: where policies
    /// forbid self-approval, the user cannot approve runs covering commits by them.
    #[serde(default)]
    pub git_emails: Option<Vec<String>>,
}

/// Lists users.
#[utoipa::path(get, path = "/api/v1/users", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "every user", body = Vec<UserInfo>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<UserInfo>>, ApiError> {
    caller.require_role(Role::Admin)?;
    let users = state.store().list_users().await?;
    Ok(Json(users.iter().map(UserInfo::from).collect()))
}

/// Creates a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "admin",
    security(("bearer" = [])),
    request_body = NewUserRequest,
    responses(
        (status = 201, description = "created", body = UserInfo),
        (status = 409, description = "the name is taken", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    request: Result<Body<NewUserRequest>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require_role(Role::Admin)?;
    let Body(request) = request?;
    let mut problems = Vec::new();
    if !valid_user_name(&request.name) {
        problems.push((
            "name",
            "1 to 64 characters: letters, digits, '.', '_', '-', '@'".to_owned(),
        ));
    }
    if let Some(problem) = password_problem(&request.password) {
        problems.push(("password", problem));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid_fields(&problems));
    }
    let password = request.password;
    let phc = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::internal("hash password", &e))?
        .map_err(|e| ApiError::internal("hash password", &e))?;
    let user = state
        .store()
        .create_user(&request.name, &phc, request.role, &caller.name, state.now())
        .await
        .map_err(|e| {
            if e.is_unique_violation() {
                ApiError::new(
                    ErrorCode::NameTaken,
                    format!("user {} exists", request.name),
                )
            } else {
                e.into()
            }
        })?;
    Ok((StatusCode::CREATED, Json(UserInfo::from(&user))).into_response())
}

/// Disables or enables a user.
#[utoipa::path(patch, path = "/api/v1/users/{name}", tag = "admin",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "the user name")),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "the user after the change", body = UserInfo),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    request: Result<Body<UpdateUserRequest>, ApiError>,
) -> Result<Json<UserInfo>, ApiError> {
    caller.require_role(Role::Admin)?;
    let Body(request) = request?;
    if request.disabled == Some(true) && name == caller.name {
        return Err(ApiError::new(
            ErrorCode::CannotDisableSelf,
            "an admin cannot disable their own account",
        ));
    }
    let now = state.now();
    if let Some(emails) = &request.git_emails {
        if let Some(bad) = emails.iter().find(|e| !e.contains('@')) {
            return Err(ApiError::new(
                ErrorCode::InvalidGitEmail,
                format!("git email {bad:?} is not an email address"),
            ));
        }
        if !state
            .store()
            .set_user_git_emails(&name, emails, &caller.name, now)
            .await?
        {
            return Err(ApiError::not_found(format!("user {name} not found")));
        }
    }
    if let Some(disabled) = request.disabled
        && !state
            .store()
            .set_user_disabled(&name, disabled, &caller.name, now)
            .await?
    {
        return Err(ApiError::not_found(format!("user {name} not found")));
    }
    let user = state.store().get_user_by_name(&name).await?;
    if request.disabled == Some(true) {
        state.store().revoke_user_refresh_tokens(user.id).await?;
    }
    Ok(Json(UserInfo::from(&user)))
}

/// An API key as listed (never the key itself).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyInfo {
    /// Key id.
    pub id: i64,
    /// The label its creator gave it.
    pub name: String,
    /// Scopes.
    #[schema(value_type = Vec<String>)]
    pub scopes: Vec<Scope>,
    /// The devices it may push readings for and read; absent: every device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<String>>,
    /// Who created it.
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last used (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for ApiKeyInfo {
    fn from(key: ApiKey) -> ApiKeyInfo {
        ApiKeyInfo {
            id: key.id,
            name: key.name,
            scopes: key.scopes,
            devices: key.devices,
            created_by: key.created_by,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// `POST /api-keys` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKeyRequest {
    /// A name saying what uses the key (`ci`, `plc-gateway`).
    pub name: String,
    /// One or more of `read`, `trigger`, `ingest`.
    #[schema(value_type = Vec<String>)]
    pub scopes: Vec<Scope>,
    /// Device names the key is limited to: it may push readings for, and read, only these.
    /// Absent: every device.
    #[serde(default)]
    pub devices: Option<Vec<String>>,
}

/// A created key: the only time `key` is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    /// The key (`myk_...`). Store it now: it cannot be shown again.
    pub key: String,
    /// The stored key's description.
    pub api_key: ApiKeyInfo,
}

/// Lists API keys (without the keys).
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "every key, newest first", body = Vec<ApiKeyInfo>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_api_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ApiKeyInfo>>, ApiError> {
    caller.require_role(Role::Admin)?;
    let keys = state.store().list_api_keys().await?;
    Ok(Json(keys.into_iter().map(ApiKeyInfo::from).collect()))
}

/// Creates an API key and shows it once.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "admin",
    security(("bearer" = [])),
    request_body = NewApiKeyRequest,
    responses(
        (status = 201, description = "created; `key` is shown only now", body = CreatedApiKey),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn create_api_key(
    State(state): State<AppState>,
    caller: Caller,
    request: Result<Body<NewApiKeyRequest>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require_role(Role::Admin)?;
    let Body(request) = request?;
    let mut problems = Vec::new();
    if request.name.trim().is_empty() || request.name.chars().count() > 100 {
        problems.push(("name", "1 to 100 characters".to_owned()));
    }
    if request.scopes.is_empty() {
        problems.push(("scopes", "at least one of read, trigger, ingest".to_owned()));
    }
    if let Some(devices) = &request.devices
        && (devices.is_empty()
            || devices.len() > 1000
            || devices
                .iter()
                .any(|d| d.trim().is_empty() || d.trim() != d || d.chars().count() > 253))
    {
        problems.push((
            "devices",
            "1 to 1000 device names, each 1 to 253 characters without surrounding spaces (leave \
             devices out for every device)"
                .to_owned(),
        ));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid_fields(&problems));
    }
    let mut scopes = request.scopes;
    scopes.sort();
    scopes.dedup();
    let key = new_api_key();
    let stored = state
        .store()
        .create_api_key(
            &request.name,
            &hash_token(&key),
            &scopes,
            request.devices.as_deref(),
            &caller.name,
            state.now(),
        )
        .await?;
    let body = CreatedApiKey {
        key,
        api_key: stored.into(),
    };
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}

/// Revokes an API key.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "admin",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "the key id")),
    responses(
        (status = 204, description = "revoked"),
        (status = 404, description = "no such key, or already revoked", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn revoke_api_key(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
) -> Result<StatusCode, ApiError> {
    caller.require_role(Role::Admin)?;
    let Path(id) = id?;
    if state
        .store()
        .revoke_api_key(id, &caller.name, state.now())
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "api key {id} not found or already revoked"
        )))
    }
}

/// `GET /audit` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries with a sequence number below this (the previous page's `next_cursor`).
    pub before: Option<i64>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// One page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPageBody {
    /// Entries, newest first.
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<Value>,
    /// Pass as `before` for the next page.
    pub next_cursor: Option<i64>,
}

/// Pages the audit log, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "admin",
    security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "one page", body = AuditPageBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_role(Role::Admin)?;
    let Query(query) = query?;
    let page = state
        .store()
        .list_audit(query.before, query.limit.unwrap_or(0))
        .await?;
    serde_json::to_value(page)
        .map(Json)
        .map_err(|e| ApiError::internal("serialize audit page", &e))
}
