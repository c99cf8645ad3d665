//! The `/metrics` source end to end: a service instrumented with client_golang (the
//! `instrumented` workload) and Debian's Prometheus and node_exporter, sampled from
//! their expositions by the real collector and read back through the aggregator.

use std::time::Duration;

use goroscope_proto::v1;
use goroscope_tests::*;

use crate::STARTUP;

/// A service that serves `/metrics` only (no pprof, no expvar) is found by its
/// exposition; the Go collector's and the service's own series arrive, summaries and
/// histograms included, next to the collector's /proc readings.
#[test]
fn a_client_golang_service_is_found_by_its_metrics_and_sampled_from_them() {
    let svc = Workload::start("instrumented", &[]);
    let (certs, _data, agg, collector) = start_stack("e2e-m", "");
    let url = agg.url();
    let pid = u64::from(svc.pid());

    let t = eventually(STARTUP, "the instrumented service's exposition", || {
        let t = targets_by_pid(&certs, &url);
        let t = t.get(&pid)?;
        let latest = &t["latest"];
        [
            "go_goroutines",
            "go_gc_duration_seconds",
            "go_gc_duration_seconds_count",
            "go_sched_latencies_seconds_bucket",
            "app_request_duration_seconds_bucket",
            "app_response_size_bytes",
        ]
        .iter()
        .all(|m| latest_of(latest, m).is_some())
        .then(|| t.clone())
    });
    assert_eq!(t["labels"]["service"], "instrumented", "{t}");
    assert_eq!(t["coverage"]["debug_addr"], svc.addr.unwrap().to_string());
    assert_eq!(t["coverage"]["expvar"], false, "{t}");
    assert_eq!(t["coverage"]["pprof"], false, "{t}");
    let latest = &t["latest"];
    assert!(latest["go_goroutines"].as_f64().unwrap() >= 2.0, "{t}");
    // The collector's own reading of a series the exposition has too.
    assert!(
        latest["process_resident_memory_bytes"].as_f64().unwrap() > 1e6,
        "{t}"
    );
    // client_golang's runtime/metrics names (MetricsAll).
    assert!(
        latest["go_sched_gomaxprocs_threads"].as_f64().unwrap() >= 1.0,
        "{t}"
    );
    // OpenMetrics' _created samples are not series.
    assert!(
        latest.get("app_request_duration_seconds_created").is_none(),
        "{t}"
    );

    for metric in [
        "go_gc_duration_seconds",
        "app_request_duration_seconds_bucket",
        "app_odd_labels_total",
    ] {
        let s = eventually(STARTUP, &format!("samples of {metric}"), || {
            let s = series(&certs, &url, metric, svc.pid(), "5m");
            (s.len() >= 2).then_some(s)
        });
        assert!(s.windows(2).all(|w| w[0].0 <= w[1].0), "{metric}: {s:?}");
    }
    let log = collector.output();
    assert!(
        log.lines().any(|l| l.contains("runtime endpoints found")
            && l.contains(&format!("pid={pid}"))
            && l.contains("metrics=true")),
        "{log}"
    );
    assert!(!log.contains("metrics sample failed"), "{log}");
}

