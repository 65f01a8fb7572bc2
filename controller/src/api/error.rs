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
    /// A stable snake_case code clients can match on (`invalid_credentials`, `stale_plan_hash`).
    pub code: &'static str,
    /// A sentence for humans.
    pub message: String,
    /// Structured details (per-field messages for 422, the current hash for 409, ...).
    pub details: Value,
    /// Seconds for the `Retry-After` header (429, locked accounts).
    pub retry_after: Option<u64>,
}

/// The body of every error response, as documented in `/openapi.json`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
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
    /// An error with the given status, code and message and no details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
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

    /// 400: the request is malformed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no or invalid credentials.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403: authenticated, but not allowed.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 404: no such object.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: conflicts with the current state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// 422 with one message per field: `fields` is `[(field, message)]`.
    pub fn invalid_fields(fields: &[(&str, String)]) -> ApiError {
        let map: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(f, m)| ((*f).to_owned(), Value::String(m.clone())))
            .collect();
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "some fields are invalid",
        )
        .with_details(json!({ "fields": map }))
    }

    /// 429: too many requests; retry after `seconds`.
    pub fn too_many_requests(seconds: u64) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests, retry in {seconds}s"),
        )
        .with_retry_after(seconds)
    }

    /// 500: logs `cause` (with the operation) and answers a generic message.
    pub fn internal(op: &str, cause: &(dyn std::error::Error + 'static)) -> ApiError {
        tracing::error!(op, error = %ErrorChain(cause), "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
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
                code: self.code.to_owned(),
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
                ApiError::conflict("stale_plan_hash", err.to_string())
                    .with_details(json!({"current": current, "given": given}))
            }
            StoreError::AlreadyDecided { .. } => {
                ApiError::conflict("already_decided", err.to_string())
            }
            StoreError::RunNotInState { status, .. } => {
                ApiError::conflict("run_not_waiting", err.to_string())
                    .with_details(json!({"status": status}))
            }
            StoreError::Constraint { op, .. } => {
                // The constraint text may name tables; say only what was refused.
                ApiError::conflict(
                    "conflict",
                    format!("{op}: it conflicts with an existing object"),
                )
            }
            StoreError::InvalidInput { what, message } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_input",
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
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "validation_failed",
            _ => "malformed_json",
        };
        let mut err = ApiError::new(status, code, rejection.body_text());
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
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "bad_body"
        };
        ApiError::new(status, code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::bad_request("bad_query", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::bad_request("bad_path", rejection.body_text())
    }
}

/// The answer to a known path asked with a method it does not serve.
pub async fn method_not_allowed_fallback() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not serve that method",
    )
}

/// The answer to a route that does not exist.
pub async fn not_found_fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such route")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_hash_should_be_a_conflict_with_both_hashes_in_details() {
        let err = ApiError::from(StoreError::StalePlanHash {
            run_id: 3,
            current: "aaa".into(),
            given: "bbb".into(),
        });
        assert_eq!(err.status, StatusCode::CONFLICT);
        assert_eq!(err.code, "stale_plan_hash");
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
