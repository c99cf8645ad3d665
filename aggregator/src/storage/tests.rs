//! Storage tests on a real RocksDB in a temporary directory.

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
            runtime_env: BTreeMap::new(),
            build: None,
        }],
        samples: vec![SeriesPoints {
            series: Arc::new(SeriesKey {
                target: t,
                metric: "go_goroutines".into(),
                labels: vec![],
            }),
            points: points.to_vec(),
        }],
        gone: vec![],
        stacks: vec![],
        losses: vec![],
    }
}

fn open(dir: &Path) -> (Storage, WriterGuard) {
    let (s, g, _) = Storage::open(dir, StorageOptions::default()).unwrap();
    (s, g)
}

fn all(s: &Storage) -> Vec<TargetView> {
    s.list_targets(&Selector::default(), i64::MIN, 10_000, None)
        .0
}

fn latest(v: &TargetView, metric: &str) -> (i64, f64) {
    v.latest
        .iter()
        .find(|l| l.metric == metric && l.labels.is_empty())
        .map(|l| (l.timestamp_ms, l.value))
        .unwrap()
}

#[tokio::test]
async fn stored_samples_survive_reopen_and_query_by_range() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _guard) = open(dir.path());
        let w = batch(
            "node-a",
            7,
            1,
            42,
            &[(1_000, 10.0), (2_000, 11.0), (3_000, 12.0)],
        );
        assert_eq!(s.write(w).await.unwrap(), WriteOutcome::Stored);
    }
    // The guard joined the writer: the database reopens at once.
    let (s, _guard) = open(dir.path());
    let sel = Selector {
        matchers: vec![("service".into(), "billing".into())],
    };
    let got = s
        .query_range("go_goroutines", &sel, 1_500, 3_000, &Cancel::new())
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].points, vec![(2_000, 11.0), (3_000, 12.0)]);
    let targets = all(&s);
    assert_eq!(targets.len(), 1);
    assert_eq!(latest(&targets[0], "go_goroutines"), (3_000, 12.0));
    assert_eq!(targets[0].last_seen_ms, 3_000);
    assert_eq!(targets[0].record.labels["service"], "billing");
    assert_eq!(s.last_seq("node-a", 7), 1);
    assert_eq!(s.last_seq("node-a", 8), 0);
}

#[tokio::test]
async fn nan_and_infinities_are_stored_and_returned_exactly_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let odd = [
        (1_000, f64::NAN),
        (2_000, f64::INFINITY),
        (3_000, f64::NEG_INFINITY),
        (4_000, -0.0),
        (5_000, f64::from_bits(0x7ff8_0000_0000_0001)), // Prometheus' staleness marker
    ];
    {
        let (s, _guard) = open(dir.path());
        s.write(batch("node-a", 1, 1, 42, &odd)).await.unwrap();
    }
    let (s, _guard) = open(dir.path());
    let got = s
        .query_range(
            "go_goroutines",
            &Selector::default(),
            0,
            10_000,
            &Cancel::new(),
        )
        .unwrap();
    let bits: Vec<(i64, u64)> = got[0]
        .points
        .iter()
        .map(|(t, v)| (*t, v.to_bits()))
        .collect();
    let want: Vec<(i64, u64)> = odd.iter().map(|(t, v)| (*t, v.to_bits())).collect();
    assert_eq!(bits, want);
    let (ts, v) = latest(&all(&s)[0], "go_goroutines");
    assert_eq!((ts, v.to_bits()), (5_000, odd[4].1.to_bits()));
}

#[tokio::test]
async fn a_record_that_cannot_be_decoded_is_skipped_and_the_rest_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _guard) = open(dir.path());
        s.write(batch("node-a", 1, 1, 1, &[(1_000, 1.0)]))
            .await
            .unwrap();
        s.write(batch("node-b", 1, 1, 2, &[(1_000, 2.0)]))
            .await
            .unwrap();
    }
    {
        // What an older build wrote (JSON), a record of a future version, and garbage.
        let engine = rocks::Engine::open(dir.path(), true).unwrap();
        let mut set = rocks::WriteSet::default();
        set.put(
            rocks::CF_TARGETS,
            target("node-a", 1).encode(),
            br#"{"key":{"host":"node-a"},"latest":{"x":[1,null]}}"#.to_vec(),
        );
        set.put(rocks::CF_SERIES, keys::series_key(99), vec![9u8, 1, 2]);
        set.put(rocks::CF_SERIES, vec![1u8, 2, 3], vec![1u8]);
        engine.commit(set).unwrap();
    }
    let (s, _guard, report) = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    assert_eq!(report.skipped, 3, "{report:?}");
    let targets = all(&s);
    assert_eq!(targets.len(), 2);
    let b = targets
        .iter()
        .find(|t| t.record.key.host == "node-b")
        .unwrap();
    assert_eq!(b.record.labels["service"], "billing");
    // node-a lost its record but not its samples.
    let a = targets
        .iter()
        .find(|t| t.record.key.host == "node-a")
        .unwrap();
    assert_eq!(latest(a, "go_goroutines"), (1_000, 1.0));
    // The id of the undecodable series is not given to a new one.
    s.write(batch("node-c", 1, 1, 3, &[(1_000, 3.0)]))
        .await
        .unwrap();
    let c = s
        .query_range(
            "go_goroutines",
            &Selector {
                matchers: vec![("host".into(), "node-c".into())],
            },
            0,
            10_000,
            &Cancel::new(),
        )
        .unwrap();
    assert_eq!(c[0].points, vec![(1_000, 3.0)]);
}

