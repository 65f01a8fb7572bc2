//! Notification delivery: each firing and resolution to the rule's NotificationChannels as an
//! HMAC-signed webhook, retried with exponential backoff and jitter up to a bound, every
//! attempt recorded in the delivery log.
//!
//! The step functions are [`Notifier::attempt`] (one attempt, recorded) and
//! [`Notifier::run_due`] (the retries whose time has come, found through the log, so they
//! survive a restart). [`run_notifier`] is the loop around them: every attempt runs in its own
//! task, so a slow or dead receiver delays neither polling nor other channels. Whether an
//! alert fires is decided elsewhere.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mycopod_adapters::backoff::Backoff;
use mycopod_adapters::notify::{DeliveryError, Webhook, WebhookSender};
use mycopod_specs::kinds::NotificationChannelSpec;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::evaluate::{Notice, NoticeEvent};
use crate::model::{ConfigKind, DeliveryStatus};
use crate::secrets::{Registry, SecretRef};
use crate::store::{Alert, NewDelivery, Store, StoreError};

/// Added to twice the attempt timeout to give a claimed attempt its deadline.
const CLAIM_SLACK: Duration = Duration::from_secs(5);

/// Retry policy and limits of deliveries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NotifySettings {
    /// Attempts per notification and channel, the first included.
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles with each further one.
    pub backoff_base: Duration,
    /// Upper bound of the wait.
    pub backoff_max: Duration,
    /// Limit of one attempt.
    pub timeout: Duration,
    /// How often the log is checked for due retries.
    pub scan_every: Duration,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            max_attempts: 6,
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(15 * 60),
            timeout: Duration::from_secs(10),
            scan_every: Duration::from_secs(1),
        }
    }
}

impl NotifySettings {
    /// The backoff between attempts; jittered where used, so retries of many alerts spread
    /// out.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_base, self.backoff_max)
    }
}

/// The JSON body of a webhook (and of an MQTT alert message).
#[derive(Debug, Clone, Serialize)]
pub struct AlertMessage<'a> {
    /// `alert.firing` or `alert.resolved`.
    pub event: String,
    /// The alert as stored.
    pub alert: &'a Alert,
}