/// What the aggregator gives back of series labels: each quantile and bucket a series of
/// its own, its labels in `Series.series_labels` and `MetricValue.labels`, renamed
/// where they collide with a target label; and `Coverage.metrics`.
#[test]
fn series_labels_of_summaries_and_histograms_reach_the_query_api() {
    let svc = Workload::start("instrumented", &[]);
    let (certs, _data, agg, _collector) = start_stack("e2e-l", "");
    let url = agg.url();
    let rt = raw::runtime();
    let mut client = rt.block_on(async { raw::query_client(&certs, &url) });
    let pid = svc.pid().to_string();
    let query = |client: &mut v1::query_client::QueryClient<tonic::transport::Channel>,
                 metric: &str| {
        rt.block_on(client.query_range(v1::QueryRangeRequest {
            metric: metric.into(),
            matchers: vec![v1::LabelMatcher {
                name: "pid".into(),
                value: pid.clone(),
            }],
            start_ms: goroscope_proto::unix_ms() - 300_000,
            end_ms: goroscope_proto::unix_ms() + 60_000,
        }))
        .map(|r| r.into_inner().series)
        .unwrap_or_default()
    };
    let labels_of = |s: &v1::Series| {
        s.series_labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect::<Vec<_>>()
    };

    let quantiles = eventually(STARTUP, "one series per quantile", || {
        let s = query(&mut client, "go_gc_duration_seconds");
        (s.len() == 5).then_some(s)
    });
    let mut seen: Vec<String> = quantiles
        .iter()
        .map(|s| {
            let l = labels_of(s);
            assert_eq!(l.len(), 1, "{l:?}");
            assert_eq!(l[0].0, "quantile");
            l[0].1.clone()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, ["0", "0.25", "0.5", "0.75", "1"]);

    let buckets = query(&mut client, "app_request_duration_seconds_bucket");
    assert!(buckets.len() >= 5, "{buckets:?}");
    for b in &buckets {
        let names: Vec<String> = labels_of(b).into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["code", "le", "route"], "sorted by name");
    }
    assert!(
        buckets
            .iter()
            .any(|b| labels_of(b).contains(&("le".into(), "+Inf".into())))
    );

    let odd = query(&mut client, "app_odd_labels_total");
    assert_eq!(odd.len(), 1, "{odd:?}");
    assert_eq!(
        labels_of(&odd[0]),
        [
            (
                "exported_path".to_string(),
                "C:\\dir \"quoted\"\nnext".to_string()
            ),
            ("exported_service".to_string(), "inner".to_string())
        ]
    );

    let targets = rt
        .block_on(client.list_targets(v1::ListTargetsRequest::default()))
        .unwrap()
        .into_inner()
        .targets;
    let t = targets
        .iter()
        .find(|t| t.id.as_ref().is_some_and(|id| id.pid == svc.pid()))
        .unwrap();
    assert!(t.coverage.as_ref().unwrap().metrics, "{t:?}");
    assert!(
        t.latest.iter().any(|m| m.metric == "go_gc_duration_seconds"
            && m.labels.iter().any(|l| l.name == "quantile"))
    );
}

/// A target exposing more series than `limits.max_series_per_target` keeps the first
/// ones; the rest are counted on the collector's own /metrics and logged, naming the
/// target.
#[test]
fn a_target_over_the_series_cap_keeps_the_first_and_is_counted() {
    let svc = Workload::start("instrumented", &[]);
    let port = free_port();
    let (certs, _data, agg, collector) = start_stack_with(
        "e2e-cap",
        &format!("metrics_listen = \"127.0.0.1:{port}\"\n[limits]\nmax_series_per_target = 30\n"),
    );
    let url = agg.url();
    // Other tests' workloads may be capped too: the line naming this one.
    let named = format!("pid={} ", svc.pid());
    let capped_line = |l: &&str| l.contains("max_series_per_target") && l.contains(&named);
    let line = eventually(STARTUP, "the cap logged for the target", || {
        collector
            .output()
            .lines()
            .find(capped_line)
            .map(str::to_owned)
    });
    assert!(line.contains("kept=30"), "{line}");
    let own = format!("127.0.0.1:{port}").parse().unwrap();
    let capped = eventually(STARTUP, "the capped series counted", || {
        let (_, body) = raw::try_http_get(own, "/metrics")?;
        body.lines()
            .find(|l| l.starts_with("goroscope_collector_series_capped_total"))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .filter(|n| *n > 100.0)
    });
    assert!(capped > 100.0);
    // The first series of the exposition arrive; one far down it does not.
    eventually(STARTUP, "the first series", || {
        let t = targets_by_pid(&certs, &url);
        t.get(&u64::from(svc.pid()))
            .filter(|t| latest_of(&t["latest"], "app_request_duration_seconds_bucket").is_some())
            .map(drop)
    });
    std::thread::sleep(Duration::from_secs(2));
    let t = targets_by_pid(&certs, &url);
    let latest = &t[&u64::from(svc.pid())]["latest"];
    assert!(latest.get("go_threads").is_none(), "{latest}");
    // The paced log: once for the target, not every interval.
    let log = collector.output();
    assert_eq!(log.lines().filter(capped_line).count(), 1, "{log}");
}
