//! The store conformance suite: every repository function behaves the same on SQLite and on
//! PostgreSQL. Each test is written once as `async fn(Store, url)` and instantiated for both
//! backends by `on_both_backends!`, each run in a fresh database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::store_support;

use std::time::Duration;

use mycopod::model::{
    ActionStatus, AlertState, ConfigKind, Decision, DeliveryStatus, Role, RunStatus, Scope, Trigger,
};
use mycopod::store::{
    ActionUpdate, GuestRead, NewAction, NewAuditEntry, NewDelivery, NewRun, Reading, RotateOutcome,
    RunFilter, Store, StoreError, hash_password, hash_token, verify_password,
};
use serde_json::json;
use store_support::{at, t0};

fn new_run(scope: &str, commit: &str, status: RunStatus, required: i64) -> NewRun {
    NewRun {
        scope: scope.to_owned(),
        commit_sha: commit.to_owned(),
        trigger: Trigger::Poll,
        requested_by: Some("alice".to_owned()),
        status,
        plan: json!({"actions": [{"key": "Guest/web:stop"}], "commit": commit}),
        plan_hash: format!("hash-{commit}"),
        required_approvals: required,
        error: None,
        expires_at: None,
        actions: vec![
            NewAction {
                key: "Guest/web:stop".to_owned(),
                kind: "Guest".to_owned(),
                resource: "web".to_owned(),
                verb: "stop".to_owned(),
                diff: json!({"state": {"from": "running", "to": "stopped"}}),
                required_approvals: required,
                status: ActionStatus::Pending,
            },
            NewAction {
                key: "ModbusDevice/fm-1:write".to_owned(),
                kind: "ModbusDevice".to_owned(),
                resource: "fm-1".to_owned(),
                verb: "write".to_owned(),
                diff: json!({"cutoff": {"from": 0.5, "to": 0.75}}),
                required_approvals: 0,
                status: ActionStatus::Pending,
            },
        ],
    }
}

async fn runs_should_round_trip_with_their_actions(store: Store, _url: String) {
    let run = new_run("default", "abc123", RunStatus::AwaitingApproval, 1);
    let id = store.insert_run(&run, "controller", at(1)).await.unwrap();
    let got = store.get_run(id).await.unwrap();
    assert_eq!(got.id, id);
    assert_eq!(got.commit_sha, "abc123");
    assert_eq!(got.trigger, Trigger::Poll);
    assert_eq!(got.status, RunStatus::AwaitingApproval);
    assert_eq!(got.plan, run.plan);
    assert_eq!(got.plan_hash, "hash-abc123");
    assert_eq!(got.created_at, at(1));
    assert_eq!(got.requested_by.as_deref(), Some("alice"));
    let actions = store.list_actions(id).await.unwrap();
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[0].seq, 0);
    assert_eq!(actions[0].key, "Guest/web:stop");
    assert_eq!(
        actions[1].diff,
        json!({"cutoff": {"from": 0.5, "to": 0.75}})
    );
    assert_eq!(actions[1].status, ActionStatus::Pending);
    assert!(matches!(
        store.get_run(id + 100).await,
        Err(StoreError::NotFound { what: "run", .. })
    ));
}

async fn a_run_should_not_start_in_a_non_initial_state(store: Store, _url: String) {
    let run = new_run("default", "abc", RunStatus::Applying, 0);
    let err = store
        .insert_run(&run, "controller", at(0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err}");
}

async fn run_transition_should_take_effect_only_from_the_expected_state(store: Store, _: String) {
    let id = store
        .insert_run(
            &new_run("default", "c1", RunStatus::Approved, 0),
            "ctl",
            at(0),
        )
        .await
        .unwrap();
    assert!(store.get_run(id).await.unwrap().approved_at.is_some());
    assert!(store.claim_run(id, "ctl", None, at(1)).await.unwrap());
    assert!(!store.claim_run(id, "ctl", None, at(2)).await.unwrap());
    let run = store.get_run(id).await.unwrap();
    assert_eq!(run.status, RunStatus::Applying);
    assert_eq!(run.started_at, Some(at(1)));
    assert!(
        !store
            .transition_run(
                id,
                RunStatus::Approved,
                RunStatus::Superseded,
                "ctl",
                None,
                at(3)
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .transition_run(
                id,
                RunStatus::Applying,
                RunStatus::PartiallyFailed,
                "ctl",
                Some("one action failed"),
                at(4)
            )
            .await
            .unwrap()
    );
    let run = store.get_run(id).await.unwrap();
    assert_eq!(run.status, RunStatus::PartiallyFailed);
    assert_eq!(run.finished_at, Some(at(4)));
    assert_eq!(run.error.as_deref(), Some("one action failed"));
}

async fn an_illegal_run_transition_should_be_refused(store: Store, _url: String) {
    let id = store
        .insert_run(
            &new_run("default", "c1", RunStatus::AwaitingApproval, 1),
            "ctl",
            at(0),
        )
        .await
        .unwrap();
    let err = store
        .transition_run(
            id,
            RunStatus::AwaitingApproval,
            RunStatus::Applying,
            "ctl",
            None,
            at(1),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IllegalRunTransition { .. }));
    assert_eq!(
        store.get_run(id).await.unwrap().status,
        RunStatus::AwaitingApproval
    );
}

async fn approvals_should_approve_the_run_once_enough_are_in(store: Store, _url: String) {
    let id = store
        .insert_run(
            &new_run("default", "c1", RunStatus::AwaitingApproval, 2),
            "ctl",
            at(0),
        )
        .await
        .unwrap();
    let first = store
        .record_decision(id, "bob", "hash-c1", Decision::Approve, Some("ok"), at(1))
        .await
        .unwrap();
    assert_eq!(first.status, RunStatus::AwaitingApproval);
    assert_eq!((first.approvals, first.required), (1, 2));
    let again = store
        .record_decision(id, "bob", "hash-c1", Decision::Approve, None, at(2))
        .await
        .unwrap_err();
    assert!(
        matches!(again, StoreError::AlreadyDecided { ref user, .. } if user == "bob"),
        "{again}"
    );
    let stale = store
        .record_decision(id, "carol", "hash-other", Decision::Approve, None, at(2))
        .await
        .unwrap_err();
    assert!(matches!(stale, StoreError::StalePlanHash { .. }), "{stale}");
    let second = store
        .record_decision(id, "carol", "hash-c1", Decision::Approve, None, at(3))
        .await
        .unwrap();
    assert_eq!(second.status, RunStatus::Approved);
    assert_eq!(second.approvals, 2);
    let run = store.get_run(id).await.unwrap();
    assert_eq!(run.status, RunStatus::Approved);
    assert_eq!(run.approved_at, Some(at(3)));
    let late = store
        .record_decision(id, "dave", "hash-c1", Decision::Approve, None, at(4))
        .await
        .unwrap_err();
    assert!(matches!(
        late,
        StoreError::RunNotInState {
            status: RunStatus::Approved,
            ..
        }
    ));
    let approvals = store.list_approvals(id).await.unwrap();
    let names: Vec<_> = approvals.iter().map(|a| a.user_name.as_str()).collect();
    assert_eq!(names, ["bob", "carol"]);
    assert_eq!(approvals[0].comment.as_deref(), Some("ok"));
    assert!(
        store
            .record_decision(id + 99, "x", "h", Decision::Approve, None, at(5))
            .await
            .unwrap_err()
            .is_not_found()
    );
}

async fn a_rejection_should_reject_the_run(store: Store, _url: String) {
    let id = store
        .insert_run(
            &new_run("default", "c1", RunStatus::AwaitingApproval, 2),
            "ctl",
            at(0),
        )
        .await
        .unwrap();
    let outcome = store
        .record_decision(id, "bob", "hash-c1", Decision::Reject, Some("no"), at(1))
        .await
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Rejected);
    let run = store.get_run(id).await.unwrap();
    assert_eq!(run.status, RunStatus::Rejected);
    assert_eq!(run.finished_at, Some(at(1)));
}

