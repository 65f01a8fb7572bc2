//! The telemetry routes through the whole router (`oneshot`) on a real SQLite store: push
//! ingest with mixed good and bad items, wrong or missing keys and an oversized batch; devices,
//! readings as JSON and CSV, summaries per bucket; alerts listed and acknowledged by role;
//! pushed readings evaluated for alerts by the running telemetry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{DateTime, TimeZone, Utc};
use mycopod::api::auth::new_api_key;
use mycopod::api::{ApiSettings, AppState, Clock, app};
use mycopod::control::Control;
use mycopod::desired::Snapshot;
use mycopod::device_clients::DeviceClients;
use mycopod::events::Event;
use mycopod::model::{AlertState, ConfigKind, Role, Scope};
use mycopod::store::{Store, hash_password, hash_token};
use mycopod::telemetry::TelemetrySettings;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const TEST_TIMEOUT: Duration = Duration::from_secs(30);
const BODY_LIMIT: usize = 64 * 1024;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

const DEVICES: &str = "apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: fm-1}
spec:
  connection: {tcp: {host: 127.0.0.1, port: 5020}}
  registers:
    - {name: flow_rate, table: holding, address: 0, type: f32}
    - {name: status, table: holding, address: 10, type: u16}
";

struct Api {
    app: Router,
    store: Store,
    control: Control,
    ingest_key: String,
    read_key: String,
    operator: String,
    viewer: String,
    _dir: tempfile::TempDir,
}

