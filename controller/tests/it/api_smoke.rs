//! Smoke test on a real socket: `api::app` served on 127.0.0.1:0 exactly as `serve` serves it
//! (`into_make_service_with_connect_info::<SocketAddr>()`), with a real `Control`, a real
//! SQLite store and a real HTTP client: sign in, approve a waiting run with its plan hash,
//! trigger a reconcile, and see the request reach the loop's end of the channel.
//!
//! `serve` itself (and the loop behind the channel) is the integrator's; once it is on main
//! this test should also run against the `mycopod serve` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::api_support;

use std::net::SocketAddr;
use std::time::Duration;

use api_support::{PASSWORD, rig};
use mycopod::model::{Role, Trigger};
use serde_json::{Value, json};

#[tokio::test]
async fn a_client_should_sign_in_approve_and_trigger_a_reconcile_over_a_real_socket() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut rig = rig().await;
        rig.user_with_password("ana", Role::Operator).await;
        let (run, hash) = rig.waiting_run("c0ffee", Some("someone-else"), None).await;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = rig.app.clone();
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        let base = format!("http://{addr}");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();

        let health = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        assert!(health.headers().contains_key("x-request-id"));

        let login: Value = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"username": "ana", "password": PASSWORD}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["access_token"].as_str().unwrap().to_owned();

        let detail: Value = client
            .get(format!("{base}/api/v1/runs/{run}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(detail["run"]["plan_hash"], hash);

        let approved: Value = client
            .post(format!("{base}/api/v1/runs/{run}/approve"))
            .bearer_auth(&token)
            .json(&json!({"plan_hash": hash, "comment": "smoke"}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(approved["status"], "approved");
        let woke = rig.triggers.recv().await.unwrap();
        // Approving wakes the loop but never makes the approver a run's requester (a
        // regression test: it did, so self-approval checks saw the approver as author).
        assert_eq!(woke.requested_by, None);

        let accepted = client
            .post(format!("{base}/api/v1/reconcile"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(accepted.status(), 202);
        let asked = rig.triggers.recv().await.unwrap();
        assert_eq!(asked.trigger, Trigger::Manual);
        assert_eq!(asked.requested_by.as_deref(), Some("ana"));

        let events = client
            .get(format!("{base}/api/v1/events"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(events.status(), 200);
        server.abort();
    })
    .await
    .unwrap();
}
