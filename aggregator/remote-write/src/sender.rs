//! The sender task: reads the queue after its cursor, packs up to
//! `max_samples_per_send` samples into a request, sends it and acks on a 2xx answer.
//! What may succeed later (no answer, a timeout, 5xx, 429, 401/403/404/408) is sent
//! again, unchanged, after a backoff, for as long as it takes: nothing is acked, so
//! nothing is lost while the receiver is down. A permanent refusal (any other 4xx) of
//! a request holding several queue entries sends those entries again one per request,
//! so that one bad entry (or one the receiver already stored, as after a request whose
//! answer was lost) costs only itself; a refused single entry is logged, counted as
//! dropped, and acked past. One request is in flight at a time, so each series reaches
//! the receiver in timestamp order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::client::{Client, SendError};
use crate::config::{Config, ConfigError};
use crate::prompb::{self, Label, METRIC_NAME, TimeSeries, WriteRequest};
use crate::queue::{Entry, Pending, Queue};
use crate::stats::{DropReason, Stats};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("export.remote_write_url is not set")]
    Disabled,
    #[error("the remote-write exporter needs a tokio runtime")]
    NoRuntime,
}

/// The running exporter. Dropping it stops the sender at once, abandoning the request
/// in flight (it stays in the queue and is sent again by the next sender);
/// [`Exporter::shutdown`] lets it finish first.
pub struct Exporter {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

struct Shared {
    queue: Arc<dyn Queue>,
    stats: Arc<Stats>,
    wake: Notify,
    /// How long a request in flight at shutdown may still take, in milliseconds.
    grace_ms: AtomicU64,
}

/// Starts the sender on the current tokio runtime, resuming after `queue.acked()`.
/// Reads the TLS files now (synchronously): call at startup.
pub fn spawn(config: &Config, queue: Arc<dyn Queue>) -> Result<Exporter, Error> {
    if !config.enabled() {
        return Err(Error::Disabled);
    }
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
    let client = Client::new(config)?;
    let shared = Arc::new(Shared {
        queue,
        stats: Arc::new(Stats::default()),
        wake: Notify::new(),
        grace_ms: AtomicU64::new(0),
    });
    let cancel = CancellationToken::new();
    let sender = Sender {
        client,
        shared: shared.clone(),
        max_samples: config.max_samples_per_send.max(1),
        poll_interval: config.poll_interval,
        backoff: Backoff::new(config.min_backoff, config.max_backoff),
        cancel: cancel.clone(),
        recovering: true,
    };
    tracing::info!(
        url = sender.client.url(),
        "exporting samples over Prometheus remote-write"
    );
    let task = runtime.spawn(sender.run());
    Ok(Exporter {
        shared,
        cancel,
        task: Some(task),
    })
}

impl Exporter {
    /// Announces new entries in the queue; the sender otherwise finds them at its next
    /// poll. Cheap; never blocks.
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// [`Exporter::wake`] as a function another thread can keep (the queue's writer
    /// calls it after each append).
    pub fn waker(&self) -> impl Fn() + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || shared.wake.notify_one()
    }

    /// What was written to the queue and not delivered yet: the aggregator slows
    /// ingest when this is over its bound.
    pub fn lag(&self) -> Pending {
        self.shared.queue.pending()
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.shared.stats
    }

