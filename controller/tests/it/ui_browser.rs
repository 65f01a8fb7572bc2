//! The web page in a real headless Chromium (Debian's `chromium` and `chromium-driver`),
//! driven over WebDriver: an operator signs in, opens the run waiting for approval, reads
//! its diff, approves it, and sees it reach `succeeded` without reloading the page; a viewer
//! sees no Approve button and the API refuses the call anyway; the flow meter's chart is
//! drawn from stored readings; an alert is acknowledged.
//!
//! The server is the real API (`api::app`) on a loopback socket over a real SQLite store,
//! with runs made by the real reconcile against the Proxmox and Modbus simulators; the test
//! plays the reconcile loop's part (it reconciles when the API asks for it).
//!
//! A second test does the operator's part against `mycopod demo` itself (the binary, its
//! simulators and its own reconcile loop): approve the waiting run and watch the demo apply
//! it. (The device chart is checked in the first test: `serve` does not start the telemetry
//! pollers yet, so the demo stores no readings.)
//!
//! With `MYCOPOD_SCREENSHOT_DIR` set, the test also saves screenshots of the main pages there
//! (`docs/screenshots/` is made that way). The tests are `#[ignore]`d: they need Chromium, and
//! fail loudly, naming the packages, when it is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::browser;
use crate::support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use chrono::Utc;
use fantoccini::Locator;
use mycopod::api::{self, ApiSettings, AppState, Clock, RateLimit};
use mycopod::control::{Control, ResourceStatus, SyncState, TriggerRequest, Unobserved};
use mycopod::model::{AlertState, Role, RunStatus, Trigger};
use mycopod::reconcile::observe::LiveWorld;
use mycopod::reconcile::run::{Outcome, RunSettings, reconcile};
use mycopod::store::{Reading, Store, hash_password};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use browser::{Browser, WAIT};
use support::Rig;

const OPERATOR: (&str, &str) = ("olga", "operator password 1");
const VIEWER: (&str, &str) = ("victor", "viewer password 1");
const ADMIN: (&str, &str) = ("ada", "admin password 1");

/// The API on a loopback socket over `store`; returns its base URL, the control handle and
/// the receiver of the reconcile requests the API makes.
async fn serve(store: &Store) -> Result<(String, Control, UnboundedReceiver<TriggerRequest>)> {
    let mut settings = ApiSettings::new(b"browser-test-signing-key-0123456789abcdef")?;
    // Plain HTTP on loopback: cookies without `Secure`, and no rate limit on sign-in.
    settings.auth.secure_cookies = false;
    settings.rate_limits.login = RateLimit::new(Duration::from_millis(1), 1000);
    let (control, triggers) = Control::new(store.events().clone(), Utc::now());
    let state = AppState::with_settings(store.clone(), control.clone(), settings, Clock::system());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind the API")?;
    let addr = listener.local_addr()?;
    let app = api::app(state).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}"), control, triggers))
}

async fn add_user(store: &Store, (name, password): (&str, &str), role: Role) -> Result<()> {
    let phc = hash_password(password).map_err(|e| anyhow::anyhow!("hash a password: {e}"))?;
    store
        .create_user(name, &phc, role, "test", Utc::now())
        .await
        .with_context(|| format!("create user {name}"))?;
    Ok(())
}

async fn reconcile_yaml(
    rig: &Rig,
    world: &LiveWorld,
    commit: &str,
    yaml: &str,
    trigger: Trigger,
) -> Result<Outcome> {
    let loaded = mycopod_specs::load_str("site.yaml", yaml);
    let (outcome, problems) = reconcile(
        &rig.store,
        world,
        &RunSettings::new("site"),
        commit,
        &loaded,
        trigger,
        None,
        Utc::now(),
    )
    .await
    .with_context(|| format!("reconcile {commit}"))?;
    ensure!(problems.is_empty(), "observation problems: {problems:?}");
    Ok(outcome)
}

