//! The exporter against the real thing: Debian's Prometheus 2.42 with its remote-write
//! receiver on loopback. Every sample must be stored exactly once with its value bit for
//! bit, through an outage (SIGKILL and restart), a restart of the exporter before its
//! acks persisted, and over mTLS.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use goroscope_remote_write::{
    Config, DropReason, Entry, FailReason, MemoryQueue, Pending, Queue, QueueError, spawn,
};
use util::{
    Certs, Prometheus, assert_stored_exactly, entries, eventually, fleet_series, free_port,
};

fn config(url: String) -> Config {
    Config {
        remote_write_url: Some(url),
        max_samples_per_send: 500,
        timeout: Duration::from_secs(5),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        poll_interval: Duration::from_millis(200),
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_arrives_once_with_its_value_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(dir.path(), free_port(), None).await;
    // 6 series x 600 samples over the last 40 minutes (the head accepts the last hour).
    let sent = fleet_series("goroscope_export_test", 6, 600, 4000);
    let queue = Arc::new(MemoryQueue::new(usize::MAX, 10_000));
    let exporter = spawn(&config(prometheus.write_url()), queue.clone()).unwrap();
    for entry in entries(&sent, 37) {
        queue.push(entry).unwrap();
        exporter.wake();
    }
    eventually("the queue to drain", Duration::from_secs(30), || {
        exporter.lag() == Pending::default()
    })
    .await;
    let stats = exporter.stats();
    assert_eq!(stats.samples_sent(), 3600);
    assert!(
        stats.requests_sent() >= 8,
        "{} requests of at most 500",
        stats.requests_sent()
    );
    assert_eq!(stats.retries(), 0);
    let stored = prometheus.raw_samples("goroscope_export_test").await;
    assert_stored_exactly(&stored, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut prometheus = Prometheus::start(dir.path(), port, None).await;
    let sent = fleet_series("goroscope_export_outage", 5, 800, 3000);
    let all = entries(&sent, 20); // 40 entries of 100 samples
    let (before, during) = all.split_at(24);
    let queue = Arc::new(MemoryQueue::new(usize::MAX, 10_000));
    let exporter = spawn(&config(prometheus.write_url()), queue.clone()).unwrap();
    for (i, entry) in before.iter().enumerate() {
        queue.push(entry.clone()).unwrap();
        exporter.wake();
        if i == 12 {
            // Partway: some delivered, some still queued or in flight.
            eventually("a first delivery", Duration::from_secs(10), || {
                queue.acked() >= 3
            })
            .await;
            prometheus.kill();
        }
    }
    let stats = exporter.stats().clone();
    eventually("failed requests", Duration::from_secs(10), || {
        stats.requests_failed(FailReason::Network) >= 3
    })
    .await;
    let acked = queue.acked();
    let lag = exporter.lag();
    assert!(lag.entries > 0, "nothing waits for delivery after the kill");
    for entry in during {
        queue.push(entry.clone()).unwrap();
        exporter.wake();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(queue.acked(), acked, "acked while the receiver was down");
    assert_eq!(
        exporter.lag().entries,
        lag.entries + during.len() as u64,
        "lag grows"
    );
    assert!(stats.retries() >= 3);
    let failures = stats.requests_failed(FailReason::Network);

    prometheus.restart().await;
    eventually("the queue to drain", Duration::from_secs(30), || {
        exporter.lag() == Pending::default()
    })
    .await;
    assert!(stats.requests_failed(FailReason::Network) >= failures);
    let stored = prometheus.raw_samples("goroscope_export_outage").await;
    assert_stored_exactly(&stored, &sent);
    // A request Prometheus stored before the kill but never answered is refused when
    // sent again (its samples are older than what the series holds): counted as
    // dropped, yet stored. Nothing else is dropped.
    assert!(
        stats.samples_dropped(DropReason::Refused) <= 500,
        "{} dropped",
        stats.samples_dropped(DropReason::Refused)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_reach_a_receiver_that_requires_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path());
    let prometheus = Prometheus::start(dir.path(), free_port(), Some(&certs)).await;
    let sent = fleet_series("goroscope_export_mtls", 3, 200, 5000);

    // The aggregator's certificate files, as a renewal tool would keep them; at first
    // holding a certificate of a CA the receiver does not trust.
    let cert = dir.path().join("aggregator.pem");
    let key = dir.path().join("aggregator-key.pem");
    std::fs::copy(&certs.rogue, &cert).unwrap();
    std::fs::copy(&certs.rogue_key, &key).unwrap();
    let queue = Arc::new(MemoryQueue::new(usize::MAX, 10_000));
    for entry in entries(&sent, 50) {
        queue.push(entry).unwrap();
    }
    let exporter = spawn(
        &Config {
            tls_ca: Some(certs.ca.clone()),
            tls_cert: Some(cert.clone()),
            tls_key: Some(key.clone()),
            ..config(prometheus.write_url())
        },
        queue.clone(),
    )
    .unwrap();
    eventually("refused handshakes", Duration::from_secs(10), || {
        exporter.stats().requests_failed(FailReason::Network) >= 2
    })
    .await;
    assert_eq!(queue.acked(), 0);
    assert_eq!(exporter.stats().samples_sent(), 0);

    // Renewed with a certificate of the receiver's CA: used from the next request on.
    std::fs::copy(&certs.client_key, &key).unwrap();
    std::fs::copy(&certs.client, &cert).unwrap();
    eventually("the queue to drain", Duration::from_secs(30), || {
        exporter.lag() == Pending::default()
    })
    .await;
    assert_eq!(exporter.stats().samples_sent(), 600);
    let stored = prometheus.raw_samples("goroscope_export_mtls").await;
    assert_stored_exactly(&stored, &sent);
}

/// A queue whose acks are lost while `forget` is set: an aggregator that stopped after
/// the receiver stored its requests but before the acks were written.
struct LosesAcks {
    inner: MemoryQueue,
    forget: AtomicBool,
}

impl Queue for LosesAcks {
    fn read(&self, after: u64, max: usize) -> Result<Vec<Entry>, QueueError> {
        self.inner.read(after, max)
    }
    fn ack(&self, through: u64) -> Result<(), QueueError> {
        if self.forget.load(Relaxed) {
            return Ok(());
        }
        self.inner.ack(through)
    }
    fn acked(&self) -> u64 {
        self.inner.acked()
    }
    fn pending(&self) -> Pending {
        self.inner.pending()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_before_the_acks_persisted_loses_no_new_sample() {
    let dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(dir.path(), free_port(), None).await;
    let sent = fleet_series("goroscope_export_restart", 4, 300, 5000);
    let all = entries(&sent, 10); // 30 entries of 40 samples
    let (first, later) = all.split_at(5);
    let queue = Arc::new(LosesAcks {
        inner: MemoryQueue::new(usize::MAX, 10_000),
        forget: AtomicBool::new(true),
    });
    for entry in first {
        queue.inner.push(entry.clone()).unwrap();
    }
    // 200 samples: one request, stored by Prometheus, its ack lost.
    let before = spawn(&config(prometheus.write_url()), queue.clone()).unwrap();
    eventually("delivery", Duration::from_secs(10), || {
        before.stats().samples_sent() == 200
    })
    .await;
    before.shutdown(Duration::from_secs(1)).await;
    assert_eq!(queue.acked(), 0);

    // The next start sends those entries again, now followed by new ones. Sent in one
    // request with them, the new samples would be refused with the repeated ones.
    queue.forget.store(false, Relaxed);
    for entry in later {
        queue.inner.push(entry.clone()).unwrap();
    }
    let after = spawn(&config(prometheus.write_url()), queue.clone()).unwrap();
    eventually("the queue to drain", Duration::from_secs(30), || {
        after.lag() == Pending::default()
    })
    .await;
    let stored = prometheus.raw_samples("goroscope_export_restart").await;
    assert_stored_exactly(&stored, &sent);
    assert_eq!(after.stats().samples_sent(), 1000);
    // The repeated entries, refused as out of order, though stored.
    assert_eq!(after.stats().samples_dropped(DropReason::Refused), 200);
}
