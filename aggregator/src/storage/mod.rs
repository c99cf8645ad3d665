//! Time series storage on RocksDB, behind this module's small API.
//!
//! - [`index`]: what readers see in memory (series ids, target records, latest values,
//!   ingest marks), and the [`index::Delta`] one group commit adds to it.
//! - [`writer`]: the writer threads, one per shard of hosts.
//! - [`head`]: samples not yet compacted, in memory and in the `headlog` family.
//! - [`compact`]: the thread that turns the head into chunks and drops old partitions.
//! - `chunk`: the encoding of a chunk.
//! - [`query`]: range queries and paged target listings.
//! - [`records`]: the versioned binary encoding of persisted records.
//! - `keys`: key encodings; `rocks`: the only module importing `rocksdb`.
//!
//! # Column families and keys
//!
//! Integers in keys are big-endian and signed ones have their sign bit flipped, so that
//! RocksDB's bytewise order is numeric order.
//!
//! | cf        | key                                   | value                                  |
//! |-----------|---------------------------------------|----------------------------------------|
//! | `meta`    | `ingest/<host>`                       | epoch (u64), highest stored seq (u64)  |
//! | `meta`    | `block_ms`, `shards`                  | the partition length and writer shard count the database was created with (u64) |
//! | `series`  | series id (u64)                       | [`records`] series record: target and metric |
//! | `targets` | host, NUL, pid (u32), start ticks (u64) | [`records`] target record            |
//! | `headlog` | writer shard (1 byte), group commit number (u64) | [`records::encode_headlog`]: the samples of one group commit |
//! | `chunks`  | partition (i64), series id (u64), first timestamp (i64), flush (u64) | a chunk: the series' points in the partition ([`chunk`]) |
//! | `latest`  | series id (u64)                       | the newest compacted sample: timestamp (i64 BE), value (f64 LE) |
//! | `rollups` | resolution (1 byte: 1 for 1 minute, 2 for 1 hour), then as in `chunks` with the first bucket's end | [`chunk::encode_rollups`]: min, max, sum, count, last per bucket |
//! | `builds`  | build id: the first 16 bytes of the SHA-256 of the record | [`records`] build: the wire's `BuildInfo` |
//! | `stacks`  | target key (as in `targets`), timestamp ms (i64), source (one byte) | [`records`] stack summary, with first-seen times |
//! | `captures` | see [`captures`] | capture info and the capture's bytes in chunks |
//! | `diagnoses` | see [`diagnoses`] | anomalies and incidents |
//! | `head`    | series id (u64), timestamp (i64)      | the older per-sample layout: moved into `headlog` at open |
//!
//! A series is a metric of a target plus the series' own labels (`le`, `quantile`, the
//! labels of a /metrics exposition); its record holds all three. A target record names
//! its build by id: every target running one executable shares one build record.
//!
//! A stack summary's groups carry when the aggregator first stored their signature (the
//! frames) for the target: the writer carries it over from the target's previous
//! summary of every goroutine, debug=1 or debug=2 (kept in the index, read back from
//! `stacks` after a restart), so "how long has this been here" needs no scan. Summaries
//! older than the retention are deleted, live target or not.
//!
//! Sample values are raw IEEE 754 doubles: NaN (Prometheus' staleness marker is one),
//! +Inf and -Inf are stored and returned bit for bit. Records are binary with a version
//! byte, never JSON; at open, a record that cannot be decoded is skipped, counted and
//! logged with its key, and the database opens anyway.
//!
//! # Durability
//!
//! Hosts are spread over writer shards by a hash of their name; each shard has a thread
//! that owns its hosts' writes, so ingest uses every core and a host's batches keep
//! their order. Ingest sessions hand a shard [`IngestWrite`]s through a bounded async
//! channel (a full channel makes the session wait without holding a thread); it takes
//! all that are waiting (group commit), stages their series, target records and ingest
//! marks in a [`index::Delta`] and all their samples in one `headlog` record, and
//! applies them in one RocksDB write batch with one synced WAL write. Only then does it
//! add the samples to the in-memory head and answer each session, which then acks its
//! batch: an acknowledged batch survives a crash, and is replayed from the headlog at
//! open. The ingest mark of a host is written in the same batch as its samples, so a
//! batch is stored exactly once even when a collector re-sends it after a lost ack.
//! Series ids come from one counter all shards share.
//!
//! A target record is written when a collector declares or changes the target and when
//! it exits, never per sample: the latest value of each series and a target's last-seen
//! time live in the index, rebuilt at open from `latest` and the headlog.
//!
//! # Partitions, chunks and retention
//!
//! Time is cut into partitions of `block` (2 hours by default, fixed when the database
//! is created). Once a partition has ended (and `flush_grace` has passed), the
//! compaction thread writes each series' samples of it as one chunk, in one atomic batch
//! with the deletion of the headlog records they came from (see [`compact`]). A sample
//! that arrives after its partition was compacted gets a chunk of its own, merged on
//! read. Reads visit only the partitions that hold chunks and overlap the range, one
//! seek per series and partition, and the head.
//!
//! Each chunk comes with the series' rollups over the same samples, at 1 minute and 1
//! hour: per bucket `(end - resolution, end]`, the min, max, sum, count and last value
//! (and its time), staleness markers left out. Long-range queries read them instead of
//! the samples ([`Storage::select_rollups`]); the head's samples are rolled up as they
//! are read, and rows of one bucket (a late sample) are folded together.
//!
//! Targets not seen for longer than the retention are forgotten: their records and
//! series are deleted in one write. Partitions that ended longer than the retention ago
//! are dropped whole: one range deletion, and their files are removed at once. Samples
//! older than the retention are refused at ingest.

