//! The LLM client (async-openai) against the OpenAI-compatible simulator on loopback: answers,
//! retries on 429 and 5xx, the schema fallback, timeouts. Every test runs under a time limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use mycopod_adapters::llm::sim::{LlmSim, Reply};
use mycopod_adapters::llm::{
    ErrorClass, LlmClient, LlmError, LlmSettings, Message, OutputMode, OutputSchema,
};
use serde_json::json;

async fn limited<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test took longer than 20 s")
}

fn client(sim: &LlmSim) -> LlmClient {
    let mut settings = LlmSettings::new(sim.base_url(), "qwen2.5:7b");
    settings.api_key = Some("sk-test".into());
    settings.timeout = Duration::from_secs(10);
    settings.backoff = Duration::from_millis(20);
    LlmClient::new(settings).unwrap()
}

fn schema() -> OutputSchema {
    OutputSchema {
        name: "mycopod_documents".into(),
        schema: json!({"type": "object", "properties": {"documents": {"type": "array"}}}),
    }
}

fn messages() -> Vec<Message> {
    vec![
        Message::system("answer in JSON"),
        Message::user("a container for pi-hole"),
    ]
}

#[tokio::test]
async fn a_valid_answer_should_come_back_with_the_schema_request_and_the_key() {
    limited(async {
        let sim = LlmSim::start(vec![Reply::content(r#"{"documents": []}"#)])
            .await
            .unwrap();
        let answer = client(&sim).complete(&messages(), &schema()).await.unwrap();
        assert_eq!(answer.content, r#"{"documents": []}"#);
        assert_eq!(answer.mode, OutputMode::JsonSchema);
        assert_eq!(answer.model, "qwen2.5:7b");
        assert_eq!(answer.requests, 1);
        let requests = sim.requests();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!(r.authorization.as_deref(), Some("Bearer sk-test"));
        assert_eq!(r.response_format(), Some("json_schema"));
        assert_eq!(
            r.body["response_format"]["json_schema"]["name"],
            "mycopod_documents"
        );
        assert_eq!(
            r.body["response_format"]["json_schema"]["schema"],
            schema().schema
        );
        assert_eq!(r.body["model"], "qwen2.5:7b");
        assert_eq!(r.body["messages"][0]["role"], "system");
        assert_eq!(
            r.contents(),
            vec!["answer in JSON", "a container for pi-hole"]
        );
    })
    .await;
}

#[tokio::test]
async fn a_429_should_be_retried_after_the_retry_after_delay() {
    limited(async {
        let sim = LlmSim::start(vec![Reply::rate_limited(1), Reply::content("{}")])
            .await
            .unwrap();
        let answer = client(&sim).complete(&messages(), &schema()).await.unwrap();
        assert_eq!(answer.content, "{}");
        assert_eq!(answer.requests, 2);
        let requests = sim.requests();
        assert_eq!(requests.len(), 2);
        // The backoff alone would be 20 ms: a gap of a second or more is Retry-After's.
        let gap = requests[1].at.duration_since(requests[0].at);
        assert!(gap >= Duration::from_secs(1), "waited only {gap:?}");
    })
    .await;
}

#[tokio::test]
async fn a_retry_after_longer_than_allowed_should_end_the_call_as_rate_limited() {
    limited(async {
        let sim = LlmSim::start(vec![Reply::rate_limited(3600), Reply::content("{}")])
            .await
            .unwrap();
        let err = client(&sim)
            .complete(&messages(), &schema())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                LlmError::RateLimited {
                    attempts: 1,
                    retry_after: Some(d),
                    ..
                } if d == Duration::from_secs(3600)
            ),
            "{err:?}"
        );
        assert_eq!(err.class(), ErrorClass::Transient);
        assert_eq!(sim.requests().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_retry_after_beyond_the_call_deadline_should_end_as_rate_limited_not_as_a_timeout() {
    limited(async {
        let sim = LlmSim::start(vec![Reply::rate_limited(5), Reply::content("{}")])
            .await
            .unwrap();
        let mut settings = client(&sim).settings().clone();
        settings.timeout = Duration::from_secs(2);
        let err = LlmClient::new(settings)
            .unwrap()
            .complete(&messages(), &schema())
            .await
            .unwrap_err();
        assert!(
            matches!(err, LlmError::RateLimited { attempts: 1, .. }),
            "{err:?}"
        );
        assert_eq!(sim.requests().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn server_errors_should_be_retried_with_backoff_and_then_succeed() {
    limited(async {
        let sim = LlmSim::start(vec![
            Reply::server_error(503),
            Reply::server_error(500),
            Reply::content("{}"),
        ])
        .await
        .unwrap();
        let answer = client(&sim).complete(&messages(), &schema()).await.unwrap();
        assert_eq!(answer.requests, 3);
        let r = sim.requests();
        // 20 ms, then 40 ms, each jittered into its upper half.
        assert!(r[1].at.duration_since(r[0].at) >= Duration::from_millis(10));
        assert!(r[2].at.duration_since(r[1].at) >= Duration::from_millis(20));
    })
    .await;
}

#[tokio::test]
async fn server_errors_should_stop_after_the_last_attempt() {
    limited(async {
        let sim = LlmSim::start(vec![
            Reply::server_error(502),
            Reply::server_error(502),
            Reply::server_error(502),
            Reply::content("{}"),
        ])
        .await
        .unwrap();
        let err = client(&sim)
            .complete(&messages(), &schema())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                LlmError::Server {
                    status: 502,
                    attempts: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.class(), ErrorClass::Transient);
        assert_eq!(sim.pending(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_model_that_does_not_answer_should_time_out() {
    limited(async {
        let sim = LlmSim::start(vec![Reply::Hang]).await.unwrap();
        let mut settings = client(&sim).settings().clone();
        settings.timeout = Duration::from_millis(300);
        let err = LlmClient::new(settings)
            .unwrap()
            .complete(&messages(), &schema())
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::Timeout { .. }), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Transient);
        assert!(err.to_string().contains("qwen2.5:7b"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_refused_schema_should_fall_back_to_json_mode_for_the_client_lifetime() {
    limited(async {
        let sim = LlmSim::start(vec![Reply::content("{}"), Reply::content("{}")])
            .await
            .unwrap();
        sim.refuse_json_schema(true);
        let client = client(&sim);
        let answer = client.complete(&messages(), &schema()).await.unwrap();
        assert_eq!(answer.mode, OutputMode::JsonObject);
        assert_eq!(answer.requests, 2);
        assert_eq!(client.mode(), OutputMode::JsonObject);
        let second = client.complete(&messages(), &schema()).await.unwrap();
        assert_eq!(second.requests, 1);
        let formats: Vec<_> = sim
            .requests()
            .iter()
            .map(|r| r.response_format().unwrap_or("none").to_owned())
            .collect();
        assert_eq!(formats, ["json_schema", "json_object", "json_object"]);
    })
    .await;
}

#[tokio::test]
async fn a_bad_request_for_another_reason_should_be_refused_without_retry() {
    limited(async {
        let sim = LlmSim::start(vec![
            Reply::Status {
                status: 404,
                headers: vec![],
                body: r#"{"error":{"message":"model 'qwen2.5:7b' not found"}}"#.into(),
            },
            Reply::content("{}"),
        ])
        .await
        .unwrap();
        let err = client(&sim)
            .complete(&messages(), &schema())
            .await
            .unwrap_err();
        assert!(
            matches!(err, LlmError::Refused { status: 404, .. }),
            "{err:?}"
        );
        assert_eq!(err.class(), ErrorClass::Rejected);
        assert!(err.to_string().contains("not found"), "{err}");
        assert_eq!(sim.requests().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_endpoint_should_fail_after_the_attempts_as_transient() {
    limited(async {
        // Bind, learn the port, close: nothing listens there any more.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut settings = LlmSettings::new(format!("http://127.0.0.1:{port}/v1"), "m");
        settings.backoff = Duration::from_millis(10);
        let err = LlmClient::new(settings)
            .unwrap()
            .complete(&messages(), &schema())
            .await
            .unwrap_err();
        assert!(
            matches!(err, LlmError::Connect { attempts: 3, .. }),
            "{err:?}"
        );
        assert_eq!(err.class(), ErrorClass::Transient);
    })
    .await;
}

#[tokio::test]
async fn an_empty_answer_should_be_an_error() {
    limited(async {
        let sim = LlmSim::start(vec![Reply::content("   ")]).await.unwrap();
        let err = client(&sim)
            .complete(&messages(), &schema())
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::EmptyAnswer { .. }), "{err:?}");
    })
    .await;
}
