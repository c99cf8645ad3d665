//! The export queue: every acknowledged sample, kept until the remote-write exporter
//! has delivered it (docs/export.md).
//!
//! When export is on, each writer shard's group commit puts its headlog record a second
//! time, under the same key, in the `export` family, in the same atomic write as the
//! samples: what is acknowledged is queued, and survives a crash. Each shard is one
//! queue (one exporter each, so that a series' samples leave in order); reading a
//! record turns its series ids into label sets through the index. The exporter's ack
//! deletes what it delivered and records how far it got (`meta`, `export/<shard>`),
//! in one write.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use goroscope_remote_write::prompb::{Label, Sample, TimeSeries};
use goroscope_remote_write::{Entry, Pending, Queue, QueueError};

use super::index::{Index, label_set};
use super::rocks::{CF_EXPORT, CF_META, Engine, WriteSet};
use super::{keys, records};

/// One shard's queue state in memory: what is queued (commit, samples, bytes), in
/// order, and how far the exporter acked.
#[derive(Default)]
pub(super) struct ExportShard {
    queued: Mutex<VecDeque<(u64, u64, u64)>>,
    acked: AtomicU64,
    bytes: AtomicU64,
    /// Wakes ingest waiting for room.
    pub room: tokio::sync::Notify,
    /// Wakes the exporter when a record was queued.
    waker: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl ExportShard {
    /// A record was committed with the samples of group commit `commit`.
    pub fn queued(&self, commit: u64, samples: u64, bytes: u64) {
        self.queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((commit, samples, bytes));
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(wake) = self.waker.get() {
            wake();
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// One shard's queue, as the exporter sees it.
pub struct ExportQueue {
    pub(super) shard: u8,
    pub(super) engine: Arc<Engine>,
    pub(super) index: Arc<RwLock<Index>>,
    pub(super) state: Arc<ExportShard>,
}

fn meta_key(shard: u8) -> Vec<u8> {
    let mut k = b"export/".to_vec();
    k.push(shard);
    k
}

/// Loads each shard's queue state: the acked point and what is queued after it.
pub(super) fn load(
    engine: &Engine,
    shards: usize,
) -> Result<Vec<Arc<ExportShard>>, super::StorageError> {
    let states: Vec<Arc<ExportShard>> = (0..shards).map(|_| Arc::default()).collect();
    for (shard, state) in states.iter().enumerate() {
        let acked = engine
            .get(CF_META, &meta_key(shard as u8))?
            .and_then(|v| Some(u64::from_be_bytes(v.as_slice().try_into().ok()?)))
            .unwrap_or(0);
        state.acked.store(acked, Ordering::Relaxed);
    }
    engine.scan_prefix(CF_EXPORT, &[], |key, value| {
        let Some((shard, commit)) = keys::split_headlog_key(key) else {
            return Ok(());
        };
        if let Some(state) = states.get(usize::from(shard)) {
            let samples = records::decode_headlog(value)
                .map(|s| s.iter().map(|(_, p)| p.len() as u64).sum())
                .unwrap_or(0);
            state.queued(commit, samples, value.len() as u64);
        }
        Ok(())
    })?;
    Ok(states)
}

impl ExportQueue {
    /// Has `wake` called whenever a record is queued (the exporter's waker).
    pub fn on_queued(&self, wake: impl Fn() + Send + Sync + 'static) {
        let _ = self.state.waker.set(Box::new(wake));
    }

    /// Bytes the queue holds.
    pub fn bytes(&self) -> u64 {
        self.state.bytes()
    }
}

impl Queue for ExportQueue {
    fn read(&self, after: u64, max_samples: usize) -> Result<Vec<Entry>, QueueError> {
        let from = keys::headlog_key(self.shard, after.saturating_add(1));
        let to = [self.shard.saturating_add(1)];
        let mut raw: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut samples = 0usize;
        let scanned = self
            .engine
            .scan_range_while(CF_EXPORT, &from, &to, |key, value| {
                let Some((_, commit)) = keys::split_headlog_key(key) else {
                    return Ok(true);
                };
                raw.push((commit, value.to_vec()));
                samples += value.len() / 9;
                Ok(samples < max_samples)
            });
        scanned.map_err(|e| QueueError(e.to_string()))?;
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(raw.len());
        for (commit, value) in raw {
            let decoded = match records::decode_headlog(&value) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(shard = self.shard, commit, error = %e, "export: skipping a queue record that cannot be decoded");
                    out.push(Entry {
                        id: commit,
                        series: Vec::new(),
                    });
                    continue;
                }
            };
            let series = decoded
                .into_iter()
                .filter_map(|(id, points)| {
                    // A series forgotten since (past the retention) has no labels left.
                    let key = index.by_id.get(&id)?;
                    let target = index.targets.get(&key.target)?;
                    let labels = label_set(key, &target.record)
                        .into_iter()
                        .map(|(name, value)| Label { name, value })
                        .collect();
                    let samples = points
                        .into_iter()
                        .map(|(timestamp, value)| Sample { value, timestamp })
                        .collect();
                    Some(TimeSeries { labels, samples })
                })
                .collect();
            out.push(Entry { id: commit, series });
        }
        Ok(out)
    }

    fn ack(&self, through: u64) -> Result<(), QueueError> {
        let mut set = WriteSet::default();
        set.delete_range(
            CF_EXPORT,
            keys::headlog_key(self.shard, 0).to_vec(),
            match through.checked_add(1) {
                Some(n) => keys::headlog_key(self.shard, n).to_vec(),
                None => vec![self.shard.saturating_add(1)],
            },
        );
        set.put(
            CF_META,
            meta_key(self.shard),
            through.to_be_bytes().to_vec(),
        );
        self.engine
            .commit(set)
            .map_err(|e| QueueError(e.to_string()))?;
        self.state.acked.fetch_max(through, Ordering::Relaxed);
        let mut q = self.state.queued.lock().unwrap_or_else(|e| e.into_inner());
        let mut freed = 0;
        while q.front().is_some_and(|(c, _, _)| *c <= through) {
            if let Some((_, _, bytes)) = q.pop_front() {
                freed += bytes;
            }
        }
        drop(q);
        self.state.bytes.fetch_sub(freed, Ordering::Relaxed);
        self.state.room.notify_waiters();
        Ok(())
    }

    fn acked(&self) -> u64 {
        self.state.acked.load(Ordering::Relaxed)
    }

    fn pending(&self) -> Pending {
        let q = self.state.queued.lock().unwrap_or_else(|e| e.into_inner());
        Pending {
            entries: q.len() as u64,
            samples: q.iter().map(|(_, s, _)| s).sum(),
        }
    }
}
