//! The audit log: append-only and hash-chained. Each entry stores `prev_hash` (the previous
//! entry's hash, 64 zeros for the first) and `hash = hex(SHA-256(prev_hash || "\n" ||
//! canonical JSON of {seq, at, actor, event, subject, details}))`, where canonical JSON has
//! sorted keys and no whitespace and `at` is RFC 3339 UTC with microseconds. Appends are
//! serialized (an advisory transaction lock on PostgreSQL, the write lock on SQLite), so the
//! chain never forks. Nothing here updates or deletes an entry.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::codec::db_time;
use super::{Dialect, Result, Store, StoreError, db_err, on_pool};
use crate::model::canonical_json;

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Key of the PostgreSQL advisory lock that serializes audit appends ("mycopod audit").
const AUDIT_LOCK_KEY: i64 = 0x6d79_636f_6175_6474;

/// An entry to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    /// Who did it (a user name, an API key name, `controller`).
    pub actor: String,
    /// What happened (`run.status`, `run.approved_by`, `user.created`, ...).
    pub event: String,
    /// What it happened to (`run/42`, `user/alice`).
    pub subject: String,
    /// Event-specific details.
    pub details: Value,
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// When it was appended.
    pub at: DateTime<Utc>,
    /// Who did it.
    pub actor: String,
    /// What happened.
    pub event: String,
    /// What it happened to.
    pub subject: String,
    /// Details as stored (canonical JSON text parsed back).
    pub details: Value,
    /// Hash of the previous entry.
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

/// One page of the audit log, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditPage {
    /// At most the page size of them, newest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` to get the next page.
    pub next_cursor: Option<i64>,
}

/// Why the chain does not verify, naming the first entry that fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyFailure {
    /// The first entry that does not match (for a missing entry: the seq that is missing).
    pub seq: i64,
    /// What does not match.
    pub reason: String,
}

/// Result of [`Store::verify_audit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Entries checked before stopping.
    pub checked: u64,
    /// The first bad entry, or `None` if the whole chain verifies.
    pub failure: Option<VerifyFailure>,
}

type AuditRow = (
    i64,
    DateTime<Utc>,
    String,
    String,
    String,
    String,
    String,
    String,
);

fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Computes an entry's hash from its previous hash and content; `details` is the stored
/// canonical text.
pub fn entry_hash(
    prev_hash: &str,
    seq: i64,
    at: DateTime<Utc>,
    actor: &str,
    event: &str,
    subject: &str,
    details: &str,
) -> String {
    // The content is itself canonical JSON; `details` is spliced in as the raw stored text so
    // the hash covers exactly what is stored.
    let content = format!(
        "{{\"actor\":{},\"at\":{},\"details\":{},\"event\":{},\"seq\":{},\"subject\":{}}}",
        Value::String(actor.to_owned()),
        Value::String(format_time(at)),
        details,
        Value::String(event.to_owned()),
        seq,
        Value::String(subject.to_owned()),
    );
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(content.as_bytes());
    hex::encode(hasher.finalize())
}

fn row_to_entry(row: AuditRow) -> Result<AuditEntry> {
    let (seq, at, actor, event, subject, details, prev_hash, hash) = row;
    let details = serde_json::from_str(&details).map_err(|e| StoreError::Corrupt {
        op: "read audit entry",
        message: format!("details of entry {seq} are not json: {e}"),
    })?;
    Ok(AuditEntry {
        seq,
        at,
        actor,
        event,
        subject,
        details,
        prev_hash,
        hash,
    })
}

