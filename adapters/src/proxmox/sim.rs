//! A stateful, in-process simulator of the PVE 8/9 API subset mycopod uses, served on loopback.
//!
//! It keeps guests, tasks (real UPIDs, asynchronous, holding the config lock, with logs),
//! tickets and tokens, normalizes like PVE (MACs, tags, disk volumes and sizes), parks changes
//! of running guests in `/pending`, answers bad parameters with PVE's 400, injects faults, and
//! records every request. It is a test double for the client: it must never be used against,
//! or in place of, a real cluster.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::api::{GuestKind, format_upid, parse_bool};
use super::propstring::{self, format_size, is_disk_key, key_family, parse_size, parse_tags};

/// The power state of a simulated guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimStatus {
    /// Running.
    Running,
    /// Stopped.
    Stopped,
}

/// One guest held by the simulator.
#[derive(Debug, Clone, PartialEq)]
pub struct SimGuest {
    /// Its VM or container id.
    pub vmid: u32,
    /// Node it lives on.
    pub node: String,
    /// qemu or lxc.
    pub kind: GuestKind,
    /// Current config (what the guest runs with).
    pub config: BTreeMap<String, String>,
    /// Changes waiting for a restart: `Some(value)` sets, `None` deletes.
    pub pending: BTreeMap<String, Option<String>>,
    /// Power state.
    pub status: SimStatus,
    /// Config lock (`create`, `backup`...).
    pub lock: Option<String>,
    /// Whether the guest is a template.
    pub template: bool,
    /// When set, an ACPI shutdown never completes (the task times out).
    pub ignores_shutdown: bool,
    lock_clears_after: Option<u32>,
}

impl SimGuest {
    /// A stopped qemu guest with no config.
    pub fn qemu(vmid: u32, node: impl Into<String>) -> Self {
        Self::new(vmid, node, GuestKind::Qemu)
    }

    /// A stopped lxc guest with no config.
    pub fn lxc(vmid: u32, node: impl Into<String>) -> Self {
        Self::new(vmid, node, GuestKind::Lxc)
    }

    fn new(vmid: u32, node: impl Into<String>, kind: GuestKind) -> Self {
        SimGuest {
            vmid,
            node: node.into(),
            kind,
            config: BTreeMap::new(),
            pending: BTreeMap::new(),
            status: SimStatus::Stopped,
            lock: None,
            template: false,
            ignores_shutdown: false,
            lock_clears_after: None,
        }
    }

    /// Sets a config key verbatim (no normalization: this is what PVE already stored).
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.config.insert(key.to_string(), value.to_string());
        self
    }

    /// Marks the guest running.
    pub fn running(mut self) -> Self {
        self.status = SimStatus::Running;
        self
    }

    /// Marks the guest a template.
    pub fn template(mut self) -> Self {
        self.template = true;
        self.config.insert("template".into(), "1".into());
        self
    }

    fn label(&self) -> &'static str {
        match self.kind {
            GuestKind::Qemu => "VM",
            GuestKind::Lxc => "CT",
        }
    }

    /// The config with pending changes applied (what PVE's GET config shows by default).
    fn merged(&self) -> BTreeMap<String, String> {
        let mut c = self.config.clone();
        for (k, v) in &self.pending {
            match v {
                Some(v) => {
                    c.insert(k.clone(), v.clone());
                }
                None => {
                    c.remove(k);
                }
            }
        }
        c
    }

    /// The digest of the config and its pending section, as PVE would compute over the file.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (k, v) in &self.config {
            h.update(format!("{k}: {v}\n"));
        }
        h.update("[PENDING]\n");
        for (k, v) in &self.pending {
            h.update(format!("{k}: {v:?}\n"));
        }
        hex::encode(h.finalize())[..40].to_string()
    }

    fn apply_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for (k, v) in pending {
            match v {
                Some(v) => {
                    self.config.insert(k, v);
                }
                None => {
                    self.config.remove(&k);
                }
            }
        }
    }
}

/// A fault: the next `times` requests matching `method` and `path_contains` fail.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Only requests with this method (`None`: any).
    pub method: Option<Method>,
    /// Substring of the path below `/api2/json`.
    pub path_contains: String,
    /// How many requests fail.
    pub times: u32,
    /// Status to answer.
    pub status: u16,
    /// Message (the status line's reason, like PVE).
    pub message: String,
    /// Handle the request first, then answer the error (a lost response).
    pub after_handling: bool,
}

impl Fault {
    /// A fault on `path_contains` for any method, answered before handling.
    pub fn new(path_contains: &str, times: u32, status: u16, message: &str) -> Self {
        Fault {
            method: None,
            path_contains: path_contains.to_string(),
            times,
            status,
            message: message.to_string(),
            after_handling: false,
        }
    }

    /// Restricts the fault to one method.
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Makes the request take effect before the error is answered.
    pub fn after_handling(mut self) -> Self {
        self.after_handling = true;
        self
    }
}

/// One recorded request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path below `/api2/json`, decoded (`/nodes/pve1/qemu/120/config`).
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Raw body.
    pub body: String,
    /// Status answered.
    pub status: u16,
    /// How many requests (this one included) the simulator was handling when it answered.
    pub in_flight: usize,
}

