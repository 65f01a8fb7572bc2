//! Telemetry routes: push ingest (`POST /api/v1/readings`), devices with their latest values,
//! readings as JSON or CSV, summaries per time bucket (computed in the database), alerts and
//! acknowledging them.
//!
//! Ingest checks each item on its own against the desired state (known device and register,
//! a finite number, a time not far in the future) and stores the good ones in one batch, then
//! hands them to the running telemetry's alert evaluator ([`crate::control::Control::sample_feed`])
//! so a gateway-fed device fires and resolves alerts like a polled one; it never evaluates
//! alerts itself or polls anything. Reads are thin wrappers over the store.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::limits;
use crate::model::{AlertState, Role, Scope};
use crate::store::Reading;

/// Most items one ingest request may carry (a larger batch is refused with 413).
pub const MAX_INGEST_ITEMS: usize = 50_000;
/// Most readings one query returns.
pub const MAX_READINGS: u32 = 100_000;
/// Most buckets one summary may span.
pub const MAX_BUCKETS: i64 = 100_000;

pub(super) fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let ingest = OpenApiRouter::new().routes(routes!(ingest_readings, list_readings));
    OpenApiRouter::new()
        .merge(limits::limited(ingest, state.settings().rate_limits.ingest))
        .routes(routes!(list_devices))
        .routes(routes!(summarize_readings))
        .routes(routes!(list_alerts))
        .routes(routes!(ack_alert))
}

/// One item refused by ingest.
#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct Rejected {
    /// Its position in the batch (0 for a single reading).
    pub index: usize,
    /// Why it was refused.
    pub reason: String,
}

/// What ingest did with a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResult {
    /// Items received.
    pub received: usize,
    /// Readings stored (an item whose device, register and time are already stored counts as
    /// accepted but not stored again).
    pub stored: u64,
    /// Items refused, with the reason.
    pub rejected: Vec<Rejected>,
}

/// Checks one pushed item against the declared devices; returns the reading or the reason.
fn check_item(
    item: &Value,
    desired: Option<&mycopod_specs::DesiredState>,
    now: DateTime<Utc>,
    future_skew: chrono::Duration,
) -> Result<Reading, String> {
    let Value::Object(fields) = item else {
        return Err("an item must be an object {device, register, time, value}".to_owned());
    };
    let text = |key: &str| -> Result<&str, String> {
        fields
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("{key} must be a non-empty string"))
    };
    let device = text("device")?;
    let register = text("register")?;
    let value = match fields.get("value") {
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .ok_or_else(|| "value is not a finite number".to_owned())?,
        Some(other) => return Err(format!("value must be a number, not {other}")),
        None => return Err("value is missing".to_owned()),
    };
    let time = match fields.get("time") {
        None | Some(Value::Null) => now,
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("time {s:?} is not an RFC 3339 time: {e}"))?,
        Some(other) => return Err(format!("time must be an RFC 3339 string, not {other}")),
    };
    // A reading from the future would stand as the device's newest value (and could resolve
    // a firing alert) until the clock caught up: only a gateway's clock skew is allowed.
    if time > now + future_skew {
        return Err(format!(
            "time {} is more than {} s in the future ([telemetry] ingest_future_skew)",
            time.to_rfc3339(),
            future_skew.num_seconds()
        ));
    }
    let spec = desired
        .and_then(|d| d.devices.iter().find(|r| r.name().as_str() == device))
        .ok_or_else(|| format!("unknown device {device}"))?;
    if !spec
        .spec
        .registers
        .iter()
        .any(|r| r.name.as_str() == register)
    {
        return Err(format!("device {device} has no register {register}"));
    }
    Ok(Reading {
        device: device.to_owned(),
        register: register.to_owned(),
        time,
        value,
    })
}

/// Stores pushed readings: one `{device, register, time, value}` or an array of them.
/// Items that are not good are refused one by one with a reason; the rest are stored.
#[utoipa::path(post, path = "/api/v1/readings", tag = "telemetry",
    security(("bearer" = []), ("api_key" = [])),
    request_body(content = Object, description = "one reading or an array of readings"),
    responses(
        (status = 200, description = "stored and refused items", body = IngestResult),
        (status = 400, description = "not JSON, or neither an object nor an array", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, description = "body or batch too large", body = ErrorBody)))]
