//! The spool's own thread: every disk write, sync, checkpoint and deletion happens
//! there, never on the async runtime; reads for replay run on the blocking pool.
//!
//! The outbox hands each scrape to the thread through a bounded channel as it takes it
//! ([`SpoolLink::try_append`]); the thread appends it and tells the outbox it is on disk
//! (only then may the outbox let it go from memory). Once per `sync_interval` the
//! thread syncs, applies the acks the outbox noted, deletes acknowledged segments and
//! writes the checkpoint. A scrape's record id is the spool's base (fixed at start)
//! plus its number in this run's epoch, so scrapes left by a previous run are sent
//! again first, with fresh numbers of the new epoch.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use goroscope_proto::v1::Loss;

use super::{REASON_CORRUPT, Spool, SpoolError, SpoolOptions, Stored, record};
use crate::metrics::Metrics;
use crate::model::Scrape;
use crate::outbox::Outbox;

/// Scrapes waiting for the spool thread at most; past that (a disk that hangs) a scrape
/// stays in memory only.
const QUEUE: usize = 64;

enum Command {
    Append { number: u32, scrape: Arc<Scrape> },
    Shutdown,
}

fn lock(spool: &Mutex<Spool>) -> MutexGuard<'_, Spool> {
    // Every operation leaves the spool consistent on disk; a panic in one leaves the
    // in-memory summary at worst stale, which the next open rebuilds.
    spool.lock().unwrap_or_else(|e| e.into_inner())
}

/// The outbox's way to the spool.
pub struct SpoolLink {
    /// Record id of scrape number 0 of this run.
    pub base: u64,
    tx: SyncSender<Command>,
    spool: Arc<Mutex<Spool>>,
}

