//! The Grafana dashboard `deploy/grafana/goroscope-fleet.json` asks only what goroscope
//! answers: every panel query is accepted by the PromQL engine and finds series in a
//! small fleet, every selector names a metric of docs/metrics.md and is narrowed by the
//! dashboard's `service`, `version` and `host` variables.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

use goroscope_promql::{
    Labels, MatchOp, Matcher, MemorySource, QueryOptions, QueryValue, RollupSeries, Series, Source,
    SourceError,
};
use serde_json::Value;

/// The first sample's time, a whole hour so that rollup buckets line up with it.
const T0: i64 = 1_699_999_200_000;
/// Three hours of samples, one every ten seconds (the collector's default interval).
const SPAN: i64 = 3 * 3_600_000;
const INTERVAL: i64 = 10_000;
/// Range queries cover the last hour of data, at a whole-minute step as Grafana sends
/// for long ranges.
const START: i64 = T0 + 2 * 3_600_000;
const END: i64 = T0 + SPAN;
const STEP: i64 = 60_000;

/// What the dashboard's variables stand for when every value is selected, and what
/// Grafana puts for its interval variables.
const SUBSTITUTIONS: [(&str, &str); 11] = [
    ("${service}", ".*"),
    ("${version}", ".*"),
    ("${host}", ".*"),
    ("$service", ".*"),
    ("$version", ".*"),
    ("$host", ".*"),
    ("${__rate_interval}", "1m"),
    ("$__rate_interval", "1m"),
    ("${__interval}", "1m"),
    ("$__interval", "1m"),
    ("$__range", "1h"),
];

