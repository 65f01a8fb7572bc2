//! The role matrix (each principal against each route: allowed or 403; no credentials: 401)
//! from one table, and the checks that keep that table, the router and `/openapi.json` the
//! same: every documented route is in the table and served, every table row is documented,
//! and no route in `src/api` bypasses the documented registration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::api_support;

use std::collections::BTreeSet;

use api_support::rig;
use axum::http::{Method, StatusCode};
use mycopod::model::{Role, Scope};
use serde_json::{Value, json};

/// Who calls: users by role, API keys by scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Viewer,
    Operator,
    Admin,
    ReadKey,
    TriggerKey,
    IngestKey,
}

const EVERYONE: &[Who] = &[
    Who::Viewer,
    Who::Operator,
    Who::Admin,
    Who::ReadKey,
    Who::TriggerKey,
    Who::IngestKey,
];

/// Who may use a route. `Public` routes need no credentials at all.
#[derive(Debug, Clone, Copy)]
enum Access {
    Public,
    Only(&'static [Who]),
}

use Who::*;

const READERS: Access = Access::Only(&[Viewer, Operator, Admin, ReadKey]);
const DECIDERS: Access = Access::Only(&[Operator, Admin]);
const TRIGGERERS: Access = Access::Only(&[Operator, Admin, TriggerKey]);
const ADMINS: Access = Access::Only(&[Admin]);
const ANY_CALLER: Access = Access::Only(EVERYONE);

/// Every route of the API: method, path as documented, the path requested (ids filled in),
/// a body, and who may call it. A route missing here fails `every_documented_route_...`.
fn table(run: i64) -> Vec<(Method, &'static str, String, Option<Value>, Access)> {
    let decision = Some(json!({"plan_hash": "hash-c1"}));
    vec![
        (
            Method::GET,
            "/healthz",
            "/healthz".into(),
            None,
            Access::Public,
        ),
        (
            Method::GET,
            "/readyz",
            "/readyz".into(),
            None,
            Access::Public,
        ),
        (
            Method::GET,
            "/metrics",
            "/metrics".into(),
            None,
            Access::Public,
        ),
        (
            Method::GET,
            "/openapi.json",
            "/openapi.json".into(),
            None,
            Access::Public,
        ),
        (
            Method::POST,
            "/api/v1/auth/login",
            "/api/v1/auth/login".into(),
            Some(json!({"username": "x", "password": "y"})),
            Access::Public,
        ),
        (
            Method::POST,
            "/api/v1/auth/refresh",
            "/api/v1/auth/refresh".into(),
            Some(json!({"refresh_token": "nope"})),
            Access::Public,
        ),
        (
            Method::POST,
            "/api/v1/auth/logout",
            "/api/v1/auth/logout".into(),
            Some(json!({"refresh_token": "nope"})),
            Access::Public,
        ),
        (
            Method::POST,
            "/api/v1/webhooks/github",
            "/api/v1/webhooks/github".into(),
            Some(json!({})),
            Access::Public,
        ),
        (
            Method::GET,
            "/api/v1/auth/me",
            "/api/v1/auth/me".into(),
            None,
            ANY_CALLER,
        ),
        (
            Method::GET,
            "/api/v1/users",
            "/api/v1/users".into(),
            None,
            ADMINS,
        ),
        (
            Method::POST,
            "/api/v1/users",
            "/api/v1/users".into(),
            Some(json!({"name": "new-user", "password": "x", "role": "viewer"})),
            ADMINS,
        ),
        (
            Method::PATCH,
            "/api/v1/users/{name}",
            "/api/v1/users/nobody".into(),
            Some(json!({"disabled": false})),
            ADMINS,
        ),
        (
            Method::GET,
            "/api/v1/api-keys",
            "/api/v1/api-keys".into(),
            None,
            ADMINS,
        ),
        (
            Method::POST,
            "/api/v1/api-keys",
            "/api/v1/api-keys".into(),
            Some(json!({"name": "k", "scopes": ["read"]})),
            ADMINS,
        ),
        (
            Method::DELETE,
            "/api/v1/api-keys/{id}",
            "/api/v1/api-keys/999999".into(),
            None,
            ADMINS,
        ),
        (
            Method::GET,
            "/api/v1/audit",
            "/api/v1/audit".into(),
            None,
            ADMINS,
        ),
        (
            Method::GET,
            "/api/v1/runs",
            "/api/v1/runs".into(),
            None,
            READERS,
        ),
        (
            Method::GET,
            "/api/v1/runs/{id}",
            format!("/api/v1/runs/{run}"),
            None,
            READERS,
        ),
        (
            Method::POST,
            "/api/v1/runs/{id}/approve",
            format!("/api/v1/runs/{run}/approve"),
            decision.clone(),
            DECIDERS,
        ),
        (
            Method::POST,
            "/api/v1/runs/{id}/reject",
            format!("/api/v1/runs/{run}/reject"),
            decision,
            DECIDERS,
        ),
        (
            Method::POST,
            "/api/v1/reconcile",
            "/api/v1/reconcile".into(),
            None,
            TRIGGERERS,
        ),
        (
            Method::GET,
            "/api/v1/resources",
            "/api/v1/resources".into(),
            None,
            READERS,
        ),
        (
            Method::GET,
            "/api/v1/devices",
            "/api/v1/devices".into(),
            None,
            READERS,
        ),
        (
            Method::GET,
            "/api/v1/readings",
            "/api/v1/readings?device=fm-1&register=flow_rate".into(),
            None,
            READERS,
        ),
        (
            Method::GET,
            "/api/v1/readings/summary",
            "/api/v1/readings/summary?device=fm-1&register=flow_rate".into(),
            None,
            READERS,
        ),
        (
            Method::POST,
            "/api/v1/readings",
            "/api/v1/readings".into(),
            Some(json!([])),
            Access::Only(&[Admin, IngestKey]),
        ),
        (
            Method::GET,
            "/api/v1/alerts",
            "/api/v1/alerts".into(),
            None,
            READERS,
        ),
        (
            Method::POST,
            "/api/v1/alerts/{id}/ack",
            "/api/v1/alerts/1/ack".into(),
            None,
            DECIDERS,
        ),
        // The web page itself is public; everything it shows comes from the API above.
        (Method::GET, "/", "/".into(), None, Access::Public),
        (
            Method::GET,
            "/assets/{*path}",
            "/assets/app.js".into(),
            None,
            Access::Public,
        ),
        (
            Method::GET,
            "/api/v1/events",
            "/api/v1/events".into(),
            None,
            READERS,
        ),
        (
            Method::GET,
            "/api/v1/status",
            "/api/v1/status".into(),
            None,
            READERS,
        ),
        (
            Method::GET,
            "/api/v1/declarations",
            "/api/v1/declarations".into(),
            None,
            READERS,
        ),
        (
            Method::POST,
            "/api/v1/declarations",
            "/api/v1/declarations".into(),
            Some(json!({"name": "wiki", "text": "a small wiki container"})),
            DECIDERS,
        ),
        (
            Method::GET,
            "/api/v1/declarations/{id}",
            "/api/v1/declarations/1".into(),
            None,
            READERS,
        ),
    ]
}

#[tokio::test]
async fn every_principal_should_get_exactly_the_routes_its_role_or_scopes_allow() {
    let rig = rig().await;
    let (run, _) = rig.waiting_run("c1", None, None).await;
    let mut creds = Vec::new();
    for who in EVERYONE {
        let credential = match who {
            Viewer => rig.token("viewer", Role::Viewer).await,
            Operator => rig.token("operator", Role::Operator).await,
            Admin => rig.token("admin", Role::Admin).await,
            ReadKey => rig.api_key("read", &[Scope::Read]).await,
            TriggerKey => rig.api_key("trigger", &[Scope::Trigger]).await,
            IngestKey => rig.api_key("ingest", &[Scope::Ingest]).await,
        };
        creds.push((*who, credential));
    }
    let mut failures = Vec::new();
    for (method, doc_path, path, body, access) in table(run) {
        let anonymous = rig.call(method.clone(), &path, None, body.clone()).await;
        match access {
            Access::Public => {
                if matches!(
                    anonymous.status,
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                ) && anonymous.code() != "bad_signature"
                    && !anonymous.code().contains("refresh")
                    && anonymous.code() != "invalid_credentials"
                {
                    failures.push(format!(
                        "{method} {doc_path} is public but answered {} {}",
                        anonymous.status, anonymous.text
                    ));
                }
                continue;
            }
            Access::Only(allowed) => {
                if anonymous.status != StatusCode::UNAUTHORIZED {
                    failures.push(format!(
                        "{method} {doc_path} without credentials answered {}",
                        anonymous.status
                    ));
                }
                for (who, credential) in &creds {
                    let answer = rig
                        .call(method.clone(), &path, Some(credential), body.clone())
                        .await;
                    let denied = matches!(
                        answer.status,
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                    );
                    let should_allow = allowed.contains(who);
                    if should_allow && denied {
                        failures.push(format!(
                            "{who:?} should reach {method} {doc_path}, got {} {}",
                            answer.status, answer.text
                        ));
                    }
                    if !should_allow && answer.status != StatusCode::FORBIDDEN {
                        failures.push(format!(
                            "{who:?} should get 403 from {method} {doc_path}, got {} {}",
                            answer.status, answer.text
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_forbidden_caller_should_get_403_before_its_body_is_looked_at() {
    let rig = rig().await;
    let viewer = rig.token("viewer", Role::Viewer).await;
    let answer = rig
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&viewer),
            Some(json!({"x": 1})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
    let answer = rig
        .call(
            Method::POST,
            "/api/v1/runs/1/approve",
            Some(&viewer),
            Some(json!([])),
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
    let answer = rig
        .call(Method::DELETE, "/api/v1/runs", Some(&viewer), None)
        .await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.code(), "method_not_allowed");
}

/// (METHOD, path) of every operation in the served OpenAPI document.
async fn documented() -> (BTreeSet<(String, String)>, Value) {
    let rig = rig().await;
    let doc = rig.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(doc.status, StatusCode::OK);
    let mut ops = BTreeSet::new();
    for (path, item) in doc.body["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    (ops, doc.body)
}

#[tokio::test]
async fn every_documented_route_should_be_in_the_role_table_and_every_row_documented() {
    let (documented, _) = documented().await;
    let table: BTreeSet<(String, String)> = table(1)
        .into_iter()
        .map(|(m, p, ..)| (m.as_str().to_owned(), p.to_owned()))
        .collect();
    let undocumented: Vec<_> = table.difference(&documented).collect();
    let untested: Vec<_> = documented.difference(&table).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from /openapi.json: {undocumented:?}"
    );
    assert!(
        untested.is_empty(),
        "routes missing from the role table of this test: {untested:?}"
    );
}

#[tokio::test]
async fn every_documented_route_should_be_served() {
    let rig = rig().await;
    let (documented, _) = documented().await;
    for (method, path) in documented {
        let concrete = path.replace("{id}", "1").replace("{name}", "x");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (method != Method::GET).then(|| json!({}));
        let answer = rig.call(method.clone(), &concrete, None, body).await;
        assert_ne!(answer.code(), "no_route", "{method} {path} is not served");
        assert_ne!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is not served"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_should_describe_errors_and_security() {
    let (_, doc) = documented().await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
}

/// Tidy: routes in `src/api` are registered with `routes!` (documented), never with a plain
/// `.route(`, so nothing is served that `/openapi.json` does not list.
#[test]
fn no_api_module_should_register_an_undocumented_route() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.trim_start();
                if !code.starts_with("//")
                    && (code.contains(".route(") || code.contains(".route_service("))
                {
                    offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "use .routes(routes!(..)):\n{}",
        offenders.join("\n")
    );
}