pub mod captures;
mod chunk;
mod compact;
pub mod diagnoses;
mod export;
mod head;
mod index;
mod keys;
mod postings;
mod query;
pub mod records;
mod rocks;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use compact::FlushStats;
pub use export::ExportQueue;

use tokio::sync::{mpsc, oneshot};

pub use chunk::Rollup;
pub use postings::{LabelMatcher, MatchOp};
pub use query::{
    Cancel, Census, LabeledSeries, OneTarget, PageToken, ROLLUP_RESOLUTIONS, RollupSeries, StacksAt,
};
pub use writer::WriterGuard;

use compact::{Partitioning, Partitions};
use head::Head;
use index::Index;
use rocks::Engine;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("open database {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("rocksdb: {0}")]
    Engine(String),
    #[error("corrupt record in {cf}: {reason}")]
    Corrupt { cf: &'static str, reason: String },
    #[error("storage writer has stopped")]
    WriterGone,
    #[error("query would return more than {limit} samples; narrow the time range or the selector")]
    TooManySamples { limit: usize },
    #[error("query cancelled")]
    Cancelled,
    #[error(
        "the disk holding the database has {free} bytes free, less than storage.min_free_bytes \
         ({min}): batches are not acknowledged until there is room again"
    )]
    DiskFull { free: u64, min: u64 },
}

/// One Go process, as the storage knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    pub host: String,
    pub pid: u32,
    pub start_ticks: u64,
}

impl TargetKey {
    fn encode(&self) -> Vec<u8> {
        keys::target_key(&self.host, self.pid, self.start_ticks)
    }
}

/// A series' own labels (`le`, `quantile`, what a /metrics exposition gives), sorted by
/// name; empty for most series.
pub type SeriesLabels = Vec<(String, String)>;

/// One series: a metric of a target, with the series' own labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub target: TargetKey,
    pub metric: String,
    pub labels: SeriesLabels,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Coverage {
    pub proc: bool,
    pub buildinfo: bool,
    pub expvar: bool,
    pub pprof: bool,
    pub metrics: bool,
    pub cgroup: bool,
    pub goroutineleak: bool,
    pub debug_addr: String,
}

/// The content address of a stored build: the first 16 bytes of the SHA-256 of its
/// encoding. Targets running the same executable share one build record.
pub type BuildId = [u8; 16];

/// What the `targets` column family stores per target: what a collector declared, and
/// when the target was first and (as of the record's last write) last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRecord {
    pub key: TargetKey,
    pub labels: BTreeMap<String, String>,
    pub coverage: Coverage,
    pub start_time_ms: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub exited: bool,
    /// GOGC, GOMEMLIMIT, GOMAXPROCS, GODEBUG and GOTRACEBACK as the process environment
    /// set them.
    pub runtime_env: BTreeMap<String, String>,
    /// The executable's build record in the `builds` family, once a collector sent it.
    pub build: Option<BuildId>,
}