/// The variables every selector of a panel must be narrowed by.
const FILTERS: [&str; 3] = ["service", "version", "host"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dashboard() -> Value {
    let path = repo().join("deploy/grafana/goroscope-fleet.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Every name docs/metrics.md writes in backticks, label lists (`name{a,b}`) cut off.
fn documented() -> BTreeSet<String> {
    let path = repo().join("docs/metrics.md");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.split('{').next().unwrap_or(s).to_string())
        .collect()
}

/// Whether a metric is catalogued: by its name, or for a histogram's or summary's
/// series by the family name (docs/metrics.md: "<name>_bucket (with le), <name>_sum and
/// <name>_count").
fn is_documented(name: &str, docs: &BTreeSet<String>) -> bool {
    docs.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|s| {
            name.strip_suffix(s)
                .is_some_and(|family| docs.contains(family))
        })
}

fn substitute(expr: &str) -> String {
    let mut out = expr.to_string();
    for (from, to) in SUBSTITUTIONS {
        out = out.replace(from, to);
    }
    assert!(
        !out.contains('$'),
        "{expr:?} uses a variable the dashboard does not define: {out:?}"
    );
    out
}

/// Every panel, those inside collapsed rows included.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels is an array") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// A small fleet: two `api` processes on one host and a `worker` on another, the
/// worker in a cgroup without limits and without a `/metrics` scheduler histogram.
fn fleet() -> Vec<Series> {
    let targets = [
        ("node-a", "101", "api", "v1.4.0"),
        ("node-a", "102", "api", "v1.5.0"),
        ("node-b", "7", "worker", "v0.9.1"),
    ];
    // (name, value at T0, change per second; counters grow, gauges drift)
    let metrics: [(&str, f64, f64); 16] = [
        ("go_goroutines", 120.0, 0.01),
        ("process_resident_memory_bytes", 200e6, 1000.0),
        ("go_memstats_heap_inuse_bytes", 120e6, 800.0),
        ("process_lazyfree_bytes", 8e6, 0.0),
        ("go_memstats_gc_cpu_fraction", 0.02, 0.0),
        ("go_gc_cycles_total", 1000.0, 0.5),
        ("go_gc_pause_seconds_total", 2.0, 0.0005),
        ("process_threads", 14.0, 0.0),
        ("process_open_fds", 40.0, 0.0),
        ("process_cpu_seconds_total", 500.0, 0.3),
        ("cgroup_memory_current_bytes", 300e6, 1000.0),
        ("cgroup_memory_max_bytes", 536_870_912.0, 0.0),
        ("cgroup_cpu_usage_seconds_total", 900.0, 0.35),
        ("cgroup_cpu_quota_cores", 2.0, 0.0),
        ("cgroup_cpu_periods_total", 50_000.0, 10.0),
        ("cgroup_cpu_throttled_periods_total", 100.0, 0.5),
    ];
    let bounds = ["6.4e-08", "1.024e-06", "1.6384e-05", "0.000262144", "+Inf"];
    let mut out = Vec::new();
    for (ti, (host, pid, service, version)) in targets.into_iter().enumerate() {
        let target = [
            ("host", host),
            ("pid", pid),
            ("service", service),
            ("version", version),
            ("go_version", "go1.23.4"),
        ];
        let series = |name: &str, extra: &[(&str, &str)], f: &dyn Fn(i64) -> f64| {
            let mut labels: Vec<(&str, &str)> = vec![("__name__", name)];
            labels.extend_from_slice(&target);
            labels.extend_from_slice(extra);
            // Each target samples a little after the others, as collectors do.
            let samples = (0..SPAN / INTERVAL)
                .map(|k| {
                    let t = T0 + k * INTERVAL + 137 * ti as i64;
                    (t, f(t - T0))
                })
                .collect();
            Series {
                labels: Labels::new(labels),
                samples,
            }
        };
        for (name, base, per_second) in metrics {
            let unlimited = matches!(name, "cgroup_memory_max_bytes" | "cgroup_cpu_quota_cores");
            if service == "worker" && unlimited {
                continue;
            }
            let scale = 1.0 + 0.25 * ti as f64;
            out.push(series(name, &[], &|dt: i64| {
                (base + per_second * dt as f64 / 1000.0) * scale
            }));
        }
        if service == "api" {
            for (i, le) in bounds.iter().enumerate() {
                // Cumulative counts: each bucket holds the ones below it.
                let per_second = 100.0 * (i + 1) as f64;
                out.push(series(
                    "go_sched_latencies_seconds_bucket",
                    &[("le", le)],
                    &|dt: i64| per_second * dt as f64 / 1000.0,
                ));
            }
        }
    }
    out
}

/// The fleet, remembering the matchers of every selector the engine reads.
struct Recording {
    inner: MemorySource,
    selectors: Mutex<Vec<Vec<Matcher>>>,
}

impl Recording {
    fn new(rollups: bool) -> Self {
        Recording {
            inner: MemorySource {
                series: fleet(),
                rollups,
            },
            selectors: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Vec<Vec<Matcher>> {
        std::mem::take(
            &mut *self
                .selectors
                .lock()
                .expect("no test thread panics holding it"),
        )
    }

    fn record(&self, matchers: &[Matcher]) {
        self.selectors
            .lock()
            .expect("no test thread panics holding it")
            .push(matchers.to_vec());
    }
}

impl Source for Recording {
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, SourceError> {
        self.record(matchers);
        self.inner.select(matchers, start_ms, end_ms)
    }

    fn select_rollup(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        resolution_ms: i64,
    ) -> Result<Option<Vec<RollupSeries>>, SourceError> {
        self.record(matchers);
        self.inner
            .select_rollup(matchers, start_ms, end_ms, resolution_ms)
    }
}

/// The metric name a selector's matchers ask for.
fn metric_name<'a>(matchers: &'a [Matcher], what: &str) -> &'a str {
    matchers
        .iter()
        .find(|m| m.name == "__name__" && m.op == MatchOp::Equal)
        .map(|m| m.value.as_str())
        .unwrap_or_else(|| panic!("{what}: a selector without a metric name"))
}

fn result_len(v: &QueryValue) -> usize {
    match v {
        QueryValue::Matrix(s) => s.iter().filter(|s| !s.samples.is_empty()).count(),
        QueryValue::Vector(v) => v.len(),
        QueryValue::Scalar { .. } | QueryValue::String { .. } => 1,
    }
}

#[test]
fn dashboard_is_a_schema_39_dashboard_with_a_prometheus_data_source_variable() {
    let dash = dashboard();
    assert_eq!(dash["schemaVersion"], 39);
    assert!(dash["uid"].is_string() && dash["title"].is_string());
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list is an array");
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");

    let mut ids = BTreeSet::new();
    for p in panels(&dash) {
        let title = p["title"].as_str().unwrap_or("?");
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "{title}: panel id {id} used twice");
        let grid = &p["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24),
            "{title}: gridPos {grid} does not fit the 24 columns"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array();
        assert!(
            targets.is_some_and(|t| !t.is_empty()),
            "{title}: a panel without queries"
        );
        for t in targets.into_iter().flatten() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
}

#[test]
fn variables_are_multi_value_label_values_of_documented_metrics() {
    let dash = dashboard();
    let docs = documented();
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list is an array");
    for name in FILTERS {
        let v = vars
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no {name} variable"));
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["multi"], true, "{name}");
        assert_eq!(v["includeAll"], true, "{name}");
        assert_eq!(v["allValue"], ".*", "{name}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
        // Grafana takes the query as a string or as {"query": ...}.
        let query = v["query"]
            .as_str()
            .or_else(|| v["query"]["query"].as_str())
            .unwrap_or_else(|| panic!("{name}: no query"));
        let args = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{name}: {query:?} is not label_values(SELECTOR, LABEL)"));
        let (selector, label) = args
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("{name}: {query:?} has no label"));
        assert_eq!(label.trim(), name, "{query:?}");
        let matchers = goroscope_promql::parse_selector(&substitute(selector.trim()))
            .unwrap_or_else(|e| panic!("{name}: {query:?}: {e}"));
        let metric = metric_name(&matchers, query);
        assert!(
            is_documented(metric, &docs),
            "{query:?}: {metric} is not in docs/metrics.md"
        );
    }
}

#[test]
fn every_panel_query_runs_on_the_engine_over_documented_metrics() {
    let dash = dashboard();
    let docs = documented();
    let options = QueryOptions::default();
    // Grafana aligns a range to its step: with whole minutes the engine reads the
    // 1 minute rollups; the raw path is checked with a range that is not aligned.
    let rollups = Recording::new(true);
    let raw = Recording::new(false);
    let mut queries = 0;
    for p in panels(&dash) {
        let title = p["title"].as_str().unwrap_or("?");
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: a query without expr"));
            let what = format!("{title}: {expr}");
            let query = substitute(expr);
            let instant = t["instant"] == true && t["range"] != true;
            for (source, offset) in [(&rollups, 0), (&raw, 7_000)] {
                let result = if instant {
                    goroscope_promql::instant_query(source, &query, END - offset, &options)
                } else {
                    goroscope_promql::range_query(
                        source,
                        &query,
                        START - offset,
                        END - offset,
                        STEP,
                        &options,
                    )
                };
                let value = result.unwrap_or_else(|e| panic!("{what}: refused: {e}"));
                let selectors = source.take();
                assert!(!selectors.is_empty(), "{what}: reads no series");
                for matchers in &selectors {
                    let metric = metric_name(matchers, &what);
                    assert!(
                        is_documented(metric, &docs),
                        "{what}: {metric} is not in docs/metrics.md"
                    );
                    for label in FILTERS {
                        assert!(
                            matchers
                                .iter()
                                .any(|m| m.name == label && m.op == MatchOp::Regex),
                            "{what}: the {metric} selector is not narrowed by ${label} \
                             ({label}=~\"${label}\")"
                        );
                    }
                }
                assert!(result_len(&value) > 0, "{what}: no series in the fleet");
            }
            queries += 1;
        }
    }
    assert!(queries >= 10, "only {queries} panel queries found");
}

#[test]
fn the_variables_narrow_the_panels() {
    // With one service chosen, no panel shows another.
    let dash = dashboard();
    let source = Recording::new(true);
    let options = QueryOptions::default();
    for p in panels(&dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            let query = substitute(&expr.replace("$service", "worker"));
            let value = goroscope_promql::range_query(&source, &query, START, END, STEP, &options)
                .unwrap_or_else(|e| panic!("{expr}: {e}"));
            let QueryValue::Matrix(series) = value else {
                panic!("{expr}: a range query answers a matrix");
            };
            for s in series {
                let service = s.labels.get("service");
                assert!(
                    service.is_empty() || service == "worker",
                    "{expr}: shows service {service:?} with service=worker chosen"
                );
            }
        }
    }
}
