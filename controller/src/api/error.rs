//! The API's one error type and its HTTP form: every error leaves as
//! `{"error": {"code", "message", "details"}}` with the status the issue names (400 malformed,
//! 401, 403, 404, 409, 413, 422 with per-field details, 429 with `Retry-After`, 500).
//!
//! Internal errors (database, anything unexpected) are logged here with their cause and leave
//! with a generic message: nothing from a driver, a query or a secret ever reaches a client.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::store::StoreError;

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code clients match on (`invalid_credentials`, `stale_plan_hash`); it
    /// decides the status.
    pub code: ErrorCode,
    /// A sentence for humans.
    pub message: String,
    /// Structured details (per-field messages for 422, the current hash for 409, ...).
    pub details: Value,
    /// Seconds for the `Retry-After` header (429).
    pub retry_after: Option<u64>,
}

/// Every error code the API answers, with its HTTP status: the one place both are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `already_acknowledged` (conflict).
    AlreadyAcknowledged,
    /// `already_decided` (conflict).
    AlreadyDecided,
    /// `bad_body` (bad request).
    BadBody,
    /// `bad_path` (bad request).
    BadPath,
    /// `bad_payload` (bad request).
    BadPayload,
    /// `bad_query` (bad request).
    BadQuery,
    /// `bad_signature` (unauthorized).
    BadSignature,
    /// `batch_too_large` (payload too large).
    BatchTooLarge,
    /// `cannot_disable_self` (conflict).
    CannotDisableSelf,
    /// `conflict` (conflict).
    Conflict,
    /// `csrf_check_failed` (forbidden).
    CsrfCheckFailed,
    /// `forbidden` (forbidden).
    Forbidden,
    /// `internal` (internal server error).
    Internal,
    /// `invalid_api_key` (unauthorized).
    InvalidApiKey,
    /// `invalid_authorization` (unauthorized).
    InvalidAuthorization,
    /// `invalid_credentials` (unauthorized).
    InvalidCredentials,
    /// `invalid_git_email` (bad request).
    InvalidGitEmail,
    /// `invalid_input` (unprocessable entity).
    InvalidInput,
    /// `invalid_refresh_token` (unauthorized).
    InvalidRefreshToken,
    /// `invalid_token` (unauthorized).
    InvalidToken,
    /// `loop_unavailable` (service unavailable).
    LoopUnavailable,
    /// `malformed_json` (bad request).
    MalformedJson,
    /// `method_not_allowed` (method not allowed).
    MethodNotAllowed,
    /// `missing_refresh_token` (unauthorized).
    MissingRefreshToken,
    /// `model_failed` (bad gateway).
    ModelFailed,
    /// `name_taken` (conflict).
    NameTaken,
    /// `no_model` (service unavailable).
    NoModel,
    /// `no_route` (not found).
    NoRoute,
    /// `not_found` (not found).
    NotFound,
    /// `payload_too_large` (payload too large).
    PayloadTooLarge,
    /// `rate_limited` (too many requests).
    RateLimited,
    /// `refresh_token_reused` (unauthorized).
    RefreshTokenReused,
    /// `role_not_allowed` (forbidden).
    RoleNotAllowed,
    /// `run_expired` (conflict).
    RunExpired,
    /// `run_not_waiting` (conflict).
    RunNotWaiting,
    /// `self_approval_forbidden` (forbidden).
    SelfApprovalForbidden,
    /// `stale_plan_hash` (conflict).
    StalePlanHash,
    /// `token_expired` (unauthorized).
    TokenExpired,
    /// `translation_invalid` (unprocessable entity).
    TranslationInvalid,
    /// `unauthenticated` (unauthorized).
    Unauthenticated,
    /// `unsupported_media_type` (unsupported media type).
    UnsupportedMediaType,
    /// `validation_failed` (unprocessable entity).
    ValidationFailed,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: &[ErrorCode] = &[
        ErrorCode::AlreadyAcknowledged,
        ErrorCode::AlreadyDecided,
        ErrorCode::BadBody,
        ErrorCode::BadPath,
        ErrorCode::BadPayload,
        ErrorCode::BadQuery,
        ErrorCode::BadSignature,
        ErrorCode::BatchTooLarge,
        ErrorCode::CannotDisableSelf,
        ErrorCode::Conflict,
        ErrorCode::CsrfCheckFailed,
        ErrorCode::Forbidden,
        ErrorCode::Internal,
        ErrorCode::InvalidApiKey,
        ErrorCode::InvalidAuthorization,
        ErrorCode::InvalidCredentials,
        ErrorCode::InvalidGitEmail,
        ErrorCode::InvalidInput,
        ErrorCode::InvalidRefreshToken,
        ErrorCode::InvalidToken,
        ErrorCode::LoopUnavailable,
        ErrorCode::MalformedJson,
        ErrorCode::MethodNotAllowed,
        ErrorCode::MissingRefreshToken,
        ErrorCode::ModelFailed,
        ErrorCode::NameTaken,
        ErrorCode::NoModel,
        ErrorCode::NoRoute,
        ErrorCode::NotFound,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::RefreshTokenReused,
        ErrorCode::RoleNotAllowed,
        ErrorCode::RunExpired,
        ErrorCode::RunNotWaiting,
        ErrorCode::SelfApprovalForbidden,
        ErrorCode::StalePlanHash,
        ErrorCode::TokenExpired,
        ErrorCode::TranslationInvalid,
        ErrorCode::Unauthenticated,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::ValidationFailed,
    ];

    /// The stable snake_case code clients match on.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AlreadyAcknowledged => "already_acknowledged",
            ErrorCode::AlreadyDecided => "already_decided",
            ErrorCode::BadBody => "bad_body",
            ErrorCode::BadPath => "bad_path",
            ErrorCode::BadPayload => "bad_payload",
            ErrorCode::BadQuery => "bad_query",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::BatchTooLarge => "batch_too_large",
            ErrorCode::CannotDisableSelf => "cannot_disable_self",
            ErrorCode::Conflict => "conflict",
            ErrorCode::CsrfCheckFailed => "csrf_check_failed",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Internal => "internal",
            ErrorCode::InvalidApiKey => "invalid_api_key",
            ErrorCode::InvalidAuthorization => "invalid_authorization",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::InvalidGitEmail => "invalid_git_email",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::InvalidRefreshToken => "invalid_refresh_token",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::LoopUnavailable => "loop_unavailable",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::MissingRefreshToken => "missing_refresh_token",
            ErrorCode::ModelFailed => "model_failed",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::NoModel => "no_model",
            ErrorCode::NoRoute => "no_route",
            ErrorCode::NotFound => "not_found",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::RefreshTokenReused => "refresh_token_reused",
            ErrorCode::RoleNotAllowed => "role_not_allowed",
            ErrorCode::RunExpired => "run_expired",
            ErrorCode::RunNotWaiting => "run_not_waiting",
            ErrorCode::SelfApprovalForbidden => "self_approval_forbidden",
            ErrorCode::StalePlanHash => "stale_plan_hash",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TranslationInvalid => "translation_invalid",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::ValidationFailed => "validation_failed",
        }
    }

    /// The HTTP status this code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::ModelFailed => StatusCode::BAD_GATEWAY,
            ErrorCode::BadBody
            | ErrorCode::BadPath
            | ErrorCode::BadPayload
            | ErrorCode::BadQuery
            | ErrorCode::InvalidGitEmail
            | ErrorCode::MalformedJson => StatusCode::BAD_REQUEST,
            ErrorCode::AlreadyAcknowledged
            | ErrorCode::AlreadyDecided
            | ErrorCode::CannotDisableSelf
            | ErrorCode::Conflict
            | ErrorCode::NameTaken
            | ErrorCode::RunExpired
            | ErrorCode::RunNotWaiting
            | ErrorCode::StalePlanHash => StatusCode::CONFLICT,
            ErrorCode::CsrfCheckFailed
            | ErrorCode::Forbidden
            | ErrorCode::RoleNotAllowed
            | ErrorCode::SelfApprovalForbidden => StatusCode::FORBIDDEN,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::NoRoute | ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::BatchTooLarge | ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::LoopUnavailable | ErrorCode::NoModel => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::BadSignature
            | ErrorCode::InvalidApiKey
            | ErrorCode::InvalidAuthorization
            | ErrorCode::InvalidCredentials
            | ErrorCode::InvalidRefreshToken
            | ErrorCode::InvalidToken
            | ErrorCode::MissingRefreshToken
            | ErrorCode::RefreshTokenReused
            | ErrorCode::TokenExpired
            | ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidInput
            | ErrorCode::TranslationInvalid
            | ErrorCode::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }
}

