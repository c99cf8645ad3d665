//! The writer: one thread that owns every write, fed by a bounded async channel.
//!
//! Sessions `send().await` into the channel, so a writer that falls behind holds back
//! ingest without parking any thread. The thread takes every request waiting (group
//! commit, at most [`MAX_GROUP`]), stages them in one [`Delta`] and one write batch,
//! commits, applies the delta to the index, then answers each request.
//!
//! The [`WriterGuard`] stops and joins the thread: the database is never torn down
//! while the writer still uses it. If the thread stops on its own (a failed write, a
//! panic), [`Failure`] says why, and the aggregator stops rather than refuse every
//! batch forever.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use tokio::sync::{Notify, mpsc, oneshot};

use super::head::Head;
use super::index::{Delta, FirstSeen, Index, signature_hash};
use super::rocks::{
    CF_BUILDS, CF_EXPORT, CF_HEADLOG, CF_LATEST, CF_META, CF_SERIES, CF_STACKS, CF_TARGETS, Engine,
    WriteSet,
};
use super::{
    Coverage, IngestWrite, StorageError, TargetKey, TargetRecord, WriteOutcome, keys, records,
};

/// Batches per group commit, at most.
const MAX_GROUP: usize = 64;

pub(super) struct WriteRequest {
    pub write: IngestWrite,
    pub reply: oneshot::Sender<Result<WriteOutcome, StorageError>>,
}

pub(super) enum Msg {
    Write(Box<WriteRequest>),
    /// Forget targets last seen before `before` (Unix ms).
    Forget {
        before: i64,
        reply: oneshot::Sender<Result<usize, StorageError>>,
    },
    Stop,
}

/// Why the writer stopped on its own, once it has.
#[derive(Default)]
pub(super) struct Failure {
    reason: Mutex<Option<String>>,
    notify: Notify,
}

impl Failure {
    fn set(&self, reason: String) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        drop(r);
        self.notify.notify_waiters();
    }

    pub async fn wait(&self) -> String {
        loop {
            let notified = self.notify.notified();
            if let Some(r) = self
                .reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                return r;
            }
            notified.await;
        }
    }
}

/// Stops the writer threads (and the compaction thread) and waits for them when
/// dropped.
pub struct WriterGuard {
    stopping: Arc<AtomicBool>,
    txs: Vec<mpsc::Sender<Msg>>,
    threads: Vec<JoinHandle<()>>,
    compactor: Option<super::compact::Compactor>,
}

