//! Test rig for the HTTP API: the real router over a fresh migrated SQLite store (or any
//! store), a manual clock, a real `Control` whose trigger receiver the test reads, and helpers
//! to make users, tokens, keys and runs and to send requests through `oneshot`.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::{DateTime, Duration, TimeZone, Utc};
use mycopod::api::{self, ApiSettings, AppState, Clock};
use mycopod::control::{Control, TriggerRequest};
use mycopod::model::{ActionStatus, Role, RunStatus, Scope, Trigger};
use mycopod::policy::Requirement;
use mycopod::store::{NewAction, NewRun, Store, hash_password, hash_token};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tower::ServiceExt;

/// The JWT signing key of the tests (40 bytes).
pub const SECRET: &[u8] = b"test-signing-key-0123456789abcdefghijklmn";
/// The GitHub webhook secret of the tests.
pub const WEBHOOK_SECRET: &str = "It's a Secret to Everybody";
/// The password of every user made by [`Rig::user_with_password`].
pub const PASSWORD: &str = "correct horse battery staple";

/// A fixed instant the tests count from.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

/// Settings for tests: the defaults with the test key, a webhook secret and generous rate
/// limits (the rate limit test sets its own).
pub fn test_settings() -> ApiSettings {
    let mut settings = ApiSettings::new(SECRET).unwrap();
    settings.webhook_secret = Some(WEBHOOK_SECRET.as_bytes().to_vec());
    settings.rate_limits.login = api::RateLimit::new(std::time::Duration::from_millis(1), 1000);
    settings.rate_limits.webhook = api::RateLimit::new(std::time::Duration::from_millis(1), 1000);
    settings
}

/// The router and everything behind it.
pub struct Rig {
    /// The router under test.
    pub app: Router,
    /// Its state.
    pub state: AppState,
    /// The store.
    pub store: Store,
    /// The manual clock.
    pub clock: Clock,
    /// The control handle.
    pub control: Control,
    /// What the API asked the loop for.
    pub triggers: UnboundedReceiver<TriggerRequest>,
    _dir: Option<tempfile::TempDir>,
}

/// A response, its body parsed as JSON (or `Value::Null` when empty or not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// A rig over a fresh SQLite store.
pub async fn rig() -> Rig {
    rig_with(test_settings()).await
}

/// A rig over a fresh SQLite store with the given settings.
pub async fn rig_with(settings: ApiSettings) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("api.db").display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let mut rig = rig_on(store, settings);
    rig._dir = Some(dir);
    rig
}

/// A rig over an existing, migrated store.
pub fn rig_on(store: Store, settings: ApiSettings) -> Rig {
    let clock = Clock::manual(t0());
    let (control, triggers) = Control::new(store.events().clone(), t0());
    let state = AppState::with_settings(store.clone(), control.clone(), settings, clock.clone());
    Rig {
        app: api::app(state.clone()),
        state,
        store,
        clock,
        control,
        triggers,
        _dir: None,
    }
}

/// A valid argon2id hash of a password nobody knows, for users that never log in (hashing is
/// slow in debug builds).
const UNUSED_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                          9sTbSlTio3Biev89thdrlKKiCaYsjjYVJxGAL3swxpQ";

impl Rig {
    /// Makes a user that cannot log in and returns an access token for it.
    pub async fn token(&self, name: &str, role: Role) -> String {
        let user = self
            .store
            .create_user(name, UNUSED_PHC, role, "test", self.clock.now())
            .await
            .unwrap();
        self.state
            .settings()
            .auth
            .keys
            .issue(
                &user.name,
                user.id,
                user.session_version,
                self.clock.now(),
                Duration::minutes(15),
            )
            .unwrap()
    }

    /// Makes a user whose password is [`PASSWORD`].
    pub async fn user_with_password(&self, name: &str, role: Role) {
        let phc = hash_password(PASSWORD).unwrap();
        self.store
            .create_user(name, &phc, role, "test", self.clock.now())
            .await
            .unwrap();
    }

    /// Makes an API key with `scopes` and returns it.
    pub async fn api_key(&self, name: &str, scopes: &[Scope]) -> String {
        let key = format!("myk_{}", hex_of(name));
        self.store
            .create_api_key(
                name,
                &hash_token(&key),
                scopes,
                None,
                "test",
                self.clock.now(),
            )
            .await
            .unwrap();
        key
    }

    /// Records a run waiting for approval, triggered by `requested_by`, with a stored
    /// requirement when given. Returns its id and plan hash.
    pub async fn waiting_run(
        &self,
        commit: &str,
        requested_by: Option<&str>,
        requirement: Option<Requirement>,
    ) -> (i64, String) {
        let mut plan = json!({
            "commit": commit,
            "actions": [{"key": "Guest/web:stop", "verb": "stop",
                         "diff": [{"field": "state", "from": "running", "to": "stopped"}]}],
        });
        if let Some(r) = &requirement {
            plan["requirement"] = serde_json::to_value(r).unwrap();
        }
        let hash = format!("hash-{commit}");
        let required = requirement.as_ref().map_or(1, |r| i64::from(r.approvals));
        let id = self
            .store
            .insert_run(
                &NewRun {
                    scope: "default".into(),
                    commit_sha: commit.into(),
                    trigger: Trigger::Manual,
                    requested_by: requested_by.map(str::to_owned),
                    status: RunStatus::AwaitingApproval,
                    plan,
                    plan_hash: hash.clone(),
                    required_approvals: required,
                    error: None,
                    expires_at: None,
                    actions: vec![NewAction {
                        key: "Guest/web:stop".into(),
                        kind: "Guest".into(),
                        resource: "web".into(),
                        verb: "stop".into(),
                        diff: json!({"state": {"from": "running", "to": "stopped"}}),
                        required_approvals: required,
                        status: ActionStatus::Pending,
                    }],
                },
                "controller",
                self.clock.now(),
            )
            .await
            .unwrap();
        (id, hash)
    }

    /// Sends a request; `auth` is a JWT or an API key sent as Bearer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = auth {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
            None => builder.body(Body::empty()).unwrap(),
        };
        self.send(request).await
    }

    /// Sends a prepared request.
    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        if headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
        {
            // A stream never ends; the status and headers are the answer.
            return Answer {
                status,
                headers,
                body: Value::Null,
                text: String::new(),
            };
        }
        let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    /// Logs in with [`PASSWORD`] (or `password`) and returns the answer.
    pub async fn login(&self, name: &str, password: &str) -> Answer {
        self.call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": name, "password": password})),
        )
        .await
    }

    /// Every trigger request received so far.
    pub fn drain_triggers(&mut self) -> Vec<TriggerRequest> {
        let mut got = Vec::new();
        while let Ok(t) = self.triggers.try_recv() {
            got.push(t);
        }
        got
    }
}

fn hex_of(name: &str) -> String {
    let digest = hash_token(name);
    digest[..48].to_owned()
}

/// A requirement: `approvals` from `roles`, with or without self-approval.
pub fn requirement(approvals: u32, roles: &[&str], allow_self: bool) -> Requirement {
    let mut r = Requirement::automatic();
    r.approvals = approvals;
    r.approver_roles = roles
        .iter()
        .map(|s| serde_json::from_value(json!(s)).unwrap())
        .collect();
    r.allow_self_approval = allow_self;
    r
}
