//! Storage and query beside Debian's Prometheus, on the same samples.
//!
//! 1. Bytes per sample: every series recorded from the workloads
//!    (`aggregator/chunk/fixtures/series.txt.zst`, real Go runtime series at the
//!    collector's 10 s interval) is stored through goroscope's storage API, compacted
//!    into chunks (`flush`) and settled down to RocksDB's bottom level; the same samples
//!    go into Prometheus blocks with `promtool tsdb create-blocks-from openmetrics`.
//!    Both are measured on disk, by part.
//! 2. Queries: one series over 7 days at 10 s (60,480 samples), and 10,000 series
//!    (100 hosts of 100 processes) over the last hour, both stored the same way in
//!    both databases. Each query runs `GOROSCOPE_STORE_RUNS` times (25) after a warm-up,
//!    in process (goroscope's engine and its JSON) and over HTTP with keep-alive (curl,
//!    one connection for every run: HTTPS with a client certificate for goroscope,
//!    plain HTTP for Prometheus); the median and the fastest are reported, and the
//!    answers of both are compared.
//!
//! ```sh
//! cargo build --release --workspace --bins && cargo bench -p goroscope-tests --bench store
//! ```

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::env_or;
use goroscope_aggregator::expr::{self, When};
use goroscope_aggregator::storage::{
    Cancel, Coverage, IngestWrite, SeriesKey, SeriesPoints, Storage, StorageOptions, TargetKey,
    TargetUpdate,
};
use goroscope_tests::*;
use serde_json::Value;

const DAY_MS: i64 = 24 * 3600 * 1000;
const HOUR_MS: i64 = 3600 * 1000;

/// A target of the data set: its host, pid and service.
#[derive(Clone)]
struct Target {
    host: String,
    pid: u32,
    service: String,
}

/// One series: its target, metric, own labels and samples.
struct Series {
    target: usize,
    metric: String,
    labels: Vec<(String, String)>,
    points: Vec<(i64, f64)>,
}

struct DataSet {
    targets: Vec<Target>,
    series: Vec<Series>,
}

impl DataSet {
    fn samples(&self) -> usize {
        self.series.iter().map(|s| s.points.len()).sum()
    }
}