impl WriterGuard {
    /// Stops the writer after the group it is committing, and waits for it. Requests
    /// still queued are answered with [`StorageError::WriterGone`] (nothing acked is
    /// lost: their collectors send them again). Blocks: call it off the async threads.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // A full channel means the thread is busy and sees the flag before its next wait.
        for tx in &self.txs {
            let _ = tx.try_send(Msg::Stop);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if let Some(mut c) = self.compactor.take() {
            c.stop();
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Samples stored per second, over the last minute.
#[derive(Default)]
pub(super) struct IngestRate(Mutex<std::collections::VecDeque<(i64, u64)>>);

impl IngestRate {
    const WINDOW_S: i64 = 60;

    pub fn add(&self, now_ms: i64, samples: u64) {
        let sec = now_ms.div_euclid(1000);
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match q.back_mut() {
            Some(last) if last.0 == sec => last.1 += samples,
            _ => q.push_back((sec, samples)),
        }
        while q.front().is_some_and(|f| f.0 <= sec - Self::WINDOW_S) {
            q.pop_front();
        }
    }

    pub fn per_second(&self, now_ms: i64) -> f64 {
        let sec = now_ms.div_euclid(1000);
        let q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n: u64 = q
            .iter()
            .filter(|(s, _)| *s > sec - Self::WINDOW_S && *s <= sec)
            .map(|(_, n)| n)
            .sum();
        n as f64 / Self::WINDOW_S as f64
    }
}

/// What every writer shares.
pub(super) struct Shared {
    pub engine: Arc<Engine>,
    pub index: Arc<RwLock<Index>>,
    pub head: Arc<Head>,
    pub failed: Arc<Failure>,
    /// The next series id: shards take ids from one counter.
    pub series_ids: Arc<AtomicU64>,
    pub rate: Arc<IngestRate>,
    /// Each shard's export queue, when export is on.
    pub export: Option<Arc<[Arc<super::export::ExportShard>]>>,
}

/// Starts one writer thread per shard; `next_commits[s]` is the number of shard `s`'s
/// next group commit.
pub(super) fn start(
    shared: &Shared,
    queue: usize,
    next_commits: &[u64],
    compactor: super::compact::Compactor,
) -> Result<(Vec<mpsc::Sender<Msg>>, WriterGuard), StorageError> {
    let stopping = Arc::new(AtomicBool::new(false));
    let mut guard = WriterGuard {
        stopping: stopping.clone(),
        txs: Vec::new(),
        threads: Vec::new(),
        compactor: Some(compactor),
    };
    let mut txs = Vec::new();
    for (shard, &next_commit) in next_commits.iter().enumerate() {
        let (tx, thread) = start_one(shared, queue, shard, next_commit, stopping.clone())?;
        txs.push(tx.clone());
        guard.txs.push(tx);
        guard.threads.push(thread);
    }
    Ok((txs, guard))
}

fn start_one(
    shared: &Shared,
    queue: usize,
    shard: usize,
    next_commit: u64,
    stopping: Arc<AtomicBool>,
) -> Result<(mpsc::Sender<Msg>, JoinHandle<()>), StorageError> {
    let (tx, rx) = mpsc::channel(queue);
    let failed = shared.failed.clone();
    let writer = Writer {
        engine: shared.engine.clone(),
        index: shared.index.clone(),
        head: shared.head.clone(),
        series_ids: shared.series_ids.clone(),
        rate: shared.rate.clone(),
        export: shared.export.as_ref().map(|e| e[shard].clone()),
        shard,
        next_commit,
        stopping,
    };
    let thread = std::thread::Builder::new()
        .name(format!("storage-writer-{shard}"))
        .spawn(move || {
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || writer.run(rx)));
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed.set(e.to_string()),
                Err(_) => failed.set("the storage writer panicked".into()),
            }
        })
        .map_err(|e| StorageError::Engine(format!("spawn writer thread: {e}")))?;
    Ok((tx, thread))
}

struct Writer {
    engine: Arc<Engine>,
    index: Arc<RwLock<Index>>,
    head: Arc<Head>,
    series_ids: Arc<AtomicU64>,
    rate: Arc<IngestRate>,
    export: Option<Arc<super::export::ExportShard>>,
    shard: usize,
    /// The number of this shard's next group commit (its headlog key).
    next_commit: u64,
    stopping: Arc<AtomicBool>,
}