/// Appending to the audit log inside a write transaction of either backend.
pub(crate) trait AuditTx {
    /// Appends one entry and returns it as stored. Takes the audit lock on PostgreSQL; on
    /// SQLite the caller's `BEGIN IMMEDIATE` transaction already serializes writers.
    fn append_audit(
        &mut self,
        entry: &NewAuditEntry,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<AuditEntry>> + Send;
}

macro_rules! impl_audit_tx {
    ($db:ty, $lock:expr) => {
        impl AuditTx for sqlx::Transaction<'_, $db> {
            async fn append_audit(
                &mut self,
                entry: &NewAuditEntry,
                now: DateTime<Utc>,
            ) -> Result<AuditEntry> {
                let at = db_time(now);
                if let Some(lock) = $lock {
                    sqlx::query(lock)
                        .bind(AUDIT_LOCK_KEY)
                        .execute(&mut **self)
                        .await
                        .map_err(db_err("lock audit log"))?;
                }
                let last: Option<(i64, String)> =
                    sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                        .fetch_optional(&mut **self)
                        .await
                        .map_err(db_err("read audit chain head"))?;
                let (seq, prev_hash) = match last {
                    Some((seq, hash)) => (seq + 1, hash),
                    None => (1, GENESIS_HASH.to_owned()),
                };
                let details = canonical_json(&entry.details);
                let hash = entry_hash(
                    &prev_hash,
                    seq,
                    at,
                    &entry.actor,
                    &entry.event,
                    &entry.subject,
                    &details,
                );
                sqlx::query(
                    "INSERT INTO audit_log (seq, at, actor, event, subject, details, prev_hash, \
                     hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(seq)
                .bind(at)
                .bind(&entry.actor)
                .bind(&entry.event)
                .bind(&entry.subject)
                .bind(&details)
                .bind(&prev_hash)
                .bind(&hash)
                .execute(&mut **self)
                .await
                .map_err(db_err("append audit entry"))?;
                Ok(AuditEntry {
                    seq,
                    at,
                    actor: entry.actor.clone(),
                    event: entry.event.clone(),
                    subject: entry.subject.clone(),
                    details: entry.details.clone(),
                    prev_hash,
                    hash,
                })
            }
        }
    };
}

impl_audit_tx!(sqlx::Sqlite, None::<&'static str>);
impl_audit_tx!(sqlx::Postgres, Some("SELECT pg_advisory_xact_lock($1)"));

impl Store {
    /// Appends one entry to the audit log in its own transaction.
    pub async fn append_audit(
        &self,
        entry: &NewAuditEntry,
        now: DateTime<Utc>,
    ) -> Result<AuditEntry> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err("begin audit append"))?;
            let stored = tx.append_audit(entry, now).await?;
            tx.commit().await.map_err(db_err("commit audit append"))?;
            Ok(stored)
        })
    }

    /// Pages the audit log newest first; `before` is the `next_cursor` of the previous page.
    pub async fn list_audit(&self, before: Option<i64>, limit: u32) -> Result<AuditPage> {
        let limit = match limit {
            0 => 100,
            n => n.min(1000),
        };
        let rows: Vec<AuditRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT seq, at, actor, event, subject, details, prev_hash, hash FROM audit_log \
                 WHERE ($1 IS NULL OR seq < $1) ORDER BY seq DESC LIMIT $2",
            )
            .bind(before)
            .bind(i64::from(limit) + 1)
            .fetch_all(pool)
            .await
            .map_err(db_err("list audit entries"))?
        });
        let mut entries = rows
            .into_iter()
            .map(row_to_entry)
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = if entries.len() > limit as usize {
            entries.truncate(limit as usize);
            entries.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(AuditPage {
            entries,
            next_cursor,
        })
    }

    /// Recomputes the whole chain in order and stops at the first entry whose sequence,
    /// previous hash or own hash does not match.
    pub async fn verify_audit(&self) -> Result<VerifyReport> {
        const PAGE: i64 = 1000;
        let mut expected_seq = 1_i64;
        let mut prev = GENESIS_HASH.to_owned();
        let mut checked = 0_u64;
        loop {
            let rows: Vec<AuditRow> = on_pool!(self, pool => {
                sqlx::query_as(
                    "SELECT seq, at, actor, event, subject, details, prev_hash, hash \
                     FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2",
                )
                .bind(expected_seq)
                .bind(PAGE)
                .fetch_all(pool)
                .await
                .map_err(db_err("read audit entries"))?
            });
            if rows.is_empty() {
                return Ok(VerifyReport {
                    checked,
                    failure: None,
                });
            }
            for (seq, at, actor, event, subject, details, prev_hash, hash) in rows {
                let failure = |reason: String| {
                    Ok(VerifyReport {
                        checked,
                        failure: Some(VerifyFailure { seq, reason }),
                    })
                };
                if seq != expected_seq {
                    return Ok(VerifyReport {
                        checked,
                        failure: Some(VerifyFailure {
                            seq: expected_seq,
                            reason: format!("entry {expected_seq} is missing (next is {seq})"),
                        }),
                    });
                }
                if prev_hash != prev {
                    return failure(format!(
                        "previous hash {prev_hash} does not match the hash {prev} of entry {}",
                        seq - 1
                    ));
                }
                let recomputed = entry_hash(&prev, seq, at, &actor, &event, &subject, &details);
                if recomputed != hash {
                    return failure(format!(
                        "content does not match its hash (stored {hash}, recomputed {recomputed})"
                    ));
                }
                prev = hash;
                expected_seq += 1;
                checked += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_hash_should_change_with_any_field() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let base = entry_hash(GENESIS_HASH, 1, at, "a", "e", "s", "{}");
        assert_ne!(base, entry_hash(GENESIS_HASH, 2, at, "a", "e", "s", "{}"));
        assert_ne!(base, entry_hash(GENESIS_HASH, 1, at, "b", "e", "s", "{}"));
        assert_ne!(
            base,
            entry_hash(GENESIS_HASH, 1, at, "a", "e", "s", "{\"x\":1}")
        );
        assert_ne!(
            base,
            entry_hash(&"1".repeat(64), 1, at, "a", "e", "s", "{}")
        );
        assert_eq!(base.len(), 64);
    }
}