impl RequestRecord {
    /// True for anything but GET.
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }

    /// A form field of the body.
    pub fn form(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(self.body.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

/// Settings of a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Node names (all online at start).
    pub nodes: Vec<String>,
    /// `user@realm` and password pairs for tickets.
    pub users: Vec<(String, String)>,
    /// `user@realm!tokenid` and secret pairs.
    pub tokens: Vec<(String, String)>,
    /// How long a task runs.
    pub task_duration: Duration,
    /// How long a ticket is valid (PVE: two hours).
    pub ticket_lifetime: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: vec!["pve1".into(), "pve2".into()],
            users: vec![("root@pam".into(), "secret".into())],
            tokens: vec![("mycopod@pve!gitops".into(), "tok-secret".into())],
            task_duration: Duration::from_millis(5),
            ticket_lifetime: Duration::from_secs(7200),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum OnFinish {
    Nothing,
    Unlock,
    Start,
    Stop,
    Reboot,
    Destroy,
    Shutdown,
}

#[derive(Debug, Clone)]
struct SimTask {
    node: String,
    vmid: u32,
    finish_at: Instant,
    exit: Option<String>,
    log: Vec<String>,
    on_finish: OnFinish,
    fail: Option<(String, Vec<String>)>,
}

#[derive(Debug, Clone)]
struct TaskFault {
    task_type: String,
    message: String,
    log: Vec<String>,
}

#[derive(Debug, Clone)]
struct SimTicket {
    csrf: String,
    issued: Instant,
}

struct SimState {
    cfg: SimConfig,
    online: BTreeMap<String, bool>,
    guests: BTreeMap<u32, SimGuest>,
    tasks: HashMap<String, SimTask>,
    tickets: HashMap<String, SimTicket>,
    faults: Vec<Fault>,
    task_faults: Vec<TaskFault>,
    latency: Duration,
    /// While true, requests wait before they are handled.
    held: tokio::sync::watch::Sender<bool>,
    requests: Vec<RequestRecord>,
    counter: u64,
    started: Instant,
    in_flight: usize,
    max_in_flight: usize,
    /// Whether `/pending` lists the `digest` row, as PVE does.
    pending_digest: bool,
    /// How often the guests' figures in `/cluster/resources` are refreshed (zero: always
    /// current). PVE takes a guest's status, uptime, name, CPUs, memory and disk there from
    /// the statistics `pvestatd` broadcasts every 10 s, not from the guest itself.
    stats_every: Duration,
    /// The last broadcast: when, and each guest's figures then.
    stats: Option<StatsBroadcast>,
}

/// When statistics were last broadcast, and each guest's figures then.
type StatsBroadcast = (Instant, BTreeMap<u32, serde_json::Map<String, Value>>);

type Reply = (StatusCode, String, Value);

fn ok(data: Value) -> Reply {
    (StatusCode::OK, String::new(), data)
}

fn err(status: u16, message: impl Into<String>) -> Reply {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        message.into(),
        Value::Null,
    )
}

fn param_err(errors: BTreeMap<String, String>) -> Reply {
    (
        StatusCode::BAD_REQUEST,
        "Parameter verification failed.".into(),
        json!({ "__errors": errors }),
    )
}

/// The router and the control of a simulator, for serving it on a listener of the caller's
/// choice (a TLS listener in tests).
pub fn router(config: SimConfig) -> (Router, SimControl) {
    let state = Arc::new(Mutex::new(SimState {
        online: config.nodes.iter().map(|n| (n.clone(), true)).collect(),
        cfg: config,
        guests: BTreeMap::new(),
        tasks: HashMap::new(),
        tickets: HashMap::new(),
        faults: Vec::new(),
        task_faults: Vec::new(),
        latency: Duration::ZERO,
        held: tokio::sync::watch::Sender::new(false),
        requests: Vec::new(),
        counter: 0,
        started: Instant::now(),
        in_flight: 0,
        max_in_flight: 0,
        pending_digest: true,
        stats_every: Duration::ZERO,
        stats: None,
    }));
    let app = Router::new().fallback(handle).with_state(state.clone());
    (app, SimControl { state })
}

/// A running simulator. Dropping it stops the server. Derefs to its [`SimControl`].
pub struct SimHandle {
    addr: SocketAddr,
    control: SimControl,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::ops::Deref for SimHandle {
    type Target = SimControl;
    fn deref(&self) -> &SimControl {
        &self.control
    }
}

impl SimHandle {
    /// Binds `127.0.0.1:0` and serves a simulator with `config`.
    pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (app, control) = router(config);
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "pve simulator stopped");
            }
        });
        Ok(SimHandle {
            addr,
            control,
            server,
        })
    }

    /// `http://127.0.0.1:PORT`, the endpoint to give the client.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Reads and changes a simulator's state behind the client's back.
#[derive(Clone)]
pub struct SimControl {
    state: Arc<Mutex<SimState>>,
}

impl SimControl {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Whether `/pending` lists the config's `digest` row (true, as PVE does; false plays an
    /// API that leaves it to `/config`).
    pub fn set_pending_digest(&self, listed: bool) {
        self.lock().pending_digest = listed;
    }

    /// Makes `/cluster/resources` show each guest's status, uptime, name, CPUs, memory and disk
    /// as of the last statistics broadcast, one every `every`, as PVE does (every 10 s); zero
    /// (the default) shows them as they are. A guest created since the last broadcast is
    /// listed with status `unknown` and no figures.
    pub fn set_stats_every(&self, every: Duration) {
        let mut st = self.lock();
        st.stats_every = every;
        st.stats = None;
    }

    /// Adds guests as they are (no normalization), replacing any with the same vmid.
    pub fn seed_guests(&self, guests: impl IntoIterator<Item = SimGuest>) {
        let mut st = self.lock();
        for g in guests {
            st.guests.insert(g.vmid, g);
        }
    }

    /// One guest, after finishing due tasks.
    pub fn guest(&self, vmid: u32) -> Option<SimGuest> {
        let mut st = self.lock();
        st.advance(Instant::now());
        st.guests.get(&vmid).cloned()
    }

    /// All vmids.
    pub fn vmids(&self) -> Vec<u32> {
        let mut st = self.lock();
        st.advance(Instant::now());
        st.guests.keys().copied().collect()
    }

    /// Changes a guest directly (drift made by someone else); returns false if it is absent.
    pub fn modify_guest(&self, vmid: u32, f: impl FnOnce(&mut SimGuest)) -> bool {
        let mut st = self.lock();
        st.advance(Instant::now());
        match st.guests.get_mut(&vmid) {
            Some(g) => {
                f(g);
                true
            }
            None => false,
        }
    }

    /// Makes the next requests matching the fault fail.
    pub fn inject_fault(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Makes the next task whose type contains `task_type` (`qmstart`, `vzcreate`...) fail
    /// with `message` as its exit status, after writing `log` lines.
    pub fn fail_next_task(&self, task_type: &str, message: &str, log: &[&str]) {
        self.lock().task_faults.push(TaskFault {
            task_type: task_type.to_string(),
            message: message.to_string(),
            log: log.iter().map(|s| s.to_string()).collect(),
        });
    }

    /// Holds the guest's config lock (`backup`...) for the next `checks` lock checks.
    pub fn hold_lock(&self, vmid: u32, lock: &str, checks: u32) {
        let mut st = self.lock();
        if let Some(g) = st.guests.get_mut(&vmid) {
            g.lock = Some(lock.to_string());
            g.lock_clears_after = Some(checks);
        }
    }

    /// Delay added to every request.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Makes every request wait, unanswered, until [`SimControl::release_requests`]: a
    /// cluster that takes as long as a test needs to look at what happens meanwhile.
    pub fn hold_requests(&self) {
        self.lock().held.send_replace(true);
    }

    /// Answers the held requests and every one after.
    pub fn release_requests(&self) {
        self.lock().held.send_replace(false);
    }

    /// How long new tasks run.
    pub fn set_task_duration(&self, d: Duration) {
        self.lock().cfg.task_duration = d;
    }

    /// Invalidates every ticket issued so far (the next use gets a 401).
    pub fn revoke_tickets(&self) {
        self.lock().tickets.clear();
    }

    /// Takes a node offline (its requests get 595) or back online.
    pub fn set_node_online(&self, node: &str, online: bool) {
        self.lock().online.insert(node.to_string(), online);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.clone()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.lock().requests.len()
    }

    /// The most requests that were ever being handled at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.lock().max_in_flight
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }
}

// ---- request handling ----

