//! Telemetry storage: devices and their online state, the reading types (their SQL is in
//! `readings.rs`), alerts (one open alert per rule and device) and notification deliveries.
//! This module does not evaluate rules or decide when a device is offline beyond counting.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::codec::db_time;
use super::{Dialect as _, Result, Store, StoreError, db_err, on_pool};
use crate::events::Event;
use crate::model::{AlertState, DeliveryStatus};

/// One reading of one register.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    /// Device name.
    pub device: String,
    /// Register name.
    pub register: String,
    /// When it was read.
    pub time: DateTime<Utc>,
    /// Decoded, scaled value.
    pub value: f64,
}

/// The newest value of one register.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatestReading {
    /// Register name.
    pub register: String,
    /// When it was read.
    pub time: DateTime<Utc>,
    /// The scaled value of the register.
    pub value: f64,
}

/// Aggregates of one time bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadingBucket {
    /// Start of the bucket.
    pub start: DateTime<Utc>,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value.
    pub avg: f64,
    /// Number of readings.
    pub count: i64,
}

/// A device's telemetry state.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Device {
    /// Device name (the ModbusDevice's name).
    pub name: String,
    /// Whether it answered recently enough.
    pub online: bool,
    /// Last successful poll or push.
    pub last_seen: Option<DateTime<Utc>>,
    /// Last failure.
    pub last_error: Option<String>,
    /// Failed polls since the last success.
    pub consecutive_failures: i64,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Alert {
    /// Alert id.
    pub id: i64,
    /// AlertRule name.
    pub rule: String,
    /// Device name.
    pub device: String,
    /// Where the alert is in its lifecycle (pending, firing, resolved).
    pub state: AlertState,
    /// Severity copied from the rule.
    pub severity: String,
    /// The value that triggered it (or the latest one seen).
    pub value: Option<f64>,
    /// When the condition was first seen.
    pub opened_at: DateTime<Utc>,
    /// When it started firing.
    pub firing_at: Option<DateTime<Utc>>,
    /// When it resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// One notification delivery attempt to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// The alert notified about.
    pub alert_id: i64,
    /// Channel name.
    pub channel: String,
    /// `firing` or `resolved`.
    pub event: String,
    /// Attempt number, from 1.
    pub attempt: i64,
    /// Outcome.
    pub status: DeliveryStatus,
    /// HTTP status of the receiver, if it answered.
    pub response_code: Option<i64>,
    /// Error text, if it failed.
    pub error: Option<String>,
    /// When the next attempt is due, if one is scheduled.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// A recorded delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Delivery {
    /// The attempt's row id.
    pub id: i64,
    /// Alert.
    pub alert_id: i64,
    /// The notification channel it went to.
    pub channel: String,
    /// `firing` or `resolved`.
    pub event: String,
    /// Attempt number.
    pub attempt: i64,
    /// Outcome.
    pub status: DeliveryStatus,
    /// Receiver's HTTP status.
    pub response_code: Option<i64>,
    /// Why the attempt failed, if it did.
    pub error: Option<String>,
    /// Next attempt due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Recorded.
    pub created_at: DateTime<Utc>,
}

/// A `queued` delivery (attempt 0) of ($1 alert, $2 channel, $3 event), due at $4; at most
/// one per (alert, channel, event).
const QUEUE_NOTIFICATION: &str = "INSERT INTO notification_deliveries (alert_id, channel, event, \
     attempt, status, next_attempt_at, created_at) VALUES ($1, $2, $3, 0, 'queued', $4, $4) \
     ON CONFLICT DO NOTHING";

macro_rules! alert_columns {
    () => {
        "id, rule, device, state, severity, value, opened_at, firing_at, resolved_at, \
         acknowledged_by, acknowledged_at, updated_at"
    };
}

