//! Time series storage on RocksDB, behind this module's small API.
//!
//! # Column families and keys
//!
//! | cf        | key                                   | value                                  |
//! |-----------|---------------------------------------|----------------------------------------|
//! | `meta`    | `ingest/<host>`                       | epoch (u64 BE), highest stored seq (u64 BE) |
//! | `series`  | series id (u64 BE)                    | JSON [`SeriesRecord`]: metric and target |
//! | `targets` | host, NUL, pid (u32 BE), start ticks (u64 BE) | JSON [`TargetRecord`]             |
//! | `head`    | series id (u64 BE), timestamp ms (i64 BE, sign bit flipped) | value (f64 LE)   |
//!
//! # Durability
//!
//! One writer thread owns every write. Ingest sessions hand it [`IngestWrite`]s through a
//! bounded channel; it takes all that are waiting (group commit), stages their series,
//! targets and ingest marks, and applies them in one RocksDB write batch with one synced
//! WAL write. Only then does it answer each session, which then acks its batch: an
//! acknowledged batch survives a crash. The ingest mark of a host is written in the same
//! batch as its samples, so a batch is stored exactly once even when a collector re-sends
//! it after a lost ack.
//!
//! The in-memory [`Index`] (series ids, target records, ingest marks) is rebuilt from the
//! `series`, `targets` and `meta` column families at open, and is updated only after a
//! write succeeded, so readers never see what is not durable.
//!
//! Compression of closed head windows into chunks, rollups, retention and postings for
//! label selectors come with the storage issue; the key layout leaves room for them.

mod keys;
mod rocks;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::thread;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use rocks::{CF_HEAD, CF_META, CF_SERIES, CF_TARGETS, Engine, WriteSet};

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
}

/// One Go process, as the storage knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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

/// One series: a metric of a target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SeriesKey {
    pub target: TargetKey,
    pub metric: String,
}

/// What the `series` column family stores per series id.
type SeriesRecord = SeriesKey;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    pub proc: bool,
    pub buildinfo: bool,
    pub expvar: bool,
    pub pprof: bool,
    pub debug_addr: String,
}

/// What the `targets` column family stores per target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub key: TargetKey,
    pub labels: BTreeMap<String, String>,
    pub coverage: Coverage,
    pub start_time_ms: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub exited: bool,
    /// Latest sample per metric: (timestamp ms, value).
    pub latest: BTreeMap<String, (i64, f64)>,
}

/// Target metadata carried by a batch (new on the stream, or changed).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetUpdate {
    pub key: TargetKey,
    pub labels: BTreeMap<String, String>,
    pub coverage: Coverage,
    pub start_time_ms: i64,
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
            .all(|(name, value)| match name.as_str() {
                "host" => target.key.host == *value,
                "pid" => value.parse::<u32>().is_ok_and(|pid| pid == target.key.pid),
                _ => target.labels.get(name) == Some(value),
            })
    }
}

/// One series of a range query.
#[derive(Debug, Clone)]
pub struct SeriesData {
    pub target: TargetRecord,
    pub metric: String,
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
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            sync_writes: true,
            write_queue: 256,
            max_query_samples: 1_000_000,
        }
    }
}

/// What readers see: the committed series ids, targets and ingest marks.
#[derive(Default)]
struct Index {
    series: HashMap<Arc<SeriesKey>, u64>,
    targets: HashMap<TargetKey, TargetRecord>,
    marks: HashMap<String, (u64, u64)>,
    next_series_id: u64,
}

struct WriteRequest {
    write: IngestWrite,
    reply: oneshot::Sender<Result<WriteOutcome, StorageError>>,
}

/// The storage handle: cheap to clone, shared by every ingest session and query.
#[derive(Clone)]
pub struct Storage {
    engine: Arc<Engine>,
    index: Arc<RwLock<Index>>,
    writer: std::sync::mpsc::SyncSender<WriteRequest>,
    options: StorageOptions,
}