/// A target as readers see it: its record, when it was last seen, and the latest
/// value of each of its metrics.
#[derive(Debug, Clone)]
pub struct TargetView {
    pub record: Arc<TargetRecord>,
    pub last_seen_ms: i64,
    /// The latest sample of each series, by metric name and series labels.
    pub latest: Vec<LatestValue>,
}

#[derive(Debug, Clone)]
pub struct LatestValue {
    pub metric: String,
    pub labels: SeriesLabels,
    pub timestamp_ms: i64,
    pub value: f64,
}

/// Target metadata carried by a batch (new on the stream, or changed).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetUpdate {
    pub key: TargetKey,
    pub labels: BTreeMap<String, String>,
    pub coverage: Coverage,
    pub start_time_ms: i64,
    pub runtime_env: BTreeMap<String, String>,
    /// The full build information (sent with a target's first declaration on a stream).
    pub build: Option<Arc<goroscope_proto::v1::BuildInfo>>,
}

/// One goroutine stack summary of a target, as a collector sent it.
#[derive(Debug, Clone)]
pub struct StackWrite {
    pub target: TargetKey,
    pub summary: goroscope_proto::v1::StackSummary,
}

/// The samples of one series in one batch.
#[derive(Debug, Clone)]
pub struct SeriesPoints {
    pub series: Arc<SeriesKey>,
    pub points: Vec<(i64, f64)>,
}

/// One collector batch, decoded and validated, ready to store.
#[derive(Debug, Clone)]
pub struct IngestWrite {
    pub host: String,
    pub epoch: u64,
    pub seq: u64,
    pub received_ms: i64,
    pub targets: Vec<TargetUpdate>,
    pub samples: Vec<SeriesPoints>,
    pub gone: Vec<TargetKey>,
    pub stacks: Vec<StackWrite>,
    /// Data the collector reports lost before it could send it: (reason, batches,
    /// bytes), the reason one of [`LOSS_REASONS`] or "other".
    pub losses: Vec<(String, u64, u64)>,
}

/// The reasons of collector losses kept apart; any other is counted as "other".
pub const LOSS_REASONS: [&str; 4] = ["spool_full", "spool_corrupt", "outbox_full", "oversized"];

/// What the aggregator knows of one collector host's ingest, kept across restarts and
/// written with each batch it stores.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostStats {
    /// When its first and latest stored batch arrived, Unix ms.
    pub first_ms: i64,
    pub last_ms: i64,
    pub batches: u64,
    pub samples: u64,
    /// Jumps in its batch sequence, and the scrapes (or batches) they skipped.
    pub gaps: u64,
    pub missed: u64,
    /// Losses it reported, by reason: (batches, bytes).
    pub losses: BTreeMap<String, (u64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The batch is durable.
    Stored,
    /// The batch was stored before (a re-send after a lost ack); nothing was written.
    Duplicate,
}

/// Equality matchers on target labels; `host` and `pid` match the target id.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub matchers: Vec<(String, String)>,
}

impl Selector {
    pub fn matches(&self, target: &TargetRecord) -> bool {
        self.matchers
            .iter()
            .all(|(name, value)| Selector::holds(target, name, value))
    }

    fn holds(target: &TargetRecord, name: &str, value: &str) -> bool {
        match name {
            "host" => target.key.host == *value,
            "pid" => value.parse::<u32>().is_ok_and(|pid| pid == target.key.pid),
            _ => target.labels.get(name).is_some_and(|v| v == value),
        }
    }
}

/// One series of a range query.
#[derive(Debug, Clone)]
pub struct SeriesData {
    pub target: Arc<TargetRecord>,
    pub metric: String,
    pub labels: SeriesLabels,
    pub points: Vec<(i64, f64)>,
}