fn main() {
    let runs: usize = env_or("GOROSCOPE_STORE_RUNS", 25);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    println!("## bytes per sample: the recorded Go runtime series\n");
    let fixture = fixture_set();
    let (storage, guard) = store(&rt, &dir.path().join("fixture-db"), &fixture, "fixture");
    let ours = storage.disk_bytes_by_family();
    let (stored, head) = storage.samples_stored();
    drop(storage);
    guard.stop();
    assert_eq!(head, 0, "everything compacted");
    assert_eq!(
        stored as usize,
        fixture.samples(),
        "every sample stored once"
    );
    let prom_dir = dir.path().join("fixture-prom");
    let theirs = backfill(&fixture, &dir.path().join("fixture.om"), &prom_dir, "2h");
    print_sizes(fixture.samples(), &ours, &theirs);

    println!("\n## queries\n");
    // Queries at a whole minute (not a whole hour), as Grafana aligns its range queries
    // to their step.
    let end = (goroscope_proto::unix_ms() - 4 * HOUR_MS) / HOUR_MS * HOUR_MS + 37 * 60_000;
    let set = query_set(&fixture, end);
    let db = dir.path().join("query-db");
    let (storage, guard) = store(&rt, &db, &set, "query data");
    let ours_q = storage.disk_bytes_by_family();

    let one = "go_memstats_heap_inuse_bytes{host=\"one\"}";
    let queries: Vec<(&str, String, When)> = vec![
        (
            "one series, 7 d of raw samples",
            format!("{one}[7d]"),
            When::Instant(end),
        ),
        (
            "one series, 7 d at a 60 s step",
            one.to_owned(),
            When::Range {
                start_ms: end - 7 * DAY_MS,
                end_ms: end,
                step_ms: 60_000,
            },
        ),
        (
            "one series, max over 7 d",
            format!("max_over_time({one}[7d])"),
            When::Instant(end),
        ),
        (
            "10,000 series, average over 1 h, by host",
            "sum by (host) (avg_over_time(go_goroutines[1h]))".to_owned(),
            When::Instant(end),
        ),
        (
            "10,000 series, 1 h at a 60 s step",
            "sum(go_goroutines)".to_owned(),
            When::Range {
                start_ms: end - HOUR_MS,
                end_ms: end,
                step_ms: 60_000,
            },
        ),
        (
            "10,000 series, p99 over 1 h",
            "quantile(0.99, max_over_time(go_goroutines[1h]))".to_owned(),
            When::Instant(end),
        ),
    ];
    // In process: the engine, then the engine and the answer's JSON.
    let mut in_process = Vec::new();
    for (_, q, when) in &queries {
        let (mut engine, mut with_json) = (Vec::new(), Vec::new());
        for i in 0..=runs {
            let t = Instant::now();
            let value = expr::evaluate(&storage, &Cancel::new(), q, *when, expr::limits(&storage))
                .unwrap_or_else(|e| panic!("{q}: {e}"));
            let evaluated = t.elapsed();
            let json = goroscope_promql::api::success_json(&value);
            std::hint::black_box(json.len());
            if i > 0 {
                engine.push(evaluated);
                with_json.push(t.elapsed());
            }
        }
        in_process.push((engine, with_json));
    }
    if std::env::var_os("GOROSCOPE_STORE_IN_PROCESS_ONLY").is_some() {
        for ((_, q, _), (engine, with_json)) in queries.iter().zip(&in_process) {
            println!("| `{q}` | {} | {} |", show(engine), show(with_json));
        }
        return;
    }
    drop(storage);
    guard.stop();
    let prom_q = dir.path().join("query-prom");
    let theirs_q = backfill(&set, &dir.path().join("query.om"), &prom_q, "24h");
    println!(
        "query data: {} series, {} samples; goroscope {:.3} bytes/sample on disk, Prometheus {:.3}\n",
        set.series.len(),
        set.samples(),
        ours_q.iter().map(|(_, b)| b).sum::<u64>() as f64 / set.samples() as f64,
        theirs_q.iter().map(|(_, b)| b).sum::<u64>() as f64 / set.samples() as f64,
    );

    // Both servers on the data just measured.
    let certs = Certs::new(&["bench"]);
    let http_port = free_port();
    let agg = Aggregator::start_with(
        &certs,
        &db,
        0,
        &format!(
            "http_listen = \"127.0.0.1:{http_port}\"\n[detection]\nenabled = false\n\
             [limits]\nquery_timeout = \"60s\"\n[storage]\nmax_query_samples = 50000000\n"
        ),
    );
    let prom = Prometheus::start(dir.path(), &prom_q, &["--storage.tsdb.retention.time=30d"]);
    // Let it open (and, if it wants, compact) the blocks before timing.
    std::thread::sleep(Duration::from_secs(10));
    let ours_http = Http {
        base: format!("https://localhost:{http_port}"),
        args: certs.curl_args("operator-alice", http_port),
    };
    let theirs_http = Http {
        base: prom.url(),
        args: vec![],
    };
    println!(
        "| query | goroscope engine (median, fastest) | goroscope engine + JSON | goroscope HTTPS | Prometheus HTTP | same answer |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    for ((name, q, when), (engine, with_json)) in queries.iter().zip(&in_process) {
        let params = params(q, *when);
        let a = ours_http.get(&params);
        let b = theirs_http.get(&params);
        let same = same_answer(&a, &b);
        let ours_t = ours_http.time(&params, runs);
        let theirs_t = theirs_http.time(&params, runs);
        println!(
            "| `{q}` ({name}) | {} | {} | {} | {} | {} |",
            show(engine),
            show(with_json),
            show(&ours_t),
            show(&theirs_t),
            same,
        );
    }
    drop(agg);
}

/// The median and the fastest, in milliseconds.
fn show(times: &[Duration]) -> String {
    let mut t = times.to_vec();
    t.sort();
    format!(
        "{:.2} ms, {:.2} ms",
        t[t.len() / 2].as_secs_f64() * 1e3,
        t[0].as_secs_f64() * 1e3
    )
}

