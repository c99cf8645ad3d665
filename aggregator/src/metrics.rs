//! The aggregator's own metrics, served at `/metrics` on `metrics_listen`
//! (docs/metrics.md lists them), and its health at `/healthz`.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::detect::engine::DetectorStats;
use crate::storage::Storage;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    batches_received: Counter,
    ack_latency: Histogram,
    refusals: Family<Labels, Counter>,
    refused_items: Counter,
    refused_samples: Counter,
    streams: Gauge,
    connections: Family<Labels, Gauge>,
    handshake_failures: Family<Labels, Counter>,
    queue_depth: Gauge,
    targets: Gauge,
    series: Gauge,
    cert_expiry: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    collector_losses: Family<Labels, Counter>,
    collector_lost_bytes: Family<Labels, Counter>,
    stack_summaries: Family<Labels, Counter>,
    notifications: Family<Labels, Counter>,
    /// Set once the storage writer stopped on its own.
    writer_failed: std::sync::Mutex<Option<String>>,
    storage: std::sync::OnceLock<Storage>,
    detector_feeds: Family<Labels, Counter>,
    detector_evaluations: Counter,
    open_anomalies: Gauge,
    open_incidents: Gauge,
    detector_targets: Gauge,
    /// The detector's counters, and what of them was already added to ours.
    detector: std::sync::OnceLock<std::sync::Arc<DetectorStats>>,
    detector_seen: std::sync::Mutex<[u64; 3]>,
    head_bytes: Gauge,
    samples_stored: Gauge,
    disk_bytes: Gauge,
    export: Export,
}

/// The remote-write exporters' counters, read when scraped.
#[derive(Default)]
struct Export {
    sent: Counter,
    dropped: Family<Labels, Counter>,
    failed: Family<Labels, Counter>,
    retries: Counter,
    pending_samples: Gauge,
    pending_entries: Gauge,
    queue_bytes: Gauge,
    last_success: Gauge,
    sources: std::sync::OnceLock<Vec<ExportSource>>,
    /// What of each exporter's counters was already added: sent, retries, then the drop
    /// reasons and the failure reasons.
    seen: std::sync::Mutex<Vec<Vec<u64>>>,
}