impl SpoolLink {
    /// Queues scrape `number` for writing; false if the thread is behind or gone.
    pub fn try_append(&self, number: u32, scrape: Arc<Scrape>) -> bool {
        match self.tx.try_send(Command::Append { number, scrape }) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!(
                    scrape = number,
                    "spool writer is behind (a slow disk?): this scrape is kept in memory only"
                );
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// The first unacknowledged spooled scrape numbered in `from..below`, read on the
    /// blocking pool. Returns its number.
    pub async fn read(&self, from: u32, below: u32) -> Option<(u32, Stored)> {
        let spool = self.spool.clone();
        let base = self.base;
        let stored = tokio::task::spawn_blocking(move || {
            lock(&spool).read_at_or_after(base + u64::from(from), base + u64::from(below))
        })
        .await
        .ok()??;
        let number = u32::try_from(stored.id.checked_sub(base)?).ok()?;
        Some((number, stored))
    }
}

/// The running spool thread; [`SpoolThread::close`] flushes and stops it.
pub struct SpoolThread {
    tx: SyncSender<Command>,
    join: Option<JoinHandle<()>>,
}

impl SpoolThread {
    /// Writes what is queued, syncs, writes the checkpoint and waits for the thread.
    pub async fn close(mut self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(join) = self.join.take() {
            let _ = tokio::task::spawn_blocking(move || join.join()).await;
        }
    }
}

/// Opens the spool (on the blocking pool: recovery reads every unacknowledged segment)
/// and starts its thread; returns the outbox it feeds.
pub async fn start(
    opts: SpoolOptions,
    sync_interval: Duration,
    max_pending_bytes: usize,
    metrics: Arc<Metrics>,
) -> Result<(Arc<Outbox>, SpoolThread), SpoolError> {
    let (spool, recovered) = tokio::task::spawn_blocking(move || Spool::open(opts))
        .await
        .map_err(|e| SpoolError::Thread(e.to_string()))??;
    if recovered.records > 0 || !recovered.losses.is_empty() || !recovered.unreported.is_empty() {
        tracing::info!(
            records = recovered.records,
            corrupt_records = recovered.corrupt_records,
            losses = recovered.losses.len() + recovered.unreported.len(),
            "spool: unacknowledged scrapes of a previous run are sent first"
        );
    }
    // Scrapes left by the previous run get numbers 1.. of this epoch; ids above the
    // acked one are all left to send.
    let base = spool.acked_through();
    let next_number = u32::try_from(spool.next_id() - base).unwrap_or(u32::MAX);
    let (tx, rx) = sync_channel(QUEUE);
    let spool = Arc::new(Mutex::new(spool));
    let link = SpoolLink {
        base,
        tx: tx.clone(),
        spool: spool.clone(),
    };
    let partial = recovered
        .partial
        .and_then(|(id, items)| Some((u32::try_from(id.checked_sub(base)?).ok()?, items)));
    let outbox = Arc::new(Outbox::with_spool(
        max_pending_bytes,
        link,
        next_number,
        partial,
    ));
    {
        let mut s = lock(&spool);
        for loss in &recovered.losses {
            metrics.spool_dropped(&loss.reason, loss.batches);
        }
        for loss in recovered.unreported.into_iter().chain(recovered.losses) {
            let id = outbox.add_loss(loss.clone());
            s.keep_loss(id, loss);
        }
        metrics.spool_bytes.set(s.bytes() as i64);
        metrics.spool_segments.set(s.segments() as i64);
    }
    let worker = Worker {
        spool,
        outbox: outbox.clone(),
        metrics,
        base,
        sync_interval,
        errors: 0,
    };
    let join = std::thread::Builder::new()
        .name("goroscope-spool".into())
        .spawn(move || worker.run(rx))
        .map_err(|e| SpoolError::Thread(e.to_string()))?;
    Ok((
        outbox,
        SpoolThread {
            tx,
            join: Some(join),
        },
    ))
}

struct Worker {
    spool: Arc<Mutex<Spool>>,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    base: u64,
    sync_interval: Duration,
    /// Write errors in a row (logged on the first and every 100th).
    errors: u64,
}

impl Drop for Worker {
    /// However the thread ends (a panic included), scrapes still queued for it become
    /// memory-only, so that the outbox's bound holds again.
    fn drop(&mut self) {
        self.outbox.spool_stopped();
    }
}

impl Worker {
    fn run(mut self, rx: Receiver<Command>) {
        let mut last = Instant::now();
        loop {
            let wait = self.sync_interval.saturating_sub(last.elapsed());
            match rx.recv_timeout(wait) {
                Ok(Command::Append { number, scrape }) => self.append(number, &scrape),
                Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                    // Appends queued before the shutdown came first (the channel is FIFO).
                    self.housekeeping();
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if last.elapsed() >= self.sync_interval {
                self.housekeeping();
                last = Instant::now();
            }
        }
    }

    fn append(&mut self, number: u32, scrape: &Scrape) {
        if scrape.samples.is_empty() && scrape.gone.is_empty() {
            // Nothing in it to lose.
            self.outbox.mark_spooled(number, true);
            return;
        }
        let payload = record::encode(scrape);
        let id = self.base + u64::from(number);
        let result = lock(&self.spool).append(id, scrape.timestamp_ms, record::VERSION, &payload);
        match result {
            Ok(dropped) => {
                self.errors = 0;
                for d in dropped {
                    if let Some(loss) = d.loss {
                        self.loss(loss);
                    }
                    if let Some(n) = d.through_id.checked_sub(self.base) {
                        self.outbox
                            .forget_through(u32::try_from(n).unwrap_or(u32::MAX));
                    }
                }
                self.outbox.mark_spooled(number, true);
            }
            Err(e) => {
                self.metrics.spool_write_errors.inc();
                if self.errors.is_multiple_of(100) {
                    tracing::error!(
                        scrape = number,
                        error = %e,
                        "spool write failed: the scrape is kept in memory only until acknowledged"
                    );
                }
                self.errors += 1;
                self.outbox.mark_spooled(number, false);
            }
        }
    }

    /// Counts a loss, hands it to the outbox to report, and keeps it in the checkpoint
    /// until reported.
    fn loss(&self, loss: Loss) {
        self.metrics.spool_dropped(&loss.reason, loss.batches);
        let id = self.outbox.add_loss(loss.clone());
        lock(&self.spool).keep_loss(id, loss);
    }

    fn housekeeping(&mut self) {
        let (through, partial, losses_through) = self.outbox.acked_for_spool();
        let corrupt = {
            let mut s = lock(&self.spool);
            if let Err(e) = s.sync() {
                tracing::error!(error = %e, "spool sync failed");
            }
            s.ack(
                self.base + u64::from(through),
                partial.map(|(n, items)| (self.base + u64::from(n), items)),
            );
            s.losses_reported(losses_through);
            if let Err(e) = s.write_checkpoint() {
                tracing::error!(error = %e, "spool checkpoint write failed");
            }
            self.metrics.spool_bytes.set(s.bytes() as i64);
            self.metrics.spool_segments.set(s.segments() as i64);
            s.take_corrupt_found()
        };
        if corrupt > 0 {
            self.loss(Loss {
                reason: REASON_CORRUPT.into(),
                batches: corrupt,
                ..Loss::default()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Coverage, TargetMeta, TargetSample};
    use crate::outbox::{COMPLETE, seq};

    fn scrape(ts: i64) -> Scrape {
        Scrape {
            timestamp_ms: ts,
            samples: vec![TargetSample {
                meta: Arc::new(TargetMeta {
                    pid: 7,
                    start_ticks: 1,
                    start_time_ms: 1,
                    labels: vec![("service".into(), "billing".into())],
                    coverage: Coverage::default(),
                    runtime_env: vec![],
                    build: None,
                }),
                metrics: vec![("go_goroutines", ts as f64); 20],
                stacks: vec![],
                series: vec![],
            }],
            gone: vec![],
        }
    }

    fn opts(dir: &std::path::Path, max_bytes: u64) -> SpoolOptions {
        SpoolOptions {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes: 4096,
        }
    }

    async fn open(
        dir: &std::path::Path,
        max_bytes: u64,
    ) -> (Arc<Outbox>, SpoolThread, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new(Duration::from_secs(60)));
        let (outbox, thread) = start(
            opts(dir, max_bytes),
            Duration::from_millis(10),
            1,
            metrics.clone(),
        )
        .await
        .unwrap();
        (outbox, thread, metrics)
    }

    /// Every pending scrape, in order, as (number, timestamp).
    async fn drain(outbox: &Outbox) -> Vec<(u32, i64)> {
        let mut out = Vec::new();
        let mut number = 0;
        while let Some(p) = outbox.next_pending(number).await {
            out.push((p.number, p.scrape.timestamp_ms));
            number = p.number + 1;
        }
        out
    }

    /// Waits until the spool thread has written every scrape handed to it, and for a
    /// few housekeeping rounds (acks, checkpoint) after that.
    async fn settle_on(outbox: &Outbox) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while outbox.spool_queued() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn scrapes_leave_memory_for_the_disk_and_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, thread, metrics) = open(dir.path(), 1 << 20).await;
        for ts in 1..=20 {
            outbox.push(scrape(ts * 1000));
        }
        settle_on(&outbox).await;
        // Memory keeps the newest only (its bound is 1 byte); the rest is on disk.
        outbox.push(scrape(21_000));
        assert_eq!(outbox.len(), 1);
        let all = drain(&outbox).await;
        let want: Vec<(u32, i64)> = (1..=21).map(|n| (n, i64::from(n) * 1000)).collect();
        assert_eq!(all, want);
        // Acks reach the disk: acknowledged segments go.
        outbox.ack(seq(21, COMPLETE));
        settle_on(&outbox).await;
        assert!(drain(&outbox).await.is_empty());
        assert!(metrics.spool_segments.get() <= 1);
        thread.close().await;
    }

    #[tokio::test]
    async fn a_restart_sends_the_unacknowledged_scrapes_first_under_new_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, thread, _) = open(dir.path(), 1 << 20).await;
        for ts in 1..=5 {
            outbox.push(scrape(ts));
        }
        outbox.ack(seq(2, COMPLETE));
        outbox.ack(seq(3, 4));
        thread.close().await;
        drop(outbox);

