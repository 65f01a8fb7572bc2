//! HTTP API benchmark: `GET /api/v1/runs` (first page, 50 runs, Bearer JWT) with 10,000 runs
//! stored on SQLite, served on loopback exactly as `serve` serves the router, under an
//! open-loop load of 1,000 requests/s (goal of issue 7: p99 under 10 ms).
//!
//! Open loop: requests start on a fixed schedule whether or not earlier ones finished, and each
//! latency is measured from the request's scheduled start, so a stall counts against every
//! request it delays (no coordinated omission). Prints p50/p90/p99/max and the achieved rate.
//! Settings: `MYCOPOD_BENCH_RATE` (default 1000), `MYCOPOD_BENCH_SECONDS` (default 10, after a
//! 2 s warm-up at the same rate).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use mycopod::api::{self, ApiSettings, AppState, Clock};
use mycopod::control::Control;
use mycopod::model::{ActionStatus, Role, RunStatus, Trigger};
use mycopod::store::{NewAction, NewRun, Store};
use serde_json::json;
use tokio::sync::Mutex;

const RUNS: usize = 10_000;
const UNUSED_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                          9sTbSlTio3Biev89thdrlKKiCaYsjjYVJxGAL3swxpQ";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn fill(store: &Store) {
    let statuses = [
        RunStatus::AwaitingApproval,
        RunStatus::Approved,
        RunStatus::Invalid,
    ];
    for i in 0..RUNS {
        let commit = format!("{:040x}", i);
        let run = NewRun {
            scope: "default".into(),
            commit_sha: commit.clone(),
            trigger: Trigger::Poll,
            requested_by: None,
            status: statuses[i % statuses.len()],
            plan: json!({"commit": commit, "actions": [{"key": "Guest/web:update",
                "diff": [{"field": "cores", "from": 2, "to": 4}]}]}),
            plan_hash: format!("{:064x}", i),
            required_approvals: 1,
            error: None,
            expires_at: None,
            actions: vec![NewAction {
                key: "Guest/web:update".into(),
                kind: "Guest".into(),
                resource: "web".into(),
                verb: "update".into(),
                diff: json!({"cores": {"from": 2, "to": 4}}),
                required_approvals: 1,
                status: ActionStatus::Pending,
            }],
        };
        store.insert_run(&run, "bench", Utc::now()).await.unwrap();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sends requests at `rate` per second for `seconds`; returns the latencies and the errors.
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    rate: u64,
    seconds: u64,
) -> (Vec<Duration>, usize) {
    let latencies = Arc::new(Mutex::new(Vec::with_capacity((rate * seconds) as usize)));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let start = Instant::now();
    let total = rate * seconds;
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let scheduled = start + period * (n as u32);
        tokio::time::sleep_until(scheduled.into()).await;
        let client = client.clone();
        let url = url.to_owned();
        let token = token.to_owned();
        let latencies = latencies.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let ok = match client.get(&url).bearer_auth(&token).send().await {
                Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                Err(_) => false,
            };
            let latency = scheduled.elapsed();
            if ok {
                latencies.lock().await.push(latency);
            } else {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let latencies = std::mem::take(&mut *latencies.lock().await);
    (latencies, errors.load(std::sync::atomic::Ordering::Relaxed))
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us with no such flag and
    // only expects us to build and exit.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let filled = Instant::now();
        fill(&store).await;
        eprintln!("stored {RUNS} runs in {:.1?}", filled.elapsed());

        let settings = ApiSettings::new(b"bench-signing-key-0123456789abcdefghijkl").unwrap();
        let (control, _triggers) = Control::new(store.events().clone(), Utc::now());
        let state = AppState::with_settings(store.clone(), control, settings, Clock::system());
        let user = store
            .create_user("bench", UNUSED_PHC, Role::Viewer, "bench", Utc::now())
            .await
            .unwrap();
        let token = state
            .settings()
            .auth
            .keys
            .issue(
                "bench",
                user.id,
                user.session_version,
                Utc::now(),
                chrono::Duration::hours(1),
            )
            .unwrap();
        let app = api::app(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });

        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let url = format!("http://{addr}/api/v1/runs");
        let rate = env_number("MYCOPOD_BENCH_RATE", 1000);
        let seconds = env_number("MYCOPOD_BENCH_SECONDS", 10);

        let first = client.get(&url).bearer_auth(&token).send().await.unwrap();
        assert!(first.status().is_success(), "{}", first.status());
        let page: serde_json::Value = first.json().await.unwrap();
        assert_eq!(page["runs"].as_array().map(Vec::len), Some(50));

        let _ = open_loop(&client, &url, &token, rate, 2).await;
        let began = Instant::now();
        let (mut latencies, errors) = open_loop(&client, &url, &token, rate, seconds).await;
        let wall = began.elapsed();
        latencies.sort();
        println!(
            "GET /api/v1/runs, {RUNS} runs on SQLite, open loop {rate} req/s for {seconds} s: \
             {} ok, {errors} errors, achieved {:.0} req/s; latency p50 {:.2?} p90 {:.2?} \
             p99 {:.2?} max {:.2?}",
            latencies.len(),
            latencies.len() as f64 / wall.as_secs_f64(),
            percentile(&latencies, 50.0),
            percentile(&latencies, 90.0),
            percentile(&latencies, 99.0),
            latencies.last().copied().unwrap_or_default(),
        );
        store.close().await;
    });
}
