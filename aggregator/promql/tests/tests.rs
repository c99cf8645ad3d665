//! End-to-end tests: the evaluator against a real Prometheus on the same data, and the
//! rollup read path against the raw one.

mod util;

use goroscope_promql::api::success_json;
use goroscope_promql::{MemorySource, QueryOptions, QueryValue, instant_query, range_query};
use util::{Counting, Prometheus, T0, compare, dataset, openmetrics, url_encode};

const MIN: i64 = 60_000;

/// Queries compared with Prometheus, as instant queries at several times and as range
/// queries.
const QUERIES: &[&str] = &[
    // selectors and matchers
    "go_goroutines",
    r#"go_goroutines{job="api"}"#,
    r#"go_goroutines{job!="api"}"#,
    r#"go_goroutines{instance=~"a.*|c:9090"}"#,
    r#"go_goroutines{instance!~"a.*"}"#,
    r#"go_goroutines{instance=~"a"}"#,
    r#"{__name__=~"go_.*", job="api"}"#,
    r#"{__name__="process_resident_memory_bytes"}"#,
    "go_goroutines offset 10m",
    "weird_gauge",
    // range functions
    "rate(http_requests_total[5m])",
    "rate(http_requests_total[1m] offset 5m)",
    "irate(http_requests_total[2m])",
    "increase(http_requests_total[10m])",
    "increase(http_requests_total[1h])",
    "delta(go_goroutines[10m])",
    "deriv(process_resident_memory_bytes[15m])",
    "predict_linear(process_resident_memory_bytes[15m], 3600)",
    "avg_over_time(go_goroutines[10m])",
    "min_over_time(go_goroutines[10m])",
    "max_over_time(go_goroutines[10m])",
    "sum_over_time(go_goroutines[10m])",
    "count_over_time(go_goroutines[10m])",
    "last_over_time(go_goroutines[10m])",
    "quantile_over_time(0.9, go_goroutines[10m])",
    "stddev_over_time(go_goroutines[10m])",
    "max_over_time(weird_gauge[10m])",
    "avg_over_time(weird_gauge[5m])",
    "histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
    "histogram_quantile(0.5, rate(http_request_duration_seconds_bucket[5m]))",
    "histogram_quantile(0.99, sum by (job, le) (rate(http_request_duration_seconds_bucket[10m])))",
    "rate(http_request_duration_seconds_bucket{instance=\"a:9090\"}[5m])",
    "http_request_duration_seconds_bucket{instance=\"a:9090\"}",
    "idelta(go_goroutines[2m])",
    "resets(http_requests_total[30m])",
    "changes(go_goroutines[10m])",
    "present_over_time(go_goroutines[2m])",
    "stdvar_over_time(go_goroutines[10m])",
    "go_goroutines offset -5m",
    // aggregations
    "avg without (instance) (go_goroutines)",
    "min without (instance) (go_goroutines)",
    "count without (instance, code) (http_requests_total)",
    "quantile without (instance) (0.9, go_goroutines)",
    "stddev by (job) (go_goroutines)",
    "stdvar(go_goroutines)",
    "group by (job) (go_goroutines)",
    "topk(1, weird_gauge)",
    "sum(go_goroutines)",
    "sum by (job) (go_goroutines)",
    "sum without (instance) (go_goroutines)",
    "avg by (job) (go_goroutines)",
    "min by (job) (go_goroutines)",
    "max without (instance) (go_goroutines)",
    "count by (job) (go_goroutines)",
    "count(http_requests_total)",
    "topk(2, go_goroutines)",
    "bottomk by (job) (1, go_goroutines)",
    "topk by (code) (1, rate(http_requests_total[5m]))",
    "quantile by (job) (0.5, go_goroutines)",
    "quantile(0.25, go_goroutines)",
    "sum by (code) (rate(http_requests_total[5m]))",
    "sum(weird_gauge)",
    // binary operators
    "process_resident_memory_bytes - go_memstats_heap_inuse_bytes",
    "process_resident_memory_bytes - ignoring(code) go_memstats_heap_inuse_bytes",
    "process_resident_memory_bytes - on(job, instance) go_memstats_heap_inuse_bytes",
    "process_resident_memory_bytes / on(instance) go_memstats_heap_inuse_bytes",
    "go_goroutines > 50",
    "go_goroutines > bool 50",
    "50 < go_goroutines",
    "50 >= bool go_goroutines",
    "go_goroutines == bool go_goroutines offset 1m",
    "go_goroutines != go_goroutines offset 1m",
    "process_resident_memory_bytes > 1.6 * go_memstats_heap_inuse_bytes",
    "go_goroutines <= on(job, instance) go_goroutines offset 5m",
    "go_goroutines % 7",
    "2 ^ go_goroutines / 1e10",
    "-go_goroutines",
    "go_goroutines / 0",
    "2 * 3 + 4",
    "2 ^ 3 % 5",
    "1 / 0",
    "-1 / 0",
    "0 / 0",
    "1 > bool 2",
    "go_goroutines and go_goroutines > 50",
    "go_goroutines or vector(1)",
    r#"go_goroutines unless on(job) go_goroutines{job="worker"}"#,
    // other functions
    "time()",
    "scalar(sum(go_goroutines))",
    "vector(1)",
    "abs(delta(go_goroutines[5m]))",
    "clamp_min(go_goroutines, 60)",
    "clamp_max(go_goroutines, 45)",
    "timestamp(go_goroutines)",
    "sum(rate(http_requests_total[5m])) * 60",
    "clamp(go_goroutines, 45, 55)",
    "ceil(go_goroutines)",
    "floor(go_goroutines)",
    "sqrt(go_goroutines)",
    "exp(go_goroutines / 10)",
    "ln(go_goroutines)",
    "log2(go_goroutines)",
    "log10(-go_goroutines)",
    // Not compared: `atan2` between vectors, which keeps the metric name in Prometheus 2.42
    // and drops it, like the other arithmetic operators, in Prometheus 3 (unit-tested).
    "timestamp(go_goroutines offset 5m)",
    "weird_gauge > 50",
    "weird_gauge * 2",
];

