//! Races the store must win on both backends: many replicas claiming one approved run, many
//! operators approving at once, one user deciding twice at once. Each task uses the shared
//! pool, so they really run on separate connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::store_support;

use std::collections::BTreeSet;
use std::sync::Arc;

use mycopod::model::{ActionStatus, Decision, Role, RunStatus, Trigger};
use mycopod::store::{NewAction, NewRun, Store, StoreError};
use serde_json::json;
use store_support::at;
use tokio::sync::Barrier;

fn run(status: RunStatus, required: i64) -> NewRun {
    NewRun {
        scope: "default".to_owned(),
        commit_sha: "c1".to_owned(),
        trigger: Trigger::Webhook,
        requested_by: None,
        status,
        plan: json!({"actions": 1}),
        plan_hash: "h1".to_owned(),
        required_approvals: required,
        error: None,
        expires_at: None,
        actions: vec![NewAction {
            key: "Guest/web:delete".to_owned(),
            kind: "Guest".to_owned(),
            resource: "web".to_owned(),
            verb: "delete".to_owned(),
            diff: json!({}),
            required_approvals: required,
            status: ActionStatus::Pending,
        }],
    }
}

async fn twenty_claims_of_one_approved_run_should_have_exactly_one_winner(
    store: Store,
    _url: String,
) {
    let id = store
        .insert_run(&run(RunStatus::Approved, 0), "ctl", at(0))
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(20));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .claim_run(id, &format!("replica-{i}"), None, at(1))
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if t.await.unwrap() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(store.get_run(id).await.unwrap().status, RunStatus::Applying);
    // Exactly one applying transition reached the audit log.
    let page = store.list_audit(None, 100).await.unwrap();
    let claims = page
        .entries
        .iter()
        .filter(|e| e.event == "run.status" && e.details["to"] == "applying")
        .count();
    assert_eq!(claims, 1);
    assert_eq!(store.verify_audit().await.unwrap().failure, None);
}

async fn ten_operators_approving_at_once_should_each_be_counted_once(store: Store, _url: String) {
    let id = store
        .insert_run(&run(RunStatus::AwaitingApproval, 10), "ctl", at(0))
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(10));
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .record_decision(id, &format!("op-{i}"), "h1", Decision::Approve, None, at(1))
                .await
                .unwrap()
        }));
    }
    let mut counts = BTreeSet::new();
    let mut approved_by_this_call = 0;
    for t in tasks {
        let outcome = t.await.unwrap();
        counts.insert(outcome.approvals);
        if outcome.status == RunStatus::Approved {
            approved_by_this_call += 1;
        }
    }
    // Each approval saw a distinct count 1..=10: none was lost or counted twice.
    assert_eq!(counts, (1..=10).collect::<BTreeSet<i64>>());
    assert_eq!(approved_by_this_call, 1);
    assert_eq!(store.list_approvals(id).await.unwrap().len(), 10);
    assert_eq!(store.get_run(id).await.unwrap().status, RunStatus::Approved);
    assert_eq!(store.verify_audit().await.unwrap().failure, None);
}

async fn one_user_deciding_twice_at_once_should_be_recorded_once(store: Store, _url: String) {
    let id = store
        .insert_run(&run(RunStatus::AwaitingApproval, 2), "ctl", at(0))
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(5));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .record_decision(id, "bob", "h1", Decision::Approve, None, at(1))
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::AlreadyDecided { .. }) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(store.list_approvals(id).await.unwrap().len(), 1);
}

async fn concurrent_audit_appends_should_keep_one_chain(store: Store, _url: String) {
    let mut tasks = Vec::new();
    for i in 0..30 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append_audit(
                    &mycopod::store::NewAuditEntry {
                        actor: format!("a{i}"),
                        event: "test".to_owned(),
                        subject: "x".to_owned(),
                        details: json!({"i": i}),
                    },
                    at(i),
                )
                .await
                .unwrap()
        }));
    }
    let mut seqs = BTreeSet::new();
    for t in tasks {
        seqs.insert(t.await.unwrap().seq);
    }
    assert_eq!(seqs, (1..=30).collect::<BTreeSet<i64>>());
    let report = store.verify_audit().await.unwrap();
    assert_eq!((report.checked, report.failure), (30, None));
}

async fn forty_login_attempts_at_once_should_admit_only_five(store: Store, _url: String) {
    let ana = store
        .create_user("ana", "$argon2id$unused", Role::Viewer, "cli", at(0))
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(40));
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .count_login_attempt("ana", 5, at(900), at(1))
                .await
                .unwrap()
                .is_some()
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(
        admitted, 5,
        "a password is checked only for admitted attempts"
    );
    let locked = store.get_user(ana.id).await.unwrap();
    assert_eq!(locked.failed_logins, 5);
    assert!(locked.is_locked(at(2)));
    // Locked, or unknown: nothing is admitted, so no password is checked.
    assert!(
        store
            .count_login_attempt("ana", 5, at(900), at(2))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .count_login_attempt("nobody", 5, at(900), at(2))
            .await
            .unwrap()
            .is_none()
    );
    // Once the lock expired, the count starts afresh.
    let again = store
        .count_login_attempt("ana", 5, at(2000), at(901))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.failed_logins, again.locked_until), (1, None));
}

on_both_backends!(
    forty_login_attempts_at_once_should_admit_only_five,
    twenty_claims_of_one_approved_run_should_have_exactly_one_winner,
    ten_operators_approving_at_once_should_each_be_counted_once,
    one_user_deciding_twice_at_once_should_be_recorded_once,
    concurrent_audit_appends_should_keep_one_chain,
);
