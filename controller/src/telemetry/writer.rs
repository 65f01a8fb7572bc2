//! The batch writer: samples from every poller, gathered and stored together, so readings go
//! to the database in large batches (never one insert per value) and `last_seen` is moved in
//! one statement per flush. Optionally mirrors readings to MQTT.
//!
//! It stores what it is given; it does not poll, count failures or evaluate alerts.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::mqtt::MqttSink;
use super::poll::{Sample, SampleKind};
use crate::store::{Reading, Store, StoreError};

/// Readings stored per statement at most (a flush of more is split).
pub const CHUNK: usize = 20_000;

/// Stores the readings of `samples` and moves `last_seen` of the devices that answered.
/// Returns how many readings were new.
///
/// # Errors
/// The first store error; readings of earlier chunks stay stored.
pub async fn write_samples(store: &Store, samples: &[Arc<Sample>]) -> Result<u64, StoreError> {
    let mut readings = Vec::new();
    let mut seen = BTreeSet::new();
    let mut newest = None;
    for sample in samples {
        if let SampleKind::Values(values) = &sample.kind {
            seen.insert(sample.device.clone());
            newest = newest.max(Some(sample.time));
            readings.extend(values.iter().map(|(register, value)| Reading {
                device: sample.device.clone(),
                register: register.clone(),
                time: sample.time,
                value: *value,
            }));
        }
    }
    let mut stored = 0;
    for chunk in readings.chunks(CHUNK) {
        stored += store.insert_readings(chunk).await?;
    }
    if let Some(newest) = newest {
        let names: Vec<String> = seen.into_iter().collect();
        store.touch_devices_seen(&names, newest).await?;
    }
    Ok(stored)
}

/// Gathers samples until `flush_every` passed or `max_batch` readings are waiting, then
/// writes them; returns when every sender is gone, after a last flush. A failed flush is
/// logged and its readings dropped (the next flush starts afresh).
pub async fn run_writer(
    store: Store,
    mut samples: mpsc::Receiver<Arc<Sample>>,
    flush_every: Duration,
    max_batch: usize,
    mqtt: Option<Arc<MqttSink>>,
) {
    let mut pending: Vec<Arc<Sample>> = Vec::new();
    let mut waiting = 0usize;
    let mut tick = tokio::time::interval(flush_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let open = tokio::select! {
            received = samples.recv() => match received {
                Some(sample) => {
                    if let SampleKind::Values(values) = &sample.kind {
                        waiting += values.len();
                    }
                    if let Some(mqtt) = &mqtt {
                        mqtt.reading(&sample);
                    }
                    pending.push(sample);
                    if waiting < max_batch {
                        continue;
                    }
                    true
                }
                None => false,
            },
            _ = tick.tick() => true,
        };
        if !pending.is_empty() {
            if let Err(e) = write_samples(&store, &pending).await {
                tracing::error!(error = %e, readings = waiting, "store a batch of readings");
            }
            pending.clear();
            waiting = 0;
        }
        if !open {
            return;
        }
    }
}
