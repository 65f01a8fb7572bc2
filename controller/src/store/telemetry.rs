//! Telemetry storage: devices and their online state, readings (batched inserts, range
//! queries, the latest value per register, bucketed summaries computed in SQL, retention in
//! small batches), alerts (one open alert per rule and device) and notification deliveries.
//! Reading times are stored as integer microseconds since the Unix epoch on both backends.
//! This module does not evaluate rules or decide when a device is offline beyond counting.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AssertSqlSafe;

use super::codec::{db_time, from_micros, to_micros};
use super::{Backend, Dialect, Result, Store, StoreError, db_err, on_pool};
use crate::model::{AlertState, DeliveryStatus};

/// SQLite allows 32766 bound parameters per statement; 4 per reading gives 8191 rows. A
/// smaller chunk keeps statements cache-friendly and is as fast.
const SQLITE_ROWS_PER_INSERT: usize = 1000;

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
    /// Value.
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
    /// State.
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
    /// Id.
    pub id: i64,
    /// Alert.
    pub alert_id: i64,
    /// Channel.
    pub channel: String,
    /// `firing` or `resolved`.
    pub event: String,
    /// Attempt number.
    pub attempt: i64,
    /// Outcome.
    pub status: DeliveryStatus,
    /// Receiver's HTTP status.
    pub response_code: Option<i64>,
    /// Error.
    pub error: Option<String>,
    /// Next attempt due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Recorded.
    pub created_at: DateTime<Utc>,
}

macro_rules! alert_columns {
    () => {
        "id, rule, device, state, severity, value, opened_at, firing_at, resolved_at, \
         acknowledged_by, acknowledged_at, updated_at"
    };
}

/// The newest reading of each series in a batch.
fn newest_per_series(readings: &[Reading]) -> Vec<(&str, &str, i64, f64)> {
    let mut newest: HashMap<(&str, &str), (i64, f64)> = HashMap::new();
    for r in readings {
        let ts = to_micros(r.time);
        let slot = newest
            .entry((r.device.as_str(), r.register.as_str()))
            .or_insert((ts, r.value));
        if ts >= slot.0 {
            *slot = (ts, r.value);
        }
    }
    let mut out: Vec<_> = newest
        .into_iter()
        .map(|((d, reg), (ts, v))| (d, reg, ts, v))
        .collect();
    out.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    out
}

fn sqlite_insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(80 + rows * 18);
    sql.push_str("INSERT INTO readings (device, register, ts, value) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        let b = i * 4;
        sql.push_str(&format!("(${},${},${},${})", b + 1, b + 2, b + 3, b + 4));
    }
    sql.push_str(" ON CONFLICT DO NOTHING");
    sql
}