impl Writer {
    /// Runs until stopped; a failed write ends it with the error.
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) -> Result<(), StorageError> {
        while !self.stopping.load(Ordering::SeqCst) {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            let mut group = Vec::new();
            let mut others = Vec::new();
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Write(req) => group.push(*req),
                    Msg::Forget { before, reply } => others.push((before, reply)),
                    Msg::Stop => self.stopping.store(true, Ordering::SeqCst),
                }
                if group.len() < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            if !group.is_empty() {
                self.commit_group(group)?;
            }
            for (before, reply) in others {
                let result = self.forget(before);
                let failed = result.as_ref().err().map(|e| e.to_string());
                let _ = reply.send(result);
                if let Some(e) = failed {
                    return Err(StorageError::Engine(e));
                }
            }
        }
        Ok(())
    }

    fn commit_group(&mut self, group: Vec<WriteRequest>) -> Result<(), StorageError> {
        let mut set = WriteSet::default();
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let mut delta = Delta::default();
        // (series id, batch, series in the batch) of every stored series' samples.
        let mut samples: Vec<(u64, usize, usize)> = Vec::new();
        let outcomes: Vec<WriteOutcome> = group
            .iter()
            .enumerate()
            .map(|(i, req)| {
                let mut ids = Vec::new();
                let outcome = stage(
                    &self.engine,
                    &index,
                    &req.write,
                    &mut delta,
                    &mut set,
                    &self.series_ids,
                    &mut ids,
                );
                samples.extend(ids.into_iter().map(|(id, j)| (id, i, j)));
                outcome
            })
            .collect();
        drop(index);
        delta.next_series_id = self.series_ids.load(Ordering::SeqCst);
        let points = |&(id, i, j): &(u64, usize, usize)| -> (u64, &[(i64, f64)]) {
            (id, group[i].write.samples[j].points.as_slice())
        };
        let commit = self.next_commit;
        let mut exported = None;
        if !samples.is_empty() {
            let record = records::encode_headlog(samples.iter().map(points));
            let key = keys::headlog_key(self.shard as u8, commit);
            if self.export.is_some() {
                exported = Some(record.len() as u64);
                set.put(CF_EXPORT, key, record.clone());
            }
            set.put(CF_HEADLOG, key, record);
        }
        let result = if set.is_empty() {
            Ok(())
        } else {
            self.engine.commit(set)
        };
        match result {
            Ok(()) => {
                if !samples.is_empty() {
                    let n: usize = samples.iter().map(|s| points(s).1.len()).sum();
                    self.rate.add(goroscope_proto::unix_ms(), n as u64);
                    if let (Some(export), Some(bytes)) = (&self.export, exported) {
                        export.queued(commit, n as u64, bytes);
                    }
                    self.next_commit += 1;
                    self.head
                        .append(self.shard, commit, samples.iter().map(points));
                }
                self.index
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .apply(delta);
                for (req, outcome) in group.into_iter().zip(outcomes) {
                    let _ = req.reply.send(Ok(outcome));
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, batches = group.len(), "storage write failed; the writer stops");
                for req in group {
                    let _ = req.reply.send(Err(StorageError::Engine(e.to_string())));
                }
                Err(e)
            }
        }
    }

    /// Deletes every target of this shard's hosts last seen before `before`, with its
    /// series (their chunks go with their partitions), and the stack summaries of live
    /// targets taken before it.
    fn forget(&self, before: i64) -> Result<usize, StorageError> {
        let mut set = WriteSet::default();
        let mut gone = Vec::new();
        let mut ids = HashSet::new();
        {
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            let shards = self.head.shards();
            for (key, entry) in &index.targets {
                if super::shard_of(&key.host, shards) != self.shard {
                    continue;
                }
                if entry.last_seen_ms >= before {
                    let (from, _) = keys::stacks_range(key);
                    set.delete_range(CF_STACKS, from, keys::stacks_key(key, before, 0));
                    continue;
                }
                set.delete(CF_TARGETS, key.encode());
                let (from, to) = keys::stacks_range(key);
                set.delete_range(CF_STACKS, from, to);
                for &id in entry.series.values() {
                    set.delete(CF_SERIES, keys::series_key(id));
                    set.delete(CF_LATEST, keys::series_key(id));
                    ids.insert(id);
                }
                gone.push(key.clone());
            }
        }
        if set.is_empty() {
            return Ok(0);
        }
        self.engine.commit(set)?;
        if gone.is_empty() {
            return Ok(0);
        }
        self.head.forget(&ids);
        self.index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .forget(&gone);
        tracing::info!(targets = gone.len(), "forgot targets past the retention");
        Ok(gone.len())
    }
}