#[tokio::test]
async fn a_resent_batch_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _guard) = open(dir.path());
    let w = batch("node-a", 7, 1, 42, &[(1_000, 10.0)]);
    assert_eq!(s.write(w.clone()).await.unwrap(), WriteOutcome::Stored);
    let mut again = w.clone();
    again.samples[0].points = vec![(1_000, 99.0)];
    assert_eq!(s.write(again).await.unwrap(), WriteOutcome::Duplicate);
    let got = s
        .query_range(
            "go_goroutines",
            &Selector::default(),
            0,
            10_000,
            &Cancel::new(),
        )
        .unwrap();
    assert_eq!(got[0].points, vec![(1_000, 10.0)]);
    // A new epoch (the collector restarted) starts its sequence again.
    let restarted = batch("node-a", 8, 1, 42, &[(2_000, 20.0)]);
    assert_eq!(s.write(restarted).await.unwrap(), WriteOutcome::Stored);
}

#[tokio::test]
async fn concurrent_writers_share_series_ids_consistently() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _guard) = open(dir.path());
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
        .query_range(
            "go_goroutines",
            &Selector::default(),
            0,
            100,
            &Cancel::new(),
        )
        .unwrap();
    assert_eq!(got.len(), 8);
    assert!(got.iter().all(|sd| sd.points.len() == 20));
    let sel = Selector {
        matchers: vec![("host".into(), "node-3".into()), ("pid".into(), "1".into())],
    };
    assert_eq!(s.list_targets(&sel, 0, 100, None).0.len(), 1);
}

#[tokio::test]
async fn queries_refuse_more_samples_than_the_limit_and_stop_when_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _guard, _) = Storage::open(
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
        .query_range("go_goroutines", &Selector::default(), 0, 10, &Cancel::new())
        .unwrap_err();
    assert!(matches!(err, StorageError::TooManySamples { limit: 2 }));
    let cancel = Cancel::new();
    cancel.cancel();
    let err = s
        .query_range("go_goroutines", &Selector::default(), 0, 1, &cancel)
        .unwrap_err();
    assert!(matches!(err, StorageError::Cancelled));
}

#[tokio::test]
async fn target_listings_come_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _guard) = open(dir.path());
    for pid in 1..=5 {
        s.write(batch("node-a", u64::from(pid), 1, pid, &[(1_000, 1.0)]))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let (page, next) = s.list_targets(&Selector::default(), 0, 2, token.as_ref());
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|t| t.record.key.pid));
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn targets_past_the_retention_are_forgotten_with_their_samples() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _guard, _) = Storage::open(
        dir.path(),
        StorageOptions {
            retention: std::time::Duration::from_secs(10),
            ..StorageOptions::default()
        },
    )
    .unwrap();
    s.write(batch("node-a", 1, 1, 1, &[(1_000, 1.0)]))
        .await
        .unwrap();
    s.write(batch("node-a", 1, 2, 2, &[(50_000, 2.0)]))
        .await
        .unwrap();
    assert_eq!(s.forget_expired(55_000).await.unwrap(), 1);
    let left: Vec<u32> = all(&s).iter().map(|t| t.record.key.pid).collect();
    assert_eq!(left, vec![2]);
    let got = s
        .query_range(
            "go_goroutines",
            &Selector::default(),
            0,
            i64::MAX,
            &Cancel::new(),
        )
        .unwrap();
    assert_eq!(got.len(), 1);
    drop(s);
    drop(_guard);
    let (s, _guard) = open(dir.path());
    assert_eq!(all(&s).len(), 1, "forgotten for good");
    assert_eq!(s.sizes(), (1, 1));
}

#[tokio::test]
async fn a_stopped_writer_answers_writer_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (s, guard) = open(dir.path());
    tokio::task::spawn_blocking(move || guard.stop())
        .await
        .unwrap();
    let err = s
        .write(batch("node-a", 1, 1, 1, &[(1, 1.0)]))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::WriterGone));
}

fn bucket(t: &TargetKey, le: &str) -> Arc<SeriesKey> {
    Arc::new(SeriesKey {
        target: t.clone(),
        metric: "go_gc_duration_seconds_bucket".into(),
        labels: vec![("le".into(), le.into())],
    })
}