async fn ingest_readings(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IngestResult>, ApiError> {
    caller.require_scope(Scope::Ingest)?;
    let body = body?;
    let parsed: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::BadBody, format!("the body is not JSON: {e}")))?;
    let items = match parsed {
        Value::Array(items) => items,
        item @ Value::Object(_) => vec![item],
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadBody,
                "send one reading object or an array of them",
            ));
        }
    };
    if items.len() > MAX_INGEST_ITEMS {
        return Err(ApiError::new(
            ErrorCode::BatchTooLarge,
            format!(
                "{} items; at most {MAX_INGEST_ITEMS} per request",
                items.len()
            ),
        ));
    }
    let now = state.now();
    let snapshot = state.control().current();
    let desired = snapshot.as_ref().map(|s| s.desired.as_ref());
    let mut readings = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for (index, item) in items.iter().enumerate() {
        // A key limited to devices is refused for the others before anything is looked up,
        // so it learns nothing about them.
        if let Some(device) = item.get("device").and_then(Value::as_str)
            && !caller.may_use_device(device)
        {
            rejected.push(Rejected {
                index,
                reason: super::auth::not_scoped(device),
            });
            continue;
        }
        match check_item(item, desired, now, state.settings().ingest_future_skew) {
            Ok(r) => readings.push(r),
            Err(reason) => rejected.push(Rejected { index, reason }),
        }
    }
    let stored = state.store().insert_readings(&readings).await?;
    let devices: BTreeSet<&str> = readings.iter().map(|r| r.device.as_str()).collect();
    for device in devices {
        state.store().record_device_seen(device, now).await?;
    }
    if let Some(feed) = state.control().sample_feed() {
        for sample in crate::telemetry::poll::samples_of_readings(&readings, now) {
            // A send error means telemetry is stopping: the readings are stored regardless.
            if feed.send(Arc::new(sample)).await.is_err() {
                break;
            }
        }
    }
    Ok(Json(IngestResult {
        received: items.len(),
        stored,
        rejected,
    }))
}

/// Every device with its online state, last seen time and latest value per register.
#[utoipa::path(get, path = "/api/v1/devices", tag = "telemetry",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "devices by name", body = Vec<Object>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_devices(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Value>>, ApiError> {
    caller.require_any(Role::Viewer, Scope::Read)?;
    let mut out = Vec::new();
    for device in state.store().list_devices().await? {
        if !caller.may_use_device(&device.name) {
            continue;
        }
        let latest = state.store().latest_readings(&device.name).await?;
        let mut value = serde_json::to_value(&device)
            .map_err(|e| ApiError::internal("serialize device", &e))?;
        value["latest"] =
            serde_json::to_value(latest).map_err(|e| ApiError::internal("serialize device", &e))?;
        out.push(value);
    }
    Ok(Json(out))
}

/// `GET /readings` and `/readings/summary` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReadingsQuery {
    /// A ModbusDevice's `metadata.name`.
    pub device: String,
    /// A register name from that device's register map.
    pub register: String,
    /// Start (RFC 3339, inclusive; default 24 hours before `to`).
    pub from: Option<String>,
    /// End (RFC 3339, exclusive; default now).
    pub to: Option<String>,
    /// Most readings returned (default 1000, at most 100000); readings only.
    pub limit: Option<u32>,
    /// Bucket length (`1m`, `1h`, `1d`); summary only, default `1h`.
    pub bucket: Option<String>,
}

fn parse_time(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::new(ErrorCode::BadQuery, format!("{field}: {e}"))
                        .with_details(json!({"fields": {field: "an RFC 3339 time"}}))
                })
        })
        .transpose()
}

fn range(
    query: &ReadingsQuery,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let to = parse_time("to", query.to.as_deref())?.unwrap_or(now);
    let from = parse_time("from", query.from.as_deref())?.unwrap_or(to - chrono::Duration::days(1));
    if from > to {
        return Err(ApiError::new(ErrorCode::BadQuery, "from is after to"));
    }
    Ok((from, to))
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"))
}