/// The body of every error response, as documented in `/openapi.json`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Its code, message and details.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Structured details; an empty object when there are none.
    #[schema(value_type = Object)]
    pub details: Value,
}

impl ApiError {
    /// An error with the given code (which decides the status) and message, and no details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: code.status(),
            code,
            message: message.into(),
            details: json!({}),
            retry_after: None,
        }
    }

    /// Adds structured details.
    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = details;
        self
    }

    /// Adds a `Retry-After` header (seconds).
    pub fn with_retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// 404: no such object.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    /// 422 with one message per field: `fields` is `[(field, message)]`.
    pub fn invalid_fields(fields: &[(&str, String)]) -> ApiError {
        let map: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(f, m)| ((*f).to_owned(), Value::String(m.clone())))
            .collect();
        ApiError::new(ErrorCode::ValidationFailed, "some fields are invalid")
            .with_details(json!({ "fields": map }))
    }

    /// 429: too many requests; retry after `seconds`.
    pub fn too_many_requests(seconds: u64) -> ApiError {
        ApiError::new(
            ErrorCode::RateLimited,
            format!("too many requests, retry in {seconds}s"),
        )
        .with_retry_after(seconds)
    }

    /// 500: logs `cause` (with the operation) and answers a generic message.
    pub fn internal(op: &str, cause: &(dyn std::error::Error + 'static)) -> ApiError {
        tracing::error!(op, error = %ErrorChain(cause), "request failed");
        ApiError::new(
            ErrorCode::Internal,
            "internal error; the server log has the cause",
        )
    }
}

