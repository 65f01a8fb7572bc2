//! Telemetry against the Modbus simulator, a real SQLite store and a webhook receiver on
//! loopback: thresholds fire only after `for` and resolve only past the hysteresis, a device
//! that stops answering raises an offline alert and clears it, notifications arrive signed,
//! and a receiver that fails twice gets the notification on the third attempt with every
//! attempt logged. A notification survives a crash between the alert transition and the
//! first attempt, and a store that refuses readings for a while loses none of them (up to a
//! bound). The step functions are driven with explicit times (no sleeps, no timed
//! assertions); one test runs the whole pipeline through `telemetry::spawn`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, TimeZone, Utc};
use mycopod::control::Control;
use mycopod::desired::Snapshot;
use mycopod::device_clients::DeviceClients;
use mycopod::model::{AlertState, ConfigKind, DeliveryStatus};
use mycopod::reconcile::observe::LiveWorld;
use mycopod::store::Store;
use mycopod::telemetry::deliver::Attempted;
use mycopod::telemetry::evaluate::NoticeEvent;
use mycopod::telemetry::writer::{Batch, write_samples};
use mycopod::telemetry::{
    Evaluator, Notifier, NotifySettings, PollTarget, Sample, SampleKind, TelemetrySettings,
    poll_device,
};
use mycopod_adapters::modbus::{
    ClientOptions, DataType, DeviceDef, Fault, ManualClock, RegisterDef, SimDevice, Simulator,
    Table, Value, Waveform,
};
use mycopod_adapters::signing::verify_sha256;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const TEST_TIMEOUT: Duration = Duration::from_secs(30);
const SECRET: &str = "hook-s3cret";

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test did not finish in time")
}

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    base() + chrono::Duration::seconds(secs)
}

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    (store, dir)
}

async fn put(store: &Store, kind: ConfigKind, name: &str, spec: serde_json::Value) {
    store
        .upsert_config_object(kind, name, &spec, "hash", "c1", base())
        .await
        .unwrap();
}

fn flow_meter() -> DeviceDef {
    let mut d = DeviceDef::tcp("fm-1", "127.0.0.1", 0);
    d.timeout = Duration::from_secs(2);
    d.registers = vec![
        RegisterDef::new("flow_rate", Table::Holding, 0, DataType::F32),
        RegisterDef::new("status", Table::Holding, 10, DataType::U16),
    ];
    d
}

fn fast_clients() -> DeviceClients {
    DeviceClients::with_options(ClientOptions {
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
    })
}

fn target(clients: &DeviceClients, sim: &Simulator, offline_after: u32) -> PollTarget {
    PollTarget {
        client: clients.client(sim.device_def()).unwrap(),
        interval: Duration::from_secs(10),
        offline_after,
    }
}