impl Storage {
    /// Opens the database in `dir` and starts the writer thread. The thread ends once
    /// every clone of the handle is dropped.
    pub fn open(dir: &Path, options: StorageOptions) -> Result<Storage, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Open {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        let engine = Arc::new(Engine::open(dir, options.sync_writes)?);
        let index = Arc::new(RwLock::new(load_index(&engine)?));
        let (tx, rx) = std::sync::mpsc::sync_channel(options.write_queue.max(1));
        let writer = Writer {
            engine: engine.clone(),
            index: index.clone(),
        };
        thread::Builder::new()
            .name("storage-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StorageError::Engine(format!("spawn writer thread: {e}")))?;
        Ok(Storage {
            engine,
            index,
            writer: tx,
            options,
        })
    }

    /// Stores one batch durably, or recognises it as already stored.
    pub async fn write(&self, write: IngestWrite) -> Result<WriteOutcome, StorageError> {
        let (reply, rx) = oneshot::channel();
        let sender = self.writer.clone();
        // The channel is bounded: when the writer falls behind, ingest waits here, off the
        // async threads, and the sessions stop reading their streams (backpressure).
        tokio::task::spawn_blocking(move || {
            sender.send(WriteRequest { write, reply }).map_err(drop)
        })
        .await
        .map_err(|_| StorageError::WriterGone)?
        .map_err(|_| StorageError::WriterGone)?;
        rx.await.map_err(|_| StorageError::WriterGone)?
    }

    /// The highest stored sequence number of a host in `epoch`, 0 if none.
    pub fn last_seq(&self, host: &str, epoch: u64) -> u64 {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        match index.marks.get(host) {
            Some(&(e, seq)) if e == epoch => seq,
            _ => 0,
        }
    }

    /// Targets matching `selector` seen at or after `seen_since_ms`, newest first.
    pub fn list_targets(&self, selector: &Selector, seen_since_ms: i64) -> Vec<TargetRecord> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let mut targets: Vec<TargetRecord> = index
            .targets
            .values()
            .filter(|t| t.last_seen_ms >= seen_since_ms && selector.matches(t))
            .cloned()
            .collect();
        targets.sort_by(|a, b| {
            b.last_seen_ms
                .cmp(&a.last_seen_ms)
                .then_with(|| a.key.cmp(&b.key))
        });
        targets
    }

    /// Samples of `metric` in `[start_ms, end_ms]` for every target matching `selector`.
    /// Blocking: call it off the async threads.
    pub fn query_range(
        &self,
        metric: &str,
        selector: &Selector,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesData>, StorageError> {
        let wanted: Vec<(u64, TargetRecord)> = {
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            let mut wanted: Vec<_> = index
                .targets
                .values()
                .filter(|t| selector.matches(t))
                .filter_map(|t| {
                    let key = SeriesKey {
                        target: t.key.clone(),
                        metric: metric.to_owned(),
                    };
                    index.series.get(&key).map(|id| (*id, t.clone()))
                })
                .collect();
            wanted.sort_by(|a, b| a.1.key.cmp(&b.1.key));
            wanted
        };
        let mut total = 0usize;
        let mut out = Vec::with_capacity(wanted.len());
        for (id, target) in wanted {
            let mut points = Vec::new();
            let from = keys::head_key(id, start_ms);
            let to = match end_ms.checked_add(1) {
                Some(end) => keys::head_key(id, end),
                None => keys::head_key(id.saturating_add(1), i64::MIN),
            };
            self.engine.scan_range(CF_HEAD, &from, &to, |key, value| {
                let (_, ts) = keys::split_head_key(key).ok_or_else(|| corrupt(CF_HEAD, "key"))?;
                let v = keys::decode_head_value(value).ok_or_else(|| corrupt(CF_HEAD, "value"))?;
                total += 1;
                if total > self.options.max_query_samples {
                    return Err(StorageError::TooManySamples {
                        limit: self.options.max_query_samples,
                    });
                }
                points.push((ts, v));
                Ok(())
            })?;
            out.push(SeriesData {
                target,
                metric: metric.to_owned(),
                points,
            });
        }
        Ok(out)
    }
}

fn corrupt(cf: &'static str, what: &str) -> StorageError {
    StorageError::Corrupt {
        cf,
        reason: format!("malformed {what}"),
    }
}

fn load_index(engine: &Engine) -> Result<Index, StorageError> {
    let mut index = Index {
        next_series_id: 1,
        ..Index::default()
    };
    engine.scan_prefix(CF_SERIES, &[], |key, value| {
        let id = keys::decode_series_key(key).ok_or_else(|| corrupt(CF_SERIES, "key"))?;
        let record: SeriesRecord =
            serde_json::from_slice(value).map_err(|e| StorageError::Corrupt {
                cf: CF_SERIES,
                reason: e.to_string(),
            })?;
        index.series.insert(Arc::new(record), id);
        index.next_series_id = index.next_series_id.max(id + 1);
        Ok(())
    })?;
    engine.scan_prefix(CF_TARGETS, &[], |_, value| {
        let record: TargetRecord =
            serde_json::from_slice(value).map_err(|e| StorageError::Corrupt {
                cf: CF_TARGETS,
                reason: e.to_string(),
            })?;
        index.targets.insert(record.key.clone(), record);
        Ok(())
    })?;
    engine.scan_prefix(CF_META, keys::INGEST_MARK_PREFIX, |key, value| {
        let host = std::str::from_utf8(&key[keys::INGEST_MARK_PREFIX.len()..])
            .map_err(|_| corrupt(CF_META, "ingest mark key"))?;
        let mark =
            keys::decode_ingest_mark(value).ok_or_else(|| corrupt(CF_META, "ingest mark"))?;
        index.marks.insert(host.to_owned(), mark);
        Ok(())
    })?;
    Ok(index)
}

/// Group commits, at most this many batches per RocksDB write.
const MAX_GROUP: usize = 64;

struct Writer {
    engine: Arc<Engine>,
    index: Arc<RwLock<Index>>,
}

/// Changes of one group commit: an [`Index`] holding only what the commit adds (and the
/// next free series id), applied to the index once the write succeeded.
type Staged = Index;

impl Index {
    fn apply(&mut self, staged: Staged) {
        self.series.extend(staged.series);
        self.targets.extend(staged.targets);
        self.marks.extend(staged.marks);
        self.next_series_id = staged.next_series_id;
    }
}

impl Writer {
    fn run(self, rx: std::sync::mpsc::Receiver<WriteRequest>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(req) => group.push(req),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
    }