#[test]
fn results_match_prometheus() {
    let (om, series) = openmetrics(&dataset(false));
    let prom = Prometheus::start(&om);
    let source = MemorySource::new(series);
    let opts = QueryOptions::default();
    let mut failures = Vec::new();
    let mut compared = 0;
    // Instant queries: before the data, during it, in the worker's gap, after it.
    let times = [
        T0 + 30 * MIN,
        T0 + 57 * MIN,
        T0 + 71 * MIN + 17_000,
        T0 + 119 * MIN,
        T0 + 130 * MIN,
    ];
    for q in QUERIES {
        for &t in &times {
            let ours = match instant_query(&source, q, t, &opts) {
                Ok(v) => success_json(&v),
                Err(e) => {
                    failures.push(format!("{q} @ {t}: {e}"));
                    continue;
                }
            };
            let theirs = prom.get(&format!(
                "/api/v1/query?query={}&time={}",
                url_encode(q),
                goroscope_promql::api::format_timestamp(t)
            ));
            if let Err(d) = compare(&ours, &theirs) {
                failures.push(format!("instant {q} @ {t}: {d}"));
            }
            compared += 1;
        }
        for (start, end, step) in [
            (T0, T0 + 125 * MIN, MIN),
            (T0 + 10 * MIN + 1_000, T0 + 100 * MIN, 37_000),
        ] {
            let ours = match range_query(&source, q, start, end, step, &opts) {
                Ok(v) => success_json(&v),
                Err(e) => {
                    failures.push(format!("{q} range: {e}"));
                    continue;
                }
            };
            let theirs = prom.get(&format!(
                "/api/v1/query_range?query={}&start={}&end={}&step={}",
                url_encode(q),
                goroscope_promql::api::format_timestamp(start),
                goroscope_promql::api::format_timestamp(end),
                goroscope_promql::api::format_timestamp(step),
            ));
            if let Err(d) = compare(&ours, &theirs) {
                failures.push(format!("range {q} step {step}: {d}"));
            }
            compared += 1;
        }
    }
    // A range selector on its own (instant queries only).
    for q in [
        "http_requests_total[5m]",
        r#"go_goroutines{job="worker"}[2m] offset 1m"#,
    ] {
        let t = T0 + 71 * MIN;
        let ours = success_json(&instant_query(&source, q, t, &opts).unwrap());
        let theirs = prom.get(&format!(
            "/api/v1/query?query={}&time={}",
            url_encode(q),
            t / 1000
        ));
        if let Err(d) = compare(&ours, &theirs) {
            failures.push(format!("instant {q}: {d}"));
        }
        compared += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {compared} comparisons differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn both_paths(
    query: &str,
    start: i64,
    end: i64,
    step: i64,
) -> (QueryValue, QueryValue, (usize, usize)) {
    let data = dataset(true);
    let raw = MemorySource::new(data.clone());
    let rolled = Counting::new(MemorySource {
        series: data,
        rollups: true,
    });
    let opts = QueryOptions::default();
    let a = range_query(&raw, query, start, end, step, &opts).unwrap();
    let b = range_query(&rolled, query, start, end, step, &opts).unwrap();
    (a, b, rolled.take())
}

#[test]
fn rollup_buckets_give_the_same_results_as_raw_samples() {
    let cases: &[(&str, i64)] = &[
        ("min_over_time(go_goroutines[10m])", MIN),
        ("max_over_time(go_goroutines[1h])", 5 * MIN),
        ("sum_over_time(go_goroutines[10m])", MIN),
        ("count_over_time(go_goroutines[1h])", 60 * MIN),
        ("avg_over_time(go_goroutines[30m])", 2 * MIN),
        ("sum by (job) (sum_over_time(http_requests_total[5m]))", MIN),
        ("go_goroutines", MIN),
        ("go_goroutines offset 3m", 5 * MIN),
        ("timestamp(go_goroutines)", MIN),
        (
            "process_resident_memory_bytes - go_memstats_heap_inuse_bytes",
            60 * MIN,
        ),
    ];
    for &(q, step) in cases {
        let (raw, rolled, (selects, rollups)) = both_paths(q, T0, T0 + 130 * MIN, step);
        assert_eq!(raw, rolled, "{q} step {step}");
        assert!(
            rollups > 0 && selects == 0,
            "{q}: rollups {rollups}, selects {selects}"
        );
        let QueryValue::Matrix(m) = &raw else {
            panic!("{q}: not a matrix")
        };
        assert!(!m.is_empty(), "{q}: empty");
    }
}

#[test]
fn rollups_are_not_used_when_they_would_change_the_answer() {
    let cases: &[(&str, i64, i64)] = &[
        // Range not a multiple of the resolution.
        ("sum_over_time(go_goroutines[90s])", T0, MIN),
        // Evaluation times off the bucket boundaries.
        ("sum_over_time(go_goroutines[10m])", T0 + 30_000, MIN),
        ("go_goroutines", T0 + 1_000, MIN),
        // Offset moves the windows off the boundaries.
        ("min_over_time(go_goroutines[10m] offset 30s)", T0, MIN),
        // Step not a multiple of the resolution.
        ("go_goroutines", T0, 90_000),
        // Functions that need every sample.
        ("rate(http_requests_total[10m])", T0, MIN),
        ("last_over_time(go_goroutines[10m])", T0, MIN),
    ];
    for &(q, start, step) in cases {
        let (raw, rolled, (selects, rollups)) = both_paths(q, start, start + 100 * MIN, step);
        assert_eq!(raw, rolled, "{q}");
        assert_eq!((selects, rollups), (1, 0), "{q}");
    }
}

#[test]
fn each_selector_is_read_once_per_query() {
    let source = Counting::new(MemorySource::new(dataset(false)));
    let q = "sum(rate(http_requests_total[5m])) / sum(go_goroutines) + avg_over_time(go_goroutines[3m]) * 0";
    range_query(
        &source,
        q,
        T0,
        T0 + 120 * MIN,
        15_000,
        &QueryOptions::default(),
    )
    .unwrap();
    assert_eq!(source.take(), (3, 0));
}
