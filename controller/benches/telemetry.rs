//! Telemetry benchmarks (a plain `main`, not criterion: the figures are rates over a window).
//!
//! 1. Polling: 200 simulated Modbus devices with 20 registers each, polled every second by
//!    `telemetry::spawn` into a SQLite file. The simulators run in a child process (this same
//!    binary, re-executed), so the CPU figure is mycopod's alone: user + system time of this
//!    process from `/proc/self/stat` over the window (goal: under 10% of one core), and the
//!    readings stored per second (expected 4,000).
//! 2. Push ingest: `POST /api/v1/readings` batches of 10,000 readings through the whole router
//!    (`oneshot`: auth, JSON parsing, per-item checks, one insert) into SQLite (goal: at least
//!    100,000 readings/s).
//!
//! `MYCOPOD_BENCH_SECS` sets the polling window (default 30 s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Utc;
use mycopod::api::{ApiSettings, AppState, Clock, RateLimit, app};
use mycopod::control::Control;
use mycopod::desired::Snapshot;
use mycopod::device_clients::DeviceClients;
use mycopod::model::Scope;
use mycopod::store::{Store, hash_token};
use mycopod::telemetry::TelemetrySettings;
use mycopod_adapters::modbus::{DataType, DeviceDef, RegisterDef, SimDevice, Table, Waveform};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const DEVICES: usize = 200;
const REGISTERS: usize = 20;
const SIM_ENV: &str = "MYCOPOD_BENCH_SIMULATORS";
const INGEST_BATCH: usize = 10_000;
const INGEST_BATCHES: usize = 30;

fn sim_def(i: usize) -> DeviceDef {
    let mut d = DeviceDef::tcp(format!("dev-{i:03}"), "127.0.0.1", 0);
    d.registers = (0..REGISTERS)
        .map(|r| {
            RegisterDef::new(
                format!("reg-{r:02}"),
                Table::Holding,
                (r * 2) as u16,
                DataType::F32,
            )
        })
        .collect();
    d
}

/// Child mode: start the simulators, print their ports, run until stdin closes.
fn run_simulators() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut sims = Vec::new();
        for i in 0..DEVICES {
            let mut sim = SimDevice::new(sim_def(i));
            for r in 0..REGISTERS {
                sim = sim.waveform(
                    format!("reg-{r:02}"),
                    Waveform::Sine {
                        amplitude: 10.0,
                        period: Duration::from_secs(60 + r as u64),
                        center: 50.0,
                    },
                );
            }
            sims.push(sim.start().await.unwrap());
        }
        let ports: Vec<String> = sims.iter().map(|s| s.addr().port().to_string()).collect();
        println!("PORTS {}", ports.join(","));
        std::io::stdout().flush().unwrap();
        // Parent closes our stdin when it is done.
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin()
                .read_line(&mut line)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await
        .unwrap();
        drop(sims);
    });
}

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here (0-based: 11, 12).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz: u64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100);
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

fn declarations(ports: &[u16]) -> String {
    let mut yaml = String::new();
    for (i, port) in ports.iter().enumerate() {
        yaml.push_str(&format!(
            "---\napiVersion: mycopod/v1\nkind: ModbusDevice\nmetadata: {{name: dev-{i:03}}}\nspec:\n  connection: {{tcp: {{host: 127.0.0.1, port: {port}}}}}\n  pollInterval: 1s\n  registers:\n"
        ));
        for r in 0..REGISTERS {
            yaml.push_str(&format!(
                "    - {{name: reg-{r:02}, table: holding, address: {}, type: f32}}\n",
                r * 2
            ));
        }
    }
    yaml
}