/// Readings of one register, oldest first, as JSON or (with `Accept: text/csv`) as CSV
/// `time,value`.
#[utoipa::path(get, path = "/api/v1/readings", tag = "telemetry",
    security(("bearer" = []), ("api_key" = [])),
    params(ReadingsQuery),
    responses(
        (status = 200, description = "readings (JSON, or CSV with Accept: text/csv)", body = Object),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_readings(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    query: Result<Query<ReadingsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require_any(Role::Viewer, Scope::Read)?;
    let Query(query) = query?;
    caller.require_device(&query.device)?;
    let (from, to) = range(&query, state.now())?;
    let limit = query.limit.unwrap_or(1000).clamp(1, MAX_READINGS);
    let readings = state
        .store()
        .query_readings(&query.device, &query.register, from, to, limit)
        .await?;
    if wants_csv(&headers) {
        use std::fmt::Write as _;
        let mut csv = String::with_capacity(readings.len() * 40 + 16);
        csv.push_str("time,value\n");
        for r in &readings {
            let _ = writeln!(csv, "{},{}", r.time.to_rfc3339(), r.value);
        }
        return Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            )],
            csv,
        )
            .into_response());
    }
    let points: Vec<Value> = readings
        .iter()
        .map(|r| json!({"time": r.time, "value": r.value}))
        .collect();
    Ok(Json(json!({
        "device": query.device,
        "register": query.register,
        "readings": points,
    }))
    .into_response())
}

/// Min, max, average and count per bucket of one register, computed in the database.
#[utoipa::path(get, path = "/api/v1/readings/summary", tag = "telemetry",
    security(("bearer" = []), ("api_key" = [])),
    params(ReadingsQuery),
    responses(
        (status = 200, description = "buckets, oldest first; empty buckets left out", body = Object),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn summarize_readings(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ReadingsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_any(Role::Viewer, Scope::Read)?;
    let Query(query) = query?;
    caller.require_device(&query.device)?;
    let (from, to) = range(&query, state.now())?;
    let text = query.bucket.as_deref().unwrap_or("1h");
    let bucket: mycopod_specs::values::Duration = text.parse().map_err(|e| {
        ApiError::new(ErrorCode::BadQuery, format!("bucket: {e}"))
            .with_details(json!({"fields": {"bucket": "a duration such as 1m, 1h or 1d"}}))
    })?;
    let bucket = bucket.as_std();
    if bucket < std::time::Duration::from_secs(1) {
        return Err(ApiError::new(
            ErrorCode::BadQuery,
            "bucket must be at least 1s",
        ));
    }
    let span = (to - from).num_seconds();
    let secs = i64::try_from(bucket.as_secs()).unwrap_or(i64::MAX).max(1);
    if span / secs > MAX_BUCKETS {
        return Err(ApiError::new(
            ErrorCode::BadQuery,
            format!("more than {MAX_BUCKETS} buckets: use a longer bucket or a shorter range"),
        ));
    }
    let buckets = state
        .store()
        .summarize_readings(&query.device, &query.register, from, to, bucket)
        .await?;
    Ok(Json(json!({
        "device": query.device,
        "register": query.register,
        "bucket": text,
        "buckets": buckets,
    })))
}

/// `GET /alerts` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    /// Only alerts in this state: `pending`, `firing` or `resolved`.
    pub state: Option<String>,
    /// Most alerts returned (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// Alerts, newest first.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "telemetry",
    security(("bearer" = []), ("api_key" = [])),
    params(AlertsQuery),
    responses(
        (status = 200, description = "alerts, newest first", body = Vec<Object>),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<AlertsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_any(Role::Viewer, Scope::Read)?;
    let Query(query) = query?;
    let wanted = query
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(str::parse::<AlertState>)
        .transpose()
        .map_err(|e| {
            ApiError::new(ErrorCode::BadQuery, e.to_string())
                .with_details(json!({"fields": {"state": "pending, firing or resolved"}}))
        })?;
    let mut alerts = state
        .store()
        .list_alerts(wanted, query.limit.unwrap_or(100))
        .await?;
    // A key limited to devices sees only their alerts.
    alerts.retain(|a| caller.may_use_device(&a.device));
    serde_json::to_value(alerts)
        .map(Json)
        .map_err(|e| ApiError::internal("serialize alerts", &e))
}

/// Acknowledges an alert (operators and admins).
#[utoipa::path(post, path = "/api/v1/alerts/{id}/ack", tag = "telemetry",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "the alert")),
    responses(
        (status = 200, description = "the acknowledged alert", body = Object),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "already acknowledged", body = ErrorBody)))]
