//! Router tests of the HTTP API: every endpoint through `oneshot` against a real SQLite store,
//! and the security tests of issue #7 (forged and expired tokens, refresh reuse, lockout,
//! webhook signatures, SQL-looking input). The runs/approve flow also runs on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::api_support;

use std::time::Duration as StdDuration;

use api_support::{
    PASSWORD, Rig, WEBHOOK_SECRET, requirement, rig, rig_on, rig_with, test_settings,
};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use chrono::Duration;
use futures::StreamExt;
use mycopod::control::{ResourceStatus, SyncState};
use mycopod::events::Event;
use mycopod::model::{Role, Scope, Trigger};
use mycopod::store::Store;
use mycopod_adapters::signing::sign_sha256;
use serde_json::{Value, json};

// ---------------------------------------------------------------- operations

#[tokio::test]
async fn healthz_should_answer_ok_with_a_generated_request_id() {
    let rig = rig().await;
    let answer = rig.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, json!({"status": "ok"}));
    let id = answer
        .headers
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(id.len(), 36, "a uuid: {id}");
}

#[tokio::test]
async fn a_given_request_id_should_be_echoed() {
    let rig = rig().await;
    let request = Request::get("/healthz")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    let answer = rig.send(request).await;
    assert_eq!(answer.headers.get("x-request-id").unwrap(), "abc-123");
}

#[tokio::test]
async fn readyz_should_fail_when_the_last_fetch_is_too_old_and_recover_after_a_fetch() {
    let rig = rig().await;
    // Without a repository only the database counts.
    let answer = rig.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["database"], true);

    rig.control
        .update_status(|s| s.scope = Some("repo@main".into()));
    rig.clock.advance(Duration::minutes(6));
    let answer = rig.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body["status"], "not_ready");
    assert_eq!(answer.body["fetch_age_seconds"], 360);

    let now = rig.clock.now();
    rig.control.update_status(|s| s.last_fetch_at = Some(now));
    let answer = rig.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

#[tokio::test]
async fn readyz_should_fail_when_the_database_is_closed() {
    let rig = rig().await;
    rig.store.close().await;
    let answer = rig.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body["database"], false);
}

#[tokio::test]
async fn metrics_should_count_runs_actions_and_waiting_approvals_and_render_the_loops_metrics() {
    let rig = rig().await;
    rig.waiting_run("c1", None, None).await;
    rig.waiting_run("c2", None, None).await;
    metrics::histogram!("mycopod_reconcile_duration_seconds").record(0.3);
    metrics::counter!("mycopod_outside_requests_total", "adapter" => "proxmox", "result" => "ok")
        .increment(2);
    let answer = rig.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let text = answer.text;
    assert!(
        text.contains("mycopod_runs{status=\"awaiting_approval\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("mycopod_runs{status=\"succeeded\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("mycopod_actions{verb=\"stop\",status=\"pending\"} 2"),
        "{text}"
    );
    assert!(text.contains("mycopod_approvals_waiting 2"), "{text}");
    assert!(
        text.contains("mycopod_reconcile_duration_seconds_bucket{le=\"0.5\"}"),
        "{text}"
    );
    assert!(
        text.contains("mycopod_outside_requests_total{adapter=\"proxmox\",result=\"ok\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unknown_route_should_be_a_json_404() {
    let rig = rig().await;
    let answer = rig.call(Method::GET, "/api/v1/nope", None, None).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.code(), "no_route");
}

#[tokio::test]
async fn cors_should_be_closed_by_default() {
    let rig = rig().await;
    let request = Request::builder()
        .method(Method::OPTIONS)
        .uri("/api/v1/runs")
        .header(header::ORIGIN, "https://evil.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .body(Body::empty())
        .unwrap();
    let answer = rig.send(request).await;
    assert!(
        answer
            .headers
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none(),
        "{:?}",
        answer.headers
    );
}

// ---------------------------------------------------------------- sign-in

#[tokio::test]
async fn login_should_return_tokens_and_cookies_that_sign_the_user_in() {
    let rig = rig().await;
    rig.user_with_password("ana", Role::Operator).await;
    let answer = rig.login("ana", PASSWORD).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["token_type"], "Bearer");
    assert_eq!(answer.body["expires_in"], 900);
    assert_eq!(answer.body["user"]["role"], "operator");
    let cookies: Vec<&str> = answer
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("mycopod_refresh=")
            && c.contains("HttpOnly")
            && c.contains("SameSite=Strict")
            && c.contains("Path=/api/v1/auth")),
        "{cookies:?}"
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("mycopod_csrf=") && !c.contains("HttpOnly")),
        "{cookies:?}"
    );
    let token = answer.body["access_token"].as_str().unwrap();
    let me = rig
        .call(Method::GET, "/api/v1/auth/me", Some(token), None)
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["name"], "ana");
    assert_eq!(me.body["role"], "operator");
    assert_eq!(me.body["kind"], "user");
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_should_get_the_same_answer() {
    let rig = rig().await;
    rig.user_with_password("ana", Role::Viewer).await;
    let wrong = rig.login("ana", "not the password").await;
    let unknown = rig.login("nobody", PASSWORD).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body, unknown.body);
}