/// One exporter: its counters and its queue.
pub struct ExportSource {
    pub stats: std::sync::Arc<goroscope_remote_write::Stats>,
    pub queue: std::sync::Arc<crate::storage::ExportQueue>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            batches_received: Counter::default(),
            ack_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            refusals: Family::default(),
            refused_items: Counter::default(),
            refused_samples: Counter::default(),
            streams: Gauge::default(),
            connections: Family::default(),
            handshake_failures: Family::default(),
            queue_depth: Gauge::default(),
            targets: Gauge::default(),
            series: Gauge::default(),
            cert_expiry: Family::default(),
            collector_losses: Family::default(),
            collector_lost_bytes: Family::default(),
            stack_summaries: Family::default(),
            notifications: Family::default(),
            writer_failed: std::sync::Mutex::new(None),
            storage: std::sync::OnceLock::new(),
            detector_feeds: Family::default(),
            detector_evaluations: Counter::default(),
            open_anomalies: Gauge::default(),
            open_incidents: Gauge::default(),
            detector_targets: Gauge::default(),
            detector: std::sync::OnceLock::new(),
            detector_seen: std::sync::Mutex::new([0; 3]),
            head_bytes: Gauge::default(),
            samples_stored: Gauge::default(),
            disk_bytes: Gauge::default(),
            export: Export::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "goroscope_aggregator_batches_received",
            "Collector batches received",
            m.batches_received.clone(),
        );
        r.register(
            "goroscope_aggregator_ack_latency_seconds",
            "Time from receiving a batch to acknowledging it durable",
            m.ack_latency.clone(),
        );
        r.register(
            "goroscope_aggregator_refusals",
            "Requests and streams refused, by service and gRPC code",
            m.refusals.clone(),
        );
        r.register(
            "goroscope_aggregator_refused_items",
            "Targets, series and sample runs left out of batches (listed in their acks)",
            m.refused_items.clone(),
        );
        r.register(
            "goroscope_aggregator_refused_samples",
            "Samples left out of batches (timestamps outside the window, undeclared series)",
            m.refused_samples.clone(),
        );
        r.register(
            "goroscope_aggregator_ingest_streams",
            "Open collector streams",
            m.streams.clone(),
        );
        r.register(
            "goroscope_aggregator_connections",
            "Open TLS connections, by the role of the client certificate (none without one)",
            m.connections.clone(),
        );
        r.register(
            "goroscope_aggregator_tls_handshake_failures",
            "Failed or timed-out TLS handshakes, by reason",
            m.handshake_failures.clone(),
        );
        r.register(
            "goroscope_aggregator_writer_queue_depth",
            "Batches waiting for the storage writer",
            m.queue_depth.clone(),
        );
        r.register(
            "goroscope_aggregator_targets",
            "Targets in the index",
            m.targets.clone(),
        );
        r.register(
            "goroscope_aggregator_series",
            "Series in the index",
            m.series.clone(),
        );
        r.register(
            "goroscope_aggregator_certificate_expiry_timestamp_seconds",
            "When a certificate in use expires, Unix seconds, by file (cert or ca)",
            m.cert_expiry.clone(),
        );
        r.register(
            "goroscope_aggregator_collector_lost_batches",
            "Batches collectors reported lost before sending them, by reason (spool_full, spool_corrupt, outbox_full, oversized, other)",
            m.collector_losses.clone(),
        );
        r.register(
            "goroscope_aggregator_collector_lost_bytes",
            "Encoded bytes collectors reported lost before sending them, by reason",
            m.collector_lost_bytes.clone(),
        );
        r.register(
            "goroscope_aggregator_stack_summaries",
            "Goroutine stack summaries received, by source (debug=1, debug=2, goroutineleak) and outcome (read, skipped)",
            m.stack_summaries.clone(),
        );
        r.register(
            "goroscope_aggregator_detector_feeds",
            "Stored batches handed to the detectors, by outcome (queued, or dropped when the detectors were behind)",
            m.detector_feeds.clone(),
        );
        r.register(
            "goroscope_aggregator_detector_evaluations",
            "Evaluations of a target's detectors",
            m.detector_evaluations.clone(),
        );
        r.register(
            "goroscope_aggregator_open_anomalies",
            "Anomalies open now",
            m.open_anomalies.clone(),
        );
        r.register(
            "goroscope_aggregator_open_incidents",
            "Incidents open now",
            m.open_incidents.clone(),
        );
        r.register(
            "goroscope_aggregator_detector_targets",
            "Targets the detectors keep windows for",
            m.detector_targets.clone(),
        );
        r.register(
            "goroscope_aggregator_notifications",
            "Incident notifications, by sink (webhook, alertmanager) and result (sent, failed, dropped)",
            m.notifications.clone(),
        );
        r.register(
            "goroscope_aggregator_head_bytes",
            "Memory the storage head (samples not yet compacted) holds, estimated",
            m.head_bytes.clone(),
        );
        r.register(
            "goroscope_aggregator_samples_stored",
            "Samples stored: compacted into chunks plus those in the head",
            m.samples_stored.clone(),
        );
        r.register(
            "goroscope_aggregator_disk_bytes",
            "Bytes of the database's files on disk",
            m.disk_bytes.clone(),
        );
        let e = &m.export;
        r.register(
            "goroscope_export_samples_sent",
            "Samples the remote-write receiver accepted",
            e.sent.clone(),
        );
        r.register(
            "goroscope_export_samples_dropped",
            "Samples given up on, by reason (refused, invalid_labels)",
            e.dropped.clone(),
        );
        r.register(
            "goroscope_export_requests_failed",
            "Failed remote-write requests, retried or not, by reason",
            e.failed.clone(),
        );
        r.register(
            "goroscope_export_retries",
            "Remote-write requests sent again after a failure",
            e.retries.clone(),
        );
        r.register(
            "goroscope_export_pending_samples",
            "Samples queued for export, not delivered yet",
            e.pending_samples.clone(),
        );
        r.register(
            "goroscope_export_pending_entries",
            "Queue entries (group commits) not delivered yet",
            e.pending_entries.clone(),
        );
        r.register(
            "goroscope_export_queue_bytes",
            "Bytes the export queue holds",
            e.queue_bytes.clone(),
        );
        r.register(
            "goroscope_export_last_success_timestamp_seconds",
            "When a remote-write request last succeeded, Unix seconds",
            e.last_success.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Gives the metrics the exporters whose counters they report.
    pub fn watch_exporters(&self, sources: Vec<ExportSource>) {
        let _ = self.export.sources.set(sources);
    }

    fn read_export(&self) {
        use goroscope_remote_write::Queue;
        use goroscope_remote_write::stats::{DropReason, FailReason};
        let e = &self.export;
        let Some(sources) = e.sources.get() else {
            return;
        };
        let mut seen = e.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.resize(sources.len(), Vec::new());
        let (mut pending_samples, mut pending_entries, mut bytes, mut last) = (0, 0, 0, 0);
        for (src, seen) in sources.iter().zip(seen.iter_mut()) {
            let s = &src.stats;
            let mut now = vec![s.samples_sent(), s.retries()];
            now.extend(DropReason::ALL.iter().map(|r| s.samples_dropped(*r)));
            now.extend(FailReason::ALL.iter().map(|r| s.requests_failed(*r)));
            seen.resize(now.len(), 0);
            let delta: Vec<u64> = now
                .iter()
                .zip(seen.iter())
                .map(|(n, o)| n.saturating_sub(*o))
                .collect();
            e.sent.inc_by(delta[0]);
            e.retries.inc_by(delta[1]);
            for (i, r) in DropReason::ALL.iter().enumerate() {
                e.dropped
                    .get_or_create(&vec![("reason", r.as_str().to_owned())])
                    .inc_by(delta[2 + i]);
            }
            let base = 2 + DropReason::ALL.len();
            for (i, r) in FailReason::ALL.iter().enumerate() {
                e.failed
                    .get_or_create(&vec![("reason", r.as_str().to_owned())])
                    .inc_by(delta[base + i]);
            }
            *seen = now;
            let p = src.queue.pending();
            pending_samples += p.samples;
            pending_entries += p.entries;
            bytes += src.queue.bytes();
            last = last.max(s.last_success_unix_ms().unwrap_or(0));
        }
        e.pending_samples.set(pending_samples as i64);
        e.pending_entries.set(pending_entries as i64);
        e.queue_bytes.set(bytes as i64);
        e.last_success.set((last / 1000) as i64);
    }

    /// Gives the metrics the detector whose counters they report.
    pub fn watch_detector(&self, stats: std::sync::Arc<DetectorStats>) {
        let _ = self.detector.set(stats);
    }

    fn read_detector(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(d) = self.detector.get() else {
            return;
        };
        let now = [
            d.fed.load(Relaxed),
            d.dropped.load(Relaxed),
            d.evaluations.load(Relaxed),
        ];
        let mut seen = self.detector_seen.lock().unwrap_or_else(|e| e.into_inner());
        let delta = |i: usize| now[i].saturating_sub(seen[i]);
        self.detector_feeds
            .get_or_create(&vec![("outcome", "queued".to_owned())])
            .inc_by(delta(0));
        self.detector_feeds
            .get_or_create(&vec![("outcome", "dropped".to_owned())])
            .inc_by(delta(1));
        self.detector_evaluations.inc_by(delta(2));
        *seen = now;
        self.open_anomalies
            .set(d.open_anomalies.load(Relaxed) as i64);
        self.open_incidents
            .set(d.open_incidents.load(Relaxed) as i64);
        self.detector_targets.set(d.targets.load(Relaxed) as i64);
    }

    /// Gives the metrics the storage whose queue and sizes they report.
    pub fn watch_storage(&self, storage: Storage) {
        let _ = self.storage.set(storage);
    }

    pub fn batch_received(&self) {
        self.batches_received.inc();
    }

    pub fn batch_acked(&self, latency: Duration) {
        self.ack_latency.observe(latency.as_secs_f64());
    }

    pub fn refused(&self, service: &'static str, code: tonic::Code) {
        self.refusals
            .get_or_create(&vec![
                ("service", service.to_owned()),
                ("code", goroscope_daemon::code_name(code).replace(' ', "_")),
            ])
            .inc();
    }

    pub fn items_refused(&self, items: u64, samples: u64) {
        self.refused_items.inc_by(items);
        self.refused_samples.inc_by(samples);
    }

    /// Counts an open stream until the guard is dropped.
    pub fn stream_opened(&self) -> GaugeGuard {
        self.streams.inc();
        GaugeGuard(self.streams.clone())
    }

    /// Counts an open connection of `role` ("collector", "operator", "none", ...) until
    /// the guard is dropped.
    pub fn connection_opened(&self, role: &str) -> GaugeGuard {
        let g = self
            .connections
            .get_or_create(&vec![("role", role.to_owned())])
            .clone();
        g.inc();
        GaugeGuard(g)
    }

    pub fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    pub fn certificate_expires(&self, which: &'static str, unix_seconds: i64) {
        self.cert_expiry
            .get_or_create(&vec![("file", which.to_owned())])
            .set(unix_seconds as f64);
    }

    /// A loss a collector reported; `reason` is one of a known few, or "other".
    pub fn collector_lost(&self, reason: &str, batches: u64, bytes: u64) {
        let reason = if crate::storage::LOSS_REASONS.contains(&reason) {
            reason
        } else {
            "other"
        };
        let labels = vec![("reason", reason.to_owned())];
        self.collector_losses.get_or_create(&labels).inc_by(batches);
        self.collector_lost_bytes
            .get_or_create(&labels)
            .inc_by(bytes);
    }

    pub fn stack_summary(&self, source: &str, skipped: bool) {
        let source = match source {
            "debug=1" | "debug=2" | "goroutineleak" => source,
            _ => "other",
        };
        let outcome = if skipped { "skipped" } else { "read" };
        self.stack_summaries
            .get_or_create(&vec![
                ("source", source.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// One notification to `sink` ("webhook", "alertmanager"): "sent", "failed" (given
    /// up after its attempts) or "dropped" (its queue was full).
    pub fn notification(&self, sink: &'static str, result: &'static str) {
        self.notifications
            .get_or_create(&vec![
                ("sink", sink.to_owned()),
                ("result", result.to_owned()),
            ])
            .inc();
    }

    pub fn writer_failed(&self, reason: String) {
        *self.writer_failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }
}

/// Holds one count of a gauge; gives it back when dropped.
pub struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl goroscope_daemon::http::Exposition for Metrics {
    fn metrics(&self) -> String {
        if let Some(storage) = self.storage.get() {
            self.queue_depth.set(storage.queue_depth() as i64);
            let (targets, series) = storage.sizes();
            self.targets.set(targets as i64);
            self.series.set(series as i64);
            let (head, disk) = storage.usage();
            self.head_bytes.set(head as i64);
            self.disk_bytes.set(disk as i64);
            let (compacted, in_head) = storage.samples_stored();
            self.samples_stored.set((compacted + in_head) as i64);
        }
        self.read_detector();
        self.read_export();
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }

    fn health(&self) -> Result<(), String> {
        match &*self.writer_failed.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(reason) => Err(format!("storage writer stopped: {reason}")),
            None => Ok(()),
        }
    }
}