async fn ack_alert(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_role(Role::Operator)?;
    let Path(id) = id?;
    let store = state.store();
    if !store.ack_alert(id, &caller.name, state.now()).await? {
        // Not found answers 404 through the store error; otherwise it was acknowledged before.
        let alert = store.get_alert(id).await?;
        return Err(ApiError::new(
            ErrorCode::AlreadyAcknowledged,
            format!(
                "alert {id} was acknowledged by {}",
                alert.acknowledged_by.unwrap_or_default()
            ),
        ));
    }
    let alert = store.get_alert(id).await?;
    serde_json::to_value(alert)
        .map(Json)
        .map_err(|e| ApiError::internal("serialize alert", &e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn desired() -> mycopod_specs::DesiredState {
        let yaml = "apiVersion: mycopod/v1\nkind: ModbusDevice\nmetadata: {name: fm-1}\nspec:\n  connection: {tcp: {host: 127.0.0.1}}\n  registers:\n    - {name: flow_rate, table: holding, address: 0, type: f32}\n";
        mycopod_specs::check(&mycopod_specs::load_str("d.yaml", yaml))
            .unwrap()
            .desired
    }

    #[test]
    fn ingest_items_should_be_refused_with_a_reason_each() {
        let d = desired();
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let check = |v: Value| check_item(&v, Some(&d), now, chrono::Duration::seconds(30));
        let good = check(json!({"device": "fm-1", "register": "flow_rate",
                                "time": "2026-03-01T11:59:00Z", "value": 4.5}))
        .unwrap();
        assert_eq!(good.value, 4.5);
        assert_eq!(
            check(json!({"device": "fm-1", "register": "flow_rate", "value": 1}))
                .unwrap()
                .time,
            now
        );
        let reason = |v: Value| check(v).unwrap_err();
        assert!(
            reason(json!({"device": "fm-9", "register": "flow_rate", "value": 1}))
                .contains("unknown device fm-9")
        );
        assert!(
            reason(json!({"device": "fm-1", "register": "nope", "value": 1}))
                .contains("no register nope")
        );
        assert!(
            reason(json!({"device": "fm-1", "register": "flow_rate", "value": "4.5"}))
                .contains("must be a number")
        );
        assert!(
            reason(
                json!({"device": "fm-1", "register": "flow_rate", "value": 1,
                              "time": "2026-03-01T12:06:00Z"})
            )
            .contains("in the future")
        );
        // The skew allowed is a gateway's clock error, not minutes: 295 s ahead could stand
        // as the device's newest value and resolve a firing alert.
        assert!(
            reason(
                json!({"device": "fm-1", "register": "flow_rate", "value": 1,
                              "time": "2026-03-01T12:04:55Z"})
            )
            .contains("more than 30 s in the future")
        );
        assert!(
            check(
                json!({"device": "fm-1", "register": "flow_rate", "value": 1,
                         "time": "2026-03-01T12:00:25Z"})
            )
            .is_ok()
        );
        assert!(
            reason(
                json!({"device": "fm-1", "register": "flow_rate", "value": 1,
                              "time": "yesterday"})
            )
            .contains("RFC 3339")
        );
        assert!(reason(json!([1])).contains("must be an object"));
        assert!(
            check_item(
                &json!({"device": "fm-1", "register": "flow_rate", "value": 1}),
                None,
                now,
                chrono::Duration::seconds(30)
            )
            .unwrap_err()
            .contains("unknown device")
        );
    }
}