const UPSERT_LATEST: &str = "INSERT INTO latest_readings (device, register, ts, value) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (device, register) DO UPDATE \
     SET ts = excluded.ts, value = excluded.value WHERE excluded.ts >= latest_readings.ts";

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

    /// Stores a batch of readings in one transaction with multi-row inserts (SQLite) or one
    /// `UNNEST` insert (PostgreSQL), and updates the latest value of every series in it.
    /// A reading whose (device, register, time) is already stored is ignored. Returns how
    /// many readings were new.
    pub async fn insert_readings(&self, readings: &[Reading]) -> Result<u64> {
        if readings.is_empty() {
            return Ok(0);
        }
        let newest = newest_per_series(readings);
        let inserted = match self.backend() {
            Backend::Sqlite(pool) => {
                let mut tx = pool
                    .begin_write()
                    .await
                    .map_err(db_err("begin insert readings"))?;
                let full_sql = sqlite_insert_sql(SQLITE_ROWS_PER_INSERT);
                let mut inserted = 0;
                for chunk in readings.chunks(SQLITE_ROWS_PER_INSERT) {
                    let sql = if chunk.len() == SQLITE_ROWS_PER_INSERT {
                        full_sql.clone()
                    } else {
                        sqlite_insert_sql(chunk.len())
                    };
                    let mut q = sqlx::query(AssertSqlSafe(sql));
                    for r in chunk {
                        q = q
                            .bind(r.device.clone())
                            .bind(r.register.clone())
                            .bind(to_micros(r.time))
                            .bind(r.value);
                    }
                    inserted += q
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err("insert readings"))?
                        .rows_affected();
                }
                for (device, register, ts, value) in &newest {
                    sqlx::query(UPSERT_LATEST)
                        .bind(*device)
                        .bind(*register)
                        .bind(*ts)
                        .bind(*value)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err("update latest readings"))?;
                }
                tx.commit().await.map_err(db_err("commit readings"))?;
                inserted
            }
            Backend::Postgres(pool) => {
                let mut tx = pool
                    .begin()
                    .await
                    .map_err(db_err("begin insert readings"))?;
                let devices: Vec<&str> = readings.iter().map(|r| r.device.as_str()).collect();
                let registers: Vec<&str> = readings.iter().map(|r| r.register.as_str()).collect();
                let times: Vec<i64> = readings.iter().map(|r| to_micros(r.time)).collect();
                let values: Vec<f64> = readings.iter().map(|r| r.value).collect();
                let inserted = sqlx::query(
                    "INSERT INTO readings (device, register, ts, value) \
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::float8[]) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&devices)
                .bind(&registers)
                .bind(&times)
                .bind(&values)
                .execute(&mut *tx)
                .await
                .map_err(db_err("insert readings"))?
                .rows_affected();
                let devices: Vec<&str> = newest.iter().map(|n| n.0).collect();
                let registers: Vec<&str> = newest.iter().map(|n| n.1).collect();
                let times: Vec<i64> = newest.iter().map(|n| n.2).collect();
                let values: Vec<f64> = newest.iter().map(|n| n.3).collect();
                sqlx::query(
                    "INSERT INTO latest_readings (device, register, ts, value) \
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::float8[]) \
                     ON CONFLICT (device, register) DO UPDATE \
                     SET ts = excluded.ts, value = excluded.value \
                     WHERE excluded.ts >= latest_readings.ts",
                )
                .bind(&devices)
                .bind(&registers)
                .bind(&times)
                .bind(&values)
                .execute(&mut *tx)
                .await
                .map_err(db_err("update latest readings"))?;
                tx.commit().await.map_err(db_err("commit readings"))?;
                inserted
            }
        };
        Ok(inserted)
    }

    /// Readings of one register in `[from, to)`, oldest first, at most `limit`.
    pub async fn query_readings(
        &self,
        device: &str,
        register: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Reading>> {
        let rows: Vec<(i64, f64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT ts, value FROM readings WHERE device = $1 AND register = $2 \
                 AND ts >= $3 AND ts < $4 ORDER BY ts LIMIT $5",
            )
            .bind(device)
            .bind(register)
            .bind(to_micros(from))
            .bind(to_micros(to))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(db_err("query readings"))?
        });
        Ok(rows
            .into_iter()
            .map(|(ts, value)| Reading {
                device: device.to_owned(),
                register: register.to_owned(),
                time: from_micros(ts),
                value,
            })
            .collect())
    }

    /// The latest value of every register of one device, by register name.
    pub async fn latest_readings(&self, device: &str) -> Result<Vec<LatestReading>> {
        let rows: Vec<(String, i64, f64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT register, ts, value FROM latest_readings WHERE device = $1 \
                 ORDER BY register",
            )
            .bind(device)
            .fetch_all(pool)
            .await
            .map_err(db_err("latest readings"))?
        });
        Ok(rows
            .into_iter()
            .map(|(register, ts, value)| LatestReading {
                register,
                time: from_micros(ts),
                value,
            })
            .collect())
    }

    /// Min, max, average and count per `bucket` of one register in `[from, to)`, computed in
    /// the database. Buckets are aligned to the Unix epoch; empty buckets are omitted.
    pub async fn summarize_readings(
        &self,
        device: &str,
        register: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        bucket: Duration,
    ) -> Result<Vec<ReadingBucket>> {
        let bucket_us = i64::try_from(bucket.as_micros()).unwrap_or(i64::MAX).max(1);
        let rows: Vec<(i64, f64, f64, f64, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT (ts / $5) * $5 AS bucket, MIN(value), MAX(value), AVG(value), COUNT(*) \
                 FROM readings WHERE device = $1 AND register = $2 AND ts >= $3 AND ts < $4 \
                 GROUP BY bucket ORDER BY bucket",
            )
            .bind(device)
            .bind(register)
            .bind(to_micros(from))
            .bind(to_micros(to))
            .bind(bucket_us)
            .fetch_all(pool)
            .await
            .map_err(db_err("summarize readings"))?
        });
        Ok(rows
            .into_iter()
            .map(|(start, min, max, avg, count)| ReadingBucket {
                start: from_micros(start),
                min,
                max,
                avg,
                count,
            })
            .collect())
    }

    /// Deletes up to `batch` readings older than `cutoff`, series by series through the
    /// primary key, so each statement is short and never scans the table. Returns how many
    /// were deleted; call again until it returns 0.
    pub async fn delete_readings_before(&self, cutoff: DateTime<Utc>, batch: u32) -> Result<u64> {
        let cutoff = to_micros(cutoff);
        let series: Vec<(String, String)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT device, register FROM latest_readings ORDER BY device, register")
                .fetch_all(pool)
                .await
                .map_err(db_err("list reading series"))?
        });
        let mut left = u64::from(batch);
        let mut deleted = 0;
        for (device, register) in series {
            if left == 0 {
                break;
            }
            let n = on_pool!(self, pool => {
                sqlx::query(
                    "DELETE FROM readings WHERE device = $1 AND register = $2 AND ts IN \
                     (SELECT ts FROM readings WHERE device = $1 AND register = $2 AND ts < $3 \
                     ORDER BY ts LIMIT $4)",
                )
                .bind(&device)
                .bind(&register)
                .bind(cutoff)
                .bind(i64::try_from(left).unwrap_or(i64::MAX))
                .execute(pool)
                .await
                .map_err(db_err("delete old readings"))?
                .rows_affected()
            });
            deleted += n;
            left = left.saturating_sub(n);
        }
        Ok(deleted)
    }

    /// Opens an alert for `rule` on `device` unless one is already open (pending or firing);
    /// returns the open alert and whether it was created now. The partial unique index makes
    /// a second open alert impossible even under races.
    pub async fn open_alert(
        &self,
        rule: &str,
        device: &str,
        state: AlertState,
        severity: &str,
        value: Option<f64>,
        now: DateTime<Utc>,
    ) -> Result<(Alert, bool)> {
        if state == AlertState::Resolved {
            return Err(StoreError::InvalidInput {
                what: "alert",
                message: "an alert cannot be opened resolved".to_owned(),
            });
        }
        let now = db_time(now);
        let firing_at = (state == AlertState::Firing).then_some(now);
        on_pool!(self, pool => {
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
            .fetch_optional(pool)
            .await
            .map_err(db_err("open alert"))?;
            if let Some(alert) = created {
                return Ok((alert, true));
            }
            let open: Alert = sqlx::query_as(concat!(
                "SELECT ", alert_columns!(), " FROM alerts \
                 WHERE rule = $1 AND device = $2 AND state <> 'resolved'"
            ))
            .bind(rule)
            .bind(device)
            .fetch_optional(pool)
            .await
            .map_err(db_err("find open alert"))?
            .ok_or_else(|| StoreError::not_found("open alert", format!("{rule}/{device}")))?;
            Ok((open, false))
        })
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
    /// pending -> resolved, firing -> resolved); returns whether it took effect.
    pub async fn transition_alert(
        &self,
        id: i64,
        from: AlertState,
        to: AlertState,
        value: Option<f64>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let now = db_time(now);
        let firing_at = (to == AlertState::Firing).then_some(now);
        let resolved_at = (to == AlertState::Resolved).then_some(now);
        on_pool!(self, pool => {
            Ok(sqlx::query(
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
            .execute(pool)
            .await
            .map_err(db_err("update alert state"))?
            .rows_affected()
                == 1)
        })
    }

    /// Acknowledges an alert; returns whether it was not acknowledged before.
    pub async fn ack_alert(&self, id: i64, user: &str, now: DateTime<Utc>) -> Result<bool> {
        on_pool!(self, pool => {
            Ok(sqlx::query(
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
                == 1)
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_insert_sql_should_number_four_placeholders_per_row() {
        assert_eq!(
            sqlite_insert_sql(2),
            "INSERT INTO readings (device, register, ts, value) VALUES \
             ($1,$2,$3,$4),($5,$6,$7,$8) ON CONFLICT DO NOTHING"
        );
    }

    #[test]
    fn newest_per_series_should_keep_the_latest_time_of_each_register() {
        let t = |s| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or_default();
        let r = |reg: &str, s, v| Reading {
            device: "fm-1".into(),
            register: reg.into(),
            time: t(s),
            value: v,
        };
        let batch = [
            r("a", 2, 2.0),
            r("a", 3, 3.0),
            r("a", 1, 1.0),
            r("b", 5, 5.0),
        ];
        let newest = newest_per_series(&batch);
        assert_eq!(
            newest,
            vec![("fm-1", "a", 3_000_000, 3.0), ("fm-1", "b", 5_000_000, 5.0)]
        );
    }
}
