//! Readings: batched inserts, range queries, the latest value per register, bucketed
//! summaries computed in SQL, and retention in small batches. Each (device, register) pair is
//! a row of `series` (which also carries its newest reading); `readings` rows refer to it by
//! an integer key, which keeps the big table and its clustered key small. Times are integer
//! microseconds since the Unix epoch on both backends. No evaluation of values here.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::codec::{from_micros, to_micros};
use super::telemetry::{LatestReading, Reading, ReadingBucket};
use super::{Backend, Dialect, Result, Store, db_err, on_pool};

/// The newest reading of each series in a batch, sorted by device and register.
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

/// The rows of a batch as `(series_id, ts, value)`, sorted by series and time so that the
/// inserts walk the `(series_id, ts)` B-tree in order instead of jumping between its leaves (a
/// batch usually arrives as every register at one time, then the next time).
fn sorted_rows(
    readings: &[Reading],
    ids: &HashMap<(String, String), i64>,
) -> Result<Vec<(i64, i64, f64)>> {
    let by_name: HashMap<(&str, &str), i64> = ids
        .iter()
        .map(|((d, r), id)| ((d.as_str(), r.as_str()), *id))
        .collect();
    let mut rows = Vec::with_capacity(readings.len());
    for r in readings {
        let id = by_name
            .get(&(r.device.as_str(), r.register.as_str()))
            .copied()
            .ok_or_else(|| super::StoreError::Corrupt {
                op: "insert readings",
                message: format!("no series id for {}/{}", r.device, r.register),
            })?;
        rows.push((id, to_micros(r.time), r.value));
    }
    rows.sort_unstable_by_key(|&(id, ts, _)| (id, ts));
    Ok(rows)
}

/// The rows as a JSON array of `[series_id, ts, value]`, which SQLite unpacks with
/// `json_each` in one statement (one bound parameter instead of three per row).
fn rows_json(rows: &[(i64, i64, f64)]) -> Result<String> {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(rows.len() * 40);
    out.push('[');
    for (i, (id, ts, value)) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // serde_json writes the shortest text that parses back to the same f64.
        let value = serde_json::Value::from(*value);
        if !value.is_number() {
            return Err(super::StoreError::InvalidInput {
                what: "reading",
                message: format!("value of series {id} is not a finite number"),
            });
        }
        let _ = write!(out, "[{id},{ts},{value}]");
    }
    out.push(']');
    Ok(out)
}

