//! `mycopod demo`: the whole job on one machine with nothing outside it. It starts a Proxmox VE
//! simulator and one Modbus simulator per device of `examples/plant` on loopback, makes a Git
//! repository in the data folder from `examples/homelab` and `examples/plant` (pointed at the
//! simulators), creates an `admin` and an `operator` user, and runs `serve` on SQLite.
//!
//! Everything lives in the data folder, so a second start continues where the first stopped:
//! the simulators' guests and setpoints are saved there, ports are kept, users and runs are in
//! the database. The example files are embedded, so an installed binary needs no checkout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::plan::translate::device::device_def;
use anyhow::{Context, Result, bail};
use chrono::Utc;
use mycopod_adapters::modbus::Value;
use mycopod_adapters::modbus::sim::{SimDevice, Simulator};
use mycopod_adapters::modbus::waveform::Waveform;
use mycopod_adapters::proxmox::api::GuestKind;
use mycopod_adapters::proxmox::sim::{self as pve_sim, SimConfig, SimControl, SimGuest, SimStatus};
use mycopod_specs::kinds::{Connection, ValueType};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::model::Role;
use crate::secrets::SecretEntry;
use crate::store::{Store, hash_password};

/// The example files the demo repository is made from, embedded at build time.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "homelab/cluster.yaml",
        include_str!("../../examples/homelab/cluster.yaml"),
    ),
    (
        "homelab/policies.yaml",
        include_str!("../../examples/homelab/policies.yaml"),
    ),
    (
        "homelab/guests/containers.yaml",
        include_str!("../../examples/homelab/guests/containers.yaml"),
    ),
    (
        "homelab/guests/lab.yaml",
        include_str!("../../examples/homelab/guests/lab.yaml"),
    ),
    (
        "homelab/guests/web.yaml",
        include_str!("../../examples/homelab/guests/web.yaml"),
    ),
    (
        "plant/devices.yaml",
        include_str!("../../examples/plant/devices.yaml"),
    ),
    (
        "plant/alerts.yaml",
        include_str!("../../examples/plant/alerts.yaml"),
    ),
    (
        "plant/channels.yaml",
        include_str!("../../examples/plant/channels.yaml"),
    ),
];

/// Replaces `examples/plant/policies.yaml` (two approvers in the day shift) so that one
/// operator can approve the demo's setpoint writes at any hour.
const DEMO_POLICY: &str = "\
# The demo's policy: writing a setpoint needs one approval by an operator or an admin, at any
# time. (examples/plant/policies.yaml asks for two approvers in the day shift.)
apiVersion: mycopod/v1
kind: HandshakePolicy
metadata:
  name: setpoint-writes
spec:
  match:
    kinds: [ModbusDevice]
    verbs: [write]
  approvals: 1
  approverRoles: [operator, admin]
  allowSelfApproval: false
  expiresAfter: 7d
---
# Changing a policy is a change to the gate itself: without a policy for it, one admin must
# approve. In the demo one operator may, so that one operator can try everything.
apiVersion: mycopod/v1
kind: HandshakePolicy
metadata:
  name: policy-changes
spec:
  match:
    kinds: [HandshakePolicy]
  approvals: 1
  approverRoles: [operator, admin]
  allowSelfApproval: false
";

/// The token secret the Proxmox simulator accepts for `mycopod@pve!gitops`.
const PVE_TOKEN: &str = "tok-secret";

/// `mycopod demo` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Where the API listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the demo keeps its repository, database and simulator state.
    #[arg(long, default_value = "mycopod-demo")]
    pub data_dir: PathBuf,
    /// How often the demo repository is polled for new commits.
    #[arg(long, default_value = "2s")]
    pub poll_interval: mycopod_specs::values::Duration,
}

/// A user the demo made, as written to `demo-credentials.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DemoUser {
    /// User name.
    pub name: String,
    /// `admin` or `operator`.
    pub role: String,
    /// The generated password.
    pub password: String,
}

/// `DATA_DIR/demo-credentials.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Credentials {
    /// The API's base URL.
    pub url: String,
    /// The demo's admin and operator, with their generated passwords.
    pub users: Vec<DemoUser>,
    /// The secret GitHub-style webhooks to `/api/v1/webhooks/github` must be signed with.
    pub webhook_secret: String,
}

