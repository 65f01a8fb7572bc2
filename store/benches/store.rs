//! Store benchmarks: batched reading inserts on SQLite and PostgreSQL (goal >= 100,000
//! readings/s each) and "latest value per register of one device" with 10 million readings
//! stored (goal < 10 ms). The 10M datasets are built once and reused: a SQLite file under
//! `<workspace>/target/bench-data/` and a PostgreSQL database `mycopod_bench_10m`. The
//! PostgreSQL parts read MYCOPOD_TEST_DATABASE_URL and are skipped with a note when it is unset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mycopod_store::{Reading, Store};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::runtime::Runtime;

const BATCH: usize = 10_000;
const DEVICES: usize = 50;
const REGISTERS: usize = 20;
const TOTAL_ROWS: usize = 10_000_000;
const BUILD_BATCH: usize = 50_000;
const PG_10M_DB: &str = "mycopod_bench_10m";

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// `n` readings spread over `DEVICES` x `REGISTERS` series starting at step `first_step`
/// (one step = one second per series).
fn readings(first_step: i64, n: usize) -> Vec<Reading> {
    let series = DEVICES * REGISTERS;
    (0..n)
        .map(|i| {
            let s = i % series;
            let step = first_step + (i / series) as i64;
            Reading {
                device: format!("dev-{:03}", s / REGISTERS),
                register: format!("reg-{:02}", s % REGISTERS),
                time: base() + chrono::Duration::seconds(step),
                value: (i % 1000) as f64 * 0.5,
            }
        })
        .collect()
}

fn pg_url() -> Option<String> {
    match std::env::var("MYCOPOD_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "note: MYCOPOD_TEST_DATABASE_URL is not set, skipping the PostgreSQL benchmarks"
            );
            None
        }
    }
}

fn with_db(server: &str, name: &str) -> String {
    let mut url = url::Url::parse(server).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

async fn admin(server: &str) -> PgConnection {
    PgConnection::connect_with(&PgConnectOptions::from_str(server).unwrap())
        .await
        .unwrap()
}

fn bench_insert(c: &mut Criterion, rt: &Runtime, name: &str, store: &Store) {
    let step = AtomicI64::new(0);
    let steps_per_batch = (BATCH / (DEVICES * REGISTERS)) as i64;
    let mut group = c.benchmark_group("readings_insert");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let store = store.clone();
            let step = &step;
            async move {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let first = step.fetch_add(steps_per_batch, Ordering::Relaxed);
                    let batch = readings(first, BATCH);
                    let start = Instant::now();
                    let n = store.insert_readings(&batch).await.unwrap();
                    spent += start.elapsed();
                    assert_eq!(n, BATCH as u64);
                }
                spent
            }
        })
    });
    group.finish();
}

/// Fills `store` up to `TOTAL_ROWS` readings unless the dataset is already complete.
async fn build_10m(store: &Store, label: &str) {
    let done = store.get_setting("bench_rows").await.unwrap();
    if done.as_deref() == Some(&TOTAL_ROWS.to_string()) {
        eprintln!("note: reusing the 10M-reading {label} dataset");
        return;
    }
    eprintln!("note: building the 10M-reading {label} dataset (once)");
    let start = Instant::now();
    let series = DEVICES * REGISTERS;
    let mut written = 0;
    while written < TOTAL_ROWS {
        let first_step = (written / series) as i64;
        store
            .insert_readings(&readings(first_step, BUILD_BATCH))
            .await
            .unwrap();
        written += BUILD_BATCH;
    }
    store
        .set_setting("bench_rows", &TOTAL_ROWS.to_string(), Utc::now())
        .await
        .unwrap();
    eprintln!(
        "note: built the {label} dataset in {:.0} s",
        start.elapsed().as_secs_f64()
    );
}

fn bench_latest(c: &mut Criterion, rt: &Runtime, name: &str, store: &Store) {
    let mut group = c.benchmark_group("latest_per_register_10m");
    group.sample_size(50);
    group.bench_function(name, |b| {
        b.to_async(rt).iter(|| async {
            let latest = store.latest_readings("dev-017").await.unwrap();
            assert_eq!(latest.len(), REGISTERS);
        })
    });
    group.finish();
}

fn sqlite_benches(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("insert.db").display());
    let store = rt.block_on(async {
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        store
    });
    bench_insert(c, &rt, "sqlite_10k_batch", &store);
    rt.block_on(store.close());

    let data_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let url = format!("sqlite://{}", data_dir.join("readings-10m.db").display());
    let store = rt.block_on(async {
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        build_10m(&store, "SQLite").await;
        store
    });
    bench_latest(c, &rt, "sqlite", &store);
    rt.block_on(store.close());
}

fn postgres_benches(c: &mut Criterion) {
    let Some(server) = pg_url() else {
        return;
    };
    let rt = Runtime::new().unwrap();
    let name = format!("mycopod_bench_{:08x}", rand::random::<u32>());
    let store = rt.block_on(async {
        let mut conn = admin(&server).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let store = Store::connect(&with_db(&server, &name)).await.unwrap();
        store.migrate().await.unwrap();
        store
    });
    bench_insert(c, &rt, "postgres_10k_batch", &store);
    rt.block_on(async {
        store.close().await;
        let mut conn = admin(&server).await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    });

    let store = rt.block_on(async {
        let mut conn = admin(&server).await;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(PG_10M_DB)
                .fetch_optional(&mut conn)
                .await
                .unwrap();
        if exists.is_none() {
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {PG_10M_DB}")))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let store = Store::connect(&with_db(&server, PG_10M_DB)).await.unwrap();
        store.migrate().await.unwrap();
        build_10m(&store, "PostgreSQL").await;
        store
    });
    bench_latest(c, &rt, "postgres", &store);
    rt.block_on(store.close());
}

criterion_group!(benches, sqlite_benches, postgres_benches);
criterion_main!(benches);