impl Store {
    /// Registers a device (or touches it) without changing its state.
    pub async fn ensure_device(&self, name: &str, now: DateTime<Utc>) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO devices (name, updated_at) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(db_time(now))
            .execute(pool)
            .await
            .map_err(db_err("ensure device"))?;
            Ok(())
        })
    }

    /// Records a successful poll or push: online, seen now, failure count reset.
    pub async fn record_device_seen(&self, name: &str, now: DateTime<Utc>) -> Result<Device> {
        let now = db_time(now);
        on_pool!(self, pool => {
            sqlx::query_as::<_, Device>(
                "INSERT INTO devices (name, online, last_seen, consecutive_failures, updated_at) \
                 VALUES ($1, TRUE, $2, 0, $2) ON CONFLICT (name) DO UPDATE SET online = TRUE, \
                 last_seen = excluded.last_seen, consecutive_failures = 0, \
                 updated_at = excluded.updated_at \
                 RETURNING name, online, last_seen, last_error, consecutive_failures, updated_at",
            )
            .bind(name)
            .bind(now)
            .fetch_one(pool)
            .await
            .map_err(db_err("record device seen"))
        })
    }

    /// Records a failed poll; the device goes offline once `offline_after` consecutive polls
    /// failed. Returns the updated device.
    pub async fn record_device_failure(
        &self,
        name: &str,
        error: &str,
        offline_after: i64,
        now: DateTime<Utc>,
    ) -> Result<Device> {
        let now = db_time(now);
        on_pool!(self, pool => {
            sqlx::query_as::<_, Device>(
                "INSERT INTO devices (name, online, last_error, consecutive_failures, updated_at) \
                 VALUES ($1, $3 > 1, $2, 1, $4) ON CONFLICT (name) DO UPDATE SET \
                 consecutive_failures = devices.consecutive_failures + 1, \
                 online = devices.online AND devices.consecutive_failures + 1 < $3, \
                 last_error = excluded.last_error, updated_at = excluded.updated_at \
                 RETURNING name, online, last_seen, last_error, consecutive_failures, updated_at",
            )
            .bind(name)
            .bind(error)
            .bind(offline_after)
            .bind(now)
            .fetch_one(pool)
            .await
            .map_err(db_err("record device failure"))
        })
    }

    /// Moves `last_seen` of the named devices to `now` in one statement, for the batches of
    /// successful polls; only devices that are online with no failure since their last
    /// success are touched, so a failure recorded meanwhile is never overwritten (coming back
    /// online goes through [`Store::record_device_seen`]). Returns how many were touched.
    pub async fn touch_devices_seen(&self, names: &[String], now: DateTime<Utc>) -> Result<u64> {
        if names.is_empty() {
            return Ok(0);
        }
        let list = serde_json::to_string(names).map_err(|e| StoreError::InvalidInput {
            what: "device names",
            message: e.to_string(),
        })?;
        on_pool!(self, pool => {
            let sql = pool.pick(
                "UPDATE devices SET last_seen = $2, updated_at = $2 \
                 WHERE name IN (SELECT value FROM json_each($1)) \
                 AND online AND consecutive_failures = 0",
                "UPDATE devices SET last_seen = $2, updated_at = $2 \
                 WHERE name IN (SELECT json_array_elements_text($1::json)) \
                 AND online AND consecutive_failures = 0",
            );
            Ok(sqlx::query(sql)
                .bind(&list)
                .bind(db_time(now))
                .execute(pool)
                .await
                .map_err(db_err("touch devices seen"))?
                .rows_affected())
        })
    }

    /// Every device, by name.
    pub async fn list_devices(&self) -> Result<Vec<Device>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, Device>(
                "SELECT name, online, last_seen, last_error, consecutive_failures, updated_at \
                 FROM devices ORDER BY name",
            )
            .fetch_all(pool)
            .await
            .map_err(db_err("list devices"))
        })
    }

    /// Reads one device.
    pub async fn get_device(&self, name: &str) -> Result<Device> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, Device>(
                "SELECT name, online, last_seen, last_error, consecutive_failures, updated_at \
                 FROM devices WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(pool)
            .await
            .map_err(db_err("get device"))?
            .ok_or_else(|| StoreError::not_found("device", name))
        })
    }

    /// Opens an alert for `rule` on `device` unless one is already open (pending or firing);
    /// returns the open alert and whether it was created now. The partial unique index makes
    /// a second open alert impossible even under races. Queues no notification (see
    /// [`Store::open_alert_notifying`]).
    pub async fn open_alert(
        &self,
        rule: &str,
        device: &str,
        state: AlertState,
        severity: &str,
        value: Option<f64>,
        now: DateTime<Utc>,
    ) -> Result<(Alert, bool)> {
        self.open_alert_notifying(rule, device, state, severity, value, now, &[])
            .await
    }

    /// [`Store::open_alert`], and when the alert is created firing, queues a `firing`
    /// notification to each of `channels` in the same transaction (see
    /// [`Store::queue_notification`]), so a crash right after cannot lose it.
    #[allow(clippy::too_many_arguments)]
    pub async fn open_alert_notifying(
        &self,
        rule: &str,
        device: &str,
        state: AlertState,
        severity: &str,
        value: Option<f64>,
        now: DateTime<Utc>,
        channels: &[String],
    ) -> Result<(Alert, bool)> {
        if state == AlertState::Resolved {
            return Err(StoreError::InvalidInput {
                what: "alert",
                message: "an alert cannot be opened resolved".to_owned(),
            });
        }
        let now = db_time(now);
        let firing_at = (state == AlertState::Firing).then_some(now);
        let (alert, created) = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err("begin open alert"))?;
            let created: Option<Alert> = sqlx::query_as(concat!(
                "INSERT INTO alerts (rule, device, state, severity, value, opened_at, firing_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $6) \
                 ON CONFLICT (rule, device) WHERE state <> 'resolved' DO NOTHING \
                 RETURNING ", alert_columns!()
            ))
            .bind(rule)
            .bind(device)
            .bind(state)
            .bind(severity)
            .bind(value)
            .bind(now)
            .bind(firing_at)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("open alert"))?;
            let found = match created {
                Some(alert) => {
                    if state == AlertState::Firing {
                        for channel in channels {
                            sqlx::query(QUEUE_NOTIFICATION)
                                .bind(alert.id)
                                .bind(channel)
                                .bind("firing")
                                .bind(now)
                                .execute(&mut *tx)
                                .await
                                .map_err(db_err("queue notification"))?;
                        }
                    }
                    (alert, true)
                }
                None => {
                    let open: Alert = sqlx::query_as(concat!(
                        "SELECT ", alert_columns!(), " FROM alerts \
                         WHERE rule = $1 AND device = $2 AND state <> 'resolved'"
                    ))
                    .bind(rule)
                    .bind(device)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err("find open alert"))?
                    .ok_or_else(|| StoreError::not_found("open alert", format!("{rule}/{device}")))?;
                    (open, false)
                }
            };
            tx.commit().await.map_err(db_err("commit open alert"))?;
            found
        });
        if created {
            self.events().publish(Event::Alert {
                alert_id: alert.id,
                state: state.as_str().to_owned(),
            });
        }
        Ok((alert, created))
    }

    /// The open (pending or firing) alert of a rule on a device, if any.
    pub async fn get_open_alert(&self, rule: &str, device: &str) -> Result<Option<Alert>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, Alert>(concat!(
                "SELECT ", alert_columns!(), " FROM alerts \
                 WHERE rule = $1 AND device = $2 AND state <> 'resolved'"
            ))
            .bind(rule)
            .bind(device)
            .fetch_optional(pool)
            .await
            .map_err(db_err("get open alert"))
        })
    }

    /// Reads one alert.
    pub async fn get_alert(&self, id: i64) -> Result<Alert> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, Alert>(concat!("SELECT ", alert_columns!(), " FROM alerts WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(db_err("get alert"))?
                .ok_or_else(|| StoreError::not_found("alert", id))
        })
    }

    /// Moves an alert from `from` to `to` if it is still in `from` (pending -> firing,
    /// pending -> resolved, firing -> resolved); returns whether it took effect. Queues no
    /// notification (see [`Store::transition_alert_notifying`]).
    pub async fn transition_alert(
        &self,
        id: i64,
        from: AlertState,
        to: AlertState,
        value: Option<f64>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.transition_alert_notifying(id, from, to, value, now, &[])
            .await
    }

    /// [`Store::transition_alert`], and when it takes effect towards `firing` or `resolved`,
    /// queues that notification to each of `channels` in the same transaction (see
    /// [`Store::queue_notification`]): the change and its notifications are recorded
    /// together or not at all.
    pub async fn transition_alert_notifying(
        &self,
        id: i64,
        from: AlertState,
        to: AlertState,
        value: Option<f64>,
        now: DateTime<Utc>,
        channels: &[String],
    ) -> Result<bool> {
        let now = db_time(now);
        let firing_at = (to == AlertState::Firing).then_some(now);
        let resolved_at = (to == AlertState::Resolved).then_some(now);
        let event = match to {
            AlertState::Firing => Some("firing"),
            AlertState::Resolved => Some("resolved"),
            AlertState::Pending => None,
        };
        let done = on_pool!(self, pool => {
            let mut tx = pool
                .begin_write()
                .await
                .map_err(db_err("begin alert transition"))?;
            let done = sqlx::query(
                "UPDATE alerts SET state = $3, value = COALESCE($4, value), updated_at = $5, \
                 firing_at = COALESCE(firing_at, $6), resolved_at = COALESCE($7, resolved_at) \
                 WHERE id = $1 AND state = $2",
            )
            .bind(id)
            .bind(from)
            .bind(to)
            .bind(value)
            .bind(now)
            .bind(firing_at)
            .bind(resolved_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err("update alert state"))?
            .rows_affected()
                == 1;
            if done && let Some(event) = event {
                for channel in channels {
                    sqlx::query(QUEUE_NOTIFICATION)
                        .bind(id)
                        .bind(channel)
                        .bind(event)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err("queue notification"))?;
                }
            }
            tx.commit().await.map_err(db_err("commit alert transition"))?;
            done
        });
        if done {
            self.events().publish(Event::Alert {
                alert_id: id,
                state: to.as_str().to_owned(),
            });
        }
        Ok(done)
    }

    /// Queues notification `event` (`firing` or `resolved`) of alert `id` to `channel`: a
    /// `queued` delivery row (attempt 0) due at `now`, which the notifier picks up like a
    /// retry. Queueing the same (alert, channel, event) again does nothing; returns whether a
    /// row was added.
    pub async fn queue_notification(
        &self,
        id: i64,
        channel: &str,
        event: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        on_pool!(self, pool => {
            Ok(sqlx::query(QUEUE_NOTIFICATION)
                .bind(id)
                .bind(channel)
                .bind(event)
                .bind(db_time(now))
                .execute(pool)
                .await
                .map_err(db_err("queue notification"))?
                .rows_affected()
                == 1)
        })
    }

    /// Deletes an alert that is still pending: its condition cleared before `for` was over,
    /// so it never fired and nobody was notified. Keeps a value flapping around a threshold
    /// from leaving a trail of pending alerts. Returns whether it was deleted.
    pub async fn discard_pending_alert(&self, id: i64) -> Result<bool> {
        let done = on_pool!(self, pool => {
            sqlx::query("DELETE FROM alerts WHERE id = $1 AND state = 'pending'")
                .bind(id)
                .execute(pool)
                .await
                .map_err(db_err("discard pending alert"))?
                .rows_affected()
                == 1
        });
        if done {
            self.events().publish(Event::Alert {
                alert_id: id,
                state: "discarded".to_owned(),
            });
        }
        Ok(done)
    }

    /// Acknowledges an alert; returns whether it was not acknowledged before.
    pub async fn ack_alert(&self, id: i64, user: &str, now: DateTime<Utc>) -> Result<bool> {
        let done = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE alerts SET acknowledged_by = $2, acknowledged_at = $3, updated_at = $3 \
                 WHERE id = $1 AND acknowledged_by IS NULL",
            )
            .bind(id)
            .bind(user)
            .bind(db_time(now))
            .execute(pool)
            .await
            .map_err(db_err("acknowledge alert"))?
            .rows_affected()
                == 1
        });
        if done {
            self.events().publish(Event::Alert {
                alert_id: id,
                state: "acknowledged".to_owned(),
            });
        }
        Ok(done)
    }

    /// Alerts newest first, optionally only in one state.
    pub async fn list_alerts(&self, state: Option<AlertState>, limit: u32) -> Result<Vec<Alert>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, Alert>(concat!(
                "SELECT ", alert_columns!(), " FROM alerts WHERE ($1 IS NULL OR state = $1) \
                 ORDER BY id DESC LIMIT $2"
            ))
            .bind(state)
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(pool)
            .await
            .map_err(db_err("list alerts"))
        })
    }

    /// Records one notification delivery attempt and returns its id.
    pub async fn record_delivery(&self, d: &NewDelivery, now: DateTime<Utc>) -> Result<i64> {
        on_pool!(self, pool => {
            sqlx::query_scalar(
                "INSERT INTO notification_deliveries (alert_id, channel, event, attempt, status, \
                 response_code, error, next_attempt_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            )
            .bind(d.alert_id)
            .bind(&d.channel)
            .bind(&d.event)
            .bind(d.attempt)
            .bind(d.status)
            .bind(d.response_code)
            .bind(&d.error)
            .bind(d.next_attempt_at.map(db_time))
            .bind(db_time(now))
            .fetch_one(pool)
            .await
            .map_err(db_err("record delivery"))
        })
    }

    /// Claims attempt `attempt` of notifying `channel` about `event` on alert `alert_id`
    /// before it is sent: its row goes in as `retrying`, due at `deadline`, so an attempt
    /// that never finishes (the process died mid-send) is retried after the deadline. One row
    /// per attempt is enforced by a unique index, so of several notifiers (replicas) racing
    /// for the same attempt exactly one gets the row id; the others get `None` and send
    /// nothing. [`Store::finish_delivery`] records the outcome on the claimed row.
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_delivery(
        &self,
        alert_id: i64,
        channel: &str,
        event: &str,
        attempt: i64,
        deadline: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>> {
        on_pool!(self, pool => {
            sqlx::query_scalar(
                "INSERT INTO notification_deliveries (alert_id, channel, event, attempt, status, \
                 error, next_attempt_at, created_at) \
                 VALUES ($1, $2, $3, $4, 'retrying', $5, $6, $7) \
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(alert_id)
            .bind(channel)
            .bind(event)
            .bind(attempt)
            .bind("attempt under way; retried if it does not finish by next_attempt_at")
            .bind(db_time(deadline))
            .bind(db_time(now))
            .fetch_optional(pool)
            .await
            .map_err(db_err("claim delivery"))
        })
    }

    /// Records the outcome of a claimed attempt (see [`Store::claim_delivery`]) on its row:
    /// status, response code, error and, for a retry, when the next attempt is due.
    pub async fn finish_delivery(&self, id: i64, outcome: &NewDelivery) -> Result<()> {
        let done = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE notification_deliveries SET status = $2, response_code = $3, error = $4, \
                 next_attempt_at = $5 WHERE id = $1",
            )
            .bind(id)
            .bind(outcome.status)
            .bind(outcome.response_code)
            .bind(&outcome.error)
            .bind(outcome.next_attempt_at.map(db_time))
            .execute(pool)
            .await
            .map_err(db_err("finish delivery"))?
            .rows_affected()
        });
        if done == 1 {
            Ok(())
        } else {
            Err(StoreError::not_found("delivery", id))
        }
    }

    /// Deliveries whose next attempt is due at `now`: the newest row of each (alert,
    /// channel, event) when it is `queued` or `retrying` with `next_attempt_at <= now`,
    /// earliest due first. Lets a restarted notifier pick up the notifications queued and the
    /// retries scheduled before it stopped.
    pub async fn due_deliveries(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Delivery>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, Delivery>(
                "SELECT id, alert_id, channel, event, attempt, status, response_code, error, \
                 next_attempt_at, created_at FROM notification_deliveries d \
                 WHERE status IN ('queued', 'retrying') AND next_attempt_at <= $1 \
                 AND NOT EXISTS (SELECT 1 FROM notification_deliveries n \
                     WHERE n.alert_id = d.alert_id AND n.channel = d.channel \
                     AND n.event = d.event AND n.id > d.id) \
                 ORDER BY next_attempt_at, id LIMIT $2",
            )
            .bind(db_time(now))
            .bind(i64::from(limit.clamp(1, 10_000)))
            .fetch_all(pool)
            .await
            .map_err(db_err("list due deliveries"))
        })
    }

    /// The newest delivery row of (alert, channel, event), if any.
    pub async fn latest_delivery(
        &self,
        alert_id: i64,
        channel: &str,
        event: &str,
    ) -> Result<Option<Delivery>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, Delivery>(
                "SELECT id, alert_id, channel, event, attempt, status, response_code, error, \
                 next_attempt_at, created_at FROM notification_deliveries \
                 WHERE alert_id = $1 AND channel = $2 AND event = $3 ORDER BY id DESC LIMIT 1",
            )
            .bind(alert_id)
            .bind(channel)
            .bind(event)
            .fetch_optional(pool)
            .await
            .map_err(db_err("latest delivery"))
        })
    }

    /// The delivery attempts of an alert, oldest first.
    pub async fn list_deliveries(&self, alert_id: i64) -> Result<Vec<Delivery>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, Delivery>(
                "SELECT id, alert_id, channel, event, attempt, status, response_code, error, \
                 next_attempt_at, created_at FROM notification_deliveries \
                 WHERE alert_id = $1 ORDER BY id",
            )
            .bind(alert_id)
            .fetch_all(pool)
            .await
            .map_err(db_err("list deliveries"))
        })
    }
}