    fn commit_group(&self, group: Vec<WriteRequest>) {
        let mut set = WriteSet::default();
        let mut staged = Staged {
            next_series_id: self
                .index
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .next_series_id,
            ..Staged::default()
        };
        let mut outcomes = Vec::with_capacity(group.len());
        for req in &group {
            outcomes.push(self.stage(&req.write, &mut staged, &mut set));
        }
        let result = match outcomes.iter().find_map(|o| o.as_ref().err()) {
            Some(e) => Err(StorageError::Engine(e.to_string())),
            None if set.is_empty() => Ok(()),
            None => self.engine.commit(set),
        };
        match result {
            Ok(()) => {
                self.index
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .apply(staged);
                for (req, outcome) in group.into_iter().zip(outcomes) {
                    let _ = req.reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batches = group.len(), "storage write failed");
                for req in group {
                    let _ = req.reply.send(Err(StorageError::Engine(e.to_string())));
                }
            }
        }
    }

    /// Adds one batch's changes to the write set; decides whether it is a duplicate.
    fn stage(
        &self,
        w: &IngestWrite,
        staged: &mut Staged,
        set: &mut WriteSet,
    ) -> Result<WriteOutcome, StorageError> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let mark = staged
            .marks
            .get(&w.host)
            .or_else(|| index.marks.get(&w.host))
            .copied();
        if let Some((epoch, seq)) = mark
            && epoch == w.epoch
            && w.seq <= seq
        {
            return Ok(WriteOutcome::Duplicate);
        }
        staged.marks.insert(w.host.clone(), (w.epoch, w.seq));
        set.put(
            CF_META,
            keys::ingest_mark_key(&w.host),
            keys::ingest_mark_value(w.epoch, w.seq),
        );

        let mut touched: Vec<TargetKey> = Vec::new();
        for update in &w.targets {
            let record = staged_target(staged, &index, &update.key, w.received_ms);
            record.labels = update.labels.clone();
            record.coverage = update.coverage.clone();
            record.start_time_ms = update.start_time_ms;
            record.exited = false;
            touched.push(update.key.clone());
        }
        for points in &w.samples {
            let id = match staged
                .series
                .get(&points.series)
                .or_else(|| index.series.get(&points.series))
            {
                Some(id) => *id,
                None => {
                    let id = staged.next_series_id;
                    staged.next_series_id += 1;
                    let record = serde_json::to_vec(&*points.series)
                        .map_err(|e| StorageError::Engine(format!("encode series: {e}")))?;
                    set.put(CF_SERIES, keys::series_key(id), record);
                    staged.series.insert(points.series.clone(), id);
                    id
                }
            };
            for &(ts, v) in &points.points {
                set.put(CF_HEAD, keys::head_key(id, ts), keys::head_value(v));
            }
            let record = staged_target(staged, &index, &points.series.target, w.received_ms);
            if let Some(&(ts, v)) = points.points.iter().max_by_key(|(ts, _)| *ts) {
                let latest = record
                    .latest
                    .entry(points.series.metric.clone())
                    .or_insert((ts, v));
                if ts >= latest.0 {
                    *latest = (ts, v);
                }
                record.last_seen_ms = record.last_seen_ms.max(ts);
            }
            touched.push(points.series.target.clone());
        }
        for key in &w.gone {
            staged_target(staged, &index, key, w.received_ms).exited = true;
            touched.push(key.clone());
        }
        touched.sort();
        touched.dedup();
        for key in touched {
            let record = &staged.targets[&key];
            let value = serde_json::to_vec(record)
                .map_err(|e| StorageError::Engine(format!("encode target: {e}")))?;
            set.put(CF_TARGETS, key.encode(), value);
        }
        Ok(WriteOutcome::Stored)
    }
}

