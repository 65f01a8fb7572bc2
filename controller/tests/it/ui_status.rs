//! `GET /api/v1/status`, which the web page's overview reads: the controller status the loop
//! recorded in `Control` (resources counted by sync state), for any reader, and nothing
//! without credentials.

use crate::api_support;

use axum::http::{Method, StatusCode};
use mycopod::control::{ResourceStatus, SyncState, Unobserved};
use mycopod::model::Role;

use api_support::rig;

#[tokio::test]
async fn status_should_show_what_the_loop_recorded_to_a_viewer() {
    let rig = rig().await;
    let viewer = rig.token("vera", Role::Viewer).await;
    rig.control.update_status(|s| {
        s.commit = Some("c0ffee1".into());
        s.last_outcome = Some("waiting run 4".into());
        s.last_fetch_error = Some("fetch origin: connection refused".into());
        s.resources = vec![ResourceStatus {
            kind: "Guest".into(),
            name: "web".into(),
            sync: SyncState::RestartRequired,
            details: vec!["cores: 2 -> 4".into()],
            changed_at: None,
        }];
        s.unobserved = vec![Unobserved {
            resource: "ProxmoxCluster/home".into(),
            reason: "401 authentication failure".into(),
        }];
    });

    let answer = rig
        .call(Method::GET, "/api/v1/status", Some(&viewer), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["commit"], "c0ffee1");
    assert_eq!(answer.body["last_outcome"], "waiting run 4");
    assert_eq!(
        answer.body["last_fetch_error"],
        "fetch origin: connection refused"
    );
    assert_eq!(answer.body["resources"]["restart_required"], 1);
    assert_eq!(
        answer.body["unobserved"],
        serde_json::json!([{
            "resource": "ProxmoxCluster/home",
            "reason": "401 authentication failure"
        }])
    );

    let anonymous = rig.call(Method::GET, "/api/v1/status", None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}
