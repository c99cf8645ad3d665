use std::time::Instant;

use super::*;
use crate::client::{MAX_RESPONSE_BYTES, USER_AGENT_VALUE};
use crate::prompb::Sample;
use crate::queue::MemoryQueue;
use crate::stats::FailReason;
use crate::testserver::{Reply, Server};

fn config(url: String) -> Config {
    Config {
        remote_write_url: Some(url),
        max_samples_per_send: 10,
        timeout: Duration::from_secs(2),
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        poll_interval: Duration::from_millis(50),
        ..Config::default()
    }
}

/// Polling the queue once an hour: the sender reads it when woken.
fn hourly(url: String) -> Config {
    Config {
        poll_interval: Duration::from_secs(3600),
        ..config(url)
    }
}

fn series(name: &str, start: i64, n: usize) -> TimeSeries {
    TimeSeries {
        labels: vec![Label::new("job", "api"), Label::new(METRIC_NAME, name)],
        samples: (0..n)
            .map(|i| Sample {
                value: (start + i as i64) as f64 * 0.5,
                timestamp: start + i as i64,
            })
            .collect(),
    }
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every sample the server accepted, as (metric, timestamp, value bits), in order.
fn accepted_samples(server: &Server) -> Vec<(String, i64, u64)> {
    let mut out = Vec::new();
    for request in server.accepted() {
        for ts in request.timeseries {
            let name = ts
                .labels
                .iter()
                .find(|l| l.name == METRIC_NAME)
                .unwrap()
                .value
                .clone();
            for s in ts.samples {
                out.push((name.clone(), s.timestamp, s.value.to_bits()));
            }
        }
    }
    out
}

fn expected_samples(all: &[TimeSeries]) -> Vec<(String, i64, u64)> {
    let mut out = Vec::new();
    for ts in all {
        let name = ts
            .labels
            .iter()
            .find(|l| l.name == METRIC_NAME)
            .unwrap()
            .value
            .clone();
        for s in &ts.samples {
            out.push((name.clone(), s.timestamp, s.value.to_bits()));
        }
    }
    out
}

#[tokio::test]
async fn delivers_every_entry_in_order_in_requests_of_at_most_max_samples() {
    let server = Server::start(vec![]).await;
    let queue = Arc::new(MemoryQueue::new(usize::MAX, 1000));
    let mut all = Vec::new();
    for (i, n) in [3usize, 25, 1, 10, 7].into_iter().enumerate() {
        let s = series(&format!("m{i}"), 1000 * i as i64, n);
        all.push(s.clone());
        queue.push(vec![s]).unwrap();
    }
    let exporter = spawn(&config(server.url()), queue.clone()).unwrap();
    exporter.wake();
    eventually("the queue to drain", || {
        exporter.lag() == Pending::default()
    })
    .await;
    assert_eq!(queue.acked(), 5);
    assert_eq!(accepted_samples(&server), expected_samples(&all));
    for r in server.received() {
        let samples: usize = r
            .request
            .as_ref()
            .unwrap()
            .timeseries
            .iter()
            .map(|t| t.samples.len())
            .sum();
        assert!(samples <= 10, "{samples} samples in one request");
        assert_eq!(r.headers["content-encoding"], "snappy");
        assert_eq!(r.headers["content-type"], "application/x-protobuf");
        assert_eq!(r.headers["x-prometheus-remote-write-version"], "0.1.0");
        assert_eq!(r.headers["user-agent"], USER_AGENT_VALUE);
        assert!(USER_AGENT_VALUE.starts_with("goroscope"));
        assert!(r.headers.get("authorization").is_none());
        for ts in &r.request.as_ref().unwrap().timeseries {
            assert_eq!(ts.labels[0].name, "__name__", "labels sorted by name");
            assert_eq!(ts.labels[1].name, "job");
        }
    }
    assert_eq!(exporter.stats().samples_sent(), 46);
    // One entry a request until the first success, then one read at a time, whole
    // entries: [3] | [25] as 10+10+5 | [1] | [10] | [7].
    assert_eq!(exporter.stats().requests_sent(), 7);
    assert!(exporter.stats().last_success_unix_ms().is_some());

    // New entries are sent as they are announced.
    queue.push(vec![series("late", 99_000, 4)]).unwrap();
    exporter.wake();
    eventually("the late entry", || queue.acked() == 6).await;
    assert_eq!(exporter.stats().samples_sent(), 50);
}

#[tokio::test]
async fn retries_5xx_429_and_retryable_4xx_with_the_same_body_and_acks_only_after_success() {
    let server = Server::start(vec![
        Reply::status(503).body("ingester unavailable"),
        Reply::status(500),
        Reply::status(429).header("retry-after", "1"),
        Reply::status(401),
        Reply::status(408),
    ])
    .await;
    let queue = Arc::new(MemoryQueue::new(usize::MAX, 100));
    queue.push(vec![series("m", 0, 5)]).unwrap();
    let started = Instant::now();
    let exporter = spawn(&config(server.url()), queue.clone()).unwrap();
    eventually("the 429 to be answered", || server.received().len() >= 3).await;
    assert_eq!(queue.acked(), 0, "acked before the receiver accepted");
    assert_eq!(
        exporter.lag(),
        Pending {
            entries: 1,
            samples: 5
        }
    );
    eventually("delivery", || queue.acked() == 1).await;
    // The 429 asked for a second; backoff alone would have waited far less.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let received = server.received();
    assert_eq!(received.len(), 6);
    assert!(
        received.windows(2).all(|w| w[0].body == w[1].body),
        "the same request each time"
    );
    let stats = exporter.stats();
    assert_eq!(stats.requests_failed(FailReason::Status5xx), 2);
    assert_eq!(stats.requests_failed(FailReason::Status429), 1);
    assert_eq!(stats.requests_failed(FailReason::Status4xxRetried), 2);
    assert_eq!(stats.retries(), 5);
    assert_eq!(stats.samples_sent(), 5);
    assert_eq!(stats.samples_dropped(DropReason::Refused), 0);
}

#[tokio::test]
async fn a_permanent_refusal_drops_that_request_only_and_moves_on() {
    let server = Server::start(vec![
        Reply::status(200),
        Reply::status(400).body("out of order sample"),
    ])
    .await;
    let queue = Arc::new(MemoryQueue::new(usize::MAX, 100));
    let a = series("a", 0, 10);
    let b = series("b", 0, 10);
    let c = series("c", 0, 10);
    for s in [&a, &b, &c] {
        queue.push(vec![s.clone()]).unwrap();
    }
    let exporter = spawn(&config(server.url()), queue.clone()).unwrap();
    eventually("the queue to drain", || {
        exporter.lag() == Pending::default()
    })
    .await;
    assert_eq!(queue.acked(), 3);
    assert_eq!(
        server.received().len(),
        3,
        "the refused request is not sent again"
    );
    assert_eq!(accepted_samples(&server), expected_samples(&[a, c]));
    let stats = exporter.stats();
    assert_eq!(stats.samples_dropped(DropReason::Refused), 10);
    assert_eq!(stats.requests_failed(FailReason::Status4xx), 1);
    assert_eq!(stats.retries(), 0);
    assert_eq!(stats.samples_sent(), 20);
}

#[tokio::test]
async fn a_refused_request_of_several_entries_is_sent_again_entry_by_entry() {
    // The second request holds three entries, one of which the receiver refuses
    // (as Prometheus refuses a whole request for one sample it already holds): the
    // other two still arrive, each alone, and only the bad one is dropped.
    let server = Server::start(vec![
        Reply::status(200),
        Reply::status(400).body("out of order sample"),
        Reply::status(200),
        Reply::status(400).body("out of order sample"),
        Reply::status(200),
    ])
    .await;
    let queue = Arc::new(MemoryQueue::new(usize::MAX, 100));
    // Entries are read when the test wakes the sender.
    let exporter = spawn(&hourly(server.url()), queue.clone()).unwrap();
    let a = series("a", 0, 3);
    queue.push(vec![a.clone()]).unwrap();
    exporter.wake();
    eventually("the first entry", || queue.acked() == 1).await;
    let (b, c, d) = (series("b", 0, 3), series("c", 0, 3), series("d", 0, 3));
    for s in [&b, &c, &d] {
        queue.push(vec![s.clone()]).unwrap();
    }
    exporter.wake();
    eventually("the queue to drain", || queue.acked() == 4).await;
    let sizes: Vec<usize> = server
        .received()
        .iter()
        .map(|r| r.request.as_ref().unwrap().timeseries.len())
        .collect();
    assert_eq!(sizes, [1, 3, 1, 1, 1], "b, c and d together, then alone");
    assert_eq!(accepted_samples(&server), expected_samples(&[a, b, d]));
    let stats = exporter.stats();
    assert_eq!(stats.samples_dropped(DropReason::Refused), 3);
    assert_eq!(stats.requests_failed(FailReason::Status4xx), 2);
    assert_eq!(stats.samples_sent(), 9);
}

#[tokio::test]
async fn a_huge_error_body_is_read_only_up_to_the_limit() {
    let server = Server::start(vec![]).await;
    let huge = "x".repeat(4 * 1024 * 1024);
    server.otherwise(Reply::status(400).body(huge));
    let client = Client::new(&config(server.url())).unwrap();
    let e = client
        .send(prompb::encode(&WriteRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.reason, FailReason::Status4xx);
    assert!(
        e.detail.starts_with("answered 400 Bad Request: xxx"),
        "{}",
        e.detail
    );
    // Cut to 256 characters, and saying how much of what was read was left out.
    assert!(e.detail.len() < 400, "{} bytes", e.detail.len());
    assert!(
        e.detail
            .ends_with(&format!("(+{} bytes)", MAX_RESPONSE_BYTES - 256)),
        "{}",
        &e.detail[250..]
    );
}

#[tokio::test]
async fn read_bounded_stops_at_the_limit() {
    let body = http_body_util::Full::new(bytes::Bytes::from(vec![7u8; 1 << 20]));
    assert_eq!(crate::client::read_bounded(body, 1000).await.len(), 1000);
    let body = http_body_util::Full::new(bytes::Bytes::from_static(b"short"));
    assert_eq!(crate::client::read_bounded(body, 1000).await, b"short");
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_the_request_is_sent_again() {
    let server = Server::start(vec![Reply::status(200).delay(Duration::from_secs(3))]).await;
    let queue = Arc::new(MemoryQueue::new(usize::MAX, 100));
    queue.push(vec![series("m", 0, 3)]).unwrap();
    let exporter = spawn(
        &Config {
            timeout: Duration::from_millis(300),
            ..config(server.url())
        },
        queue.clone(),
    )
    .unwrap();
    eventually("delivery", || queue.acked() == 1).await;
    assert_eq!(exporter.stats().requests_failed(FailReason::Timeout), 1);
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried_and_nothing_is_acked() {
    // A port nobody listens on: bind, note it, close.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let queue = Arc::new(MemoryQueue::new(usize::MAX, 100));
    queue.push(vec![series("m", 0, 3)]).unwrap();
    let exporter = spawn(
        &config(format!("http://{addr}/api/v1/write")),
        queue.clone(),
    )
    .unwrap();
    eventually("retries", || {
        exporter.stats().requests_failed(FailReason::Network) >= 3
    })
    .await;
    assert_eq!(queue.acked(), 0);
    assert_eq!(
        exporter.lag(),
        Pending {
            entries: 1,
            samples: 3
        }
    );
    assert!(exporter.stats().retries() >= 2);
    assert_eq!(exporter.stats().samples_sent(), 0);
}

#[tokio::test]
async fn shutdown_abandons_a_request_in_flight_and_leaves_it_queued() {
    let server = Server::start(vec![Reply::status(200).delay(Duration::from_secs(5))]).await;
    let queue = Arc::new(MemoryQueue::new(usize::MAX, 100));
    queue.push(vec![series("m", 0, 3)]).unwrap();
    let exporter = spawn(&config(server.url()), queue.clone()).unwrap();
    eventually("the request to arrive", || server.received().len() == 1).await;
    let started = Instant::now();
    exporter.shutdown(Duration::from_millis(100)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(queue.acked(), 0);
    assert_eq!(
        queue.pending(),
        Pending {
            entries: 1,
            samples: 3
        }
    );

    // The next sender (after a restart) sends it.
    let exporter = spawn(&config(server.url()), queue.clone()).unwrap();
    eventually("delivery", || queue.acked() == 1).await;
    assert_eq!(exporter.stats().samples_sent(), 3);
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_within_the_grace() {
    let server = Server::start(vec![Reply::status(200).delay(Duration::from_millis(300))]).await;
    let queue = Arc::new(MemoryQueue::new(usize::MAX, 100));
    queue.push(vec![series("m", 0, 3)]).unwrap();
    let exporter = spawn(&config(server.url()), queue.clone()).unwrap();
    eventually("the request to arrive", || server.received().len() == 1).await;
    exporter.shutdown(Duration::from_secs(3)).await;
    assert_eq!(queue.acked(), 1);
    assert_eq!(queue.pending(), Pending::default());
}

#[tokio::test]
async fn resumes_after_what_the_queue_persisted_as_acked() {
    let server = Server::start(vec![]).await;
    let queue = Arc::new(MemoryQueue::new(usize::MAX, 100));
    queue.push(vec![series("old", 0, 3)]).unwrap();
    queue.push(vec![series("new", 0, 3)]).unwrap();
    queue.ack(1).unwrap();
    let _exporter = spawn(&config(server.url()), queue.clone()).unwrap();
    eventually("delivery", || queue.acked() == 2).await;
    assert_eq!(
        accepted_samples(&server),
        expected_samples(&[series("new", 0, 3)])
    );
}

#[tokio::test]
async fn credentials_are_read_from_their_files_for_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let server = Server::start(vec![]).await;
    let queue = Arc::new(MemoryQueue::new(usize::MAX, 100));
    queue.push(vec![series("m", 0, 1)]).unwrap();
    let exporter = spawn(
        &Config {
            bearer_token_file: Some(token.clone()),
            ..config(server.url())
        },
        queue.clone(),
    )
    .unwrap();
    eventually("delivery", || queue.acked() == 1).await;
    std::fs::write(&token, "renewed").unwrap();
    queue.push(vec![series("m", 1, 1)]).unwrap();
    exporter.wake();
    eventually("delivery", || queue.acked() == 2).await;
    let auth: Vec<_> = server
        .received()
        .iter()
        .map(|r| r.headers["authorization"].clone())
        .collect();
    assert_eq!(auth, ["Bearer s3cret", "Bearer renewed"]);
    drop(exporter);

    let password = dir.path().join("password");
    std::fs::write(&password, "open sesame").unwrap();
    let server = Server::start(vec![]).await;
    let client = Client::new(&Config {
        basic_auth_user: Some("goroscope".into()),
        basic_auth_password_file: Some(password.clone()),
        ..config(server.url())
    })
    .unwrap();
    client
        .send(prompb::encode(&WriteRequest::default()))
        .await
        .unwrap();
    // base64("goroscope:open sesame")
    assert_eq!(
        server.received()[0].headers["authorization"],
        "Basic Z29yb3Njb3BlOm9wZW4gc2VzYW1l"
    );

    // An unreadable token file is retried, and its content never reaches the error.
    std::fs::write(&password, "").unwrap();
    let e = client
        .send(prompb::encode(&WriteRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(e.reason, FailReason::Credentials);
    assert!(e.to_string().contains("basic_auth_password_file"), "{e}");
}

#[test]
fn pack_splits_long_series_and_acks_only_completed_entries() {
    let entries = vec![
        Entry {
            id: 1,
            series: vec![series("a", 0, 4)],
        },
        Entry {
            id: 2,
            series: vec![series("b", 0, 9), series("c", 0, 2)],
        },
        Entry {
            id: 3,
            series: vec![],
        },
        Entry {
            id: 4,
            series: vec![series("d", 0, 5)],
        },
    ];
    let (batches, invalid) = pack(entries.clone(), 5, false);
    assert_eq!(invalid, 0);
    let held: Vec<usize> = batches.iter().map(|b| b.entries).collect();
    assert_eq!(held, [1, 1, 1, 2, 1]);
    let shape: Vec<(usize, Option<u64>)> = batches.iter().map(|b| (b.samples, b.through)).collect();
    // a4 | b5 | b4+c1 | c1 (completes 2 and 3) | d5 (completes 4): entry 2 does not
    // fit after a4, so it starts a request, and is cut every 5 samples.
    assert_eq!(
        shape,
        [
            (4, Some(1)),
            (5, None),
            (5, None),
            (1, Some(3)),
            (5, Some(4))
        ]
    );
    // One entry a request: the same cuts inside entry 2.
    let (alone, _) = pack(entries, 5, true);
    assert!(alone.iter().all(|b| b.entries == 1));
    let shape: Vec<(usize, Option<u64>)> = alone.iter().map(|b| (b.samples, b.through)).collect();
    assert_eq!(
        shape,
        [
            (4, Some(1)),
            (5, None),
            (5, None),
            (1, Some(2)),
            (0, Some(3)),
            (5, Some(4))
        ]
    );
    assert!(batches.iter().all(|b| b.samples <= 5));
    let b_samples: Vec<i64> = batches
        .iter()
        .flat_map(|b| &b.series)
        .filter(|s| s.labels[0].value == "b")
        .flat_map(|s| s.samples.iter().map(|x| x.timestamp))
        .collect();
    assert_eq!(b_samples, (0..9).collect::<Vec<_>>());
}

#[test]
fn normalize_sorts_drops_empty_values_and_refuses_what_receivers_refuse() {
    let l = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(n, v)| Label::new(*n, *v))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        normalize(l(&[
            ("pid", "42"),
            ("host", "h1"),
            ("empty", ""),
            ("__name__", "go:gc_total")
        ])),
        Some(l(&[
            ("__name__", "go:gc_total"),
            ("host", "h1"),
            ("pid", "42")
        ]))
    );
    assert_eq!(normalize(l(&[("job", "x")])), None, "no __name__");
    assert_eq!(normalize(l(&[("__name__", "1bad")])), None);
    assert_eq!(normalize(l(&[("__name__", "m"), ("bad-name", "x")])), None);
    assert_eq!(
        normalize(l(&[("__name__", "m"), ("a", "1"), ("a", "2")])),
        None
    );
    assert_eq!(normalize(l(&[("__name__", "m"), ("ünï", "x")])), None);
}

#[tokio::test]
async fn series_with_invalid_labels_are_dropped_alone() {
    let server = Server::start(vec![]).await;
    let queue = Arc::new(MemoryQueue::new(usize::MAX, 100));
    let bad = TimeSeries {
        labels: vec![Label::new("__name__", "m"), Label::new("bad-label", "x")],
        samples: vec![
            Sample {
                value: 1.0,
                timestamp: 1
            };
            4
        ],
    };
    queue.push(vec![bad, series("good", 0, 3)]).unwrap();
    let exporter = spawn(&config(server.url()), queue.clone()).unwrap();
    eventually("delivery", || queue.acked() == 1).await;
    assert_eq!(
        exporter.stats().samples_dropped(DropReason::InvalidLabels),
        4
    );
    assert_eq!(
        accepted_samples(&server),
        expected_samples(&[series("good", 0, 3)])
    );
}

/// A queue that records the threads it is called on.
struct Recording {
    inner: MemoryQueue,
    threads: std::sync::Mutex<Vec<std::thread::ThreadId>>,
}

impl Queue for Recording {
    fn read(&self, after: u64, max: usize) -> Result<Vec<Entry>, crate::QueueError> {
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
        std::thread::sleep(Duration::from_millis(20)); // blocking I/O
        self.inner.read(after, max)
    }
    fn ack(&self, through: u64) -> Result<(), crate::QueueError> {
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
        self.inner.ack(through)
    }
    fn acked(&self) -> u64 {
        self.inner.acked()
    }
    fn pending(&self) -> Pending {
        self.inner.pending()
    }
}

#[tokio::test]
async fn queue_reads_and_acks_run_off_the_async_threads() {
    let server = Server::start(vec![]).await;
    let queue = Arc::new(Recording {
        inner: MemoryQueue::new(usize::MAX, 100),
        threads: Default::default(),
    });
    queue.inner.push(vec![series("m", 0, 3)]).unwrap();
    let _exporter = spawn(&config(server.url()), queue.clone()).unwrap();
    eventually("delivery", || queue.acked() == 1).await;
    let threads = queue.threads.lock().unwrap().clone();
    assert!(threads.len() >= 2);
    // This test's runtime runs its tasks, the sender included, on this thread only.
    let here = std::thread::current().id();
    assert!(
        threads.iter().all(|t| *t != here),
        "queue called on the runtime's thread"
    );
}

#[tokio::test]
async fn new_entries_are_found_by_a_wake_or_by_the_next_poll() {
    let server = Server::start(vec![]).await;
    let queue = Arc::new(MemoryQueue::new(usize::MAX, 100));
    // Only a wake can find the entry in time.
    let exporter = spawn(&hourly(server.url()), queue.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await; // the sender waits, queue empty
    queue.push(vec![series("m", 0, 1)]).unwrap();
    exporter.wake();
    eventually("delivery after a wake", || queue.acked() == 1).await;
    drop(exporter);

    // No wake: the 50 ms poll finds it.
    let _exporter = spawn(&config(server.url()), queue.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    queue.push(vec![series("m", 1, 1)]).unwrap();
    eventually("delivery at a poll", || queue.acked() == 2).await;
}