/// What the demo keeps between starts (`DATA_DIR/demo-state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    pve_port: u16,
    hooks_port: u16,
    devices: BTreeMap<String, u16>,
    jwt_secret: String,
    hook_secret: String,
    #[serde(default)]
    webhook_secret: String,
    users: Vec<DemoUser>,
    guests: Vec<SavedGuest>,
    /// Device -> writable register -> value.
    setpoints: BTreeMap<String, BTreeMap<String, f64>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedGuest {
    vmid: u32,
    node: String,
    lxc: bool,
    config: BTreeMap<String, String>,
    pending: BTreeMap<String, Option<String>>,
    running: bool,
    template: bool,
}

fn random_secret(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

/// A free port on loopback, preferring `wanted` (kept from an earlier start).
fn pick_port(wanted: u16) -> Result<u16> {
    if wanted != 0 && std::net::TcpListener::bind(("127.0.0.1", wanted)).is_ok() {
        return Ok(wanted);
    }
    let probe = std::net::TcpListener::bind(("127.0.0.1", 0)).context("find a free port")?;
    Ok(probe.local_addr().context("read a free port")?.port())
}

fn replace_once(text: &str, from: &str, to: &str, file: &str) -> Result<String> {
    if !text.contains(from) {
        bail!("the demo cannot adapt {file}: `{from}` is not in it any more");
    }
    Ok(text.replacen(from, to, 1))
}

/// The demo repository's files: the examples pointed at the simulators on loopback.
fn demo_files(state: &State, data_dir: &Path) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    let port = |name: &str| state.devices.get(name).copied().unwrap_or(0);
    for (path, text) in EXAMPLES {
        let text = match *path {
            "homelab/cluster.yaml" => {
                let t = replace_once(
                    text,
                    "endpoint: https://pve.lan:8006",
                    &format!("endpoint: http://127.0.0.1:{}", state.pve_port),
                    path,
                )?;
                replace_once(
                    &t,
                    "  tls:\n    caFile: /etc/mycopod/pve-ca.pem\n",
                    "",
                    path,
                )?
            }
            "plant/devices.yaml" => {
                let t = replace_once(
                    text,
                    "{tcp: {host: 10.0.20.21, port: 502}}",
                    &format!("{{tcp: {{host: 127.0.0.1, port: {}}}}}", port("fm-101")),
                    path,
                )?;
                let t = replace_once(
                    &t,
                    "{rtuOverTcp: {host: 10.0.20.30, port: 4001}}",
                    &format!(
                        "{{rtuOverTcp: {{host: 127.0.0.1, port: {}}}}}",
                        port("fm-102")
                    ),
                    path,
                )?;
                replace_once(
                    &t,
                    "{tcp: {host: 10.0.20.23}}",
                    &format!("{{tcp: {{host: 127.0.0.1, port: {}}}}}", port("fm-103")),
                    path,
                )?
            }
            "plant/channels.yaml" => {
                let t = replace_once(
                    text,
                    "url: https://hooks.plant.example/mycopod/ops",
                    &format!("url: http://127.0.0.1:{}/hooks/ops", state.hooks_port),
                    path,
                )?;
                let t = replace_once(
                    &t,
                    "url: https://hooks.plant.example/mycopod/maintenance",
                    &format!(
                        "url: http://127.0.0.1:{}/hooks/maintenance",
                        state.hooks_port
                    ),
                    path,
                )?;
                replace_once(
                    &t,
                    "secretFile: /etc/mycopod/maintenance-webhook.secret",
                    &format!(
                        "secretFile: {}",
                        data_dir.join("maintenance-webhook.secret").display()
                    ),
                    path,
                )?
            }
            _ => (*text).to_owned(),
        };
        files.push(((*path).to_owned(), text));
    }
    files.push(("plant/policies.yaml".to_owned(), DEMO_POLICY.to_owned()));
    Ok(files)
}

