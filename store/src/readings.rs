//! Readings: batched inserts, range queries, the latest value per register, bucketed
//! summaries computed in SQL, and retention in small batches. Each (device, register) pair is
//! a row of `series` (which also carries its newest reading); `readings` rows refer to it by
//! an integer key, which keeps the big table and its clustered key small. Times are integer
//! microseconds since the Unix epoch on both backends. No evaluation of values here.
//!
//! On SQLite readings are bound parameters of multi-row `VALUES` statements; only the first
//! reading of a series not yet cached travels as JSON text (the series upsert), which SQLite
//! parses bit-exactly for sensor-range values but may round in the last bit near the
//! underflow limit (1e-300), and -0.0 reads back as 0.0. Non-finite values are refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::codec::{from_micros, to_micros};
use super::telemetry::{LatestReading, Reading, ReadingBucket};
use super::{Backend, Dialect, Result, Store, db_err, on_pool};

/// One reading with borrowed names: what the batch writer stores from its samples without
/// copying a device or register name per reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadingRow<'a> {
    /// Device name.
    pub device: &'a str,
    /// Register name.
    pub register: &'a str,
    /// When it was read.
    pub time: DateTime<Utc>,
    /// Decoded, scaled value.
    pub value: f64,
}

impl<'a> From<&'a Reading> for ReadingRow<'a> {
    fn from(r: &'a Reading) -> ReadingRow<'a> {
        ReadingRow {
            device: &r.device,
            register: &r.register,
            time: r.time,
            value: r.value,
        }
    }
}

/// The ids of the series this store has seen, device -> register -> id. Series rows are
/// never deleted or renumbered, so an id once read stays right; ids are added only after the
/// transaction that created them committed. Clones of a store share the cache.
#[derive(Debug, Clone, Default)]
pub(crate) struct SeriesIds(Arc<Mutex<HashMap<String, HashMap<String, i64>>>>);

impl SeriesIds {
    /// The cached ids of `series`; the series not cached are returned apart.
    fn lookup<'a>(
        &self,
        series: &[Newest<'a>],
    ) -> (HashMap<(&'a str, &'a str), i64>, Vec<Newest<'a>>) {
        let cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut known = HashMap::with_capacity(series.len());
        let mut missing = Vec::new();
        for n in series {
            match cache.get(n.0).and_then(|regs| regs.get(n.1)) {
                Some(id) => {
                    known.insert((n.0, n.1), *id);
                }
                None => missing.push(*n),
            }
        }
        (known, missing)
    }

    fn remember(&self, ids: &[(i64, String, String)]) {
        let mut cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, device, register) in ids {
            cache
                .entry(device.clone())
                .or_default()
                .insert(register.clone(), *id);
        }
    }
}

/// (device, register, newest time in microseconds, its value) of one series in a batch.
type Newest<'a> = (&'a str, &'a str, i64, f64);

/// The newest reading of each series in a batch, sorted by device and register.
fn newest_per_series<'a>(readings: &[ReadingRow<'a>]) -> Vec<Newest<'a>> {
    let mut newest: HashMap<(&str, &str), (i64, f64)> = HashMap::new();
    for r in readings {
        let ts = to_micros(r.time);
        let slot = newest
            .entry((r.device, r.register))
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
    readings: &[ReadingRow<'_>],
    ids: &HashMap<(&str, &str), i64>,
) -> Result<Vec<(i64, i64, f64)>> {
    let mut rows = Vec::with_capacity(readings.len());
    for r in readings {
        let id = ids.get(&(r.device, r.register)).copied().ok_or_else(|| {
            super::StoreError::Corrupt {
                op: "insert readings",
                message: format!("no series id for {}/{}", r.device, r.register),
            }
        })?;
        rows.push((id, to_micros(r.time), r.value));
    }
    rows.sort_unstable_by_key(|&(id, ts, _)| (id, ts));
    Ok(rows)
}

/// Adds the ids of series just `created` (as the database named them) to `ids`, keyed by the
/// batch's own names.
fn add_created<'a>(
    ids: &mut HashMap<(&'a str, &'a str), i64>,
    missing: &[Newest<'a>],
    created: &[(i64, String, String)],
) {
    let names: HashMap<(&str, &str), (&'a str, &'a str)> =
        missing.iter().map(|n| ((n.0, n.1), (n.0, n.1))).collect();
    for (id, device, register) in created {
        if let Some(key) = names.get(&(device.as_str(), register.as_str())) {
            ids.insert(*key, *id);
        }
    }
}

/// Rows per bound-parameter statement on SQLite, largest first. A batch goes out as full
/// statements of the largest size and the rest in the smaller ones, so only these few
/// statement texts are ever prepared (sqlx caches them per connection) and no value is
/// formatted as text or parsed back.
const SQLITE_ROWS_PER_STATEMENT: [usize; 4] = [1000, 100, 10, 1];

/// Splits `n` rows into statement sizes of [`SQLITE_ROWS_PER_STATEMENT`].
fn statement_sizes(mut n: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    for size in SQLITE_ROWS_PER_STATEMENT {
        while n >= size {
            sizes.push(size);
            n -= size;
        }
    }
    sizes
}

/// `head` followed by `rows` groups of three placeholders (`(?, ?, ?), ...`) and `tail`.
fn values_sql(head: &str, rows: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * 10);
    sql.push_str(head);
    for i in 0..rows {
        sql.push_str(if i == 0 { "(?, ?, ?)" } else { ", (?, ?, ?)" });
    }
    sql.push_str(tail);
    sql
}