fn open(db: &Path) -> (Storage, goroscope_aggregator::storage::WriterGuard) {
    let (storage, guard, _) = Storage::open(
        db,
        StorageOptions {
            sync_writes: false,
            retention: Duration::from_secs(30 * 24 * 3600),
            max_query_samples: 50_000_000,
            ..StorageOptions::default()
        },
    )
    .expect("open the storage");
    (storage, guard)
}

/// Stores the data set in a new database at `db`, then compacts every sample into
/// chunks and the files down to RocksDB's bottom level.
fn store(
    rt: &tokio::runtime::Runtime,
    db: &Path,
    set: &DataSet,
    what: &str,
) -> (Storage, goroscope_aggregator::storage::WriterGuard) {
    eprintln!(
        "{what}: {} series, {} samples",
        set.series.len(),
        set.samples()
    );
    let (storage, guard) = open(db);
    let t = Instant::now();
    rt.block_on(load(&storage, set));
    eprintln!("stored in {:.1}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    rt.block_on(storage.flush(true)).expect("flush the head");
    storage.compact_files().expect("compact the files");
    eprintln!("compacted in {:.1}s", t.elapsed().as_secs_f64());
    (storage, guard)
}

/// Stores the data set: for each target a batch declaring it, then its series in
/// batches of at most 360 samples each (an hour of a 10 s series), as a collector
/// spool sends a backlog.
async fn load(storage: &Storage, set: &DataSet) {
    let mut by_target: BTreeMap<usize, Vec<&Series>> = BTreeMap::new();
    for s in &set.series {
        by_target.entry(s.target).or_default().push(s);
    }
    let mut seqs: HashMap<String, u64> = HashMap::new();
    for (t, series) in by_target {
        let target = &set.targets[t];
        let key = TargetKey {
            host: target.host.clone(),
            pid: target.pid,
            start_ticks: u64::from(target.pid),
        };
        let longest = series.iter().map(|s| s.points.len()).max().unwrap_or(0);
        let first = series
            .iter()
            .filter_map(|s| s.points.first())
            .map(|p| p.0)
            .min()
            .unwrap_or(0);
        let keys: Vec<Arc<SeriesKey>> = series
            .iter()
            .map(|s| {
                Arc::new(SeriesKey {
                    target: key.clone(),
                    metric: s.metric.clone(),
                    labels: s.labels.clone(),
                })
            })
            .collect();
        let mut from = 0;
        while from < longest.max(1) {
            let to = (from + 360).min(longest);
            let seq = seqs.entry(target.host.clone()).or_default();
            *seq += 1;
            let write = IngestWrite {
                host: target.host.clone(),
                epoch: 1,
                seq: *seq,
                received_ms: goroscope_proto::unix_ms(),
                targets: if from == 0 {
                    vec![TargetUpdate {
                        key: key.clone(),
                        labels: BTreeMap::from([("service".to_owned(), target.service.clone())]),
                        coverage: Coverage {
                            proc: true,
                            metrics: true,
                            ..Coverage::default()
                        },
                        start_time_ms: first,
                        runtime_env: BTreeMap::new(),
                        build: None,
                    }]
                } else {
                    vec![]
                },
                samples: series
                    .iter()
                    .zip(&keys)
                    .filter(|(s, _)| s.points.len() > from)
                    .map(|(s, k)| SeriesPoints {
                        series: k.clone(),
                        points: s.points[from..to.min(s.points.len())].to_vec(),
                    })
                    .collect(),
                gone: vec![],
                stacks: vec![],
                losses: vec![],
            };
            // One batch at a time: a host's batches are stored in sequence order.
            storage.write(write).await.expect("store a batch");
            from = to.max(from + 1);
        }
    }
}

/// Every recorded series, each recording (service, series, occurrence) its own target,
/// shifted in time so that the newest sample is 6 hours old (all of it in closed
/// partitions).
fn fixture_set() -> DataSet {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../aggregator/chunk/fixtures/series.txt.zst");
    let raw = zstd::decode_all(std::fs::File::open(&path).expect("open the fixture"))
        .expect("decompress the fixture");
    let text = String::from_utf8(raw).expect("fixture is UTF-8");
    let mut targets: Vec<Target> = Vec::new();
    let mut target_of: HashMap<(String, usize), usize> = HashMap::new();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let mut series = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let (name, service, t0) = (f[1], f[2], f[3].parse::<i64>().unwrap());
        let deltas: Vec<i64> = f[4]
            .split(',')
            .filter(|d| !d.is_empty())
            .map(|d| d.parse().unwrap())
            .collect();
        let values: Vec<f64> = f[5].split(',').map(|v| v.parse().unwrap()).collect();
        let mut t = t0;
        let mut points = vec![(t, values[0])];
        for (d, v) in deltas.iter().zip(&values[1..]) {
            t += d;
            points.push((t, *v));
        }
        let occurrence = seen
            .entry((service.to_owned(), name.to_owned()))
            .or_default();
        let n = *occurrence;
        *occurrence += 1;
        let target = *target_of.entry((service.to_owned(), n)).or_insert_with(|| {
            targets.push(Target {
                host: "fixture".into(),
                pid: 1000 + targets.len() as u32,
                service: service.to_owned(),
            });
            targets.len() - 1
        });
        let (metric, labels) = parse_name(name);
        series.push(Series {
            target,
            metric,
            labels,
            points,
        });
    }
    let newest = series
        .iter()
        .filter_map(|s| s.points.last())
        .map(|p| p.0)
        .max()
        .unwrap();
    let shift = (goroscope_proto::unix_ms() - 6 * HOUR_MS) / 1000 * 1000 - newest / 1000 * 1000;
    for s in &mut series {
        for p in &mut s.points {
            p.0 += shift;
        }
    }
    DataSet { targets, series }
}

