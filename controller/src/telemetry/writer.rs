//! The batch writer: samples from every poller, gathered and stored together, so readings go
//! to the database in large batches (never one insert per value) and `last_seen` is moved in
//! one statement per flush. Optionally mirrors readings to MQTT.
//!
//! A flush that fails keeps its readings for the next flush (inserts are idempotent, so a
//! half-stored batch is simply stored again); what waits is bounded by [`Batch`], which drops
//! the oldest readings past the bound and counts them (log and the
//! `mycopod_telemetry_readings_dropped_total` metric).
//!
//! It stores what it is given; it does not poll, count failures or evaluate alerts.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::mqtt::MqttSink;
use super::poll::{Sample, SampleKind};
use crate::store::{ReadingRow, Store, StoreError};

/// Readings stored per statement at most (a flush of more is split).
pub const CHUNK: usize = 20_000;

/// The name of the counter of readings dropped because too many were waiting.
pub const DROPPED_METRIC: &str = "mycopod_telemetry_readings_dropped_total";

/// Stores the readings of `samples` and moves `last_seen` of the devices that answered.
/// Returns how many readings were new.
///
/// # Errors
/// The first store error; readings of earlier chunks stay stored.
pub async fn write_samples(store: &Store, samples: &[Arc<Sample>]) -> Result<u64, StoreError> {
    let count = samples.iter().map(|s| readings_of(s)).sum();
    let mut readings = Vec::with_capacity(count);
    let mut seen = BTreeSet::new();
    let mut newest = None;
    for sample in samples {
        if let SampleKind::Values(values) = &sample.kind {
            seen.insert(sample.device.as_str());
            newest = newest.max(Some(sample.time));
            readings.extend(values.iter().map(|(register, value)| ReadingRow {
                device: &sample.device,
                register,
                time: sample.time,
                value: *value,
            }));
        }
    }
    let mut stored = 0;
    for chunk in readings.chunks(CHUNK) {
        stored += store.insert_reading_rows(chunk).await?;
    }
    if let Some(newest) = newest {
        let names: Vec<String> = seen.into_iter().map(str::to_owned).collect();
        store.touch_devices_seen(&names, newest).await?;
    }
    Ok(stored)
}

/// How many readings a sample carries (none for a failed poll).
fn readings_of(sample: &Sample) -> usize {
    match &sample.kind {
        SampleKind::Values(values) => values.len(),
        SampleKind::Failed { .. } => 0,
    }
}

/// The samples waiting to be stored, at most `max_readings` readings: past the bound the
/// oldest samples are dropped and counted. Samples without readings (failed polls) are not
/// kept; the writer has nothing to store for them.
#[derive(Debug)]
pub struct Batch {
    pending: VecDeque<Arc<Sample>>,
    waiting: usize,
    max_readings: usize,
    dropped: u64,
}

impl Batch {
    /// An empty batch that keeps at most `max_readings` readings (at least one sample is
    /// always kept, however large).
    pub fn new(max_readings: usize) -> Batch {
        Batch {
            pending: VecDeque::new(),
            waiting: 0,
            max_readings,
            dropped: 0,
        }
    }

    /// Readings waiting.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Readings dropped so far because the bound was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Adds a sample; returns how many readings had to be dropped to stay within the bound
    /// (logged as an error and counted in [`DROPPED_METRIC`]).
    pub fn push(&mut self, sample: Arc<Sample>) -> u64 {
        let n = readings_of(&sample);
        if n == 0 {
            return 0;
        }
        self.pending.push_back(sample);
        self.waiting += n;
        let mut dropped = 0u64;
        while self.waiting > self.max_readings && self.pending.len() > 1 {
            if let Some(old) = self.pending.pop_front() {
                let n = readings_of(&old);
                self.waiting -= n;
                dropped += n as u64;
            }
        }
        if dropped > 0 {
            self.dropped += dropped;
            metrics::counter!(DROPPED_METRIC).increment(dropped);
            tracing::error!(
                dropped,
                dropped_total = self.dropped,
                bound = self.max_readings,
                "readings dropped: the store has not taken them and too many are waiting"
            );
        }
        dropped
    }

    /// Stores everything waiting. On success the batch is empty; on failure everything is
    /// kept for the next flush.
    ///
    /// # Errors
    /// The store error of [`write_samples`].
    pub async fn flush(&mut self, store: &Store) -> Result<u64, StoreError> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        let stored = write_samples(store, self.pending.make_contiguous()).await?;
        self.pending.clear();
        self.waiting = 0;
        Ok(stored)
    }
}

/// Gathers samples until `flush_every` passed or `max_batch` readings are waiting, then
/// writes them; returns when every sender is gone, after a last flush. A failed flush keeps
/// its readings (at most `max_pending`, see [`Batch`]) and is retried at the next tick;
/// until a flush succeeds again, a full batch does not flush early, so a failing store is
/// not hammered.
pub async fn run_writer(
    store: Store,
    mut samples: mpsc::Receiver<Arc<Sample>>,
    flush_every: Duration,
    max_batch: usize,
    max_pending: usize,
    mqtt: Option<Arc<MqttSink>>,
) {
    let mut batch = Batch::new(max_pending.max(max_batch));
    let mut failing = false;
    let mut tick = tokio::time::interval(flush_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let open = tokio::select! {
            received = samples.recv() => match received {
                Some(sample) => {
                    if let Some(mqtt) = &mqtt {
                        mqtt.reading(&sample);
                    }
                    batch.push(sample);
                    if failing || batch.waiting() < max_batch {
                        continue;
                    }
                    true
                }
                None => false,
            },
            _ = tick.tick() => true,
        };
        if !batch.is_empty() {
            match batch.flush(&store).await {
                Ok(_) => {
                    if failing {
                        tracing::info!("readings are stored again");
                    }
                    failing = false;
                }
                Err(e) => {
                    failing = true;
                    tracing::error!(
                        error = %crate::error_chain(&e),
                        waiting = batch.waiting(),
                        "store a batch of readings (kept for the next flush)"
                    );
                }
            }
        }
        if !open {
            if !batch.is_empty() {
                tracing::error!(lost = batch.waiting(), "readings not stored at shutdown");
            }
            return;
        }
    }
}
