//! Polling one Modbus device: one read of every register through the shared client, turned
//! into a [`Sample`]; failures counted in the store until the device is offline.
//!
//! The step function [`poll_device`] does one poll at a given `now`; [`run_poller`] is the
//! trivial loop around it (jittered interval, backoff while offline). Neither writes readings
//! (the batch writer does) nor evaluates alerts (the evaluator does).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mycopod_adapters::modbus::ModbusClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::store::{Reading, Store};

/// The longest wait between polls of an offline device.
pub const MAX_OFFLINE_DELAY: Duration = Duration::from_secs(60);

/// What one poll (or push) found out about a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The device's `metadata.name`.
    pub device: String,
    /// When it was polled, or the time a pushed reading carries.
    pub time: DateTime<Utc>,
    /// How far the sample moves its device's evaluation clock: `time` for a poll; for a
    /// pushed reading at most the time the server received it, so a reading dated ahead
    /// (within the ingest skew) cannot make the evaluator skip the samples that follow it.
    pub clock: DateTime<Utc>,
    /// What came back.
    pub kind: SampleKind,
}

/// Register name and value pairs of one sample.
pub type RegisterValues = Vec<(String, f64)>;

/// The outcome of one poll.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleKind {
    /// The device answered: the numeric registers, decoded and scaled (text registers and
    /// non-finite values are left out).
    Values(RegisterValues),
    /// The poll failed.
    Failed {
        /// Why.
        error: String,
        /// Whether the device now counts as offline (`offlineAfter` failures in a row).
        offline: bool,
        /// Failed polls in a row, this one included.
        failures: i64,
    },
}

/// Pushed readings as samples, the way a poll would have produced them: one sample per
/// (device, time) with that time's values, oldest first (then by device), so the evaluator
/// sees a gateway's batch in the order it happened.
pub fn samples_of_readings(readings: &[Reading], received: DateTime<Utc>) -> Vec<Sample> {
    let mut grouped: BTreeMap<(DateTime<Utc>, &str), RegisterValues> = BTreeMap::new();
    for r in readings {
        grouped
            .entry((r.time, r.device.as_str()))
            .or_default()
            .push((r.register.clone(), r.value));
    }
    grouped
        .into_iter()
        .map(|((time, device), values)| Sample {
            device: device.to_owned(),
            time,
            clock: time.min(received),
            kind: SampleKind::Values(values),
        })
        .collect()
}

/// One device to poll.
#[derive(Debug, Clone)]
pub struct PollTarget {
    /// The shared client (the same one reconciles write setpoints through).
    pub client: Arc<ModbusClient>,
    /// The declared `pollInterval`.
    pub interval: Duration,
    /// The declared `offlineAfter` (at least 1).
    pub offline_after: u32,
}

impl PollTarget {
    /// The device's name.
    pub fn name(&self) -> &str {
        &self.client.device().name
    }
}

/// Polls `target` once at `now`. A success is returned as values; with `mark_seen` (the
/// first poll, or the first after failures) the device is also marked seen and online in the
/// store right away, while steady successes leave `last_seen` to the batch writer. A failure
/// is counted in the store at once, so the offline decision never waits for a batch.
///
/// # Errors
/// Only store errors; a device that does not answer is a [`SampleKind::Failed`] sample.
pub async fn poll_device(
    store: &Store,
    target: &PollTarget,
    mark_seen: bool,
    now: DateTime<Utc>,
) -> Result<Sample, crate::store::StoreError> {
    let device = target.name().to_owned();
    // Every request is bounded by the device timeout; this guards the whole read (plan,
    // reconnect backoff included) against a wedged connection.
    let guard = target.client.device().timeout * 4 * (target.client.read_plan().len() as u32 + 1)
        + Duration::from_secs(10);
    let result = match tokio::time::timeout(guard, target.client.read_all()).await {
        Ok(Ok(values)) => Ok(values),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("poll of {device} did not finish within {guard:?}")),
    };
    match result {
        Ok(values) => {
            if mark_seen {
                store.record_device_seen(&device, now).await?;
            }
            let values = values
                .into_iter()
                .filter_map(|(name, value)| {
                    value.as_f64().filter(|v| v.is_finite()).map(|v| (name, v))
                })
                .collect();
            Ok(Sample {
                device,
                time: now,
                clock: now,
                kind: SampleKind::Values(values),
            })
        }
        Err(error) => {
            tracing::debug!(device = %device, %error, "poll failed");
            let recorded = store
                .record_device_failure(&device, &error, i64::from(target.offline_after), now)
                .await?;
            Ok(Sample {
                device,
                time: now,
                clock: now,
                kind: SampleKind::Failed {
                    error,
                    offline: !recorded.online,
                    failures: recorded.consecutive_failures,
                },
            })
        }
    }
}

/// The wait before the next poll: the interval scaled by `jitter` (a factor around 1, so
/// devices with the same interval drift apart), doubled for each failure past
/// `offline_after` while the device stays offline, up to [`MAX_OFFLINE_DELAY`] (never less
/// than the interval).
pub fn next_delay(interval: Duration, failures: i64, offline_after: u32, jitter: f64) -> Duration {
    let base = interval.mul_f64(jitter.clamp(0.5, 1.5));
    let past = failures - i64::from(offline_after);
    if past < 0 {
        return base;
    }
    let failures_past = u32::try_from(past.saturating_add(1)).unwrap_or(u32::MAX);
    mycopod_adapters::backoff::Backoff::new(base, MAX_OFFLINE_DELAY.max(interval))
        .delay(failures_past)
}

