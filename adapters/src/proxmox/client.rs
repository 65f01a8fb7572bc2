//! The PVE API client: authentication (API token or ticket with CSRF), TLS, bounded
//! concurrency, retries of transient errors, task waiting by UPID, and the guest operations.
//!
//! It translates and transports only: it never decides whether a guest should change. It
//! compares owned keys (via `compare.rs`) solely to turn a desired config into requests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, Semaphore};
use tracing::{Instrument, debug, info_span, warn};

use super::api::{
    ClusterResource, Envelope, ErrorBody, GuestKind, NodeInfo, PendingItem, TaskLogLine,
    TaskStatus, TicketResponse, Upid, exit_status_is_ok, value_to_config_string,
};
use super::compare::{
    self, ConfigUpdate, CreateSource, DesiredGuest, ObservedConfig, PendingChange,
};
use super::error::{ErrorClass, ProxmoxError, Result};

/// The wait before a task's first status poll.
const FIRST_TASK_POLL: Duration = Duration::from_millis(100);

/// How the client authenticates.
#[derive(Clone)]
pub enum Auth {
    /// An API token: `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`.
    Token {
        /// `USER@REALM!TOKENID`.
        token_id: String,
        /// The token's secret.
        secret: String,
    },
    /// A user and password: a ticket from `/access/ticket`, renewed before it expires.
    Password {
        /// `root@pam`.
        user: String,
        /// Sent only to `/access/ticket`; `Debug` leaves it out.
        password: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Token { token_id, .. } => write!(f, "Token({token_id})"),
            Auth::Password { user, .. } => write!(f, "Password({user})"),
        }
    }
}

/// How the server certificate is checked.
#[derive(Debug, Clone)]
pub enum Tls {
    /// The platform's trust store.
    System,
    /// Only the CA certificates in this PEM file (PVE's cluster CA, typically).
    CaFile(PathBuf),
    /// Only these PEM-encoded CA certificates.
    CaPem(Vec<u8>),
    /// No verification at all (logged as a warning).
    InsecureSkipVerify,
}

/// Bounded exponential backoff for transient errors.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubled after each failure.
    pub base_delay: Duration,
    /// Upper bound of a single delay.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The backoff between attempts.
    pub fn backoff(&self) -> crate::backoff::Backoff {
        crate::backoff::Backoff::new(self.base_delay, self.max_delay)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(15),
        }
    }
}

/// Everything the client needs to talk to one cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://pve.lan:8006` (the `/api2/json` prefix is added).
    pub endpoint: String,
    /// Credentials.
    pub auth: Auth,
    /// Certificate checking.
    pub tls: Tls,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Requests in flight at most (3 by default).
    pub max_in_flight: usize,
    /// Retries of transient errors.
    pub retry: RetryPolicy,
    /// The longest wait between two polls of a running task (the first poll comes after
    /// 100 ms, or this if shorter, and the wait doubles up to it).
    pub task_poll_interval: Duration,
    /// How long a task may run before the wait gives up.
    pub task_timeout: Duration,
    /// A ticket older than this is renewed before use (PVE tickets live two hours).
    pub ticket_renew_after: Duration,
    /// Lines of a failed task's log kept in the error.
    pub log_tail_lines: usize,
}

impl ClientConfig {
    /// Defaults: system TLS, 30 s requests, 3 in flight, 6 attempts from 500 ms, task polls from
    /// 100 ms doubling to 1 s,
    /// 10 min tasks, tickets renewed after 1 h 45 min, 20 log lines.
    pub fn new(endpoint: impl Into<String>, auth: Auth) -> Self {
        ClientConfig {
            endpoint: endpoint.into(),
            auth,
            tls: Tls::System,
            request_timeout: Duration::from_secs(30),
            max_in_flight: 3,
            retry: RetryPolicy::default(),
            task_poll_interval: Duration::from_secs(1),
            task_timeout: Duration::from_secs(600),
            ticket_renew_after: Duration::from_secs(105 * 60),
            log_tail_lines: 20,
        }
    }
}

#[derive(Debug, Clone)]
struct Ticket {
    ticket: String,
    csrf: String,
    obtained: Instant,
}

/// What a shutdown ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// The guest shut down by itself within the timeout.
    Clean,
    /// The shutdown failed or timed out and the guest was stopped hard.
    Forced,
}

/// What applying a config did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyOutcome {
    /// Keys written or deleted.
    pub changed: BTreeSet<String>,
    /// Disks grown.
    pub resized: BTreeSet<String>,
    /// Owned keys whose change waits in `/pending` for a restart.
    pub restart_required: BTreeSet<String>,
}