#[tokio::test]
async fn series_of_one_metric_differ_by_their_labels_and_keep_them_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t = target("node-a", 42);
    {
        let (s, _guard) = open(dir.path());
        let mut w = batch("node-a", 1, 1, 42, &[(1_000, 3.0)]);
        for (le, v) in [("0.001", 1.0), ("+Inf", 4.0)] {
            w.samples.push(SeriesPoints {
                series: bucket(&t, le),
                points: vec![(1_000, v)],
            });
        }
        s.write(w).await.unwrap();
    }
    let (s, _guard) = open(dir.path());
    let all_buckets = s
        .query_range(
            "go_gc_duration_seconds_bucket",
            &Selector::default(),
            0,
            2_000,
            &Cancel::new(),
        )
        .unwrap();
    let mut got: Vec<_> = all_buckets
        .iter()
        .map(|sd| (sd.labels.clone(), sd.points.clone()))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            (vec![("le".into(), "+Inf".into())], vec![(1_000, 4.0)]),
            (vec![("le".into(), "0.001".into())], vec![(1_000, 1.0)]),
        ]
    );
    // A matcher on a series label picks the series; on a target label, the target.
    let sel = Selector {
        matchers: vec![
            ("service".into(), "billing".into()),
            ("le".into(), "+Inf".into()),
        ],
    };
    let one = s
        .query_range(
            "go_gc_duration_seconds_bucket",
            &sel,
            0,
            2_000,
            &Cancel::new(),
        )
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].points, vec![(1_000, 4.0)]);
    let latest = &all(&s)[0].latest;
    assert_eq!(latest.len(), 3);
    assert!(
        latest
            .iter()
            .any(|l| l.labels == vec![("le".to_string(), "0.001".to_string())] && l.value == 1.0)
    );
}

#[tokio::test]
async fn a_build_is_stored_once_for_every_target_running_it() {
    let dir = tempfile::tempdir().unwrap();
    let build = Arc::new(goroscope_proto::v1::BuildInfo {
        go_version: "go1.26.0".into(),
        path: "example.com/billing".into(),
        deps: vec![goroscope_proto::v1::Module {
            path: "github.com/prometheus/client_golang".into(),
            version: "v1.23.2".into(),
            sum: "h1:abc".into(),
            replace: None,
        }],
        settings: vec![goroscope_proto::v1::Label {
            name: "CGO_ENABLED".into(),
            value: "0".into(),
        }],
        ..Default::default()
    });
    {
        let (s, _guard) = open(dir.path());
        for (seq, pid) in [(1, 1), (2, 2)] {
            let mut w = batch("node-a", 1, seq, pid, &[(1_000, 1.0)]);
            w.targets[0].build = Some(build.clone());
            w.targets[0].runtime_env = BTreeMap::from([("GOGC".into(), "50".into())]);
            s.write(w).await.unwrap();
        }
        // A later upsert without the build keeps the stored one.
        s.write(batch("node-a", 1, 3, 1, &[(2_000, 1.0)]))
            .await
            .unwrap();
    }
    let (s, _guard) = open(dir.path());
    let views = all(&s);
    assert_eq!(views.len(), 2);
    assert!(views[0].record.build.is_some());
    assert_eq!(views[0].record.build, views[1].record.build);
    assert_eq!(
        views[1].record.runtime_env.get("GOGC").map(String::as_str),
        Some("50")
    );
    assert_eq!(s.build(&views[0].record).unwrap().as_ref(), Some(&*build));
}