/// The grid poll wake-ups are moved to: pollers due within one step of each other wake the
/// runtime once, together, instead of one by one (200 devices at 1 s: about 20 wake-ups a
/// second instead of 200). The jitter still spreads devices over the interval.
pub const WAKE_GRID: Duration = Duration::from_millis(50);

/// `delay` moved so that it ends on the nearest multiple of `grid` counted from the Unix
/// epoch, given the time since the epoch `now`: at most half a step shorter or longer, and
/// on average as long as before, so the polling rate does not change.
pub fn on_grid(delay: Duration, now: Duration, grid: Duration) -> Duration {
    let grid_us = grid.as_micros().max(1);
    let now_us = now.as_micros();
    let end = now_us + delay.as_micros();
    let nearest = (end + grid_us / 2) / grid_us * grid_us;
    let wait = nearest.saturating_sub(now_us);
    Duration::from_micros(u64::try_from(wait).unwrap_or(u64::MAX))
}

/// Where a poller sends its samples.
#[derive(Debug, Clone)]
pub struct SampleSinks {
    /// The batch writer.
    pub writer: mpsc::Sender<Arc<Sample>>,
    /// The alert evaluator.
    pub evaluator: mpsc::Sender<Arc<Sample>>,
}

/// Polls `target` until `cancel` fires: the first poll after a random part of the interval,
/// then every [`next_delay`] with ±10 % jitter, each wake-up moved to the nearest point of
/// [`WAKE_GRID`] (see [`on_grid`]). Samples go to both sinks; a full sink makes
/// the poller wait (bounded memory) rather than drop readings.
pub async fn run_poller(
    store: Store,
    target: PollTarget,
    sinks: SampleSinks,
    cancel: CancellationToken,
) {
    let first = target.interval.mul_f64(rand::random::<f64>());
    let mut delay = first;
    let mut failures: i64 = 0;
    let mut mark_seen = true;
    loop {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let wait = on_grid(delay, since_epoch, WAKE_GRID);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let sample = tokio::select! {
            () = cancel.cancelled() => return,
            s = poll_device(&store, &target, mark_seen, Utc::now()) => s,
        };
        match sample {
            Ok(sample) => {
                failures = match &sample.kind {
                    SampleKind::Values(_) => 0,
                    SampleKind::Failed { failures, .. } => *failures,
                };
                mark_seen = failures > 0;
                let sample = Arc::new(sample);
                if sinks.writer.send(Arc::clone(&sample)).await.is_err()
                    || sinks.evaluator.send(sample).await.is_err()
                {
                    // The pipeline is shutting down.
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(device = %target.name(), error = %e, "record poll result");
            }
        }
        let jitter = 0.9 + 0.2 * rand::random::<f64>();
        delay = next_delay(target.interval, failures, target.offline_after, jitter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_should_be_the_interval_until_offline_then_back_off_to_a_bound() {
        let s = Duration::from_secs;
        let delays: Vec<u64> = (0..=9)
            .map(|f| next_delay(s(5), f, 3, 1.0).as_secs())
            .collect();
        assert_eq!(delays, [5, 5, 5, 5, 10, 20, 40, 60, 60, 60]);
        // An interval longer than the bound is never shortened.
        assert_eq!(next_delay(s(300), 9, 3, 1.0), s(300));
        assert_eq!(next_delay(s(10), 0, 3, 1.1), Duration::from_secs(11));
    }

    #[test]
    fn a_wake_up_should_move_to_the_nearest_grid_point() {
        let ms = Duration::from_millis;
        let grid = ms(50);
        // 1_000.020 s since the epoch + 970 ms = 1_000.990 s: to 1_001.000 s.
        assert_eq!(on_grid(ms(970), ms(1_000_020), grid), ms(980));
        // 1_000.020 s + 1_010 ms = 1_001.030 s: to 1_001.050 s; + 1_000 ms: back to 1_001.000 s.
        assert_eq!(on_grid(ms(1_010), ms(1_000_020), grid), ms(1_030));
        assert_eq!(on_grid(ms(1_000), ms(1_000_020), grid), ms(980));
        // Already on the grid: unchanged.
        assert_eq!(on_grid(ms(980), ms(1_000_020), grid), ms(980));
        assert_eq!(on_grid(Duration::ZERO, ms(1_000_000), grid), Duration::ZERO);
        // Never before now.
        assert_eq!(on_grid(ms(4), ms(1_000_020), grid), Duration::ZERO);
        let mut total = Duration::ZERO;
        for now in 0..1000 {
            let d = on_grid(ms(333), ms(now), grid);
            assert!(d + ms(25) >= ms(333) && d <= ms(358), "{d:?}");
            assert_eq!((ms(now) + d).as_micros() % 50_000, 0);
            total += d;
        }
        // On average the delay is kept (the polling rate does not change); only exact
        // midpoints round up.
        let mean = total / 1000;
        assert!(mean >= ms(333) && mean <= ms(334), "{mean:?}");
    }
}