/// What the reconcile loop would have put in the controller status after reconciling.
fn publish_status(control: &Control, commit: &str, outcome: &str) {
    let now = Utc::now();
    control.update_status(|s| {
        s.scope = Some("file:///srv/site@main".into());
        s.leader = true;
        s.commit = Some(commit.into());
        s.last_fetch_at = Some(now);
        s.last_reconcile_at = Some(now);
        s.last_outcome = Some(outcome.into());
        let resource = |kind: &str, name: &str, sync, details: &[&str]| ResourceStatus {
            kind: kind.into(),
            name: name.into(),
            sync,
            details: details.iter().map(|d| (*d).to_owned()).collect(),
            changed_at: Some(now),
        };
        s.resources = vec![
            resource("Guest", "dns", SyncState::InSync, &[]),
            resource(
                "Guest",
                "web",
                SyncState::OutOfSync,
                &["cores: 2 -> 4 (restart required)"],
            ),
            resource(
                "ModbusDevice",
                "fm-1",
                SyncState::OutOfSync,
                &["setpoints.cutoff: 0.5 -> 0.75"],
            ),
            resource("ProxmoxCluster", "home", SyncState::InSync, &[]),
        ];
    });
}

/// A day of readings of the flow meter, one a minute (what its poller would have stored),
/// and an open low-flow alert on it.
async fn record_telemetry(store: &Store) -> Result<()> {
    let now = Utc::now();
    let mut readings = Vec::new();
    for minute in 0..(24 * 60) {
        let time = now - chrono::Duration::minutes(minute);
        let phase = f64::from(u32::try_from(minute).unwrap_or(0)) / 90.0;
        readings.push(Reading {
            device: "fm-1".into(),
            register: "flow_rate".into(),
            time,
            value: 4.0 + 1.5 * phase.sin() - if minute < 20 { 2.5 } else { 0.0 },
        });
        readings.push(Reading {
            device: "fm-1".into(),
            register: "cutoff".into(),
            time,
            value: 0.75,
        });
    }
    store
        .insert_readings(&readings)
        .await
        .context("store readings")?;
    store
        .record_device_seen("fm-1", now)
        .await
        .context("mark fm-1 seen")?;
    store
        .open_alert(
            "low-flow",
            "fm-1",
            AlertState::Firing,
            "warning",
            Some(1.4),
            now,
        )
        .await
        .context("open an alert")?;
    Ok(())
}

fn screenshot_dir() -> Option<PathBuf> {
    std::env::var_os("MYCOPOD_SCREENSHOT_DIR").map(PathBuf::from)
}

async fn shot(browser: &Browser, name: &str) -> Result<()> {
    if let Some(dir) = screenshot_dir() {
        browser.screenshot(&dir.join(format!("{name}.png"))).await?;
    }
    Ok(())
}

async fn sign_in(browser: &Browser, base: &str, (name, password): (&str, &str)) -> Result<()> {
    browser.client.goto(&format!("{base}/")).await?;
    browser.wait_for("#username").await?.send_keys(name).await?;
    // With the keyboard only: the password, then Enter submits the form.
    browser
        .client
        .find(Locator::Css("#password"))
        .await?
        .send_keys(&format!("{password}\u{E007}"))
        .await?;
    browser.wait_for_text("#account .who", name).await
}

