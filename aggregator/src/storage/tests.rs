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
        .find(|(m, _, _)| m == metric)
        .map(|(_, t, v)| (*t, *v))
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
