//! Telemetry: Modbus polling, readings, alert evaluation, notification dispatch, MQTT and
//! retention, started by `serve` through the one entry point [`spawn`].
//!
//! Shape: one poller task per declared ModbusDevice sends [`Sample`]s to a batch writer (which
//! stores readings in large batches) and to the evaluator (which runs the pure state machine
//! of [`alerts`] and records alerts); readings pushed over the API are stored by the API and
//! reach the same evaluator through the [`SampleFeed`] slot. Firings and resolutions queue
//! their notifications in the store with the transition; the notifier delivers them from
//! there (started at once by a [`Notice`], or found by its scan after a restart), every
//! attempt in its own task. Pollers start, stop and change with the desired-state
//! snapshots the loop publishes (a `watch`); telemetry knows nothing of the loop itself. Polling never blocks reconciles: the Modbus clients are shared
//! through [`DeviceClients`], whose client serializes the requests to one device.
//! Each part has a step function tests drive directly; the loops around them are trivial.

pub mod alerts;
pub mod deliver;
pub mod evaluate;
pub mod mqtt;
pub mod poll;
pub mod retention;
pub mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::plan::translate::device::device_def;
use mycopod_adapters::modbus::DeviceDef;
use mycopod_specs::DesiredState;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

pub use deliver::{Notifier, NotifySettings};
pub use evaluate::{Evaluator, Notice, NoticeEvent};
pub use mqtt::{MqttSettings, MqttSink};
pub use poll::{PollTarget, Sample, SampleKind, poll_device};

use crate::config::TelemetryConfig;
use crate::desired::Snapshot;
use crate::device_clients::DeviceClients;
use crate::store::Store;

/// Samples buffered towards the writer and the evaluator before pollers wait.
const SAMPLE_BUFFER: usize = 4096;

/// Everything [`spawn`] needs besides the store, the control handle and the clients.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// Readings older than this are deleted.
    pub retention: Duration,
    /// How often retention runs.
    pub retention_every: Duration,
    /// How long the writer gathers samples before storing them.
    pub flush_every: Duration,
    /// Readings that make the writer store at once.
    pub max_batch: usize,
    /// Readings the writer keeps while the store refuses them; past this the oldest are
    /// dropped and counted.
    pub max_pending: usize,
    /// How often alert rules are re-read from the database.
    pub rules_reload_every: Duration,
    /// Webhook retry policy.
    pub notify: NotifySettings,
    /// The secrets channels may name, each bound to its destinations.
    pub secrets: Arc<crate::secrets::Registry>,
    /// MQTT publishing, if configured.
    pub mqtt: Option<MqttSettings>,
}

