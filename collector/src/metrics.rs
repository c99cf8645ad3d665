//! The collector's own metrics, served at `/metrics` on `metrics_listen`
//! (docs/metrics.md lists them), and its health at `/healthz`: healthy while sampling
//! rounds keep completing.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::outbox::Outbox;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    pub batches_sent: Counter,
    pub batches_acked: Counter,
    pub refused: Family<Labels, Counter>,
    pub oversized_items: Counter,
    labels_trimmed: Counter,
    trimmed_seen: AtomicI64,
    series_capped: Counter,
    exposition_dropped: Family<Labels, Counter>,
    /// What the source counters held at the last exposition, in the order of
    /// [`Metrics::source_counters`].
    sources_seen: [AtomicI64; 4],
    pub rounds: Counter,
    pub round_seconds: Histogram,
    pub targets: Gauge,
    pub connected: Gauge,
    scrapes_dropped: Counter,
    outbox_bytes: Gauge,
    outbox_scrapes: Gauge,
    outbox_oldest: Gauge<f64, std::sync::atomic::AtomicU64>,
    cert_expiry: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub spool_bytes: Gauge,
    pub spool_segments: Gauge,
    spool_dropped: Family<Labels, Counter>,
    pub spool_write_errors: Counter,
    outbox: std::sync::OnceLock<Arc<Outbox>>,
    dropped_seen: AtomicI64,
    last_round_ms: AtomicI64,
    stale_after: Duration,
}