fn git(repo: &Path, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(repo)
        .env("GIT_AUTHOR_NAME", "mycopod demo")
        .env("GIT_AUTHOR_EMAIL", "demo@mycopod.invalid")
        .env("GIT_COMMITTER_NAME", "mycopod demo")
        .env("GIT_COMMITTER_EMAIL", "demo@mycopod.invalid")
        .output()
        .with_context(|| format!("run git {} (is git installed?)", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "git {} in {}: {}",
            args.join(" "),
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes the demo repository, or on a later start moves its endpoints to the ports in use.
fn prepare_repo(
    repo: &Path,
    state: &State,
    previous: Option<&State>,
    data_dir: &Path,
) -> Result<()> {
    if !repo.join(".git").exists() {
        std::fs::create_dir_all(repo).with_context(|| format!("create {}", repo.display()))?;
        git(repo, &["init", "--quiet", "--initial-branch=main"])?;
        for (path, text) in demo_files(state, data_dir)? {
            let file = repo.join(&path);
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("create {}", dir.display()))?;
            }
            std::fs::write(&file, text).with_context(|| format!("write {}", file.display()))?;
        }
        git(repo, &["add", "--all"])?;
        git(
            repo,
            &[
                "commit",
                "--quiet",
                "-m",
                "demo: declarations from examples/homelab and examples/plant",
            ],
        )?;
        return Ok(());
    }
    let Some(previous) = previous else {
        return Ok(());
    };
    // Ports that could not be kept: point the declarations at the new ones, as a commit.
    let mut moves: Vec<(String, String)> = Vec::new();
    if previous.pve_port != state.pve_port {
        moves.push((
            format!("http://127.0.0.1:{}", previous.pve_port),
            format!("http://127.0.0.1:{}", state.pve_port),
        ));
    }
    if previous.hooks_port != state.hooks_port {
        moves.push((
            format!("127.0.0.1:{}/hooks", previous.hooks_port),
            format!("127.0.0.1:{}/hooks", state.hooks_port),
        ));
    }
    for (name, port) in &state.devices {
        if let Some(old) = previous.devices.get(name)
            && old != port
        {
            moves.push((
                format!("host: 127.0.0.1, port: {old}}}"),
                format!("host: 127.0.0.1, port: {port}}}"),
            ));
        }
    }
    if moves.is_empty() {
        return Ok(());
    }
    for file in [
        "homelab/cluster.yaml",
        "plant/devices.yaml",
        "plant/channels.yaml",
    ] {
        let path = repo.join(file);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut changed = text.clone();
        for (from, to) in &moves {
            changed = changed.replace(from, to);
        }
        if changed != text {
            std::fs::write(&path, changed).with_context(|| format!("write {}", path.display()))?;
        }
    }
    git(repo, &["add", "--all"])?;
    git(
        repo,
        &[
            "commit",
            "--quiet",
            "--allow-empty",
            "-m",
            "demo: the simulators listen on new ports",
        ],
    )?;
    Ok(())
}

/// Starts the Proxmox simulator on `port` with the saved guests, or on a first start with the
/// template 9000 the example VMs are cloned from.
async fn start_pve(
    port: u16,
    saved: &[SavedGuest],
) -> Result<(SimControl, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("listen on 127.0.0.1:{port} for the Proxmox simulator"))?;
    let (app, control) = pve_sim::router(SimConfig {
        task_duration: Duration::from_millis(300),
        ..SimConfig::default()
    });
    if saved.is_empty() {
        control.seed_guests([SimGuest::qemu(9000, "pve1")
            .with("name", "debian-12-cloud")
            .with("memory", "2048")
            .with("cores", "2")
            .with("scsi0", "local-lvm:base-9000-disk-0,size=3G")
            .with("net0", "virtio=BC:24:11:00:90:00,bridge=vmbr0")
            .with("ostype", "l26")
            .template()]);
    } else {
        control.seed_guests(saved.iter().map(|g| {
            let mut guest = if g.lxc {
                SimGuest::lxc(g.vmid, g.node.clone())
            } else {
                SimGuest::qemu(g.vmid, g.node.clone())
            };
            guest.config = g.config.clone();
            guest.pending = g.pending.clone();
            guest.template = g.template;
            guest.status = if g.running {
                SimStatus::Running
            } else {
                SimStatus::Stopped
            };
            guest
        }));
    }
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the Proxmox simulator stopped");
        }
    });
    Ok((control, task))
}

fn save_guests(control: &SimControl) -> Vec<SavedGuest> {
    control
        .vmids()
        .into_iter()
        .filter_map(|vmid| control.guest(vmid))
        .map(|g| SavedGuest {
            vmid: g.vmid,
            node: g.node.clone(),
            lxc: g.kind == GuestKind::Lxc,
            config: g.config.clone(),
            pending: g.pending.clone(),
            running: g.status == SimStatus::Running,
            template: g.template,
        })
        .collect()
}

