//! Compaction: the head's samples become compressed chunks in time partitions, and
//! partitions past the retention are dropped whole.
//!
//! One thread does it, off the ingest path. Every `check_every` it looks at each writer
//! shard's part of the head and flushes it when its oldest sample's partition has been
//! closed for `flush_grace` (late samples for it have had time to arrive), or at once
//! when the part holds more than its share of `head_max_bytes`. A flush writes, in one
//! atomic batch: one chunk per series and closed partition, the series' newest
//! compacted sample (`latest`), the deletion of the shard's headlog records up to the
//! frozen point and, when samples of still-open partitions were frozen too, one new
//! headlog record holding them. Nothing is lost if the process dies anywhere in between:
//! before the batch the samples are in the headlog, after it in chunks.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::head::{Head, Points};
use super::rocks::{CF_CHUNKS, CF_HEADLOG, CF_LATEST, CF_META, CF_ROLLUPS, Engine, WriteSet};
use super::{StorageError, chunk, keys, records};

/// Time partitions: the partition of a timestamp and where partitions end.
#[derive(Debug, Clone, Copy)]
pub(super) struct Partitioning {
    pub block_ms: i64,
}

impl Partitioning {
    pub fn of(&self, ts: i64) -> i64 {
        ts.div_euclid(self.block_ms)
    }

    /// The first millisecond after partition `p`.
    pub fn end(&self, p: i64) -> i64 {
        p.saturating_add(1).saturating_mul(self.block_ms)
    }
}

/// The partitions holding chunks and the samples compacted into each, kept in memory
/// so that a read visits only those.
pub(super) type Partitions = Arc<RwLock<BTreeMap<i64, u64>>>;