/// A client for one PVE cluster. Cheap to clone; clones share limits and the ticket.
#[derive(Clone)]
pub struct ProxmoxClient {
    inner: Arc<Inner>,
    /// Hears the UPID of every task this handle starts, before the task is waited for.
    tasks: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

struct Inner {
    http: reqwest::Client,
    base: url::Url,
    config: ClientConfig,
    ticket: Mutex<Option<Ticket>>,
    permits: Semaphore,
    guest_locks: std::sync::Mutex<HashMap<u32, Arc<Mutex<()>>>>,
}

enum Body<'a> {
    None,
    Form(&'a [(String, String)]),
}

fn guest_path(node: &str, kind: GuestKind, vmid: u32) -> Vec<String> {
    vec![
        "nodes".into(),
        node.into(),
        kind.as_str().into(),
        vmid.to_string(),
    ]
}

fn guest_label(node: &str, kind: GuestKind, vmid: u32) -> String {
    format!("{kind}/{vmid} on {node}")
}

fn with(mut base: Vec<String>, more: &[&str]) -> Vec<String> {
    base.extend(more.iter().map(|s| s.to_string()));
    base
}

impl ProxmoxClient {
    /// Builds a client; reads the CA file now so a bad path fails early.
    pub fn new(config: ClientConfig) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .user_agent("mycopod")
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout);
        match &config.tls {
            Tls::System => {}
            Tls::CaFile(path) => {
                let pem = std::fs::read(path).map_err(|e| ProxmoxError::ReadCaFile {
                    path: path.display().to_string(),
                    source: Box::new(e),
                })?;
                builder = builder.tls_certs_only(parse_ca(&pem, &path.display().to_string())?);
            }
            Tls::CaPem(pem) => {
                builder = builder.tls_certs_only(parse_ca(pem, "inline pem")?);
            }
            Tls::InsecureSkipVerify => {
                warn!(endpoint = %config.endpoint, "tls certificate verification is disabled (insecureSkipVerify)");
                builder = builder.tls_danger_accept_invalid_certs(true);
            }
        }
        let http = builder.build().map_err(|e| ProxmoxError::BuildClient {
            endpoint: config.endpoint.clone(),
            source: e,
        })?;
        let invalid = || ProxmoxError::InvalidEndpoint {
            endpoint: config.endpoint.clone(),
        };
        let mut base = url::Url::parse(&config.endpoint).map_err(|_| invalid())?;
        if base.cannot_be_a_base() {
            return Err(invalid());
        }
        base.path_segments_mut()
            .map_err(|_| invalid())?
            .pop_if_empty()
            .extend(["api2", "json"]);
        Ok(ProxmoxClient {
            inner: Arc::new(Inner {
                http,
                base,
                permits: Semaphore::new(config.max_in_flight.max(1)),
                config,
                ticket: Mutex::new(None),
                guest_locks: std::sync::Mutex::new(HashMap::new()),
            }),
            tasks: None,
        })
    }

    /// A handle on the same client that sends the UPID of each task it starts to `sink` as
    /// soon as PVE answers with it, so the caller can record which task is doing its work
    /// while that task still runs.
    pub fn reporting_tasks_to(&self, sink: tokio::sync::mpsc::UnboundedSender<String>) -> Self {
        ProxmoxClient {
            inner: Arc::clone(&self.inner),
            tasks: Some(sink),
        }
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    fn url(&self, segments: &[String], query: &[(String, String)]) -> Result<url::Url> {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .map_err(|_| ProxmoxError::InvalidEndpoint {
                endpoint: self.inner.config.endpoint.clone(),
            })?
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    async fn login(&self, ticket: &mut Option<Ticket>) -> Result<Ticket> {
        let Auth::Password { user, password } = &self.inner.config.auth else {
            return Err(ProxmoxError::InvalidRequest {
                guest: "cluster".into(),
                reason: "login without a password".into(),
            });
        };
        let form = vec![
            ("username".to_string(), user.clone()),
            ("password".to_string(), password.clone()),
        ];
        let segments = vec!["access".to_string(), "ticket".to_string()];
        let value = self
            .send_once(Method::POST, &segments, &[], Body::Form(&form), None)
            .await
            .map_err(|e| ProxmoxError::Login {
                user: user.clone(),
                source: Box::new(e),
            })?;
        let t: TicketResponse =
            serde_json::from_value(value).map_err(|e| ProxmoxError::Decode {
                method: "POST".into(),
                path: "/access/ticket".into(),
                source: e,
            })?;
        let fresh = Ticket {
            ticket: t.ticket,
            csrf: t.csrf_prevention_token,
            obtained: Instant::now(),
        };
        *ticket = Some(fresh.clone());
        debug!(user = %user, "obtained a pve ticket");
        Ok(fresh)
    }

    async fn current_ticket(&self, force: bool) -> Result<Option<Ticket>> {
        if !matches!(self.inner.config.auth, Auth::Password { .. }) {
            return Ok(None);
        }
        let mut guard = self.inner.ticket.lock().await;
        let fresh = guard
            .as_ref()
            .filter(|t| !force && t.obtained.elapsed() < self.inner.config.ticket_renew_after);
        if let Some(t) = fresh {
            return Ok(Some(t.clone()));
        }
        self.login(&mut guard).await.map(Some)
    }

    /// One HTTP request; returns the envelope's `data`.
    async fn send_once(
        &self,
        method: Method,
        segments: &[String],
        query: &[(String, String)],
        body: Body<'_>,
        ticket: Option<&Ticket>,
    ) -> Result<serde_json::Value> {
        let path = format!("/{}", segments.join("/"));
        let url = self.url(segments, query)?;
        let mut req = self.inner.http.request(method.clone(), url);
        match (&self.inner.config.auth, ticket) {
            (Auth::Token { token_id, secret }, _) => {
                req = req.header("Authorization", format!("PVEAPIToken={token_id}={secret}"));
            }
            (Auth::Password { .. }, Some(t)) => {
                req = req.header("Cookie", format!("PVEAuthCookie={}", t.ticket));
                if method != Method::GET {
                    req = req.header("CSRFPreventionToken", t.csrf.clone());
                }
            }
            (Auth::Password { .. }, None) => {}
        }
        if let Body::Form(form) = body {
            let encoded = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form.iter())
                .finish();
            req = req
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(encoded);
        }
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| ProxmoxError::Timeout {
                what: format!("{method} {path} (client closed)"),
                after: Duration::ZERO,
            })?;
        let transport = |e: reqwest::Error| ProxmoxError::Transport {
            method: method.to_string(),
            path: path.clone(),
            source: e,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .and_then(|r| std::str::from_utf8(r.as_bytes()).ok().map(str::to_string));
        let bytes = resp.bytes().await.map_err(transport)?;
        if status.is_success() {
            let env: Envelope<serde_json::Value> =
                serde_json::from_slice(&bytes).map_err(|e| ProxmoxError::Decode {
                    method: method.to_string(),
                    path: path.clone(),
                    source: e,
                })?;
            return Ok(env.data);
        }
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
        let message = body
            .message
            .filter(|m| !m.trim().is_empty())
            .or(reason)
            .or_else(|| status.canonical_reason().map(str::to_string))
            .unwrap_or_default();
        Err(ProxmoxError::Api {
            method: method.to_string(),
            path,
            status: status.as_u16(),
            message: message.trim().to_string(),
            errors: body.errors.unwrap_or_default(),
        })
    }

    /// One request with authentication; a 401 on ticket auth renews the ticket once.
    async fn call(
        &self,
        method: Method,
        segments: &[String],
        query: &[(String, String)],
        body: Body<'_>,
    ) -> Result<serde_json::Value> {
        let ticket = self.current_ticket(false).await?;
        let form = match body {
            Body::Form(f) => Some(f),
            Body::None => None,
        };
        let mk = || form.map_or(Body::None, Body::Form);
        let first = self
            .send_once(method.clone(), segments, query, mk(), ticket.as_ref())
            .await;
        match first {
            Err(e) if e.status() == Some(401) && ticket.is_some() => {
                debug!("pve answered 401: renewing the ticket once");
                let renewed = self.current_ticket(true).await?;
                self.send_once(method, segments, query, mk(), renewed.as_ref())
                    .await
            }
            other => other,
        }
    }

    async fn call_as<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[String],
        query: &[(String, String)],
    ) -> Result<T> {
        let value = self
            .call(method.clone(), segments, query, Body::None)
            .await?;
        serde_json::from_value(value).map_err(|e| ProxmoxError::Decode {
            method: method.to_string(),
            path: format!("/{}", segments.join("/")),
            source: e,
        })
    }

    /// Runs `op` until it succeeds, fails with a non-transient error, or the attempts run out.
    async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let policy = self.inner.config.retry;
        let mut attempt = 0u32;
        loop {
            match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt + 1 < policy.max_attempts.max(1) => {
                    // Jittered, so clients that failed together do not retry together.
                    let delay = policy.backoff().random(attempt + 1);
                    warn!(what, attempt = attempt + 1, ?delay, error = %e, "transient error, retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn guest_lock(&self, vmid: u32) -> Arc<Mutex<()>> {
        let mut map = match self.inner.guest_locks.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(vmid).or_default().clone()
    }

    // ---- observation ----

    /// All guests of the cluster: exactly one `GET /cluster/resources?type=vm`.
    pub async fn observe_cluster(&self) -> Result<Vec<ClusterResource>> {
        let segments = vec!["cluster".to_string(), "resources".to_string()];
        let query = vec![("type".to_string(), "vm".to_string())];
        self.retry("observe cluster", |_| {
            self.call_as::<Vec<ClusterResource>>(Method::GET, &segments, &query)
        })
        .instrument(info_span!("proxmox.observe_cluster", endpoint = %self.inner.config.endpoint))
        .await
    }

    /// A guest's config (current values), its digest and its pending changes. One request:
    /// PVE answers `/pending` with every key's current value, its pending change and the
    /// config's `digest`. Only an answer without a digest (an older or partial API) costs a
    /// second request, to `/config`, for the digest an update must carry.
    pub async fn observe_guest_config(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
    ) -> Result<ObservedConfig> {
        let label = guest_label(node, kind, vmid);
        async {
            let base = guest_path(node, kind, vmid);
            let pending_path = with(base.clone(), &["pending"]);
            let pending: Vec<PendingItem> = self
                .retry("read pending", |_| {
                    self.call_as(Method::GET, &pending_path, &[])
                })
                .await
                .map_err(|e| not_found_as_guest(e, &label))?;
            if pending_digest(&pending).is_some() {
                return Ok(observed_from(None, pending));
            }
            let cfg_path = with(base, &["config"]);
            let cfg: BTreeMap<String, serde_json::Value> = self
                .retry("read config", |_| self.call_as(Method::GET, &cfg_path, &[]))
                .await
                .map_err(|e| not_found_as_guest(e, &label))?;
            Ok(observed_from(Some(cfg), pending))
        }
        .instrument(info_span!("proxmox.observe_guest", guest = %label))
        .await
    }

    /// A guest's power status (`running`, `stopped`), or a not-found error.
    pub async fn guest_status(&self, node: &str, kind: GuestKind, vmid: u32) -> Result<String> {
        let label = guest_label(node, kind, vmid);
        let segments = with(guest_path(node, kind, vmid), &["status", "current"]);
        let v: serde_json::Value = self
            .retry("read status", |_| self.call_as(Method::GET, &segments, &[]))
            .instrument(info_span!("proxmox.guest_status", guest = %label))
            .await
            .map_err(|e| not_found_as_guest(e, &label))?;
        Ok(v.get("status")
            .and_then(|s| s.as_str())
            .unwrap_or("unknown")
            .to_string())
    }

    async fn guest_exists(&self, node: &str, kind: GuestKind, vmid: u32) -> Result<bool> {
        match self.guest_status(node, kind, vmid).await {
            Ok(_) => Ok(true),
            Err(e) if e.class() == ErrorClass::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The cluster's nodes.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let segments = vec!["nodes".to_string()];
        self.retry("list nodes", |_| self.call_as(Method::GET, &segments, &[]))
            .instrument(info_span!("proxmox.nodes"))
            .await
    }

    /// The next free vmid (`GET /cluster/nextid`).
    pub async fn next_id(&self) -> Result<u32> {
        let segments = vec!["cluster".to_string(), "nextid".to_string()];
        let v: serde_json::Value = self
            .retry("next id", |_| self.call_as(Method::GET, &segments, &[]))
            .instrument(info_span!("proxmox.next_id"))
            .await?;
        value_to_config_string(&v)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ProxmoxError::InvalidRequest {
                guest: "cluster".into(),
                reason: format!("nextid returned {v}"),
            })
    }

    // ---- tasks ----

    /// Waits for a task to end; success is `OK` or `WARNINGS: N`, anything else is
    /// [`ProxmoxError::TaskFailed`] with the log tail.
    pub async fn wait_task(&self, upid: &str, guest: &str) -> Result<()> {
        let parsed: Upid = upid.parse()?;
        let segments = vec![
            "nodes".to_string(),
            parsed.node.clone(),
            "tasks".to_string(),
            parsed.raw.clone(),
        ];
        let deadline = Instant::now() + self.inner.config.task_timeout;
        let status_path = with(segments.clone(), &["status"]);
        // A task just started is rarely done: the first look is after a short wait, and the
        // wait doubles up to the poll interval. A quick task (a start, a small create) costs
        // one status request and ends within ~100 ms of finishing; a long one is polled at
        // the interval.
        let interval = self.inner.config.task_poll_interval;
        let mut wait = FIRST_TASK_POLL.min(interval);
        loop {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(interval);
            let status: TaskStatus = self
                .retry("task status", |_| {
                    self.call_as(Method::GET, &status_path, &[])
                })
                .await?;
            if status.status == "stopped" {
                let exit = status.exitstatus.unwrap_or_else(|| "unknown".into());
                if exit_status_is_ok(&exit) {
                    return Ok(());
                }
                let log_tail = self.task_log_tail(&segments).await;
                return Err(ProxmoxError::TaskFailed {
                    upid: parsed.raw,
                    guest: guest.to_string(),
                    exit_status: exit,
                    log_tail,
                });
            }
            if Instant::now() >= deadline {
                return Err(ProxmoxError::Timeout {
                    what: format!("task {} for {guest}", parsed.raw),
                    after: self.inner.config.task_timeout,
                });
            }
        }
    }

    async fn task_log_tail(&self, segments: &[String]) -> Vec<String> {
        let query = vec![
            ("start".to_string(), "0".to_string()),
            ("limit".to_string(), "1000".to_string()),
        ];
        let lines: Result<Vec<TaskLogLine>> = self
            .call_as(Method::GET, &with(segments.to_vec(), &["log"]), &query)
            .await;
        match lines {
            Ok(lines) => {
                let keep = self.inner.config.log_tail_lines;
                let skip = lines.len().saturating_sub(keep);
                lines.into_iter().skip(skip).map(|l| l.t).collect()
            }
            Err(e) => vec![format!("(task log unavailable: {e})")],
        }
    }

    /// Sends a write and waits for its task when PVE answers with a UPID.
    async fn write_and_wait(
        &self,
        method: Method,
        segments: &[String],
        query: &[(String, String)],
        form: &[(String, String)],
        label: &str,
    ) -> Result<()> {
        let body = if form.is_empty() {
            Body::None
        } else {
            Body::Form(form)
        };
        let data = self.call(method, segments, query, body).await?;
        match data.as_str() {
            Some(upid) if upid.starts_with("UPID:") => {
                if let Some(sink) = &self.tasks {
                    // The receiver may be gone (the caller stopped listening); the task is
                    // waited for all the same.
                    let _ = sink.send(upid.to_owned());
                }
                self.wait_task(upid, label).await
            }
            _ => Ok(()),
        }
    }

    // ---- apply ----

    /// Creates a guest (plain qemu, clone of a template then a config update, or lxc from an
    /// `ostemplate`) and waits for it. A retry that finds the guest already there counts as done.
    pub async fn create_guest(&self, desired: &DesiredGuest) -> Result<()> {
        let label = desired.label();
        let lock = self.guest_lock(desired.vmid);
        async {
            let _serial = lock.lock().await;
            self.retry("create guest", |attempt| async move {
                if attempt > 0
                    && self
                        .guest_exists(&desired.node, desired.kind, desired.vmid)
                        .await?
                {
                    debug!("guest already exists after a retried create");
                    return Ok(());
                }
                self.create_once(desired).await
            })
            .await?;
            if matches!(desired.source, CreateSource::Clone { .. }) {
                self.apply_config_locked(desired).await?;
            }
            Ok(())
        }
        .instrument(info_span!("proxmox.create", guest = %label))
        .await
    }

    async fn create_once(&self, desired: &DesiredGuest) -> Result<()> {
        let label = desired.label();
        match (&desired.source, desired.kind) {
            (CreateSource::Clone { from, full, node }, GuestKind::Qemu) => {
                let src_node = node.clone().unwrap_or_else(|| desired.node.clone());
                let mut form = vec![
                    ("newid".to_string(), desired.vmid.to_string()),
                    (
                        "full".to_string(),
                        if *full { "1" } else { "0" }.to_string(),
                    ),
                ];
                if let Some(name) = desired.owned_config().get("name") {
                    form.push(("name".into(), name.clone()));
                }
                if src_node != desired.node {
                    form.push(("target".into(), desired.node.clone()));
                }
                let segments = with(guest_path(&src_node, GuestKind::Qemu, *from), &["clone"]);
                self.write_and_wait(Method::POST, &segments, &[], &form, &label)
                    .await
            }
            (CreateSource::Clone { .. }, GuestKind::Lxc) => Err(ProxmoxError::InvalidRequest {
                guest: label,
                reason: "cloning is supported for qemu guests only".into(),
            }),
            (source, kind) => {
                let mut form = vec![("vmid".to_string(), desired.vmid.to_string())];
                if let CreateSource::OsTemplate(t) = source {
                    form.push(("ostemplate".into(), t.clone()));
                }
                form.extend(desired.owned_config());
                let segments = vec![
                    "nodes".to_string(),
                    desired.node.clone(),
                    kind.as_str().to_string(),
                ];
                self.write_and_wait(Method::POST, &segments, &[], &form, &label)
                    .await
            }
        }
    }

    /// Brings the guest's owned keys to the desired values: reads config and pending, writes
    /// the difference with the observed digest (POST for qemu, PUT for lxc), deletes keys the
    /// spec used to own, and grows disks. Changes PVE parks in `/pending` are reported as
    /// `restart_required`; the guest is never restarted here.
    pub async fn apply_config(&self, desired: &DesiredGuest) -> Result<ApplyOutcome> {
        let lock = self.guest_lock(desired.vmid);
        let label = desired.label();
        async {
            let _serial = lock.lock().await;
            self.apply_config_locked(desired).await
        }
        .instrument(info_span!("proxmox.apply_config", guest = %label))
        .await
    }

    async fn apply_config_locked(&self, desired: &DesiredGuest) -> Result<ApplyOutcome> {
        let observed = self
            .observe_guest_config(&desired.node, desired.kind, desired.vmid)
            .await?;
        let diffs = compare::compare(desired, &observed);
        let update = compare::update_for(desired, &observed, &diffs)?;
        let mut outcome = ApplyOutcome {
            restart_required: diffs
                .iter()
                .filter(|d| d.pending)
                .map(|d| d.key.clone())
                .collect(),
            ..ApplyOutcome::default()
        };
        if update.is_empty() {
            return Ok(outcome);
        }
        let written = self
            .apply_update_locked(desired, observed.digest.as_deref(), &update)
            .await;
        if let Err(e) = written {
            if e.class() != ErrorClass::Conflict {
                return Err(e);
            }
            // A retried write whose first attempt landed (its answer was lost) sees its own
            // change as a digest conflict: verify by observation before reporting a conflict.
            let again = self
                .observe_guest_config(&desired.node, desired.kind, desired.vmid)
                .await?;
            if !compare::compare(desired, &again).iter().all(|d| d.pending) {
                return Err(e);
            }
            debug!("digest conflict, but the guest already has the desired values");
        }
        outcome.changed = update
            .set
            .keys()
            .chain(update.delete.iter())
            .cloned()
            .collect();
        outcome.resized = update.resize.keys().cloned().collect();
        if !update.set.is_empty() || !update.delete.is_empty() {
            let after = self
                .observe_guest_config(&desired.node, desired.kind, desired.vmid)
                .await?;
            let owned = desired.owned_keys();
            outcome
                .restart_required
                .extend(after.pending.keys().filter(|k| owned.contains(*k)).cloned());
        }
        Ok(outcome)
    }

    /// Sends a prepared update: config first (with `digest`, so a concurrent change is a
    /// conflict), then the disk resizes.
    pub async fn apply_update(
        &self,
        desired: &DesiredGuest,
        digest: Option<&str>,
        update: &ConfigUpdate,
    ) -> Result<()> {
        let lock = self.guest_lock(desired.vmid);
        let label = desired.label();
        async {
            let _serial = lock.lock().await;
            self.apply_update_locked(desired, digest, update).await
        }
        .instrument(info_span!("proxmox.apply_update", guest = %label))
        .await
    }

    async fn apply_update_locked(
        &self,
        desired: &DesiredGuest,
        digest: Option<&str>,
        update: &ConfigUpdate,
    ) -> Result<()> {
        let label = desired.label();
        let base = guest_path(&desired.node, desired.kind, desired.vmid);
        if !update.set.is_empty() || !update.delete.is_empty() {
            let mut form: Vec<(String, String)> = update
                .set
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !update.delete.is_empty() {
                let keys: Vec<&str> = update.delete.iter().map(String::as_str).collect();
                form.push(("delete".into(), keys.join(",")));
            }
            if let Some(d) = digest {
                form.push(("digest".into(), d.to_string()));
            }
            let method = match desired.kind {
                GuestKind::Qemu => Method::POST,
                GuestKind::Lxc => Method::PUT,
            };
            let segments = with(base.clone(), &["config"]);
            self.retry("update config", |_| {
                self.write_and_wait(method.clone(), &segments, &[], &form, &label)
            })
            .await?;
        }
        for (disk, size) in &update.resize {
            self.resize_locked(
                desired.node.as_str(),
                desired.kind,
                desired.vmid,
                disk,
                size,
            )
            .await?;
        }
        Ok(())
    }

    /// Grows a disk to `size` (`40G`). Reads the current size first: a smaller `size` is
    /// [`ProxmoxError::ShrinkRefused`], an equal one does nothing.
    pub async fn resize_disk(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        disk: &str,
        size: &str,
    ) -> Result<()> {
        let lock = self.guest_lock(vmid);
        let label = guest_label(node, kind, vmid);
        async {
            let _serial = lock.lock().await;
            let observed = self.observe_guest_config(node, kind, vmid).await?;
            let invalid_size = || ProxmoxError::InvalidSize {
                guest: label.clone(),
                key: disk.to_string(),
                value: size.to_string(),
            };
            let want = super::propstring::parse_size(size).ok_or_else(invalid_size)?;
            let have = observed
                .config
                .get(disk)
                .and_then(|v| super::propstring::disk_size(disk, v))
                .ok_or_else(|| ProxmoxError::InvalidRequest {
                    guest: label.clone(),
                    reason: format!("disk {disk} not found or without a size"),
                })?;
            if want < have {
                return Err(ProxmoxError::ShrinkRefused {
                    guest: label.clone(),
                    disk: disk.to_string(),
                    observed: super::propstring::format_size(have),
                    desired: super::propstring::format_size(want),
                });
            }
            if want == have {
                return Ok(());
            }
            self.resize_locked(
                node,
                kind,
                vmid,
                disk,
                &super::propstring::format_size(want),
            )
            .await
        }
        .instrument(info_span!("proxmox.resize", guest = %label, disk))
        .await
    }

    async fn resize_locked(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        disk: &str,
        size: &str,
    ) -> Result<()> {
        let label = guest_label(node, kind, vmid);
        let segments = with(guest_path(node, kind, vmid), &["resize"]);
        let form = vec![
            ("disk".to_string(), disk.to_string()),
            ("size".to_string(), size.to_string()),
        ];
        self.retry("resize disk", |_| {
            self.write_and_wait(Method::PUT, &segments, &[], &form, &label)
        })
        .await
    }

    async fn power(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        action: &str,
        form: Vec<(String, String)>,
    ) -> Result<()> {
        let label = guest_label(node, kind, vmid);
        let segments = with(guest_path(node, kind, vmid), &["status", action]);
        self.retry(action, |_| {
            self.write_and_wait(Method::POST, &segments, &[], &form, &label)
        })
        .await
        .map_err(|e| not_found_as_guest(e, &label))
    }

    /// Starts a guest and waits; starting a running guest is not an error.
    pub async fn start(&self, node: &str, kind: GuestKind, vmid: u32) -> Result<()> {
        let lock = self.guest_lock(vmid);
        let label = guest_label(node, kind, vmid);
        async {
            let _serial = lock.lock().await;
            match self.power(node, kind, vmid, "start", vec![]).await {
                Err(e) if already(&e, "running") => Ok(()),
                other => other,
            }
        }
        .instrument(info_span!("proxmox.start", guest = %label))
        .await
    }

    /// Stops a guest hard and waits; stopping a stopped guest is not an error.
    pub async fn stop(&self, node: &str, kind: GuestKind, vmid: u32) -> Result<()> {
        let lock = self.guest_lock(vmid);
        let label = guest_label(node, kind, vmid);
        async {
            let _serial = lock.lock().await;
            self.stop_locked(node, kind, vmid).await
        }
        .instrument(info_span!("proxmox.stop", guest = %label))
        .await
    }

    async fn stop_locked(&self, node: &str, kind: GuestKind, vmid: u32) -> Result<()> {
        match self.power(node, kind, vmid, "stop", vec![]).await {
            Err(e) if already(&e, "stopped") || already(&e, "not running") => Ok(()),
            other => other,
        }
    }

    /// Asks the guest to shut down within `timeout`; if that fails and `force_stop` is set,
    /// stops it hard.
    pub async fn shutdown(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        timeout: Duration,
        force_stop: bool,
    ) -> Result<ShutdownOutcome> {
        let lock = self.guest_lock(vmid);
        let label = guest_label(node, kind, vmid);
        async {
            let _serial = lock.lock().await;
            let mut form = vec![("timeout".to_string(), timeout.as_secs().max(1).to_string())];
            if kind == GuestKind::Qemu {
                form.push(("forceStop".to_string(), "0".to_string()));
            }
            match self.power(node, kind, vmid, "shutdown", form).await {
                Ok(()) => Ok(ShutdownOutcome::Clean),
                Err(e) if already(&e, "not running") || already(&e, "stopped") => {
                    Ok(ShutdownOutcome::Clean)
                }
                Err(e) if force_stop && e.class() != ErrorClass::NotFound => {
                    warn!(error = %e, "shutdown failed, stopping hard");
                    self.stop_locked(node, kind, vmid).await?;
                    Ok(ShutdownOutcome::Forced)
                }
                Err(e) => Err(e),
            }
        }
        .instrument(info_span!("proxmox.shutdown", guest = %label))
        .await
    }

    /// Reboots a running guest (pending changes apply).
    pub async fn reboot(&self, node: &str, kind: GuestKind, vmid: u32) -> Result<()> {
        let lock = self.guest_lock(vmid);
        let label = guest_label(node, kind, vmid);
        async {
            let _serial = lock.lock().await;
            self.power(node, kind, vmid, "reboot", vec![]).await
        }
        .instrument(info_span!("proxmox.reboot", guest = %label))
        .await
    }

    /// Deletes a (stopped) guest with `purge=1` and `destroy-unreferenced-disks=1`; a guest
    /// already gone counts as deleted.
    pub async fn delete_guest(&self, node: &str, kind: GuestKind, vmid: u32) -> Result<()> {
        let lock = self.guest_lock(vmid);
        let label = guest_label(node, kind, vmid);
        async {
            let _serial = lock.lock().await;
            let segments = guest_path(node, kind, vmid);
            let query = vec![
                ("purge".to_string(), "1".to_string()),
                ("destroy-unreferenced-disks".to_string(), "1".to_string()),
            ];
            let result = self
                .retry("delete guest", |_| {
                    self.write_and_wait(Method::DELETE, &segments, &query, &[], &label)
                })
                .await
                .map_err(|e| not_found_as_guest(e, &label));
            match result {
                Err(e) if e.class() == ErrorClass::NotFound => Ok(()),
                other => other,
            }
        }
        .instrument(info_span!("proxmox.delete", guest = %label))
        .await
    }
}

fn already(e: &ProxmoxError, what: &str) -> bool {
    let text = match e {
        ProxmoxError::Api { message, .. } => message.to_ascii_lowercase(),
        ProxmoxError::TaskFailed { exit_status, .. } => exit_status.to_ascii_lowercase(),
        _ => return false,
    };
    text.contains(&format!("already {what}"))
        || (what == "not running" && text.contains("not running"))
}

fn not_found_as_guest(e: ProxmoxError, label: &str) -> ProxmoxError {
    if e.class() == ErrorClass::NotFound && matches!(e, ProxmoxError::Api { .. }) {
        ProxmoxError::GuestNotFound {
            guest: label.to_string(),
        }
    } else {
        e
    }
}

fn parse_ca(pem: &[u8], what: &str) -> Result<Vec<reqwest::Certificate>> {
    let certs =
        reqwest::Certificate::from_pem_bundle(pem).map_err(|e| ProxmoxError::ReadCaFile {
            path: what.to_string(),
            source: Box::new(e),
        })?;
    if certs.is_empty() {
        return Err(ProxmoxError::ReadCaFile {
            path: what.to_string(),
            source: "no certificate in the pem data".into(),
        });
    }
    Ok(certs)
}

/// The `digest` row of a `/pending` answer.
fn pending_digest(pending: &[PendingItem]) -> Option<String> {
    pending
        .iter()
        .find(|item| item.key == "digest")
        .and_then(|item| item.value.as_ref())
        .and_then(value_to_config_string)
}

/// Builds the observed config: current values and pending changes from `/pending` (which lists
/// every key with its current value), the digest from its `digest` row or else from `cfg`
/// (`/config`, read only when `/pending` had none). An empty `/pending` answer leaves the
/// current values to `cfg`.
fn observed_from(
    cfg: Option<BTreeMap<String, serde_json::Value>>,
    pending: Vec<PendingItem>,
) -> ObservedConfig {
    let digest = pending_digest(&pending).or_else(|| {
        cfg.as_ref()
            .and_then(|c| c.get("digest"))
            .and_then(value_to_config_string)
    });
    let mut out = ObservedConfig {
        config: BTreeMap::new(),
        digest,
        pending: BTreeMap::new(),
    };
    if pending.is_empty() {
        out.config = cfg
            .iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != "digest")
            .filter_map(|(k, v)| value_to_config_string(v).map(|s| (k.clone(), s)))
            .collect();
        return out;
    }
    for item in pending {
        if item.key == "digest" {
            continue;
        }
        if let Some(v) = item.value.as_ref().and_then(value_to_config_string) {
            out.config.insert(item.key.clone(), v);
        }
        if item.delete.unwrap_or(0) > 0 {
            out.pending.insert(item.key, PendingChange::Delete);
        } else if let Some(p) = item.pending.as_ref().and_then(value_to_config_string) {
            out.pending.insert(item.key, PendingChange::Set(p));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_from_should_take_current_values_and_pending_changes() {
        let cfg: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(r#"{"cores":4,"memory":"2048","digest":"d1"}"#)
                .unwrap_or_default();
        let pending: Vec<PendingItem> = serde_json::from_str(
            r#"[{"key":"cores","value":2,"pending":4},{"key":"memory","value":"2048"},
                {"key":"onboot","value":1,"delete":1},{"key":"digest","value":"d1"}]"#,
        )
        .unwrap_or_default();
        let o = observed_from(Some(cfg), pending.clone());
        assert_eq!(o.digest.as_deref(), Some("d1"));
        assert_eq!(o.config.get("cores").map(String::as_str), Some("2"));
        assert_eq!(
            o.pending.get("cores"),
            Some(&PendingChange::Set("4".into()))
        );
        assert_eq!(o.pending.get("onboot"), Some(&PendingChange::Delete));
        assert!(!o.config.contains_key("digest"));
        // The digest row makes `/config` unnecessary: the same answer from `/pending` alone.
        assert_eq!(observed_from(None, pending.clone()), o);
        // Without it, the digest is `/config`'s.
        let mut other = pending;
        other.retain(|item| item.key != "digest");
        let cfg = BTreeMap::from([("digest".to_owned(), serde_json::json!("d2"))]);
        assert_eq!(
            observed_from(Some(cfg), other).digest.as_deref(),
            Some("d2")
        );
    }
}