async fn handle(
    State(state): State<Arc<Mutex<SimState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (latency, mut held) = {
        let mut st = match state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        st.in_flight += 1;
        st.max_in_flight = st.max_in_flight.max(st.in_flight);
        (st.latency, st.held.subscribe())
    };
    // A dropped sender cannot happen while the state lives; either way the request goes on.
    let _ = held.wait_for(|h| !*h).await;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let raw_path = uri.path();
    let path = raw_path.strip_prefix("/api2/json").unwrap_or(raw_path);
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect();
    let decoded_path = format!("/{}", segments.join("/"));
    let query = uri.query().unwrap_or_default().to_string();
    let mut params: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    params.extend(url::form_urlencoded::parse(body.as_bytes()).into_owned());

    let mut st = match state.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let now = Instant::now();
    st.advance(now);
    let fault = st.take_fault(&method, &decoded_path);
    let reply = match fault {
        Some(f) if !f.after_handling => err(f.status, f.message),
        other => {
            let r = st.route(&method, &segments, &headers, &params, now);
            match other {
                Some(f) => err(f.status, f.message),
                None => r,
            }
        }
    };
    let in_flight = st.in_flight;
    st.in_flight = st.in_flight.saturating_sub(1);
    st.requests.push(RequestRecord {
        in_flight,
        method: method.to_string(),
        path: decoded_path,
        query,
        body,
        status: reply.0.as_u16(),
    });
    drop(st);
    render(reply)
}

fn render((status, message, data): Reply) -> Response {
    let body = if status.is_success() {
        json!({ "data": data })
    } else if let Some(errors) = data.get("__errors") {
        json!({ "data": null, "errors": errors })
    } else {
        json!({ "data": null })
    };
    let mut resp = (status, axum::Json(body)).into_response();
    if !message.is_empty() {
        let line: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(line.trim().to_string()) {
            resp.extensions_mut().insert(reason);
        }
    }
    resp
}

const QEMU_LIVE: &[&str] = &[
    "name",
    "description",
    "onboot",
    "startup",
    "tags",
    "protection",
    "lock",
];
const LXC_LIVE: &[&str] = &[
    "cores",
    "memory",
    "swap",
    "cpulimit",
    "cpuunits",
    "description",
    "onboot",
    "startup",
    "tags",
    "hostname",
    "nameserver",
    "searchdomain",
    "protection",
];

fn hot_pluggable(kind: GuestKind, key: &str) -> bool {
    let fam = key_family(key);
    match kind {
        GuestKind::Qemu => {
            QEMU_LIVE.contains(&key)
                || fam == "net"
                || (is_disk_key(key) && fam != "efidisk" && fam != "tpmstate")
        }
        GuestKind::Lxc => LXC_LIVE.contains(&key) || fam == "net",
    }
}

enum Check {
    Int(i64),
    Bool,
    Any,
    Disk,
    Net,
}

fn key_check(kind: GuestKind, key: &str) -> Option<Check> {
    let fam = key_family(key);
    let numbered = fam.len() < key.len();
    let common = match key {
        "cores" => Some(Check::Int(1)),
        "memory" => Some(Check::Int(16)),
        "onboot" | "protection" | "template" => Some(Check::Bool),
        "description" | "tags" | "startup" | "lock" | "hookscript" => Some(Check::Any),
        _ => None,
    };
    if common.is_some() {
        return common;
    }
    match kind {
        GuestKind::Qemu => match key {
            "sockets" => Some(Check::Int(1)),
            "balloon" => Some(Check::Int(0)),
            "cpuunits" => Some(Check::Int(1)),
            "name" | "agent" | "boot" | "cpu" | "ostype" | "sshkeys" | "ciuser" | "cipassword"
            | "nameserver" | "searchdomain" | "vga" | "machine" | "bios" | "scsihw" | "numa"
            | "hotplug" | "kvm" | "tablet" | "vmgenid" | "meta" | "smbios1" | "cicustom"
            | "citype" | "serial0" | "args" => Some(Check::Any),
            "efidisk0" | "tpmstate0" => Some(Check::Disk),
            _ if numbered && matches!(fam, "scsi" | "virtio" | "sata" | "ide" | "unused") => {
                Some(Check::Disk)
            }
            _ if numbered && fam == "net" => Some(Check::Net),
            _ if numbered && matches!(fam, "ipconfig" | "hostpci" | "usb" | "serial") => {
                Some(Check::Any)
            }
            _ => None,
        },
        GuestKind::Lxc => match key {
            "swap" => Some(Check::Int(0)),
            "cpulimit" | "cpuunits" => Some(Check::Int(0)),
            "unprivileged" | "console" => Some(Check::Bool),
            "hostname" | "ostype" | "arch" | "features" | "nameserver" | "searchdomain"
            | "cmode" | "tty" | "ssh-public-keys" | "password" | "ostemplate" | "timezone" => {
                Some(Check::Any)
            }
            "rootfs" => Some(Check::Disk),
            _ if numbered && matches!(fam, "mp" | "unused") => Some(Check::Disk),
            _ if numbered && fam == "net" => Some(Check::Net),
            _ => None,
        },
    }
}

impl SimState {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn take_fault(&mut self, method: &Method, path: &str) -> Option<Fault> {
        let idx = self.faults.iter().position(|f| {
            f.times > 0
                && f.method.as_ref().is_none_or(|m| m == method)
                && path.contains(&f.path_contains)
        })?;
        let f = &mut self.faults[idx];
        f.times -= 1;
        let out = f.clone();
        if f.times == 0 {
            self.faults.remove(idx);
        }
        Some(out)
    }

    /// Finishes every task whose time has come, applying its effect.
    fn advance(&mut self, now: Instant) {
        let due: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.exit.is_none() && t.finish_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for upid in due {
            let Some(task) = self.tasks.get(&upid).cloned() else {
                continue;
            };
            let mut log = task.log.clone();
            let exit = if let Some((message, lines)) = &task.fail {
                log.extend(lines.iter().cloned());
                log.push(format!("TASK ERROR: {message}"));
                if let Some(g) = self.guests.get_mut(&task.vmid) {
                    g.lock = None;
                    g.config.remove("lock");
                }
                if matches!(self.guests.get(&task.vmid), Some(g) if g.config.contains_key("__creating"))
                {
                    self.guests.remove(&task.vmid);
                }
                message.clone()
            } else {
                if let Some(g) = self.guests.get_mut(&task.vmid) {
                    match task.on_finish {
                        OnFinish::Nothing => {}
                        OnFinish::Unlock => {
                            g.lock = None;
                            g.config.remove("__creating");
                        }
                        OnFinish::Start => {
                            g.status = SimStatus::Running;
                            g.apply_pending();
                        }
                        OnFinish::Stop | OnFinish::Shutdown => {
                            g.status = SimStatus::Stopped;
                            g.apply_pending();
                        }
                        OnFinish::Reboot => g.apply_pending(),
                        OnFinish::Destroy => {}
                    }
                }
                if task.on_finish == OnFinish::Destroy {
                    self.guests.remove(&task.vmid);
                }
                log.push("TASK OK".into());
                "OK".to_string()
            };
            if let Some(t) = self.tasks.get_mut(&upid) {
                t.exit = Some(exit);
                t.log = log;
            }
        }
    }

