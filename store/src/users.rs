//! Users (argon2id password hashes, roles, lockout counters), refresh tokens and API keys.
//! Tokens and keys are stored only as SHA-256 hashes; passwords only as argon2id PHC strings.
//! This module does not decide lockout policy or token lifetimes: callers pass them in.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::audit::{AuditTx, NewAuditEntry};
use super::codec::{db_time, scopes_from_text, scopes_to_text};
use super::{Dialect, Result, Store, StoreError, db_err, on_pool};
use crate::model::{Role, Scope};

/// The fewest characters a password may have, wherever one is set (API and CLI alike).
pub const MIN_PASSWORD_CHARS: usize = 12;

/// What is wrong with `password` as a new password, if anything: the one rule for every way
/// a password is set.
pub fn password_problem(password: &str) -> Option<String> {
    (password.chars().count() < MIN_PASSWORD_CHARS)
        .then(|| format!("at least {MIN_PASSWORD_CHARS} characters"))
}

/// Whether `name` is a valid user name: 1 to 64 characters, ASCII letters, digits, `.`, `_`,
/// `-` and `@` (the one rule for the API and the CLI).
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// Hashes a password with argon2id (default parameters, random salt) into a PHC string.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    Ok(Argon2::default()
        .hash_password(password.as_bytes())?
        .to_string())
}

/// Checks a password against a stored PHC string; any parse or mismatch error is `false`.
pub fn verify_password(password: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

/// SHA-256 hex of a token or API key, the only form in which they are stored.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A stored user. `password_hash` is never serialized.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct User {
    /// User id.
    pub id: i64,
    /// Unique login name.
    pub name: String,
    /// argon2id PHC string.
    #[serde(skip)]
    pub password_hash: String,
    /// What the user may do (viewer, operator, admin).
    pub role: Role,
    /// Disabled users cannot sign in.
    pub disabled: bool,
    /// Consecutive failed logins.
    pub failed_logins: i64,
    /// Locked until this time after too many failures.
    pub locked_until: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Raised when the user signs out or is disabled: access tokens carry the version they
    /// were issued under and stop working once it is raised.
    pub session_version: i64,
}

impl User {
    /// Whether the account is locked at `now`.
    pub fn is_locked(&self, now: DateTime<Utc>) -> bool {
        self.locked_until.is_some_and(|t| t > now)
    }
}

/// A stored refresh token (its hash).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RefreshToken {
    /// Token id.
    pub id: i64,
    /// SHA-256 hex of the token.
    pub token_hash: String,
    /// Owner.
    pub user_id: i64,
    /// Rotation family: every token issued from one login shares it.
    pub family: String,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Revoked (used, logged out, or its family was revoked).
    pub revoked: bool,
    /// Issued.
    pub created_at: DateTime<Utc>,
}

/// Result of [`Store::rotate_refresh_token`].
#[derive(Debug, Clone, PartialEq)]
pub enum RotateOutcome {
    /// The old token was valid; it is revoked and the new one stored.
    Rotated(RefreshToken),
    /// The old token was already used or revoked: its whole family is now revoked.
    Reused {
        /// The revoked family.
        family: String,
        /// Its owner.
        user_id: i64,
    },
    /// The old token is expired.
    Expired,
    /// No such token.
    Unknown,
}

/// A stored API key (its hash).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKey {
    /// Key id.
    pub id: i64,
    /// Human name.
    pub name: String,
    /// SHA-256 hex of the key.
    #[serde(skip)]
    pub key_hash: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// The devices it may push readings for and read; `None`: every device.
    pub devices: Option<Vec<String>>,
    /// Who created it.
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last used.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