/// Displays an error and its sources as `a: b: c` for logs.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message,
                details: self.details,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match &err {
            StoreError::NotFound { what, key } => {
                ApiError::not_found(format!("{what} {key} not found"))
            }
            StoreError::StalePlanHash { current, given, .. } => {
                ApiError::new(ErrorCode::StalePlanHash, err.to_string())
                    .with_details(json!({"current": current, "given": given}))
            }
            StoreError::AlreadyDecided { .. } => {
                ApiError::new(ErrorCode::AlreadyDecided, err.to_string())
            }
            StoreError::RunNotInState { status, .. } => {
                ApiError::new(ErrorCode::RunNotWaiting, err.to_string())
                    .with_details(json!({"status": status}))
            }
            StoreError::Constraint { op, .. } => {
                // The constraint text may name tables; say only what was refused.
                ApiError::new(
                    ErrorCode::Conflict,
                    format!("{op}: it conflicts with an existing object"),
                )
            }
            StoreError::InvalidInput { what, message } => ApiError::new(
                ErrorCode::InvalidInput,
                format!("invalid {what}: {message}"),
            ),
            _ => ApiError::internal("store", &err),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        let status = rejection.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::ValidationFailed,
            _ => ErrorCode::MalformedJson,
        };
        let mut err = ApiError::new(code, rejection.body_text());
        if let JsonRejection::JsonDataError(e) = &rejection {
            // axum reports the failing path first: "Failed to deserialize ...: role: unknown ...".
            let text = std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.body_text());
            let (field, message) = match text.split_once(": ") {
                Some((f, m)) if !f.contains(' ') => (f.to_owned(), m.to_owned()),
                _ => ("body".to_owned(), text.clone()),
            };
            err = err.with_details(json!({"fields": {field: message}}));
        }
        err
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::PayloadTooLarge
        } else {
            ErrorCode::BadBody
        };
        ApiError::new(code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::new(ErrorCode::BadQuery, rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::new(ErrorCode::BadPath, rejection.body_text())
    }
}

/// The answer to a known path asked with a method it does not serve.
pub async fn method_not_allowed_fallback() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this path does not serve that method",
    )
}

/// The answer to a route that does not exist.
pub async fn not_found_fallback() -> ApiError {
    ApiError::new(ErrorCode::NoRoute, "no such route")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_should_be_unique_snake_case_and_an_error_status() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{text}"
            );
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "{text}: {}",
                code.status()
            );
            let body = ApiError::new(*code, "m").into_response();
            assert_eq!(body.status(), code.status(), "{text}");
        }
    }

    #[test]
    fn a_stale_hash_should_be_a_conflict_with_both_hashes_in_details() {
        let err = ApiError::from(StoreError::StalePlanHash {
            run_id: 3,
            current: "aaa".into(),
            given: "bbb".into(),
        });
        assert_eq!(err.status, StatusCode::CONFLICT);
        assert_eq!(err.code, ErrorCode::StalePlanHash);
        assert_eq!(err.details, json!({"current": "aaa", "given": "bbb"}));
    }

    #[test]
    fn a_corrupt_row_should_be_a_generic_internal_error() {
        let err = ApiError::from(StoreError::Corrupt {
            op: "read run",
            message: "secret detail".into(),
        });
        assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!err.message.contains("secret detail"), "{}", err.message);
    }

    #[test]
    fn too_many_requests_should_carry_retry_after() {
        let response = ApiError::too_many_requests(7).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from(7u64))
        );
    }
}
