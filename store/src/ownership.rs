//! Which PVE configuration keys mycopod set on each guest the last time it applied it. The
//! planner removes a key only if mycopod owned it and the declaration no longer sets it, so
//! keys set by hand in Proxmox are never touched.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use super::codec::db_time;
use super::{Result, Store, StoreError, db_err, on_pool};

impl Store {
    /// Records the keys mycopod now owns on guest `vmid` of `cluster`.
    pub async fn record_owned_keys(
        &self,
        cluster: &str,
        vmid: u32,
        keys: &BTreeSet<String>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let json = serde_json::to_string(keys).map_err(|e| StoreError::InvalidInput {
            what: "owned keys",
            message: e.to_string(),
        })?;
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO guest_ownership (cluster, vmid, keys_json, updated_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (cluster, vmid) DO UPDATE SET \
                 keys_json = excluded.keys_json, updated_at = excluded.updated_at",
            )
            .bind(cluster)
            .bind(i64::from(vmid))
            .bind(&json)
            .bind(db_time(now))
            .execute(pool)
            .await
            .map_err(db_err("record owned keys"))?;
            Ok(())
        })
    }

    /// Forgets guest `vmid` of `cluster` (it was deleted).
    pub async fn forget_owned_keys(&self, cluster: &str, vmid: u32) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM guest_ownership WHERE cluster = $1 AND vmid = $2")
                .bind(cluster)
                .bind(i64::from(vmid))
                .execute(pool)
                .await
                .map_err(db_err("forget owned keys"))?;
            Ok(())
        })
    }

    /// The owned keys of every guest of `cluster`, by vmid.
    pub async fn owned_keys(&self, cluster: &str) -> Result<BTreeMap<u32, BTreeSet<String>>> {
        let rows: Vec<(i64, String)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT vmid, keys_json FROM guest_ownership WHERE cluster = $1")
                .bind(cluster)
                .fetch_all(pool)
                .await
                .map_err(db_err("read owned keys"))?
        });
        let mut out = BTreeMap::new();
        for (vmid, json) in rows {
            let vmid = u32::try_from(vmid).map_err(|_| StoreError::Corrupt {
                op: "read owned keys",
                message: format!("vmid {vmid} out of range"),
            })?;
            let keys: BTreeSet<String> =
                serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                    op: "read owned keys",
                    message: format!("guest {vmid} of {cluster}: {e}"),
                })?;
            out.insert(vmid, keys);
        }
        Ok(out)
    }
}
