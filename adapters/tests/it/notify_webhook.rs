//! Webhook notifications against a real HTTP receiver on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use mycopod_adapters::notify::{DeliveryError, Webhook, WebhookSender};
use mycopod_adapters::signing::verify_sha256;
use serde_json::json;

#[derive(Clone, Default)]
struct Receiver {
    /// Statuses to answer, first to last; afterwards 204.
    script: Arc<Mutex<Vec<u16>>>,
    delay: Duration,
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

async fn receive(State(rx): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    rx.seen.lock().unwrap().push((headers, body));
    tokio::time::sleep(rx.delay).await;
    let next = {
        let mut script = rx.script.lock().unwrap();
        if script.is_empty() {
            204
        } else {
            script.remove(0)
        }
    };
    StatusCode::from_u16(next).unwrap()
}

async fn start(rx: Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/hook", post(receive)).with_state(rx);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .expect("in time")
}

#[tokio::test]
async fn a_delivery_should_carry_a_signature_the_receiver_can_verify() {
    let rx = Receiver::default();
    let url = start(rx.clone()).await;
    let sender = WebhookSender::new(Duration::from_secs(5)).unwrap();
    let body = json!({"event": "alert.firing", "rule": "low-flow", "value": 1.5});
    let hook = Webhook {
        url: &url,
        secret: Some(b"s3cret".as_slice()),
        event: "alert.firing",
        delivery_id: "d-1",
        body: &body,
    };
    let delivered = within(sender.send(&hook)).await.unwrap();
    assert_eq!(delivered.status, 204);

    let seen = rx.seen.lock().unwrap();
    let (headers, raw) = &seen[0];
    let signature = headers["x-mycopod-signature"].to_str().unwrap();
    assert!(verify_sha256(b"s3cret", raw, signature));
    assert!(!verify_sha256(b"wrong", raw, signature));
    assert_eq!(headers["x-mycopod-event"], "alert.firing");
    assert_eq!(headers["x-mycopod-delivery"], "d-1");
    assert_eq!(headers["content-type"], "application/json");
    let parsed: serde_json::Value = serde_json::from_slice(raw).unwrap();
    assert_eq!(parsed, body);
}

#[tokio::test]
async fn server_errors_and_throttling_should_be_transient_and_client_errors_final() {
    let rx = Receiver {
        script: Arc::new(Mutex::new(vec![503, 429, 400, 410])),
        ..Receiver::default()
    };
    let url = start(rx).await;
    let sender = WebhookSender::new(Duration::from_secs(5)).unwrap();
    let body = json!({});
    let hook = Webhook {
        url: &url,
        secret: None,
        event: "e",
        delivery_id: "d",
        body: &body,
    };
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.push(match within(sender.send(&hook)).await {
            Ok(d) => (d.status, false),
            Err(e) => (e.status().unwrap(), e.is_transient()),
        });
    }
    assert_eq!(
        outcomes,
        [
            (503, true),
            (429, true),
            (400, false),
            (410, false),
            (204, false)
        ]
    );
}

#[tokio::test]
async fn a_slow_receiver_should_time_out_as_transient() {
    let rx = Receiver {
        delay: Duration::from_secs(5),
        ..Receiver::default()
    };
    let url = start(rx).await;
    let sender = WebhookSender::new(Duration::from_millis(200)).unwrap();
    let body = json!({});
    let hook = Webhook {
        url: &url,
        secret: None,
        event: "e",
        delivery_id: "d",
        body: &body,
    };
    let err = within(sender.send(&hook)).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Timeout { .. }), "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_receiver_that_is_down_should_fail_as_transient() {
    // Bind and drop to get a loopback port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    let sender = WebhookSender::new(Duration::from_secs(2)).unwrap();
    let body = json!({});
    let hook = Webhook {
        url: &url,
        secret: None,
        event: "e",
        delivery_id: "d",
        body: &body,
    };
    let err = within(sender.send(&hook)).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
}