/// Reads a JSON value the page's scripts left on `window`.
async fn page_value(browser: &Browser, expr: &str) -> Result<serde_json::Value> {
    Ok(browser
        .client
        .execute(&format!("return {expr};"), vec![])
        .await?)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs chromium"]
async fn an_operator_should_approve_a_waiting_run_and_watch_it_succeed_while_a_viewer_cannot()
-> Result<()> {
    tokio::time::timeout(Duration::from_secs(240), scenario())
        .await
        .context("the browser scenario did not finish in time")?
}

async fn scenario() -> Result<()> {
    // Fail at once, naming the packages, when Chromium is missing.
    let browser = Browser::start(1280, 900).await?;

    let rig = Rig::start().await;
    // The site as it was: everything created at two cores and a cutoff of 0.75.
    rig.converge_once(&LiveWorld::new(&rig.desired(2), &rig.env), &rig.desired(2))
        .await;
    // The commit under review: four cores (a restart) and a new cutoff (needs approval).
    let world = LiveWorld::new(&rig.desired(4), &rig.env);
    let yaml = rig.yaml(4, 0.5);
    let Outcome::Waiting { run_id } =
        reconcile_yaml(&rig, &world, "c0ffee1", &yaml, Trigger::Webhook).await?
    else {
        bail!("the first commit's run must wait for approval (it writes a setpoint)")
    };
    add_user(&rig.store, OPERATOR, Role::Operator).await?;
    add_user(&rig.store, VIEWER, Role::Viewer).await?;
    add_user(&rig.store, ADMIN, Role::Admin).await?;
    record_telemetry(&rig.store).await?;
    let (base, control, mut triggers) = serve(&rig.store).await?;
    publish_status(&control, "c0ffee1", &format!("waiting run {run_id}"));

    // The operator signs in and finds the waiting run from the overview.
    sign_in(&browser, &base, OPERATOR).await?;
    browser
        .wait_for_text("#ov-waiting + ul", &format!("Run {run_id}"))
        .await?;
    shot(&browser, "overview").await?;
    browser.client.goto(&format!("{base}/#/runs")).await?;
    browser.wait_for("#runs-table").await?;
    shot(&browser, "runs").await?;
    browser
        .client
        .find(Locator::Css(&format!("tr[data-run='{run_id}'] a")))
        .await?
        .click()
        .await?;

    // Its diff: the setpoint write and the guest update with its restart marker.
    browser
        .wait_for_text("#run-status", "awaiting approval")
        .await?;
    browser.wait_for_text("#plan", "setpoints.cutoff").await?;
    browser.wait_for_text("#plan", "cores").await?;
    browser.wait_for_text("#plan", "restart required").await?;
    let shown_hash = page_value(
        &browser,
        "document.querySelector('#decision-hash').getAttribute('title')",
    )
    .await?;
    let run = rig.store.get_run(run_id).await?;
    assert_eq!(
        shown_hash,
        json!(run.plan_hash),
        "the page shows the plan hash"
    );
    shot(&browser, "run-waiting").await?;

    // Approve; the page must not reload from here on.
    browser
        .client
        .execute("window.__sameDocument = true; return null;", vec![])
        .await?;
    browser
        .client
        .find(Locator::Css("#approve"))
        .await?
        .click()
        .await?;
    // The API asks the loop for a reconcile; the test is the loop.
    let request = tokio::time::timeout(WAIT, triggers.recv())
        .await
        .context("the approval did not ask for a reconcile")?
        .context("the trigger channel closed")?;
    // Approving never makes the approver a requester (self-approval is checked against
    // requesters and authors).
    assert_eq!(request.requested_by, None);
    browser.wait_for_text("#run-status", "approved").await?;
    let outcome = reconcile_yaml(&rig, &world, "c0ffee1", &yaml, request.trigger).await?;
    assert_eq!(
        outcome,
        Outcome::Applied {
            run_id,
            status: RunStatus::Succeeded
        }
    );
    browser.wait_for_text("#run-status", "succeeded").await?;
    browser
        .wait_for_text("#plan .action-status", "succeeded")
        .await?;
    assert_eq!(
        page_value(&browser, "window.__sameDocument === true").await?,
        json!(true),
        "the status changed without a reload"
    );
    publish_status(
        &control,
        "c0ffee1",
        &format!("applied run {run_id}: succeeded"),
    );
    shot(&browser, "run-succeeded").await?;
    browser.client.goto(&format!("{base}/#/resources")).await?;
    browser.wait_for_text("main table", "fm-1").await?;
    shot(&browser, "resources").await?;

    // A cluster that stopped answering shows on the overview as a failure, not as in sync.
    control.update_status(|s| {
        s.last_outcome = Some("observation failed".into());
        s.unobserved = vec![Unobserved {
            resource: "ProxmoxCluster/home".into(),
            reason: "401 authentication failure".into(),
        }];
    });
    browser.client.goto(&format!("{base}/#/")).await?;
    browser
        .wait_for_text(
            "main .notice.error",
            "Observation failed: ProxmoxCluster/home: 401 authentication failure",
        )
        .await?;
    control.update_status(|s| s.unobserved.clear());

    // The flow meter's chart is drawn from the summary endpoint, with data in it.
    browser
        .client
        .goto(&format!("{base}/#/devices?range=day"))
        .await?;
    browser
        .wait_for("section[data-device='fm-1'] figure[data-register='flow_rate'] svg.chart")
        .await?;
    let points = page_value(
        &browser,
        "Number(document.querySelector(\"figure[data-register='flow_rate'] svg.chart\")\
         .dataset.points)",
    )
    .await?;
    assert!(
        points.as_f64().is_some_and(|n| n >= 90.0),
        "a day in 15-minute buckets draws about 96 points, got {points}"
    );
    let path = page_value(
        &browser,
        "document.querySelector(\"figure[data-register='flow_rate'] path.line\")\
         .getAttribute('d').length",
    )
    .await?;
    assert!(path.as_f64().is_some_and(|n| n > 100.0), "a line is drawn");
    shot(&browser, "devices").await?;

    // The open alert, acknowledged by the operator.
    browser.client.goto(&format!("{base}/#/alerts")).await?;
    browser.wait_for_text("main table", "low-flow").await?;
    shot(&browser, "alerts").await?;
    browser
        .client
        .find(Locator::Css("tr[data-alert] button"))
        .await?
        .click()
        .await?;
    browser.wait_for_text("main table", OPERATOR.0).await?;
    let alerts = rig.store.list_alerts(None, 10).await?;
    assert_eq!(
        alerts.first().and_then(|a| a.acknowledged_by.as_deref()),
        Some(OPERATOR.0)
    );
    browser.close().await?;

    // A newer commit waits again; the viewer sees it but has no Approve button.
    let yaml2 = rig.yaml(4, 0.75);
    let Outcome::Waiting { run_id: second } =
        reconcile_yaml(&rig, &world, "decade2", &yaml2, Trigger::Poll).await?
    else {
        bail!("the second commit's run must wait for approval")
    };
    let viewer = Browser::start(390, 844).await?;
    sign_in(&viewer, &base, VIEWER).await?;
    // A reload keeps the session: the page renews its in-memory token with the HttpOnly
    // refresh cookie and the CSRF header.
    viewer.client.refresh().await?;
    viewer.wait_for_text("#account .who", VIEWER.0).await?;
    viewer
        .client
        .goto(&format!("{base}/#/runs/{second}"))
        .await?;
    viewer
        .wait_for_text("#run-status", "awaiting approval")
        .await?;
    viewer.wait_for_text("#plan", "setpoints.cutoff").await?;
    assert!(
        !viewer.exists("#approve").await?,
        "a viewer is offered no Approve button"
    );
    shot(&viewer, "run-waiting-phone").await?;

    // The API refuses a viewer's approval anyway (signed in from the page's origin).
    let plan_hash = rig.store.get_run(second).await?.plan_hash;
    let refused = viewer
        .client
        .execute_async(
            "const [user, password, run, hash, done] = arguments;
             (async () => {
               const login = await fetch('/api/v1/auth/login', {method: 'POST',
                 headers: {'Content-Type': 'application/json'},
                 body: JSON.stringify({username: user, password})});
               const {access_token} = await login.json();
               const res = await fetch(`/api/v1/runs/${run}/approve`, {method: 'POST',
                 headers: {'Content-Type': 'application/json',
                           Authorization: `Bearer ${access_token}`},
                 body: JSON.stringify({plan_hash: hash, comment: 'sneaky'})});
               return res.status;
             })().then(done, (e) => done(String(e)));",
            vec![
                json!(VIEWER.0),
                json!(VIEWER.1),
                json!(second),
                json!(plan_hash),
            ],
        )
        .await?;
    assert_eq!(refused, json!(403), "the API refuses a viewer's approval");
    assert_eq!(
        rig.store.get_run(second).await?.status,
        RunStatus::AwaitingApproval
    );
    viewer.close().await?;

    // The admin's audit page shows the approval.
    let admin = Browser::start(1280, 900).await?;
    sign_in(&admin, &base, ADMIN).await?;
    admin.client.goto(&format!("{base}/#/audit")).await?;
    admin.wait_for_text("main table", OPERATOR.0).await?;
    shot(&admin, "audit").await?;
    admin.close().await?;
    Ok(())
}

/// A running `mycopod demo` in a temp folder; killed when dropped.
struct Demo {
    url: String,
    credentials: serde_json::Value,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Demo {
    async fn start() -> Result<Demo> {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mycopod"))
            .arg("demo")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data)
            .env("MYCOPOD_LOG", "warn")
            .env_remove("MYCOPOD_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("start mycopod demo")?;
        let stdout = child.stdout.take().context("the demo's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.trim().strip_prefix("API and web page:") {
                    return Ok::<_, anyhow::Error>(rest.trim().trim_end_matches('/').to_owned());
                }
            }
            bail!("the demo exited before it said where it listens")
        })
        .await
        .context("the demo did not come up in time")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let path = data.join("demo-credentials.json");
        let credentials = serde_json::from_str(
            &std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?,
        )
        .context("parse demo-credentials.json")?;
        Ok(Demo {
            url,
            credentials,
            _child: child,
            _dir: dir,
        })
    }

    fn password(&self, user: &str) -> Result<String> {
        self.credentials["users"]
            .as_array()
            .and_then(|users| users.iter().find(|u| u["name"] == user))
            .and_then(|u| u["password"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("no demo user {user} in demo-credentials.json"))
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs chromium"]
async fn an_operator_should_approve_the_demos_waiting_run_and_watch_the_demo_apply_it() -> Result<()>
{
    tokio::time::timeout(Duration::from_secs(300), demo_scenario())
        .await
        .context("the demo scenario did not finish in time")?
}

async fn demo_scenario() -> Result<()> {
    let browser = Browser::start(1280, 900).await?;
    let demo = Demo::start().await?;
    let password = demo.password("operator")?;
    sign_in(&browser, &demo.url, ("operator", &password)).await?;

    // The demo's first commit waits: its setpoint writes need an operator. While the demo
    // settles (its devices answering only after the first poll), a newer run may supersede
    // the one first listed: open the run that waits now.
    let mut waiting = false;
    for _ in 0..5 {
        browser.client.goto(&format!("{}/#/", demo.url)).await?;
        browser
            .wait_for_within("#ov-waiting + ul a", Duration::from_secs(60))
            .await?;
        // The overview redraws on the demo's events, so an element found a moment ago may be
        // gone: read the link's target and go there rather than clicking it.
        let href = page_value(
            &browser,
            "document.querySelector('#ov-waiting + ul a').getAttribute('href')",
        )
        .await?;
        let href = href
            .as_str()
            .context("the waiting run's link has a target")?;
        browser.client.goto(&format!("{}/{href}", demo.url)).await?;
        browser.wait_for("#run-status").await?;
        let status = page_value(
            &browser,
            "document.querySelector('#run-status').dataset.status",
        )
        .await?;
        if status == json!("awaiting_approval") {
            waiting = true;
            break;
        }
    }
    ensure!(waiting, "no demo run stayed waiting for approval");
    browser.wait_for_text("#plan", "setpoints.").await?;
    browser
        .client
        .execute("window.__sameDocument = true; return null;", vec![])
        .await?;
    browser
        .client
        .find(Locator::Css("#approve"))
        .await?
        .click()
        .await?;
    // The demo's own loop applies it to its simulators.
    browser
        .wait_for_text_within("#run-status", "succeeded", Duration::from_secs(120))
        .await?;
    assert_eq!(
        page_value(&browser, "window.__sameDocument === true").await?,
        json!(true),
        "the status changed without a reload"
    );

    browser.close().await?;
    Ok(())
}