#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Wait for the WAL to reach the disk before a write returns.
    pub sync_writes: bool,
    /// Ingest writes waiting for the writer, at most; senders wait beyond it.
    pub write_queue: usize,
    /// Samples one range query may return, at most.
    pub max_query_samples: usize,
    /// Targets not seen for this long are forgotten, and partitions that ended this
    /// long ago are dropped.
    pub retention: Duration,
    /// The length of a time partition, for a new database (an existing one keeps its
    /// own).
    pub block: Duration,
    /// How long after its partition ended a sample is compacted into a chunk.
    pub flush_grace: Duration,
    /// Memory the head may hold before it is compacted early; at twice this, ingest
    /// waits for compaction.
    pub head_max_bytes: usize,
    /// How often the compaction thread looks at the head.
    pub flush_check: Duration,
    /// Writer threads of a new database (0: one per core); an existing one keeps its
    /// own number.
    pub writers: usize,
    /// Queue every acknowledged sample for export ([`Storage::export_queues`]), and hold
    /// ingest back while a shard's queue holds more than `export_max_bytes`.
    pub export: bool,
    pub export_max_bytes: u64,
    /// Free bytes the database's disk must keep: below it, writes are refused (and not
    /// acknowledged) until there is room again, before RocksDB itself runs out.
    pub min_free_bytes: u64,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            sync_writes: true,
            write_queue: 256,
            max_query_samples: 10_000_000,
            retention: Duration::from_secs(15 * 24 * 3600),
            block: Duration::from_secs(2 * 3600),
            flush_grace: Duration::from_secs(5 * 60),
            head_max_bytes: 512 << 20,
            flush_check: Duration::from_secs(10),
            writers: 0,
            export: false,
            export_max_bytes: 256 << 20,
            min_free_bytes: 256 << 20,
        }
    }
}

/// What opening found: records that could not be decoded were skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub series: usize,
    pub targets: usize,
    pub skipped: usize,
}

/// The storage handle: cheap to clone, shared by every ingest session and query.
#[derive(Clone)]
pub struct Storage {
    engine: Arc<Engine>,
    index: Arc<RwLock<Index>>,
    head: Arc<Head>,
    partitions: Partitions,
    parts: Partitioning,
    /// One per writer shard; a host's batches always go to the same one.
    writers: Arc<[mpsc::Sender<writer::Msg>]>,
    compactor: std::sync::mpsc::SyncSender<compact::Request>,
    rate: Arc<writer::IngestRate>,
    /// Free bytes on the database's disk, as the compaction thread last read them.
    disk_free: Arc<std::sync::atomic::AtomicU64>,
    /// When a refusal for want of disk was last logged, Unix ms.
    disk_full_logged: Arc<std::sync::atomic::AtomicI64>,
    export: Option<Arc<[Arc<export::ExportShard>]>>,
    failed: Arc<writer::Failure>,
    options: Arc<StorageOptions>,
}

/// The writer shard of a host (FNV-1a of its name).
pub(crate) fn shard_of(host: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in host.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % shards.max(1) as u64) as usize
}

impl Storage {
    /// Opens the database in `dir` and starts the writer thread. The thread stops, and
    /// is joined, when the returned guard is dropped (or [`WriterGuard::stop`]ped): keep
    /// the guard for as long as the storage is used.
    pub fn open(
        dir: &Path,
        options: StorageOptions,
    ) -> Result<(Storage, WriterGuard, OpenReport), StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Open {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        let engine = Arc::new(Engine::open(dir, options.sync_writes)?);
        let (block_ms, shards) = layout(&engine, &options)?;
        let (index, mut report) = index::load(&engine)?;
        let index = Arc::new(RwLock::new(index));
        let head = Arc::new(Head::new(shards));
        convert_legacy_head(&engine)?;
        let next_commits = replay_head(&engine, &head, &index, shards, &mut report)?;
        let parts = Partitioning { block_ms };
        let partitions: Partitions = Arc::new(RwLock::new(load_partitions(&engine)?));
        let disk_free = Arc::new(std::sync::atomic::AtomicU64::new(compact::free_bytes(dir)));
        let (compactor, compactor_tx) = compact::Compactor::start(
            compact::Ctx {
                dir: dir.to_owned(),
                disk_free: disk_free.clone(),
                engine: engine.clone(),
                head: head.clone(),
                partitions: partitions.clone(),
                parts,
                grace_ms: options.flush_grace.as_millis() as i64,
                head_max_bytes: options.head_max_bytes,
            },
            options.flush_check,
        )?;
        let failed = Arc::new(writer::Failure::default());
        let next_series = index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .next_series_id;
        let shared = writer::Shared {
            engine: engine.clone(),
            index: index.clone(),
            head: head.clone(),
            failed: failed.clone(),
            series_ids: Arc::new(AtomicU64::new(next_series.max(1))),
            rate: Arc::new(writer::IngestRate::default()),
            export: if options.export {
                Some(export::load(&engine, shards)?.into())
            } else {
                None
            },
        };
        let (txs, guard) = writer::start(
            &shared,
            options.write_queue.max(1),
            &next_commits,
            compactor,
        )?;
        Ok((
            Storage {
                engine,
                index,
                head,
                partitions,
                parts,
                writers: txs.into(),
                compactor: compactor_tx,
                rate: shared.rate.clone(),
                disk_free,
                disk_full_logged: Arc::default(),
                export: shared.export.clone(),
                failed,
                options: Arc::new(options),
            },
            guard,
            report,
        ))
    }

