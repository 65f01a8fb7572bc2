//! Database-held configuration: the current spec of each alert rule, notification channel and
//! handshake policy that runs reconciled into the database, and the controller's settings
//! (key and value). Callers decide what to store; this module does not interpret specs.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::codec::db_time;
use super::{Result, Store, db_err, on_pool};
use crate::model::ConfigKind;

/// A configuration object held in the database (the current spec of one alert rule,
/// notification channel or handshake policy).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ConfigObject {
    /// Which database-held kind it is (alert rule, channel or policy).
    pub kind: ConfigKind,
    /// Name, unique per kind.
    pub name: String,
    /// The spec as JSON.
    #[sqlx(json, rename = "spec_json")]
    pub spec: Value,
    /// SHA-256 of the spec's canonical JSON (the planner compares it).
    pub spec_hash: String,
    /// The commit it was applied from.
    pub commit_sha: String,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl Store {
    /// Inserts or replaces the current spec of a configuration object.
    pub async fn upsert_config_object(
        &self,
        kind: ConfigKind,
        name: &str,
        spec: &Value,
        spec_hash: &str,
        commit_sha: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO config_objects (kind, name, spec_json, spec_hash, commit_sha, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (kind, name) DO UPDATE SET spec_json = excluded.spec_json, \
                 spec_hash = excluded.spec_hash, commit_sha = excluded.commit_sha, \
                 updated_at = excluded.updated_at",
            )
            .bind(kind)
            .bind(name)
            .bind(sqlx::types::Json(spec))
            .bind(spec_hash)
            .bind(commit_sha)
            .bind(db_time(now))
            .execute(pool)
            .await
            .map_err(db_err("upsert config object"))?;
            Ok(())
        })
    }

    /// Removes a configuration object; returns whether it existed.
    pub async fn remove_config_object(&self, kind: ConfigKind, name: &str) -> Result<bool> {
        on_pool!(self, pool => {
            Ok(sqlx::query("DELETE FROM config_objects WHERE kind = $1 AND name = $2")
                .bind(kind)
                .bind(name)
                .execute(pool)
                .await
                .map_err(db_err("remove config object"))?
                .rows_affected()
                == 1)
        })
    }

    /// The configuration objects of one kind, by name.
    pub async fn list_config_objects(&self, kind: ConfigKind) -> Result<Vec<ConfigObject>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, ConfigObject>(
                "SELECT kind, name, spec_json, spec_hash, commit_sha, updated_at \
                 FROM config_objects WHERE kind = $1 ORDER BY name",
            )
            .bind(kind)
            .fetch_all(pool)
            .await
            .map_err(db_err("list config objects"))
        })
    }

    /// Reads a setting.
    pub async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        on_pool!(self, pool => {
            sqlx::query_scalar::<_, String>("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(pool)
                .await
                .map_err(db_err("get setting"))
        })
    }

    /// Writes a setting.
    pub async fn set_setting(&self, key: &str, value: &str, now: DateTime<Utc>) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                 updated_at = excluded.updated_at",
            )
            .bind(key)
            .bind(value)
            .bind(db_time(now))
            .execute(pool)
            .await
            .map_err(db_err("set setting"))?;
            Ok(())
        })
    }
}
