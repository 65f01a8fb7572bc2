//! The last full read of each declared guest (configuration, digest, pending changes), kept so
//! that an observation reads a guest again only when something about it may have changed,
//! also across processes: what `mycopod apply` read, `plan` and `serve` reuse. A cache: a
//! row the reader cannot use is read again, never trusted. The controller decides when a
//! row still stands (`reconcile/deep_reads.rs`); the store only keeps rows.

use chrono::{DateTime, Utc};

use super::codec::{from_micros, to_micros};
use super::{Dialect, Result, Store, StoreError, db_err, on_pool};

/// One guest's last full read, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestRead {
    /// The cluster's endpoint (two clusters of one name in two repositories never mix).
    pub cluster: String,
    /// The guest.
    pub vmid: u32,
    /// Fingerprint of what was declared for the guest when it was read.
    pub spec: String,
    /// Fingerprint of what the cluster listing said of the guest when it was read.
    pub summary: String,
    /// The guest's uptime in seconds then, if running.
    pub uptime: Option<u64>,
    /// When it was read.
    pub read_at: DateTime<Utc>,
    /// When the guest must be read in full again, whatever else holds.
    pub due_at: DateTime<Utc>,
    /// What was read (the controller's `ObservedConfig` as JSON).
    pub config: serde_json::Value,
}

type Row = (i64, String, String, Option<i64>, i64, i64, String);

impl Store {
    /// The stored reads of the guests of `cluster`; rows that do not decode are left out
    /// (their guests are read again).
    pub async fn guest_reads(&self, cluster: &str) -> Result<Vec<GuestRead>> {
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT vmid, spec, summary, uptime, read_at, due_at, config_json FROM guest_reads \
                 WHERE cluster = $1",
            )
            .bind(cluster)
            .fetch_all(pool)
            .await
            .map_err(db_err("read guest reads"))?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(vmid, spec, summary, uptime, read_at, due_at, config)| {
                Some(GuestRead {
                    cluster: cluster.to_owned(),
                    vmid: u32::try_from(vmid).ok()?,
                    spec,
                    summary,
                    uptime: uptime.and_then(|u| u64::try_from(u).ok()),
                    read_at: from_micros(read_at),
                    due_at: from_micros(due_at),
                    config: serde_json::from_str(&config).ok()?,
                })
            })
            .collect())
    }

    /// Records reads, replacing earlier ones of the same guests, in one transaction.
    pub async fn record_guest_reads(&self, reads: &[GuestRead]) -> Result<()> {
        if reads.is_empty() {
            return Ok(());
        }
        let rows = reads
            .iter()
            .map(|r| {
                let config =
                    serde_json::to_string(&r.config).map_err(|e| StoreError::InvalidInput {
                        what: "guest read",
                        message: e.to_string(),
                    })?;
                let uptime = r.uptime.map(|u| i64::try_from(u).unwrap_or(i64::MAX));
                Ok((r, config, uptime))
            })
            .collect::<Result<Vec<_>>>()?;
        on_pool!(self, pool => {
            let mut tx = pool
                .begin_write()
                .await
                .map_err(db_err("begin record guest reads"))?;
            for (r, config, uptime) in &rows {
                sqlx::query(
                    "INSERT INTO guest_reads \
                     (cluster, vmid, spec, summary, uptime, read_at, due_at, config_json) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (cluster, vmid) DO UPDATE \
                     SET spec = excluded.spec, summary = excluded.summary, \
                     uptime = excluded.uptime, read_at = excluded.read_at, \
                     due_at = excluded.due_at, \
                     config_json = excluded.config_json",
                )
                .bind(&r.cluster)
                .bind(i64::from(r.vmid))
                .bind(&r.spec)
                .bind(&r.summary)
                .bind(*uptime)
                .bind(to_micros(r.read_at))
                .bind(to_micros(r.due_at))
                .bind(config)
                .execute(&mut *tx)
                .await
                .map_err(db_err("record guest read"))?;
            }
            tx.commit().await.map_err(db_err("commit guest reads"))?;
            Ok(())
        })
    }

    /// Forgets the read of guest `vmid` of `cluster`: its next observation reads it in full.
    pub async fn forget_guest_read(&self, cluster: &str, vmid: u32) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM guest_reads WHERE cluster = $1 AND vmid = $2")
                .bind(cluster)
                .bind(i64::from(vmid))
                .execute(pool)
                .await
                .map_err(db_err("forget guest read"))?;
            Ok(())
        })
    }
}