/// Moving values for the measured registers, so readings change and alerts can fire.
fn waveform_for(device: &str, register: &str, index: u64) -> Option<Waveform> {
    let minutes = |m: u64| Duration::from_secs(m * 60);
    Some(match register {
        "flow_rate" => Waveform::Sine {
            amplitude: 11.0,
            period: minutes(20 + index * 7),
            center: 12.0,
        },
        "temperature" if device == "fm-102" => Waveform::Sine {
            amplitude: 6.0,
            period: minutes(10),
            center: 42.0,
        },
        "temperature" => Waveform::Sine {
            amplitude: 4.0,
            period: minutes(30),
            center: 24.0 + index as f64,
        },
        "totalizer" => Waveform::Ramp {
            start: 1000.0 * (index + 1) as f64,
            rate_per_s: 0.01,
        },
        _ => return None,
    })
}

struct Devices {
    sims: BTreeMap<String, Simulator>,
    writable: BTreeMap<String, Vec<String>>,
}

async fn start_devices(desired: &mycopod_specs::DesiredState, state: &State) -> Result<Devices> {
    let mut sims = BTreeMap::new();
    let mut writable = BTreeMap::new();
    for (index, device) in desired.devices.iter().enumerate() {
        let name = device.name().as_str();
        let port = state.devices.get(name).copied().unwrap_or(0);
        let mut sim = SimDevice::new(device_def(name, &device.spec))
            .listen(SocketAddr::from(([127, 0, 0, 1], port)));
        if matches!(device.spec.connection, Connection::RtuOverTcp(_)) {
            sim = sim.rtu_over_tcp();
        }
        let saved = state.setpoints.get(name);
        let mut names = Vec::new();
        for register in &device.spec.registers {
            let reg = register.name.as_str();
            if register.writable {
                names.push(reg.to_owned());
                // First start: the devices hold factory values, so the first plan writes.
                let value = saved.and_then(|s| s.get(reg)).copied().unwrap_or(0.0);
                sim = sim.value(
                    reg,
                    if register.value_type == ValueType::Bool || register.table.is_bits() {
                        Value::Bool(value != 0.0)
                    } else {
                        Value::Float(value)
                    },
                );
            } else if let Some(w) = waveform_for(name, reg, index as u64) {
                sim = sim.waveform(reg, w);
            }
        }
        let started = sim
            .start()
            .await
            .with_context(|| format!("start the Modbus simulator of {name} on port {port}"))?;
        sims.insert(name.to_owned(), started);
        writable.insert(name.to_owned(), names);
    }
    Ok(Devices { sims, writable })
}

fn save_setpoints(devices: &Devices) -> BTreeMap<String, BTreeMap<String, f64>> {
    devices
        .sims
        .iter()
        .map(|(name, sim)| {
            let values = devices
                .writable
                .get(name)
                .into_iter()
                .flatten()
                .filter_map(|reg| {
                    let v = sim.value(reg).ok()?;
                    Some((reg.clone(), v.as_f64()?))
                })
                .collect();
            (name.clone(), values)
        })
        .collect()
}

/// Receives the demo's alert notifications and prints them.
async fn start_hooks(port: u16) -> Result<tokio::task::JoinHandle<()>> {
    use axum::routing::post;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("listen on 127.0.0.1:{port} for notifications"))?;
    let app = axum::Router::new().route(
        "/hooks/{channel}",
        post(
            |axum::extract::Path(channel): axum::extract::Path<String>, body: String| async move {
                let line: String = body.chars().take(300).collect();
                eprintln!("demo: notification to channel {channel}: {line}");
                axum::http::StatusCode::NO_CONTENT
            },
        ),
    );
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the demo's notification receiver stopped");
        }
    }))
}