/// `name{a="b",c="d"}` as the name and its labels.
fn parse_name(s: &str) -> (String, Vec<(String, String)>) {
    let Some((name, rest)) = s.split_once('{') else {
        return (s.to_owned(), vec![]);
    };
    let body = rest.strip_suffix('}').unwrap_or(rest);
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "{s}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.push(chars.next().unwrap_or('\\')),
                '"' => break,
                c => value.push(c),
            }
        }
        if chars.peek() == Some(&',') {
            chars.next();
        }
        labels.push((key.trim().to_owned(), value));
    }
    labels.sort();
    (name.to_owned(), labels)
}

/// One process's heap over 7 days and 10,000 processes' goroutines over the last
/// hour and 10 minutes, at 10 s with the recorded jitter, values cycled from the
/// recorded series of that metric.
fn query_set(fixture: &DataSet, end: i64) -> DataSet {
    let recorded = |metric: &str| -> Vec<&Series> {
        fixture
            .series
            .iter()
            .filter(|s| s.metric == metric && s.labels.is_empty() && s.points.len() > 100)
            .collect()
    };
    let heap = recorded("go_memstats_heap_inuse_bytes");
    let goroutines = recorded("go_goroutines");
    // Timestamps 10 s apart plus the recorded milliseconds of jitter.
    let jitter: Vec<i64> = heap[0]
        .points
        .iter()
        .map(|p| p.0 % 10_000 - heap[0].points[0].0 % 10_000)
        .collect();
    let series_from = |src: &Series, n: usize, start: i64, offset: usize| -> Vec<(i64, f64)> {
        (0..n)
            .map(|i| {
                let k = (i + offset) % src.points.len();
                let j = jitter[(i + offset) % jitter.len()].clamp(-900, 900);
                // 137 ms off the 10 s grid: no sample falls on a window edge, where
                // Prometheus 2.42 (closed windows) and 3 (left-open) differ.
                (start + i as i64 * 10_000 + j + 137, src.points[k].1)
            })
            .collect()
    };
    let mut targets = vec![Target {
        host: "one".into(),
        pid: 1,
        service: "api".into(),
    }];
    let week = 7 * 24 * 360;
    let mut series = vec![Series {
        target: 0,
        metric: "go_memstats_heap_inuse_bytes".into(),
        labels: vec![],
        points: series_from(heap[0], week + 1, end - 7 * DAY_MS, 0),
    }];
    let n = 70 * 6 + 1;
    for i in 0..10_000usize {
        targets.push(Target {
            host: format!("wide-{:02}", i / 100),
            pid: 10_000 + i as u32,
            service: format!("svc-{}", i % 7),
        });
        series.push(Series {
            target: targets.len() - 1,
            metric: "go_goroutines".into(),
            labels: vec![],
            points: series_from(goroutines[i % goroutines.len()], n, end - 70 * 60_000, i),
        });
    }
    DataSet { targets, series }
}

