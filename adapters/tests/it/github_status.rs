//! Commit statuses through octocrab against a small GitHub-speaking server on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use mycopod_adapters::github::{CommitState, GitHub, GitHubError, RepoRef};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Fake {
    seen: Arc<Mutex<Vec<(String, String, Value)>>>,
}

async fn create_status(
    State(fake): State<Fake>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> impl IntoResponse {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    fake.seen
        .lock()
        .unwrap()
        .push((format!("{owner}/{repo}@{sha}"), auth, body.clone()));
    if sha == "unknown" {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({"message": "No commit found for SHA: unknown", "documentation_url": "https://docs.github.com/rest"}),
            ),
        );
    }
    (
        StatusCode::CREATED,
        Json(json!({
            "id": 1, "url": "http://x", "state": body["state"], "context": body["context"],
            "description": body["description"], "target_url": body["target_url"],
            "created_at": "2026-11-22T00:00:00Z", "updated_at": "2026-11-22T00:00:00Z"
        })),
    )
}

async fn start() -> (String, Fake) {
    let fake = Fake::default();
    let app = Router::new()
        .route("/repos/{owner}/{repo}/statuses/{sha}", post(create_status))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), fake)
}

fn repo() -> RepoRef {
    RepoRef::from_remote("https://github.com/acme/plant-gitops.git").unwrap()
}

#[tokio::test]
async fn a_status_should_reach_the_commit_with_context_description_and_token() {
    let (base, fake) = start().await;
    let github = GitHub::new(&base, "ghp_test".into(), "mycopod", Duration::from_secs(5)).unwrap();
    let sha = "3f2a9c1d2e4b5a6978877665544332211aabbccd";
    tokio::time::timeout(
        Duration::from_secs(20),
        github.post_status(
            &repo(),
            sha,
            CommitState::Pending,
            "waiting for approval: 2 to create",
            Some("http://mycopod.lan/runs/7"),
        ),
    )
    .await
    .unwrap()
    .unwrap();

    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (target, auth, body) = &seen[0];
    assert_eq!(target, &format!("acme/plant-gitops@{sha}"));
    assert!(auth.ends_with("ghp_test"), "{auth}");
    assert_eq!(body["state"], "pending");
    assert_eq!(body["context"], "mycopod");
    assert_eq!(body["description"], "waiting for approval: 2 to create");
    assert_eq!(body["target_url"], "http://mycopod.lan/runs/7");
}

#[tokio::test]
async fn a_refused_status_should_be_an_error_naming_repo_and_commit() {
    let (base, _fake) = start().await;
    let github = GitHub::new(&base, "t".into(), "mycopod", Duration::from_secs(5)).unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        github.post_status(&repo(), "unknown", CommitState::Failure, "x", None),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, GitHubError::PostStatus { .. }), "{err}");
    assert!(
        err.to_string().contains("acme/plant-gitops@unknown"),
        "{err}"
    );
}