    /// Stores one batch durably, or recognises it as already stored.
    pub async fn write(&self, write: IngestWrite) -> Result<WriteOutcome, StorageError> {
        let (reply, rx) = oneshot::channel();
        // The channel is bounded: when the writer falls behind, the session waits here
        // and stops reading its stream (backpressure), holding no thread.
        let free = self.disk_free.load(std::sync::atomic::Ordering::Relaxed);
        if free < self.options.min_free_bytes {
            let now = goroscope_proto::unix_ms();
            let last = self
                .disk_full_logged
                .load(std::sync::atomic::Ordering::Relaxed);
            if now.saturating_sub(last) >= 60_000 {
                self.disk_full_logged
                    .store(now, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(
                    free,
                    min_free_bytes = self.options.min_free_bytes,
                    "the database's disk is nearly full: refusing batches until there is room"
                );
            }
            return Err(StorageError::DiskFull {
                free,
                min: self.options.min_free_bytes,
            });
        }
        let shard = shard_of(&write.host, self.writers.len());
        // Back-pressure on memory: while the head holds twice `head_max_bytes` (ingest
        // outruns compaction), the session waits and stops reading its stream; the
        // collector keeps the data in its spool.
        let head_bound = self.options.head_max_bytes.saturating_mul(2);
        while self.head.bytes() > head_bound {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(export) = &self.export {
            // Back-pressure: while the shard's export queue is over its bound (the
            // remote is down or slow), the session waits and stops reading its stream;
            // the collector keeps the data in its spool.
            let queue = &export[shard];
            while queue.bytes() > self.options.export_max_bytes {
                let room = queue.room.notified();
                if queue.bytes() <= self.options.export_max_bytes {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), room).await;
            }
        }
        self.writers[shard]
            .send(writer::Msg::Write(Box::new(writer::WriteRequest {
                write,
                reply,
            })))
            .await
            .map_err(|_| StorageError::WriterGone)?;
        rx.await.map_err(|_| StorageError::WriterGone)?
    }

    /// Ingest writes waiting for the writers.
    pub fn queue_depth(&self) -> usize {
        self.writers
            .iter()
            .map(|w| w.max_capacity() - w.capacity())
            .sum()
    }

    /// Resolves if the writer stops on its own (a failed write, a panic), with why.
    pub async fn failed(&self) -> String {
        self.failed.wait().await
    }

    /// Forgets what is older than the retention: targets not seen since (each writer
    /// its own hosts'), and whole partitions. Returns the targets forgotten.
    pub async fn forget_expired(&self, now_ms: i64) -> Result<usize, StorageError> {
        let before = now_ms.saturating_sub(self.options.retention.as_millis() as i64);
        let mut forgotten = 0;
        for w in self.writers.iter() {
            let (reply, rx) = oneshot::channel();
            w.send(writer::Msg::Forget { before, reply })
                .await
                .map_err(|_| StorageError::WriterGone)?;
            forgotten += rx.await.map_err(|_| StorageError::WriterGone)??;
        }
        let (reply, rx) = oneshot::channel();
        self.compactor_request(compact::Request::Drop { before, reply })
            .await?;
        let dropped = rx.await.map_err(|_| StorageError::WriterGone)??;
        if dropped > 0 {
            tracing::info!(
                partitions = dropped,
                "dropped partitions past the retention"
            );
        }
        Ok(forgotten)
    }

    /// Compacts the head into chunks now: every sample when `all`, else what is due.
    pub async fn flush(&self, all: bool) -> Result<FlushStats, StorageError> {
        let (reply, rx) = oneshot::channel();
        self.compactor_request(compact::Request::Flush { all, reply })
            .await?;
        rx.await.map_err(|_| StorageError::WriterGone)?
    }

    async fn compactor_request(&self, req: compact::Request) -> Result<(), StorageError> {
        let tx = self.compactor.clone();
        tokio::task::spawn_blocking(move || tx.send(req))
            .await
            .map_err(|_| StorageError::WriterGone)?
            .map_err(|_| StorageError::WriterGone)
    }

    /// Memory the head holds (estimated) and bytes of the database's files.
    pub fn usage(&self) -> (usize, u64) {
        (self.head.bytes(), self.engine.disk_bytes())
    }

    /// Bytes of each column family's table files on disk.
    pub fn disk_bytes_by_family(&self) -> Vec<(&'static str, u64)> {
        self.engine.disk_bytes_by_family()
    }

    /// Rewrites the whole database down to RocksDB's bottom level, as it settles over
    /// time: what a long-running store's files hold. Blocking and long on a large
    /// database; for benchmarks and maintenance.
    pub fn compact_files(&self) -> Result<(), StorageError> {
        self.engine.compact_all()
    }

    /// One export queue per writer shard, when export is on.
    pub fn export_queues(&self) -> Vec<Arc<ExportQueue>> {
        let Some(export) = &self.export else {
            return Vec::new();
        };
        export
            .iter()
            .enumerate()
            .map(|(shard, state)| {
                Arc::new(ExportQueue {
                    shard: shard as u8,
                    engine: self.engine.clone(),
                    index: self.index.clone(),
                    state: state.clone(),
                })
            })
            .collect()
    }

    /// Samples stored per second over the last minute.
    pub fn ingest_rate(&self) -> f64 {
        self.rate.per_second(goroscope_proto::unix_ms())
    }

    /// Samples stored: those compacted into partitions, and those in the head.
    pub fn samples_stored(&self) -> (u64, u64) {
        let compacted = self
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum();
        (compacted, self.head.points() as u64)
    }

    /// Samples one query may read, at most.
    pub fn max_query_samples(&self) -> usize {
        self.options.max_query_samples
    }

    pub fn retention(&self) -> Duration {
        self.options.retention
    }

    /// The highest stored sequence number of a host in `epoch`, 0 if none.
    pub fn last_seq(&self, host: &str, epoch: u64) -> u64 {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .last_seq(host, epoch)
    }

    /// What is known of each collector host's ingest, by host.
    pub fn hosts(&self) -> Vec<(String, HostStats)> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let mut hosts: Vec<_> = index
            .hosts
            .iter()
            .map(|(h, s)| (h.clone(), s.clone()))
            .collect();
        hosts.sort_by(|a, b| a.0.cmp(&b.0));
        hosts
    }