    fn new_task(
        &mut self,
        node: &str,
        task_type: &str,
        vmid: u32,
        user: &str,
        on_finish: OnFinish,
        now: Instant,
    ) -> String {
        let n = self.next();
        let start = 0x6700_0000u64 + self.started.elapsed().as_secs() + n;
        let upid = format_upid(
            node,
            1000 + n as u32,
            0x00AB_0000 + n,
            start,
            task_type,
            &vmid.to_string(),
            user,
        );
        let fail = self
            .task_faults
            .iter()
            .position(|f| task_type.contains(&f.task_type))
            .map(|i| self.task_faults.remove(i))
            .map(|f| (f.message, f.log));
        let mut duration = self.cfg.task_duration;
        let mut fail = fail;
        if on_finish == OnFinish::Shutdown
            && self.guests.get(&vmid).is_some_and(|g| g.ignores_shutdown)
        {
            duration = duration.max(Duration::from_millis(20));
            fail = Some(("VM quit/powerdown failed - got timeout".into(), vec![]));
        }
        self.tasks.insert(
            upid.clone(),
            SimTask {
                node: node.to_string(),
                vmid,
                finish_at: now + duration,
                exit: None,
                log: vec![format!("starting task {task_type} for {vmid}")],
                on_finish,
                fail,
            },
        );
        upid
    }

