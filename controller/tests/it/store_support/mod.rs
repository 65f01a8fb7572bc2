//! Test support for the store suites: a fresh migrated SQLite file per test, or a fresh
//! PostgreSQL database per test (created on the server named by MYCOPOD_TEST_DATABASE_URL and
//! dropped afterwards). Never shares a database between tests.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::str::FromStr;

use chrono::{DateTime, Duration, TimeZone, Utc};
use futures::FutureExt;
use mycopod::store::Store;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// The variable naming the PostgreSQL server the ignored tests use.
pub const PG_ENV: &str = "MYCOPOD_TEST_DATABASE_URL";

/// A fixed instant the tests count from.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// `t0` plus `s` seconds.
pub fn at(s: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(s)
}

/// A migrated SQLite store in a fresh temp dir, with its URL.
pub async fn sqlite_store() -> (Store, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    (store, url, dir)
}

/// Runs `test` against a fresh SQLite store.
pub async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Store, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let (store, url, _dir) = sqlite_store().await;
    test(store.clone(), url).await;
    store.close().await;
}

/// The server URL of the PostgreSQL tests; fails the test when it is not set.
pub fn pg_server_url() -> String {
    match std::env::var(PG_ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{PG_ENV} is not set: the PostgreSQL store tests need a server, e.g. \
             {PG_ENV}=postgres://postgres@127.0.0.1:5432/test cargo test -- --include-ignored"
        ),
    }
}

fn with_database(server_url: &str, name: &str) -> String {
    let mut url = url::Url::parse(server_url).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Runs `test` against a fresh, migrated PostgreSQL database that is dropped afterwards,
/// even when the test panics.
pub async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(Store, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let server = pg_server_url();
    let name = format!("mycopod_t_{:016x}", rand::random::<u64>());
    let admin_options = PgConnectOptions::from_str(&server).unwrap();
    let mut admin = PgConnection::connect_with(&admin_options).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = with_database(&server, &name);
    let store = Store::connect(&url).await.unwrap();
    let outcome = AssertUnwindSafe(async {
        store.migrate().await.unwrap();
        test(store.clone(), url).await;
    })
    .catch_unwind()
    .await;
    store.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Declares each listed `async fn(Store, String)` as a test on SQLite (always) and on
/// PostgreSQL (ignored unless the suite runs with `--include-ignored`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    $crate::store_support::with_sqlite(super::$name).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[ignore = "needs MYCOPOD_TEST_DATABASE_URL"]
                async fn $name() {
                    $crate::store_support::with_postgres(super::$name).await;
                }
            )+
        }
    };
}
