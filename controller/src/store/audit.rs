//! The audit log: append-only and chained. Each entry stores `prev_hash` (the previous
//! entry's hash, 64 zeros for the first) and `hash = hex(HMAC-SHA256(key, prev_hash || "\n"
//! || canonical JSON of {seq, at, actor, event, subject, details}))`, where canonical JSON has
//! sorted keys and no whitespace and `at` is RFC 3339 UTC with microseconds. The key is the
//! server's ([`AuditKey`], never in the database); without one the chain is plain SHA-256.
//! Entries written before a key was configured stay plain, vouched for by the first keyed
//! entry (`audit.keyed`, naming their count and head). Appends are serialized (an advisory
//! transaction lock on PostgreSQL, the write lock on SQLite), so the chain never forks.
//! Nothing here updates or deletes an entry.
//!
//! The chain alone cannot show that its tail was deleted; a [`Checkpoint`] (an entry's seq and
//! hash, published outside the database every N entries) can: verifying against checkpoints
//! catches deleted, inserted and rewritten entries up to the last one published.

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::codec::db_time;
use super::{Dialect, Result, Store, StoreError, db_err, on_pool};

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Key of the PostgreSQL advisory lock that serializes audit appends ("mycopod audit").
const AUDIT_LOCK_KEY: i64 = 0x6d79_636f_6175_6474;

/// The key of the audit chain: at least 32 bytes, from the server's configuration.
#[derive(Clone)]
pub struct AuditKey(std::sync::Arc<[u8]>);

impl AuditKey {
    /// Shortest key accepted.
    pub const MIN_LEN: usize = 32;

    /// A key from its bytes (surrounding whitespace, such as a file's final newline, is
    /// dropped); refused if shorter than [`AuditKey::MIN_LEN`].
    pub fn new(bytes: &[u8]) -> Result<AuditKey, String> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < Self::MIN_LEN {
            return Err(format!(
                "the audit key has {} bytes; at least {} are needed",
                trimmed.len(),
                Self::MIN_LEN
            ));
        }
        Ok(AuditKey(trimmed.into()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length; the error is unreachable.
        match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC-SHA256 accepts keys of any length"),
        }
    }
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

/// A published chain position: entry `seq` had hash `hash`. Written one JSON object per line
/// to the checkpoint file and to the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The entry.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// When it was appended.
    pub at: DateTime<Utc>,
}

/// The event of the entry that vouches for the unkeyed entries before it.
pub const KEYED_EVENT: &str = "audit.keyed";

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
    /// The entries.
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
    /// Whether the chain was checked with the audit key.
    pub keyed: bool,
    /// Entries written before the key was configured (plain SHA-256, vouched for by the
    /// first keyed entry).
    pub unkeyed: u64,
    /// Checkpoints compared.
    pub checkpoints: u64,
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