/// Adds one batch's changes to the delta and the write set; decides whether it is a
/// duplicate.
fn stage(
    engine: &Engine,
    index: &Index,
    w: &IngestWrite,
    delta: &mut Delta,
    set: &mut WriteSet,
    series_ids: &AtomicU64,
    samples: &mut Vec<(u64, usize)>,
) -> WriteOutcome {
    let mark = delta
        .marks
        .get(&w.host)
        .copied()
        .or_else(|| index.mark(&w.host));
    if let Some((epoch, seq)) = mark
        && epoch == w.epoch
        && w.seq <= seq
    {
        return WriteOutcome::Duplicate;
    }
    delta.marks.insert(w.host.clone(), (w.epoch, w.seq));
    set.put(
        CF_META,
        keys::ingest_mark_key(&w.host),
        keys::ingest_mark_value(w.epoch, w.seq),
    );
    let stats = delta.hosts.entry(w.host.clone()).or_insert_with(|| {
        index
            .hosts
            .get(&w.host)
            .cloned()
            .unwrap_or(super::HostStats {
                first_ms: w.received_ms,
                ..Default::default()
            })
    });
    if let Some((epoch, seq)) = mark
        && epoch == w.epoch
    {
        let skipped = skipped(seq, w.seq);
        if skipped > 0 {
            stats.gaps += 1;
            stats.missed += skipped;
        }
    }
    stats.last_ms = stats.last_ms.max(w.received_ms);
    stats.batches += 1;
    stats.samples += w.samples.iter().map(|s| s.points.len() as u64).sum::<u64>();
    for (reason, batches, bytes) in &w.losses {
        let reason = if super::LOSS_REASONS.contains(&reason.as_str()) {
            reason.as_str()
        } else {
            "other"
        };
        let l = stats.losses.entry(reason.to_owned()).or_default();
        l.0 = l.0.saturating_add(*batches);
        l.1 = l.1.saturating_add(*bytes);
    }
    set.put(
        CF_META,
        keys::host_stats_key(&w.host),
        records::encode_host_stats(stats),
    );

    // Records to write: declared or changed targets, exited ones, and targets a series
    // names that the index does not hold.
    let mut touched: BTreeSet<TargetKey> = BTreeSet::new();
    for update in &w.targets {
        let record = staged_record(delta, index, &update.key, w.received_ms);
        record.labels = update.labels.clone();
        record.coverage = update.coverage.clone();
        record.start_time_ms = update.start_time_ms;
        record.runtime_env = update.runtime_env.clone();
        record.exited = false;
        if let Some(build) = &update.build {
            let (id, bytes) = records::encode_build(build);
            if record.build != Some(id) {
                // Content-addressed: the put is the same bytes whoever writes it.
                set.put(CF_BUILDS, id.to_vec(), bytes);
                record.build = Some(id);
            }
        }
        touched.insert(update.key.clone());
    }
    for stack in &w.stacks {
        stage_stacks(engine, index, stack, delta, set);
    }
    for (j, points) in w.samples.iter().enumerate() {
        let id = match delta
            .series
            .get(&points.series)
            .copied()
            .or_else(|| index.series_id(&points.series))
        {
            Some(id) => id,
            None => {
                let id = series_ids.fetch_add(1, Ordering::SeqCst);
                set.put(
                    CF_SERIES,
                    keys::series_key(id),
                    records::encode_series(&points.series),
                );
                delta.series.insert(points.series.clone(), id);
                let target = &points.series.target;
                if !index.targets.contains_key(target) && !delta.targets.contains_key(target) {
                    staged_record(delta, index, target, w.received_ms);
                    touched.insert(target.clone());
                }
                id
            }
        };
        samples.push((id, j));
        let mut newest: Option<(i64, f64)> = None;
        for &(ts, v) in &points.points {
            if newest.is_none_or(|(t, _)| ts >= t) {
                newest = Some((ts, v));
            }
        }
        if let Some((ts, v)) = newest {
            let current = delta
                .latest
                .get(&id)
                .or_else(|| index.latest.get(&id))
                .copied();
            if current.is_none_or(|(t, _)| ts >= t) {
                delta.latest.insert(id, (ts, v));
            }
            let seen = delta
                .last_seen
                .entry(points.series.target.clone())
                .or_insert(ts);
            *seen = (*seen).max(ts);
        }
    }
    for key in &w.gone {
        staged_record(delta, index, key, w.received_ms).exited = true;
        touched.insert(key.clone());
    }
    for key in touched {
        let seen = [
            delta.last_seen.get(&key).copied(),
            index.targets.get(&key).map(|e| e.last_seen_ms),
        ]
        .into_iter()
        .flatten()
        .max();
        let record = delta
            .targets
            .get_mut(&key)
            .expect("every touched target was staged above");
        if let Some(seen) = seen {
            record.last_seen_ms = record.last_seen_ms.max(seen);
        }
        set.put(CF_TARGETS, key.encode(), records::encode_target(record));
    }
    WriteOutcome::Stored
}