/// Runs the statement `head (?, ?, ?), ... tail` over `rows` in the sizes of
/// [`statement_sizes`] inside `tx`; returns the rows affected.
async fn sqlite_values<'t>(
    tx: &mut sqlx::Transaction<'t, sqlx::Sqlite>,
    op: &'static str,
    head: &str,
    tail: &str,
    rows: &[(i64, i64, f64)],
) -> Result<u64> {
    let mut affected = 0;
    let mut rest = rows;
    for size in statement_sizes(rows.len()) {
        let (chunk, tail_rows) = rest.split_at(size);
        rest = tail_rows;
        let mut query = sqlx::query(AssertSqlSafe(values_sql(head, size, tail)));
        for &(a, b, c) in chunk {
            query = query.bind(a).bind(b).bind(c);
        }
        affected += query
            .execute(&mut **tx)
            .await
            .map_err(db_err(op))?
            .rows_affected();
    }
    Ok(affected)
}

/// What both backends do when a series exists: keep the newer latest reading.
macro_rules! upsert_series_conflict {
    () => {
        " ON CONFLICT (device, register) DO UPDATE SET \
         latest_value = CASE WHEN series.latest_ts IS NULL \
             OR excluded.latest_ts >= series.latest_ts \
             THEN excluded.latest_value ELSE series.latest_value END, \
         latest_ts = CASE WHEN series.latest_ts IS NULL \
             OR excluded.latest_ts >= series.latest_ts \
             THEN excluded.latest_ts ELSE series.latest_ts END \
         RETURNING id, device, register"
    };
}

/// Upserts the series of a batch that are not cached yet (setting their latest reading) and
/// returns their ids. Per-backend text: SQLite unpacks one JSON parameter, PostgreSQL arrays.
const SQLITE_UPSERT_SERIES: &str = concat!(
    "INSERT INTO series (device, register, latest_ts, latest_value) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 \
     FROM json_each($1) WHERE TRUE",
    upsert_series_conflict!()
);
const POSTGRES_UPSERT_SERIES: &str = concat!(
    "INSERT INTO series (device, register, latest_ts, latest_value) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::float8[])",
    upsert_series_conflict!()
);

impl Store {
    /// Stores a batch of readings in one transaction and moves each series' latest value
    /// forward. A reading whose (device, register, time) is already stored is ignored; a
    /// non-finite value is refused. Returns how many readings were new. See
    /// [`Store::insert_reading_rows`].
    pub async fn insert_readings(&self, readings: &[Reading]) -> Result<u64> {
        let rows: Vec<ReadingRow<'_>> = readings.iter().map(ReadingRow::from).collect();
        self.insert_reading_rows(&rows).await
    }