/// Writes the data set as OpenMetrics text and turns it into Prometheus blocks of at
/// most `block`; returns the blocks' bytes by part.
fn backfill(set: &DataSet, text: &Path, out: &Path, block: &str) -> Vec<(&'static str, u64)> {
    let mut families: BTreeMap<&str, Vec<&Series>> = BTreeMap::new();
    for s in &set.series {
        families.entry(&s.metric).or_default().push(s);
    }
    let mut w = BufWriter::new(std::fs::File::create(text).unwrap());
    for (name, members) in families {
        writeln!(w, "# TYPE {name} unknown").unwrap();
        for s in members {
            let t = &set.targets[s.target];
            let mut labels = vec![
                ("host".to_owned(), t.host.clone()),
                ("pid".to_owned(), t.pid.to_string()),
                ("service".to_owned(), t.service.clone()),
            ];
            labels.extend(s.labels.iter().cloned());
            let labels = labels
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}=\"{}\"",
                        v.replace('\\', "\\\\")
                            .replace('"', "\\\"")
                            .replace('\n', "\\n")
                    )
                })
                .collect::<Vec<_>>()
                .join(",");
            for (ts, v) in &s.points {
                let value = if v.is_nan() {
                    "NaN".to_owned()
                } else if v.is_infinite() {
                    if *v > 0.0 {
                        "+Inf".into()
                    } else {
                        "-Inf".into()
                    }
                } else {
                    format!("{v:e}")
                };
                writeln!(
                    w,
                    "{name}{{{labels}}} {value} {}.{:03}",
                    ts / 1000,
                    ts % 1000
                )
                .unwrap();
            }
        }
    }
    writeln!(w, "# EOF").unwrap();
    w.flush().unwrap();
    drop(w);
    let t = Instant::now();
    let status = Command::new("promtool")
        .args([
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--max-block-duration",
            block,
        ])
        .arg(text)
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run promtool");
    assert!(status.success(), "promtool failed");
    eprintln!("promtool backfill in {:.1}s", t.elapsed().as_secs_f64());
    std::fs::remove_file(text).ok();
    let mut chunks = 0;
    let mut index = 0;
    let mut other = 0;
    for block in std::fs::read_dir(out).unwrap() {
        let block = block.unwrap().path();
        for entry in walk(&block) {
            let len = entry.metadata().unwrap().len();
            let rel = entry
                .strip_prefix(&block)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.starts_with("chunks") {
                chunks += len;
            } else if rel == "index" {
                index += len;
            } else {
                other += len;
            }
        }
    }
    vec![("chunks", chunks), ("index", index), ("other", other)]
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn print_sizes(samples: usize, ours: &[(&str, u64)], theirs: &[(&str, u64)]) {
    let per = |b: u64| b as f64 / samples as f64;
    println!("{samples} samples.\n");
    println!("| store | part | bytes | bytes/sample |");
    println!("|---|---|---:|---:|");
    let total: u64 = ours.iter().map(|(_, b)| b).sum();
    for (cf, b) in ours.iter().filter(|(_, b)| *b > 0) {
        println!(
            "| goroscope | column family `{cf}` | {b} | {:.3} |",
            per(*b)
        );
    }
    println!("| goroscope | **all** | {total} | **{:.3}** |", per(total));
    let total: u64 = theirs.iter().map(|(_, b)| b).sum();
    for (part, b) in theirs {
        println!("| Prometheus 2.42 | {part} | {b} | {:.3} |", per(*b));
    }
    println!(
        "| Prometheus 2.42 | **all** | {total} | **{:.3}** |",
        per(total)
    );
}