impl Metrics {
    /// `stale_after`: how long without a completed sampling round makes the collector
    /// unhealthy.
    pub fn new(stale_after: Duration) -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            batches_sent: Counter::default(),
            batches_acked: Counter::default(),
            refused: Family::default(),
            oversized_items: Counter::default(),
            labels_trimmed: Counter::default(),
            series_capped: Counter::default(),
            exposition_dropped: Family::default(),
            sources_seen: Default::default(),
            rounds: Counter::default(),
            round_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            targets: Gauge::default(),
            connected: Gauge::default(),
            scrapes_dropped: Counter::default(),
            outbox_bytes: Gauge::default(),
            outbox_scrapes: Gauge::default(),
            outbox_oldest: Gauge::default(),
            cert_expiry: Family::default(),
            spool_bytes: Gauge::default(),
            spool_segments: Gauge::default(),
            spool_dropped: Family::default(),
            spool_write_errors: Counter::default(),
            outbox: std::sync::OnceLock::new(),
            dropped_seen: AtomicI64::new(0),
            trimmed_seen: AtomicI64::new(0),
            last_round_ms: AtomicI64::new(goroscope_proto::unix_ms()),
            stale_after,
        };
        let mut r = Registry::default();
        r.register(
            "goroscope_collector_batches_sent",
            "Batches sent to the aggregator",
            m.batches_sent.clone(),
        );
        r.register(
            "goroscope_collector_batches_acked",
            "Batches the aggregator acknowledged durable",
            m.batches_acked.clone(),
        );
        r.register(
            "goroscope_collector_refused_items",
            "Targets, series and sample runs the aggregator left out, by kind",
            m.refused.clone(),
        );
        r.register(
            "goroscope_collector_oversized_items",
            "Items left out because they exceed the aggregator's batch limit on their own",
            m.oversized_items.clone(),
        );
        r.register(
            "goroscope_collector_labels_trimmed",
            "Label values from processes cut to the longest a label may be",
            m.labels_trimmed.clone(),
        );
        r.register(
            "goroscope_collector_series_capped",
            "Series of processes' /metrics left out because a process exposed more than limits.max_series_per_target",
            m.series_capped.clone(),
        );
        r.register(
            "goroscope_collector_exposition_dropped",
            "Parts of processes' /metrics left out, by what: malformed lines, series with a bad name or too many labels, labels with a bad name",
            m.exposition_dropped.clone(),
        );
        r.register(
            "goroscope_collector_rounds",
            "Sampling rounds completed",
            m.rounds.clone(),
        );
        r.register(
            "goroscope_collector_round_duration_seconds",
            "Time one sampling round took",
            m.round_seconds.clone(),
        );
        r.register(
            "goroscope_collector_targets",
            "Go processes sampled in the latest round",
            m.targets.clone(),
        );
        r.register(
            "goroscope_collector_connected",
            "1 while a stream to the aggregator is open",
            m.connected.clone(),
        );
        r.register(
            "goroscope_collector_scrapes_dropped",
            "Scrapes dropped unsent (outbox full, or refused whole)",
            m.scrapes_dropped.clone(),
        );
        r.register(
            "goroscope_collector_outbox_bytes",
            "Estimated bytes of the scrapes waiting for an ack",
            m.outbox_bytes.clone(),
        );
        r.register(
            "goroscope_collector_outbox_scrapes",
            "Scrapes waiting for an ack",
            m.outbox_scrapes.clone(),
        );
        r.register(
            "goroscope_collector_outbox_oldest_age_seconds",
            "Age of the oldest scrape waiting for an ack",
            m.outbox_oldest.clone(),
        );
        r.register(
            "goroscope_collector_certificate_expiry_timestamp_seconds",
            "When a certificate in use expires, Unix seconds, by file (cert or ca)",
            m.cert_expiry.clone(),
        );
        let stacks = &crate::stacks::METRICS;
        r.register(
            "goroscope_collector_stack_reads",
            "Goroutine profiles read, by source (debug=1, debug=2, goroutineleak)",
            stacks.reads.clone(),
        );
        r.register(
            "goroscope_collector_stack_read_seconds",
            "Time targets spent answering goroutine profile requests, by source",
            stacks.read_seconds.clone(),
        );
        r.register(
            "goroscope_collector_stack_skips",
            "Goroutine profiles not read, by source and reason (budget, goroutines, failed)",
            stacks.skips.clone(),
        );
        r.register(
            "goroscope_collector_spool_bytes",
            "Bytes of the disk spool's segment files",
            m.spool_bytes.clone(),
        );
        r.register(
            "goroscope_collector_spool_segments",
            "Segment files in the disk spool",
            m.spool_segments.clone(),
        );
        r.register(
            "goroscope_collector_spool_records_dropped",
            "Unacknowledged spooled scrapes lost, by reason (spool_full, spool_corrupt)",
            m.spool_dropped.clone(),
        );
        r.register(
            "goroscope_collector_spool_write_errors",
            "Scrapes the spool failed to write (kept in memory only)",
            m.spool_write_errors.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The counters the `/metrics` source keeps, and the `what` label of each (`None`
    /// for the series cap, a metric of its own).
    fn source_counters() -> [(Option<&'static str>, &'static std::sync::atomic::AtomicU64); 4] {
        use crate::sources::prometheus as p;
        [
            (None, &p::SERIES_CAPPED),
            (Some("line"), &p::LINES_MALFORMED),
            (Some("series"), &p::SERIES_INVALID),
            (Some("label"), &p::LABELS_DROPPED),
        ]
    }

    pub fn watch_outbox(&self, outbox: Arc<Outbox>) {
        let _ = self.outbox.set(outbox);
    }

    pub fn refused(&self, kind: &str, n: u64) {
        self.refused
            .get_or_create(&vec![("kind", kind.to_owned())])
            .inc_by(n);
    }

    pub fn spool_dropped(&self, reason: &str, n: u64) {
        if n > 0 {
            self.spool_dropped
                .get_or_create(&vec![("reason", reason.to_owned())])
                .inc_by(n);
        }
    }

    pub fn round_done(&self, took: Duration, targets: usize) {
        self.rounds.inc();
        self.round_seconds.observe(took.as_secs_f64());
        self.targets.set(targets as i64);
        self.last_round_ms
            .store(goroscope_proto::unix_ms(), Ordering::Relaxed);
    }

    pub fn certificate_expires(&self, which: &'static str, unix_seconds: i64) {
        self.cert_expiry
            .get_or_create(&vec![("file", which.to_owned())])
            .set(unix_seconds as f64);
    }
}

impl goroscope_daemon::http::Exposition for Metrics {
    fn metrics(&self) -> String {
        if let Some(outbox) = self.outbox.get() {
            self.outbox_bytes.set(outbox.bytes() as i64);
            self.outbox_scrapes.set(outbox.len() as i64);
            self.outbox_oldest
                .set(outbox.oldest_age().map_or(0.0, |d| d.as_secs_f64()));
            let dropped = outbox.dropped() as i64;
            let seen = self.dropped_seen.swap(dropped, Ordering::Relaxed);
            if dropped > seen {
                self.scrapes_dropped.inc_by((dropped - seen) as u64);
            }
        }
        let trimmed = crate::model::LABELS_TRIMMED.load(Ordering::Relaxed) as i64;
        let seen = self.trimmed_seen.swap(trimmed, Ordering::Relaxed);
        if trimmed > seen {
            self.labels_trimmed.inc_by((trimmed - seen) as u64);
        }
        for (i, (what, source)) in Metrics::source_counters().into_iter().enumerate() {
            let now = source.load(Ordering::Relaxed) as i64;
            let seen = self.sources_seen[i].swap(now, Ordering::Relaxed);
            if now > seen {
                let n = (now - seen) as u64;
                match what {
                    None => self.series_capped.inc_by(n),
                    Some(what) => self
                        .exposition_dropped
                        .get_or_create(&vec![("what", what.to_owned())])
                        .inc_by(n),
                };
            }
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }

    fn health(&self) -> Result<(), String> {
        let age = goroscope_proto::unix_ms() - self.last_round_ms.load(Ordering::Relaxed);
        if age > self.stale_after.as_millis() as i64 {
            return Err(format!("no sampling round completed for {} s", age / 1000));
        }
        Ok(())
    }
}