fn summary(
    ts: i64,
    source: &str,
    groups: &[(&str, &[&str], u64)],
) -> goroscope_proto::v1::StackSummary {
    goroscope_proto::v1::StackSummary {
        target_ref: 9,
        timestamp_ms: ts,
        source: source.into(),
        total: groups.iter().map(|g| g.2).sum(),
        groups: groups
            .iter()
            .map(|(reason, frames, count)| goroscope_proto::v1::StackGroup {
                wait_reason: (*reason).into(),
                frames: frames.iter().map(|f| (*f).into()).collect(),
                count: *count,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn stack_signatures_keep_their_first_seen_time_across_summaries_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let t = target("node-a", 42);
    let leak: &[&str] = &["main.worker", "main.main.func1"];
    let idle: &[&str] = &["net/http.(*conn).serve"];
    let write = |seq: u64, stacks: goroscope_proto::v1::StackSummary| {
        let mut w = batch("node-a", 1, seq, 42, &[(stacks.timestamp_ms, 1.0)]);
        w.stacks.push(StackWrite {
            target: t.clone(),
            summary: stacks,
        });
        w
    };
    {
        let (s, _guard) = open(dir.path());
        s.write(write(
            1,
            summary(10_000, "debug=2", &[("chan receive", leak, 10)]),
        ))
        .await
        .unwrap();
        s.write(write(
            2,
            summary(
                20_000,
                "debug=2",
                &[("chan receive", leak, 20), ("IO wait", idle, 1)],
            ),
        ))
        .await
        .unwrap();
    }
    // After a restart, the first-seen times come from the stored summaries.
    let (s, _guard) = open(dir.path());
    let mut skipped = summary(40_000, "debug=2", &[]);
    skipped.skipped = "pause budget spent".into();
    s.write(write(
        3,
        summary(30_000, "debug=2", &[("chan receive", leak, 30)]),
    ))
    .await
    .unwrap();
    s.write(write(4, skipped)).await.unwrap();
    // Another source in the same millisecond keeps both.
    s.write(write(
        5,
        summary(30_000, "goroutineleak", &[("chan receive", leak, 2)]),
    ))
    .await
    .unwrap();
    let leaked = s.stacks_at(&t, None, |src| src == "goroutineleak").unwrap();
    assert_eq!(leaked.summary.unwrap().groups[0].count, 2);

    let found = s.stacks_at(&t, None, |src| src == "debug=2").unwrap();
    let newest = found.summary.unwrap();
    assert_eq!(newest.timestamp_ms, 30_000);
    assert_eq!(newest.groups[0].count, 30);
    assert_eq!(newest.groups[0].first_seen_ms, 10_000);
    assert_eq!(found.last_skip, Some((40_000, "pause budget spent".into())));
    let at = s
        .stacks_at(&t, Some(25_000), |src| src == "debug=2")
        .unwrap();
    let at = at.summary.unwrap();
    assert_eq!(at.timestamp_ms, 20_000);
    let idle_group = at
        .groups
        .iter()
        .find(|g| g.frames[0].starts_with("net/http"))
        .unwrap();
    assert_eq!(idle_group.first_seen_ms, 20_000);
    assert!(
        s.stacks_at(&t, Some(5_000), |_| true)
            .unwrap()
            .summary
            .is_none()
    );
}

#[tokio::test]
async fn captures_are_stored_listed_read_back_and_forgotten_by_age_and_budget() {
    use super::captures::{CHUNK, new_id, valid_id};
    let dir = tempfile::tempdir().unwrap();
    let (s, _guard) = open(dir.path());
    let info = |i: i64, size: usize| goroscope_proto::v1::CaptureInfo {
        id: new_id(1_000 + i),
        completed_ms: 1_000 + i,
        size_bytes: size as u64,
        ..Default::default()
    };
    let big: Vec<u8> = (0..CHUNK + 10).map(|i| (i % 251) as u8).collect();
    let a = info(1, big.len());
    let b = info(2, 3);
    let c = info(3, 0);
    s.store_capture(&a, &big).unwrap();
    s.store_capture(&b, b"abc").unwrap();
    s.store_capture(&c, b"").unwrap();
    assert!(valid_id(&a.id) && !valid_id("../x") && a.id < b.id);
    // A record that cannot be decoded is skipped, not fatal.
    let mut set = super::rocks::WriteSet::default();
    set.put(
        super::rocks::CF_CAPTURES,
        b"izzzzzzzzzzzzzzzz".to_vec(),
        vec![0xee, 1],
    );
    s.engine.commit(set).unwrap();
    let ids: Vec<String> = s
        .list_captures(10, |_| true)
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, vec![c.id.clone(), b.id.clone(), a.id.clone()]);
    let mut back = Vec::new();
    let mut i = 0;
    while let Some(chunk) = s.capture_chunk(&a.id, i).unwrap() {
        back.extend(chunk);
        i += 1;
    }
    assert_eq!((i, back), (2, big.clone()));
    assert_eq!(s.capture_info(&b.id).unwrap().unwrap().size_bytes, 3);
    // Past the age: a; then past a budget of 2 bytes: b (c has none).
    assert_eq!(s.forget_captures(1_002, u64::MAX).unwrap(), 1);
    assert!(s.capture_chunk(&a.id, 0).unwrap().is_none());
    assert_eq!(s.forget_captures(0, 2).unwrap(), 1);
    let left: Vec<String> = s
        .list_captures(10, |_| true)
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(left, vec![c.id]);
}

fn small_blocks(writers: usize) -> StorageOptions {
    StorageOptions {
        block: std::time::Duration::from_secs(10),
        flush_grace: std::time::Duration::ZERO,
        // Flushes happen when a test asks.
        flush_check: std::time::Duration::from_secs(3600),
        writers,
        ..StorageOptions::default()
    }
}

fn points_of(s: &Storage, start: i64, end: i64) -> Vec<(i64, u64)> {
    let got = s
        .query_range(
            "go_goroutines",
            &Selector::default(),
            start,
            end,
            &Cancel::new(),
        )
        .unwrap();
    got.into_iter()
        .flat_map(|d| d.points)
        .map(|(t, v)| (t, v.to_bits()))
        .collect()
}

#[tokio::test]
async fn closed_partitions_become_chunks_and_read_back_bit_for_bit_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let now = goroscope_proto::unix_ms();
    // Three closed partitions of 10 s, and samples of the open one (in the future).
    let mut pts: Vec<(i64, f64)> = (0..30).map(|i| (1_000 + i * 1_000, i as f64)).collect();
    pts[3].1 = f64::NAN;
    pts[4].1 = f64::from_bits(0x7ff0_0000_0000_0002);
    pts[5].1 = f64::NEG_INFINITY;
    let open_part = [(now + 3_600_000, 7.0), (now + 3_601_000, 8.0)];
    let want: Vec<(i64, u64)> = pts
        .iter()
        .chain(&open_part)
        .map(|(t, v)| (*t, v.to_bits()))
        .collect();
    {
        let (s, guard, _) = Storage::open(dir.path(), small_blocks(2)).unwrap();
        s.write(batch("node-a", 1, 1, 42, &pts)).await.unwrap();
        s.write(batch("node-a", 1, 2, 42, &open_part))
            .await
            .unwrap();
        let stats = s.flush(false).await.unwrap();
        assert_eq!((stats.chunks, stats.samples, stats.carried), (4, 30, 2));
        assert_eq!(points_of(&s, i64::MIN, i64::MAX), want);
        // Only the open partition's samples are left in the head.
        assert_eq!(s.usage().0, 64 + 2 * 16);
        assert_eq!(points_of(&s, 4_000, 12_000).len(), 9);
        drop(s);
        guard.stop();
    }
    let (s, _guard, report) = Storage::open(dir.path(), small_blocks(2)).unwrap();
    assert_eq!(report.skipped, 0);
    assert_eq!(points_of(&s, i64::MIN, i64::MAX), want);
    let (ts, v) = latest(&all(&s)[0], "go_goroutines");
    assert_eq!((ts, v), open_part[1]);
    // Everything flushed: the latest value is read back from the compacted data.
    let stats = s.flush(true).await.unwrap();
    assert_eq!(stats.samples, 2);
    assert_eq!(s.usage().0, 0);
    drop(s);
    drop(_guard);
    let (s, _guard, _) = Storage::open(dir.path(), small_blocks(2)).unwrap();
    assert_eq!(points_of(&s, i64::MIN, i64::MAX), want);
    assert_eq!(latest(&all(&s)[0], "go_goroutines"), open_part[1]);
}

#[tokio::test]
async fn a_late_sample_for_a_compacted_partition_is_merged_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _guard, _) = Storage::open(dir.path(), small_blocks(1)).unwrap();
    s.write(batch("node-a", 1, 1, 42, &[(1_000, 1.0), (3_000, 3.0)]))
        .await
        .unwrap();
    s.flush(false).await.unwrap();
    // Late, and one repeating a compacted time with a new value.
    s.write(batch("node-a", 1, 2, 42, &[(2_000, 2.0), (1_000, 1.0)]))
        .await
        .unwrap();
    let want = vec![
        (1_000, 1f64.to_bits()),
        (2_000, 2f64.to_bits()),
        (3_000, 3f64.to_bits()),
    ];
    assert_eq!(points_of(&s, 0, 10_000), want);
    s.flush(false).await.unwrap();
    assert_eq!(points_of(&s, 0, 10_000), want);
    // The newest value stays the newest, whatever the late flush wrote.
    assert_eq!(latest(&all(&s)[0], "go_goroutines"), (3_000, 3.0));
}