/// How many scrapes (or batches) a collector skipped between two batches of an epoch.
/// The goroscope collector numbers a batch by its scrape's number in the high 32 bits
/// (a scrape split over batches keeps its number), so those are compared when both
/// have them; other senders are taken to count batches one by one.
fn skipped(prev: u64, next: u64) -> u64 {
    const SCRAPE: u64 = 1 << 32;
    if prev >= SCRAPE && next >= SCRAPE {
        (next >> 32).saturating_sub((prev >> 32) + 1)
    } else {
        next.saturating_sub(prev + 1)
    }
}

/// The staged record of a target, starting from the committed one or a new one.
fn staged_record<'a>(
    delta: &'a mut Delta,
    index: &Index,
    key: &TargetKey,
    now_ms: i64,
) -> &'a mut TargetRecord {
    delta.targets.entry(key.clone()).or_insert_with(|| {
        index
            .targets
            .get(key)
            .map(|e| (*e.record).clone())
            .unwrap_or_else(|| TargetRecord {
                key: key.clone(),
                labels: Default::default(),
                coverage: Coverage::default(),
                start_time_ms: 0,
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
                exited: false,
                runtime_env: Default::default(),
                build: None,
            })
    })
}

/// Stores a stack summary with each group's first-seen time: carried over from the
/// target's previous summary of every goroutine (debug=1 or debug=2: the frames are
/// the same in both) when the signature was in it, else the summary's own time. A
/// goroutineleak summary (a subset) looks the times up without replacing them; a
/// summary that did not read the profile (skipped) is stored too (it says why), and
/// changes no time.
fn stage_stacks(
    engine: &Engine,
    index: &Index,
    stack: &super::StackWrite,
    delta: &mut Delta,
    set: &mut WriteSet,
) {
    let mut summary = stack.summary.clone();
    summary.target_ref = 0;
    let ts = summary.timestamp_ms;
    if summary.skipped.is_empty() {
        let previous = match delta
            .stack_sigs
            .get(&stack.target)
            .or_else(|| index.stack_sigs.get(&stack.target))
        {
            Some(p) => p.clone(),
            None => {
                // Read once, then kept (even empty): not read again for every summary.
                let loaded = Arc::new(load_first_seen(engine, &stack.target));
                delta
                    .stack_sigs
                    .insert(stack.target.clone(), loaded.clone());
                loaded
            }
        };
        let mut seen = FirstSeen::with_capacity(summary.groups.len());
        for group in &mut summary.groups {
            let sig = signature_hash(&group.frames);
            let first = previous.get(&sig).copied().unwrap_or(ts).min(ts);
            group.first_seen_ms = first;
            seen.insert(sig, first);
        }
        if summary.source != LEAK_SOURCE {
            delta
                .stack_sigs
                .insert(stack.target.clone(), Arc::new(seen));
        }
    }
    set.put(
        CF_STACKS,
        keys::stacks_key(&stack.target, ts, keys::stack_source_byte(&summary.source)),
        records::encode_stacks(&summary),
    );
}

/// Summaries of the goroutineleak profile: the leaked goroutines only.
const LEAK_SOURCE: &str = "goroutineleak";

/// The first-seen times of the newest stored summary of every goroutine of a target (a
/// summary that was read, not skipped), or none.
fn load_first_seen(engine: &Engine, target: &TargetKey) -> FirstSeen {
    let (from, to) = keys::stacks_range(target);
    let mut found = FirstSeen::new();
    let scanned =
        engine.scan_range_rev(
            CF_STACKS,
            &from,
            &to,
            256,
            |_, value| match records::decode_stacks(value) {
                Ok(s) if s.source != LEAK_SOURCE && s.skipped.is_empty() => {
                    found = s
                        .groups
                        .iter()
                        .map(|g| (signature_hash(&g.frames), g.first_seen_ms))
                        .collect();
                    Ok(false)
                }
                _ => Ok(true),
            },
        );
    if let Err(e) = scanned {
        tracing::warn!(error = %e, "reading a target's stack summaries failed; first-seen times start again");
    }
    found
}
