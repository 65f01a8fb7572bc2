//! The store's error type. Variants say which step failed so the API can map them to
//! 404/409/422/500; database errors keep their source. No SQL here.

use crate::model::{ActionStatus, RunStatus};

/// What went wrong in a repository function.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is neither `sqlite:` nor `postgres://`.
    #[error("unsupported database url {url} (expected sqlite://PATH or postgres://...)")]
    UnsupportedUrl {
        /// The URL with any password removed.
        url: String,
    },
    /// Opening the database failed.
    #[error("connect to database {url}")]
    Connect {
        /// The URL with any password removed.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Applying the embedded migrations failed.
    #[error("apply database migrations")]
    Migrate {
        /// The migrator's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// The object does not exist.
    #[error("{what} {key} not found")]
    NotFound {
        /// Kind of object (`run`, `user`, ...).
        what: &'static str,
        /// Its id or name.
        key: String,
    },
    /// The user already approved or rejected this run; one decision per user per run.
    #[error("user {user} already decided on run {run_id}")]
    AlreadyDecided {
        /// The run.
        run_id: i64,
        /// The user who decided before.
        user: String,
    },
    /// The approval names a different plan than the run holds.
    #[error("run {run_id} has plan hash {current}, not {given}")]
    StalePlanHash {
        /// The run.
        run_id: i64,
        /// The hash the run holds.
        current: String,
        /// The hash the approval named.
        given: String,
    },
    /// The run is not in a state that accepts this operation (e.g. approving a finished run).
    #[error("run {run_id} is {status}, which does not allow {op}")]
    RunNotInState {
        /// The run.
        run_id: i64,
        /// Its current state.
        status: RunStatus,
        /// What was attempted.
        op: &'static str,
    },
    /// A run transition that the state machine forbids (a programming error of the caller).
    #[error("illegal run transition {from} -> {to}")]
    IllegalRunTransition {
        /// The state moved from.
        from: RunStatus,
        /// The state moved to.
        to: RunStatus,
    },
    /// An action transition that the state machine forbids.
    #[error("illegal action transition {from} -> {to}")]
    IllegalActionTransition {
        /// The state moved from.
        from: ActionStatus,
        /// The state moved to.
        to: ActionStatus,
    },
    /// The input cannot be stored as given (e.g. a run created in a non-initial state).
    #[error("invalid input for {what}: {message}")]
    InvalidInput {
        /// What was being stored.
        what: &'static str,
        /// Why it was refused.
        message: String,
    },
    /// A unique or foreign key constraint refused the write.
    #[error("{op}: constraint {constraint} violated")]
    Constraint {
        /// The operation.
        op: &'static str,
        /// The constraint name the database reported (may be empty on SQLite).
        constraint: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A value read from the database could not be decoded (corrupt row or unknown enum).
    #[error("{op}: stored value is invalid: {message}")]
    Corrupt {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        message: String,
    },
    /// A fenced write by a replica that no longer holds the leadership it wrote under (the
    /// lease ran out or another replica took it).
    #[error("lost the leadership {lease} (epoch {epoch}): the write was refused")]
    Fenced {
        /// The lease's name (one per reconcile scope).
        lease: String,
        /// The epoch the writer held.
        epoch: i64,
    },
    /// Any other database error.
    #[error("{op}")]
    Database {
        /// The operation that failed.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}

impl StoreError {
    /// Classifies a driver error: unique/foreign key/check violations become `Constraint`.
    pub(crate) fn from_sqlx(op: &'static str, source: sqlx::Error) -> StoreError {
        if let sqlx::Error::Database(db) = &source {
            use sqlx::error::ErrorKind;
            if matches!(
                db.kind(),
                ErrorKind::UniqueViolation
                    | ErrorKind::ForeignKeyViolation
                    | ErrorKind::CheckViolation
                    | ErrorKind::NotNullViolation
            ) {
                let constraint = db.constraint().unwrap_or_default().to_owned();
                return StoreError::Constraint {
                    op,
                    constraint,
                    source,
                };
            }
        }
        StoreError::Database { op, source }
    }

    /// Whether this error is a unique constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Constraint { source, .. } => matches!(
                source,
                sqlx::Error::Database(db)
                    if db.kind() == sqlx::error::ErrorKind::UniqueViolation
            ),
            _ => false,
        }
    }

    /// Whether the API should answer 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// Whether the API should answer 409 (a conflict with the current state).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            StoreError::AlreadyDecided { .. }
                | StoreError::StalePlanHash { .. }
                | StoreError::RunNotInState { .. }
                | StoreError::Constraint { .. }
        )
    }

    pub(crate) fn not_found(what: &'static str, key: impl ToString) -> StoreError {
        StoreError::NotFound {
            what,
            key: key.to_string(),
        }
    }
}
