//! The store subcommands of the real `mycopod` binary: `migrate`, `user add`, and
//! `audit verify` against a log edited behind the store's back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::store_support;

use std::process::Stdio;
use std::time::Duration;

use mycopod::model::Role;
use mycopod::store::{Backend, NewAuditEntry, Store, verify_password};
use serde_json::json;
use store_support::{at, sqlite_store};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args`, feeding `stdin`, under a timeout.
async fn mycopod(url: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mycopod"))
        .args(args)
        .env("MYCOPOD_DATABASE_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        // The child may exit before reading (a usage error); a broken pipe is fine then.
        let _ = pipe.write_all(input.as_bytes()).await;
    }
    drop(pipe);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("mycopod finishes within 60 s")
        .unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn migrate_should_create_the_schema_and_be_repeatable() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("fresh.db").display());
    for _ in 0..2 {
        let out = mycopod(&url, &["migrate"], None).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stdout.contains("migrations applied"), "{}", out.stdout);
    }
    let store = Store::connect(&url).await.unwrap();
    assert!(store.list_users().await.unwrap().is_empty());
    store.close().await;
}

#[tokio::test]
async fn database_url_flag_should_override_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let flag_db = dir.path().join("flag.db");
    let flag_url = format!("sqlite://{}", flag_db.display());
    let out = mycopod(
        "postgres://nobody@127.0.0.1:1/none",
        &["--database-url", &flag_url, "migrate"],
        None,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(flag_db.exists());
}

#[tokio::test]
async fn an_unsupported_database_url_should_be_a_usage_error() {
    let out = mycopod("mysql://root@localhost/x", &["migrate"], None).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("unsupported database url"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn user_add_should_store_an_argon2id_hash_of_the_password_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("users.db").display());
    let out = mycopod(
        &url,
        &[
            "user",
            "add",
            "alice",
            "--role",
            "operator",
            "--password-stdin",
        ],
        Some("correct horse battery\n"),
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("created user alice"), "{}", out.stdout);
    let store = Store::connect(&url).await.unwrap();
    let user = store.get_user_by_name("alice").await.unwrap();
    assert_eq!(user.role, Role::Operator);
    assert!(user.password_hash.starts_with("$argon2id$"));
    assert!(verify_password(
        "correct horse battery",
        &user.password_hash
    ));
    assert!(!verify_password(
        "correct horse battery\n",
        &user.password_hash
    ));
    store.close().await;

    let again = mycopod(
        &url,
        &[
            "user",
            "add",
            "alice",
            "--role",
            "admin",
            "--password-stdin",
        ],
        Some("another password\n"),
    )
    .await;
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("user alice already exists"),
        "{}",
        again.stderr
    );
}

#[tokio::test]
async fn user_add_should_refuse_bad_input_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("users.db").display());
    let short = mycopod(
        &url,
        &["user", "add", "bob", "--role", "viewer", "--password-stdin"],
        Some("short\n"),
    )
    .await;
    assert_eq!(short.code, 2);
    assert!(
        short.stderr.contains("at least 12 characters"),
        "{}",
        short.stderr
    );
    let role = mycopod(
        &url,
        &["user", "add", "bob", "--role", "root", "--password-stdin"],
        Some("long enough password\n"),
    )
    .await;
    assert_eq!(role.code, 2);
    assert!(role.stderr.contains("unknown role"), "{}", role.stderr);
    let no_tty = mycopod(&url, &["user", "add", "bob", "--role", "viewer"], None).await;
    assert_eq!(no_tty.code, 2);
    assert!(
        no_tty.stderr.contains("--password-stdin"),
        "{}",
        no_tty.stderr
    );
}

/// Appends five entries, checks `audit verify` passes, edits entry 3 directly in the
/// database, and checks `audit verify` names exactly entry 3.
async fn audit_verify_should_name_exactly_the_edited_entry(store: Store, url: String) {
    for i in 1..=5 {
        store
            .append_audit(
                &NewAuditEntry {
                    actor: "alice".to_owned(),
                    event: "run.approved_by".to_owned(),
                    subject: format!("run/{i}"),
                    details: json!({"plan_hash": format!("h{i}")}),
                },
                at(i),
            )
            .await
            .unwrap();
    }
    let clean = mycopod(&url, &["audit", "verify"], None).await;
    assert_eq!(clean.code, 0, "{}", clean.stderr);
    assert!(
        clean.stdout.contains("5 entries verified"),
        "{}",
        clean.stdout
    );

    // Behind the store's back: rewrite who approved entry 3.
    let sql = "UPDATE audit_log SET actor = 'mallory' WHERE seq = 3";
    let changed = match store.backend() {
        Backend::Sqlite(pool) => sqlx::query(sql)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected(),
        Backend::Postgres(pool) => sqlx::query(sql)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected(),
    };
    assert_eq!(changed, 1);
    let tampered = mycopod(&url, &["audit", "verify"], None).await;
    assert_eq!(tampered.code, 1, "{}", tampered.stdout);
    assert!(
        tampered.stderr.contains("tampered at entry 3:"),
        "{}",
        tampered.stderr
    );
    assert!(!tampered.stderr.contains("entry 4"), "{}", tampered.stderr);
}

#[tokio::test]
async fn audit_verify_should_report_a_deleted_entry() {
    let (store, url, _dir) = sqlite_store().await;
    for i in 1..=4 {
        store
            .append_audit(
                &NewAuditEntry {
                    actor: "ctl".to_owned(),
                    event: "e".to_owned(),
                    subject: "s".to_owned(),
                    details: json!({}),
                },
                at(i),
            )
            .await
            .unwrap();
    }
    if let Backend::Sqlite(pool) = store.backend() {
        sqlx::query("DELETE FROM audit_log WHERE seq = 2")
            .execute(pool)
            .await
            .unwrap();
    }
    let out = mycopod(&url, &["audit", "verify"], None).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("entry 2 is missing"), "{}", out.stderr);
    store.close().await;
}

on_both_backends!(audit_verify_should_name_exactly_the_edited_entry);

#[tokio::test]
async fn user_add_should_refuse_a_password_the_api_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("users.db").display());
    // Eleven characters: one short of the rule the API applies.
    let out = mycopod(
        &url,
        &["user", "add", "bob", "--role", "viewer", "--password-stdin"],
        Some("elevenchars\n"),
    )
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("at least 12 characters"),
        "{}",
        out.stderr
    );
    let store = Store::connect(&url).await.unwrap();
    assert!(store.get_user_by_name("bob").await.is_err(), "no user made");
    store.close().await;
}