pub(super) struct Ctx {
    /// The database's directory, and its disk's free bytes as last read.
    pub dir: std::path::PathBuf,
    pub disk_free: Arc<std::sync::atomic::AtomicU64>,
    pub engine: Arc<Engine>,
    pub head: Arc<Head>,
    pub partitions: Partitions,
    pub parts: Partitioning,
    pub grace_ms: i64,
    pub head_max_bytes: usize,
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushStats {
    pub chunks: usize,
    pub samples: usize,
    pub carried: usize,
}

impl std::ops::AddAssign for FlushStats {
    fn add_assign(&mut self, o: FlushStats) {
        self.chunks += o.chunks;
        self.samples += o.samples;
        self.carried += o.carried;
    }
}

impl Ctx {
    /// Flushes one shard's head: every partition when `all`, else the closed ones.
    pub fn flush_shard(
        &self,
        shard: usize,
        now_ms: i64,
        all: bool,
    ) -> Result<FlushStats, StorageError> {
        let Some(frozen) = self.head.freeze(shard) else {
            return Ok(FlushStats::default());
        };
        let cut = if all {
            i64::MAX
        } else {
            now_ms.saturating_sub(self.grace_ms)
        };
        let serial = ((shard as u64) << 56) | (frozen.through & ((1 << 56) - 1));
        let mut set = WriteSet::default();
        let mut carried: HashMap<u64, Points> = HashMap::new();
        let mut touched: BTreeMap<i64, u64> = BTreeMap::new();
        let mut stats = FlushStats::default();
        let mut latest: Vec<(u64, (i64, f64))> = Vec::new();
        for (&id, points) in frozen.series.iter() {
            let mut newest = None;
            let runs = points
                .chunk_by(|a, b| self.parts.of(a.0) == self.parts.of(b.0))
                .flat_map(|run| run.chunks(chunk::MAX_POINTS));
            for run in runs {
                let p = self.parts.of(run[0].0);
                if all || self.parts.end(p) <= cut {
                    set.put(
                        CF_CHUNKS,
                        keys::chunk_key(p, id, run[0].0, serial),
                        chunk::encode(run),
                    );
                    for (res, resolution) in keys::ROLLUPS {
                        let rows = chunk::rollups(run, resolution);
                        if let Some(first) = rows.first() {
                            set.put(
                                CF_ROLLUPS,
                                keys::rollup_key(res, p, id, first.end_ms, serial),
                                chunk::encode_rollups(&rows),
                            );
                        }
                    }
                    *touched.entry(p).or_default() += run.len() as u64;
                    stats.chunks += 1;
                    stats.samples += run.len();
                    newest = run.last().copied();
                } else {
                    stats.carried += run.len();
                    carried.entry(id).or_default().extend_from_slice(run);
                }
            }
            if let Some(point) = newest {
                latest.push((id, point));
            }
        }
        // A late sample may be older than what an earlier flush recorded: one batched
        // read of what is recorded for every series flushed.
        let stored = self.engine.multi_get(
            CF_LATEST,
            latest.iter().map(|(id, _)| keys::series_key(*id)),
        )?;
        for ((id, (ts, v)), stored) in latest.into_iter().zip(stored) {
            let stored = stored.and_then(|b| keys::decode_latest_value(&b));
            if stored.is_none_or(|(t, _)| t <= ts) {
                set.put(CF_LATEST, keys::series_key(id), keys::latest_value(ts, v));
            }
        }
        if stats.chunks == 0 {
            // Nothing closed yet: the headlog still holds it all.
            self.head.thaw(shard, carried);
            return Ok(stats);
        }
        let end = match frozen.through.checked_add(1) {
            Some(next) => keys::headlog_key(shard as u8, next).to_vec(),
            None => vec![shard as u8 + 1],
        };
        set.delete_range(CF_HEADLOG, keys::headlog_key(shard as u8, 0).to_vec(), end);
        set.put(
            CF_META,
            keys::flushed_key(shard as u8),
            frozen.through.to_be_bytes().to_vec(),
        );
        let counts: Vec<(i64, u64)> = {
            let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
            touched
                .iter()
                .map(|(p, n)| (*p, parts.get(p).copied().unwrap_or(0) + n))
                .collect()
        };
        for (p, n) in &counts {
            set.put(
                CF_META,
                keys::partition_samples_key(*p),
                n.to_be_bytes().to_vec(),
            );
        }
        if !carried.is_empty() {
            set.put(
                CF_HEADLOG,
                keys::headlog_key(shard as u8, frozen.through),
                records::encode_headlog(carried.iter().map(|(id, p)| (*id, p.as_slice()))),
            );
        }
        match self.engine.commit(set) {
            Ok(()) => {
                self.partitions
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(counts);
                self.head.thaw(shard, carried);
                Ok(stats)
            }
            Err(e) => {
                // Everything frozen goes back: the headlog still holds it.
                self.head.thaw(shard, (*frozen.series).clone());
                Err(e)
            }
        }
    }

    /// Flushes the shards that are due (see the module docs), or every shard in full.
    pub fn flush_due(&self, now_ms: i64, all: bool) -> Result<FlushStats, StorageError> {
        let mut total = FlushStats::default();
        let share = self.head_max_bytes / self.head.shards().max(1);
        for shard in 0..self.head.shards() {
            let (oldest, bytes) = self.head.state(shard);
            if oldest == i64::MAX {
                continue;
            }
            let closed =
                self.parts.end(self.parts.of(oldest)) <= now_ms.saturating_sub(self.grace_ms);
            let full = bytes > share;
            if all || full {
                total += self.flush_shard(shard, now_ms, true)?;
            } else if closed {
                total += self.flush_shard(shard, now_ms, false)?;
            }
        }
        Ok(total)
    }

