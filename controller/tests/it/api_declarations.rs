//! `POST/GET /api/v1/declarations` against a real SQLite store and an OpenAI-compatible test
//! server on loopback that replays canned answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::api_support;

use std::sync::Arc;
use std::time::Duration;

use api_support::rig;
use axum::http::{Method, StatusCode};
use mycopod::model::Role;
use mycopod_adapters::llm::sim::{LlmSim, Reply};
use mycopod_adapters::llm::{LlmClient, LlmSettings};
use serde_json::json;

const PLANT: &str = r#"apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: flow-01}
spec:
  connection: {tcp: {host: 127.0.0.1, port: 1502}}
  registers:
    - {name: flow_rate, table: holding, address: 0, type: f32, unit: m3/h}
---
apiVersion: mycopod/v1
kind: NotificationChannel
metadata: {name: ops}
spec: {webhook: {url: "https://hooks.lan/mycopod", secretEnv: OPS_HOOK_SECRET}}
"#;

const ALERT_JSON: &str = r#"{"apiVersion": "mycopod/v1", "kind": "AlertRule", "metadata": {"name": "low-flow"},
  "spec": {"device": "flow-01", "register": "flow_rate", "condition": {"below": 2.0}, "for": "5m", "notify": ["ops"]}}"#;

fn model(sim: &LlmSim) -> LlmClient {
    let mut settings = LlmSettings::new(sim.base_url(), "test-model");
    settings.timeout = Duration::from_secs(5);
    settings.backoff = Duration::from_millis(10);
    LlmClient::new(settings).unwrap()
}

#[tokio::test]
async fn a_valid_answer_should_return_labelled_yaml_and_store_its_provenance() {
    let sim = LlmSim::start(vec![Reply::content(ALERT_JSON)])
        .await
        .unwrap();
    let rig = rig().await;
    rig.control.set_model(Some(model(&sim)));
    rig.control
        .set_files(Arc::new(mycopod_specs::load_str("plant.yaml", PLANT)));
    let operator = rig.token("ops", Role::Operator).await;
    let text = "alert me if flow-01 drops below 2 m3/h for five minutes";
    let answer = rig
        .call(
            Method::POST,
            "/api/v1/declarations",
            Some(&operator),
            Some(json!({"name": "low-flow", "text": text, "kinds": ["AlertRule"]})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let yaml = answer.body["yaml"].as_str().unwrap();
    assert!(yaml.contains("kind: AlertRule"), "{yaml}");
    assert!(yaml.contains("mycopod/declaration: low-flow"), "{yaml}");
    let provenance = &answer.body["provenance"];
    assert_eq!(provenance["model"], "test-model");
    assert_eq!(provenance["requested_by"], "ops");
    assert_eq!(
        provenance["text_sha256"].as_str().unwrap(),
        mycopod::declarations::output::sha256_hex(text.as_bytes())
    );
    assert_eq!(
        provenance["yaml_sha256"].as_str().unwrap(),
        mycopod::declarations::output::sha256_hex(yaml.as_bytes())
    );
    assert_eq!(
        provenance["prompt_version"],
        json!(mycopod::declarations::PROMPT_VERSION)
    );

    let viewer = rig.token("viewer", Role::Viewer).await;
    let id = answer.body["id"].as_i64().unwrap();
    let one = rig
        .call(
            Method::GET,
            &format!("/api/v1/declarations/{id}"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body, answer.body, "stored as returned");
    let list = rig
        .call(Method::GET, "/api/v1/declarations", Some(&viewer), None)
        .await;
    assert_eq!(list.body["declarations"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn garbage_twice_should_be_a_clear_failure_stored_as_invalid() {
    let sim = LlmSim::start(vec![
        Reply::content("I cannot help"),
        Reply::content("nope"),
    ])
    .await
    .unwrap();
    let rig = rig().await;
    rig.control.set_model(Some(model(&sim)));
    let operator = rig.token("ops", Role::Operator).await;
    let answer = rig
        .call(
            Method::POST,
            "/api/v1/declarations",
            Some(&operator),
            Some(json!({"text": "a pihole container"})),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
    assert_eq!(answer.code(), "translation_invalid");
    let details = &answer.body["error"]["details"];
    assert!(!details["diagnostics"].as_array().unwrap().is_empty());
    assert_eq!(details["last_answer"], "nope");
    let id = details["id"].as_i64().unwrap();
    let stored = rig
        .call(
            Method::GET,
            &format!("/api/v1/declarations/{id}"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(stored.body["status"], "invalid");
    assert!(
        stored.body["yaml"].is_null(),
        "nothing generated is kept as applicable"
    );
    assert_eq!(sim.requests().len(), 2, "one answer and one correction");
}

#[tokio::test]
async fn without_a_model_the_request_should_be_refused_with_503() {
    let rig = rig().await;
    let operator = rig.token("ops", Role::Operator).await;
    let answer = rig
        .call(
            Method::POST,
            "/api/v1/declarations",
            Some(&operator),
            Some(json!({"text": "a pihole container"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.code(), "no_model");
}

#[tokio::test]
async fn bad_fields_should_be_named_in_a_422() {
    let rig = rig().await;
    let operator = rig.token("ops", Role::Operator).await;
    let answer = rig
        .call(
            Method::POST,
            "/api/v1/declarations",
            Some(&operator),
            Some(json!({"name": "Not A Name", "text": "  ", "kinds": ["Declaration"]})),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
    let text = answer.text.clone();
    for field in ["name", "text", "kinds"] {
        assert!(text.contains(&format!("\"{field}\"")), "{field} in {text}");
    }
}