async fn ensure_users(store: &Store, state: &mut State) -> Result<()> {
    if state.users.is_empty() {
        state.users = vec![
            DemoUser {
                name: "admin".into(),
                role: Role::Admin.as_str().into(),
                password: random_secret(16),
            },
            DemoUser {
                name: "operator".into(),
                role: Role::Operator.as_str().into(),
                password: random_secret(16),
            },
        ];
    }
    for user in &state.users {
        if store.get_user_by_name(&user.name).await.is_ok() {
            continue;
        }
        let role: Role = user
            .role
            .parse()
            .with_context(|| format!("role of demo user {}", user.name))?;
        let phc = hash_password(&user.password)
            .map_err(|e| anyhow::anyhow!("hash the password of {}: {e}", user.name))?;
        store
            .create_user(&user.name, &phc, role, "demo", Utc::now())
            .await
            .with_context(|| format!("create the demo user {}", user.name))?;
    }
    Ok(())
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("encode JSON")?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Runs the demo until Ctrl-C. `database_url` replaces the SQLite file in the data folder
/// (the end-to-end suite runs the demo on PostgreSQL this way).
pub async fn run(args: &Args, database_url: Option<String>) -> Result<()> {
    let data_dir = &args.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("create the data folder {}", data_dir.display()))?;
    let data_dir = data_dir
        .canonicalize()
        .with_context(|| format!("resolve {}", data_dir.display()))?;
    let state_file = data_dir.join("demo-state.json");
    let previous: Option<State> =
        match std::fs::read_to_string(&state_file) {
            Ok(text) => Some(serde_json::from_str(&text).with_context(|| {
                format!("read {} (delete it to start over)", state_file.display())
            })?),
            Err(_) => None,
        };
    let mut state = previous.clone().unwrap_or_default();
    if state.jwt_secret.is_empty() {
        state.jwt_secret = random_secret(48);
    }
    if state.hook_secret.is_empty() {
        state.hook_secret = random_secret(32);
    }
    if state.webhook_secret.is_empty() {
        state.webhook_secret = random_secret(32);
    }
    state.pve_port = pick_port(state.pve_port)?;
    state.hooks_port = pick_port(state.hooks_port)?;
    for name in ["fm-101", "fm-102", "fm-103"] {
        let port = pick_port(state.devices.get(name).copied().unwrap_or(0))?;
        state.devices.insert(name.to_owned(), port);
    }
    std::fs::write(
        data_dir.join("maintenance-webhook.secret"),
        &state.hook_secret,
    )
    .context("write the demo's webhook secret")?;

    let repo = data_dir.join("repo");
    prepare_repo(&repo, &state, previous.as_ref(), &data_dir)?;
    let mut loaded = mycopod_specs::Loaded::default();
    for (path, text) in demo_files(&state, &data_dir)? {
        loaded.add_str(&path, text);
    }
    let desired = mycopod_specs::check(&loaded)
        .map_err(|d| anyhow::anyhow!("the demo declarations do not validate: {d:?}"))?
        .desired;

    let (pve, pve_task) = start_pve(state.pve_port, &state.guests).await?;
    let devices = start_devices(&desired, &state).await?;
    let hooks_task = start_hooks(state.hooks_port).await?;

    let config = Config {
        database_url: database_url
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("mycopod.db").display())),
        repo: Some(repo.display().to_string()),
        git_ref: "main".to_owned(),
        cache_dir: data_dir.join("cache"),
        listen: args.listen,
        jwt_secret: Some(state.jwt_secret.clone()),
        poll_interval: args.poll_interval,
        drift_interval: mycopod_specs::values::Duration::from(Duration::from_secs(30)),
        github: crate::config::GitHubConfig {
            webhook_secret: Some(state.webhook_secret.clone()),
            ..crate::config::GitHubConfig::default()
        },
        // The secrets the demo's declarations may name, each bound to its simulator; any
        // other variable, file or destination a commit names is refused.
        secrets: vec![
            SecretEntry {
                env: Some("PVE_TOKEN".to_owned()),
                file: None,
                destinations: vec![format!("http://127.0.0.1:{}", state.pve_port)],
            },
            // The guests' password references go to the cluster too.
            SecretEntry {
                env: Some("PIHOLE_ROOT_PASSWORD".to_owned()),
                file: None,
                destinations: vec![format!("http://127.0.0.1:{}", state.pve_port)],
            },
            SecretEntry {
                env: Some("WEB_CI_PASSWORD".to_owned()),
                file: None,
                destinations: vec![format!("http://127.0.0.1:{}", state.pve_port)],
            },
            SecretEntry {
                env: Some("OPS_WEBHOOK_SECRET".to_owned()),
                file: None,
                destinations: vec![format!("http://127.0.0.1:{}", state.hooks_port)],
            },
            SecretEntry {
                env: None,
                file: Some(data_dir.join("maintenance-webhook.secret")),
                destinations: vec![format!("http://127.0.0.1:{}", state.hooks_port)],
            },
        ],
        ..Config::default()
    };
    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "listen on {} (another demo running? use --listen)",
            args.listen
        )
    })?;
    let url = format!(
        "http://{}",
        listener.local_addr().context("read the API address")?
    );
    let store = Store::connect(&config.database_url)
        .await
        .context("open the demo database")?;
    store.migrate().await.context("migrate the demo database")?;
    ensure_users(&store, &mut state).await?;
    store.close().await;

    let mut env: BTreeMap<String, String> = std::env::vars().collect();
    env.insert("PVE_TOKEN".into(), PVE_TOKEN.into());
    env.insert("OPS_WEBHOOK_SECRET".into(), state.hook_secret.clone());
    let running = crate::serve::start(&config, &env, listener).await?;

    let credentials = Credentials {
        url: url.clone(),
        users: state.users.clone(),
        webhook_secret: state.webhook_secret.clone(),
    };
    write_json(&data_dir.join("demo-credentials.json"), &credentials)?;
    state.guests = save_guests(&pve);
    state.setpoints = save_setpoints(&devices);
    write_json(&state_file, &state)?;

    // Wait (briefly) for the first reconcile, so the commands below name the waiting run.
    let mut waiting = None;
    for _ in 0..50 {
        if running.control.status().last_reconcile_at.is_some() {
            let runs = running
                .store
                .runs_in_status(crate::model::RunStatus::AwaitingApproval)
                .await
                .unwrap_or_default();
            waiting = runs.last().map(|r| r.id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    print_welcome(&url, &data_dir, &credentials, waiting);

    let saver_pve = pve.clone();
    let (sims_tx, mut sims_rx) = tokio::sync::mpsc::channel::<()>(1);
    let devices = Arc::new(devices);
    let saver_devices = devices.clone();
    let saver_state = state.clone();
    let saver_file = state_file.clone();
    let saver = tokio::spawn(async move {
        let mut state = saver_state;
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = sims_rx.recv() => break,
            }
            state.guests = save_guests(&saver_pve);
            state.setpoints = save_setpoints(&saver_devices);
            if let Err(e) = write_json(&saver_file, &state) {
                tracing::warn!(error = %e, "save the demo state");
            }
        }
    });

    crate::serve::wait_for_signal().await;
    eprintln!("demo: stopping");
    running.shutdown().await;
    let _ = sims_tx.send(()).await;
    let _ = saver.await;
    state.guests = save_guests(&pve);
    state.setpoints = save_setpoints(&devices);
    write_json(&state_file, &state)?;
    pve_task.abort();
    hooks_task.abort();
    eprintln!("demo: stopped; start it again with the same --data-dir to continue");
    Ok(())
}