impl Store {
    /// Stores a batch of readings in one transaction and moves each series' latest value
    /// forward. SQLite: one `json_each` upsert of the batch's series, then one `json_each`
    /// insert of all readings; PostgreSQL: the same with `UNNEST` arrays. A reading whose (device,
    /// register, time) is already stored is ignored; a non-finite value is refused. Returns
    /// how many readings were new.
    pub async fn insert_readings(&self, readings: &[Reading]) -> Result<u64> {
        if readings.is_empty() {
            return Ok(0);
        }
        if let Some(bad) = readings.iter().find(|r| !r.value.is_finite()) {
            return Err(super::StoreError::InvalidInput {
                what: "reading",
                message: format!(
                    "value of {}/{} is not a finite number",
                    bad.device, bad.register
                ),
            });
        }
        let newest = newest_per_series(readings);
        match self.backend() {
            Backend::Sqlite(pool) => {
                let mut tx = pool
                    .begin_write()
                    .await
                    .map_err(db_err("begin insert readings"))?;
                let series_json = serde_json::to_string(&newest).map_err(|e| {
                    super::StoreError::InvalidInput {
                        what: "reading",
                        message: e.to_string(),
                    }
                })?;
                let ids: HashMap<(String, String), i64> =
                    sqlx::query_as::<_, (i64, String, String)>(concat!(
                        "INSERT INTO series (device, register, latest_ts, latest_value) \
                         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 \
                         FROM json_each($1) WHERE TRUE",
                        " ON CONFLICT (device, register) DO UPDATE SET \
                         latest_value = CASE WHEN series.latest_ts IS NULL \
                             OR excluded.latest_ts >= series.latest_ts \
                             THEN excluded.latest_value ELSE series.latest_value END, \
                         latest_ts = CASE WHEN series.latest_ts IS NULL \
                             OR excluded.latest_ts >= series.latest_ts \
                             THEN excluded.latest_ts ELSE series.latest_ts END \
                         RETURNING id, device, register"
                    ))
                    .bind(series_json)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err("upsert reading series"))?
                    .into_iter()
                    .map(|(id, d, r)| ((d, r), id))
                    .collect();
                let json = rows_json(&sorted_rows(readings, &ids)?)?;
                let inserted = sqlx::query(
                    "INSERT INTO readings (series_id, ts, value) \
                     SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each($1) WHERE TRUE \
                     ON CONFLICT DO NOTHING",
                )
                .bind(json)
                .execute(&mut *tx)
                .await
                .map_err(db_err("insert readings"))?
                .rows_affected();
                tx.commit().await.map_err(db_err("commit readings"))?;
                Ok(inserted)
            }
            Backend::Postgres(pool) => {
                let mut tx = pool
                    .begin()
                    .await
                    .map_err(db_err("begin insert readings"))?;
                let devices: Vec<&str> = newest.iter().map(|n| n.0).collect();
                let registers: Vec<&str> = newest.iter().map(|n| n.1).collect();
                let times: Vec<i64> = newest.iter().map(|n| n.2).collect();
                let values: Vec<f64> = newest.iter().map(|n| n.3).collect();
                let rows: Vec<(i64, String, String)> = sqlx::query_as(concat!(
                    "INSERT INTO series (device, register, latest_ts, latest_value) \
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::float8[])",
                    " ON CONFLICT (device, register) DO UPDATE SET \
                     latest_value = CASE WHEN series.latest_ts IS NULL \
                         OR excluded.latest_ts >= series.latest_ts \
                         THEN excluded.latest_value ELSE series.latest_value END, \
                     latest_ts = CASE WHEN series.latest_ts IS NULL \
                         OR excluded.latest_ts >= series.latest_ts \
                         THEN excluded.latest_ts ELSE series.latest_ts END \
                     RETURNING id, device, register"
                ))
                .bind(&devices)
                .bind(&registers)
                .bind(&times)
                .bind(&values)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err("upsert reading series"))?;
                let ids: HashMap<(String, String), i64> =
                    rows.into_iter().map(|(id, d, r)| ((d, r), id)).collect();
                let rows = sorted_rows(readings, &ids)?;
                let series_ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
                let times: Vec<i64> = rows.iter().map(|r| r.1).collect();
                let values: Vec<f64> = rows.iter().map(|r| r.2).collect();
                let inserted = sqlx::query(
                    "INSERT INTO readings (series_id, ts, value) \
                     SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::float8[]) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&series_ids)
                .bind(&times)
                .bind(&values)
                .execute(&mut *tx)
                .await
                .map_err(db_err("insert readings"))?
                .rows_affected();
                tx.commit().await.map_err(db_err("commit readings"))?;
                Ok(inserted)
            }
        }
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
                "SELECT ts, value FROM readings WHERE series_id = \
                 (SELECT id FROM series WHERE device = $1 AND register = $2) \
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
                "SELECT register, latest_ts, latest_value FROM series WHERE device = $1 \
                 AND latest_ts IS NOT NULL AND latest_value IS NOT NULL ORDER BY register",
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
                 FROM readings WHERE series_id = \
                 (SELECT id FROM series WHERE device = $1 AND register = $2) \
                 AND ts >= $3 AND ts < $4 GROUP BY bucket ORDER BY bucket",
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
    /// were deleted; call again until it returns 0. The latest value of a series is kept.
    pub async fn delete_readings_before(&self, cutoff: DateTime<Utc>, batch: u32) -> Result<u64> {
        let cutoff = to_micros(cutoff);
        let series: Vec<i64> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT id FROM series ORDER BY id")
                .fetch_all(pool)
                .await
                .map_err(db_err("list reading series"))?
        });
        let mut left = u64::from(batch);
        let mut deleted = 0;
        for id in series {
            if left == 0 {
                break;
            }
            let n = on_pool!(self, pool => {
                sqlx::query(
                    "DELETE FROM readings WHERE series_id = $1 AND ts IN \
                     (SELECT ts FROM readings WHERE series_id = $1 AND ts < $2 \
                     ORDER BY ts LIMIT $3)",
                )
                .bind(id)
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
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

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

    #[test]
    fn rows_json_should_refuse_non_finite_values() {
        let ids = HashMap::from([(("d".to_owned(), "r".to_owned()), 7)]);
        let ok = Reading {
            device: "d".into(),
            register: "r".into(),
            time: DateTime::<Utc>::UNIX_EPOCH,
            value: 0.1,
        };
        let rows = sorted_rows(std::slice::from_ref(&ok), &ids).unwrap();
        assert_eq!(rows_json(&rows).unwrap_or_default(), "[[7,0,0.1]]");
        assert!(rows_json(&[(7, 0, f64::NAN)]).is_err());
    }

    #[test]
    fn rows_should_be_sorted_by_series_then_time_and_unknown_series_refused() {
        let ids = HashMap::from([
            (("d".to_owned(), "a".to_owned()), 2),
            (("d".to_owned(), "b".to_owned()), 1),
        ]);
        let at = |secs: i64| DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(secs);
        let reading = |register: &str, secs: i64| Reading {
            device: "d".into(),
            register: register.into(),
            time: at(secs),
            value: secs as f64,
        };
        // As polling produces them: every register at one time, then the next time.
        let batch = [
            reading("a", 1),
            reading("b", 1),
            reading("a", 2),
            reading("b", 2),
        ];
        let rows = sorted_rows(&batch, &ids).unwrap();
        let keys: Vec<(i64, i64)> = rows.iter().map(|r| (r.0, r.1 / 1_000_000)).collect();
        assert_eq!(keys, [(1, 1), (1, 2), (2, 1), (2, 2)]);
        assert!(sorted_rows(&[reading("zz", 1)], &ids).is_err());
    }
}