impl TelemetrySettings {
    /// The settings of `config`, with `secrets` for channel secrets.
    pub fn from_config(config: &TelemetryConfig, secrets: crate::secrets::Registry) -> Self {
        TelemetrySettings {
            retention: config.retention.as_std(),
            retention_every: Duration::from_secs(3600),
            flush_every: Duration::from_secs(1),
            max_batch: 50_000,
            max_pending: 500_000,
            rules_reload_every: Duration::from_secs(5),
            notify: NotifySettings::default(),
            secrets: Arc::new(secrets),
            mqtt: config.mqtt_url.as_ref().map(|url| MqttSettings {
                url: url.clone(),
                topic_prefix: config.mqtt_topic_prefix.clone(),
                publish_readings: config.mqtt_publish_readings,
            }),
        }
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The webhook client could not be built.
    #[error(transparent)]
    Client(#[from] deliver::ClientError),
    /// The MQTT settings are unusable.
    #[error(transparent)]
    Mqtt(#[from] mycopod_adapters::mqtt::MqttError),
}

/// How one device is polled, compared to decide whether its poller must restart.
#[derive(Debug, Clone, PartialEq)]
struct PollSpec {
    def: DeviceDef,
    interval: Duration,
    offline_after: u32,
}

fn poll_specs(desired: &DesiredState) -> BTreeMap<String, PollSpec> {
    desired
        .devices
        .iter()
        .map(|d| {
            let name = d.name().as_str().to_owned();
            let spec = PollSpec {
                def: device_def(&name, &d.spec),
                interval: d
                    .spec
                    .poll_interval
                    .as_std()
                    .max(Duration::from_millis(100)),
                offline_after: d.spec.offline_after.max(1),
            };
            (name, spec)
        })
        .collect()
}

/// The slot where pushed readings enter the alert evaluator: filled while telemetry runs,
/// empty otherwise. Cheap to clone; the API reaches it through `Control::sample_feed`.
#[derive(Debug, Clone, Default)]
pub struct SampleFeed(Arc<RwLock<Option<mpsc::Sender<Arc<Sample>>>>>);

impl SampleFeed {
    /// The evaluator's sender, if telemetry runs.
    pub fn sender(&self) -> Option<mpsc::Sender<Arc<Sample>>> {
        match self.0.read() {
            Ok(feed) => feed.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, feed: Option<mpsc::Sender<Arc<Sample>>>) {
        let mut slot = match self.0.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = feed;
    }
}

struct Running {
    spec: PollSpec,
    cancel: CancellationToken,
}

/// Starts telemetry: the pollers of the devices in the `desired` state (following every new
/// snapshot), the batch writer, the alert evaluator, the notifier, MQTT and
/// retention. Returns the task that runs until `shutdown` fires; it then stops the pollers,
/// writes what was polled, and gives deliveries under way a moment to finish.
///
/// # Errors
/// The webhook client cannot be built or the MQTT URL is malformed.
pub fn spawn(
    store: Store,
    mut desired: watch::Receiver<Option<Arc<Snapshot>>>,
    feed: SampleFeed,
    clients: DeviceClients,
    settings: TelemetrySettings,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, TelemetryError> {
    let notifier = Notifier::new(
        store.clone(),
        Arc::clone(&settings.secrets),
        settings.notify,
    )?;
    let mqtt = settings
        .mqtt
        .clone()
        .map(MqttSink::connect)
        .transpose()?
        .map(Arc::new);
    let (eval_tx, mut eval_rx) = mpsc::channel::<Arc<Sample>>(SAMPLE_BUFFER);
    // Pushed readings reach the evaluator through the slot the API holds.
    feed.set(Some(eval_tx.clone()));
    Ok(tokio::spawn(async move {
        let (writer_tx, writer_rx) = mpsc::channel(SAMPLE_BUFFER);
        let (notice_tx, notice_rx) = mpsc::unbounded_channel();
        let sinks = poll::SampleSinks {
            writer: writer_tx,
            evaluator: eval_tx,
        };
        let writer = tokio::spawn(writer::run_writer(
            store.clone(),
            writer_rx,
            settings.flush_every,
            settings.max_batch,
            settings.max_pending,
            mqtt.clone(),
        ));
        let evaluator = {
            let mut evaluator = Evaluator::new(store.clone(), settings.rules_reload_every);
            let mqtt = mqtt.clone();
            tokio::spawn(async move {
                while let Some(sample) = eval_rx.recv().await {
                    match evaluator.observe(&sample).await {
                        Ok(notices) => {
                            for notice in notices {
                                if let Some(mqtt) = &mqtt {
                                    mqtt.alert(&notice);
                                }
                                // The notifier stops last; a send error means it is gone.
                                let _ = notice_tx.send(notice);
                            }
                        }
                        Err(e) => {
                            tracing::error!(device = %sample.device, error = %e, "evaluate alerts");
                        }
                    }
                }
            })
        };
        let background = CancellationToken::new();
        let notifier_task = tokio::spawn(deliver::run_notifier(
            notifier,
            notice_rx,
            background.clone(),
        ));
        let retention = tokio::spawn(retention::run_retention(
            store.clone(),
            settings.retention,
            settings.retention_every,
            background.clone(),
        ));

        let mut running: BTreeMap<String, Running> = BTreeMap::new();
        let mut pollers = JoinSet::new();
        loop {
            let snapshot = desired.borrow_and_update().clone();
            let wanted = snapshot.map(|s| poll_specs(&s.desired)).unwrap_or_default();
            running.retain(|name, r| {
                let keep = wanted.get(name) == Some(&r.spec);
                if !keep {
                    r.cancel.cancel();
                }
                keep
            });
            clients.retain(&wanted.keys().cloned().collect::<BTreeSet<_>>());
            for (name, spec) in wanted {
                if running.contains_key(&name) {
                    continue;
                }
                let client = match clients.client(spec.def.clone()) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(device = %name, error = %e, "cannot poll device");
                        continue;
                    }
                };
                if let Err(e) = store.ensure_device(&name, chrono::Utc::now()).await {
                    tracing::error!(device = %name, error = %e, "register device");
                }
                let cancel = shutdown.child_token();
                let target = PollTarget {
                    client,
                    interval: spec.interval,
                    offline_after: spec.offline_after,
                };
                pollers.spawn(poll::run_poller(
                    store.clone(),
                    target,
                    sinks.clone(),
                    cancel.clone(),
                ));
                running.insert(name, Running { spec, cancel });
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = desired.changed() => {
                    if changed.is_err() {
                        // The loop's state is gone: keep polling what we have until shutdown.
                        shutdown.cancelled().await;
                        break;
                    }
                }
                Some(_) = pollers.join_next(), if !pollers.is_empty() => {}
            }
        }
        for r in running.values() {
            r.cancel.cancel();
        }
        while pollers.join_next().await.is_some() {}
        // The pollers and the feed held the last senders: the writer flushes and ends, then
        // the evaluator.
        feed.set(None);
        drop(sinks);
        let _ = writer.await;
        let _ = evaluator.await;
        background.cancel();
        let _ = notifier_task.await;
        let _ = retention.await;
    }))
}
