//! Retention: readings older than the configured age are deleted in small batches, with a
//! pause between batches so polling writes are never held up for long.
//!
//! It deletes readings only (the latest value of each series is kept by the store); alerts
//! and the delivery log are not touched.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};

/// Deletes the readings older than `now - retention`, `batch` at a time, pausing `pause`
/// between batches; returns how many were deleted.
///
/// # Errors
/// The first store error (what was deleted before stays deleted).
pub async fn prune_readings(
    store: &Store,
    retention: Duration,
    now: DateTime<Utc>,
    batch: u32,
    pause: Duration,
) -> Result<u64, StoreError> {
    let Some(cutoff) = chrono::Duration::from_std(retention)
        .ok()
        .and_then(|r| now.checked_sub_signed(r))
    else {
        return Ok(0);
    };
    let mut total = 0;
    loop {
        let n = store.delete_readings_before(cutoff, batch).await?;
        total += n;
        if n < u64::from(batch) {
            return Ok(total);
        }
        tokio::time::sleep(pause).await;
    }
}

/// Prunes every `every` until `cancel` fires.
pub async fn run_retention(
    store: Store,
    retention: Duration,
    every: Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match prune_readings(
            &store,
            retention,
            Utc::now(),
            5_000,
            Duration::from_millis(50),
        )
        .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "old readings deleted"),
            Err(e) => tracing::error!(error = %e, "delete old readings"),
        }
    }
}