/// The staged record of a target, starting from the committed one or a new one.
fn staged_target<'a>(
    staged: &'a mut Staged,
    index: &Index,
    key: &TargetKey,
    now_ms: i64,
) -> &'a mut TargetRecord {
    staged.targets.entry(key.clone()).or_insert_with(|| {
        index
            .targets
            .get(key)
            .cloned()
            .unwrap_or_else(|| TargetRecord {
                key: key.clone(),
                labels: BTreeMap::new(),
                coverage: Coverage::default(),
                start_time_ms: 0,
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
                exited: false,
                latest: BTreeMap::new(),
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, pid: u32) -> TargetKey {
        TargetKey {
            host: host.into(),
            pid,
            start_ticks: 100,
        }
    }

    fn batch(host: &str, epoch: u64, seq: u64, pid: u32, points: &[(i64, f64)]) -> IngestWrite {
        let t = target(host, pid);
        IngestWrite {
            host: host.into(),
            epoch,
            seq,
            received_ms: 1_000,
            targets: vec![TargetUpdate {
                key: t.clone(),
                labels: BTreeMap::from([("service".to_string(), "billing".to_string())]),
                coverage: Coverage {
                    proc: true,
                    ..Coverage::default()
                },
                start_time_ms: 5,
            }],
            samples: vec![SeriesPoints {
                series: Arc::new(SeriesKey {
                    target: t,
                    metric: "go_goroutines".into(),
                }),
                points: points.to_vec(),
            }],
            gone: vec![],
        }
    }

    fn open(dir: &Path) -> Storage {
        Storage::open(dir, StorageOptions::default()).unwrap()
    }

    #[tokio::test]
    async fn stored_samples_survive_reopen_and_query_by_range() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
            let w = batch(
                "node-a",
                7,
                1,
                42,
                &[(1_000, 10.0), (2_000, 11.0), (3_000, 12.0)],
            );
            assert_eq!(s.write(w).await.unwrap(), WriteOutcome::Stored);
        }
        // The writer thread may still hold the database for a moment after the handle
        // is dropped; reopening must wait for the lock to be released.
        let s = loop {
            match Storage::open(dir.path(), StorageOptions::default()) {
                Ok(s) => break s,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        let sel = Selector {
            matchers: vec![("service".into(), "billing".into())],
        };
        let got = s.query_range("go_goroutines", &sel, 1_500, 3_000).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].points, vec![(2_000, 11.0), (3_000, 12.0)]);
        let targets = s.list_targets(&Selector::default(), 0);
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].latest["go_goroutines"], (3_000, 12.0));
        assert_eq!(targets[0].labels["service"], "billing");
        assert_eq!(s.last_seq("node-a", 7), 1);
        assert_eq!(s.last_seq("node-a", 8), 0);
    }

    #[tokio::test]
    async fn a_resent_batch_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let w = batch("node-a", 7, 1, 42, &[(1_000, 10.0)]);
        assert_eq!(s.write(w.clone()).await.unwrap(), WriteOutcome::Stored);
        let mut again = w.clone();
        again.samples[0].points = vec![(1_000, 99.0)];
        assert_eq!(s.write(again).await.unwrap(), WriteOutcome::Duplicate);
        let got = s
            .query_range("go_goroutines", &Selector::default(), 0, 10_000)
            .unwrap();
        assert_eq!(got[0].points, vec![(1_000, 10.0)]);
        // A new epoch (the collector restarted) starts its sequence again.
        let restarted = batch("node-a", 8, 1, 42, &[(2_000, 20.0)]);
        assert_eq!(s.write(restarted).await.unwrap(), WriteOutcome::Stored);
    }

    #[tokio::test]
    async fn concurrent_writers_share_series_ids_consistently() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let mut tasks = Vec::new();
        for host in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 1..=20u64 {
                    let w = batch(
                        &format!("node-{host}"),
                        1,
                        seq,
                        1,
                        &[(seq as i64, seq as f64)],
                    );
                    s.write(w).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let got = s
            .query_range("go_goroutines", &Selector::default(), 0, 100)
            .unwrap();
        assert_eq!(got.len(), 8);
        assert!(got.iter().all(|sd| sd.points.len() == 20));
        let sel = Selector {
            matchers: vec![("host".into(), "node-3".into()), ("pid".into(), "1".into())],
        };
        assert_eq!(s.list_targets(&sel, 0).len(), 1);
    }

    #[tokio::test]
    async fn query_refuses_more_samples_than_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(
            dir.path(),
            StorageOptions {
                max_query_samples: 2,
                ..StorageOptions::default()
            },
        )
        .unwrap();
        let w = batch("node-a", 1, 1, 42, &[(1, 1.0), (2, 2.0), (3, 3.0)]);
        s.write(w).await.unwrap();
        let err = s
            .query_range("go_goroutines", &Selector::default(), 0, 10)
            .unwrap_err();
        assert!(matches!(err, StorageError::TooManySamples { limit: 2 }));
    }
}