    /// [`Store::insert_readings`] for borrowed rows. Series ids come from the store's cache;
    /// only series not seen before are upserted (with `RETURNING`), the others get their
    /// latest value moved by id. SQLite: the latest values and the readings go in
    /// bound-parameter multi-row statements of fixed sizes; PostgreSQL: `UNNEST` arrays.
    pub async fn insert_reading_rows(&self, readings: &[ReadingRow<'_>]) -> Result<u64> {
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
        let (mut ids, missing) = self.series_ids().lookup(&newest);
        let latest: Vec<(i64, i64, f64)> = newest
            .iter()
            .filter_map(|n| ids.get(&(n.0, n.1)).map(|id| (*id, n.2, n.3)))
            .collect();
        let (inserted, created) = match self.backend() {
            Backend::Sqlite(pool) => {
                let mut tx = pool
                    .begin_write()
                    .await
                    .map_err(db_err("begin insert readings"))?;
                let mut created: Vec<(i64, String, String)> = Vec::new();
                if !missing.is_empty() {
                    let series_json = serde_json::to_string(&missing).map_err(|e| {
                        super::StoreError::InvalidInput {
                            what: "reading",
                            message: e.to_string(),
                        }
                    })?;
                    created = sqlx::query_as(SQLITE_UPSERT_SERIES)
                        .bind(series_json)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db_err("upsert reading series"))?;
                }
                sqlite_values(
                    &mut tx,
                    "move latest readings",
                    "UPDATE series SET latest_ts = v.column2, latest_value = v.column3 \
                     FROM (VALUES ",
                    ") AS v WHERE series.id = v.column1 \
                     AND (series.latest_ts IS NULL OR v.column2 >= series.latest_ts)",
                    &latest,
                )
                .await?;
                add_created(&mut ids, &missing, &created);
                let rows = sorted_rows(readings, &ids)?;
                let inserted = sqlite_values(
                    &mut tx,
                    "insert readings",
                    "INSERT INTO readings (series_id, ts, value) VALUES ",
                    " ON CONFLICT DO NOTHING",
                    &rows,
                )
                .await?;
                tx.commit().await.map_err(db_err("commit readings"))?;
                (inserted, created)
            }
            Backend::Postgres(pool) => {
                let mut tx = pool
                    .begin()
                    .await
                    .map_err(db_err("begin insert readings"))?;
                let mut created: Vec<(i64, String, String)> = Vec::new();
                if !missing.is_empty() {
                    let devices: Vec<&str> = missing.iter().map(|n| n.0).collect();
                    let registers: Vec<&str> = missing.iter().map(|n| n.1).collect();
                    let times: Vec<i64> = missing.iter().map(|n| n.2).collect();
                    let values: Vec<f64> = missing.iter().map(|n| n.3).collect();
                    created = sqlx::query_as(POSTGRES_UPSERT_SERIES)
                        .bind(&devices)
                        .bind(&registers)
                        .bind(&times)
                        .bind(&values)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db_err("upsert reading series"))?;
                }
                if !latest.is_empty() {
                    let series_ids: Vec<i64> = latest.iter().map(|l| l.0).collect();
                    let times: Vec<i64> = latest.iter().map(|l| l.1).collect();
                    let values: Vec<f64> = latest.iter().map(|l| l.2).collect();
                    sqlx::query(
                        "UPDATE series SET latest_ts = v.ts, latest_value = v.value \
                         FROM UNNEST($1::int8[], $2::int8[], $3::float8[]) AS v(id, ts, value) \
                         WHERE series.id = v.id \
                         AND (series.latest_ts IS NULL OR v.ts >= series.latest_ts)",
                    )
                    .bind(&series_ids)
                    .bind(&times)
                    .bind(&values)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err("move latest readings"))?;
                }
                add_created(&mut ids, &missing, &created);
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
                (inserted, created)
            }
        };
        self.series_ids().remember(&created);
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
        let r = |reg: &'static str, s, v| ReadingRow {
            device: "fm-1",
            register: reg,
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
    fn a_batch_should_go_out_in_few_fixed_statement_sizes() {
        assert_eq!(statement_sizes(0), Vec::<usize>::new());
        assert_eq!(statement_sizes(4000), [1000; 4]);
        assert_eq!(statement_sizes(1213), [1000, 100, 100, 10, 1, 1, 1]);
        assert_eq!(
            values_sql("INSERT INTO t VALUES ", 2, " ON CONFLICT DO NOTHING"),
            "INSERT INTO t VALUES (?, ?, ?), (?, ?, ?) ON CONFLICT DO NOTHING"
        );
    }

    #[test]
    fn rows_should_be_sorted_by_series_then_time_and_unknown_series_refused() {
        let ids = HashMap::from([(("d", "a"), 2), (("d", "b"), 1)]);
        let at = |secs: i64| DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(secs);
        let reading = |register: &'static str, secs: i64| ReadingRow {
            device: "d",
            register,
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