    /// How many targets and series the index holds.
    pub fn sizes(&self) -> (usize, usize) {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        (index.target_count(), index.series_count())
    }
}

/// The partition length and the writer shard count: as the database was created, or as
/// the options say for a new one (then recorded).
fn layout(engine: &Engine, options: &StorageOptions) -> Result<(i64, usize), StorageError> {
    let read = |key: &[u8]| -> Result<Option<u64>, StorageError> {
        Ok(engine
            .get(rocks::CF_META, key)?
            .and_then(|v| Some(u64::from_be_bytes(v.as_slice().try_into().ok()?))))
    };
    let block_ms = match read(keys::BLOCK_KEY)? {
        Some(b) if b > 0 => b as i64,
        _ => (options.block.as_millis() as i64).max(1000),
    };
    let shards = match read(keys::SHARDS_KEY)? {
        Some(s) if (1..=64).contains(&s) => s as usize,
        _ => match options.writers {
            0 => std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(1, 16),
            n => n.clamp(1, 64),
        },
    };
    if options.block.as_millis() as i64 != block_ms {
        tracing::info!(
            block_ms,
            "the database keeps the partition length it was created with"
        );
    }
    let mut set = rocks::WriteSet::default();
    set.put(
        rocks::CF_META,
        keys::BLOCK_KEY.to_vec(),
        (block_ms as u64).to_be_bytes().to_vec(),
    );
    set.put(
        rocks::CF_META,
        keys::SHARDS_KEY.to_vec(),
        (shards as u64).to_be_bytes().to_vec(),
    );
    engine.commit(set)?;
    Ok((block_ms, shards))
}