#[tokio::test]
async fn login_should_lock_the_account_after_five_failures_and_unlock_after_fifteen_minutes() {
    let rig = rig().await;
    rig.user_with_password("ana", Role::Viewer).await;
    for _ in 0..5 {
        assert_eq!(
            rig.login("ana", "guess").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Locked: even the right password gets the answer of an unknown name, so whoever guesses
    // learns neither that the name exists nor that it is locked.
    let locked = rig.login("ana", PASSWORD).await;
    let unknown = rig.login("nobody", PASSWORD).await;
    assert_eq!(locked.status, StatusCode::UNAUTHORIZED, "{}", locked.text);
    assert_eq!(locked.body, unknown.body);
    assert!(locked.headers.get(header::RETRY_AFTER).is_none());
    // An admin sees the lock.
    let admin = rig.token("root", Role::Admin).await;
    let users = rig
        .call(Method::GET, "/api/v1/users", Some(&admin), None)
        .await;
    let ana = users
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "ana")
        .unwrap();
    assert!(ana["locked_until"].is_string(), "{ana}");

    rig.clock.advance(Duration::minutes(14));
    assert_eq!(
        rig.login("ana", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    rig.clock
        .advance(Duration::minutes(1) + Duration::seconds(1));
    let open = rig.login("ana", PASSWORD).await;
    assert_eq!(open.status, StatusCode::OK, "{}", open.text);
    // The counter was reset: four more failures do not lock it.
    for _ in 0..4 {
        rig.login("ana", "guess").await;
    }
    assert_eq!(rig.login("ana", PASSWORD).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_disabled_user_should_not_sign_in_and_its_tokens_should_stop_working() {
    let rig = rig().await;
    let admin = rig.token("root", Role::Admin).await;
    rig.user_with_password("ana", Role::Operator).await;
    let token = rig.login("ana", PASSWORD).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = rig
        .call(
            Method::PATCH,
            "/api/v1/users/ana",
            Some(&admin),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["disabled"], true);
    let me = rig
        .call(Method::GET, "/api/v1/auth/me", Some(&token), None)
        .await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    let disabled = rig.login("ana", PASSWORD).await;
    assert_eq!(
        disabled.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        disabled.text
    );
    assert_eq!(
        disabled.body,
        rig.login("nobody", PASSWORD).await.body,
        "a disabled account answers as an unknown name"
    );
}

fn forge(header: &Value, claims: &Value, signature: &str) -> String {
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
    };
    format!("{}.{}.{}", b64(header), b64(claims), signature)
}

#[tokio::test]
async fn a_jwt_with_alg_none_should_be_refused() {
    let rig = rig().await;
    let _ = rig.token("root", Role::Admin).await;
    let user = rig.store.get_user_by_name("root").await.unwrap();
    let exp = (rig.clock.now() + Duration::minutes(10)).timestamp();
    let claims = json!({"sub": "root", "uid": user.id, "iat": 0, "exp": exp, "typ": "access"});
    for alg in ["none", "None", "NONE"] {
        let token = forge(&json!({"alg": alg, "typ": "JWT"}), &claims, "");
        let answer = rig
            .call(Method::GET, "/api/v1/auth/me", Some(&token), None)
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "alg {alg}");
    }
    // HS512 with the right key is still another algorithm.
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(api_support::SECRET),
    )
    .unwrap();
    let answer = rig
        .call(Method::GET, "/api/v1/auth/me", Some(&token), None)
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_jwt_signed_with_another_key_should_be_refused() {
    let rig = rig().await;
    let _ = rig.token("root", Role::Admin).await;
    let user = rig.store.get_user_by_name("root").await.unwrap();
    let other = mycopod::api::auth::JwtKeys::from_secret(b"another-key-another-key-another-key!!");
    let token = other
        .issue(
            "root",
            user.id,
            user.session_version,
            rig.clock.now(),
            Duration::minutes(15),
        )
        .unwrap();
    let answer = rig
        .call(Method::GET, "/api/v1/runs", Some(&token), None)
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.code(), "invalid_token");
}

#[tokio::test]
async fn an_expired_jwt_should_be_refused() {
    let rig = rig().await;
    let token = rig.token("ana", Role::Viewer).await;
    let answer = rig
        .call(Method::GET, "/api/v1/runs", Some(&token), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    rig.clock.advance(Duration::minutes(15));
    let answer = rig
        .call(Method::GET, "/api/v1/runs", Some(&token), None)
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.code(), "token_expired");
}

#[tokio::test]
async fn a_refresh_token_reused_after_rotation_should_revoke_its_family() {
    let rig = rig().await;
    rig.user_with_password("ana", Role::Viewer).await;
    let first = rig.login("ana", PASSWORD).await.body["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = refresh_with(&rig, &first).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    let second = rotated.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert!(rotated.body["access_token"].is_string());

    let reused = refresh_with(&rig, &first).await;
    assert_eq!(reused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reused.code(), "refresh_token_reused");
    // The thief's or the user's newer token is dead too.
    let after = refresh_with(&rig, &second).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_refresh_token_should_expire_after_seven_days() {
    let rig = rig().await;
    rig.user_with_password("ana", Role::Viewer).await;
    let token = rig.login("ana", PASSWORD).await.body["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    rig.clock.advance(Duration::days(7));
    let answer = rig
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": token})),
        )
        .await;
    assert_eq!(answer.code(), "invalid_refresh_token");
}

fn cookie_value(answer: &api_support::Answer, name: &str) -> String {
    answer
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_refresh_cookie_should_need_the_csrf_header_to_match_the_csrf_cookie() {
    let rig = rig().await;
    rig.user_with_password("ana", Role::Viewer).await;
    let login = rig.login("ana", PASSWORD).await;
    let refresh = cookie_value(&login, "mycopod_refresh");
    let csrf = cookie_value(&login, "mycopod_csrf");
    let cookies = format!("mycopod_refresh={refresh}; mycopod_csrf={csrf}");
    let request = |csrf_header: Option<&str>| {
        let mut b = Request::post("/api/v1/auth/refresh").header(header::COOKIE, &cookies);
        if let Some(h) = csrf_header {
            b = b.header("x-csrf-token", h);
        }
        b.body(Body::empty()).unwrap()
    };
    let none = rig.send(request(None)).await;
    assert_eq!(none.status, StatusCode::FORBIDDEN);
    assert_eq!(none.code(), "csrf_check_failed");
    let wrong = rig.send(request(Some("not-it"))).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let good = rig.send(request(Some(&csrf))).await;
    assert_eq!(good.status, StatusCode::OK, "{}", good.text);
    let rotated = cookie_value(&good, "mycopod_refresh");
    assert_ne!(rotated, refresh);
    // By cookie, the new refresh token lives only in the HttpOnly cookie: a script reading
    // the body never sees it.
    assert!(good.body["access_token"].is_string(), "{}", good.text);
    assert!(good.body.get("refresh_token").is_none(), "{}", good.text);
    assert!(!good.text.contains(&rotated), "{}", good.text);
}

#[tokio::test]
async fn logout_should_end_the_session_and_clear_the_cookies() {
    let rig = rig().await;
    rig.user_with_password("ana", Role::Viewer).await;
    let login = rig.login("ana", PASSWORD).await;
    let token = login.body["refresh_token"].as_str().unwrap().to_owned();
    let access = login.body["access_token"].as_str().unwrap().to_owned();
    let me = rig
        .call(Method::GET, "/api/v1/auth/me", Some(&access), None)
        .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    let out = rig
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            None,
            Some(json!({"refresh_token": token})),
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(
        out.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .any(|c| c.to_str().unwrap().contains("Max-Age=0"))
    );
    let again = rig
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": token})),
        )
        .await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    // The access token ends with the session, not 15 minutes later.
    let after = rig
        .call(Method::GET, "/api/v1/auth/me", Some(&access), None)
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{}", after.text);
    // Signing in again gives a token that works.
    let fresh = rig.login("ana", PASSWORD).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = rig
        .call(Method::GET, "/api/v1/auth/me", Some(&fresh), None)
        .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
}

#[tokio::test]
async fn login_should_be_rate_limited_with_retry_after() {
    let mut settings = test_settings();
    settings.rate_limits.login = mycopod::api::RateLimit::new(StdDuration::from_secs(60), 2);
    let rig = rig_with(settings).await;
    assert_eq!(rig.login("x", "y").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(rig.login("x", "y").await.status, StatusCode::UNAUTHORIZED);
    let limited = rig.login("x", "y").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.code(), "rate_limited");
    let after: u64 = limited.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&after), "{after}");
    // Other routes are not limited by the login bucket.
    assert_eq!(
        rig.call(Method::GET, "/healthz", None, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn malformed_and_oversized_bodies_should_be_400_422_and_413_in_json() {
    let mut settings = test_settings();
    settings.body_limit_bytes = 1024;
    let rig = rig_with(settings).await;
    let request = Request::post("/api/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let answer = rig.send(request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.code(), "malformed_json");

    let answer = rig
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": "ana"})),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
    assert!(
        answer.body["error"]["details"]["fields"].is_object(),
        "{}",
        answer.text
    );

    let big = "x".repeat(4096);
    let answer = rig
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": big, "password": "p"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "payload_too_large");
}

// ---------------------------------------------------------------- users and keys

#[tokio::test]
async fn an_admin_should_create_and_list_users_with_field_errors_and_conflicts() {
    let rig = rig().await;
    let admin = rig.token("root", Role::Admin).await;
    let created = rig
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&admin),
            Some(json!({"name": "ana", "password": PASSWORD, "role": "operator"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["role"], "operator");
    assert!(created.body.get("password_hash").is_none());
    assert_eq!(rig.login("ana", PASSWORD).await.status, StatusCode::OK);

    let again = rig
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&admin),
            Some(json!({"name": "ana", "password": PASSWORD, "role": "viewer"})),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);

    let bad = rig
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&admin),
            Some(json!({"name": "bad name", "password": "short", "role": "viewer"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body["error"]["details"]["fields"]["password"].is_string());
    assert!(bad.body["error"]["details"]["fields"]["name"].is_string());

    let bad_role = rig
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&admin),
            Some(json!({"name": "bob", "password": PASSWORD, "role": "root"})),
        )
        .await;
    assert_eq!(bad_role.status, StatusCode::UNPROCESSABLE_ENTITY);

    let list = rig
        .call(Method::GET, "/api/v1/users", Some(&admin), None)
        .await;
    let names: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ana", "root"]);
}

#[tokio::test]
async fn an_api_key_should_be_shown_once_and_work_only_within_its_scopes_until_revoked() {
    let mut rig = rig().await;
    let admin = rig.token("root", Role::Admin).await;
    let created = rig
        .call(
            Method::POST,
            "/api/v1/api-keys",
            Some(&admin),
            Some(json!({"name": "ci", "scopes": ["trigger", "read"]})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let key = created.body["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("myk_"));
    let id = created.body["api_key"]["id"].as_i64().unwrap();

    let list = rig
        .call(Method::GET, "/api/v1/api-keys", Some(&admin), None)
        .await;
    assert!(!list.text.contains(&key[4..]), "the key is never listed");
    assert_eq!(list.body[0]["scopes"], json!(["read", "trigger"]));

    // Through X-Api-Key as well as Bearer.
    let request = Request::get("/api/v1/runs")
        .header("x-api-key", &key)
        .body(Body::empty())
        .unwrap();
    assert_eq!(rig.send(request).await.status, StatusCode::OK);
    let answer = rig
        .call(Method::POST, "/api/v1/reconcile", Some(&key), None)
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let triggers = rig.drain_triggers();
    assert_eq!(triggers.len(), 1);
    assert_eq!(triggers[0].requested_by.as_deref(), Some("key:ci"));
    let users = rig
        .call(Method::GET, "/api/v1/users", Some(&key), None)
        .await;
    assert_eq!(users.status, StatusCode::FORBIDDEN);

    let revoked = rig
        .call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let after = rig
        .call(Method::GET, "/api/v1/runs", Some(&key), None)
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    let twice = rig
        .call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(twice.status, StatusCode::NOT_FOUND);
    let empty = rig
        .call(
            Method::POST,
            "/api/v1/api-keys",
            Some(&admin),
            Some(json!({"name": "x", "scopes": []})),
        )
        .await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);

    // A key limited to devices shows its devices when created and listed; an empty or blank
    // list is refused.
    let scoped = rig
        .call(
            Method::POST,
            "/api/v1/api-keys",
            Some(&admin),
            Some(json!({"name": "gw", "scopes": ["ingest"], "devices": ["fm-2", "fm-1"]})),
        )
        .await;
    assert_eq!(scoped.status, StatusCode::CREATED, "{}", scoped.text);
    assert_eq!(scoped.body["api_key"]["devices"], json!(["fm-1", "fm-2"]));
    let list = rig
        .call(Method::GET, "/api/v1/api-keys", Some(&admin), None)
        .await;
    assert_eq!(list.body[0]["name"], "gw");
    assert_eq!(list.body[0]["devices"], json!(["fm-1", "fm-2"]));
    assert!(
        list.body[1].get("devices").is_none(),
        "an unscoped key lists no devices: {}",
        list.body[1]
    );
    for devices in [json!([]), json!([" "]), json!([""])] {
        let refused = rig
            .call(
                Method::POST,
                "/api/v1/api-keys",
                Some(&admin),
                Some(json!({"name": "gw2", "scopes": ["ingest"], "devices": devices})),
            )
            .await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{devices}"
        );
    }
}

#[tokio::test]
async fn an_unknown_api_key_should_be_refused() {
    let rig = rig().await;
    let answer = rig
        .call(Method::GET, "/api/v1/runs", Some("myk_0000"), None)
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.code(), "invalid_api_key");
}

#[tokio::test]
async fn strings_that_look_like_sql_should_be_stored_and_returned_verbatim() {
    let rig = rig().await;
    let admin = rig.token("root", Role::Admin).await;
    let operator = rig.token("ops", Role::Operator).await;
    let evil = "x'); DROP TABLE runs; -- \" OR 1=1 /*";
    let created = rig
        .call(
            Method::POST,
            "/api/v1/api-keys",
            Some(&admin),
            Some(json!({"name": evil, "scopes": ["read"]})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["api_key"]["name"], evil);
    let list = rig
        .call(Method::GET, "/api/v1/api-keys", Some(&admin), None)
        .await;
    assert_eq!(list.body[0]["name"], evil);

    let (id, hash) = rig.waiting_run("c1", None, None).await;
    let comment = "'; DELETE FROM approvals; --";
    let answer = rig
        .call(
            Method::POST,
            &format!("/api/v1/runs/{id}/approve"),
            Some(&operator),
            Some(json!({"plan_hash": hash, "comment": comment})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let detail = rig
        .call(
            Method::GET,
            &format!("/api/v1/runs/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(detail.body["approvals"][0]["comment"], comment);

    let login = rig.login("root' OR '1'='1", "' OR '1'='1").await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);
    let filtered = rig
        .call(
            Method::GET,
            "/api/v1/runs?commit=%27%20OR%201%3D1%20--",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(filtered.status, StatusCode::OK);
    assert_eq!(filtered.body["runs"], json!([]));
}

// ---------------------------------------------------------------- runs

#[tokio::test]
async fn runs_should_be_listed_newest_first_filtered_and_paged() {
    let rig = rig().await;
    let viewer = rig.token("v", Role::Viewer).await;
    let (a, _) = rig.waiting_run("aaa111", None, None).await;
    let (b, _) = rig.waiting_run("bbb222", None, None).await;
    let (c, _) = rig.waiting_run("ccc333", None, None).await;
    let page = rig
        .call(Method::GET, "/api/v1/runs?limit=2", Some(&viewer), None)
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let ids: Vec<i64> = page.body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [c, b]);
    let cursor = page.body["next_cursor"].as_i64().unwrap();
    let next = rig
        .call(
            Method::GET,
            &format!("/api/v1/runs?limit=2&before={cursor}"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(next.body["runs"][0]["id"], a);
    assert!(next.body["next_cursor"].is_null());

    let by_commit = rig
        .call(Method::GET, "/api/v1/runs?commit=bbb", Some(&viewer), None)
        .await;
    assert_eq!(by_commit.body["runs"].as_array().unwrap().len(), 1);
    let by_status = rig
        .call(
            Method::GET,
            "/api/v1/runs?status=succeeded&trigger=manual",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(by_status.body["runs"], json!([]));
    let bad = rig
        .call(Method::GET, "/api/v1/runs?status=done", Some(&viewer), None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body["error"]["details"]["fields"]["status"].is_string());
}

#[tokio::test]
async fn a_run_should_show_its_plan_actions_and_approvals() {
    let rig = rig().await;
    let viewer = rig.token("v", Role::Viewer).await;
    let (id, hash) = rig.waiting_run("c1", Some("someone"), None).await;
    let answer = rig
        .call(
            Method::GET,
            &format!("/api/v1/runs/{id}"),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["run"]["plan_hash"], hash);
    assert_eq!(
        answer.body["run"]["plan"]["actions"][0]["diff"][0]["field"],
        "state"
    );
    assert_eq!(answer.body["actions"][0]["verb"], "stop");
    assert_eq!(answer.body["actions"][0]["status"], "pending");
    assert_eq!(answer.body["actions"][0]["attempts"], 0);
    assert_eq!(answer.body["approvals"], json!([]));
    let missing = rig
        .call(Method::GET, "/api/v1/runs/9999", Some(&viewer), None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let not_an_id = rig
        .call(Method::GET, "/api/v1/runs/abc", Some(&viewer), None)
        .await;
    assert_eq!(not_an_id.status, StatusCode::BAD_REQUEST);
    assert_eq!(not_an_id.code(), "bad_path");
}

async fn approve(rig: &Rig, id: i64, token: &str, hash: &str) -> api_support::Answer {
    rig.call(
        Method::POST,
        &format!("/api/v1/runs/{id}/approve"),
        Some(token),
        Some(json!({"plan_hash": hash, "comment": "ok"})),
    )
    .await
}

async fn refresh_with(rig: &Rig, token: &str) -> api_support::Answer {
    rig.call(
        Method::POST,
        "/api/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": token})),
    )
    .await
}

/// The approval flow on any backend.
async fn approval_should_follow_the_hash_the_policy_and_one_decision_per_user(
    store: Store,
    _url: String,
) {
    let mut rig = rig_on(store, test_settings());
    let ops = rig.token("ops", Role::Operator).await;
    let ops2 = rig.token("ops2", Role::Operator).await;
    let admin = rig.token("root", Role::Admin).await;
    let (id, hash) = rig
        .waiting_run(
            "c1",
            Some("ops"),
            Some(requirement(2, &["operator", "admin"], false)),
        )
        .await;
    let stale = approve(&rig, id, &ops2, "hash-other").await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.code(), "stale_plan_hash");
    assert_eq!(stale.body["error"]["details"]["current"], hash);

    let own = approve(&rig, id, &ops, &hash).await;
    assert_eq!(own.status, StatusCode::FORBIDDEN);
    assert_eq!(own.code(), "self_approval_forbidden");

    let first = approve(&rig, id, &ops2, &hash).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.body["status"], "awaiting_approval");
    assert_eq!(first.body["approvals"], 1);
    let twice = approve(&rig, id, &ops2, &hash).await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert_eq!(twice.code(), "already_decided");
    assert!(rig.drain_triggers().is_empty());

    let second = approve(&rig, id, &admin, &hash).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_eq!(second.body["status"], "approved");
    let triggers = rig.drain_triggers();
    assert_eq!(triggers.len(), 1, "an approved run wakes the loop");
    let done = approve(&rig, id, &ops, &hash).await;
    assert_eq!(done.status, StatusCode::CONFLICT);
    assert_eq!(done.code(), "run_not_waiting");

    let detail = rig
        .call(Method::GET, &format!("/api/v1/runs/{id}"), Some(&ops), None)
        .await;
    let approvers: Vec<&str> = detail.body["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["user_name"].as_str().unwrap())
        .collect();
    assert_eq!(approvers, ["ops2", "root"]);
}

on_both_backends!(approval_should_follow_the_hash_the_policy_and_one_decision_per_user);

#[tokio::test]
async fn a_role_outside_the_policys_approver_roles_should_not_approve() {
    let rig = rig().await;
    let ops = rig.token("ops", Role::Operator).await;
    let viewer = rig.token("v", Role::Viewer).await;
    let (id, hash) = rig
        .waiting_run("c1", None, Some(requirement(1, &["admin"], true)))
        .await;
    let body = json!({"plan_hash": hash});
    let answer = rig
        .call(
            Method::POST,
            &format!("/api/v1/runs/{id}/approve"),
            Some(&ops),
            Some(body.clone()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.code(), "role_not_allowed");
    let answer = rig
        .call(
            Method::POST,
            &format!("/api/v1/runs/{id}/approve"),
            Some(&viewer),
            Some(body),
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn self_approval_should_be_allowed_where_the_policy_allows_it() {
    let rig = rig().await;
    let ops = rig.token("ops", Role::Operator).await;
    let (id, hash) = rig
        .waiting_run("c1", Some("ops"), Some(requirement(1, &["operator"], true)))
        .await;
    let answer = rig
        .call(
            Method::POST,
            &format!("/api/v1/runs/{id}/approve"),
            Some(&ops),
            Some(json!({"plan_hash": hash})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["status"], "approved");
}

#[tokio::test]
async fn a_run_without_a_stored_requirement_should_refuse_self_approval() {
    let rig = rig().await;
    let ops = rig.token("ops", Role::Operator).await;
    let (id, hash) = rig.waiting_run("c1", Some("ops"), None).await;
    let answer = rig
        .call(
            Method::POST,
            &format!("/api/v1/runs/{id}/approve"),
            Some(&ops),
            Some(json!({"plan_hash": hash})),
        )
        .await;
    assert_eq!(answer.code(), "self_approval_forbidden");
}

#[tokio::test]
async fn a_rejection_should_end_the_run_and_an_api_key_should_never_decide() {
    let rig = rig().await;
    let ops = rig.token("ops", Role::Operator).await;
    let admin_key = rig.api_key("k", &[Scope::Read, Scope::Trigger]).await;
    let (id, hash) = rig.waiting_run("c1", None, None).await;
    let by_key = rig
        .call(
            Method::POST,
            &format!("/api/v1/runs/{id}/reject"),
            Some(&admin_key),
            Some(json!({"plan_hash": hash})),
        )
        .await;
    assert_eq!(by_key.status, StatusCode::FORBIDDEN);
    let answer = rig
        .call(
            Method::POST,
            &format!("/api/v1/runs/{id}/reject"),
            Some(&ops),
            Some(json!({"plan_hash": hash, "comment": "not today"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["status"], "rejected");
}

#[tokio::test]
async fn reconcile_should_ask_the_loop_and_say_so_when_no_loop_listens() {
    let mut rig = rig().await;
    let ops = rig.token("ops", Role::Operator).await;
    let answer = rig
        .call(Method::POST, "/api/v1/reconcile", Some(&ops), None)
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let triggers = rig.drain_triggers();
    assert_eq!(triggers.len(), 1);
    assert_eq!(triggers[0].trigger, Trigger::Manual);
    assert_eq!(triggers[0].requested_by.as_deref(), Some("ops"));
    let (_tx, closed) = tokio::sync::mpsc::unbounded_channel();
    drop(std::mem::replace(&mut rig.triggers, closed));
    let answer = rig
        .call(Method::POST, "/api/v1/reconcile", Some(&ops), None)
        .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn resources_should_list_the_sync_state_from_the_controller_status() {
    let rig = rig().await;
    let viewer = rig.token("v", Role::Viewer).await;
    rig.control.update_status(|s| {
        s.commit = Some("abc".into());
        s.resources = vec![
            ResourceStatus {
                kind: "Guest".into(),
                name: "web".into(),
                sync: SyncState::OutOfSync,
                details: vec!["cores: 2 -> 4".into()],
                changed_at: None,
            },
            ResourceStatus {
                kind: "ModbusDevice".into(),
                name: "fm-1".into(),
                sync: SyncState::Drift,
                details: vec![],
                changed_at: None,
            },
        ];
    });
    let answer = rig
        .call(Method::GET, "/api/v1/resources", Some(&viewer), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["commit"], "abc");
    assert_eq!(answer.body["resources"][0]["sync"], "out_of_sync");
    assert_eq!(answer.body["resources"][0]["details"][0], "cores: 2 -> 4");
    assert_eq!(answer.body["resources"][1]["sync"], "drift");
    let status = rig
        .call(Method::GET, "/api/v1/status", Some(&viewer), None)
        .await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.body["commit"], "abc");
    assert_eq!(status.body["resources"]["drift"], 1);
    assert_eq!(status.body["resources"]["out_of_sync"], 1);
}

#[tokio::test]
async fn the_audit_log_should_page_newest_first() {
    let rig = rig().await;
    let admin = rig.token("root", Role::Admin).await;
    rig.waiting_run("c1", None, None).await;
    rig.waiting_run("c2", None, None).await;
    let page = rig
        .call(Method::GET, "/api/v1/audit?limit=2", Some(&admin), None)
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let entries = page.body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["event"], "run.created");
    assert_eq!(entries[0]["subject"], "run/2");
    let cursor = page.body["next_cursor"].as_i64().unwrap();
    let next = rig
        .call(
            Method::GET,
            &format!("/api/v1/audit?before={cursor}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(next.body["entries"][0]["event"], "user.created");
}

// ---------------------------------------------------------------- events

#[tokio::test]
async fn events_should_stream_committed_changes_and_a_resync_after_lag() {
    let rig = rig().await;
    let viewer = rig.token("v", Role::Viewer).await;
    let request = Request::get("/api/v1/events")
        .header(header::AUTHORIZATION, format!("Bearer {viewer}"))
        .body(Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(rig.app.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body().into_data_stream();
    let (id, _) = rig.waiting_run("c1", None, None).await;
    let chunk = tokio::time::timeout(StdDuration::from_secs(10), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&chunk).into_owned();
    assert!(text.contains("event: run"), "{text}");
    assert!(text.contains(&format!("\"run_id\":{id}")), "{text}");

    // Overflow the subscriber's buffer: the next thing it sees is a resync.
    for _ in 0..(mycopod::events::EVENT_BUFFER + 10) {
        rig.store.events().publish(Event::Controller);
    }
    let chunk = tokio::time::timeout(StdDuration::from_secs(10), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&chunk).into_owned();
    assert!(text.contains("event: resync"), "{text}");
}

// ---------------------------------------------------------------- webhook

fn delivery(event: &str, body: &Value, signature: Option<String>) -> Request<Body> {
    let mut b = Request::post("/api/v1/webhooks/github")
        .header("x-github-event", event)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(s) = signature {
        b = b.header("x-hub-signature-256", s);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

fn signed(body: &Value) -> Option<String> {
    Some(sign_sha256(
        WEBHOOK_SECRET.as_bytes(),
        body.to_string().as_bytes(),
    ))
}

#[tokio::test]
async fn a_webhook_with_a_missing_or_wrong_signature_should_be_refused_and_trigger_nothing() {
    let mut rig = rig().await;
    let push = json!({"ref": "refs/heads/main", "after": "abc", "deleted": false});
    let missing = rig.send(delivery("push", &push, None)).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.code(), "bad_signature");
    let wrong_key = Some(sign_sha256(b"not the secret", push.to_string().as_bytes()));
    let wrong = rig.send(delivery("push", &push, wrong_key)).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // A signature of another body.
    let other = signed(&json!({"ref": "refs/heads/other"}));
    let tampered = rig.send(delivery("push", &push, other)).await;
    assert_eq!(tampered.status, StatusCode::UNAUTHORIZED);
    assert!(rig.drain_triggers().is_empty());
}

#[tokio::test]
async fn a_signed_push_to_the_tracked_branch_should_trigger_and_others_should_not() {
    let mut rig = rig().await;
    let ping = json!({"zen": "Keep it logically awesome."});
    let answer = rig.send(delivery("ping", &ping, signed(&ping))).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["status"], "pong");

    let push = json!({"ref": "refs/heads/main", "after": "abc", "deleted": false});
    let answer = rig.send(delivery("push", &push, signed(&push))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let triggers = rig.drain_triggers();
    assert_eq!(triggers.len(), 1);
    assert_eq!(triggers[0].trigger, Trigger::Webhook);

    let elsewhere = json!({"ref": "refs/heads/feature", "after": "abc"});
    let answer = rig
        .send(delivery("push", &elsewhere, signed(&elsewhere)))
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let issue = json!({"action": "opened"});
    let answer = rig.send(delivery("issues", &issue, signed(&issue))).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(rig.drain_triggers().is_empty());
}

#[tokio::test]
async fn the_webhook_should_be_absent_without_a_secret() {
    let mut settings = test_settings();
    settings.webhook_secret = None;
    let mut rig = rig_with(settings).await;
    let push = json!({"ref": "refs/heads/main", "after": "abc"});
    let answer = rig.send(delivery("push", &push, signed(&push))).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(rig.drain_triggers().is_empty());
}

// ---------------------------------------------------------------- configuration

#[test]
fn the_state_should_refuse_a_missing_or_short_signing_key_naming_the_setting() {
    use mycopod::api::{ApiConfigError, ApiSettings};
    use mycopod::config::Config;
    let config = Config::default();
    let err = ApiSettings::from_config(&config).unwrap_err();
    assert!(matches!(err, ApiConfigError::MissingJwtSecret));
    assert!(err.to_string().contains("MYCOPOD_JWT_SECRET"), "{err}");

    let config = Config {
        jwt_secret: Some("short".into()),
        ..Config::default()
    };
    let err = ApiSettings::from_config(&config).unwrap_err();
    assert!(err.to_string().contains("MYCOPOD_JWT_SECRET"), "{err}");
    assert!(err.to_string().contains("5 bytes"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwt");
    std::fs::write(&file, "too-short\n").unwrap();
    let config = Config {
        jwt_secret_file: Some(file.clone()),
        ..Config::default()
    };
    let err = ApiSettings::from_config(&config).unwrap_err();
    assert!(err.to_string().contains("jwt_secret_file"), "{err}");

    std::fs::write(&file, format!("{}\n", "k".repeat(32))).unwrap();
    let config = Config {
        jwt_secret_file: Some(file),
        ..Config::default()
    };
    assert!(ApiSettings::from_config(&config).is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn forty_parallel_guesses_should_check_five_and_lock_out_the_right_password_too() {
    let rig = rig().await;
    rig.user_with_password("ana", Role::Viewer).await;
    let guesses = (0..40).map(|i| {
        let rig = &rig;
        async move { rig.login("ana", &format!("guess {i}")).await.status }
    });
    let answers = futures::future::join_all(guesses).await;
    assert!(
        answers.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{answers:?}"
    );
    let ana = rig.store.get_user_by_name("ana").await.unwrap();
    assert_eq!(ana.failed_logins, 5, "only five guesses were checked");
    assert!(ana.locked_until.is_some());
    assert_eq!(
        rig.login("ana", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED,
        "the lock holds against the right password"
    );
}

#[tokio::test]
async fn metrics_should_demand_the_token_when_one_is_set_and_count_at_most_every_five_seconds() {
    let mut settings = test_settings();
    settings.metrics_token = Some("scrape-token-of-some-length".to_owned());
    let rig = rig_with(settings).await;
    let with = |token: Option<&str>| {
        let mut b = Request::get("/metrics");
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(Body::empty()).unwrap()
    };
    let none = rig.send(with(None)).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{}", none.text);
    assert!(!none.text.contains("mycopod_runs"), "{}", none.text);
    let wrong = rig.send(with(Some("scrape-token-of-some-lengtX"))).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    rig.waiting_run("c1", None, None).await;
    let first = rig.send(with(Some("scrape-token-of-some-length"))).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert!(
        first.text.contains("mycopod_approvals_waiting 1"),
        "{}",
        first.text
    );
    // Counted again only once the gauges are five seconds old.
    rig.waiting_run("c2", None, None).await;
    let cached = rig.send(with(Some("scrape-token-of-some-length"))).await;
    assert!(
        cached.text.contains("mycopod_approvals_waiting 1"),
        "{}",
        cached.text
    );
    rig.clock.advance(Duration::seconds(6));
    let fresh = rig.send(with(Some("scrape-token-of-some-length"))).await;
    assert!(
        fresh.text.contains("mycopod_approvals_waiting 2"),
        "{}",
        fresh.text
    );
}

#[tokio::test]
async fn an_event_stream_should_end_when_its_user_signs_out_or_is_disabled() {
    let mut settings = test_settings();
    settings.session_recheck = StdDuration::from_millis(50);
    let rig = rig_with(settings).await;
    let open = |token: String| {
        let app = rig.app.clone();
        async move {
            let request = Request::get("/api/v1/events")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            let response = tower::ServiceExt::oneshot(app, request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.into_body().into_data_stream()
        }
    };
    let ends = |mut body: axum::body::BodyDataStream| async move {
        tokio::time::timeout(StdDuration::from_secs(20), async move {
            while let Some(chunk) = body.next().await {
                chunk.unwrap();
            }
        })
        .await
        .is_ok()
    };

    rig.user_with_password("ana", Role::Viewer).await;
    let login = rig.login("ana", PASSWORD).await;
    let access = login.body["access_token"].as_str().unwrap().to_owned();
    let refresh = login.body["refresh_token"].as_str().unwrap().to_owned();
    let stream = open(access).await;
    let out = rig
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(ends(stream).await, "the stream ended with the session");

    let bo = rig.token("bo", Role::Viewer).await;
    let stream = open(bo).await;
    assert!(
        rig.store
            .set_user_disabled("bo", true, "admin", rig.clock.now())
            .await
            .unwrap()
    );
    assert!(ends(stream).await, "the stream ended with the account");
}
