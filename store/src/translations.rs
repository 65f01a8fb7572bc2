//! Translations of natural-language declarations: the cache the reconcile loop reads so a
//! commit always plans the same way, and the declarations submitted through the API with their
//! provenance (text hash, model, prompt version, generated YAML hash, time, who asked).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::codec::db_time;
use super::{Result, Store, StoreError, db_err, on_pool};

/// A cached translation.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct CachedTranslation {
    /// SHA-256 of the declaration's text, hex.
    pub text_sha256: String,
    /// The model that translated it.
    pub model: String,
    /// The prompt version it was translated with.
    pub prompt_version: i64,
    /// The declaration it was first made for.
    pub declaration: String,
    /// The generated YAML (header included).
    pub yaml: String,
    /// SHA-256 of `yaml`, hex.
    pub yaml_sha256: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// A declaration submitted through the API, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DeclarationRequest {
    /// The request's id, as `GET /api/v1/declarations/{id}` takes it.
    pub id: i64,
    /// The declaration's name.
    pub name: String,
    /// The owner's words.
    pub text: String,
    /// SHA-256 of `text`, hex.
    pub text_sha256: String,
    /// The model asked.
    pub model: String,
    /// The prompt version used.
    pub prompt_version: i64,
    /// `translated`, `invalid` (the answers did not validate) or `failed` (the model failed).
    pub status: String,
    /// The generated YAML, when translated.
    pub generated_yaml: Option<String>,
    /// SHA-256 of `generated_yaml`, hex.
    pub yaml_sha256: Option<String>,
    /// Findings about the generated YAML (warnings when translated, errors when invalid).
    #[sqlx(json, rename = "diagnostics_json")]
    pub diagnostics: Value,
    /// Why it failed.
    pub error: Option<String>,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A declaration request to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeclarationRequest {
    /// The declaration's name.
    pub name: String,
    /// The owner's words.
    pub text: String,
    /// SHA-256 of `text`, hex.
    pub text_sha256: String,
    /// The model asked.
    pub model: String,
    /// The prompt version used.
    pub prompt_version: i64,
    /// `translated`, `invalid` or `failed`.
    pub status: String,
    /// The generated YAML, when translated.
    pub generated_yaml: Option<String>,
    /// SHA-256 of `generated_yaml`, hex.
    pub yaml_sha256: Option<String>,
    /// Findings about the generated YAML.
    pub diagnostics: Value,
    /// Why it failed.
    pub error: Option<String>,
    /// Who asked.
    pub requested_by: String,
}

macro_rules! request_columns {
    () => {
        "id, name, text, text_sha256, model, prompt_version, status, generated_yaml, \
         yaml_sha256, diagnostics_json, error, requested_by, created_at"
    };
}

impl Store {
    /// The cached translation of a text by a model under a prompt version, if any.
    pub async fn cached_translation(
        &self,
        text_sha256: &str,
        model: &str,
        prompt_version: i64,
    ) -> Result<Option<CachedTranslation>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, CachedTranslation>(
                "SELECT text_sha256, model, prompt_version, declaration, yaml, yaml_sha256, \
                 created_at FROM translation_cache \
                 WHERE text_sha256 = $1 AND model = $2 AND prompt_version = $3",
            )
            .bind(text_sha256)
            .bind(model)
            .bind(prompt_version)
            .fetch_optional(pool)
            .await
            .map_err(db_err("read cached translation"))
        })
    }

    /// Caches a translation. The first one stored for a key wins (a replica that translated the
    /// same text at the same time keeps the stored one), so every replica plans the same way;
    /// returns the cached entry.
    pub async fn cache_translation(&self, entry: &CachedTranslation) -> Result<CachedTranslation> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO translation_cache (text_sha256, model, prompt_version, declaration, \
                 yaml, yaml_sha256, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (text_sha256, model, prompt_version) DO NOTHING",
            )
            .bind(&entry.text_sha256)
            .bind(&entry.model)
            .bind(entry.prompt_version)
            .bind(&entry.declaration)
            .bind(&entry.yaml)
            .bind(&entry.yaml_sha256)
            .bind(db_time(entry.created_at))
            .execute(pool)
            .await
            .map_err(db_err("cache translation"))?;
        });
        self.cached_translation(&entry.text_sha256, &entry.model, entry.prompt_version)
            .await?
            .ok_or_else(|| StoreError::not_found("cached translation", entry.text_sha256.clone()))
    }

    /// Stores a declaration submitted through the API; returns it with its id.
    pub async fn insert_declaration_request(
        &self,
        request: &NewDeclarationRequest,
        now: DateTime<Utc>,
    ) -> Result<DeclarationRequest> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, DeclarationRequest>(concat!(
                "INSERT INTO declaration_requests (name, text, text_sha256, model, \
                 prompt_version, status, generated_yaml, yaml_sha256, diagnostics_json, error, \
                 requested_by, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING ",
                request_columns!()
            ))
            .bind(&request.name)
            .bind(&request.text)
            .bind(&request.text_sha256)
            .bind(&request.model)
            .bind(request.prompt_version)
            .bind(&request.status)
            .bind(request.generated_yaml.as_deref())
            .bind(request.yaml_sha256.as_deref())
            .bind(sqlx::types::Json(&request.diagnostics))
            .bind(request.error.as_deref())
            .bind(&request.requested_by)
            .bind(db_time(now))
            .fetch_one(pool)
            .await
            .map_err(db_err("insert declaration request"))
        })
    }

    /// One declaration request.
    pub async fn get_declaration_request(&self, id: i64) -> Result<DeclarationRequest> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, DeclarationRequest>(concat!(
                "SELECT ", request_columns!(), " FROM declaration_requests WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(db_err("get declaration request"))?
            .ok_or_else(|| StoreError::not_found("declaration", id))
        })
    }

    /// Declaration requests newest first, at most `limit` (capped at 500).
    pub async fn list_declaration_requests(&self, limit: u32) -> Result<Vec<DeclarationRequest>> {
        let limit = i64::from(limit.clamp(1, 500));
        on_pool!(self, pool => {
            sqlx::query_as::<_, DeclarationRequest>(concat!(
                "SELECT ", request_columns!(), " FROM declaration_requests ORDER BY id DESC LIMIT $1"
            ))
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(db_err("list declaration requests"))
        })
    }
}
