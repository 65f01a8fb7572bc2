//! `declarations::translate` with the real LLM client against the OpenAI-compatible simulator:
//! timeouts and rate limits surface with their class, the schema fallback and refused kinds
//! go through the correction round. Every test runs under a time limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use chrono::TimeZone;
use mycopod::declarations::{self, Request, TranslateError};
use mycopod_adapters::llm::sim::{LlmSim, Reply};
use mycopod_adapters::llm::{ErrorClass, LlmClient, LlmError, LlmSettings};
use mycopod_specs::kinds::Kind;

const PLANT: &str = r#"apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {name: flow-01}
spec:
  connection: {tcp: {host: 10.0.0.21, port: 502}}
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

async fn limited<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test took longer than 20 s")
}

fn client(sim: &LlmSim, timeout: Duration) -> LlmClient {
    let mut settings = LlmSettings::new(sim.base_url(), "test-model");
    settings.timeout = timeout;
    settings.backoff = Duration::from_millis(10);
    LlmClient::new(settings).unwrap()
}

fn request(kinds: Vec<Kind>) -> Request {
    Request {
        name: "low-flow-alert".into(),
        text: "alert me if flow-01 drops below 2 m3/h for five minutes".into(),
        kinds,
        file: "declarations/low-flow-alert.yaml".into(),
    }
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 22, 3, 30, 0)
        .unwrap()
}

#[tokio::test]
async fn a_bare_json_answer_should_become_a_labelled_alert_rule() {
    limited(async {
        let repo = mycopod_specs::load_str("plant.yaml", PLANT);
        let sim = LlmSim::start(vec![Reply::content(ALERT_JSON)])
            .await
            .unwrap();
        let t = declarations::translate(
            &client(&sim, Duration::from_secs(10)),
            &repo,
            &request(vec![]),
            now(),
        )
        .await
        .unwrap();
        assert_eq!(t.documents, vec![(Kind::AlertRule, "low-flow".to_owned())]);
        assert_eq!(t.answers, 1);
        assert_eq!(
            t.key,
            declarations::cache_key(
                "alert me if flow-01 drops below 2 m3/h for five minutes",
                "test-model",
                declarations::PROMPT_VERSION
            )
        );
        assert!(t.yaml.contains("# generated at: 2026-11-22T03:30:00Z\n"));
        assert!(t.yaml.contains("mycopod/declaration: low-flow-alert"));
        let user = sim.requests()[0].contents().pop().unwrap();
        assert!(
            user.contains("flow-01 (tcp; registers: flow_rate [holding f32, m3/h])"),
            "{user}"
        );
        assert!(user.contains("  - ops\n"), "{user}");
    })
    .await;
}

#[tokio::test]
async fn a_model_that_does_not_answer_should_fail_as_a_transient_model_error() {
    limited(async {
        let repo = mycopod_specs::load_str("plant.yaml", PLANT);
        let sim = LlmSim::start(vec![Reply::Hang]).await.unwrap();
        let err = declarations::translate(
            &client(&sim, Duration::from_millis(300)),
            &repo,
            &request(vec![]),
            now(),
        )
        .await
        .unwrap_err();
        let TranslateError::Model { source, .. } = &err else {
            panic!("expected a model error, got {err:?}");
        };
        assert!(matches!(source, LlmError::Timeout { .. }), "{source:?}");
        assert_eq!(source.class(), ErrorClass::Transient);
    })
    .await;
}

#[tokio::test]
async fn a_rate_limit_should_be_waited_out_before_the_translation_goes_on() {
    limited(async {
        let repo = mycopod_specs::load_str("plant.yaml", PLANT);
        let sim = LlmSim::start(vec![Reply::rate_limited(1), Reply::content(ALERT_JSON)])
            .await
            .unwrap();
        let t = declarations::translate(
            &client(&sim, Duration::from_secs(10)),
            &repo,
            &request(vec![]),
            now(),
        )
        .await
        .unwrap();
        assert_eq!(t.answers, 1);
        let r = sim.requests();
        assert_eq!(r.len(), 2);
        assert!(r[1].at.duration_since(r[0].at) >= Duration::from_secs(1));
    })
    .await;
}

#[tokio::test]
async fn an_endpoint_without_schema_support_should_get_json_mode_for_both_rounds() {
    limited(async {
        let repo = mycopod_specs::load_str("plant.yaml", PLANT);
        let wrong = ALERT_JSON.replace("flow_rate", "flowrate");
        let sim = LlmSim::start(vec![Reply::content(wrong), Reply::content(ALERT_JSON)])
            .await
            .unwrap();
        sim.refuse_json_schema(true);
        let t = declarations::translate(
            &client(&sim, Duration::from_secs(10)),
            &repo,
            &request(vec![]),
            now(),
        )
        .await
        .unwrap();
        assert_eq!(t.answers, 2);
        let formats: Vec<String> = sim
            .requests()
            .iter()
            .map(|r| r.response_format().unwrap_or("none").to_owned())
            .collect();
        assert_eq!(formats, ["json_schema", "json_object", "json_object"]);
        let feedback = sim.requests()[2].contents().pop().unwrap();
        assert!(feedback.contains("flowrate"), "{feedback}");
    })
    .await;
}

#[tokio::test]
async fn a_kind_the_declaration_does_not_allow_should_be_sent_back_as_a_finding() {
    limited(async {
        let repo = mycopod_specs::load_str("plant.yaml", PLANT);
        let policy = r#"```yaml
apiVersion: mycopod/v1
kind: HandshakePolicy
metadata: {name: auto}
spec: {match: {kinds: [AlertRule]}, approvals: 0}
---
"#
        .to_owned()
            + &ALERT_JSON.replace('\n', " ")
            + "\n```";
        let sim = LlmSim::start(vec![Reply::content(policy), Reply::content(ALERT_JSON)])
            .await
            .unwrap();
        let t = declarations::translate(
            &client(&sim, Duration::from_secs(10)),
            &repo,
            &request(vec![Kind::AlertRule]),
            now(),
        )
        .await
        .unwrap();
        assert_eq!(t.answers, 2);
        assert_eq!(t.documents, vec![(Kind::AlertRule, "low-flow".to_owned())]);
        let feedback = sim.requests()[1].contents().pop().unwrap();
        assert!(
            feedback.contains("kind HandshakePolicy may not be generated"),
            "{feedback}"
        );
        let schema = &sim.requests()[0].body["response_format"]["json_schema"]["schema"];
        assert_eq!(
            schema["properties"]["documents"]["items"]["properties"]["kind"]["enum"],
            serde_json::json!(["AlertRule"])
        );
    })
    .await;
}