        let (outbox, thread, _) = open(dir.path(), 1 << 20).await;
        let first = outbox.next_pending(0).await.unwrap();
        assert_eq!((first.number, first.acked_items), (1, 4));
        assert_eq!(first.scrape.timestamp_ms, 3);
        assert_eq!(outbox.push(scrape(6)), 4);
        assert_eq!(drain(&outbox).await, vec![(1, 3), (2, 4), (3, 5), (4, 6)]);
        thread.close().await;
    }

    #[tokio::test]
    async fn a_full_spool_reports_its_loss_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, thread, _) = open(dir.path(), 16 * 1024).await;
        for ts in 1..=200 {
            outbox.push(scrape(ts));
            if ts % 20 == 0 {
                settle_on(&outbox).await;
            }
        }
        settle_on(&outbox).await;
        let sent = outbox.take_losses(seq(1, COMPLETE));
        assert_eq!(sent.len(), 1);
        let lost = &sent[0];
        assert_eq!(lost.reason, super::super::REASON_FULL);
        assert_eq!(lost.from_ms, 1);
        // What is left starts right after what was lost.
        let left = drain(&outbox).await;
        assert_eq!(left[0].1, lost.to_ms + 1);
        assert_eq!(left.len() as u64 + lost.batches, 200);
        // A stream that failed before the ack: the loss goes again with the next one.
        assert!(outbox.take_losses(seq(2, COMPLETE)).is_empty());
        outbox.requeue_losses();
        assert_eq!(outbox.take_losses(seq(3, COMPLETE)), sent);
        // Acknowledged: forgotten, also by the checkpoint.
        outbox.ack(seq(3, COMPLETE));
        settle_on(&outbox).await;
        thread.close().await;
        drop(outbox);
        let (outbox, thread, _) = open(dir.path(), 16 * 1024).await;
        assert!(outbox.take_losses(seq(1, COMPLETE)).is_empty());
        thread.close().await;
    }

    #[tokio::test]
    async fn an_unreported_loss_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, thread, _) = open(dir.path(), 16 * 1024).await;
        for ts in 1..=200 {
            outbox.push(scrape(ts));
            if ts % 20 == 0 {
                settle_on(&outbox).await;
            }
        }
        thread.close().await;
        drop(outbox);
        let (outbox, thread, _) = open(dir.path(), 16 * 1024).await;
        let losses = outbox.take_losses(seq(1, COMPLETE));
        assert_eq!(losses.len(), 1);
        assert_eq!(losses[0].reason, super::super::REASON_FULL);
        thread.close().await;
    }
}