    fn user_of(&self, headers: &HeaderMap) -> String {
        if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok())
            && let Some(rest) = auth.strip_prefix("PVEAPIToken=")
        {
            return rest.split('=').next().unwrap_or_default().to_string();
        }
        "root@pam".to_string()
    }

    /// Checks authentication; `None` when the request may go on.
    fn authenticate(
        &mut self,
        method: &Method,
        headers: &HeaderMap,
        now: Instant,
    ) -> Option<Reply> {
        if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
            let Some(rest) = auth.strip_prefix("PVEAPIToken=") else {
                return Some(err(401, "invalid authorization header"));
            };
            let Some((id, secret)) = rest.split_once('=') else {
                return Some(err(401, "invalid token value!"));
            };
            let valid = self.cfg.tokens.iter().any(|(i, s)| i == id && s == secret);
            return (!valid).then(|| err(401, "invalid token value!"));
        }
        let ticket = headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix("PVEAuthCookie="))
            .map(str::to_string)
            .next();
        let Some(ticket) = ticket else {
            return Some(err(401, "No ticket"));
        };
        let lifetime = self.cfg.ticket_lifetime;
        let Some(t) = self.tickets.get(&ticket) else {
            return Some(err(401, "No ticket"));
        };
        if now.duration_since(t.issued) >= lifetime {
            self.tickets.remove(&ticket);
            return Some(err(401, "No ticket"));
        }
        if method != Method::GET {
            let csrf = headers
                .get("csrfpreventiontoken")
                .and_then(|v| v.to_str().ok());
            if csrf != Some(t.csrf.as_str()) {
                return Some(err(401, "Permission check failed (invalid csrf token)"));
            }
        }
        None
    }

    fn login(&mut self, params: &BTreeMap<String, String>, now: Instant) -> Reply {
        let user = params.get("username").cloned().unwrap_or_default();
        let password = params.get("password").cloned().unwrap_or_default();
        if !self
            .cfg
            .users
            .iter()
            .any(|(u, p)| *u == user && *p == password)
        {
            return err(401, "authentication failure");
        }
        let n = self.next();
        let sig = hex::encode(Sha256::digest(format!("{user}:{n}").as_bytes()));
        let ticket = format!("PVE:{user}:{:08X}::{}", 0x6700_0000 + n, &sig[..32]);
        let csrf = format!("{:08X}:{}", 0x6700_0000 + n, &sig[32..54]);
        self.tickets.insert(
            ticket.clone(),
            SimTicket {
                csrf: csrf.clone(),
                issued: now,
            },
        );
        ok(json!({ "ticket": ticket, "CSRFPreventionToken": csrf, "username": user }))
    }

    fn route(
        &mut self,
        method: &Method,
        seg: &[String],
        headers: &HeaderMap,
        params: &BTreeMap<String, String>,
        now: Instant,
    ) -> Reply {
        let s: Vec<&str> = seg.iter().map(String::as_str).collect();
        if s == ["access", "ticket"] && method == Method::POST {
            return self.login(params, now);
        }
        if let Some(denied) = self.authenticate(method, headers, now) {
            return denied;
        }
        let user = self.user_of(headers);
        match (method.clone(), s.as_slice()) {
            (Method::GET, ["version"]) => ok(json!({"version": "8.3.0", "release": "8.3"})),
            (Method::GET, ["cluster", "resources"]) => self.resources(params, now),
            (Method::GET, ["cluster", "nextid"]) => self.next_id(),
            (Method::GET, ["nodes"]) => ok(Value::Array(
                self.online
                    .iter()
                    .map(|(n, on)| json!({"node": n, "status": if *on {"online"} else {"offline"}}))
                    .collect(),
            )),
            (_, ["nodes", node, rest @ ..]) => {
                let node = node.to_string();
                match self.online.get(&node) {
                    None => return err(500, format!("no such cluster node '{node}'")),
                    Some(false) => return err(595, "Connection refused"),
                    Some(true) => {}
                }
                self.node_route(method, &node, rest, params, &user, now)
            }
            _ => err(
                501,
                format!("Method '{method} /{}' not implemented", s.join("/")),
            ),
        }
    }

    fn node_route(
        &mut self,
        method: &Method,
        node: &str,
        rest: &[&str],
        params: &BTreeMap<String, String>,
        user: &str,
        now: Instant,
    ) -> Reply {
        match (method.clone(), rest) {
            (Method::GET, ["tasks", upid, "status"]) => self.task_status(node, upid),
            (Method::GET, ["tasks", upid, "log"]) => self.task_log(node, upid, params),
            (Method::POST, [kind]) if *kind == "qemu" || *kind == "lxc" => {
                let kind = if *kind == "qemu" {
                    GuestKind::Qemu
                } else {
                    GuestKind::Lxc
                };
                self.create(node, kind, params, user, now)
            }
            (_, [kind, vmid, tail @ ..]) if *kind == "qemu" || *kind == "lxc" => {
                let kind = if *kind == "qemu" {
                    GuestKind::Qemu
                } else {
                    GuestKind::Lxc
                };
                let Ok(vmid) = vmid.parse::<u32>() else {
                    let mut e = BTreeMap::new();
                    e.insert(
                        "vmid".to_string(),
                        format!("type check ('integer') failed - got '{vmid}'"),
                    );
                    return param_err(e);
                };
                let exists = self
                    .guests
                    .get(&vmid)
                    .is_some_and(|g| g.node == node && g.kind == kind);
                if !exists {
                    let dir = match kind {
                        GuestKind::Qemu => "qemu-server",
                        GuestKind::Lxc => "lxc",
                    };
                    return err(
                        500,
                        format!(
                            "Configuration file 'nodes/{node}/{dir}/{vmid}.conf' does not exist"
                        ),
                    );
                }
                self.guest_route(method, node, kind, vmid, tail, params, user, now)
            }
            _ => err(
                501,
                format!(
                    "Method '{method} /nodes/{node}/{}' not implemented",
                    rest.join("/")
                ),
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn guest_route(
        &mut self,
        method: &Method,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        tail: &[&str],
        params: &BTreeMap<String, String>,
        user: &str,
        now: Instant,
    ) -> Reply {
        let prefix = match kind {
            GuestKind::Qemu => "qm",
            GuestKind::Lxc => "vz",
        };
        match (method.clone(), tail) {
            (Method::GET, ["config"]) => {
                let Some(g) = self.guests.get(&vmid) else {
                    return err(500, "vanished");
                };
                let mut m: serde_json::Map<String, Value> = g
                    .merged()
                    .into_iter()
                    .filter(|(k, _)| !k.starts_with("__"))
                    .map(|(k, v)| (k, config_json(&v)))
                    .collect();
                m.insert("digest".into(), Value::String(g.digest()));
                ok(Value::Object(m))
            }
            (Method::GET, ["pending"]) => {
                let Some(g) = self.guests.get(&vmid) else {
                    return err(500, "vanished");
                };
                let mut keys: Vec<&String> = g.config.keys().chain(g.pending.keys()).collect();
                keys.sort();
                keys.dedup();
                let items: Vec<Value> = keys
                    .into_iter()
                    .filter(|k| !k.starts_with("__"))
                    .map(|k| {
                        let mut item = serde_json::Map::new();
                        item.insert("key".into(), Value::String(k.clone()));
                        if let Some(v) = g.config.get(k) {
                            item.insert("value".into(), config_json(v));
                        }
                        match g.pending.get(k) {
                            Some(Some(p)) => {
                                item.insert("pending".into(), config_json(p));
                            }
                            Some(None) => {
                                item.insert("delete".into(), json!(1));
                            }
                            None => {}
                        }
                        Value::Object(item)
                    })
                    .collect();
                let mut items = items;
                // PVE lists the config's digest among the keys.
                if self.pending_digest {
                    items.push(json!({ "key": "digest", "value": g.digest() }));
                }
                ok(Value::Array(items))
            }
            (Method::GET, ["status", "current"]) => {
                let Some(g) = self.guests.get(&vmid) else {
                    return err(500, "vanished");
                };
                let status = match g.status {
                    SimStatus::Running => "running",
                    SimStatus::Stopped => "stopped",
                };
                let mut v = json!({"vmid": vmid, "status": status, "name": g.config.get(if kind == GuestKind::Qemu {"name"} else {"hostname"})});
                if let Some(l) = &g.lock {
                    v["lock"] = json!(l);
                }
                ok(v)
            }
            (Method::POST, ["config"]) if kind == GuestKind::Qemu => {
                match self.update_config(kind, vmid, params) {
                    Ok(()) => ok(json!(self.new_task(
                        node,
                        "qmconfig",
                        vmid,
                        user,
                        OnFinish::Nothing,
                        now
                    ))),
                    Err(r) => r,
                }
            }
            (Method::PUT, ["config"]) => match self.update_config(kind, vmid, params) {
                Ok(()) => ok(Value::Null),
                Err(r) => r,
            },
            (Method::PUT, ["resize"]) => match self.resize(kind, vmid, params) {
                Ok(()) => ok(json!(self.new_task(
                    node,
                    "resize",
                    vmid,
                    user,
                    OnFinish::Nothing,
                    now
                ))),
                Err(r) => r,
            },
            (Method::POST, ["status", action]) => {
                self.power(node, kind, vmid, action, prefix, user, now)
            }
            (Method::POST, ["clone"]) if kind == GuestKind::Qemu => {
                self.clone_guest(node, vmid, params, user, now)
            }
            (Method::DELETE, []) => {
                if let Some(r) = self.check_lock(vmid) {
                    return r;
                }
                let Some(g) = self.guests.get_mut(&vmid) else {
                    return err(500, "vanished");
                };
                if g.status == SimStatus::Running {
                    return err(
                        500,
                        format!("{} {vmid} is running - destroy failed", g.label()),
                    );
                }
                g.lock = Some("destroyed".into());
                ok(json!(self.new_task(
                    node,
                    &format!("{prefix}destroy"),
                    vmid,
                    user,
                    OnFinish::Destroy,
                    now
                )))
            }
            _ => err(
                501,
                format!(
                    "Method '{method} /nodes/{node}/{kind}/{vmid}/{}' not implemented",
                    tail.join("/")
                ),
            ),
        }
    }

    /// PVE refuses changes while a lock is held; a held-lock fault clears after its checks.
    fn check_lock(&mut self, vmid: u32) -> Option<Reply> {
        let g = self.guests.get_mut(&vmid)?;
        let lock = g.lock.clone()?;
        if let Some(n) = g.lock_clears_after.as_mut() {
            if *n == 0 {
                g.lock = None;
                g.lock_clears_after = None;
                return None;
            }
            *n -= 1;
        }
        Some(err(500, format!("{} {vmid} is locked ({lock})", g.label())))
    }

    fn resources(&mut self, params: &BTreeMap<String, String>, now: Instant) -> Reply {
        if params.get("type").is_some_and(|t| t != "vm") {
            return ok(json!([]));
        }
        let live = self.live_resources();
        if self.stats_every.is_zero() {
            return ok(Value::Array(live));
        }
        let due = self
            .stats
            .as_ref()
            .is_none_or(|(at, _)| now.duration_since(*at) >= self.stats_every);
        if due {
            let figures = live
                .iter()
                .filter_map(|v| {
                    let vmid = u32::try_from(v.get("vmid")?.as_u64()?).ok()?;
                    let kept = STATS_FIELDS
                        .iter()
                        .filter_map(|k| Some(((*k).to_owned(), v.get(*k)?.clone())))
                        .collect();
                    Some((vmid, kept))
                })
                .collect();
            self.stats = Some((now, figures));
        }
        let Some((_, figures)) = &self.stats else {
            return ok(Value::Array(live));
        };
        let list = live
            .into_iter()
            .map(|mut v| {
                let vmid = v.get("vmid").and_then(Value::as_u64);
                let then = vmid
                    .and_then(|id| u32::try_from(id).ok())
                    .and_then(|id| figures.get(&id));
                if let Some(entry) = v.as_object_mut() {
                    for k in STATS_FIELDS {
                        entry.remove(k);
                    }
                    match then {
                        Some(then) => entry.extend(then.clone()),
                        None => {
                            entry.insert("status".into(), json!("unknown"));
                        }
                    }
                }
                v
            })
            .collect();
        ok(Value::Array(list))
    }

    /// Every guest as `/cluster/resources` lists it, with its figures as they are now.
    fn live_resources(&self) -> Vec<Value> {
        self
            .guests
            .values()
            .filter(|g| !g.config.contains_key("__creating") || g.lock.is_some())
            .map(|g| {
                let online = self.online.get(&g.node).copied().unwrap_or(false);
                let cfg = &g.config;
                let name_key = if g.kind == GuestKind::Qemu { "name" } else { "hostname" };
                let mem_mib = cfg
                    .get("memory")
                    .map(|m| m.trim_start_matches("current="))
                    .and_then(|m| m.parse::<u64>().ok())
                    .unwrap_or(512);
                let disk: u64 = cfg
                    .iter()
                    .filter(|(k, _)| is_disk_key(k) && !k.starts_with("unused"))
                    .filter_map(|(k, v)| propstring::disk_size(k, v))
                    .max()
                    .unwrap_or(0);
                let mut v = json!({
                    "id": format!("{}/{}", g.kind, g.vmid),
                    "type": g.kind.as_str(),
                    "vmid": g.vmid,
                    "node": g.node,
                    "name": cfg.get(name_key).cloned().unwrap_or_else(|| format!("{}{}", g.kind, g.vmid)),
                    "status": if !online { "unknown" } else if g.status == SimStatus::Running { "running" } else { "stopped" },
                    "template": u8::from(g.template),
                    "maxcpu": cfg.get("cores").and_then(|c| c.parse::<u64>().ok()).unwrap_or(1),
                    "maxmem": mem_mib << 20,
                    "maxdisk": disk,
                    "uptime": if g.status == SimStatus::Running { 100 } else { 0 },
                });
                if let Some(t) = cfg.get("tags") {
                    v["tags"] = json!(t);
                }
                if let Some(l) = &g.lock {
                    v["lock"] = json!(l);
                }
                v
            })
            .collect()
    }

    fn next_id(&self) -> Reply {
        let mut id = 100u32;
        while self.guests.contains_key(&id) {
            id += 1;
        }
        // PVE sends the id as a string.
        ok(json!(id.to_string()))
    }

    fn task_status(&self, node: &str, upid: &str) -> Reply {
        match self.tasks.get(upid).filter(|t| t.node == node) {
            None => err(500, format!("no such task '{upid}'")),
            Some(t) => {
                let mut v = json!({
                    "upid": upid,
                    "node": node,
                    "status": if t.exit.is_some() { "stopped" } else { "running" },
                });
                if let Some(e) = &t.exit {
                    v["exitstatus"] = json!(e);
                }
                ok(v)
            }
        }
    }

    fn task_log(&self, node: &str, upid: &str, params: &BTreeMap<String, String>) -> Reply {
        let Some(t) = self.tasks.get(upid).filter(|t| t.node == node) else {
            return err(500, format!("no such task '{upid}'"));
        };
        let start: usize = params
            .get("start")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let limit: usize = params
            .get("limit")
            .and_then(|s| s.parse().ok())
            .unwrap_or(50);
        let lines: Vec<Value> = t
            .log
            .iter()
            .enumerate()
            .skip(start)
            .take(limit)
            .map(|(i, l)| json!({"n": i + 1, "t": l}))
            .collect();
        ok(Value::Array(lines))
    }

    /// Validates parameters like PVE's schema check; collects every field error.
    fn validate(
        &self,
        kind: GuestKind,
        params: &BTreeMap<String, String>,
        skip: &[&str],
    ) -> Result<(), Reply> {
        let mut errors = BTreeMap::new();
        for (k, v) in params {
            if skip.contains(&k.as_str()) || k == "digest" || k == "delete" {
                continue;
            }
            match key_check(kind, k) {
                None => {
                    errors.insert(
                        k.clone(),
                        "property is not defined in schema and the schema does not allow additional properties".to_string(),
                    );
                }
                Some(Check::Int(min)) => {
                    let n = v.trim_start_matches("current=").parse::<i64>();
                    match n {
                        Ok(n) if n >= min => {}
                        Ok(n) => {
                            errors.insert(
                                k.clone(),
                                format!("value must have a minimum value of {min} (got {n})"),
                            );
                        }
                        Err(_) => {
                            errors.insert(
                                k.clone(),
                                format!("type check ('integer') failed - got '{v}'"),
                            );
                        }
                    }
                }
                Some(Check::Bool) => {
                    if parse_bool(v).is_none() {
                        errors.insert(
                            k.clone(),
                            format!("type check ('boolean') failed - got '{v}'"),
                        );
                    }
                }
                Some(Check::Disk) => {
                    let p = propstring::parse(k, v);
                    let file_key = propstring::default_key(k).unwrap_or("file");
                    if p.get(file_key).is_none_or(str::is_empty) {
                        errors.insert(
                            k.clone(),
                            format!("invalid format - missing property - '{file_key}'"),
                        );
                    } else if key_family(k) == "mp" && p.get("mp").is_none() {
                        errors.insert(
                            k.clone(),
                            "invalid format - missing property - 'mp'".to_string(),
                        );
                    } else if let Some(size) = p.get("size").filter(|s| parse_size(s).is_none()) {
                        errors.insert(
                            k.clone(),
                            format!("invalid format - size: unable to parse size '{size}'"),
                        );
                    }
                }
                Some(Check::Net) => {
                    let p = propstring::parse(k, v);
                    match kind {
                        GuestKind::Qemu if p.get("model").is_none() => {
                            errors.insert(
                                k.clone(),
                                "invalid format - missing property - 'model'".to_string(),
                            );
                        }
                        GuestKind::Lxc if p.get("name").is_none() => {
                            errors.insert(
                                k.clone(),
                                "invalid format - missing property - 'name'".to_string(),
                            );
                        }
                        _ => {}
                    }
                    if let Some(tag) = p.get("tag")
                        && !tag.parse::<u16>().is_ok_and(|t| (1..=4094).contains(&t))
                    {
                        errors.insert(k.clone(), format!("invalid format - tag: value must be between 1 and 4094 (got '{tag}')"));
                    }
                }
                Some(Check::Any) => {}
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(param_err(errors))
        }
    }

    fn mac(&mut self) -> String {
        let n = self.next();
        format!(
            "BC:24:11:{:02X}:{:02X}:{:02X}",
            (n >> 16) & 0xff,
            (n >> 8) & 0xff,
            n & 0xff
        )
    }

    /// Normalizes a value like PVE does before storing it.
    fn normalize(
        &mut self,
        kind: GuestKind,
        vmid: u32,
        key: &str,
        value: &str,
        existing: &BTreeMap<String, String>,
    ) -> String {
        let fam = key_family(key);
        if key == "tags" {
            return parse_tags(value).into_iter().collect::<Vec<_>>().join(";");
        }
        if key == "sshkeys" {
            return url::form_urlencoded::byte_serialize(
                propstring::percent_decode(value).as_bytes(),
            )
            .collect::<String>()
            .replace('+', "%20");
        }
        if fam == "net" && key.len() > 3 {
            let mut p = propstring::parse(key, value);
            match kind {
                GuestKind::Qemu => {
                    let model = p.get("model").unwrap_or("virtio").to_string();
                    let mac = match p.get("macaddr") {
                        Some(m) => m.to_uppercase(),
                        None => self.mac(),
                    };
                    p.fields.retain(|(k, _)| k != "model" && k != "macaddr");
                    let mut out = vec![format!("{model}={mac}")];
                    out.extend(p.fields.iter().map(|(k, v)| {
                        if v.is_empty() {
                            k.clone()
                        } else {
                            format!("{k}={v}")
                        }
                    }));
                    return out.join(",");
                }
                GuestKind::Lxc => {
                    if p.get("hwaddr").is_none() {
                        let mac = self.mac();
                        p.fields.push(("hwaddr".into(), mac));
                    }
                    if p.get("type").is_none() {
                        p.fields.push(("type".into(), "veth".into()));
                    }
                    return p.render(key);
                }
            }
        }
        if is_disk_key(key) {
            let mut p = propstring::parse(key, value);
            let file_key = propstring::default_key(key).unwrap_or("file").to_string();
            let file = p.get(&file_key).unwrap_or_default().to_string();
            if let Some((storage, bytes)) = propstring::allocation(&file) {
                let taken: Vec<String> = existing.values().cloned().collect();
                let mut idx = 0;
                let volume = loop {
                    let candidate = format!("{storage}:vm-{vmid}-disk-{idx}");
                    if !taken
                        .iter()
                        .any(|v| v.starts_with(&format!("{candidate},")) || *v == candidate)
                    {
                        break candidate;
                    }
                    idx += 1;
                };
                p.fields.retain(|(k, _)| *k != file_key && k != "size");
                p.fields.insert(0, (file_key, volume));
                p.fields.push(("size".into(), format_size(bytes)));
            } else if let Some(size) = p.get("size").and_then(parse_size) {
                for f in &mut p.fields {
                    if f.0 == "size" {
                        f.1 = format_size(size);
                    }
                }
            }
            return p.render(key);
        }
        value.to_string()
    }

    fn create(
        &mut self,
        node: &str,
        kind: GuestKind,
        params: &BTreeMap<String, String>,
        user: &str,
        now: Instant,
    ) -> Reply {
        let Some(vmid) = params.get("vmid").and_then(|v| v.parse::<u32>().ok()) else {
            let mut e = BTreeMap::new();
            e.insert(
                "vmid".to_string(),
                "property is missing and it is not optional".to_string(),
            );
            return param_err(e);
        };
        if let Err(r) = self.validate(kind, params, &["vmid", "ostemplate", "start"]) {
            return r;
        }
        if kind == GuestKind::Lxc && !params.contains_key("ostemplate") {
            let mut e = BTreeMap::new();
            e.insert(
                "ostemplate".to_string(),
                "property is missing and it is not optional".to_string(),
            );
            return param_err(e);
        }
        if let Some(g) = self.guests.get(&vmid) {
            return err(
                500,
                format!(
                    "unable to create {} {vmid} - {} {vmid} already exists on node '{}'",
                    g.label(),
                    g.label(),
                    g.node
                ),
            );
        }
        let mut config = BTreeMap::new();
        for (k, v) in params {
            if matches!(k.as_str(), "vmid" | "ostemplate" | "start" | "digest") {
                continue;
            }
            let n = self.normalize(kind, vmid, k, v, &config);
            config.insert(k.clone(), n);
        }
        let n = self.next();
        match kind {
            GuestKind::Qemu => {
                config.insert(
                    "vmgenid".into(),
                    format!("{:08x}-0000-4000-8000-{:012x}", n, n),
                );
                config.insert(
                    "meta".into(),
                    format!("creation-qemu=9.0.2,ctime={}", 1_730_000_000 + n),
                );
                config.insert(
                    "smbios1".into(),
                    format!("uuid={:08x}-1111-4000-8000-{:012x}", n, n),
                );
            }
            GuestKind::Lxc => {
                config
                    .entry("arch".into())
                    .or_insert_with(|| "amd64".into());
                let ostype = params
                    .get("ostemplate")
                    .and_then(|t| t.rsplit('/').next())
                    .and_then(|f| f.split(['-', '_']).next())
                    .unwrap_or("unmanaged")
                    .to_string();
                config.entry("ostype".into()).or_insert(ostype);
            }
        }
        config.insert("__creating".into(), "1".into());
        let mut g = SimGuest::new(vmid, node, kind);
        g.config = config;
        g.lock = Some("create".into());
        self.guests.insert(vmid, g);
        let task_type = match kind {
            GuestKind::Qemu => "qmcreate",
            GuestKind::Lxc => "vzcreate",
        };
        ok(json!(self.new_task(
            node,
            task_type,
            vmid,
            user,
            OnFinish::Unlock,
            now
        )))
    }

    fn clone_guest(
        &mut self,
        node: &str,
        from: u32,
        params: &BTreeMap<String, String>,
        user: &str,
        now: Instant,
    ) -> Reply {
        let Some(newid) = params.get("newid").and_then(|v| v.parse::<u32>().ok()) else {
            let mut e = BTreeMap::new();
            e.insert(
                "newid".to_string(),
                "property is missing and it is not optional".to_string(),
            );
            return param_err(e);
        };
        if let Some(g) = self.guests.get(&newid) {
            return err(
                500,
                format!(
                    "unable to create VM {newid}: config file already exists on node '{}'",
                    g.node
                ),
            );
        }
        let target = params
            .get("target")
            .cloned()
            .unwrap_or_else(|| node.to_string());
        if !self.online.contains_key(&target) {
            return err(500, format!("no such cluster node '{target}'"));
        }
        let Some(src) = self.guests.get(&from).cloned() else {
            return err(500, "vanished");
        };
        let full = params
            .get("full")
            .and_then(|f| parse_bool(f))
            .unwrap_or(!src.template);
        let mut config = BTreeMap::new();
        for (k, v) in &src.config {
            if matches!(
                k.as_str(),
                "template" | "vmgenid" | "meta" | "smbios1" | "name"
            ) {
                continue;
            }
            let value = if is_disk_key(k) && !k.starts_with("unused") && !v.contains("media=cdrom")
            {
                let mut p = propstring::parse(k, v);
                let vol = p.get("file").unwrap_or_default().to_string();
                if let Some((storage, name)) = vol.split_once(':') {
                    let idx = config
                        .values()
                        .filter(|x: &&String| x.contains(&format!("vm-{newid}-disk-")))
                        .count();
                    let new_name = if full {
                        format!("{storage}:vm-{newid}-disk-{idx}")
                    } else {
                        format!(
                            "{storage}:{}/vm-{newid}-disk-{idx}",
                            name.replace("vm-", "base-")
                        )
                    };
                    for f in &mut p.fields {
                        if f.0 == "file" {
                            f.1 = new_name.clone();
                        }
                    }
                }
                p.render(k)
            } else if key_family(k) == "net" {
                let mut p = propstring::parse(k, v);
                p.fields.retain(|(f, _)| f != "macaddr");
                let stripped = p.render(k);
                self.normalize(GuestKind::Qemu, newid, k, &stripped, &BTreeMap::new())
            } else {
                v.clone()
            };
            config.insert(k.clone(), value);
        }
        if let Some(name) = params.get("name") {
            config.insert("name".into(), name.clone());
        }
        let n = self.next();
        config.insert(
            "vmgenid".into(),
            format!("{:08x}-0000-4000-8000-{:012x}", n, n),
        );
        config.insert(
            "smbios1".into(),
            format!("uuid={:08x}-1111-4000-8000-{:012x}", n, n),
        );
        config.insert("__creating".into(), "1".into());
        let mut g = SimGuest::new(newid, target, GuestKind::Qemu);
        g.config = config;
        g.lock = Some("clone".into());
        self.guests.insert(newid, g);
        ok(json!(self.new_task(
            node,
            "qmclone",
            newid,
            user,
            OnFinish::Unlock,
            now
        )))
    }

    fn update_config(
        &mut self,
        kind: GuestKind,
        vmid: u32,
        params: &BTreeMap<String, String>,
    ) -> Result<(), Reply> {
        self.validate(kind, params, &[])?;
        if let Some(r) = self.check_lock(vmid) {
            return Err(r);
        }
        let Some(g) = self.guests.get(&vmid).cloned() else {
            return Err(err(500, "vanished"));
        };
        if let Some(d) = params.get("digest")
            && *d != g.digest()
        {
            return Err(err(
                500,
                "detected modified configuration - file changed by other user? Try again.",
            ));
        }
        let deletes: Vec<String> = params
            .get("delete")
            .map(|d| {
                d.split([',', ';', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        for k in &deletes {
            if key_check(kind, k).is_none() {
                let mut e = BTreeMap::new();
                e.insert(
                    "delete".to_string(),
                    format!("invalid configuration ID '{k}'"),
                );
                return Err(param_err(e));
            }
        }
        let running = g.status == SimStatus::Running;
        let mut changes = Vec::new();
        let merged = g.merged();
        for (k, v) in params {
            if k == "digest" || k == "delete" {
                continue;
            }
            let value = if is_disk_key(k)
                && let Some(old) = merged.get(k)
                && propstring::parse(k, old).get(propstring::default_key(k).unwrap_or("file"))
                    == propstring::parse(k, v).get(propstring::default_key(k).unwrap_or("file"))
            {
                // Same volume: PVE keeps the recorded size.
                let mut p = propstring::parse(k, v);
                let size = propstring::parse(k, old).get("size").map(str::to_string);
                p.fields.retain(|(f, _)| f != "size");
                if let Some(size) = size {
                    p.fields.push(("size".into(), size));
                }
                p.render(k)
            } else if key_family(k) == "net"
                && let Some(old) = merged.get(k)
                && propstring::parse(k, v)
                    .get("macaddr")
                    .or(propstring::parse(k, v).get("hwaddr"))
                    .is_none()
            {
                // PVE keeps the MAC of an existing NIC.
                let oldp = propstring::parse(k, old);
                let mut p = propstring::parse(k, v);
                if let Some(m) = oldp.get("macaddr") {
                    p.fields.push(("macaddr".into(), m.to_string()));
                }
                if let Some(m) = oldp.get("hwaddr") {
                    p.fields.push(("hwaddr".into(), m.to_string()));
                }
                let rendered = p.render(k);
                self.normalize(kind, vmid, k, &rendered, &merged)
            } else {
                self.normalize(kind, vmid, k, v, &merged)
            };
            changes.push((k.clone(), value));
        }
        let Some(g) = self.guests.get_mut(&vmid) else {
            return Err(err(500, "vanished"));
        };
        for (k, v) in changes {
            if running && !hot_pluggable(kind, &k) {
                g.pending.insert(k, Some(v));
            } else {
                g.pending.remove(&k);
                g.config.insert(k, v);
            }
        }
        for k in deletes {
            if running && !hot_pluggable(kind, &k) {
                if g.config.contains_key(&k) {
                    g.pending.insert(k, None);
                } else {
                    g.pending.remove(&k);
                }
            } else {
                g.pending.remove(&k);
                g.config.remove(&k);
            }
        }
        Ok(())
    }

    fn resize(
        &mut self,
        kind: GuestKind,
        vmid: u32,
        params: &BTreeMap<String, String>,
    ) -> Result<(), Reply> {
        let disk = params.get("disk").cloned().unwrap_or_default();
        let size = params.get("size").cloned().unwrap_or_default();
        let mut errors = BTreeMap::new();
        if !is_disk_key(&disk) {
            errors.insert(
                "disk".to_string(),
                format!("value '{disk}' does not have a value in the enumeration"),
            );
        }
        let grow = size.strip_prefix('+');
        if parse_size(grow.unwrap_or(&size)).is_none() {
            errors.insert(
                "size".to_string(),
                format!("value does not match the regex pattern (got '{size}')"),
            );
        }
        if !errors.is_empty() {
            return Err(param_err(errors));
        }
        if let Some(r) = self.check_lock(vmid) {
            return Err(r);
        }
        let Some(g) = self.guests.get_mut(&vmid) else {
            return Err(err(500, "vanished"));
        };
        let Some(value) = g.config.get(&disk).cloned() else {
            return Err(err(500, format!("disk '{disk}' does not exist")));
        };
        let current = propstring::disk_size(&disk, &value).unwrap_or(0);
        let want = match grow {
            Some(g) => current + parse_size(g).unwrap_or(0),
            None => parse_size(&size).unwrap_or(0),
        };
        if want < current {
            return Err(err(500, "shrinking disks is not supported"));
        }
        let mut p = propstring::parse(&disk, &value);
        p.fields.retain(|(f, _)| f != "size");
        p.fields.push(("size".into(), format_size(want)));
        let _ = kind;
        g.config.insert(disk.clone(), p.render(&disk));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn power(
        &mut self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        action: &str,
        prefix: &str,
        user: &str,
        now: Instant,
    ) -> Reply {
        if let Some(r) = self.check_lock(vmid) {
            return r;
        }
        let Some(g) = self.guests.get(&vmid) else {
            return err(500, "vanished");
        };
        let label = g.label();
        let running = g.status == SimStatus::Running;
        let on_finish = match action {
            "start" => {
                if running {
                    return err(500, format!("{label} {vmid} already running"));
                }
                if g.template {
                    return err(500, format!("you can't start a {label} if it's a template"));
                }
                OnFinish::Start
            }
            "stop" => {
                if !running {
                    return err(500, format!("{label} {vmid} not running"));
                }
                OnFinish::Stop
            }
            "shutdown" => {
                if !running {
                    return err(500, format!("{label} {vmid} not running"));
                }
                OnFinish::Shutdown
            }
            "reboot" => {
                if !running {
                    return err(500, format!("{label} {vmid} not running"));
                }
                OnFinish::Reboot
            }
            other => {
                return err(
                    501,
                    format!(
                        "Method 'POST /nodes/{node}/{kind}/{vmid}/status/{other}' not implemented"
                    ),
                );
            }
        };
        ok(json!(self.new_task(
            node,
            &format!("{prefix}{action}"),
            vmid,
            user,
            on_finish,
            now
        )))
    }
}

/// Config values go out as JSON numbers when PVE's schema says integer, strings otherwise.
/// The figures of a `/cluster/resources` entry that PVE takes from the statistics broadcast.
const STATS_FIELDS: [&str; 6] = ["status", "uptime", "name", "maxcpu", "maxmem", "maxdisk"];

fn config_json(v: &str) -> Value {
    match v.parse::<i64>() {
        Ok(n) if !v.starts_with('0') || v == "0" => json!(n),
        _ => Value::String(v.to_string()),
    }
}