#[tokio::test]
async fn partitions_past_the_retention_are_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StorageOptions {
        retention: std::time::Duration::from_secs(25),
        ..small_blocks(1)
    };
    let (s, _guard, _) = Storage::open(dir.path(), opts).unwrap();
    let pts: Vec<(i64, f64)> = (0..40).map(|i| (i * 1_000, i as f64)).collect();
    s.write(batch("node-a", 1, 1, 42, &pts)).await.unwrap();
    assert_eq!(s.samples_stored(), (0, 40));
    s.flush(true).await.unwrap();
    assert_eq!(s.samples_stored(), (40, 0));
    // The cut is 37 s - 25 s = 12 s: only [0, 10 s) ended before it.
    s.forget_expired(37_000).await.unwrap();
    let left = points_of(&s, i64::MIN, i64::MAX);
    assert_eq!(left.first().map(|p| p.0), Some(10_000));
    assert_eq!(left.len(), 30);
    assert_eq!(s.samples_stored(), (30, 0));
    drop(s);
    drop(_guard);
    let (s, _guard) = open(dir.path());
    assert_eq!(s.samples_stored(), (30, 0), "counts survive a restart");
}

#[tokio::test]
async fn samples_of_the_older_head_layout_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _guard) = open(dir.path());
        s.write(batch("node-a", 1, 1, 42, &[(1_000, 1.0)]))
            .await
            .unwrap();
        s.flush(true).await.unwrap();
    }
    {
        // Samples the older layout kept in `head`, one key per sample.
        let engine = Engine::open(dir.path(), true).unwrap();
        let mut set = rocks::WriteSet::default();
        for (ts, v) in [(2_000, 2.0), (3_000, f64::NAN)] {
            set.put(
                rocks::CF_HEAD,
                keys::head_key(1, ts).to_vec(),
                keys::head_value(v).to_vec(),
            );
        }
        engine.commit(set).unwrap();
    }
    for _ in 0..2 {
        let (s, _guard) = open(dir.path());
        let got = points_of(&s, 0, 10_000);
        assert_eq!(got.len(), 3);
        assert!(f64::from_bits(got[2].1).is_nan());
    }
}