async fn list_runs_should_filter_and_page_newest_first(store: Store, _url: String) {
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut run = new_run(
            "default",
            &format!("c{i}aa"),
            RunStatus::AwaitingApproval,
            1,
        );
        if i % 2 == 0 {
            run.trigger = Trigger::Webhook;
        }
        ids.push(store.insert_run(&run, "ctl", at(i)).await.unwrap());
    }
    store
        .transition_run(
            ids[6],
            RunStatus::AwaitingApproval,
            RunStatus::Rejected,
            "ctl",
            None,
            at(9),
        )
        .await
        .unwrap();
    let page = store
        .list_runs(&RunFilter {
            limit: 3,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    let got: Vec<i64> = page.runs.iter().map(|r| r.id).collect();
    assert_eq!(got, [ids[6], ids[5], ids[4]]);
    let page2 = store
        .list_runs(&RunFilter {
            limit: 3,
            before: page.next_cursor,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    let got: Vec<i64> = page2.runs.iter().map(|r| r.id).collect();
    assert_eq!(got, [ids[3], ids[2], ids[1]]);
    let page3 = store
        .list_runs(&RunFilter {
            limit: 3,
            before: page2.next_cursor,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page3.runs.len(), 1);
    assert_eq!(page3.next_cursor, None);
    let webhooks = store
        .list_runs(&RunFilter {
            trigger: Some(Trigger::Webhook),
            status: Some(RunStatus::AwaitingApproval),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    let got: Vec<i64> = webhooks.runs.iter().map(|r| r.id).collect();
    assert_eq!(got, [ids[4], ids[2], ids[0]]);
    let by_commit = store
        .list_runs(&RunFilter {
            commit: Some("c3".to_owned()),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_commit.runs.len(), 1);
    assert_eq!(by_commit.runs[0].commit_sha, "c3aa");
    // Every filter at once, the cursor included: each condition gets its own parameter.
    let all = RunFilter {
        status: Some(RunStatus::AwaitingApproval),
        trigger: Some(Trigger::Webhook),
        commit: Some("c".to_owned()),
        before: Some(ids[4]),
        limit: 1,
    };
    let first = store.list_runs(&all).await.unwrap();
    let got: Vec<i64> = first.runs.iter().map(|r| r.id).collect();
    assert_eq!(got, [ids[2]]);
    assert_eq!(first.next_cursor, Some(ids[2]));
    let rest = store
        .list_runs(&RunFilter {
            before: first.next_cursor,
            ..all.clone()
        })
        .await
        .unwrap();
    let got: Vec<i64> = rest.runs.iter().map(|r| r.id).collect();
    assert_eq!(got, [ids[0]]);
    assert_eq!(rest.next_cursor, None);
    let none = store
        .list_runs(&RunFilter {
            commit: Some("c2ab".to_owned()),
            ..all
        })
        .await
        .unwrap();
    assert!(none.runs.is_empty());
}

async fn a_newer_run_should_supersede_only_waiting_runs_of_its_scope(store: Store, _url: String) {
    let waiting = store
        .insert_run(
            &new_run("home", "c1", RunStatus::AwaitingApproval, 1),
            "ctl",
            at(0),
        )
        .await
        .unwrap();
    let approved = store
        .insert_run(&new_run("home", "c2", RunStatus::Approved, 0), "ctl", at(1))
        .await
        .unwrap();
    let applying = store
        .insert_run(&new_run("home", "c3", RunStatus::Approved, 0), "ctl", at(2))
        .await
        .unwrap();
    store.claim_run(applying, "ctl", None, at(3)).await.unwrap();
    let other_scope = store
        .insert_run(
            &new_run("plant", "c4", RunStatus::AwaitingApproval, 1),
            "ctl",
            at(4),
        )
        .await
        .unwrap();
    let newest = store
        .insert_run(
            &new_run("home", "c5", RunStatus::AwaitingApproval, 1),
            "ctl",
            at(5),
        )
        .await
        .unwrap();
    let superseded = store
        .supersede_waiting_runs("home", newest, "ctl", at(6))
        .await
        .unwrap();
    assert_eq!(superseded, [waiting, approved]);
    let run = store.get_run(waiting).await.unwrap();
    assert_eq!(run.status, RunStatus::Superseded);
    assert_eq!(run.superseded_by, Some(newest));
    assert_eq!(
        store.get_run(applying).await.unwrap().status,
        RunStatus::Applying
    );
    assert_eq!(
        store.get_run(other_scope).await.unwrap().status,
        RunStatus::AwaitingApproval
    );
    assert_eq!(
        store.get_run(newest).await.unwrap().status,
        RunStatus::AwaitingApproval
    );
    assert_eq!(
        store.count_runs_by_status().await.unwrap(),
        [
            (RunStatus::Applying, 1),
            (RunStatus::AwaitingApproval, 2),
            (RunStatus::Superseded, 2)
        ]
    );
    let applying_runs = store.runs_in_status(RunStatus::Applying).await.unwrap();
    assert_eq!(applying_runs.len(), 1);
    assert_eq!(applying_runs[0].id, applying);
}

async fn waiting_runs_should_expire_at_their_deadline(store: Store, _url: String) {
    let mut run = new_run("default", "c1", RunStatus::AwaitingApproval, 1);
    run.expires_at = Some(at(100));
    let id = store.insert_run(&run, "ctl", at(0)).await.unwrap();
    assert!(store.expire_runs("ctl", at(99)).await.unwrap().is_empty());
    assert_eq!(store.expire_runs("ctl", at(100)).await.unwrap(), [id]);
    assert_eq!(store.get_run(id).await.unwrap().status, RunStatus::Expired);
}

async fn action_updates_should_be_conditional_and_count_attempts(store: Store, _url: String) {
    let id = store
        .insert_run(
            &new_run("default", "c1", RunStatus::Approved, 0),
            "ctl",
            at(0),
        )
        .await
        .unwrap();
    let action = store.list_actions(id).await.unwrap()[0].clone();
    let none = ActionUpdate::default();
    assert!(
        store
            .transition_action(
                action.id,
                ActionStatus::Pending,
                ActionStatus::Running,
                &none,
                None,
                at(1)
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .transition_action(
                action.id,
                ActionStatus::Pending,
                ActionStatus::Running,
                &none,
                None,
                at(1)
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .set_action_external_ref(action.id, "UPID:pve1:0001", at(2))
            .await
            .unwrap()
    );
    let retry = ActionUpdate {
        error: Some("timeout talking to pve1".to_owned()),
        external_ref: None,
    };
    assert!(
        store
            .transition_action(
                action.id,
                ActionStatus::Running,
                ActionStatus::Pending,
                &retry,
                None,
                at(3)
            )
            .await
            .unwrap()
    );
    store
        .transition_action(
            action.id,
            ActionStatus::Pending,
            ActionStatus::Running,
            &none,
            None,
            at(4),
        )
        .await
        .unwrap();
    store
        .transition_action(
            action.id,
            ActionStatus::Running,
            ActionStatus::Succeeded,
            &none,
            None,
            at(5),
        )
        .await
        .unwrap();
    let got = store.get_action(action.id).await.unwrap();
    assert_eq!(got.status, ActionStatus::Succeeded);
    assert_eq!(got.attempts, 2);
    assert_eq!(got.started_at, Some(at(1)));
    assert_eq!(got.finished_at, Some(at(5)));
    assert_eq!(got.last_error.as_deref(), Some("timeout talking to pve1"));
    assert_eq!(got.external_ref.as_deref(), Some("UPID:pve1:0001"));
    let err = store
        .transition_action(
            action.id,
            ActionStatus::Succeeded,
            ActionStatus::Running,
            &none,
            None,
            at(6),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IllegalActionTransition { .. }));
}

async fn every_run_change_should_land_in_a_verifiable_audit_chain(store: Store, _url: String) {
    let id = store
        .insert_run(
            &new_run("default", "c1", RunStatus::AwaitingApproval, 1),
            "ctl",
            at(0),
        )
        .await
        .unwrap();
    store
        .record_decision(id, "bob", "hash-c1", Decision::Approve, None, at(1))
        .await
        .unwrap();
    store.claim_run(id, "ctl", None, at(2)).await.unwrap();
    store
        .append_audit(
            &NewAuditEntry {
                actor: "alice".to_owned(),
                event: "custom".to_owned(),
                subject: "thing/1".to_owned(),
                details: json!({"z": 1, "a": [1.5, "x"], "nested": {"b": null}}),
            },
            at(3),
        )
        .await
        .unwrap();
    let page = store.list_audit(None, 2).await.unwrap();
    assert_eq!(page.entries.len(), 2);
    assert_eq!(page.entries[0].event, "custom");
    assert_eq!(
        page.entries[0].details,
        json!({"z": 1, "a": [1.5, "x"], "nested": {"b": null}})
    );
    let rest = store.list_audit(page.next_cursor, 100).await.unwrap();
    let events: Vec<_> = rest.entries.iter().map(|e| e.event.as_str()).collect();
    // newest first, after the custom entry and the claim: the approved state change, the
    // approval itself, the creation
    assert_eq!(events, ["run.status", "run.approved_by", "run.created"]);
    assert_eq!(page.entries[1].prev_hash, rest.entries[0].hash);
    assert_eq!(rest.entries.last().unwrap().seq, 1);
    assert_eq!(rest.next_cursor, None);
    for pair in rest.entries.windows(2) {
        assert_eq!(pair[0].prev_hash, pair[1].hash);
    }
    let report = store.verify_audit().await.unwrap();
    assert_eq!(report.checked, 5);
    assert_eq!(report.failure, None);
}

async fn users_should_lock_after_failures_and_unlock_later(store: Store, _url: String) {
    let hash = hash_password("correct horse").unwrap();
    assert!(verify_password("correct horse", &hash));
    assert!(!verify_password("wrong", &hash));
    assert!(hash.starts_with("$argon2id$"));
    let user = store
        .create_user("alice", &hash, Role::Operator, "cli", at(0))
        .await
        .unwrap();
    assert_eq!(user.role, Role::Operator);
    assert!(!user.disabled);
    let dup = store
        .create_user("alice", &hash, Role::Admin, "cli", at(0))
        .await
        .unwrap_err();
    assert!(dup.is_unique_violation(), "{dup}");
    for i in 1..=4 {
        let u = store
            .count_login_attempt("alice", 5, at(900), at(i))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(u.failed_logins, i);
        assert!(!u.is_locked(at(i)));
    }
    let locked = store
        .count_login_attempt("alice", 5, at(905), at(5))
        .await
        .unwrap()
        .unwrap();
    assert!(locked.is_locked(at(5)));
    assert_eq!(locked.locked_until, Some(at(905)));
    assert!(!locked.is_locked(at(905)));
    // While locked, no attempt is admitted, and none is counted.
    assert!(
        store
            .count_login_attempt("alice", 5, at(2000), at(904))
            .await
            .unwrap()
            .is_none()
    );
    // After the lock expired, one more attempt starts a fresh count instead of relocking.
    let fresh = store
        .count_login_attempt("alice", 5, at(2000), at(1000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fresh.failed_logins, 1);
    assert!(!fresh.is_locked(at(1000)));
    store.reset_failed_logins(user.id, at(1001)).await.unwrap();
    let u = store.get_user(user.id).await.unwrap();
    assert_eq!((u.failed_logins, u.locked_until), (0, None));
    assert!(
        store
            .set_user_disabled("alice", true, "admin", at(1002))
            .await
            .unwrap()
    );
    assert!(store.get_user_by_name("alice").await.unwrap().disabled);
    assert!(
        !store
            .set_user_disabled("nobody", true, "admin", at(1002))
            .await
            .unwrap()
    );
    store
        .create_user("bob", &hash, Role::Viewer, "cli", at(0))
        .await
        .unwrap();
    let names: Vec<_> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(
        store
            .count_login_attempt("nobody", 5, at(1), at(1))
            .await
            .unwrap()
            .is_none()
    );
}

async fn refresh_tokens_should_rotate_and_revoke_the_family_on_reuse(store: Store, _url: String) {
    let user = store
        .create_user("alice", "x", Role::Viewer, "cli", at(0))
        .await
        .unwrap();
    let t1 = hash_token("token-1");
    store
        .insert_refresh_token(&t1, user.id, "fam-1", at(600), at(0))
        .await
        .unwrap();
    let t2 = hash_token("token-2");
    let RotateOutcome::Rotated(new) = store
        .rotate_refresh_token(&t1, &t2, at(700), at(10))
        .await
        .unwrap()
    else {
        panic!("first use should rotate");
    };
    assert_eq!(new.family, "fam-1");
    assert!(!new.revoked);
    // Reusing the rotated token is theft: the whole family is revoked.
    let reuse = store
        .rotate_refresh_token(&t1, &hash_token("token-3"), at(800), at(20))
        .await
        .unwrap();
    assert_eq!(
        reuse,
        RotateOutcome::Reused {
            family: "fam-1".to_owned(),
            user_id: user.id
        }
    );
    assert!(
        store
            .find_refresh_token(&t2)
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    assert_eq!(
        store
            .rotate_refresh_token("unknown", "x", at(1), at(1))
            .await
            .unwrap(),
        RotateOutcome::Unknown
    );
    let t4 = hash_token("token-4");
    store
        .insert_refresh_token(&t4, user.id, "fam-2", at(50), at(0))
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate_refresh_token(&t4, "t5", at(99), at(50))
            .await
            .unwrap(),
        RotateOutcome::Expired
    );
    assert_eq!(store.revoke_refresh_family("fam-2").await.unwrap(), 1);
    assert_eq!(store.revoke_user_refresh_tokens(user.id).await.unwrap(), 0);
}

async fn api_keys_should_be_found_by_hash_until_revoked(store: Store, _url: String) {
    let hash = hash_token("mpk_secret");
    let key = store
        .create_api_key(
            "gateway",
            &hash,
            &[Scope::Ingest, Scope::Read],
            Some(&["fm-2".to_owned(), "fm-1".to_owned(), "fm-2".to_owned()]),
            "admin",
            at(0),
        )
        .await
        .unwrap();
    assert_eq!(key.scopes, [Scope::Read, Scope::Ingest]);
    assert_eq!(
        key.devices.as_deref(),
        Some(&["fm-1".to_owned(), "fm-2".to_owned()][..]),
        "devices are kept sorted, once each"
    );
    let found = store.find_api_key_by_hash(&hash).await.unwrap().unwrap();
    assert_eq!(found.id, key.id);
    assert_eq!(found.devices, key.devices, "the device scope is read back");
    assert_eq!(found.last_used_at, None);
    store.touch_api_key(key.id, at(5)).await.unwrap();
    assert_eq!(
        store
            .find_api_key_by_hash(&hash)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(at(5))
    );
    assert!(store.revoke_api_key(key.id, "admin", at(6)).await.unwrap());
    assert!(!store.revoke_api_key(key.id, "admin", at(7)).await.unwrap());
    assert_eq!(store.find_api_key_by_hash(&hash).await.unwrap(), None);
    let all = store.list_api_keys().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].revoked_at, Some(at(6)));
}

async fn config_objects_should_upsert_and_remove(store: Store, _url: String) {
    let spec = json!({"device": "fm-1", "register": "flow_rate", "condition": {"below": 2.0}});
    store
        .upsert_config_object(ConfigKind::AlertRule, "low-flow", &spec, "h1", "c1", at(0))
        .await
        .unwrap();
    let spec2 = json!({"device": "fm-1", "register": "flow_rate", "condition": {"below": 3.0}});
    store
        .upsert_config_object(ConfigKind::AlertRule, "low-flow", &spec2, "h2", "c2", at(1))
        .await
        .unwrap();
    store
        .upsert_config_object(
            ConfigKind::NotificationChannel,
            "ops",
            &json!({}),
            "h3",
            "c2",
            at(1),
        )
        .await
        .unwrap();
    let rules = store
        .list_config_objects(ConfigKind::AlertRule)
        .await
        .unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].spec, spec2);
    assert_eq!(rules[0].spec_hash, "h2");
    assert_eq!(rules[0].commit_sha, "c2");
    assert!(
        store
            .remove_config_object(ConfigKind::AlertRule, "low-flow")
            .await
            .unwrap()
    );
    assert!(
        store
            .list_config_objects(ConfigKind::AlertRule)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .list_config_objects(ConfigKind::NotificationChannel)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn settings_should_be_overwritten(store: Store, _url: String) {
    assert_eq!(store.get_setting("last_commit").await.unwrap(), None);
    store.set_setting("last_commit", "c1", at(0)).await.unwrap();
    store.set_setting("last_commit", "c2", at(1)).await.unwrap();
    assert_eq!(
        store.get_setting("last_commit").await.unwrap().as_deref(),
        Some("c2")
    );
}

async fn owned_keys_should_be_recorded_per_guest_replaced_and_forgotten(
    store: Store,
    _url: String,
) {
    let keys = |list: &[&str]| {
        list.iter()
            .map(|k| k.to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    store
        .record_owned_keys("home", 120, &keys(&["cores", "memory", "vga"]), at(0))
        .await
        .unwrap();
    store
        .record_owned_keys("home", 121, &keys(&["rootfs"]), at(0))
        .await
        .unwrap();
    store
        .record_owned_keys("other", 120, &keys(&["net0"]), at(0))
        .await
        .unwrap();
    store
        .record_owned_keys("home", 120, &keys(&["cores", "memory"]), at(1))
        .await
        .unwrap();
    let home = store.owned_keys("home").await.unwrap();
    assert_eq!(home.len(), 2);
    assert_eq!(home[&120], keys(&["cores", "memory"]));
    assert_eq!(home[&121], keys(&["rootfs"]));
    store.forget_owned_keys("home", 121).await.unwrap();
    assert_eq!(store.owned_keys("home").await.unwrap().len(), 1);
    assert_eq!(
        store.owned_keys("other").await.unwrap()[&120],
        keys(&["net0"])
    );
}

async fn guest_reads_should_be_recorded_per_cluster_replaced_and_forgotten(
    store: Store,
    _url: String,
) {
    let read = |cluster: &str, vmid: u32, spec: &str, uptime: Option<u64>| GuestRead {
        cluster: cluster.to_owned(),
        vmid,
        spec: spec.to_owned(),
        summary: "s1".to_owned(),
        uptime,
        read_at: at(0),
        due_at: at(600),
        config: json!({"config": {"cores": "2"}, "digest": "d1", "pending": {}}),
    };
    store
        .record_guest_reads(&[
            read("https://a:8006", 120, "f1", Some(1000)),
            read("https://a:8006", 121, "f1", None),
            read("https://b:8006", 120, "f9", Some(u64::MAX)),
        ])
        .await
        .unwrap();
    store
        .record_guest_reads(&[read("https://a:8006", 120, "f2", Some(5))])
        .await
        .unwrap();
    store.record_guest_reads(&[]).await.unwrap();
    let mut a = store.guest_reads("https://a:8006").await.unwrap();
    a.sort_by_key(|r| r.vmid);
    assert_eq!(
        a,
        [
            read("https://a:8006", 120, "f2", Some(5)),
            read("https://a:8006", 121, "f1", None)
        ]
    );
    let b = store.guest_reads("https://b:8006").await.unwrap();
    assert_eq!(b[0].uptime, Some(i64::MAX as u64), "clamped, not wrapped");
    store
        .forget_guest_read("https://a:8006", 120)
        .await
        .unwrap();
    let a = store.guest_reads("https://a:8006").await.unwrap();
    assert_eq!(a.iter().map(|r| r.vmid).collect::<Vec<_>>(), [121]);
}

async fn a_lease_should_have_one_holder_until_it_expires(store: Store, _url: String) {
    assert!(
        store
            .try_acquire_lease("reconcile", "a", at(30), at(0))
            .await
            .unwrap()
    );
    assert!(
        !store
            .try_acquire_lease("reconcile", "b", at(40), at(10))
            .await
            .unwrap()
    );
    assert!(
        store
            .try_acquire_lease("reconcile", "a", at(50), at(20))
            .await
            .unwrap()
    );
    assert_eq!(
        store.lease_holder("reconcile").await.unwrap(),
        Some(("a".to_owned(), at(50)))
    );
    assert!(
        !store
            .try_acquire_lease("reconcile", "b", at(80), at(49))
            .await
            .unwrap()
    );
    assert!(
        store
            .try_acquire_lease("reconcile", "b", at(80), at(50))
            .await
            .unwrap()
    );
    assert!(!store.release_lease("reconcile", "a").await.unwrap());
    assert!(store.release_lease("reconcile", "b").await.unwrap());
    assert!(
        store
            .try_acquire_lease("reconcile", "a", at(90), at(60))
            .await
            .unwrap()
    );
}

async fn a_fenced_transition_should_fail_once_another_holder_takes_the_lease(
    store: Store,
    _url: String,
) {
    let lease = "reconcile:site";
    let a = store
        .acquire_fence(lease, "a", at(30), at(0))
        .await
        .unwrap()
        .expect("a free lease is taken");
    let again = store
        .acquire_fence(lease, "a", at(40), at(10))
        .await
        .unwrap();
    assert_eq!(again.as_ref(), Some(&a), "renewing keeps the epoch");
    let id = store
        .insert_run(&new_run("site", "c1", RunStatus::Approved, 0), "ctl", at(1))
        .await
        .unwrap();
    assert!(store.claim_run(id, "ctl", Some(&a), at(2)).await.unwrap());
    let actions = store.list_actions(id).await.unwrap();
    let none = ActionUpdate::default();
    assert!(
        store
            .transition_action(
                actions[0].id,
                ActionStatus::Pending,
                ActionStatus::Running,
                &none,
                Some(&a),
                at(3),
            )
            .await
            .unwrap()
    );

    // The lease runs out at 40 and b takes it: a new epoch.
    assert!(store.renew_fence(&a, at(45), at(20)).await.unwrap());
    let b = store
        .acquire_fence(lease, "b", at(90), at(45))
        .await
        .unwrap()
        .expect("an expired lease is taken");
    assert_eq!(b.epoch, a.epoch + 1);

    // Nothing a writes under its old fence takes effect, and it is told why.
    for (row, from, to) in [
        (&actions[0], ActionStatus::Running, ActionStatus::Succeeded),
        (&actions[1], ActionStatus::Pending, ActionStatus::Running),
    ] {
        let err = store
            .transition_action(row.id, from, to, &none, Some(&a), at(50))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Fenced { lease: l, epoch } if l == lease && *epoch == a.epoch),
            "{err:?}"
        );
    }
    let err = store
        .transition_run_fenced(
            id,
            RunStatus::Applying,
            RunStatus::Succeeded,
            "ctl",
            None,
            Some(&a),
            at(50),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err:?}");
    assert!(!store.renew_fence(&a, at(99), at(50)).await.unwrap());
    let now = store.list_actions(id).await.unwrap();
    assert_eq!(now[0].status, ActionStatus::Running);
    assert_eq!(now[1].status, ActionStatus::Pending);
    assert_eq!(store.get_run(id).await.unwrap().status, RunStatus::Applying);

    // The holder's fence works, and a lease that ran out is never renewed, only retaken.
    assert!(
        store
            .transition_action(
                now[0].id,
                ActionStatus::Running,
                ActionStatus::Failed,
                &none,
                Some(&b),
                at(51),
            )
            .await
            .unwrap()
    );
    assert!(!store.renew_fence(&b, at(200), at(95)).await.unwrap());

    // Releasing keeps the epoch rising; taking the lease by the advisory-lock holder too.
    let b = store
        .acquire_fence(lease, "b", at(120), at(100))
        .await
        .unwrap()
        .unwrap();
    assert!(store.release_lease(lease, "b").await.unwrap());
    assert_eq!(store.lease_holder(lease).await.unwrap(), None);
    let c = store
        .acquire_fence(lease, "b", at(130), at(101))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        c.epoch,
        b.epoch + 1,
        "a released lease retaken is a new epoch"
    );
    let d = store
        .seize_fence(lease, "d", at(140), at(102))
        .await
        .unwrap();
    assert_eq!(d.epoch, c.epoch + 1);
    assert_eq!(
        store
            .seize_fence(lease, "d", at(150), at(103))
            .await
            .unwrap(),
        d
    );
    assert!(!store.fence_holds(&c, at(104)).await.unwrap());
    assert!(store.fence_holds(&d, at(104)).await.unwrap());
}

async fn advisory_leadership_should_have_one_holder_on_postgres(store: Store, _url: String) {
    let first = store.try_advisory_leadership(42).await.unwrap();
    if store.backend_name() == "sqlite" {
        assert!(first.is_none());
        return;
    }
    let mut first = first.expect("the first contender takes the lock");
    assert!(first.is_alive().await);
    assert!(store.try_advisory_leadership(42).await.unwrap().is_none());
    first.release().await.unwrap();
    let second = store.try_advisory_leadership(42).await.unwrap();
    assert!(second.is_some());
    // A holder that dies without releasing (dropped connection) loses the lock as soon as
    // the server sees the session end.
    drop(second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if store.try_advisory_leadership(42).await.unwrap().is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lock still held 10 s after its holder's connection was dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn devices_should_go_offline_after_consecutive_failures(store: Store, _url: String) {
    store.ensure_device("fm-1", at(0)).await.unwrap();
    assert!(!store.get_device("fm-1").await.unwrap().online);
    let d = store.record_device_seen("fm-1", at(1)).await.unwrap();
    assert!(d.online);
    assert_eq!(d.last_seen, Some(at(1)));
    for i in 1..=2 {
        let d = store
            .record_device_failure("fm-1", "timeout", 3, at(1 + i))
            .await
            .unwrap();
        assert!(d.online, "still online after {i} failures");
    }
    let d = store
        .record_device_failure("fm-1", "timeout", 3, at(4))
        .await
        .unwrap();
    assert!(!d.online);
    assert_eq!(d.consecutive_failures, 3);
    assert_eq!(d.last_error.as_deref(), Some("timeout"));
    let d = store.record_device_seen("fm-1", at(5)).await.unwrap();
    assert!(d.online);
    assert_eq!(d.consecutive_failures, 0);
    let unknown = store
        .record_device_failure("fm-2", "refused", 1, at(6))
        .await
        .unwrap();
    assert!(!unknown.online);
    let names: Vec<_> = store
        .list_devices()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["fm-1", "fm-2"]);
}

async fn touching_devices_seen_should_skip_devices_with_a_failure_since(
    store: Store,
    _url: String,
) {
    store.record_device_seen("fm-1", at(1)).await.unwrap();
    store.record_device_seen("fm-2", at(1)).await.unwrap();
    store.ensure_device("fm-3", at(1)).await.unwrap();
    store
        .record_device_failure("fm-2", "timeout", 3, at(2))
        .await
        .unwrap();
    let names = ["fm-1", "fm-2", "fm-3", "unknown"].map(str::to_owned);
    assert_eq!(store.touch_devices_seen(&names, at(5)).await.unwrap(), 1);
    assert_eq!(
        store.get_device("fm-1").await.unwrap().last_seen,
        Some(at(5))
    );
    let failed = store.get_device("fm-2").await.unwrap();
    assert_eq!(failed.last_seen, Some(at(1)));
    assert_eq!(failed.consecutive_failures, 1);
    assert_eq!(store.get_device("fm-3").await.unwrap().last_seen, None);
    assert_eq!(store.touch_devices_seen(&[], at(6)).await.unwrap(), 0);
}

async fn only_a_pending_alert_should_be_discarded(store: Store, _url: String) {
    let (pending, _) = store
        .open_alert(
            "low-flow",
            "fm-1",
            AlertState::Pending,
            "warning",
            Some(1.0),
            at(1),
        )
        .await
        .unwrap();
    let (firing, _) = store
        .open_alert(
            "high-temp",
            "fm-1",
            AlertState::Firing,
            "critical",
            Some(90.0),
            at(1),
        )
        .await
        .unwrap();
    assert!(store.discard_pending_alert(pending.id).await.unwrap());
    assert!(!store.discard_pending_alert(pending.id).await.unwrap());
    assert!(!store.discard_pending_alert(firing.id).await.unwrap());
    assert_eq!(
        store.get_open_alert("low-flow", "fm-1").await.unwrap(),
        None
    );
    // The rule may open a new pending alert on the device afterwards.
    let (again, created) = store
        .open_alert(
            "low-flow",
            "fm-1",
            AlertState::Pending,
            "warning",
            Some(1.5),
            at(2),
        )
        .await
        .unwrap();
    assert!(created);
    assert_ne!(again.id, pending.id);
}

fn reading(device: &str, register: &str, s: i64, value: f64) -> Reading {
    Reading {
        device: device.to_owned(),
        register: register.to_owned(),
        time: at(s),
        value,
    }
}

async fn readings_should_be_stored_in_batches_and_queried(store: Store, _url: String) {
    // 2500 readings cross the SQLite chunk size twice.
    let mut batch = Vec::new();
    for s in 0..2500 {
        batch.push(reading("fm-1", "flow_rate", s, s as f64));
    }
    batch.push(reading("fm-1", "status", 10, 1.0));
    batch.push(reading("fm-2", "flow_rate", 20, 7.0));
    assert_eq!(store.insert_readings(&batch).await.unwrap(), 2502);
    // A duplicate is ignored; an older value does not replace the latest.
    assert_eq!(
        store
            .insert_readings(&[
                reading("fm-1", "flow_rate", 5, 99.0),
                reading("fm-1", "status", 3, 0.0)
            ])
            .await
            .unwrap(),
        1
    );
    let range = store
        .query_readings("fm-1", "flow_rate", at(100), at(105), 100)
        .await
        .unwrap();
    let values: Vec<f64> = range.iter().map(|r| r.value).collect();
    assert_eq!(values, [100.0, 101.0, 102.0, 103.0, 104.0]);
    assert_eq!(range[0].time, at(100));
    let limited = store
        .query_readings("fm-1", "flow_rate", at(0), at(5000), 3)
        .await
        .unwrap();
    assert_eq!(limited.len(), 3);
    let latest = store.latest_readings("fm-1").await.unwrap();
    assert_eq!(latest.len(), 2);
    assert_eq!(latest[0].register, "flow_rate");
    assert_eq!((latest[0].time, latest[0].value), (at(2499), 2499.0));
    assert_eq!(
        (latest[1].register.as_str(), latest[1].value),
        ("status", 1.0)
    );
    let buckets = store
        .summarize_readings(
            "fm-1",
            "flow_rate",
            at(0),
            at(300),
            Duration::from_secs(100),
        )
        .await
        .unwrap();
    assert_eq!(buckets.len(), 3);
    assert_eq!(buckets[1].start, at(100));
    assert_eq!((buckets[1].min, buckets[1].max), (100.0, 199.0));
    assert_eq!(buckets[1].count, 100);
    assert!((buckets[1].avg - 149.5).abs() < 1e-9);
    // Retention deletes in small batches until nothing older than the cutoff is left.
    let mut total = 0;
    loop {
        let n = store.delete_readings_before(at(1000), 300).await.unwrap();
        assert!(n <= 300);
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, 1000 + 2 + 1);
    let left = store
        .query_readings("fm-1", "flow_rate", at(0), at(5000), 10_000)
        .await
        .unwrap();
    assert_eq!(left.len(), 1500);
    assert_eq!(left[0].time, at(1000));
}

async fn reading_values_should_round_trip_exactly(store: Store, _url: String) {
    // Sensor-range values must come back bit for bit. (SQLite parses the batch's JSON with
    // its own float parser: values near the underflow limit, like 1e-300, may differ in the
    // last bit there, and -0.0 reads back as 0.0; see store/readings.rs.)
    let mut values = vec![
        0.1,
        123_456.789_012_345_67,
        -2.5e17,
        1.0 / 3.0,
        1e-9,
        6.02e23,
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..2000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mantissa = state & ((1 << 52) - 1);
        let exponent = 1023 - 40 + (state >> 52) % 80; // about 1e-12 .. 1e12
        let sign = (state >> 63) << 63;
        values.push(f64::from_bits(sign | (exponent << 52) | mantissa));
    }
    let batch: Vec<Reading> = values
        .iter()
        .enumerate()
        .map(|(i, v)| reading("fm-1", "x", i as i64, *v))
        .collect();
    store.insert_readings(&batch).await.unwrap();
    let got = store
        .query_readings("fm-1", "x", at(0), at(10_000), 10_000)
        .await
        .unwrap();
    assert_eq!(got.len(), values.len());
    for (r, want) in got.iter().zip(&values) {
        assert_eq!(r.value.to_bits(), want.to_bits(), "{} != {want}", r.value);
    }
    let odd = "we\"ird\\dev'ice \u{e9}";
    store
        .insert_readings(&[reading(odd, "r'); --", 1, 4.5)])
        .await
        .unwrap();
    let latest = store.latest_readings(odd).await.unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(
        (latest[0].register.as_str(), latest[0].value),
        ("r'); --", 4.5)
    );
    let err = store
        .insert_readings(&[reading("fm-1", "x", 50_000, f64::NAN)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err}");
}

async fn one_alert_should_stay_open_per_rule_and_device(store: Store, _url: String) {
    let (alert, created) = store
        .open_alert(
            "low-flow",
            "fm-1",
            AlertState::Pending,
            "warning",
            Some(1.5),
            at(0),
        )
        .await
        .unwrap();
    assert!(created);
    let (same, created_again) = store
        .open_alert(
            "low-flow",
            "fm-1",
            AlertState::Pending,
            "warning",
            Some(1.4),
            at(1),
        )
        .await
        .unwrap();
    assert!(!created_again);
    assert_eq!(same.id, alert.id);
    assert!(
        store
            .transition_alert(
                alert.id,
                AlertState::Pending,
                AlertState::Firing,
                Some(1.2),
                at(300)
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .transition_alert(
                alert.id,
                AlertState::Pending,
                AlertState::Firing,
                None,
                at(301)
            )
            .await
            .unwrap()
    );
    assert!(store.ack_alert(alert.id, "bob", at(310)).await.unwrap());
    assert!(!store.ack_alert(alert.id, "carol", at(311)).await.unwrap());
    let firing = store
        .list_alerts(Some(AlertState::Firing), 10)
        .await
        .unwrap();
    assert_eq!(firing.len(), 1);
    assert_eq!(firing[0].firing_at, Some(at(300)));
    assert_eq!(firing[0].acknowledged_by.as_deref(), Some("bob"));
    assert_eq!(firing[0].value, Some(1.2));
    assert!(
        store
            .transition_alert(
                alert.id,
                AlertState::Firing,
                AlertState::Resolved,
                Some(2.5),
                at(400)
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_open_alert("low-flow", "fm-1").await.unwrap(),
        None
    );
    let (next, created) = store
        .open_alert(
            "low-flow",
            "fm-1",
            AlertState::Firing,
            "warning",
            None,
            at(500),
        )
        .await
        .unwrap();
    assert!(created);
    assert_ne!(next.id, alert.id);
    assert_eq!(next.firing_at, Some(at(500)));
    assert_eq!(store.list_alerts(None, 10).await.unwrap().len(), 2);

    for (attempt, status, code) in [
        (1, DeliveryStatus::Retrying, Some(503)),
        (2, DeliveryStatus::Retrying, None),
        (3, DeliveryStatus::Succeeded, Some(200)),
    ] {
        store
            .record_delivery(
                &NewDelivery {
                    alert_id: alert.id,
                    channel: "ops".to_owned(),
                    event: "firing".to_owned(),
                    attempt,
                    status,
                    response_code: code,
                    error: code.is_none().then(|| "connection refused".to_owned()),
                    next_attempt_at: (status == DeliveryStatus::Retrying).then(|| at(600)),
                },
                at(500 + attempt),
            )
            .await
            .unwrap();
    }
    // Only the newest attempt of a (alert, channel, event) counts; it succeeded.
    assert!(store.due_deliveries(at(700), 10).await.unwrap().is_empty());
    store
        .record_delivery(
            &NewDelivery {
                alert_id: next.id,
                channel: "ops".to_owned(),
                event: "firing".to_owned(),
                attempt: 1,
                status: DeliveryStatus::Retrying,
                response_code: Some(500),
                error: None,
                next_attempt_at: Some(at(650)),
            },
            at(640),
        )
        .await
        .unwrap();
    assert!(store.due_deliveries(at(649), 10).await.unwrap().is_empty());
    let due = store.due_deliveries(at(650), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].alert_id, next.id);
    let deliveries = store.list_deliveries(alert.id).await.unwrap();
    let attempts: Vec<_> = deliveries.iter().map(|d| (d.attempt, d.status)).collect();
    assert_eq!(
        attempts,
        [
            (1, DeliveryStatus::Retrying),
            (2, DeliveryStatus::Retrying),
            (3, DeliveryStatus::Succeeded)
        ]
    );
}

async fn an_alert_change_should_queue_its_notifications_once_in_the_same_transaction(
    store: Store,
    _url: String,
) {
    let ops = ["ops".to_owned(), "pager".to_owned()];
    let (alert, created) = store
        .open_alert_notifying(
            "low-flow",
            "fm-1",
            AlertState::Pending,
            "warning",
            Some(1.5),
            at(0),
            &ops,
        )
        .await
        .unwrap();
    assert!(created);
    // A pending alert notifies nobody.
    assert!(store.list_deliveries(alert.id).await.unwrap().is_empty());
    assert!(
        store
            .transition_alert_notifying(
                alert.id,
                AlertState::Pending,
                AlertState::Firing,
                Some(1.2),
                at(10),
                &ops,
            )
            .await
            .unwrap()
    );
    // The same transition again does not take effect and queues nothing more.
    assert!(
        !store
            .transition_alert_notifying(
                alert.id,
                AlertState::Pending,
                AlertState::Firing,
                Some(1.2),
                at(11),
                &ops,
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .queue_notification(alert.id, "ops", "firing", at(12))
            .await
            .unwrap()
    );
    let queued: Vec<(String, String, i64, DeliveryStatus)> = store
        .list_deliveries(alert.id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.channel, d.event, d.attempt, d.status))
        .collect();
    assert_eq!(
        queued,
        [
            ("ops".into(), "firing".into(), 0, DeliveryStatus::Queued),
            ("pager".into(), "firing".into(), 0, DeliveryStatus::Queued),
        ]
    );
    // Queued deliveries are due at once; an attempt recorded after one replaces it.
    assert!(store.due_deliveries(at(9), 10).await.unwrap().is_empty());
    assert_eq!(store.due_deliveries(at(10), 10).await.unwrap().len(), 2);
    store
        .record_delivery(
            &NewDelivery {
                alert_id: alert.id,
                channel: "ops".to_owned(),
                event: "firing".to_owned(),
                attempt: 1,
                status: DeliveryStatus::Succeeded,
                response_code: Some(200),
                error: None,
                next_attempt_at: None,
            },
            at(13),
        )
        .await
        .unwrap();
    let due = store.due_deliveries(at(20), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].channel.as_str(), due[0].attempt), ("pager", 0));
    let latest = store
        .latest_delivery(alert.id, "ops", "firing")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (latest.attempt, latest.status),
        (1, DeliveryStatus::Succeeded)
    );
    // Resolving queues the resolution; opening straight into firing queues at once.
    assert!(
        store
            .transition_alert_notifying(
                alert.id,
                AlertState::Firing,
                AlertState::Resolved,
                Some(2.6),
                at(30),
                &ops[..1],
            )
            .await
            .unwrap()
    );
    let (other, _) = store
        .open_alert_notifying(
            "high-flow",
            "fm-1",
            AlertState::Firing,
            "critical",
            Some(9.0),
            at(31),
            &ops[..1],
        )
        .await
        .unwrap();
    let mut due: Vec<(i64, String, String)> = store
        .due_deliveries(at(40), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.alert_id, d.channel, d.event))
        .collect();
    due.sort();
    let mut expected = vec![
        (alert.id, "pager".to_owned(), "firing".to_owned()),
        (alert.id, "ops".to_owned(), "resolved".to_owned()),
        (other.id, "ops".to_owned(), "firing".to_owned()),
    ];
    expected.sort();
    assert_eq!(due, expected);
}

async fn a_delivery_attempt_should_be_claimed_once_and_finished_in_place(
    store: Store,
    _url: String,
) {
    let (alert, _) = store
        .open_alert_notifying(
            "low-flow",
            "fm-1",
            AlertState::Firing,
            "warning",
            Some(1.0),
            at(0),
            &["ops".to_owned()],
        )
        .await
        .unwrap();
    let claim = store
        .claim_delivery(alert.id, "ops", "firing", 1, at(30), at(1))
        .await
        .unwrap()
        .expect("the first claim wins");
    assert_eq!(
        store
            .claim_delivery(alert.id, "ops", "firing", 1, at(30), at(2))
            .await
            .unwrap(),
        None,
        "a second notifier gets no claim"
    );
    // Under way: not due until the claim's deadline.
    assert!(store.due_deliveries(at(29), 10).await.unwrap().is_empty());
    assert_eq!(store.due_deliveries(at(30), 10).await.unwrap().len(), 1);
    store
        .finish_delivery(
            claim,
            &NewDelivery {
                alert_id: alert.id,
                channel: "ops".to_owned(),
                event: "firing".to_owned(),
                attempt: 1,
                status: DeliveryStatus::Succeeded,
                response_code: Some(200),
                error: None,
                next_attempt_at: None,
            },
        )
        .await
        .unwrap();
    assert!(store.due_deliveries(at(100), 10).await.unwrap().is_empty());
    let log: Vec<(i64, DeliveryStatus, Option<i64>)> = store
        .list_deliveries(alert.id)
        .await
        .unwrap()
        .iter()
        .map(|d| (d.attempt, d.status, d.response_code))
        .collect();
    assert_eq!(
        log,
        [
            (0, DeliveryStatus::Queued, None),
            (1, DeliveryStatus::Succeeded, Some(200))
        ]
    );
}

async fn strings_that_look_like_sql_should_be_stored_verbatim(store: Store, _url: String) {
    let evil = "x'); DROP TABLE runs; -- \"$1\" \\ %_";
    let mut run = new_run(evil, evil, RunStatus::AwaitingApproval, 1);
    run.requested_by = Some(evil.to_owned());
    let id = store.insert_run(&run, evil, at(0)).await.unwrap();
    let got = store.get_run(id).await.unwrap();
    assert_eq!(got.scope, evil);
    assert_eq!(got.commit_sha, evil);
    store.set_setting(evil, evil, at(0)).await.unwrap();
    assert_eq!(
        store.get_setting(evil).await.unwrap().as_deref(),
        Some(evil)
    );
    let page = store
        .list_runs(&RunFilter {
            commit: Some("x'); DROP".to_owned()),
            ..RunFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.runs.len(), 1);
    assert_eq!(store.verify_audit().await.unwrap().failure, None);
}

async fn migrations_should_be_idempotent(store: Store, _url: String) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
}

async fn times_should_round_trip_to_the_microsecond(store: Store, _url: String) {
    let precise = t0() + chrono::Duration::nanoseconds(1_234_567_891);
    store.set_setting("k", "v", precise).await.unwrap();
    let id = store
        .insert_run(
            &new_run("default", "c", RunStatus::AwaitingApproval, 1),
            "ctl",
            precise,
        )
        .await
        .unwrap();
    let run = store.get_run(id).await.unwrap();
    assert_eq!(
        run.created_at,
        t0() + chrono::Duration::microseconds(1_234_567)
    );
    assert_eq!(store.verify_audit().await.unwrap().failure, None);
}

on_both_backends!(
    runs_should_round_trip_with_their_actions,
    a_run_should_not_start_in_a_non_initial_state,
    run_transition_should_take_effect_only_from_the_expected_state,
    an_illegal_run_transition_should_be_refused,
    approvals_should_approve_the_run_once_enough_are_in,
    a_rejection_should_reject_the_run,
    list_runs_should_filter_and_page_newest_first,
    a_newer_run_should_supersede_only_waiting_runs_of_its_scope,
    waiting_runs_should_expire_at_their_deadline,
    action_updates_should_be_conditional_and_count_attempts,
    every_run_change_should_land_in_a_verifiable_audit_chain,
    users_should_lock_after_failures_and_unlock_later,
    refresh_tokens_should_rotate_and_revoke_the_family_on_reuse,
    api_keys_should_be_found_by_hash_until_revoked,
    config_objects_should_upsert_and_remove,
    settings_should_be_overwritten,
    owned_keys_should_be_recorded_per_guest_replaced_and_forgotten,
    guest_reads_should_be_recorded_per_cluster_replaced_and_forgotten,
    a_lease_should_have_one_holder_until_it_expires,
    a_fenced_transition_should_fail_once_another_holder_takes_the_lease,
    advisory_leadership_should_have_one_holder_on_postgres,
    devices_should_go_offline_after_consecutive_failures,
    touching_devices_seen_should_skip_devices_with_a_failure_since,
    only_a_pending_alert_should_be_discarded,
    readings_should_be_stored_in_batches_and_queried,
    reading_values_should_round_trip_exactly,
    one_alert_should_stay_open_per_rule_and_device,
    an_alert_change_should_queue_its_notifications_once_in_the_same_transaction,
    a_delivery_attempt_should_be_claimed_once_and_finished_in_place,
    strings_that_look_like_sql_should_be_stored_verbatim,
    migrations_should_be_idempotent,
    times_should_round_trip_to_the_microsecond,
);