type ApiKeyRow = (
    i64,
    String,
    String,
    String,
    Option<String>,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

fn api_key_from_row(row: ApiKeyRow) -> Result<ApiKey> {
    let (id, name, key_hash, scopes, devices, created_by, created_at, last_used_at, revoked_at) =
        row;
    let scopes = scopes_from_text(&scopes).map_err(|e| StoreError::Corrupt {
        op: "read api key",
        message: e.to_string(),
    })?;
    let devices = devices
        .map(|text| serde_json::from_str::<Vec<String>>(&text))
        .transpose()
        .map_err(|e| StoreError::Corrupt {
            op: "read api key devices",
            message: e.to_string(),
        })?;
    Ok(ApiKey {
        id,
        name,
        key_hash,
        scopes,
        devices,
        created_by,
        created_at,
        last_used_at,
        revoked_at,
    })
}

macro_rules! user_columns {
    () => {
        "id, name, password_hash, role, disabled, failed_logins, locked_until, created_at, \
         updated_at, session_version"
    };
}

macro_rules! api_key_columns {
    () => {
        "id, name, key_hash, scopes, devices, created_by, created_at, last_used_at, revoked_at"
    };
}

impl Store {
    /// Creates a user from an already computed argon2id hash; a taken name is a
    /// [`StoreError::Constraint`]. Audited as `user.created`.
    pub async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        role: Role,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<User> {
        let now = db_time(now);
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err("begin create user"))?;
            let user = sqlx::query_as::<_, User>(concat!(
                "INSERT INTO users (name, password_hash, role, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4) RETURNING ", user_columns!()
            ))
            .bind(name)
            .bind(password_hash)
            .bind(role)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err("insert user"))?;
            tx.append_audit(
                &NewAuditEntry {
                    actor: actor.to_owned(),
                    event: "user.created".to_owned(),
                    subject: format!("user/{name}"),
                    details: json!({"role": role.as_str()}),
                },
                now,
            )
            .await?;
            tx.commit().await.map_err(db_err("commit create user"))?;
            Ok(user)
        })
    }

    /// Reads a user by login name.
    pub async fn get_user_by_name(&self, name: &str) -> Result<User> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, User>(concat!("SELECT ", user_columns!(), " FROM users WHERE name = $1"))
                .bind(name)
                .fetch_optional(pool)
                .await
                .map_err(db_err("get user"))?
                .ok_or_else(|| StoreError::not_found("user", name))
        })
    }

    /// Reads a user by id.
    pub async fn get_user(&self, id: i64) -> Result<User> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, User>(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(db_err("get user"))?
                .ok_or_else(|| StoreError::not_found("user", id))
        })
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<User>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, User>(concat!("SELECT ", user_columns!(), " FROM users ORDER BY name"))
                .fetch_all(pool)
                .await
                .map_err(db_err("list users"))
        })
    }

    /// Admits one login attempt for `name` before its password is checked, counting it as a
    /// failure until the password proves right: one conditional update, so parallel guesses
    /// cannot outrun the count. The count goes up by one (from one again once a lock expired),
    /// and reaching `max_failures` locks the account until `lock_until`. Returns the user as
    /// counted, or `None` when there is no such user or it is locked: then no password may be
    /// checked. At most `max_failures` attempts are admitted per lock.
    pub async fn count_login_attempt(
        &self,
        name: &str,
        max_failures: i64,
        lock_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<User>> {
        let now = db_time(now);
        // Only an unlocked row is updated, so `locked_until` here is absent or expired.
        on_pool!(self, pool => {
            sqlx::query_as::<_, User>(concat!(
                "UPDATE users SET \
                 failed_logins = CASE WHEN locked_until IS NULL \
                     THEN failed_logins + 1 ELSE 1 END, \
                 locked_until = CASE WHEN (CASE WHEN locked_until IS NULL \
                     THEN failed_logins + 1 ELSE 1 END) >= $2 THEN $3 ELSE NULL END, \
                 updated_at = $4 \
                 WHERE name = $1 AND (locked_until IS NULL OR locked_until <= $4) \
                 RETURNING ", user_columns!()
            ))
            .bind(name)
            .bind(max_failures)
            .bind(db_time(lock_until))
            .bind(now)
            .fetch_optional(pool)
            .await
            .map_err(db_err("count a login attempt"))
        })
    }

    /// Ends every session of user `id`: raises its session version, so every access token
    /// issued before stops working at once (refresh tokens are revoked by family).
    pub async fn end_sessions(&self, id: i64, now: DateTime<Utc>) -> Result<()> {
        let now = db_time(now);
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE users SET session_version = session_version + 1, updated_at = $2 \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(now)
            .execute(pool)
            .await
            .map_err(db_err("end sessions"))?;
            Ok(())
        })
    }

    /// Resets the failure count and lock after a successful login (the password proved right).
    pub async fn reset_failed_logins(&self, id: i64, now: DateTime<Utc>) -> Result<()> {
        let now = db_time(now);
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE users SET failed_logins = 0, locked_until = NULL, updated_at = $2 \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(now)
            .execute(pool)
            .await
            .map_err(db_err("reset failed logins"))?;
            Ok(())
        })
    }

    /// Disables or enables a user; returns whether the user exists. Audited.
    pub async fn set_user_disabled(
        &self,
        name: &str,
        disabled: bool,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let now = db_time(now);
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err("begin disable user"))?;
            // Disabling also ends the user's sessions (their access tokens stop working).
            let found = sqlx::query(
                "UPDATE users SET disabled = $2, updated_at = $3, \
                 session_version = session_version + CASE WHEN $2 THEN 1 ELSE 0 END \
                 WHERE name = $1",
            )
                .bind(name)
                .bind(disabled)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_err("disable user"))?
                .rows_affected()
                == 1;
            if found {
                tx.append_audit(
                    &NewAuditEntry {
                        actor: actor.to_owned(),
                        event: if disabled { "user.disabled" } else { "user.enabled" }.to_owned(),
                        subject: format!("user/{name}"),
                        details: json!({}),
                    },
                    now,
                )
                .await?;
            }
            tx.commit().await.map_err(db_err("commit disable user"))?;
            Ok(found)
        })
    }

    /// Sets the git identities (emails) of user `name`; returns whether the user exists.
    /// Emails are stored trimmed and lower-case. Audited.
    pub async fn set_user_git_emails(
        &self,
        name: &str,
        emails: &[String],
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut clean: Vec<String> = emails
            .iter()
            .map(|e| e.trim().to_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        clean.sort();
        clean.dedup();
        let text = clean.join("\n");
        let now = db_time(now);
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err("begin set git emails"))?;
            let found = sqlx::query("UPDATE users SET git_emails = $2, updated_at = $3 WHERE name = $1")
                .bind(name)
                .bind(&text)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_err("set git emails"))?
                .rows_affected()
                == 1;
            if found {
                tx.append_audit(
                    &NewAuditEntry {
                        actor: actor.to_owned(),
                        event: "user.git_emails".to_owned(),
                        subject: format!("user/{name}"),
                        details: json!({"git_emails": clean}),
                    },
                    now,
                )
                .await?;
            }
            tx.commit().await.map_err(db_err("commit set git emails"))?;
            Ok(found)
        })
    }

    /// The git identities (emails, lower-case) of user `name`; empty for an unknown user.
    pub async fn user_git_emails(&self, name: &str) -> Result<Vec<String>> {
        on_pool!(self, pool => {
            let row: Option<(String,)> =
                sqlx::query_as("SELECT git_emails FROM users WHERE name = $1")
                    .bind(name)
                    .fetch_optional(pool)
                    .await
                    .map_err(db_err("read git emails"))?;
            Ok(row
                .map(|(t,)| t.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
                .unwrap_or_default())
        })
    }

    /// Stores a new refresh token hash.
    pub async fn insert_refresh_token(
        &self,
        token_hash: &str,
        user_id: i64,
        family: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<RefreshToken> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, RefreshToken>(
                "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 RETURNING id, token_hash, user_id, family, expires_at, revoked, created_at",
            )
            .bind(token_hash)
            .bind(user_id)
            .bind(family)
            .bind(db_time(expires_at))
            .bind(db_time(now))
            .fetch_one(pool)
            .await
            .map_err(db_err("insert refresh token"))
        })
    }

    /// Finds a refresh token by its hash.
    pub async fn find_refresh_token(&self, token_hash: &str) -> Result<Option<RefreshToken>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, RefreshToken>(
                "SELECT id, token_hash, user_id, family, expires_at, revoked, created_at \
                 FROM refresh_tokens WHERE token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await
            .map_err(db_err("find refresh token"))
        })
    }

    /// Uses a refresh token: if it is valid it is revoked and `new_hash` stored in the same
    /// family, atomically, so two concurrent uses cannot both rotate. Presenting an already
    /// used or revoked token revokes its whole family (token theft detection).
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<RotateOutcome> {
        let now = db_time(now);
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err("begin rotate refresh token"))?;
            let old: Option<RefreshToken> = sqlx::query_as(pool.pick(
                "SELECT id, token_hash, user_id, family, expires_at, revoked, created_at \
                 FROM refresh_tokens WHERE token_hash = $1",
                "SELECT id, token_hash, user_id, family, expires_at, revoked, created_at \
                 FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
            ))
            .bind(old_hash)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("find refresh token"))?;
            let Some(old) = old else {
                return Ok(RotateOutcome::Unknown);
            };
            if old.revoked {
                sqlx::query("UPDATE refresh_tokens SET revoked = TRUE WHERE family = $1")
                    .bind(&old.family)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err("revoke refresh token family"))?;
                tx.commit().await.map_err(db_err("commit revoke family"))?;
                return Ok(RotateOutcome::Reused { family: old.family, user_id: old.user_id });
            }
            if old.expires_at <= now {
                return Ok(RotateOutcome::Expired);
            }
            sqlx::query("UPDATE refresh_tokens SET revoked = TRUE WHERE id = $1")
                .bind(old.id)
                .execute(&mut *tx)
                .await
                .map_err(db_err("revoke used refresh token"))?;
            let new = sqlx::query_as::<_, RefreshToken>(
                "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 RETURNING id, token_hash, user_id, family, expires_at, revoked, created_at",
            )
            .bind(new_hash)
            .bind(old.user_id)
            .bind(&old.family)
            .bind(db_time(new_expires_at))
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err("insert rotated refresh token"))?;
            tx.commit().await.map_err(db_err("commit rotate refresh token"))?;
            Ok(RotateOutcome::Rotated(new))
        })
    }

    /// Revokes every token of a family (logout); returns how many were still active.
    pub async fn revoke_refresh_family(&self, family: &str) -> Result<u64> {
        on_pool!(self, pool => {
            Ok(sqlx::query(
                "UPDATE refresh_tokens SET revoked = TRUE WHERE family = $1 AND revoked = FALSE",
            )
            .bind(family)
            .execute(pool)
            .await
            .map_err(db_err("revoke refresh token family"))?
            .rows_affected())
        })
    }

    /// Revokes every refresh token of a user (disable, password change).
    pub async fn revoke_user_refresh_tokens(&self, user_id: i64) -> Result<u64> {
        on_pool!(self, pool => {
            Ok(sqlx::query(
                "UPDATE refresh_tokens SET revoked = TRUE WHERE user_id = $1 AND revoked = FALSE",
            )
            .bind(user_id)
            .execute(pool)
            .await
            .map_err(db_err("revoke user refresh tokens"))?
            .rows_affected())
        })
    }

    /// Stores a new API key by its hash, limited to `devices` when given. Audited as
    /// `api_key.created`.
    pub async fn create_api_key(
        &self,
        name: &str,
        key_hash: &str,
        scopes: &[Scope],
        devices: Option<&[String]>,
        created_by: &str,
        now: DateTime<Utc>,
    ) -> Result<ApiKey> {
        let now = db_time(now);
        let scope_text = scopes_to_text(scopes);
        let device_text = devices
            .map(|d| {
                let mut sorted = d.to_vec();
                sorted.sort();
                sorted.dedup();
                serde_json::to_string(&sorted)
            })
            .transpose()
            .map_err(|e| StoreError::Corrupt {
                op: "encode api key devices",
                message: e.to_string(),
            })?;
        let row: ApiKeyRow = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err("begin create api key"))?;
            let row: ApiKeyRow = sqlx::query_as(concat!(
                "INSERT INTO api_keys (name, key_hash, scopes, devices, created_by, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING ", api_key_columns!()
            ))
            .bind(name)
            .bind(key_hash)
            .bind(&scope_text)
            .bind(&device_text)
            .bind(created_by)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err("insert api key"))?;
            tx.append_audit(
                &NewAuditEntry {
                    actor: created_by.to_owned(),
                    event: "api_key.created".to_owned(),
                    subject: format!("api_key/{}", row.0),
                    details: json!({"name": name, "scopes": scope_text, "devices": devices}),
                },
                now,
            )
            .await?;
            tx.commit().await.map_err(db_err("commit create api key"))?;
            row
        });
        api_key_from_row(row)
    }

    /// Finds an active (not revoked) API key by its hash.
    pub async fn find_api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        let row: Option<ApiKeyRow> = on_pool!(self, pool => {
            sqlx::query_as(concat!(
                "SELECT ", api_key_columns!(), " FROM api_keys \
                 WHERE key_hash = $1 AND revoked_at IS NULL"
            ))
            .bind(key_hash)
            .fetch_optional(pool)
            .await
            .map_err(db_err("find api key"))?
        });
        row.map(api_key_from_row).transpose()
    }

    /// Records that a key was used.
    pub async fn touch_api_key(&self, id: i64, now: DateTime<Utc>) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
                .bind(id)
                .bind(db_time(now))
                .execute(pool)
                .await
                .map_err(db_err("touch api key"))?;
            Ok(())
        })
    }

    /// Every API key, revoked ones included, newest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        let rows: Vec<ApiKeyRow> = on_pool!(self, pool => {
            sqlx::query_as(concat!("SELECT ", api_key_columns!(), " FROM api_keys ORDER BY id DESC"))
                .fetch_all(pool)
                .await
                .map_err(db_err("list api keys"))?
        });
        rows.into_iter().map(api_key_from_row).collect()
    }

    /// Revokes a key; returns whether an active key was revoked. Audited.
    pub async fn revoke_api_key(&self, id: i64, actor: &str, now: DateTime<Utc>) -> Result<bool> {
        let now = db_time(now);
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(db_err("begin revoke api key"))?;
            let done = sqlx::query(
                "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            )
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err("revoke api key"))?
            .rows_affected()
                == 1;
            if done {
                tx.append_audit(
                    &NewAuditEntry {
                        actor: actor.to_owned(),
                        event: "api_key.revoked".to_owned(),
                        subject: format!("api_key/{id}"),
                        details: json!({}),
                    },
                    now,
                )
                .await?;
            }
            tx.commit().await.map_err(db_err("commit revoke api key"))?;
            Ok(done)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{password_problem, valid_user_name};

    #[test]
    fn user_names_should_refuse_spaces_and_quotes() {
        assert!(valid_user_name("alice"));
        assert!(valid_user_name("ops.bob@plant"));
        assert!(!valid_user_name(""));
        assert!(!valid_user_name("a b"));
        assert!(!valid_user_name("x'; DROP TABLE users; --"));
        assert!(!valid_user_name(&"a".repeat(65)));
    }

    #[test]
    fn a_password_should_need_twelve_characters_counted_as_characters() {
        assert!(password_problem("elevenchars").is_some());
        assert!(password_problem("twelve chars").is_none());
        // Twelve characters of two bytes each are twelve, not twenty-four.
        assert!(password_problem(&"é".repeat(11)).is_some());
        assert!(password_problem(&"é".repeat(12)).is_none());
    }
}