#[tokio::test]
async fn several_writer_shards_store_every_host_and_keep_their_layout() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _guard, _) = Storage::open(dir.path(), small_blocks(3)).unwrap();
        let mut tasks = Vec::new();
        for h in 0..12 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 1..=5 {
                    let t = seq * 1_000;
                    s.write(batch(
                        &format!("node-{h}"),
                        1,
                        seq as u64,
                        h,
                        &[(t, t as f64)],
                    ))
                    .await
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(points_of(&s, 0, 10_000).len(), 60);
    }
    // A reopen with another writer count keeps the database's own.
    let (s, _guard, _) = Storage::open(dir.path(), small_blocks(1)).unwrap();
    assert_eq!(s.writers.len(), 3);
    assert_eq!(points_of(&s, 0, 10_000).len(), 60);
    assert_eq!(s.flush(true).await.unwrap().samples, 60);
    assert_eq!(points_of(&s, 0, 10_000).len(), 60);
}

#[tokio::test]
async fn sequence_gaps_and_reported_losses_are_kept_per_host_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let scrape = |n: u64| (n << 32) | 1;
    {
        let (s, _guard) = open(dir.path());
        s.write(batch("node-a", 1, scrape(1), 1, &[(1_000, 1.0)]))
            .await
            .unwrap();
        // Scrapes 2 to 4 never arrive; the collector says its spool dropped them.
        let mut w = batch("node-a", 1, scrape(5), 1, &[(5_000, 5.0), (6_000, 6.0)]);
        w.losses = vec![("spool_full".into(), 3, 900), ("made-up".into(), 1, 1)];
        s.write(w).await.unwrap();
        // A re-send changes nothing; a new epoch starts counting afresh.
        s.write(batch("node-a", 1, scrape(5), 1, &[(5_000, 5.0)]))
            .await
            .unwrap();
        s.write(batch("node-a", 2, scrape(1), 1, &[(7_000, 7.0)]))
            .await
            .unwrap();
        // Plain batch counters: 1 then 4 skips two.
        s.write(batch("node-b", 1, 1, 2, &[(1_000, 1.0)]))
            .await
            .unwrap();
        s.write(batch("node-b", 1, 4, 2, &[(2_000, 1.0)]))
            .await
            .unwrap();
    }
    let (s, _guard) = open(dir.path());
    let hosts = s.hosts();
    let a = &hosts[0].1;
    assert_eq!(hosts[0].0, "node-a");
    assert_eq!((a.batches, a.samples, a.gaps, a.missed), (3, 4, 1, 3));
    assert_eq!(a.losses["spool_full"], (3, 900));
    assert_eq!(a.losses["other"], (1, 1));
    let b = &hosts[1].1;
    assert_eq!((b.batches, b.gaps, b.missed), (2, 1, 2));
}

fn relabelled(mut w: IngestWrite, service: &str) -> IngestWrite {
    w.targets[0]
        .labels
        .insert("service".to_string(), service.to_string());
    w
}