/// A webhook receiver on loopback: records every request and answers with the queued
/// statuses (200 once the queue is empty).
#[derive(Clone, Default)]
struct Receiver {
    statuses: Arc<Mutex<VecDeque<u16>>>,
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    notify: Option<mpsc::UnboundedSender<()>>,
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.got.lock().unwrap().push((headers, body));
    if let Some(n) = &r.notify {
        let _ = n.send(());
    }
    let status = r.statuses.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

async fn start_receiver(receiver: Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(receiver);
    tokio::spawn(async move { axum::serve(listener, app).await });
    RECEIVERS.lock().unwrap().push(format!("http://{addr}"));
    format!("http://{addr}/hook")
}

/// Every receiver started in this test binary, so that [`env`] may list them as the
/// destinations of `OPS_SECRET` (each test's own receiver is started before its notifier).
static RECEIVERS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The secrets registry of these tests: `OPS_SECRET` toward the receivers started so far.
fn env() -> Arc<mycopod::secrets::Registry> {
    let env: BTreeMap<String, String> = [("OPS_SECRET".to_owned(), SECRET.to_owned())].into();
    let mut destinations = RECEIVERS.lock().unwrap().clone();
    destinations.push("http://127.0.0.1:9".to_owned());
    Arc::new(
        mycopod::secrets::Registry::of(
            vec![mycopod::secrets::SecretEntry {
                env: Some("OPS_SECRET".to_owned()),
                file: None,
                destinations,
            }],
            &env,
        )
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_threshold_crossing_should_fire_only_after_for_and_resolve_only_past_the_hysteresis() {
    within(async {
        let (store, _dir) = store().await;
        put(
            &store,
            ConfigKind::AlertRule,
            "low-flow",
            json!({"device": "fm-1", "register": "flow_rate", "condition": {"below": 2.0},
                   "for": "60s", "hysteresis": 0.5, "severity": "critical"}),
        )
        .await;
        let clock = Arc::new(ManualClock::new());
        // 3 ± 2 over ten minutes: under 2.0 from 350 s to 550 s, back over 2.5 from 576 s.
        let sim = SimDevice::new(flow_meter())
            .waveform(
                "flow_rate",
                Waveform::Sine {
                    amplitude: 2.0,
                    period: Duration::from_secs(600),
                    center: 3.0,
                },
            )
            .clock(clock.clone())
            .start()
            .await
            .unwrap();
        let clients = fast_clients();
        let target = target(&clients, &sim, 3);
        let mut evaluator = Evaluator::new(store.clone(), Duration::ZERO);
        let mut events = Vec::new();
        let mut polls = 0;
        for t in (5..=695).step_by(10) {
            clock.set(Duration::from_secs(t));
            let sample = poll_device(&store, &target, false, at(t as i64))
                .await
                .unwrap();
            assert!(matches!(sample.kind, SampleKind::Values(_)), "{sample:?}");
            write_samples(&store, &[Arc::new(sample.clone())])
                .await
                .unwrap();
            polls += 1;
            for notice in evaluator.observe(&sample).await.unwrap() {
                events.push((t, notice.event));
            }
        }
        // Under 2.0 first at 355 s; held for 60 s at 415 s. At 555 s and 575 s the value is
        // over 2.0 but inside the band (2.09, 2.48): still firing. 585 s: 2.69, resolved.
        assert_eq!(
            events,
            [(415, NoticeEvent::Firing), (585, NoticeEvent::Resolved)]
        );
        let alerts = store.list_alerts(None, 10).await.unwrap();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let alert = &alerts[0];
        assert_eq!(alert.state, AlertState::Resolved);
        assert_eq!(alert.severity, "critical");
        assert_eq!(alert.opened_at, at(355));
        assert_eq!(alert.firing_at, Some(at(415)));
        assert_eq!(alert.resolved_at, Some(at(585)));
        let stored = store
            .query_readings("fm-1", "flow_rate", at(0), at(1000), 1000)
            .await
            .unwrap();
        assert_eq!(stored.len(), polls);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dip_shorter_than_for_should_leave_no_alert_behind() {
    within(async {
        let (store, _dir) = store().await;
        put(
            &store,
            ConfigKind::AlertRule,
            "low-flow",
            json!({"device": "fm-1", "register": "flow_rate", "condition": {"below": 2.0},
                   "for": "5m"}),
        )
        .await;
        let sim = SimDevice::new(flow_meter())
            .value("flow_rate", Value::Float(3.0))
            .start()
            .await
            .unwrap();
        let clients = fast_clients();
        let target = target(&clients, &sim, 3);
        let mut evaluator = Evaluator::new(store.clone(), Duration::ZERO);
        // Flapping across the threshold every poll.
        for i in 0..10_i64 {
            let v = if i % 2 == 0 { 1.0 } else { 3.0 };
            sim.set_value("flow_rate", &Value::Float(v)).unwrap();
            let sample = poll_device(&store, &target, false, at(i * 10))
                .await
                .unwrap();
            assert!(evaluator.observe(&sample).await.unwrap().is_empty());
        }
        assert_eq!(store.list_alerts(None, 10).await.unwrap(), []);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_that_stops_answering_should_raise_an_offline_alert_and_clear_it() {
    within(async {
        let (store, _dir) = store().await;
        put(
            &store,
            ConfigKind::AlertRule,
            "fm-1-offline",
            json!({"device": "fm-1", "condition": {"offline": true}, "severity": "critical"}),
        )
        .await;
        let sim = SimDevice::new(flow_meter())
            .value("flow_rate", Value::Float(3.0))
            .start()
            .await
            .unwrap();
        let clients = fast_clients();
        let target = target(&clients, &sim, 2);
        let mut evaluator = Evaluator::new(store.clone(), Duration::ZERO);
        let mut failing = false;
        let mut poll = async |t: i64| {
            let sample = poll_device(&store, &target, failing, at(t)).await.unwrap();
            failing = matches!(sample.kind, SampleKind::Failed { .. });
            let events: Vec<NoticeEvent> = evaluator
                .observe(&sample)
                .await
                .unwrap()
                .into_iter()
                .map(|n| n.event)
                .collect();
            (sample.kind, events)
        };

        let (kind, events) = poll(0).await;
        assert!(matches!(kind, SampleKind::Values(_)));
        assert!(events.is_empty());
        store.record_device_seen("fm-1", at(0)).await.unwrap();

        sim.set_fault(Fault::DropConnection);
        let (kind, events) = poll(10).await;
        assert!(
            matches!(
                kind,
                SampleKind::Failed {
                    offline: false,
                    failures: 1,
                    ..
                }
            ),
            "{kind:?}"
        );
        assert!(events.is_empty());
        let (kind, events) = poll(20).await;
        assert!(
            matches!(
                kind,
                SampleKind::Failed {
                    offline: true,
                    failures: 2,
                    ..
                }
            ),
            "{kind:?}"
        );
        assert_eq!(events, [NoticeEvent::Firing]);
        assert!(!store.get_device("fm-1").await.unwrap().online);
        let (_, events) = poll(30).await;
        assert!(events.is_empty(), "no second alert while offline");

        sim.clear_faults();
        let (kind, events) = poll(40).await;
        assert!(matches!(kind, SampleKind::Values(_)), "{kind:?}");
        assert_eq!(events, [NoticeEvent::Resolved]);
        let device = store.get_device("fm-1").await.unwrap();
        assert!(device.online);
        assert_eq!(device.last_seen, Some(at(40)));

        let alerts = store.list_alerts(None, 10).await.unwrap();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].state, AlertState::Resolved);
        assert_eq!(alerts[0].firing_at, Some(at(20)));
        assert_eq!(alerts[0].resolved_at, Some(at(40)));
    })
    .await;
}

async fn channel(store: &Store, url: &str) {
    put(
        store,
        ConfigKind::NotificationChannel,
        "ops",
        json!({"webhook": {"url": url, "secretEnv": "OPS_SECRET"}}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_receiver_should_get_a_correctly_signed_payload() {
    within(async {
        let (store, _dir) = store().await;
        let receiver = Receiver::default();
        let url = start_receiver(receiver.clone()).await;
        channel(&store, &url).await;
        let (alert, _) = store
            .open_alert(
                "low-flow",
                "fm-1",
                AlertState::Firing,
                "warning",
                Some(1.5),
                at(0),
            )
            .await
            .unwrap();
        let notifier = Notifier::new(store.clone(), env(), NotifySettings::default()).unwrap();
        let outcome = notifier
            .attempt(alert.id, "ops", NoticeEvent::Firing, 1, at(1))
            .await
            .unwrap();
        assert_eq!(outcome, Attempted::Recorded(DeliveryStatus::Succeeded));

        let got = receiver.got.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        let (headers, body) = &got[0];
        let signature = headers["x-mycopod-signature"].to_str().unwrap();
        assert!(
            verify_sha256(SECRET.as_bytes(), body, signature),
            "{signature}"
        );
        assert!(!verify_sha256(b"another secret", body, signature));
        assert_eq!(headers["x-mycopod-event"], "alert.firing");
        let payload: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(payload["event"], "alert.firing");
        assert_eq!(payload["alert"]["id"], alert.id);
        assert_eq!(payload["alert"]["rule"], "low-flow");
        assert_eq!(payload["alert"]["device"], "fm-1");
        assert_eq!(payload["alert"]["value"], 1.5);

        let log = store.list_deliveries(alert.id).await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].status, DeliveryStatus::Succeeded);
        assert_eq!(log[0].response_code, Some(200));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_failing_twice_should_get_the_notification_on_the_third_attempt() {
    within(async {
        let (store, _dir) = store().await;
        let receiver = Receiver::default();
        receiver.statuses.lock().unwrap().extend([500, 503]);
        let url = start_receiver(receiver.clone()).await;
        channel(&store, &url).await;
        let (alert, _) = store
            .open_alert(
                "low-flow",
                "fm-1",
                AlertState::Firing,
                "warning",
                Some(1.5),
                at(0),
            )
            .await
            .unwrap();
        let notifier = Notifier::new(store.clone(), env(), NotifySettings::default()).unwrap();
        let first = notifier
            .attempt(alert.id, "ops", NoticeEvent::Firing, 1, at(0))
            .await
            .unwrap();
        assert_eq!(first, Attempted::Recorded(DeliveryStatus::Retrying));
        // Not due yet: the backoff is at least half the base.
        assert_eq!(notifier.run_due(at(1)).await.unwrap(), 0);
        assert_eq!(notifier.run_due(at(3600)).await.unwrap(), 1);
        assert_eq!(notifier.run_due(at(7200)).await.unwrap(), 1);
        assert_eq!(notifier.run_due(at(10_800)).await.unwrap(), 0, "delivered");

        let log = store.list_deliveries(alert.id).await.unwrap();
        let summary: Vec<(i64, DeliveryStatus, Option<i64>)> = log
            .iter()
            .map(|d| (d.attempt, d.status, d.response_code))
            .collect();
        assert_eq!(
            summary,
            [
                (1, DeliveryStatus::Retrying, Some(500)),
                (2, DeliveryStatus::Retrying, Some(503)),
                (3, DeliveryStatus::Succeeded, Some(200)),
            ]
        );
        // Each retry was scheduled after the attempt before it.
        assert!(log[0].next_attempt_at.unwrap() > at(0));
        assert!(log[1].next_attempt_at.unwrap() > at(3600));

        let got = receiver.got.lock().unwrap().clone();
        assert_eq!(got.len(), 3);
        let ids: Vec<&str> = got
            .iter()
            .map(|(h, _)| h["x-mycopod-delivery"].to_str().unwrap())
            .collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        for (headers, body) in &got {
            let signature = headers["x-mycopod-signature"].to_str().unwrap();
            assert!(verify_sha256(SECRET.as_bytes(), body, signature));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_keeps_failing_should_be_given_up_after_the_bound() {
    within(async {
        let (store, _dir) = store().await;
        let receiver = Receiver::default();
        receiver.statuses.lock().unwrap().extend([500; 10]);
        let url = start_receiver(receiver.clone()).await;
        channel(&store, &url).await;
        let (alert, _) = store
            .open_alert(
                "low-flow",
                "fm-1",
                AlertState::Firing,
                "warning",
                None,
                at(0),
            )
            .await
            .unwrap();
        let settings = NotifySettings {
            max_attempts: 3,
            ..NotifySettings::default()
        };
        let notifier = Notifier::new(store.clone(), env(), settings).unwrap();
        notifier
            .attempt(alert.id, "ops", NoticeEvent::Firing, 1, at(0))
            .await
            .unwrap();
        for hour in 1..=5 {
            notifier.run_due(at(hour * 3600)).await.unwrap();
        }
        let statuses: Vec<DeliveryStatus> = store
            .list_deliveries(alert.id)
            .await
            .unwrap()
            .iter()
            .map(|d| d.status)
            .collect();
        assert_eq!(
            statuses,
            [
                DeliveryStatus::Retrying,
                DeliveryStatus::Retrying,
                DeliveryStatus::Failed
            ]
        );
        assert_eq!(receiver.got.lock().unwrap().len(), 3);
    })
    .await;
}

/// Regression: a notice went straight from the evaluator to the notifier and the delivery log
/// was only written after the first attempt, so a crash in between lost the notification.
#[tokio::test(flavor = "multi_thread")]
async fn a_notification_should_survive_a_crash_between_the_transition_and_the_first_attempt() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let receiver = Receiver::default();
        let hook = start_receiver(receiver.clone()).await;
        {
            // The process that sees the alert fire and dies before notifying anyone.
            let store = Store::connect(&url).await.unwrap();
            store.migrate().await.unwrap();
            channel(&store, &hook).await;
            put(
                &store,
                ConfigKind::AlertRule,
                "low-flow",
                json!({"device": "fm-1", "register": "flow_rate", "condition": {"below": 2.0},
                       "notify": ["ops"]}),
            )
            .await;
            let mut evaluator = Evaluator::new(store.clone(), Duration::ZERO);
            let sample = Sample {
                device: "fm-1".into(),
                time: at(0),
                clock: at(0),
                kind: SampleKind::Values(vec![("flow_rate".into(), 1.5)]),
            };
            let notices = evaluator.observe(&sample).await.unwrap();
            assert_eq!(notices.len(), 1);
            assert_eq!(notices[0].event, NoticeEvent::Firing);
            // The notices are dropped here: the notifier never ran.
            store.close().await;
        }
        assert!(receiver.got.lock().unwrap().is_empty());

        // The next process: a new store and notifier on the same database.
        let store = Store::connect(&url).await.unwrap();
        let alert = store
            .list_alerts(Some(AlertState::Firing), 10)
            .await
            .unwrap()
            .pop()
            .expect("the firing alert was recorded");
        let queued = attempts(&store, alert.id).await;
        assert_eq!(queued, [(0, DeliveryStatus::Queued)]);
        let notifier = Notifier::new(store.clone(), env(), NotifySettings::default()).unwrap();
        assert_eq!(notifier.run_due(at(1)).await.unwrap(), 1);
        // Once delivered, neither a scan nor a late start of the same attempt sends it again.
        assert_eq!(notifier.run_due(at(2)).await.unwrap(), 0);
        assert_eq!(
            notifier
                .attempt(alert.id, "ops", NoticeEvent::Firing, 1, at(3))
                .await
                .unwrap(),
            Attempted::AlreadyDone
        );
        // Queueing it again (a replayed transition) adds nothing.
        assert!(
            !store
                .queue_notification(alert.id, "ops", "firing", at(4))
                .await
                .unwrap()
        );
        assert_eq!(notifier.run_due(at(5)).await.unwrap(), 0);

        let got = receiver.got.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "exactly one delivery");
        let (headers, body) = &got[0];
        let signature = headers["x-mycopod-signature"].to_str().unwrap();
        assert!(verify_sha256(SECRET.as_bytes(), body, signature));
        let payload: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(payload["event"], "alert.firing");
        assert_eq!(payload["alert"]["id"], alert.id);
        let log = attempts(&store, alert.id).await;
        assert_eq!(
            log,
            [(0, DeliveryStatus::Queued), (1, DeliveryStatus::Succeeded)]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_whose_min_severity_filters_an_alert_should_record_it_skipped_once() {
    within(async {
        let (store, _dir) = store().await;
        let receiver = Receiver::default();
        let url = start_receiver(receiver.clone()).await;
        put(
            &store,
            ConfigKind::NotificationChannel,
            "ops",
            json!({"webhook": {"url": url}, "minSeverity": "critical"}),
        )
        .await;
        let alert = warning_firing_to_ops(&store).await;
        let notifier = Notifier::new(store.clone(), env(), NotifySettings::default()).unwrap();
        assert_eq!(notifier.run_due(at(1)).await.unwrap(), 1);
        // Skipped is final: later scans do not pick it up again.
        assert_eq!(notifier.run_due(at(2)).await.unwrap(), 0);
        let log = attempts(&store, alert.id).await;
        assert_eq!(
            log,
            [(0, DeliveryStatus::Queued), (1, DeliveryStatus::Skipped)]
        );
        assert!(receiver.got.lock().unwrap().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_notifiers_on_one_database_should_send_a_notification_once() {
    within(async {
        let (store, _dir) = store().await;
        let receiver = Receiver::default();
        let hook = start_receiver(receiver.clone()).await;
        channel(&store, &hook).await;
        let alert = warning_firing_to_ops(&store).await;
        // Two replicas scan the same queue at the same moment.
        let a = Notifier::new(store.clone(), env(), NotifySettings::default()).unwrap();
        let b = Notifier::new(store.clone(), env(), NotifySettings::default()).unwrap();
        let (sent_a, sent_b) = tokio::join!(a.run_due(at(1)), b.run_due(at(1)));
        assert_eq!(sent_a.unwrap() + sent_b.unwrap(), 1, "one of them sends it");
        assert_eq!(receiver.got.lock().unwrap().len(), 1);
        assert_eq!(
            attempts(&store, alert.id).await,
            [(0, DeliveryStatus::Queued), (1, DeliveryStatus::Succeeded)]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_claimed_by_a_notifier_that_died_should_be_made_again_after_its_deadline() {
    within(async {
        let (store, _dir) = store().await;
        let receiver = Receiver::default();
        let hook = start_receiver(receiver.clone()).await;
        channel(&store, &hook).await;
        let alert = warning_firing_to_ops(&store).await;
        // A notifier claims attempt 1 and dies before it finishes.
        let deadline = at(60);
        let claim = store
            .claim_delivery(alert.id, "ops", "firing", 1, deadline, at(1))
            .await
            .unwrap();
        assert!(claim.is_some());
        assert_eq!(
            store
                .claim_delivery(alert.id, "ops", "firing", 1, deadline, at(1))
                .await
                .unwrap(),
            None,
            "an attempt is claimed once"
        );
        let notifier = Notifier::new(store.clone(), env(), NotifySettings::default()).unwrap();
        assert_eq!(
            notifier.run_due(at(30)).await.unwrap(),
            0,
            "not before the deadline"
        );
        assert!(receiver.got.lock().unwrap().is_empty());
        assert_eq!(notifier.run_due(at(60)).await.unwrap(), 1);
        assert_eq!(receiver.got.lock().unwrap().len(), 1);
        assert_eq!(
            attempts(&store, alert.id).await,
            [
                (0, DeliveryStatus::Queued),
                (1, DeliveryStatus::Retrying),
                (2, DeliveryStatus::Succeeded)
            ]
        );
    })
    .await;
}

/// A `warning` alert of `low-flow` on fm-1 that opened firing at 0 s, its notification to
/// channel `ops` queued.
async fn warning_firing_to_ops(store: &Store) -> mycopod::store::Alert {
    store
        .open_alert_notifying(
            "low-flow",
            "fm-1",
            AlertState::Firing,
            "warning",
            Some(1.5),
            at(0),
            &["ops".to_owned()],
        )
        .await
        .unwrap()
        .0
}

/// The delivery log of an alert as (attempt, status), oldest first.
async fn attempts(store: &Store, alert: i64) -> Vec<(i64, DeliveryStatus)> {
    store
        .list_deliveries(alert)
        .await
        .unwrap()
        .iter()
        .map(|d| (d.attempt, d.status))
        .collect()
}

fn values_at(secs: i64) -> Arc<Sample> {
    Arc::new(Sample {
        device: "fm-1".into(),
        time: at(secs),
        clock: at(secs),
        kind: SampleKind::Values(vec![
            ("flow_rate".into(), secs as f64),
            ("status".into(), 1.0),
        ]),
    })
}

/// Regression: a failed batch write was logged and its readings dropped.
#[tokio::test(flavor = "multi_thread")]
async fn readings_refused_by_the_store_should_be_kept_for_the_next_flush_within_a_bound() {
    within(async {
        let (store, _dir) = store().await;
        store.ensure_device("fm-1", at(0)).await.unwrap();
        let mycopod::store::Backend::Sqlite(pool) = store.backend() else {
            unreachable!("the test store is SQLite")
        };
        // The store refuses every reading until the trigger is dropped.
        sqlx::query(
            "CREATE TRIGGER refuse_readings BEFORE INSERT ON readings \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        .execute(pool)
        .await
        .unwrap();
        let mut batch = Batch::new(6);
        assert_eq!(batch.push(values_at(10)), 0);
        let error = batch.flush(&store).await.unwrap_err();
        assert!(
            format!("{error:?}").contains("refused by the test"),
            "{error:?}"
        );
        assert_eq!(batch.waiting(), 2, "kept after the failed flush");
        // A failed poll carries no readings: nothing to keep.
        assert_eq!(
            batch.push(Arc::new(Sample {
                device: "fm-1".into(),
                time: at(15),
                clock: at(15),
                kind: SampleKind::Failed {
                    error: "timeout".into(),
                    offline: false,
                    failures: 1,
                },
            })),
            0
        );
        assert_eq!(batch.push(values_at(20)), 0);
        assert_eq!(batch.push(values_at(30)), 0);
        assert!(batch.flush(&store).await.is_err());
        assert_eq!(batch.waiting(), 6);
        // Past the bound the oldest sample goes, counted.
        assert_eq!(batch.push(values_at(40)), 2);
        assert_eq!(batch.waiting(), 6);
        assert_eq!(batch.dropped(), 2);

        sqlx::query("DROP TRIGGER refuse_readings")
            .execute(pool)
            .await
            .unwrap();
        assert_eq!(batch.flush(&store).await.unwrap(), 6);
        assert!(batch.is_empty());
        let stored: Vec<(DateTime<Utc>, f64)> = store
            .query_readings("fm-1", "flow_rate", at(0), at(100), 100)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.time, r.value))
            .collect();
        assert_eq!(stored, [(at(20), 20.0), (at(30), 30.0), (at(40), 40.0)]);
        assert_eq!(
            store
                .query_readings("fm-1", "status", at(0), at(100), 100)
                .await
                .unwrap()
                .len(),
            3
        );
        assert_eq!(batch.dropped(), 2);
    })
    .await;
}

fn declarations(port: u16, hook: &str) -> String {
    format!(
        r#"apiVersion: mycopod/v1
kind: ModbusDevice
metadata: {{name: fm-1}}
spec:
  connection: {{tcp: {{host: 127.0.0.1, port: {port}}}}}
  pollInterval: 200ms
  timeout: 2s
  registers:
    - {{name: flow_rate, table: holding, address: 0, type: f32}}
    - {{name: status, table: holding, address: 10, type: u16}}
---
apiVersion: mycopod/v1
kind: NotificationChannel
metadata: {{name: ops}}
spec: {{webhook: {{url: "{hook}", secretEnv: OPS_SECRET}}}}
---
apiVersion: mycopod/v1
kind: AlertRule
metadata: {{name: high-flow}}
spec: {{device: fm-1, register: flow_rate, condition: {{above: 4.0}}, notify: [ops]}}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn spawned_telemetry_should_poll_store_readings_and_notify_from_the_desired_state() {
    within(async {
        let (store, _dir) = store().await;
        let (tx, mut arrived) = mpsc::unbounded_channel();
        let receiver = Receiver {
            notify: Some(tx),
            ..Receiver::default()
        };
        let url = start_receiver(receiver.clone()).await;
        let sim = SimDevice::new(flow_meter())
            .value("flow_rate", Value::Float(5.0))
            .start()
            .await
            .unwrap();
        let yaml = declarations(sim.addr().port(), &url);
        let loaded = mycopod_specs::load_str("site.yaml", &yaml);
        let desired = Arc::new(
            mycopod_specs::check(&loaded)
                .unwrap_or_else(|d| panic!("{d:#?}"))
                .desired,
        );
        // What a run would have reconciled into the database.
        let rule = &desired.alert_rules[0];
        put(
            &store,
            ConfigKind::AlertRule,
            "high-flow",
            serde_json::to_value(&rule.spec).unwrap(),
        )
        .await;
        let ops = &desired.channels[0];
        put(
            &store,
            ConfigKind::NotificationChannel,
            "ops",
            serde_json::to_value(&ops.spec).unwrap(),
        )
        .await;

        let (control, _triggers) = Control::new(store.events().clone(), Utc::now());
        control.set_desired(Snapshot {
            commit: "c1".into(),
            desired: Arc::clone(&desired),
            loaded_at: Utc::now(),
        });
        let clients = fast_clients();
        let mut settings = TelemetrySettings::from_config(
            &mycopod::config::TelemetryConfig::default(),
            (*env()).clone(),
        );
        settings.flush_every = Duration::from_millis(50);
        settings.rules_reload_every = Duration::ZERO;
        let shutdown = CancellationToken::new();
        let handle = mycopod::telemetry::spawn(
            store.clone(),
            control.desired(),
            control.sample_slot(),
            clients.clone(),
            settings,
            shutdown.clone(),
        )
        .unwrap();

        arrived.recv().await.expect("a notification arrives");
        let (headers, body) = receiver.got.lock().unwrap()[0].clone();
        let signature = headers["x-mycopod-signature"].to_str().unwrap();
        assert!(verify_sha256(SECRET.as_bytes(), &body, signature));
        let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(payload["event"], "alert.firing");
        assert_eq!(payload["alert"]["rule"], "high-flow");

        // Reconciles get the very client the poller uses.
        let world = LiveWorld::with_device_clients(&desired, &env(), &clients);
        assert!(Arc::ptr_eq(
            world.device("fm-1").unwrap(),
            &clients.get("fm-1").unwrap()
        ));

        shutdown.cancel();
        handle.await.unwrap();
        // The notice and the scan of the queue both started the delivery: sent once.
        assert_eq!(receiver.got.lock().unwrap().len(), 1);
        // After shutdown every poll made has been written.
        let stored = store
            .query_readings(
                "fm-1",
                "flow_rate",
                at(-86_400 * 365),
                Utc::now() + chrono::Duration::hours(1),
                10_000,
            )
            .await
            .unwrap();
        assert!(!stored.is_empty());
        assert!(stored.iter().all(|r| r.value == 5.0));
        let device = store.get_device("fm-1").await.unwrap();
        assert!(device.online);
        assert!(device.last_seen.is_some());
        let alerts = store
            .list_alerts(Some(AlertState::Firing), 10)
            .await
            .unwrap();
        assert_eq!(alerts.len(), 1);
    })
    .await;
}

/// The attacker pushes one harmless reading dated 25 s ahead (inside the ingest skew). It is
/// evaluated, but it moves the device's evaluation clock only to when it arrived: the polls
/// that follow it are still evaluated, and a low flow still fires.
#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_reading_dated_ahead_should_not_blind_the_samples_after_it() {
    within(async {
        let (store, _dir) = store().await;
        put(
            &store,
            ConfigKind::AlertRule,
            "low-flow",
            json!({"device": "fm-1", "register": "flow_rate", "condition": {"below": 2.0},
                   "notify": ["ops"]}),
        )
        .await;
        let mut evaluator = Evaluator::new(store.clone(), Duration::ZERO);
        let pushed = mycopod::store::Reading {
            device: "fm-1".into(),
            register: "flow_rate".into(),
            time: at(25),
            value: 3.0,
        };
        let samples = mycopod::telemetry::poll::samples_of_readings(&[pushed], at(0));
        assert_eq!(samples.len(), 1);
        assert_eq!((samples[0].time, samples[0].clock), (at(25), at(0)));
        assert!(evaluator.observe(&samples[0]).await.unwrap().is_empty());

        let polled = Sample {
            device: "fm-1".into(),
            time: at(1),
            clock: at(1),
            kind: SampleKind::Values(vec![("flow_rate".into(), 1.5)]),
        };
        let notices = evaluator.observe(&polled).await.unwrap();
        assert_eq!(
            notices.into_iter().map(|n| n.event).collect::<Vec<_>>(),
            [NoticeEvent::Firing],
            "the poll after the pushed reading is evaluated"
        );
        // A sample older than the clock (a late backlog) is still ignored.
        let late = Sample {
            device: "fm-1".into(),
            time: at(0),
            clock: at(0),
            kind: SampleKind::Values(vec![("flow_rate".into(), 5.0)]),
        };
        assert!(evaluator.observe(&late).await.unwrap().is_empty());
    })
    .await;
}