/// Writes `value` as canonical JSON: object keys sorted, no whitespace. Independent of
/// serde_json's `preserve_order` feature.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Computes an entry's hash from its previous hash and content; `details` is the stored
/// canonical text. With a key the hash is an HMAC, without one plain SHA-256.
#[allow(clippy::too_many_arguments)]
pub fn entry_hash(
    key: Option<&AuditKey>,
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
    match key {
        Some(key) => {
            let mut mac = key.mac();
            mac.update(prev_hash.as_bytes());
            mac.update(b"\n");
            mac.update(content.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        None => {
            let mut hasher = Sha256::new();
            hasher.update(prev_hash.as_bytes());
            hasher.update(b"\n");
            hasher.update(content.as_bytes());
            hex::encode(hasher.finalize())
        }
    }
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
        key: Option<&AuditKey>,
        entry: &NewAuditEntry,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<AuditEntry>> + Send;
}

macro_rules! impl_audit_tx {
    ($db:ty, $lock:expr) => {
        impl AuditTx for sqlx::Transaction<'_, $db> {
            async fn append_audit(
                &mut self,
                key: Option<&AuditKey>,
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
                    key,
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
            let stored = tx.append_audit(self.audit_key(), entry, now).await?;
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
    /// previous hash or own hash does not match. See [`Store::verify_audit_against`].
    pub async fn verify_audit(&self) -> Result<VerifyReport> {
        self.verify_audit_against(&[]).await
    }

    /// Recomputes the whole chain in order (with the audit key if one is configured) and
    /// stops at the first entry whose sequence, previous hash or own hash does not match, or
    /// whose seq and hash differ from a published checkpoint. A checkpoint past the last entry
    /// means the tail was deleted.
    pub async fn verify_audit_against(&self, checkpoints: &[Checkpoint]) -> Result<VerifyReport> {
        const PAGE: i64 = 1000;
        let key = self.audit_key();
        let published: std::collections::BTreeMap<i64, &Checkpoint> =
            checkpoints.iter().map(|c| (c.seq, c)).collect();
        let mut report = VerifyReport {
            checked: 0,
            failure: None,
            keyed: key.is_some(),
            unkeyed: 0,
            checkpoints: 0,
        };
        let mut expected_seq = 1_i64;
        let mut prev = GENESIS_HASH.to_owned();
        // With a key: entries may be plain only before the first keyed one.
        let mut in_unkeyed_prefix = key.is_some();
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
                break;
            }
            for (seq, at, actor, event, subject, details, prev_hash, hash) in rows {
                let fail = |mut report: VerifyReport, seq: i64, reason: String| {
                    report.failure = Some(VerifyFailure { seq, reason });
                    Ok(report)
                };
                if seq != expected_seq {
                    return fail(
                        report,
                        expected_seq,
                        format!("entry {expected_seq} is missing (next is {seq})"),
                    );
                }
                if prev_hash != prev {
                    return fail(
                        report,
                        seq,
                        format!(
                            "previous hash {prev_hash} does not match the hash {prev} of entry {}",
                            seq - 1
                        ),
                    );
                }
                let recomputed =
                    entry_hash(key, &prev, seq, at, &actor, &event, &subject, &details);
                if recomputed != hash {
                    let plain =
                        entry_hash(None, &prev, seq, at, &actor, &event, &subject, &details);
                    if in_unkeyed_prefix && plain == hash {
                        report.unkeyed += 1;
                    } else if key.is_some() && plain == hash {
                        return fail(
                            report,
                            seq,
                            "is hashed without the audit key after keyed entries (written by a \
                             process without the key, or rewritten)"
                                .to_owned(),
                        );
                    } else {
                        return fail(
                            report,
                            seq,
                            format!(
                                "content does not match its hash (stored {hash}, recomputed \
                                 {recomputed})"
                            ),
                        );
                    }
                } else if in_unkeyed_prefix {
                    in_unkeyed_prefix = false;
                    if report.unkeyed > 0 {
                        let vouched = event == KEYED_EVENT
                            && serde_json::from_str::<Value>(&details)
                                .ok()
                                .is_some_and(|d| {
                                    d["unkeyed_entries"].as_u64() == Some(report.unkeyed)
                                        && d["unkeyed_head"].as_str() == Some(prev.as_str())
                                });
                        if !vouched {
                            let unkeyed = report.unkeyed;
                            return fail(
                                report,
                                1,
                                format!(
                                    "entries 1 to {unkeyed} are not keyed and entry {seq} does \
                                     not vouch for them (rewritten without the key?)"
                                ),
                            );
                        }
                    }
                }
                if let Some(c) = published.get(&seq) {
                    if c.hash != hash {
                        return fail(
                            report,
                            seq,
                            format!(
                                "hash {hash} differs from the checkpoint published for it ({}, at \
                                 {})",
                                c.hash,
                                format_time(c.at)
                            ),
                        );
                    }
                    report.checkpoints += 1;
                }
                prev = hash;
                expected_seq += 1;
                report.checked += 1;
            }
        }
        if in_unkeyed_prefix && report.unkeyed > 0 {
            let unkeyed = report.unkeyed;
            return Ok(VerifyReport {
                failure: Some(VerifyFailure {
                    seq: 1,
                    reason: format!(
                        "none of the {unkeyed} entries is keyed: the log was written without \
                         the audit key, or rewritten"
                    ),
                }),
                ..report
            });
        }
        if let Some((&seq, c)) = published.range(expected_seq..).next() {
            let last = expected_seq - 1;
            return Ok(VerifyReport {
                failure: Some(VerifyFailure {
                    seq,
                    reason: format!(
                        "entries after {last} are missing: a checkpoint was published for entry \
                         {seq} (at {})",
                        format_time(c.at)
                    ),
                }),
                ..report
            });
        }
        Ok(report)
    }

    /// With a key: if the chain ends in entries written without it (a log from before the key
    /// was configured), checks them and appends the `audit.keyed` entry that vouches for them.
    /// Refuses (and appends nothing) when they do not verify. Returns the entry appended.
    pub async fn seal_audit(&self, now: DateTime<Utc>) -> Result<Option<AuditEntry>> {
        let Some(key) = self.audit_key() else {
            return Ok(None);
        };
        let Some(head) = self.audit_head().await? else {
            return Ok(None);
        };
        let last: Option<AuditRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT seq, at, actor, event, subject, details, prev_hash, hash \
                 FROM audit_log WHERE seq = $1",
            )
            .bind(head.seq)
            .fetch_optional(pool)
            .await
            .map_err(db_err("read audit chain head"))?
        });
        let Some((seq, at, actor, event, subject, details, prev_hash, hash)) = last else {
            return Ok(None);
        };
        if entry_hash(
            Some(key),
            &prev_hash,
            seq,
            at,
            &actor,
            &event,
            &subject,
            &details,
        ) == hash
        {
            return Ok(None);
        }
        let plain = self.clone_without_key().verify_audit().await?;
        if let Some(f) = plain.failure {
            return Err(StoreError::Corrupt {
                op: "seal the audit log",
                message: format!(
                    "the entries written before the audit key do not verify: entry {}: {}",
                    f.seq, f.reason
                ),
            });
        }
        let entry = NewAuditEntry {
            actor: "mycopod".to_owned(),
            event: KEYED_EVENT.to_owned(),
            subject: "audit".to_owned(),
            details: serde_json::json!({
                "unkeyed_entries": plain.checked,
                "unkeyed_head": head.hash,
            }),
        };
        self.append_audit(&entry, now).await.map(Some)
    }

    fn clone_without_key(&self) -> Store {
        let mut plain = self.clone();
        plain.audit_key = None;
        plain
    }

    /// The last entry's position.
    pub async fn audit_head(&self) -> Result<Option<Checkpoint>> {
        self.checkpoint_where("ORDER BY seq DESC LIMIT 1", None)
            .await
    }

    /// The checkpoint due every `every` entries: the last entry whose seq is a multiple of
    /// `every`, if there is one.
    pub async fn audit_checkpoint(&self, every: u32) -> Result<Option<Checkpoint>> {
        let Some(head) = self.audit_head().await? else {
            return Ok(None);
        };
        let every = i64::from(every.max(1));
        let seq = head.seq / every * every;
        if seq == 0 {
            return Ok(None);
        }
        self.checkpoint_where("WHERE seq = $1", Some(seq)).await
    }

    async fn checkpoint_where(
        &self,
        clause: &'static str,
        seq: Option<i64>,
    ) -> Result<Option<Checkpoint>> {
        // `clause` is one of this file's literals, never input.
        let sql = format!("SELECT seq, hash, at FROM audit_log {clause}");
        on_pool!(self, pool => {
            let query =
                sqlx::query_as::<_, (i64, String, DateTime<Utc>)>(sqlx::AssertSqlSafe(sql.as_str()));
            let query = match seq {
                Some(seq) => query.bind(seq),
                None => query,
            };
            Ok(query
                .fetch_optional(pool)
                .await
                .map_err(db_err("read audit checkpoint"))?
                .map(|(seq, hash, at)| Checkpoint { seq, hash, at }))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_should_sort_keys_at_every_level() {
        let v = json!({"b": 1, "a": {"z": [3, {"y": null, "x": "s"}], "c": true}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":true,"z":[3,{"x":"s","y":null}]},"b":1}"#
        );
    }

    #[test]
    fn entry_hash_should_change_with_any_field() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let base = entry_hash(None, GENESIS_HASH, 1, at, "a", "e", "s", "{}");
        assert_ne!(
            base,
            entry_hash(None, GENESIS_HASH, 2, at, "a", "e", "s", "{}")
        );
        assert_ne!(
            base,
            entry_hash(None, GENESIS_HASH, 1, at, "b", "e", "s", "{}")
        );
        assert_ne!(
            base,
            entry_hash(None, GENESIS_HASH, 1, at, "a", "e", "s", "{\"x\":1}")
        );
        assert_ne!(
            base,
            entry_hash(None, &"1".repeat(64), 1, at, "a", "e", "s", "{}")
        );
        assert_eq!(base.len(), 64);
    }

    #[test]
    fn a_keyed_hash_should_depend_on_the_key() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let one = AuditKey::new(&[1u8; 32]).unwrap();
        let two = AuditKey::new(&[2u8; 32]).unwrap();
        let plain = entry_hash(None, GENESIS_HASH, 1, at, "a", "e", "s", "{}");
        let keyed = entry_hash(Some(&one), GENESIS_HASH, 1, at, "a", "e", "s", "{}");
        assert_ne!(plain, keyed);
        assert_ne!(
            keyed,
            entry_hash(Some(&two), GENESIS_HASH, 1, at, "a", "e", "s", "{}")
        );
        assert_eq!(keyed.len(), 64);
        assert!(AuditKey::new(b"short\n").is_err());
        assert_eq!(format!("{one:?}"), "AuditKey(..)");
    }
}