async fn temp_store(dir: &tempfile::TempDir, name: &str) -> Store {
    let store = Store::connect(&format!("sqlite://{}/{name}.db", dir.path().display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
}

async fn bench_polling(dir: &tempfile::TempDir) {
    let window = Duration::from_secs(
        std::env::var("MYCOPOD_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(SIM_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ports: Vec<u16> = line
        .trim()
        .strip_prefix("PORTS ")
        .expect("the simulator process prints its ports")
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), DEVICES);

    let store = temp_store(dir, "poll").await;
    let loaded = mycopod_specs::load_str("devices.yaml", &declarations(&ports));
    let desired = mycopod_specs::check(&loaded).unwrap().desired;
    let (control, _triggers) = Control::new(store.events().clone(), Utc::now());
    control.set_desired(Snapshot {
        commit: "bench".into(),
        desired: Arc::new(desired),
        loaded_at: Utc::now(),
    });
    let settings = TelemetrySettings::from_config(
        &mycopod::config::TelemetryConfig::default(),
        mycopod::secrets::Registry::default(),
    );
    let shutdown = CancellationToken::new();
    let handle = mycopod::telemetry::spawn(
        store.clone(),
        control.desired(),
        control.sample_slot(),
        DeviceClients::new(),
        settings,
        shutdown.clone(),
    )
    .unwrap();

    // Warm up: every poller started and connected.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu0 = cpu_time();
    let t0 = Utc::now();
    let wall0 = Instant::now();
    tokio::time::sleep(window).await;
    let cpu1 = cpu_time();
    let wall = wall0.elapsed();
    let t1 = Utc::now();
    shutdown.cancel();
    handle.await.unwrap();
    drop(child.stdin.take());
    let _ = child.wait();

    let mut stored = 0i64;
    for d in 0..DEVICES {
        for r in 0..REGISTERS {
            let buckets = store
                .summarize_readings(
                    &format!("dev-{d:03}"),
                    &format!("reg-{r:02}"),
                    t0,
                    t1,
                    Duration::from_secs(86_400 * 365),
                )
                .await
                .unwrap();
            stored += buckets.iter().map(|b| b.count).sum::<i64>();
        }
    }
    let cpu = cpu1 - cpu0;
    let devices = store.list_devices().await.unwrap();
    let online = devices.iter().filter(|d| d.online).count();
    println!(
        "polling: {DEVICES} devices x {REGISTERS} registers at 1 s for {:.1} s: CPU {:.2} s = {:.1}% of one core; {stored} readings stored = {:.0} readings/s (expected {}); {online}/{} devices online",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        stored as f64 / (t1 - t0).as_seconds_f64(),
        DEVICES * REGISTERS,
        devices.len(),
    );
}

async fn bench_ingest(dir: &tempfile::TempDir) {
    let store = temp_store(dir, "ingest").await;
    let devices = 50;
    let yaml: String = (0..devices)
        .map(|i| {
            let mut s = format!(
                "---\napiVersion: mycopod/v1\nkind: ModbusDevice\nmetadata: {{name: gw-{i:03}}}\nspec:\n  connection: {{tcp: {{host: 127.0.0.1, port: 502}}}}\n  registers:\n"
            );
            for r in 0..REGISTERS {
                s.push_str(&format!(
                    "    - {{name: reg-{r:02}, table: holding, address: {}, type: f32}}\n",
                    r * 2
                ));
            }
            s
        })
        .collect();
    let desired = mycopod_specs::check(&mycopod_specs::load_str("gw.yaml", &yaml))
        .unwrap()
        .desired;
    let (control, _) = Control::new(store.events().clone(), Utc::now());
    control.set_desired(Snapshot {
        commit: "bench".into(),
        desired: Arc::new(desired),
        loaded_at: Utc::now(),
    });
    let mut settings = ApiSettings::new(&[9u8; 32]).unwrap();
    settings.body_limit_bytes = 16 * 1024 * 1024;
    settings.rate_limits.ingest = RateLimit::new(Duration::from_micros(1), 1_000_000);
    let key = mycopod::api::auth::new_api_key();
    store
        .create_api_key(
            "bench",
            &hash_token(&key),
            &[Scope::Ingest],
            None,
            "bench",
            Utc::now(),
        )
        .await
        .unwrap();
    let router = app(AppState::with_settings(
        store.clone(),
        control,
        settings,
        Clock::system(),
    ));
    let start = Utc::now() - chrono::Duration::hours(24);
    let series = devices * REGISTERS;
    let bodies: Vec<String> = (0..INGEST_BATCHES)
        .map(|b| {
            let items: Vec<Value> = (0..INGEST_BATCH)
                .map(|i| {
                    let n = b * INGEST_BATCH + i;
                    let s = n % series;
                    let time = start + chrono::Duration::seconds((n / series) as i64);
                    json!({"device": format!("gw-{:03}", s / REGISTERS),
                           "register": format!("reg-{:02}", s % REGISTERS),
                           "time": time.to_rfc3339(), "value": (n % 1000) as f64 * 0.5})
                })
                .collect();
            Value::Array(items).to_string()
        })
        .collect();
    let t0 = Instant::now();
    let mut stored = 0u64;
    for body in bodies {
        let request = Request::post("/api/v1/readings")
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-api-key", &key)
            .body(Body::from(body))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let result: Value = serde_json::from_slice(&bytes).unwrap();
        stored += result["stored"].as_u64().unwrap();
    }
    let elapsed = t0.elapsed();
    println!(
        "ingest: {INGEST_BATCHES} requests of {INGEST_BATCH} readings into SQLite in {:.2} s = {:.0} readings/s ({stored} stored)",
        elapsed.as_secs_f64(),
        stored as f64 / elapsed.as_secs_f64()
    );
}

fn main() {
    if std::env::var_os(SIM_ENV).is_some() {
        run_simulators();
        return;
    }
    // `cargo bench` passes `--bench`; a filter argument picks one part.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        if want("polling") {
            bench_polling(&dir).await;
        }
        if want("ingest") {
            bench_ingest(&dir).await;
        }
    });
}
