//! Time series storage on RocksDB, behind this module's small API.
//!
//! - [`index`]: what readers see in memory (series ids, target records, latest values,
//!   ingest marks), and the [`index::Delta`] one group commit adds to it.
//! - [`writer`]: the thread that owns every write.
//! - [`query`]: range queries and paged target listings.
//! - [`records`]: the versioned binary encoding of persisted records.
//! - `keys`: key encodings; `rocks`: the only module importing `rocksdb`.
//!
//! # Column families and keys
//!
//! | cf        | key                                   | value                                  |
//! |-----------|---------------------------------------|----------------------------------------|
//! | `meta`    | `ingest/<host>`                       | epoch (u64 BE), highest stored seq (u64 BE) |
//! | `series`  | series id (u64 BE)                    | [`records`] series record: target and metric |
//! | `targets` | host, NUL, pid (u32 BE), start ticks (u64 BE) | [`records`] target record      |
//! | `head`    | series id (u64 BE), timestamp ms (i64 BE, sign bit flipped) | value (f64 LE)   |
//! | `builds`  | build id: the first 16 bytes of the SHA-256 of the record | [`records`] build: the wire's `BuildInfo` |
//! | `stacks`  | target key (as in `targets`), timestamp ms (as in `head`), source (one byte) | [`records`] stack summary, with first-seen times |
//! | `captures` | see [`captures`] | capture info and the capture's bytes in chunks |
//! | `diagnoses` | see [`diagnoses`] | anomalies and incidents |
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
//! One writer thread owns every write. Ingest sessions hand it [`IngestWrite`]s through
//! a bounded async channel (a full channel makes the session wait without holding a
//! thread); it takes all that are waiting (group commit), stages their series, target
//! records and ingest marks in a [`index::Delta`], and applies them in one RocksDB write
//! batch with one synced WAL write. Only then does it answer each session, which then
//! acks its batch: an acknowledged batch survives a crash. The ingest mark of a host is
//! written in the same batch as its samples, so a batch is stored exactly once even when
//! a collector re-sends it after a lost ack.
//!
//! A target record is written when a collector declares or changes the target and when
//! it exits, never per sample: the latest value of each series and a target's last-seen
//! time live in the index, rebuilt at open from the newest `head` entry of each series.
//!
//! # Retention
//!
//! Targets not seen for longer than the retention are forgotten: their records, series
//! and samples are deleted in one write (samples by range delete). Samples older than
//! the retention are refused at ingest. Compression into chunks and rollups come with
//! the storage engine work; the key layout leaves room for them.

pub mod captures;
pub mod diagnoses;
mod index;
mod keys;
mod query;
pub mod records;
mod rocks;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use query::{Cancel, OneTarget, PageToken, StacksAt};
pub use writer::WriterGuard;

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

    /// Whether a series matches: each matcher holds on the target (its id or labels) or
    /// on the series' own labels. Matchers naming a label the target lacks may thus pick
    /// histogram buckets (`le`) or summary quantiles (`quantile`).
    pub fn matches_series(&self, target: &TargetRecord, labels: &SeriesLabels) -> bool {
        self.matchers.iter().all(|(name, value)| {
            Selector::holds(target, name, value)
                || labels.iter().any(|(n, v)| n == name && v == value)
        })
    }

    /// Whether the matchers that concern the target (ids and its label names) hold; the
    /// others may still hold on a series.
    pub fn may_match(&self, target: &TargetRecord) -> bool {
        self.matchers.iter().all(|(name, value)| {
            let about_target =
                matches!(name.as_str(), "host" | "pid") || target.labels.contains_key(name);
            !about_target || Selector::holds(target, name, value)
        })
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
    /// Targets not seen for this long are forgotten, with their samples.
    pub retention: Duration,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            sync_writes: true,
            write_queue: 256,
            max_query_samples: 1_000_000,
            retention: Duration::from_secs(15 * 24 * 3600),
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
    writer: mpsc::Sender<writer::Msg>,
    failed: Arc<writer::Failure>,
    options: Arc<StorageOptions>,
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
        let (index, report) = index::load(&engine)?;
        let index = Arc::new(RwLock::new(index));
        let failed = Arc::new(writer::Failure::default());
        let (tx, guard) = writer::start(
            engine.clone(),
            index.clone(),
            failed.clone(),
            options.write_queue.max(1),
        )?;
        Ok((
            Storage {
                engine,
                index,
                writer: tx,
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
        self.writer
            .send(writer::Msg::Write(Box::new(writer::WriteRequest {
                write,
                reply,
            })))
            .await
            .map_err(|_| StorageError::WriterGone)?;
        rx.await.map_err(|_| StorageError::WriterGone)?
    }

    /// Ingest writes waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.writer.max_capacity() - self.writer.capacity()
    }

    /// Resolves if the writer stops on its own (a failed write, a panic), with why.
    pub async fn failed(&self) -> String {
        self.failed.wait().await
    }

    /// Asks the writer to forget what is older than the retention; see the module docs.
    pub async fn forget_expired(&self, now_ms: i64) -> Result<usize, StorageError> {
        let (reply, rx) = oneshot::channel();
        let before = now_ms.saturating_sub(self.options.retention.as_millis() as i64);
        self.writer
            .send(writer::Msg::Forget { before, reply })
            .await
            .map_err(|_| StorageError::WriterGone)?;
        rx.await.map_err(|_| StorageError::WriterGone)?
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

    /// How many targets and series the index holds.
    pub fn sizes(&self) -> (usize, usize) {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        (index.target_count(), index.series_count())
    }
}

fn corrupt(cf: &'static str, what: &str) -> StorageError {
    StorageError::Corrupt {
        cf,
        reason: format!("malformed {what}"),
    }
}

#[cfg(test)]
mod tests;
