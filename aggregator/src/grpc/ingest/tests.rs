//! Decoding batches: one bad item costs only itself.

use super::*;
use crate::storage::StorageOptions;
use proptest::prelude::*;

const NOW: i64 = 1_800_000_000_000;

fn session(limits: Limits) -> (Session, crate::storage::WriterGuard, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (storage, guard, _) = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    let s = Session::new(
        "node-a".into(),
        1,
        storage,
        limits,
        Arc::new(Metrics::new()),
    );
    (s, guard, dir)
}

fn upsert(r: u32, pid: u32, labels: &[(&str, &str)]) -> v1::TargetUpsert {
    v1::TargetUpsert {
        r#ref: r,
        id: Some(v1::TargetId {
            host: "node-a".into(),
            pid,
            start_ticks: 1,
        }),
        labels: labels
            .iter()
            .map(|(n, v)| v1::Label {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect(),
        coverage: None,
        start_time_ms: 0,
        ..Default::default()
    }
}

fn decl(r: u32, target_ref: u32, metric: &str) -> v1::SeriesDecl {
    v1::SeriesDecl {
        r#ref: r,
        target_ref,
        metric: metric.into(),
        ..Default::default()
    }
}

fn samples(series_ref: u32, ts: i64, values: &[f64]) -> v1::SeriesSamples {
    let mut deltas = vec![ts];
    deltas.extend(std::iter::repeat_n(1000, values.len().saturating_sub(1)));
    v1::SeriesSamples {
        series_ref,
        timestamp_deltas: deltas,
        values: values.to_vec(),
    }
}

#[tokio::test]
async fn a_bad_label_costs_its_target_only() {
    let (mut s, _g, _d) = session(Limits::default());
    let long = "x".repeat(2000);
    let batch = v1::Batch {
        seq: 1,
        targets: vec![
            upsert(0, 10, &[("service", "ok")]),
            upsert(1, 11, &[("cluster-name", "prod")]),
            upsert(2, 12, &[("cluster", &long)]),
        ],
        series: vec![
            decl(0, 0, "go_goroutines"),
            decl(1, 1, "go_goroutines"),
            decl(2, 2, "x"),
        ],
        samples: vec![
            samples(0, NOW, &[1.0]),
            samples(1, NOW, &[2.0]),
            samples(2, NOW, &[3.0]),
        ],
        gone_targets: vec![],
        ..Default::default()
    };
    let (write, refusals) = s.decode(batch, NOW).unwrap();
    assert_eq!(write.targets.len(), 1);
    assert_eq!(write.samples.len(), 1);
    assert_eq!(write.samples[0].points, vec![(NOW, 1.0)]);
    // Two refusals, one per target; their series and samples go quietly with them.
    assert_eq!(refusals.total, 2, "{refusals:?}");
    let reasons: Vec<&str> = refusals.listed.iter().map(|r| r.reason.as_str()).collect();
    assert!(
        reasons[0].contains("target ref 1") && reasons[0].contains("\"cluster-name\""),
        "{reasons:?}"
    );
    assert!(
        reasons[0].contains("letters, digits and '_'"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("target ref 2") && reasons[1].contains("2000 bytes, longer than 1024"),
        "{reasons:?}"
    );
    assert!(
        refusals
            .listed
            .iter()
            .all(|r| r.kind == Kind::Target as i32)
    );
}

#[tokio::test]
async fn samples_outside_the_window_are_refused_one_by_one() {
    let (mut s, _g, _d) = session(Limits::default());
    let year = 365 * 24 * 3600 * 1000;
    let batch = v1::Batch {
        seq: 1,
        targets: vec![upsert(0, 10, &[])],
        series: vec![decl(0, 0, "go_goroutines")],
        samples: vec![v1::SeriesSamples {
            series_ref: 0,
            timestamp_deltas: vec![NOW - year, year, year],
            values: vec![1.0, 2.0, 3.0],
        }],
        gone_targets: vec![],
        ..Default::default()
    };
    let (write, refusals) = s.decode(batch, NOW).unwrap();
    assert_eq!(write.samples[0].points, vec![(NOW, 2.0)]);
    assert_eq!(refusals.samples, 2);
    assert_eq!(refusals.listed[0].kind, Kind::Samples as i32);
    assert!(refusals.listed[0].reason.contains("outside the window"));
}

#[tokio::test]
async fn caps_refuse_series_not_the_stream_and_gone_targets_are_forgotten() {
    let (mut s, _g, _d) = session(Limits {
        max_series_per_target: 2,
        ..Limits::default()
    });
    let batch = v1::Batch {
        seq: 1,
        targets: vec![upsert(0, 10, &[])],
        series: vec![
            decl(0, 0, "a"),
            decl(1, 0, "b"),
            decl(2, 0, "c"),
            decl(3, 0, "bad-name"),
        ],
        samples: vec![samples(0, NOW, &[1.0]), samples(2, NOW, &[1.0])],
        gone_targets: vec![],
        ..Default::default()
    };
    let (write, refusals) = s.decode(batch, NOW).unwrap();
    assert_eq!(write.samples.len(), 1);
    assert_eq!(refusals.total, 2);
    assert!(
        refusals.listed[0]
            .reason
            .contains("limits.max_series_per_target")
    );
    assert!(refusals.listed[1].reason.contains("\"bad-name\""));
    // The target goes: its refs are forgotten, a later sample of them is refused.
    let gone = v1::Batch {
        seq: 2,
        gone_targets: vec![0],
        ..v1::Batch::default()
    };
    let (write, _) = s.decode(gone, NOW).unwrap();
    assert_eq!(write.gone.len(), 1);
    assert!(s.targets.is_empty() && s.series.is_empty());
    let late = v1::Batch {
        seq: 3,
        samples: vec![samples(0, NOW, &[1.0])],
        ..v1::Batch::default()
    };
    let (write, refusals) = s.decode(late, NOW).unwrap();
    assert!(write.samples.is_empty());
    assert!(refusals.listed[0].reason.contains("never declared"));
}

#[test]
fn an_oversized_message_is_refused_naming_the_limit() {
    let status = inbound_error(
        Status::out_of_range(
            "Error, decoded message length too large: found 2000 bytes, the limit is: 1024 bytes",
        ),
        1024,
    );
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("limits.max_message_bytes"),
        "{status:?}"
    );
    assert!(status.message().contains("1024"), "{status:?}");
}

fn arb_batch() -> impl Strategy<Value = v1::Batch> {
    let label = (".{0,12}", ".{0,12}").prop_map(|(name, value)| v1::Label { name, value });
    let target = (
        0u32..6,
        any::<u32>(),
        prop::collection::vec(label, 0..4),
        ".{0,8}",
    )
        .prop_map(|(r, pid, labels, host)| v1::TargetUpsert {
            r#ref: r,
            id: Some(v1::TargetId {
                host: if host.is_empty() {
                    "node-a".into()
                } else {
                    host
                },
                pid,
                start_ticks: 1,
            }),
            labels,
            coverage: None,
            start_time_ms: 0,
            ..Default::default()
        });
    let series = (0u32..12, 0u32..8, "[a-z_:-]{0,10}").prop_map(|(r, t, metric)| v1::SeriesDecl {
        r#ref: r,
        target_ref: t,
        metric,
        ..Default::default()
    });
    let samples = (
        0u32..14,
        prop::collection::vec(any::<i64>(), 0..5),
        prop::collection::vec(any::<f64>(), 0..5),
    )
        .prop_map(|(r, deltas, values)| v1::SeriesSamples {
            series_ref: r,
            timestamp_deltas: deltas,
            values,
        });
    (
        any::<u64>(),
        prop::collection::vec(target, 0..4),
        prop::collection::vec(series, 0..8),
        prop::collection::vec(samples, 0..8),
        prop::collection::vec(0u32..8, 0..3),
    )
        .prop_map(|(seq, targets, series, samples, gone)| v1::Batch {
            seq,
            targets,
            series,
            samples,
            gone_targets: gone,
            ..Default::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever a collector sends, decoding returns a write and refusals (or a status),
    /// never panics, and stores only what follows the rules.
    #[test]
    fn any_batch_decodes_or_is_refused_without_panic(batches in prop::collection::vec(arb_batch(), 1..5)) {
        let (mut s, _g, _d) = session(Limits { max_series_per_target: 3, ..Limits::default() });
        for b in batches {
            if let Ok((write, refusals)) = s.decode(b, NOW) {
                prop_assert!(refusals.listed.len() <= refusals.total);
                for t in &write.targets {
                    prop_assert_eq!(&t.key.host, "node-a");
                    for (n, v) in &t.labels {
                        prop_assert!(rules::check_label(n, v).is_ok());
                    }
                }
                for p in &write.samples {
                    prop_assert!(rules::check_metric_name(&p.series.metric).is_ok());
                }
            }
        }
    }
}

fn label(name: &str, value: &str) -> v1::Label {
    v1::Label {
        name: name.into(),
        value: value.into(),
    }
}

#[tokio::test]
async fn series_labels_are_checked_one_series_at_a_time() {
    let (mut s, _g, _d) = session(Limits::default());
    let with = |r: u32, labels: Vec<v1::Label>| v1::SeriesDecl {
        labels,
        ..decl(r, 0, "go_gc_duration_seconds")
    };
    let batch = v1::Batch {
        seq: 1,
        targets: vec![upsert(0, 10, &[("service", "billing")])],
        series: vec![
            // Given unsorted: stored sorted.
            with(0, vec![label("quantile", "0.5"), label("a", "x")]),
            with(1, vec![label("quantile", "1"), label("quantile", "2")]),
            with(2, vec![label("host", "elsewhere")]),
            with(3, vec![label("bad-name", "1")]),
        ],
        samples: (0..4).map(|r| samples(r, NOW, &[f64::NAN])).collect(),
        ..Default::default()
    };
    let (write, refusals) = s.decode(batch, NOW).unwrap();
    assert_eq!(write.samples.len(), 1);
    assert_eq!(
        write.samples[0].series.labels,
        vec![("a".into(), "x".into()), ("quantile".into(), "0.5".into())]
    );
    assert!(write.samples[0].points[0].1.is_nan());
    let reasons: Vec<&str> = refusals.listed.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].contains("\"quantile\" appears twice"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("target's id"), "{reasons:?}");
    assert!(reasons[2].contains("\"bad-name\""), "{reasons:?}");
}

#[tokio::test]
async fn stack_summaries_and_builds_over_their_bounds_cost_only_themselves() {
    let (mut s, _g, _d) = session(Limits::default());
    let group = |frames: usize| v1::StackGroup {
        wait_reason: "chan receive".into(),
        frames: vec!["main.worker".into(); frames],
        count: 3,
        ..Default::default()
    };
    let stacks = |target_ref: u32, groups: Vec<v1::StackGroup>| v1::StackSummary {
        target_ref,
        timestamp_ms: NOW,
        source: "debug=2".into(),
        groups,
        ..Default::default()
    };
    let mut target = upsert(0, 10, &[]);
    target.build = Some(v1::BuildInfo {
        deps: vec![v1::Module::default(); 5000],
        ..Default::default()
    });
    target.runtime_env = vec![label("GOGC", "50")];
    let batch = v1::Batch {
        seq: 1,
        targets: vec![target],
        stacks: vec![
            stacks(0, vec![group(3)]),
            stacks(0, vec![group(65)]),
            stacks(7, vec![group(1)]),
        ],
        ..Default::default()
    };
    let (write, refusals) = s.decode(batch, NOW).unwrap();
    assert_eq!(write.targets.len(), 1, "the target stays without its build");
    assert!(write.targets[0].build.is_none());
    assert_eq!(write.targets[0].runtime_env.get("GOGC").unwrap(), "50");
    assert_eq!(write.stacks.len(), 1);
    assert_eq!(write.stacks[0].summary.groups[0].count, 3);
    let kinds: Vec<i32> = refusals.listed.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        vec![Kind::Build as i32, Kind::Stacks as i32, Kind::Stacks as i32],
        "{refusals:?}"
    );
    assert!(refusals.listed[1].reason.contains("65 frames"));
    assert!(refusals.listed[2].reason.contains("never declared"));
}

#[tokio::test]
async fn only_the_go_runtime_settings_are_taken_from_an_environment_and_others_cost_only_themselves()
 {
    let (mut s, _g, _d) = session(Limits::default());
    let mut target = upsert(0, 10, &[]);
    target.runtime_env = vec![label("AWS_SECRET_ACCESS_KEY", "x")];
    let batch = v1::Batch {
        seq: 1,
        targets: vec![target],
        ..Default::default()
    };
    let (write, refusals) = s.decode(batch, NOW).unwrap();
    assert_eq!(write.targets.len(), 1, "the target stays");
    assert!(write.targets[0].runtime_env.is_empty());
    assert_eq!(refusals.total, 0);
}