impl Api {
    async fn start() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/api.db", dir.path().display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let desired = mycopod_specs::check(&mycopod_specs::load_str("d.yaml", DEVICES))
            .unwrap()
            .desired;
        let (control, _) = Control::new(store.events().clone(), now());
        control.set_desired(Snapshot {
            commit: "c1".into(),
            desired: Arc::new(desired),
            loaded_at: now(),
        });
        let mut settings = ApiSettings::new(&[7u8; 32]).unwrap();
        settings.body_limit_bytes = BODY_LIMIT;
        let token = |name: &'static str, role: Role| {
            let store = store.clone();
            let keys = settings.auth.keys.clone();
            async move {
                let hash = hash_password("a long enough password").unwrap();
                let user = store
                    .create_user(name, &hash, role, "test", now())
                    .await
                    .unwrap();
                keys.issue(
                    name,
                    user.id,
                    user.session_version,
                    now(),
                    chrono::Duration::minutes(15),
                )
                .unwrap()
            }
        };
        let operator = token("olga", Role::Operator).await;
        let viewer = token("victor", Role::Viewer).await;
        let key = |name: &'static str, scopes: Vec<Scope>| {
            let store = store.clone();
            async move {
                let key = new_api_key();
                store
                    .create_api_key(name, &hash_token(&key), &scopes, None, "test", now())
                    .await
                    .unwrap();
                key
            }
        };
        let ingest_key = key("gateway", vec![Scope::Ingest]).await;
        let read_key = key("grafana", vec![Scope::Read]).await;
        let state = AppState::with_settings(
            store.clone(),
            control.clone(),
            settings,
            Clock::manual(now()),
        );
        Api {
            app: app(state),
            store,
            control,
            ingest_key,
            read_key,
            operator,
            viewer,
            _dir: dir,
        }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, String, Option<String>) {
        let response = tokio::time::timeout(TEST_TIMEOUT, self.app.clone().oneshot(request))
            .await
            .expect("answer in time")
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            String::from_utf8(body.to_vec()).unwrap(),
            content_type,
        )
    }

    async fn ingest(&self, key: Option<&str>, body: String) -> (StatusCode, Value) {
        let mut request =
            Request::post("/api/v1/readings").header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        let (status, body, _) = self.send(request.body(Body::from(body)).unwrap()).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    async fn get(&self, uri: &str, bearer: &str) -> (StatusCode, Value) {
        let request = Request::get(uri)
            .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
            .body(Body::empty())
            .unwrap();
        let (status, body, _) = self.send(request).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    async fn post(&self, uri: &str, bearer: &str) -> (StatusCode, Value) {
        let request = Request::post(uri)
            .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
            .body(Body::empty())
            .unwrap();
        let (status, body, _) = self.send(request).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

fn item(register: &str, minutes_ago: i64, value: Value) -> Value {
    let time = now() - chrono::Duration::minutes(minutes_ago);
    json!({"device": "fm-1", "register": register, "time": time.to_rfc3339(), "value": value})
}

#[tokio::test]
async fn ingest_should_store_the_good_items_of_a_mixed_batch_and_reject_the_rest_with_a_reason() {
    let api = Api::start().await;
    let batch = json!([
        item("flow_rate", 2, json!(4.5)),
        {"device": "fm-9", "register": "flow_rate", "time": now().to_rfc3339(), "value": 1.0},
        item("nope", 1, json!(1.0)),
        item("flow_rate", 1, json!("4.7")),
        item("flow_rate", -60, json!(5.0)),
        item("status", 1, json!(3)),
        "not an object",
    ]);
    let (status, body) = api.ingest(Some(&api.ingest_key), batch.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["received"], 7);
    assert_eq!(body["stored"], 2);
    let rejected: Vec<(u64, String)> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let indices: Vec<u64> = rejected.iter().map(|r| r.0).collect();
    assert_eq!(indices, [1, 2, 3, 4, 6]);
    assert!(
        rejected[0].1.contains("unknown device fm-9"),
        "{rejected:?}"
    );
    assert!(rejected[1].1.contains("no register nope"), "{rejected:?}");
    assert!(rejected[2].1.contains("must be a number"), "{rejected:?}");
    assert!(rejected[3].1.contains("in the future"), "{rejected:?}");
    assert!(rejected[4].1.contains("must be an object"), "{rejected:?}");

    let stored = api
        .store
        .query_readings(
            "fm-1",
            "flow_rate",
            now() - chrono::Duration::hours(1),
            now(),
            10,
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].value, 4.5);
    // A single reading (not an array) is accepted too, and a push counts as seen.
    let (status, body) = api
        .ingest(
            Some(&api.ingest_key),
            item("flow_rate", 0, json!(4.6)).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stored"], 1);
    assert!(api.store.get_device("fm-1").await.unwrap().online);
}

#[tokio::test]
async fn ingest_should_refuse_a_wrong_or_missing_key() {
    let api = Api::start().await;
    let body = json!([item("flow_rate", 1, json!(1.0))]).to_string();
    let (status, error) = api.ingest(None, body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{error}");
    let wrong = new_api_key();
    let (status, error) = api.ingest(Some(&wrong), body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{error}");
    assert_eq!(error["error"]["code"], "invalid_api_key");
    // A key without the ingest scope is known but not allowed.
    let (status, error) = api.ingest(Some(&api.read_key), body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    let none = api
        .store
        .query_readings(
            "fm-1",
            "flow_rate",
            now() - chrono::Duration::days(1),
            now(),
            10,
        )
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn ingest_should_refuse_a_batch_over_the_size_limit() {
    let api = Api::start().await;
    let mut batch = Vec::new();
    while batch.len() * 100 < BODY_LIMIT * 2 {
        batch.push(item("flow_rate", (batch.len() % 1000) as i64, json!(1.0)));
    }
    let (status, error) = api
        .ingest(Some(&api.ingest_key), Value::Array(batch).to_string())
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    let none = api
        .store
        .query_readings(
            "fm-1",
            "flow_rate",
            now() - chrono::Duration::days(1),
            now(),
            10,
        )
        .await
        .unwrap();
    assert!(none.is_empty(), "nothing of a refused batch is stored");
}

#[tokio::test]
async fn readings_should_be_served_as_json_or_csv_and_summarized_per_bucket() {
    let api = Api::start().await;
    // Two hours of one reading per 10 minutes: 0, 1, ..., 11.
    let batch: Vec<Value> = (0..12)
        .map(|i| item("flow_rate", 120 - i * 10, json!(i as f64)))
        .collect();
    let (status, body) = api
        .ingest(Some(&api.ingest_key), Value::Array(batch).to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stored"], 12);

    let from = (now() - chrono::Duration::hours(2)).to_rfc3339();
    let to = now().to_rfc3339();
    let query = format!(
        "device=fm-1&register=flow_rate&from={}&to={}",
        urlencode(&from),
        urlencode(&to)
    );
    let (status, body) = api
        .get(&format!("/api/v1/readings?{query}&limit=3"), &api.read_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let values: Vec<f64> = body["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [0.0, 1.0, 2.0]);

    let request = Request::get(format!("/api/v1/readings?{query}&limit=2"))
        .header(header::AUTHORIZATION, format!("Bearer {}", api.viewer))
        .header(header::ACCEPT, "text/csv")
        .body(Body::empty())
        .unwrap();
    let (status, csv, content_type) = api.send(request).await;
    assert_eq!(status, StatusCode::OK, "{csv}");
    assert!(content_type.unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert_eq!(lines[0], "time,value");
    assert_eq!(
        lines[1],
        format!("{},0", (now() - chrono::Duration::hours(2)).to_rfc3339())
    );

    let (status, body) = api
        .get(
            &format!("/api/v1/readings/summary?{query}&bucket=1h"),
            &api.viewer,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let buckets: Vec<(f64, f64, f64, i64)> = body["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["min"].as_f64().unwrap(),
                b["max"].as_f64().unwrap(),
                b["avg"].as_f64().unwrap(),
                b["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(buckets, [(0.0, 5.0, 2.5, 6), (6.0, 11.0, 8.5, 6)]);
    let (status, _) = api
        .get(
            &format!("/api/v1/readings/summary?{query}&bucket=often"),
            &api.viewer,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = api.get("/api/v1/devices", &api.viewer).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body[0]["name"], "fm-1");
    assert_eq!(body[0]["online"], true);
    assert_eq!(body[0]["latest"][0]["register"], "flow_rate");
    assert_eq!(body[0]["latest"][0]["value"], 11.0);
}

#[tokio::test]
async fn alerts_should_be_listed_by_state_and_acknowledged_by_operators_only() {
    let api = Api::start().await;
    let (alert, _) = api
        .store
        .open_alert(
            "low-flow",
            "fm-1",
            AlertState::Firing,
            "critical",
            Some(1.2),
            now(),
        )
        .await
        .unwrap();
    let (status, body) = api.get("/api/v1/alerts?state=firing", &api.viewer).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.as_array().unwrap().len(), 1);
    assert_eq!(body[0]["rule"], "low-flow");
    let (status, body) = api.get("/api/v1/alerts?state=resolved", &api.viewer).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!([]));
    let (status, _) = api.get("/api/v1/alerts?state=bogus", &api.viewer).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let ack = format!("/api/v1/alerts/{}/ack", alert.id);
    let (status, _) = api.post(&ack, &api.viewer).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api.post(&ack, &api.ingest_key).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = api.post(&ack, &api.operator).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["acknowledged_by"], "olga");
    let (status, body) = api.post(&ack, &api.operator).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = api.post("/api/v1/alerts/999999/ack", &api.operator).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Waits for the store to announce that an alert reached `state`; returns its id.
async fn alert_event(events: &mut tokio::sync::broadcast::Receiver<Event>, state: &str) -> i64 {
    tokio::time::timeout(TEST_TIMEOUT, async {
        loop {
            if let Event::Alert { alert_id, state: s } = events.recv().await.unwrap()
                && s == state
            {
                return alert_id;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no alert became {state}"))
}

/// Regression: pushed readings were stored but never reached the alert evaluator, so a
/// gateway-fed device could neither fire nor resolve an alert.
#[tokio::test(flavor = "multi_thread")]
async fn pushed_readings_should_fire_an_alert_after_for_and_resolve_it_past_the_hysteresis() {
    let api = Api::start().await;
    api.store
        .upsert_config_object(
            ConfigKind::AlertRule,
            "low-flow",
            &json!({"device": "fm-1", "register": "flow_rate", "condition": {"below": 2.0},
                    "for": "5m", "hysteresis": 0.5}),
            "hash",
            "c1",
            now(),
        )
        .await
        .unwrap();
    let mut events = api.store.events().subscribe();
    let mut settings = TelemetrySettings::from_config(
        &mycopod::config::TelemetryConfig::default(),
        mycopod::secrets::Registry::default(),
    );
    settings.rules_reload_every = Duration::ZERO;
    let shutdown = CancellationToken::new();
    let telemetry = mycopod::telemetry::spawn(
        api.store.clone(),
        api.control.desired(),
        api.control.sample_slot(),
        DeviceClients::new(),
        settings,
        shutdown.clone(),
    )
    .unwrap();
    let push = async |items: Vec<Value>| {
        let (status, body) = api
            .ingest(Some(&api.ingest_key), Value::Array(items).to_string())
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["rejected"], json!([]));
    };

    // Under 2.0 from 15 minutes ago; held for `for` (5 minutes) 10 minutes ago. The batch
    // arrives newest first: the evaluator must see it in time order.
    push(vec![
        item("flow_rate", 10, json!(1.2)),
        item("flow_rate", 12, json!(1.8)),
        item("flow_rate", 15, json!(1.5)),
        item("flow_rate", 20, json!(3.0)),
    ])
    .await;
    let fired = alert_event(&mut events, "firing").await;
    // Back over 2.0 but inside the hysteresis band: still firing. Then past 2.5: resolved.
    push(vec![item("flow_rate", 8, json!(2.3))]).await;
    push(vec![item("flow_rate", 6, json!(2.6))]).await;
    let resolved = alert_event(&mut events, "resolved").await;
    assert_eq!(fired, resolved);

    let alerts = api.store.list_alerts(None, 10).await.unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let minutes_ago = |m: i64| now() - chrono::Duration::minutes(m);
    assert_eq!(alerts[0].state, AlertState::Resolved);
    assert_eq!(alerts[0].opened_at, minutes_ago(15));
    assert_eq!(alerts[0].firing_at, Some(minutes_ago(10)));
    assert_eq!(alerts[0].resolved_at, Some(minutes_ago(6)));
    assert_eq!(alerts[0].value, Some(2.6));

    shutdown.cancel();
    tokio::time::timeout(TEST_TIMEOUT, telemetry)
        .await
        .unwrap()
        .unwrap();
    assert!(
        api.control.sample_feed().is_none(),
        "telemetry let go of the feed"
    );
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn a_reading_dated_minutes_ahead_should_be_refused_and_a_skewed_one_stored() {
    let api = Api::start().await;
    let at = |seconds: i64| {
        json!({"device": "fm-1", "register": "flow_rate",
               "time": (now() + chrono::Duration::seconds(seconds)).to_rfc3339(), "value": 1.0})
    };
    // 295 s ahead: what one ingest key used to resolve a firing alert and blind the rules.
    let batch = json!([at(295), at(10)]);
    let (status, body) = api.ingest(Some(&api.ingest_key), batch.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stored"], 1, "{body}");
    assert_eq!(body["rejected"][0]["index"], 0, "{body}");
    assert!(
        body["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("more than 30 s in the future"),
        "{body}"
    );
}

/// The attacker holds a key scoped to another device: its pushes for `fm-1` are refused item
/// by item (nothing stored, no alert moved), and it can neither read `fm-1`'s readings nor
/// see the device listed. The admin listing shows the scope.
#[tokio::test]
async fn a_key_scoped_to_devices_should_push_and_read_only_those() {
    let api = Api::start().await;
    let (status, body) = api
        .ingest(
            Some(&api.ingest_key),
            json!([item("flow_rate", 5, json!(4.0))]).to_string(),
        )
        .await;
    assert_eq!((status, body["stored"].clone()), (StatusCode::OK, json!(1)));

    let scoped = new_api_key();
    let devices = ["fm-2".to_owned()];
    api.store
        .create_api_key(
            "other-gateway",
            &hash_token(&scoped),
            &[Scope::Ingest, Scope::Read],
            Some(&devices),
            "test",
            now(),
        )
        .await
        .unwrap();
    let (status, body) = api
        .ingest(
            Some(&scoped),
            json!([
                item("flow_rate", 1, json!(99.0)),
                item("flow_rate", 0, json!(98.0))
            ])
            .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stored"], 0, "{body}");
    let reasons: Vec<&str> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons, ["this API key is not scoped to device fm-1"; 2],
        "{body}"
    );
    let stored = api
        .store
        .query_readings(
            "fm-1",
            "flow_rate",
            now() - chrono::Duration::hours(1),
            now() + chrono::Duration::hours(1),
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        stored.len(),
        1,
        "only the unscoped key's reading: {stored:?}"
    );

    let (status, body) = api
        .get("/api/v1/readings?device=fm-1&register=flow_rate", &scoped)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = api
        .get(
            "/api/v1/readings/summary?device=fm-1&register=flow_rate",
            &scoped,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = api.get("/api/v1/devices", &scoped).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!([]),
        "fm-1 is not listed to a key scoped to fm-2"
    );
    // The unscoped read key still sees it.
    let (status, body) = api.get("/api/v1/devices", &api.read_key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");

    let keys = api.store.list_api_keys().await.unwrap();
    let listed = keys.iter().find(|k| k.name == "other-gateway").unwrap();
    assert_eq!(listed.devices.as_deref(), Some(&devices[..]));
}