/// The HTTP API's parameters of a query.
fn params(q: &str, when: When) -> Vec<(String, String)> {
    let secs = |ms: i64| format!("{}.{:03}", ms / 1000, ms % 1000);
    let mut p = vec![("query".to_owned(), q.to_owned())];
    match when {
        When::Instant(t) => p.push(("time".into(), secs(t))),
        When::Range {
            start_ms,
            end_ms,
            step_ms,
        } => {
            p.push(("start".into(), secs(start_ms)));
            p.push(("end".into(), secs(end_ms)));
            p.push(("step".into(), format!("{}", step_ms as f64 / 1000.0)));
        }
    }
    p
}

fn path_of(params: &[(String, String)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let range = params.iter().any(|(k, _)| k == "step");
    let query = params
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "/api/v1/{}?{query}",
        if range { "query_range" } else { "query" }
    )
}

/// An HTTP API, reached with curl.
struct Http {
    base: String,
    args: Vec<String>,
}

impl Http {
    fn get(&self, params: &[(String, String)]) -> Value {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "120"])
            .args(&self.args)
            .arg(format!("{}{}", self.base, path_of(params)))
            .output()
            .expect("run curl");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(500)])
            )
        })
    }

    /// `runs` requests after one warm-up, on one kept-alive connection: each one's
    /// time from sending to the last byte of the answer.
    fn time(&self, params: &[(String, String)], runs: usize) -> Vec<Duration> {
        let url = format!("{}{}", self.base, path_of(params));
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "600",
            "-w",
            "%{time_total} %{time_pretransfer}\\n",
        ])
        .args(&self.args);
        for _ in 0..=runs {
            cmd.args(["-o", "/dev/null", &url]);
        }
        let out = cmd.output().expect("run curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .map(|l| {
                let mut f = l.split_whitespace().map(|x| x.parse::<f64>().unwrap());
                let (total, pre) = (f.next().unwrap(), f.next().unwrap());
                Duration::from_secs_f64((total - pre).max(0.0))
            })
            .collect()
    }
}

/// Whether two answers hold the same series and values (within 1e-9 relative).
fn same_answer(a: &Value, b: &Value) -> String {
    let rows = |v: &Value| -> BTreeMap<String, Vec<(f64, f64)>> {
        let data = &v["data"];
        let mut out = BTreeMap::new();
        for r in data["result"].as_array().cloned().unwrap_or_default() {
            let mut metric: Vec<(String, String)> = r["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        // The labels both stores give the data set's series.
                        .filter(|(k, _)| {
                            matches!(k.as_str(), "__name__" | "host" | "pid" | "service")
                        })
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            metric.sort();
            let pts = |p: &Value| {
                (
                    p[0].as_f64().unwrap(),
                    p[1].as_str().unwrap().parse::<f64>().unwrap(),
                )
            };
            let points = match (r.get("value"), r.get("values")) {
                (Some(p), _) => vec![pts(p)],
                (_, Some(ps)) => ps.as_array().unwrap().iter().map(pts).collect(),
                _ => vec![],
            };
            out.insert(format!("{metric:?}"), points);
        }
        out
    };
    if a["status"] != "success" || b["status"] != "success" {
        return format!("no: {} / {}", a["error"], b["error"]);
    }
    let (ra, rb) = (rows(a), rows(b));
    if ra.len() != rb.len() {
        return format!("no: {} vs {} series", ra.len(), rb.len());
    }
    let points: usize = ra.values().map(Vec::len).sum();
    for ((ka, pa), (kb, pb)) in ra.iter().zip(&rb) {
        if ka != kb || pa.len() != pb.len() {
            return format!("no: {ka} ({}) vs {kb} ({})", pa.len(), pb.len());
        }
        for (x, y) in pa.iter().zip(pb) {
            let close = (x.1 - y.1).abs() <= 1e-9 * x.1.abs().max(y.1.abs())
                || (x.1.is_nan() && y.1.is_nan());
            if x.0 != y.0 || !close {
                return format!("no: {ka} at {} {} vs {}", x.0, x.1, y.1);
            }
        }
    }
    format!("yes ({} series, {points} points)", ra.len())
}