#[tokio::test]
async fn selectors_find_series_by_every_label_and_follow_relabels_restarts_and_forgetting() {
    let dir = tempfile::tempdir().unwrap();
    let m = |n: &str, op: MatchOp, v: &str| LabelMatcher::new(n, op, v).unwrap();
    let names = |got: Vec<LabeledSeries>| -> Vec<String> {
        got.iter()
            .map(|s| {
                let l: BTreeMap<_, _> = s.labels.iter().cloned().collect();
                format!(
                    "{}:{}:{}",
                    l["host"],
                    l["pid"],
                    l.get("service").map_or("", |v| v.as_str())
                )
            })
            .collect()
    };
    {
        let (s, _guard) = open(dir.path());
        s.write(batch("node-a", 1, 1, 1, &[(1_000, 1.0)]))
            .await
            .unwrap();
        s.write(relabelled(
            batch("node-b", 1, 1, 2, &[(1_000, 2.0)]),
            "api-gw",
        ))
        .await
        .unwrap();
        let all = s
            .select(
                &[m("__name__", MatchOp::Equal, "go_goroutines")],
                0,
                10_000,
                &Cancel::new(),
            )
            .unwrap();
        assert_eq!(
            names(all.clone()),
            vec!["node-a:1:billing", "node-b:2:api-gw"]
        );
        let labels: Vec<&str> = all[0].labels.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(labels, vec!["__name__", "host", "pid", "service"]);
        let sel = |ms: &[LabelMatcher]| names(s.select(ms, 0, 10_000, &Cancel::new()).unwrap());
        assert_eq!(
            sel(&[m("service", MatchOp::NotEqual, "billing")]),
            vec!["node-b:2:api-gw"]
        );
        assert_eq!(
            sel(&[m("service", MatchOp::Regex, "api-.*")]),
            vec!["node-b:2:api-gw"]
        );
        assert_eq!(
            sel(&[
                m("__name__", MatchOp::Regex, "go_.+"),
                m("host", MatchOp::NotRegex, "node-b")
            ]),
            vec!["node-a:1:billing"]
        );
        // Outside the targets' time: nothing.
        assert!(
            s.select(
                &[m("pid", MatchOp::Equal, "1")],
                50_000,
                60_000,
                &Cancel::new()
            )
            .unwrap()
            .is_empty()
        );
        // A relabelled target moves its series.
        s.write(relabelled(
            batch("node-a", 1, 2, 1, &[(2_000, 1.0)]),
            "ledger",
        ))
        .await
        .unwrap();
        assert!(sel(&[m("service", MatchOp::Equal, "billing")]).is_empty());
        assert_eq!(
            sel(&[m("service", MatchOp::Equal, "ledger")]),
            vec!["node-a:1:ledger"]
        );
        assert_eq!(s.label_values("service"), vec!["api-gw", "ledger"]);
    }
    let (s, _guard) = open(dir.path());
    let sel = |ms: &[LabelMatcher]| names(s.select(ms, 0, 10_000, &Cancel::new()).unwrap());
    assert_eq!(
        sel(&[m("service", MatchOp::Equal, "ledger")]),
        vec!["node-a:1:ledger"]
    );
    assert_eq!(s.label_names(), vec!["__name__", "host", "pid", "service"]);
    s.forget_expired(goroscope_proto::unix_ms()).await.unwrap();
    assert!(sel(&[m("__name__", MatchOp::Equal, "go_goroutines")]).is_empty());
    assert!(s.label_names().is_empty());
}

#[tokio::test]
async fn rollups_of_compacted_and_head_samples_fold_per_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _guard, _) = Storage::open(dir.path(), small_blocks(1)).unwrap();
    // One sample every 10 s for 3 minutes: 6 per minute bucket (30 s ends one).
    let pts: Vec<(i64, f64)> = (1..=18).map(|i| (i * 10_000, i as f64)).collect();
    s.write(batch("node-a", 1, 1, 42, &pts[..9])).await.unwrap();
    s.flush(true).await.unwrap();
    // The rest stays in the head.
    s.write(batch("node-a", 1, 2, 42, &pts[9..])).await.unwrap();
    let m = [LabelMatcher::equal("__name__", "go_goroutines")];
    let got = s
        .select_rollups(&m, 60_000, 0, 180_000, &Cancel::new())
        .unwrap();
    assert_eq!(got.len(), 1);
    let rows: Vec<(i64, f64, f64, f64, u64, f64)> = got[0]
        .rollups
        .iter()
        .map(|r| (r.end_ms, r.min, r.max, r.sum, r.count, r.last))
        .collect();
    assert_eq!(
        rows,
        vec![
            (60_000, 1.0, 6.0, 21.0, 6, 6.0),
            // Straddles the flush: 7 to 9 compacted, 10 to 12 in the head.
            (120_000, 7.0, 12.0, 57.0, 6, 12.0),
            (180_000, 13.0, 18.0, 93.0, 6, 18.0),
        ]
    );
    let hour = s
        .select_rollups(&m, 3_600_000, 0, 3_600_000, &Cancel::new())
        .unwrap();
    assert_eq!(hour[0].rollups[0].count, 18);
    assert_eq!(hour[0].rollups[0].sum, 171.0);
    // Only buckets ending in the range.
    let some = s
        .select_rollups(&m, 60_000, 100_000, 150_000, &Cancel::new())
        .unwrap();
    assert_eq!(some[0].rollups.len(), 1);
    // Six samples a minute: reading them beats reading 1-minute buckets; 18 in the
    // hour's one bucket do not reach the 20 a bucket must stand for either.
    let pays = |res, start, end| s.rollups_pay(&m, res, start, end, &Cancel::new()).unwrap();
    assert!(!pays(60_000, 0, 180_000));
    assert!(!pays(3_600_000, 0, 3_600_000));
    // Another 12 samples in the hour: 30 for its bucket.
    let more: Vec<(i64, f64)> = (19..=30).map(|i| (i * 10_000, i as f64)).collect();
    s.write(batch("node-a", 1, 3, 42, &more)).await.unwrap();
    assert!(pays(3_600_000, 0, 3_600_000));
    assert!(
        !pays(3_600_000, 0, 3_600_000 - 1),
        "no bucket ends in the range"
    );
    let none = [LabelMatcher::equal("__name__", "no_such_metric")];
    assert!(
        !s.rollups_pay(&none, 60_000, 0, 180_000, &Cancel::new())
            .unwrap()
    );
}