impl<'a> AlertMessage<'a> {
    /// The message for `event` on `alert`.
    pub fn new(alert: &'a Alert, event: NoticeEvent) -> AlertMessage<'a> {
        AlertMessage {
            event: format!("alert.{}", event.as_str()),
            alert,
        }
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempted {
    /// Recorded with this status (`skipped` when the alert's severity is below the channel's
    /// `minSeverity`: nothing was sent).
    Recorded(DeliveryStatus),
    /// Nothing done: the log shows this attempt was already made, or the delivery is over
    /// (succeeded, failed, skipped). Keeps one delivery per (alert, channel, event) when the
    /// same attempt is started twice (a notice and a scan of the queue).
    AlreadyDone,
}

/// Sends notifications and keeps the delivery log.
#[derive(Debug, Clone)]
pub struct Notifier {
    store: Store,
    sender: WebhookSender,
    secrets: Arc<Registry>,
    settings: NotifySettings,
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "info" => 0,
        "warning" => 1,
        _ => 2,
    }
}

impl Notifier {
    /// A notifier; channel secrets (`secretEnv`, `secretFile`) are resolved through
    /// `secrets`, toward the channel's own URL only.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(
        store: Store,
        secrets: Arc<Registry>,
        settings: NotifySettings,
    ) -> Result<Notifier, ClientError> {
        Ok(Notifier {
            store,
            sender: WebhookSender::new(settings.timeout).map_err(|e| ClientError(e.to_string()))?,
            secrets,
            settings,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &NotifySettings {
        &self.settings
    }

    async fn channel(&self, name: &str) -> Result<Option<NotificationChannelSpec>, String> {
        let objects = self
            .store
            .list_config_objects(ConfigKind::NotificationChannel)
            .await
            .map_err(|e| e.to_string())?;
        match objects.into_iter().find(|o| o.name == name) {
            None => Ok(None),
            Some(o) => serde_json::from_value(o.spec)
                .map(Some)
                .map_err(|e| format!("stored channel {name} does not parse: {e}")),
        }
    }

    fn secret(
        &self,
        name: &str,
        spec: &NotificationChannelSpec,
    ) -> Result<Option<Vec<u8>>, String> {
        let reference = match (&spec.webhook.secret_env, &spec.webhook.secret_file) {
            (Some(var), _) => SecretRef::Env(var),
            (None, Some(path)) => SecretRef::File(path),
            (None, None) => return Ok(None),
        };
        self.secrets
            .resolve(reference, spec.webhook.url.url())
            .map(|v| Some(v.into_bytes()))
            .map_err(|e| format!("channel {name}: {e}"))
    }

    /// Makes attempt number `attempt` of notifying `channel` about `event` on alert
    /// `alert_id`, and records it: `succeeded`, `retrying` with the time of the next attempt
    /// (a transient failure below the attempt bound), or `failed`.
    ///
    /// # Errors
    /// Store errors (reading the alert, recording the attempt).
    pub async fn attempt(
        &self,
        alert_id: i64,
        channel: &str,
        event: NoticeEvent,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<Attempted, StoreError> {
        // Attempt 1 follows the queued row (attempt 0) or nothing; attempt n follows a
        // `retrying` attempt n - 1. Anything else means another start got here first.
        let latest = self
            .store
            .latest_delivery(alert_id, channel, event.as_str())
            .await?;
        let expected = match &latest {
            None => attempt == 1,
            Some(d) => {
                matches!(d.status, DeliveryStatus::Queued | DeliveryStatus::Retrying)
                    && d.attempt == i64::from(attempt) - 1
            }
        };
        if !expected {
            return Ok(Attempted::AlreadyDone);
        }
        // Claim the attempt in the database before sending: another notifier (a replica)
        // that read the same log gets no claim and sends nothing. A claim that is never
        // finished falls due again at its deadline.
        let deadline = chrono::Duration::from_std(self.settings.timeout * 2 + CLAIM_SLACK)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(now);
        let Some(claim) = self
            .store
            .claim_delivery(
                alert_id,
                channel,
                event.as_str(),
                i64::from(attempt),
                deadline,
                now,
            )
            .await?
        else {
            return Ok(Attempted::AlreadyDone);
        };
        let alert = self.store.get_alert(alert_id).await?;
        let mut skipped = None;
        let outcome: Result<u16, (Option<u16>, String, bool)> = match self.channel(channel).await {
            Err(message) => Err((None, message, true)),
            Ok(None) => Err((None, format!("channel {channel} is not declared"), false)),
            Ok(Some(spec)) => {
                let min = spec
                    .min_severity
                    .and_then(|s| serde_json::to_value(s).ok())
                    .and_then(|v| v.as_str().map(|s| (s.to_owned(), severity_rank(s))));
                match min {
                    Some((name, rank)) if severity_rank(&alert.severity) < rank => {
                        skipped = Some(format!(
                            "severity {} is below the channel's minSeverity {name}",
                            alert.severity
                        ));
                        Ok(0)
                    }
                    _ => self.send(channel, &spec, &alert, event).await,
                }
            }
        };
        let (status, response_code, error, next_attempt_at) = match outcome {
            Ok(_) if skipped.is_some() => (DeliveryStatus::Skipped, None, skipped, None),
            Ok(code) => (DeliveryStatus::Succeeded, Some(code), None, None),
            Err((code, message, retry)) if retry && attempt < self.settings.max_attempts => {
                let wait = self.settings.backoff().random(attempt);
                let next = chrono::Duration::from_std(wait)
                    .ok()
                    .and_then(|w| now.checked_add_signed(w))
                    .unwrap_or(now);
                (DeliveryStatus::Retrying, code, Some(message), Some(next))
            }
            Err((code, message, _)) => (DeliveryStatus::Failed, code, Some(message), None),
        };
        if !matches!(status, DeliveryStatus::Succeeded | DeliveryStatus::Skipped) {
            tracing::warn!(alert = alert_id, channel, attempt, error = ?error, "notification not delivered");
        }
        self.store
            .finish_delivery(
                claim,
                &NewDelivery {
                    alert_id,
                    channel: channel.to_owned(),
                    event: event.as_str().to_owned(),
                    attempt: i64::from(attempt),
                    status,
                    response_code: response_code.map(i64::from),
                    error,
                    next_attempt_at,
                },
            )
            .await?;
        Ok(Attempted::Recorded(status))
    }

    /// Sends one webhook: the receiver's status, or the status (if any), the error and
    /// whether it is worth retrying.
    async fn send(
        &self,
        channel: &str,
        spec: &NotificationChannelSpec,
        alert: &Alert,
        event: NoticeEvent,
    ) -> Result<u16, (Option<u16>, String, bool)> {
        let secret = self
            .secret(channel, spec)
            .map_err(|message| (None, message, false))?;
        let body = AlertMessage::new(alert, event);
        let delivery_id = format!("{}-{channel}-{}", alert.id, event.as_str());
        let hook = Webhook {
            url: spec.webhook.url.url().as_str(),
            secret: secret.as_deref(),
            event: &body.event,
            delivery_id: &delivery_id,
            body: &body,
        };
        match self.sender.send(&hook).await {
            Ok(delivered) => Ok(delivered.status),
            Err(e) => Err((e.status(), e.to_string(), transient(&e))),
        }
    }

    /// Makes every delivery that is due at `now` (queued notifications and retries), one
    /// after the other. Returns how many were attempted.
    ///
    /// # Errors
    /// Store errors.
    pub async fn run_due(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let due = self.store.due_deliveries(now, 100).await?;
        let mut done = 0;
        for d in due {
            let Some(event) = NoticeEvent::parse(&d.event) else {
                continue;
            };
            let attempt = u32::try_from(d.attempt).unwrap_or(u32::MAX - 1) + 1;
            if self
                .attempt(d.alert_id, &d.channel, event, attempt, now)
                .await?
                != Attempted::AlreadyDone
            {
                done += 1;
            }
        }
        Ok(done)
    }
}

fn transient(e: &DeliveryError) -> bool {
    e.is_transient()
}

/// The webhook client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("build the webhook client: {0}")]
pub struct ClientError(String);

type Key = (i64, String, NoticeEvent);

/// Starts one attempt in its own task unless the same delivery is already under way.
fn start(
    tasks: &mut tokio::task::JoinSet<()>,
    in_flight: &Arc<Mutex<HashSet<Key>>>,
    notifier: &Notifier,
    key: Key,
    attempt: u32,
) {
    if !in_flight
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key.clone())
    {
        return;
    }
    let notifier = notifier.clone();
    let in_flight = Arc::clone(in_flight);
    tasks.spawn(async move {
        let (alert_id, channel, event) = &key;
        if let Err(e) = notifier
            .attempt(*alert_id, channel, *event, attempt, Utc::now())
            .await
        {
            tracing::error!(alert = alert_id, channel = %channel, error = %e, "record notification attempt");
        }
        in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
    });
}

/// Delivers notices as they come and retries from the log as they fall due, each attempt in
/// its own task, until `cancel` fires or the notices channel closes. Attempts under way at
/// shutdown get one attempt timeout to finish.
pub async fn run_notifier(
    notifier: Notifier,
    mut notices: mpsc::UnboundedReceiver<Notice>,
    cancel: CancellationToken,
) {
    let in_flight: Arc<Mutex<HashSet<Key>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut scan = tokio::time::interval(notifier.settings.scan_every);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            notice = notices.recv() => {
                let Some(notice) = notice else { break };
                for channel in &notice.channels {
                    let key = (notice.alert.id, channel.clone(), notice.event);
                    start(&mut tasks, &in_flight, &notifier, key, 1);
                }
            }
            _ = scan.tick() => {
                match notifier.store.due_deliveries(Utc::now(), 100).await {
                    Ok(due) => {
                        for d in due {
                            let Some(event) = NoticeEvent::parse(&d.event) else { continue };
                            let attempt = u32::try_from(d.attempt).unwrap_or(u32::MAX - 1) + 1;
                            start(&mut tasks, &in_flight, &notifier, (d.alert_id, d.channel, event), attempt);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "list due notification retries"),
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    let limit = notifier.settings.timeout + Duration::from_secs(1);
    let _ = tokio::time::timeout(limit, async { while tasks.join_next().await.is_some() {} }).await;
}