fn print_welcome(url: &str, data_dir: &Path, credentials: &Credentials, waiting: Option<i64>) {
    let password = |name: &str| {
        credentials
            .users
            .iter()
            .find(|u| u.name == name)
            .map(|u| u.password.clone())
            .unwrap_or_default()
    };
    let run = waiting.map_or_else(|| "RUN_ID".to_owned(), |id| id.to_string());
    let repo = data_dir.join("repo");
    println!(
        "\
mycopod demo is running. Data: {data}
  API and web page: {url}/
  users:            admin / {admin}    operator / {operator}
                    (also in {data}/demo-credentials.json)

Try, in another terminal:
  # sign in as the operator
  TOKEN=$(curl -s {url}/api/v1/auth/login -H 'content-type: application/json' \\
    -d '{{\"username\":\"operator\",\"password\":\"{operator}\"}}' | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/')
  # the runs, and the plan of the one waiting for approval
  curl -s {url}/api/v1/runs -H \"authorization: Bearer $TOKEN\"
  curl -s {url}/api/v1/runs/{run} -H \"authorization: Bearer $TOKEN\"
  # approve it with the plan hash you reviewed
  HASH=$(curl -s {url}/api/v1/runs/{run} -H \"authorization: Bearer $TOKEN\" | sed -E 's/.*\"plan_hash\":\"([0-9a-f]+)\".*/\\1/')
  curl -s -X POST {url}/api/v1/runs/{run}/approve -H \"authorization: Bearer $TOKEN\" \\
    -H 'content-type: application/json' -d \"{{\\\"plan_hash\\\":\\\"$HASH\\\"}}\"
  # watch the guests appear and the setpoints land
  curl -s {url}/api/v1/resources -H \"authorization: Bearer $TOKEN\"
  # change a declaration and see the next run
  sed -i 's/memory: 1GiB/memory: 2GiB/' {repo}/homelab/guests/containers.yaml
  git -C {repo} commit -qam 'media: more memory'
  curl -s {url}/api/v1/runs -H \"authorization: Bearer $TOKEN\"

Ctrl-C stops the demo; start it again with --data-dir {data} to continue.",
        data = data_dir.display(),
        admin = password("admin"),
        operator = password("operator"),
        repo = repo.display(),
    );
}