    /// Drops every partition that ends at or before `before`: one range deletion, and
    /// the files wholly inside it are removed at once. Returns the partitions dropped.
    pub fn drop_partitions(&self, before: i64) -> Result<usize, StorageError> {
        // The first partition that ends after the cut.
        let first_kept = self.parts.of(before);
        let dropped: Vec<i64> = self
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .range(..first_kept)
            .map(|(p, _)| *p)
            .collect();
        if dropped.is_empty() {
            return Ok(0);
        }
        let from = keys::partition_start(i64::MIN);
        let to = keys::partition_start(first_kept);
        let mut set = WriteSet::default();
        set.delete_range(CF_CHUNKS, from.to_vec(), to.to_vec());
        for (res, _) in keys::ROLLUPS {
            set.delete_range(
                CF_ROLLUPS,
                keys::rollup_partition_start(res, i64::MIN).to_vec(),
                keys::rollup_partition_start(res, first_kept).to_vec(),
            );
        }
        set.delete_range(
            CF_META,
            keys::partition_samples_key(i64::MIN),
            keys::partition_samples_key(first_kept),
        );
        self.engine.commit(set)?;
        self.engine.delete_files_in_range(CF_CHUNKS, &from, &to)?;
        for (res, _) in keys::ROLLUPS {
            self.engine.delete_files_in_range(
                CF_ROLLUPS,
                &keys::rollup_partition_start(res, i64::MIN),
                &keys::rollup_partition_start(res, first_kept),
            )?;
        }
        let mut parts = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        for p in &dropped {
            parts.remove(p);
        }
        Ok(dropped.len())
    }
}

pub(super) enum Request {
    Flush {
        all: bool,
        reply: tokio::sync::oneshot::Sender<Result<FlushStats, StorageError>>,
    },
    Drop {
        before: i64,
        reply: tokio::sync::oneshot::Sender<Result<usize, StorageError>>,
    },
    Stop,
}

/// The compaction thread; stopped and joined by [`Compactor::stop`] or on drop.
pub(super) struct Compactor {
    tx: SyncSender<Request>,
    thread: Option<JoinHandle<()>>,
}

impl Compactor {
    pub fn start(
        ctx: Ctx,
        check_every: Duration,
    ) -> Result<(Compactor, SyncSender<Request>), StorageError> {
        let (tx, rx) = sync_channel(16);
        let thread = std::thread::Builder::new()
            .name("storage-compact".into())
            .spawn(move || run(ctx, rx, check_every))
            .map_err(|e| StorageError::Engine(format!("spawn compaction thread: {e}")))?;
        Ok((
            Compactor {
                tx: tx.clone(),
                thread: Some(thread),
            },
            tx,
        ))
    }

    pub fn stop(&mut self) {
        let _ = self.tx.send(Request::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Bytes free for an unprivileged writer on the disk holding `dir` (u64::MAX when it
/// cannot be read: the check then never refuses).
pub(super) fn free_bytes(dir: &std::path::Path) -> u64 {
    match rustix::fs::statvfs(dir) {
        Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
        Err(_) => u64::MAX,
    }
}

/// How often the disk's free space is read.
const DISK_CHECK: Duration = Duration::from_secs(1);

fn run(ctx: Ctx, rx: Receiver<Request>, check_every: Duration) {
    let mut errors = 0u64;
    let mut last_flush = std::time::Instant::now();
    loop {
        ctx.disk_free
            .store(free_bytes(&ctx.dir), std::sync::atomic::Ordering::Relaxed);
        let request = rx.recv_timeout(DISK_CHECK.min(check_every));
        if matches!(request, Err(RecvTimeoutError::Timeout)) && last_flush.elapsed() < check_every {
            continue;
        }
        if matches!(request, Err(RecvTimeoutError::Timeout)) {
            last_flush = std::time::Instant::now();
        }
        match request {
            Ok(Request::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Request::Flush { all, reply }) => {
                let _ = reply.send(ctx.flush_due(goroscope_proto::unix_ms(), all));
            }
            Ok(Request::Drop { before, reply }) => {
                let _ = reply.send(ctx.drop_partitions(before));
            }
            Err(RecvTimeoutError::Timeout) => {
                match ctx.flush_due(goroscope_proto::unix_ms(), false) {
                    Ok(stats) => {
                        errors = 0;
                        if stats.chunks > 0 {
                            tracing::debug!(
                                chunks = stats.chunks,
                                samples = stats.samples,
                                carried = stats.carried,
                                "head flushed into chunks"
                            );
                        }
                    }
                    Err(e) => {
                        if errors.is_multiple_of(60) {
                            tracing::error!(error = %e, "head flush failed; the samples stay in the head and the flush is retried");
                        }
                        errors += 1;
                    }
                }
            }
        }
    }
}