    /// Stops the sender, letting a request in flight finish for up to `grace` (acked
    /// if it succeeds, left in the queue otherwise), and waits for it to stop.
    pub async fn shutdown(mut self, grace: Duration) {
        self.shared
            .grace_ms
            .store(grace.as_millis().min(u64::MAX as u128) as u64, Relaxed);
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            // The sender stops within `grace` plus an ack; a queue stuck in I/O is not
            // waited for beyond that.
            let _ = tokio::time::timeout(grace + Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct Sender {
    client: Client,
    shared: Arc<Shared>,
    max_samples: usize,
    poll_interval: Duration,
    backoff: Backoff,
    cancel: CancellationToken,
    /// Until the first request accepted after the start, and after a refused request
    /// of several entries, each entry goes in a request of its own. The previous
    /// sender may have stopped after the receiver stored a request but before the ack
    /// persisted; those entries come again, and a strict receiver (Prometheus) refuses
    /// a whole request for one repeated sample as out of order (and stores none of
    /// it). Alone, a repeated entry costs only itself: refused, yet already stored.
    recovering: bool,
}

/// One request's worth of the queue: its series, and the last entry it completes
/// (acked once it is delivered; `None` when it holds only part of an entry).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Batch {
    pub series: Vec<TimeSeries>,
    pub samples: usize,
    pub through: Option<u64>,
    /// How many queue entries it holds (whole or in part).
    pub entries: usize,
}

/// Whether the sender goes on.
enum Flow {
    Continue,
    Stop,
    /// The receiver refused a request of several entries for good: send them again
    /// one per request.
    Split,
}

impl Sender {
    async fn run(mut self) {
        let mut cursor = self.shared.queue.acked();
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            let entries = match self.read(cursor).await {
                // Only what is after the cursor, in order, whatever the queue returned:
                // the cursor never moves back.
                Ok(mut entries) => {
                    let mut last = cursor;
                    entries.retain(|e| {
                        let keep = e.id > last;
                        last = last.max(e.id);
                        keep
                    });
                    entries
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the export queue failed");
                    if let Flow::Stop = self.sleep(self.poll_interval).await {
                        return;
                    }
                    continue;
                }
            };
            if entries.is_empty() {
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    _ = self.shared.wake.notified() => {}
                    _ = tokio::time::sleep(self.poll_interval) => {}
                }
                continue;
            }
            let (batches, invalid) = pack(entries, self.max_samples, self.recovering);
            if invalid > 0 {
                self.shared
                    .stats
                    .dropped(DropReason::InvalidLabels, invalid);
            }
            for batch in batches {
                let through = batch.through;
                match self.deliver(batch).await {
                    Flow::Continue => {}
                    Flow::Stop => return,
                    // Read again from the cursor, which has not moved past the refused
                    // request: its entries come back, each in a request of its own.
                    Flow::Split => {
                        self.recovering = true;
                        break;
                    }
                }
                if let Some(through) = through {
                    self.ack(through).await;
                    cursor = through;
                }
            }
        }
    }