/// Moves samples of the older per-sample `head` layout into one headlog record.
fn convert_legacy_head(engine: &Engine) -> Result<(), StorageError> {
    let mut series: BTreeMap<u64, Vec<(i64, f64)>> = BTreeMap::new();
    let mut count = 0usize;
    engine.scan_prefix(rocks::CF_HEAD, &[], |key, value| {
        if let (Some((id, ts)), Some(v)) =
            (keys::split_head_key(key), keys::decode_head_value(value))
        {
            series.entry(id).or_default().push((ts, v));
            count += 1;
        }
        Ok(())
    })?;
    if count == 0 {
        return Ok(());
    }
    let mut last = 0;
    engine.scan_prefix(rocks::CF_HEADLOG, &[0], |key, _| {
        if let Some((0, c)) = keys::split_headlog_key(key) {
            last = last.max(c);
        }
        Ok(())
    })?;
    let mut set = rocks::WriteSet::default();
    set.put(
        rocks::CF_HEADLOG,
        keys::headlog_key(0, last + 1),
        records::encode_headlog(series.iter().map(|(id, p)| (*id, p.as_slice()))),
    );
    set.delete_range(rocks::CF_HEAD, vec![0u8; 16], vec![0xffu8; 17]);
    engine.commit(set)?;
    tracing::info!(
        samples = count,
        "moved samples of the older head layout into the headlog"
    );
    Ok(())
}

/// Replays the headlog into the head and the index; returns each shard's next commit.
fn replay_head(
    engine: &Engine,
    head: &Head,
    index: &RwLock<Index>,
    shards: usize,
    report: &mut OpenReport,
) -> Result<Vec<u64>, StorageError> {
    let mut next = vec![1u64; shards];
    let mut index = index.write().unwrap_or_else(|e| e.into_inner());
    engine.scan_prefix(rocks::CF_HEADLOG, &[], |key, value| {
        let Some((shard, commit)) = keys::split_headlog_key(key) else {
            report.skipped += 1;
            tracing::warn!("skipping a headlog record with a malformed key");
            return Ok(());
        };
        let shard = usize::from(shard);
        if shard >= shards {
            report.skipped += 1;
            tracing::warn!(shard, "skipping a headlog record of a writer shard this database does not have");
            return Ok(());
        }
        match records::decode_headlog(value) {
            Ok(series) => {
                for (id, points) in &series {
                    for &(ts, v) in points {
                        index.observe(*id, ts, v);
                    }
                }
                head.append(shard, commit, series.iter().map(|(id, p)| (*id, p.as_slice())));
            }
            Err(e) => {
                report.skipped += 1;
                tracing::warn!(shard, commit, error = %e, "skipping a headlog record that cannot be decoded");
            }
        }
        next[shard] = next[shard].max(commit.saturating_add(1));
        Ok(())
    })?;
    // Numbers never go back: past what a flush took, and past what the export queue
    // still holds.
    for (shard, n) in next.iter_mut().enumerate() {
        if let Some(v) = engine.get(rocks::CF_META, &keys::flushed_key(shard as u8))?
            && let Ok(b) = <[u8; 8]>::try_from(v.as_slice())
        {
            *n = (*n).max(u64::from_be_bytes(b).saturating_add(1));
        }
        let (from, to) = (keys::headlog_key(shard as u8, 0), [shard as u8 + 1]);
        engine.scan_range_rev(rocks::CF_EXPORT, &from, &to, 1, |key, _| {
            if let Some((_, c)) = keys::split_headlog_key(key) {
                *n = (*n).max(c.saturating_add(1));
            }
            Ok(false)
        })?;
    }
    Ok(next)
}

/// The partitions holding chunks (one seek per partition), with their sample counts.
fn load_partitions(engine: &Engine) -> Result<BTreeMap<i64, u64>, StorageError> {
    let mut counts = BTreeMap::new();
    engine.scan_prefix(
        rocks::CF_META,
        keys::PARTITION_SAMPLES_PREFIX,
        |key, value| {
            if let (Some(p), Ok(n)) = (
                keys::split_partition_samples_key(key),
                <[u8; 8]>::try_from(value),
            ) {
                counts.insert(p, u64::from_be_bytes(n));
            }
            Ok(())
        },
    )?;
    let mut found = BTreeMap::new();
    let mut from = keys::partition_start(i64::MIN).to_vec();
    while let Some((key, _)) = engine.first_in_range(rocks::CF_CHUNKS, &from, &[0xff; 9])? {
        let Some((p, _, _)) = keys::split_chunk_key(&key) else {
            break;
        };
        found.insert(p, counts.get(&p).copied().unwrap_or(0));
        match p.checked_add(1) {
            Some(n) => from = keys::partition_start(n).to_vec(),
            None => break,
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