#[tokio::test]
async fn a_disk_under_its_free_space_margin_refuses_writes_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StorageOptions {
        min_free_bytes: u64::MAX,
        ..StorageOptions::default()
    };
    let (s, _guard, _) = Storage::open(dir.path(), opts).unwrap();
    let err = s
        .write(batch("node-a", 1, 1, 42, &[(1_000, 1.0)]))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains("storage.min_free_bytes"), "{err}");
    assert_eq!(
        s.last_seq("node-a", 1),
        0,
        "nothing acknowledged, nothing marked"
    );
    assert!(all(&s).is_empty());
}

#[tokio::test]
async fn export_queues_keep_their_order_across_flushes_and_restarts() {
    use goroscope_remote_write::Queue;
    let dir = tempfile::tempdir().unwrap();
    let opts = || StorageOptions {
        export: true,
        ..small_blocks(1)
    };
    let read_all = |q: &ExportQueue, after: u64| -> Vec<(u64, Vec<i64>)> {
        q.read(after, 1_000_000)
            .unwrap()
            .into_iter()
            .map(|e| {
                (
                    e.id,
                    e.series
                        .iter()
                        .flat_map(|s| s.samples.iter().map(|x| x.timestamp))
                        .collect(),
                )
            })
            .collect()
    };
    {
        let (s, _guard, _) = Storage::open(dir.path(), opts()).unwrap();
        s.write(batch("node-a", 1, 1, 42, &[(1_000, 1.0)]))
            .await
            .unwrap();
        s.write(batch("node-a", 1, 2, 42, &[(2_000, 2.0)]))
            .await
            .unwrap();
        let q = s.export_queues().remove(0);
        let got = read_all(&q, 0);
        assert_eq!(got, vec![(1, vec![1_000]), (2, vec![2_000])]);
        let e = &q.read(0, 10).unwrap()[0];
        let labels: Vec<(&str, &str)> = e.series[0]
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            labels,
            vec![
                ("__name__", "go_goroutines"),
                ("host", "node-a"),
                ("pid", "42"),
                ("service", "billing")
            ]
        );
        q.ack(1).unwrap();
        assert_eq!(q.pending().entries, 1);
        // Compaction empties the headlog; the queue keeps what was not delivered.
        s.flush(true).await.unwrap();
    }
    let (s, _guard, _) = Storage::open(dir.path(), opts()).unwrap();
    let q = s.export_queues().remove(0);
    assert_eq!(q.acked(), 1);
    assert_eq!(q.pending().entries, 1);
    s.write(batch("node-a", 1, 3, 42, &[(3_000, 3.0)]))
        .await
        .unwrap();
    // The new record comes after the old ones, never under a number used before.
    assert_eq!(
        read_all(&q, q.acked()),
        vec![(2, vec![2_000]), (3, vec![3_000])]
    );
}

#[tokio::test]
async fn a_first_batch_of_old_samples_is_found_by_time() {
    // A collector's spool delivers samples older than when the aggregator first saw
    // the target: a selector over their time still finds them.
    let dir = tempfile::tempdir().unwrap();
    let (s, _guard) = open(dir.path());
    let mut w = batch("node-a", 1, 1, 42, &[(100, 1.0), (200, 2.0)]);
    w.received_ms = 1_000_000;
    s.write(w).await.unwrap();
    let m = [LabelMatcher::equal("__name__", "go_goroutines")];
    let got = s.select(&m, 0, 300, &Cancel::new()).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].points, vec![(100, 1.0), (200, 2.0)]);
    assert_eq!(s.series_labels(&m, 0, 10).len(), 1);
}

#[tokio::test]
async fn ingest_waits_while_the_head_holds_twice_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StorageOptions {
        head_max_bytes: 1,
        ..small_blocks(1)
    };
    let (s, _guard, _) = Storage::open(dir.path(), opts).unwrap();
    let pts: Vec<(i64, f64)> = (1..=20).map(|i| (i * 1000, i as f64)).collect();
    // An empty head takes the first batch.
    s.write(batch("node-a", 1, 1, 42, &pts[..10]))
        .await
        .unwrap();
    let second = tokio::spawn({
        let s = s.clone();
        let rest = pts[10..].to_vec();
        async move { s.write(batch("node-a", 1, 2, 42, &rest)).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "waits while the head is over its bound"
    );
    s.flush(true).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), second)
        .await
        .expect("stored once the head was compacted")
        .unwrap()
        .unwrap();
    assert_eq!(points_of(&s, 0, 100_000).len(), 20);
}
