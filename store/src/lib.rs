//! The store: every table mycopod records into, on SQLite or PostgreSQL, behind typed async
//! repository functions, with the vocabulary they speak ([`model`]) and the bus they publish
//! on after each commit ([`events`]). All of mycopod's SQL lives in this crate; nothing
//! outside it builds a query, and it knows nothing of specs, adapters or the loop.
//!
//! Design: one [`Store`] holds one of two typed pools ([`sqlx::SqlitePool`] or
//! [`sqlx::PgPool`]). SQL is written once with `$N` placeholders, which both backends accept,
//! and the [`on_pool!`] macro expands one body for each pool, so every statement is type-checked
//! against both drivers. Where the dialects truly differ (row locks, advisory locks, bulk
//! inserts, deleting by physical row) the body picks per-backend text with [`Dialect`].
//! `sqlx::Any` is deliberately not used: it cannot decode SQLite booleans or PostgreSQL
//! `TIMESTAMPTZ`/`JSONB`.
//!
//! Rules every repository function follows:
//! - run, action and alert states change only by conditional updates
//!   (`... WHERE id = $1 AND status = $2`) whose result says whether the change took effect;
//! - multi-statement writes run in one transaction that takes the write lock up front
//!   (`BEGIN IMMEDIATE` on SQLite, row or advisory locks on PostgreSQL);
//! - the caller passes `now`, so tests control time and the database never supplies it.

pub mod events;
pub mod model;

mod audit;
mod codec;
mod config_objects;
mod error;
mod guest_reads;
mod leadership;
mod ownership;
mod readings;
mod runs;
mod telemetry;
mod translations;
mod users;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::events::EventBus;

pub use audit::{
    AuditEntry, AuditPage, GENESIS_HASH, NewAuditEntry, VerifyFailure, VerifyReport, entry_hash,
};
pub use config_objects::ConfigObject;
pub use error::StoreError;
pub use guest_reads::GuestRead;
pub use leadership::{Fence, LeaderLock};
pub use readings::ReadingRow;
pub use runs::{
    ActionUpdate, ApprovalOutcome, ApprovalRecord, NewAction, NewRun, Run, RunFilter, RunPage,
    RunSummary, StoredAction,
};
pub use telemetry::{Alert, Delivery, Device, LatestReading, NewDelivery, Reading, ReadingBucket};
pub use translations::{CachedTranslation, DeclarationRequest, NewDeclarationRequest};
pub use users::{
    ApiKey, MIN_PASSWORD_CHARS, RefreshToken, RotateOutcome, User, hash_password, hash_token,
    password_problem, valid_user_name, verify_password,
};

/// Result of every repository function.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How long a SQLite connection waits for another writer before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The embedded migrations of each backend.
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The database behind a [`Store`].
#[derive(Debug, Clone)]
pub enum Backend {
    /// A SQLite file in WAL mode with foreign keys on.
    Sqlite(SqlitePool),
    /// A PostgreSQL server.
    Postgres(PgPool),
}

/// Handle to mycopod's database. Cheap to clone (the pools are reference counted).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    events: EventBus,
    series: readings::SeriesIds,
}

/// Expands `$body` once per backend with `$pool` bound to the typed pool, so SQL written once
/// is compiled against both drivers.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store.backend() {
            $crate::Backend::Sqlite($pool) => $body,
            $crate::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Per-backend differences, implemented by the two pool types so a body expanded by
/// [`on_pool!`] can ask for the right SQL text or transaction start.
pub(crate) trait Dialect {
    /// The sqlx database type.
    type Db: sqlx::Database;
    /// Whether this is PostgreSQL.
    const IS_POSTGRES: bool;

    /// Begins a transaction that holds the write lock from its first statement, so that
    /// concurrent writers serialize instead of failing half way.
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>> + Send;

    /// Picks the SQLite or the PostgreSQL text of a statement.
    fn pick(&self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        if Self::IS_POSTGRES { postgres } else { sqlite }
    }
}

impl Dialect for SqlitePool {
    type Db = sqlx::Sqlite;
    const IS_POSTGRES: bool = false;

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl Dialect for PgPool {
    type Db = sqlx::Postgres;
    const IS_POSTGRES: bool = true;

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// Wraps a sqlx error with the name of the operation that failed, mapping unique and foreign
/// key violations to [`StoreError::Constraint`].
pub(crate) fn db_err(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::from_sqlx(op, source)
}

impl Store {
    /// Connects to `url`: `sqlite://PATH` (created if missing) or `postgres://...`.
    /// Does not run migrations; call [`Store::migrate`].
    pub async fn connect(url: &str) -> Result<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options =
                PgConnectOptions::from_str(url).map_err(|source| StoreError::Connect {
                    url: redact_url(url),
                    source,
                })?;
            Store::connect_postgres(options).await
        } else if url.starts_with("sqlite:") {
            let options =
                SqliteConnectOptions::from_str(url).map_err(|source| StoreError::Connect {
                    url: redact_url(url),
                    source,
                })?;
            Store::connect_sqlite(options).await
        } else {
            Err(StoreError::UnsupportedUrl {
                url: redact_url(url),
            })
        }
    }

    /// Opens (and creates) a SQLite database with WAL, foreign keys, a busy timeout and
    /// `synchronous = NORMAL` (durable at every checkpoint; WAL keeps the file consistent).
    pub async fn connect_sqlite(options: SqliteConnectOptions) -> Result<Store> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            // 1 MiB of page cache per connection (SQLite's default is 2 MiB): the database of
            // a thousand guests fits, and eight connections no longer hold 16 MiB at idle.
            .pragma("cache_size", "-1024");
        let filename = options.get_filename().display().to_string();
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // Connections a burst opened (each with its thread and cache) close after a
            // minute unused; one stays open.
            .min_connections(1)
            .idle_timeout(Duration::from_secs(60))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect {
                url: format!("sqlite://{filename}"),
                source,
            })?;
        Ok(Store::from_backend(Backend::Sqlite(pool)))
    }

    /// Connects a pool to a PostgreSQL server.
    pub async fn connect_postgres(options: PgConnectOptions) -> Result<Store> {
        let url = format!(
            "postgres://{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect { url, source })?;
        Ok(Store::from_backend(Backend::Postgres(pool)))
    }

    /// Wraps an existing pool.
    pub fn from_backend(backend: Backend) -> Store {
        Store {
            backend,
            events: EventBus::new(),
            series: readings::SeriesIds::default(),
        }
    }

    /// The cache of reading series ids (see `readings.rs`).
    pub(crate) fn series_ids(&self) -> &readings::SeriesIds {
        &self.series
    }

    /// The bus this store publishes committed changes of runs, actions, approvals and alerts
    /// on. Clones of a store share it.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The pool behind this store.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Applies the embedded migrations of this backend that are not applied yet.
    pub async fn migrate(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await,
            Backend::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await,
        }
        .map_err(|source| StoreError::Migrate { source })
    }

    /// Checks that the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map(|_| ())
                .map_err(db_err("ping database"))
        })
    }

    /// Closes every connection of the pool and waits for them to finish.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}

/// Removes a password from a database URL so it can be logged.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redact_url_should_hide_only_the_password() {
        assert_eq!(
            redact_url("postgres://me:secret@db:5432/x"),
            "postgres://me:***@db:5432/x"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(redact_url("sqlite://mycopod.db"), "sqlite://mycopod.db");
    }
}