    async fn read(&self, after: u64) -> Result<Vec<Entry>, String> {
        let queue = self.shared.queue.clone();
        let max = self.max_samples;
        tokio::task::spawn_blocking(move || queue.read(after, max))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// A failed ack leaves the entries in the queue (sent again after a restart) but
    /// the cursor moves on: the next ack covers them.
    async fn ack(&self, through: u64) {
        let queue = self.shared.queue.clone();
        let result = tokio::task::spawn_blocking(move || queue.ack(through)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(through, error = %e, "acking the export queue failed"),
            Err(e) => tracing::warn!(through, error = %e, "acking the export queue failed"),
        }
    }

    /// Sends `batch` until it is accepted or refused for good; `Stop` on shutdown.
    async fn deliver(&mut self, batch: Batch) -> Flow {
        if batch.series.is_empty() {
            return Flow::Continue;
        }
        let body = prompb::encode(&WriteRequest {
            timeseries: batch.series,
        });
        let mut failures = 0u64;
        loop {
            let result = {
                let mut send = std::pin::pin!(self.client.send(body.clone()));
                tokio::select! {
                    result = &mut send => result,
                    _ = self.cancel.cancelled() => {
                        let grace = Duration::from_millis(self.shared.grace_ms.load(Relaxed));
                        if let Ok(Ok(())) = tokio::time::timeout(grace, &mut send).await {
                            self.shared.stats.sent(batch.samples);
                            if let Some(through) = batch.through {
                                self.ack(through).await;
                            }
                        }
                        return Flow::Stop;
                    }
                }
            };
            let e = match result {
                Ok(()) => {
                    self.shared.stats.sent(batch.samples);
                    self.backoff.reset();
                    self.recovering = false;
                    if failures > 0 {
                        tracing::info!(
                            url = self.client.url(),
                            failures,
                            "remote-write receiver accepts samples again"
                        );
                    }
                    return Flow::Continue;
                }
                Err(e) => e,
            };
            self.shared.stats.failed(e.reason);
            if !e.reason.retried() && batch.entries > 1 {
                tracing::info!(
                    url = %e.url,
                    status = e.status.map(|s| s.as_u16()),
                    entries = batch.entries,
                    error = %e.detail,
                    "remote-write receiver refused a request; sending its queue entries one per request"
                );
                self.backoff.reset();
                return Flow::Split;
            }
            if !e.reason.retried() {
                self.refused(&batch_summary(batch.samples, batch.through), &e);
                self.shared
                    .stats
                    .dropped(DropReason::Refused, batch.samples);
                self.backoff.reset();
                return Flow::Continue;
            }
            let wait = self.backoff.next(e.retry_after);
            // Warned at the first failure, then every 20th (about every ten minutes at
            // the longest backoff), so that a long outage stays visible but quiet.
            if failures.is_multiple_of(20) {
                tracing::warn!(
                    url = %e.url,
                    reason = e.reason.as_str(),
                    samples = batch.samples,
                    failures = failures + 1,
                    retry_in = %humantime::format_duration(round_ms(wait)),
                    error = %e.detail,
                    "remote-write request failed, sending it again until it is accepted"
                );
            } else {
                tracing::debug!(
                    url = %e.url,
                    reason = e.reason.as_str(),
                    failures,
                    retry_in = %humantime::format_duration(round_ms(wait)),
                    error = %e.detail,
                    "remote-write request failed again"
                );
            }
            failures += 1;
            if let Flow::Stop = self.sleep(wait).await {
                return Flow::Stop;
            }
            self.shared.stats.retry();
        }
    }

    fn refused(&self, what: &str, e: &SendError) {
        tracing::warn!(
            url = %e.url,
            status = e.status.map(|s| s.as_u16()),
            what,
            error = %e.detail,
            "remote-write receiver refused the samples, dropping them"
        );
    }

    async fn sleep(&self, wait: Duration) -> Flow {
        tokio::select! {
            _ = self.cancel.cancelled() => Flow::Stop,
            _ = tokio::time::sleep(wait) => Flow::Continue,
        }
    }
}

fn batch_summary(samples: usize, through: Option<u64>) -> String {
    match through {
        Some(id) => format!("{samples} samples through queue entry {id}"),
        None => format!("{samples} samples"),
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Splits `entries` into requests of at most `max_samples` samples, normalising each
/// series on the way; returns the requests and the samples of series left out for
/// their labels.
///
/// An entry goes whole into one request when it fits; one larger than `max_samples`
/// starts a request of its own and is cut every `max_samples` samples from its start.
/// Requests thus begin where entries (or those fixed cuts) begin, whichever read they
/// came from, so that after a restart the entries a receiver may already hold can be
/// sent again without sharing a request with new ones (`one_entry_each`, see
/// [`Sender::recovering`]).
pub(crate) fn pack(
    entries: Vec<Entry>,
    max_samples: usize,
    one_entry_each: bool,
) -> (Vec<Batch>, usize) {
    let mut batches = Vec::new();
    let mut current = Batch::default();
    let mut invalid = 0;
    for entry in entries {
        let mut series = Vec::with_capacity(entry.series.len());
        for s in entry.series {
            match normalize(s.labels) {
                Some(labels) => series.push((labels, s.samples)),
                None => invalid += s.samples.len(),
            }
        }
        let size: usize = series.iter().map(|(_, samples)| samples.len()).sum();
        if !current.series.is_empty() && current.samples + size > max_samples {
            batches.push(std::mem::take(&mut current));
        }
        current.entries += 1;
        for (labels, samples) in series {
            let mut samples = samples.as_slice();
            while !samples.is_empty() {
                if current.samples == max_samples {
                    batches.push(std::mem::take(&mut current));
                    current.entries = 1;
                }
                let take = samples.len().min(max_samples - current.samples);
                current.series.push(TimeSeries {
                    labels: labels.clone(),
                    samples: samples[..take].to_vec(),
                });
                current.samples += take;
                samples = &samples[take..];
            }
        }
        current.through = Some(entry.id);
        if one_entry_each {
            batches.push(std::mem::take(&mut current));
        }
    }
    if current.through.is_some() || !current.series.is_empty() {
        batches.push(current);
    }
    (batches, invalid)
}

/// The labels as receivers expect them: empty values left out (Prometheus treats them
/// as absent), sorted by name; `None` when a receiver would refuse the series (and,
/// with Prometheus, the whole request with it).
pub(crate) fn normalize(mut labels: Vec<Label>) -> Option<Vec<Label>> {
    labels.retain(|l| !l.value.is_empty());
    labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    if labels.windows(2).any(|w| w[0].name == w[1].name) {
        return None;
    }
    let name = labels.iter().find(|l| l.name == METRIC_NAME)?;
    if !valid_metric_name(&name.value) || !labels.iter().all(|l| valid_label_name(&l.name)) {
        return None;
    }
    Some(labels)
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

#[cfg(test)]
mod tests;
