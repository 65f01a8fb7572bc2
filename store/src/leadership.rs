//! Leadership among replicas: a lease row on any backend (with an epoch that fences out a
//! previous holder), and a session advisory lock on PostgreSQL. Which replica leads is
//! decided here; what a leader does is the loop's.

use chrono::{DateTime, Utc};
use sqlx::Connection;

use super::codec::db_time;
use super::{Backend, Result, Store, db_err, on_pool};

/// What a leader writes under: the lease it holds and the epoch it took it at. Run and action
/// transitions given a fence take effect only while the fence still holds the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease (`reconcile:{scope}`).
    pub name: String,
    /// This replica.
    pub holder: String,
    /// Raised on every change of holder.
    pub epoch: i64,
}

/// Leadership held through a PostgreSQL session advisory lock on a dedicated connection.
/// Dropping it closes the connection, which releases the lock; a crashed holder loses it as
/// soon as the server notices the closed session.
#[derive(Debug)]
pub struct LeaderLock {
    conn: sqlx::PgConnection,
    key: i64,
}

impl LeaderLock {
    /// The advisory lock key.
    pub fn key(&self) -> i64 {
        self.key
    }

    /// Checks that the session holding the lock is still alive.
    pub async fn is_alive(&mut self) -> bool {
        self.conn.ping().await.is_ok()
    }

    /// Releases the lock and closes its connection.
    pub async fn release(mut self) -> Result<()> {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut self.conn)
            .await
            .map_err(db_err("release advisory lock"))?;
        self.conn
            .close()
            .await
            .map_err(db_err("close leader connection"))
    }
}

impl Store {
    /// Takes or renews the lease `name` for `holder` until `expires_at`. Succeeds when the
    /// lease is free, expired at `now`, or already held by `holder`; returns whether `holder`
    /// holds it afterwards. One conditional upsert, so two contenders cannot both win.
    pub async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(self
            .acquire_fence(name, holder, expires_at, now)
            .await?
            .is_some())
    }

    /// Like [`Store::try_acquire_lease`], and returns the fence the holder writes under. The
    /// epoch rises whenever the holder changes, so a fence taken before a takeover never
    /// matches again.
    pub async fn acquire_fence(
        &self,
        name: &str,
        holder: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Fence>> {
        let now = db_time(now);
        let epoch: Option<i64> = on_pool!(self, pool => {
            sqlx::query_scalar(
                "INSERT INTO leader_leases (name, holder, expires_at, acquired_at, epoch) \
                 VALUES ($1, $2, $3, $4, 1) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at, \
                 acquired_at = CASE WHEN leader_leases.holder = excluded.holder \
                     THEN leader_leases.acquired_at ELSE excluded.acquired_at END, \
                 epoch = CASE WHEN leader_leases.holder = excluded.holder \
                     THEN leader_leases.epoch ELSE leader_leases.epoch + 1 END \
                 WHERE leader_leases.holder = excluded.holder \
                 OR leader_leases.expires_at <= excluded.acquired_at \
                 RETURNING epoch",
            )
            .bind(name)
            .bind(holder)
            .bind(db_time(expires_at))
            .bind(now)
            .fetch_optional(pool)
            .await
            .map_err(db_err("acquire lease"))?
        });
        Ok(epoch.map(|epoch| Fence {
            name: name.to_owned(),
            holder: holder.to_owned(),
            epoch,
        }))
    }

    /// Takes the lease `name` whoever holds it, raising the epoch if the holder changes. Only
    /// for a holder that owns the leadership by other means (the PostgreSQL advisory lock):
    /// the lease row then carries the epoch that fences a previous holder out.
    pub async fn seize_fence(
        &self,
        name: &str,
        holder: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Fence> {
        let now = db_time(now);
        let epoch: i64 = on_pool!(self, pool => {
            sqlx::query_scalar(
                "INSERT INTO leader_leases (name, holder, expires_at, acquired_at, epoch) \
                 VALUES ($1, $2, $3, $4, 1) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                 expires_at = excluded.expires_at, \
                 acquired_at = CASE WHEN leader_leases.holder = excluded.holder \
                     THEN leader_leases.acquired_at ELSE excluded.acquired_at END, \
                 epoch = CASE WHEN leader_leases.holder = excluded.holder \
                     THEN leader_leases.epoch ELSE leader_leases.epoch + 1 END \
                 RETURNING epoch",
            )
            .bind(name)
            .bind(holder)
            .bind(db_time(expires_at))
            .bind(now)
            .fetch_one(pool)
            .await
            .map_err(db_err("seize lease"))?
        });
        Ok(Fence {
            name: name.to_owned(),
            holder: holder.to_owned(),
            epoch,
        })
    }

    /// Extends the lease of `fence` to `expires_at` if the fence still holds it (same holder
    /// and epoch, not run out at `now`); returns whether it did. A lease that ran out is not
    /// revived: another replica may have acted on it.
    pub async fn renew_fence(
        &self,
        fence: &Fence,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        on_pool!(self, pool => {
            Ok(sqlx::query(
                "UPDATE leader_leases SET expires_at = $4 \
                 WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > $5",
            )
            .bind(&fence.name)
            .bind(&fence.holder)
            .bind(fence.epoch)
            .bind(db_time(expires_at))
            .bind(db_time(now))
            .execute(pool)
            .await
            .map_err(db_err("renew lease"))?
            .rows_affected()
                == 1)
        })
    }

    /// Whether `fence` still holds its lease at `now`.
    pub async fn fence_holds(&self, fence: &Fence, now: DateTime<Utc>) -> Result<bool> {
        on_pool!(self, pool => {
            Ok(sqlx::query_scalar::<_, i64>(
                "SELECT epoch FROM leader_leases \
                 WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > $4",
            )
            .bind(&fence.name)
            .bind(&fence.holder)
            .bind(fence.epoch)
            .bind(db_time(now))
            .fetch_optional(pool)
            .await
            .map_err(db_err("check lease"))?
            .is_some())
        })
    }

    /// Gives up the lease if `holder` holds it; returns whether it did. The row stays (with
    /// no holder, run out) so the epoch keeps rising across holders.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        on_pool!(self, pool => {
            Ok(sqlx::query(
                "UPDATE leader_leases SET holder = '', expires_at = acquired_at \
                 WHERE name = $1 AND holder = $2",
            )
            .bind(name)
            .bind(holder)
            .execute(pool)
            .await
            .map_err(db_err("release lease"))?
            .rows_affected()
                == 1)
        })
    }

    /// The current holder of a lease and its expiry, if any.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<(String, DateTime<Utc>)>> {
        on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT holder, expires_at FROM leader_leases WHERE name = $1 AND holder <> ''",
            )
            .bind(name)
            .fetch_optional(pool)
            .await
            .map_err(db_err("read lease"))
        })
    }

    /// PostgreSQL only: tries to take the session advisory lock `key` on a connection of its
    /// own. `Ok(None)` when another session holds it, or when the backend is SQLite (which
    /// has one writer anyway; use [`Store::try_acquire_lease`] there).
    pub async fn try_advisory_leadership(&self, key: i64) -> Result<Option<LeaderLock>> {
        let Backend::Postgres(pool) = self.backend() else {
            return Ok(None);
        };
        let mut conn = pool
            .acquire()
            .await
            .map_err(db_err("acquire leader connection"))?
            .detach();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await
            .map_err(db_err("try advisory lock"))?;
        if got {
            Ok(Some(LeaderLock { conn, key }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }
}
