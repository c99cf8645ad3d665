//! `goroscope explain TARGET`: one page on one process, from the queries that exist
//! (its latest values, runtime settings, newest stack summary, open anomalies). A
//! source that is missing or a query that fails costs its own section only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;

use goroscope_daemon::escape::escape;
use goroscope_proto::v1;
use serde_json::{Value, json};

use goroscope_proto::v1::query_client::QueryClient;
use tonic::transport::Channel;

use crate::Output;
use crate::client;
use crate::diagnose;
use crate::render;

/// Width of the RSS bar, in columns.
const BAR_WIDTH: usize = 60;
/// Signatures listed under goroutines.
const TOP_SIGNATURES: usize = 5;
const MIB: f64 = 1024.0 * 1024.0;

/// The memory figures the breakdown reads, each absent when its source did not answer.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct MemoryFigures {
    /// `process_resident_memory_bytes`
    pub rss: Option<f64>,
    /// `go_memstats_heap_inuse_bytes`
    pub heap_inuse: Option<f64>,
    /// `go_memstats_heap_idle_bytes`
    pub heap_idle: Option<f64>,
    /// `go_memstats_heap_released_bytes`
    pub heap_released: Option<f64>,
    /// `go_memstats_stack_inuse_bytes`
    pub stack_inuse: Option<f64>,
    /// `go_memstats_sys_bytes`
    pub sys: Option<f64>,
    /// `go_memstats_heap_sys_bytes`
    pub heap_sys: Option<f64>,
    /// `go_memstats_stack_sys_bytes`
    pub stack_sys: Option<f64>,
    /// `process_lazyfree_bytes`
    pub lazyfree: Option<f64>,
}

impl MemoryFigures {
    pub fn from_latest(latest: &Latest) -> MemoryFigures {
        MemoryFigures {
            rss: latest.get("process_resident_memory_bytes"),
            heap_inuse: latest.get("go_memstats_heap_inuse_bytes"),
            heap_idle: latest.get("go_memstats_heap_idle_bytes"),
            heap_released: latest.get("go_memstats_heap_released_bytes"),
            stack_inuse: latest.get("go_memstats_stack_inuse_bytes"),
            sys: latest.get("go_memstats_sys_bytes"),
            heap_sys: latest.get("go_memstats_heap_sys_bytes"),
            stack_sys: latest.get("go_memstats_stack_sys_bytes"),
            lazyfree: latest.get("process_lazyfree_bytes"),
        }
    }
}

/// One part of RSS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    HeapInuse,
    HeapIdleRetained,
    HeapReleasedLazyFree,
    Stacks,
    OtherRuntime,
    OffHeap,
    LazyFreeOther,
    /// RSS not broken down, for want of the runtime's figures.
    Unexplained,
}

impl Part {
    /// The key in `-o json` (with `_bytes` appended).
    pub fn key(self) -> &'static str {
        match self {
            Part::HeapInuse => "heap_inuse",
            Part::HeapIdleRetained => "heap_idle_not_released",
            Part::HeapReleasedLazyFree => "heap_released_lazyfree",
            Part::Stacks => "goroutine_stacks",
            Part::OtherRuntime => "other_runtime",
            Part::OffHeap => "off_heap",
            Part::LazyFreeOther => "lazyfree_other",
            Part::Unexplained => "unexplained",
        }
    }

    fn legend(self) -> &'static str {
        match self {
            Part::HeapInuse => "heap in use",
            Part::HeapIdleRetained => "heap idle, not released",
            Part::HeapReleasedLazyFree => "heap released, still resident (LazyFree)",
            Part::Stacks => "goroutine stacks",
            Part::OtherRuntime => "other runtime (Go sys - heap sys - stack sys)",
            Part::OffHeap => "off-heap (cgo, mmap, binary: RSS - runtime)",
            Part::LazyFreeOther => "LazyFree, not the Go heap's",
            Part::Unexplained => "not broken down",
        }
    }

    fn glyph(self) -> char {
        match self {
            Part::HeapInuse => '█',
            Part::HeapIdleRetained => '▓',
            Part::HeapReleasedLazyFree => '▒',
            Part::Stacks => '▆',
            Part::OtherRuntime => '▄',
            Part::OffHeap => '░',
            Part::LazyFreeOther => '▚',
            Part::Unexplained => '·',
        }
    }
}

/// RSS split into what holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct RssBreakdown {
    pub rss: f64,
    /// Parts in display order, each at least 0; they sum to `rss + beyond_rss`.
    pub parts: Vec<(Part, f64)>,
    /// What the runtime's figures account for beyond RSS (memory mapped but not
    /// resident: never touched, or swapped out); 0 when they fit in RSS.
    pub beyond_rss: f64,
    /// What the reader should know: a missing source, a figure that does not fit.
    pub notes: Vec<String>,
}

impl RssBreakdown {
    pub fn part(&self, part: Part) -> Option<f64> {
        self.parts.iter().find(|(p, _)| *p == part).map(|(_, v)| *v)
    }
}

/// A figure as a size: NaN and negative values count as 0.
fn size(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 { v } else { 0.0 }
}

/// Splits RSS into the runtime's parts and what is left (off-heap); `None` without RSS.
///
/// Released heap pages are out of RSS unless the runtime released them with
/// `MADV_FREE` and the kernel has not taken them back yet: then they are LazyFree, so
/// the released heap counts in RSS up to the process's LazyFree bytes.
pub fn rss_breakdown(f: &MemoryFigures) -> Option<RssBreakdown> {
    let rss = size(f.rss?);
    let mut parts = Vec::new();
    let mut notes = Vec::new();
    let lazyfree = f.lazyfree.map(size);
    let heap = match (f.heap_inuse, f.heap_idle, f.heap_released) {
        (Some(inuse), Some(idle), Some(released)) => {
            Some((size(inuse), size(idle), size(released)))
        }
        _ => None,
    };
    let mut released_resident = 0.0;
    if let Some((inuse, idle, released)) = heap {
        parts.push((Part::HeapInuse, inuse));
        parts.push((Part::HeapIdleRetained, size(idle - released)));
        if let Some(lazy) = lazyfree {
            released_resident = released.min(lazy);
            parts.push((Part::HeapReleasedLazyFree, released_resident));
        }
    } else {
        notes.push("heap figures need expvar or /metrics".to_owned());
    }
    if let Some(stacks) = f.stack_inuse {
        parts.push((Part::Stacks, size(stacks)));
    }
    if let (Some(sys), Some(heap_sys), Some(stack_sys)) = (f.sys, f.heap_sys, f.stack_sys) {
        parts.push((Part::OtherRuntime, size(sys - heap_sys - stack_sys)));
    }
    if let Some(lazy) = lazyfree {
        parts.push((Part::LazyFreeOther, size(lazy - released_resident)));
    } else if heap.is_some() {
        notes.push(
            "LazyFree not read yet (smaps_rollup, once a minute): released heap counted as \
             returned"
                .to_owned(),
        );
    }
    let accounted: f64 = parts.iter().map(|(_, v)| v).sum();
    let rest = size(rss - accounted);
    let beyond_rss = size(accounted - rss);
    // The runtime's own parts are what make the rest "off-heap"; without them it is just
    // not broken down.
    let runtime_known = heap.is_some() || f.stack_inuse.is_some() || f.sys.is_some();
    parts.push((
        if runtime_known {
            Part::OffHeap
        } else {
            Part::Unexplained
        },
        rest,
    ));
    if beyond_rss > 0.0 {
        notes.push(format!(
            "the runtime's figures come to {} more than RSS: memory it mapped that is not \
             resident, never touched or swapped out",
            mib(beyond_rss)
        ));
    }
    Some(RssBreakdown {
        rss,
        parts,
        beyond_rss,
        notes,
    })
}

fn mib(v: f64) -> String {
    format!("{:.1} MiB", v / MIB)
}

/// Columns per part out of `width`, by largest remainder, so that they fill it exactly.
fn bar_columns(values: &[f64], width: usize) -> Vec<usize> {
    let total: f64 = values.iter().sum();
    if total <= 0.0 {
        return vec![0; values.len()];
    }
    let exact: Vec<f64> = values.iter().map(|v| v / total * width as f64).collect();
    let mut cols: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    let short = width.saturating_sub(cols.iter().sum());
    for &i in order.iter().take(short) {
        cols[i] += 1;
    }
    cols
}

/// The breakdown as a bar, a legend and the notes.
pub fn rss_text(b: &RssBreakdown) -> String {
    let values: Vec<f64> = b.parts.iter().map(|(_, v)| *v).collect();
    let cols = bar_columns(&values, BAR_WIDTH);
    let mut out = format!("memory: RSS {}\n  ", mib(b.rss));
    for ((part, _), n) in b.parts.iter().zip(&cols) {
        out.extend(std::iter::repeat_n(part.glyph(), *n));
    }
    out.push('\n');
    let width = b
        .parts
        .iter()
        .map(|(p, _)| p.legend().len())
        .max()
        .unwrap_or(0);
    let total: f64 = values.iter().sum();
    for (part, v) in &b.parts {
        // An empty part of the runtime's says nothing; an empty rest says all is explained.
        if *v == 0.0 && !matches!(part, Part::OffHeap | Part::Unexplained) {
            continue;
        }
        let share = if total > 0.0 { v / total * 100.0 } else { 0.0 };
        let _ = writeln!(
            out,
            "  {} {:<width$}  {:>10}  {:>3.0}%",
            part.glyph(),
            part.legend(),
            mib(*v),
            share
        );
    }
    for note in &b.notes {
        let _ = writeln!(out, "  ({note})");
    }
    out
}

fn rss_json(b: Option<&RssBreakdown>) -> Value {
    let Some(b) = b else {
        return json!({"rss_bytes": null, "notes": ["no RSS: the collector reads it from /proc"]});
    };
    let mut v = json!({"rss_bytes": b.rss, "beyond_rss_bytes": b.beyond_rss, "notes": b.notes});
    for part in [
        Part::HeapInuse,
        Part::HeapIdleRetained,
        Part::HeapReleasedLazyFree,
        Part::Stacks,
        Part::OtherRuntime,
        Part::OffHeap,
        Part::LazyFreeOther,
        Part::Unexplained,
    ] {
        v[format!("{}_bytes", part.key())] = b.part(part).map_or(Value::Null, |x| json!(x));
    }
    v
}

/// A target's latest value per metric (series without labels of their own).
#[derive(Debug, Default)]
pub struct Latest(BTreeMap<String, f64>);

impl Latest {
    pub fn of(target: &v1::TargetInfo) -> Latest {
        Latest(
            target
                .latest
                .iter()
                .filter(|m| m.labels.is_empty())
                .map(|m| (m.metric.clone(), m.value()))
                .collect(),
        )
    }

    pub fn get(&self, metric: &str) -> Option<f64> {
        self.0.get(metric).copied().filter(|v| v.is_finite())
    }
}

/// Everything `explain` shows, as fetched; a query that failed keeps its one-line reason.
#[derive(Debug)]
pub struct Inputs {
    pub target: v1::TargetInfo,
    pub runtime_env: Result<Vec<v1::Label>, String>,
    pub stacks: Result<v1::StacksResponse, String>,
    pub anomalies: Result<Vec<v1::Anomaly>, String>,
    /// GC cycles per minute over the recent samples, when there were enough.
    pub gc_per_min_recent: Option<f64>,
}

impl Inputs {
    fn env(&self, name: &str) -> Option<&str> {
        self.runtime_env
            .as_ref()
            .ok()?
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }
}

/// Goroutine counts by wait reason, largest first; the running or unknown ones as "-".
fn by_state(signatures: &[v1::StackSignature]) -> Vec<(String, u64)> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for s in signatures {
        let reason = if s.wait_reason.is_empty() {
            "-".to_owned()
        } else {
            s.wait_reason.clone()
        };
        *counts.entry(reason).or_default() += s.count;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

fn top_signatures(signatures: &[v1::StackSignature]) -> Vec<&v1::StackSignature> {
    let mut v: Vec<_> = signatures.iter().collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.count));
    v.truncate(TOP_SIGNATURES);
    v
}

/// GC cycles per minute: over the recent samples, else averaged since the process
/// started; with which.
fn gc_per_min(i: &Inputs, latest: &Latest) -> Option<(f64, &'static str)> {
    if let Some(rate) = i.gc_per_min_recent {
        return Some((rate, "last 10m"));
    }
    let cycles = latest.get("go_gc_cycles_total")?;
    let at = i
        .target
        .latest
        .iter()
        .find(|m| m.metric == "go_gc_cycles_total")?
        .timestamp_ms;
    let minutes = (at - i.target.start_time_ms) as f64 / 60_000.0;
    (i.target.start_time_ms > 0 && minutes > 0.0).then(|| (cycles / minutes, "since start"))
}

/// GOMAXPROCS, and where it came from: the runtime's own figure first (a program may
/// set it in code), then the environment.
fn gomaxprocs(i: &Inputs, latest: &Latest) -> Option<(f64, &'static str)> {
    if let Some(v) = latest.get("go_sched_gomaxprocs_threads") {
        return Some((v, "go_sched_gomaxprocs_threads"));
    }
    i.env("GOMAXPROCS")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| (v, "GOMAXPROCS environment"))
}

fn opt(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |v| json!(v))
}

pub fn explain_json(i: &Inputs) -> Value {
    let latest = Latest::of(&i.target);
    let id = i.target.id.clone().unwrap_or_default();
    let breakdown = rss_breakdown(&MemoryFigures::from_latest(&latest));
    let goroutines = match &i.stacks {
        Ok(s) if s.timestamp_ms != 0 => json!({
            "total": latest.get("go_goroutines").unwrap_or(s.total as f64),
            "summary_ms": s.timestamp_ms,
            "by_state": by_state(&s.signatures).into_iter().map(|(k, n)| (k, json!(n))).collect::<serde_json::Map<_, _>>(),
            "top": top_signatures(&s.signatures).iter().map(|s| json!({
                "count": s.count,
                "wait_reason": s.wait_reason,
                "top_frame": s.frames.first(),
                "first_seen_ms": s.first_seen_ms,
            })).collect::<Vec<_>>(),
        }),
        Ok(_) => json!({"total": opt(latest.get("go_goroutines")), "missing": "no stack summary"}),
        Err(e) => json!({"total": opt(latest.get("go_goroutines")), "missing": e}),
    };
    let (per_min, basis) = gc_per_min(i, &latest).unzip();
    let gc = json!({
        "cycles_per_min": opt(per_min),
        "cycles_per_min_basis": basis,
        "cpu_fraction": opt(latest.get("go_memstats_gc_cpu_fraction")),
        "next_gc_bytes": opt(latest.get("go_memstats_next_gc_bytes")),
        "heap_alloc_bytes": opt(latest.get("go_memstats_heap_alloc_bytes")),
        "gogc": i.env("GOGC"),
        "gomemlimit": i.env("GOMEMLIMIT"),
    });
    let (procs, procs_source) = gomaxprocs(i, &latest).unzip();
    json!({
        "target": {
            "host": id.host, "pid": id.pid, "start_ticks": id.start_ticks,
            "labels": i.target.labels.iter().map(|l| (l.name.clone(), json!(l.value))).collect::<serde_json::Map<_, _>>(),
            "last_seen_ms": i.target.last_seen_ms,
            "exited": i.target.exited,
        },
        "rss": rss_json(breakdown.as_ref()),
        "goroutines": goroutines,
        "gc": gc,
        "threads": {
            "threads": opt(latest.get("process_threads")),
            "gomaxprocs": opt(procs),
            "gomaxprocs_source": procs_source,
        },
        "anomalies": match &i.anomalies {
            Ok(a) => json!(a.iter().map(diagnose::anomaly_json).collect::<Vec<_>>()),
            Err(_) => Value::Null,
        },
    })
}

pub fn explain_text(i: &Inputs, now: i64) -> String {
    let latest = Latest::of(&i.target);
    let id = i.target.id.clone().unwrap_or_default();
    let label = |name: &str| {
        i.target
            .labels
            .iter()
            .find(|l| l.name == name)
            .map_or("", |l| l.value.as_str())
    };
    let mut out = String::new();
    let mut head = format!("{} pid {}", id.host, id.pid);
    for name in ["service", "version", "go_version"] {
        if !label(name).is_empty() {
            head.push(' ');
            head.push_str(label(name));
        }
    }
    let _ = writeln!(
        out,
        "{}, {} {}",
        escape(&head),
        if i.target.exited {
            "exited, seen"
        } else {
            "seen"
        },
        render::ago(now.saturating_sub(i.target.last_seen_ms))
    );

    out.push('\n');
    match rss_breakdown(&MemoryFigures::from_latest(&latest)) {
        Some(b) => out.push_str(&rss_text(&b)),
        None => out.push_str("memory: no RSS (the collector reads it from /proc)\n"),
    }

    out.push('\n');
    let total = latest.get("go_goroutines");
    match &i.stacks {
        Ok(s) if s.timestamp_ms != 0 => {
            let total = total.unwrap_or(s.total as f64);
            let _ = writeln!(
                out,
                "goroutines: {} (stack summary {})",
                render::number(total),
                render::ago(now.saturating_sub(s.timestamp_ms))
            );
            let states: Vec<String> = by_state(&s.signatures)
                .into_iter()
                .map(|(reason, n)| format!("{} {n}", escape(&reason)))
                .collect();
            if !states.is_empty() {
                let _ = writeln!(out, "  by state: {}", states.join(", "));
            }
            for sig in top_signatures(&s.signatures) {
                let reason = if sig.wait_reason.is_empty() {
                    "-"
                } else {
                    &sig.wait_reason
                };
                let first = if sig.first_seen_ms > 0 {
                    format!(
                        ", first seen {}",
                        render::ago(now.saturating_sub(sig.first_seen_ms))
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "  {:>7}  {}  {}{first}",
                    sig.count,
                    escape(reason),
                    escape(sig.frames.first().map_or("-", String::as_str)),
                );
            }
        }
        other => {
            let why = match other {
                Err(e) => e.clone(),
                _ => "no stack summary yet (needs net/http/pprof)".to_owned(),
            };
            match total {
                Some(t) => {
                    let _ = writeln!(out, "goroutines: {}", render::number(t));
                }
                None => out.push_str("goroutines: unknown\n"),
            }
            let _ = writeln!(out, "  stacks: {}", escape(&why));
        }
    }

    out.push('\n');
    let mut gc = Vec::new();
    if let Some((rate, basis)) = gc_per_min(i, &latest) {
        gc.push(format!("{rate:.1} cycles/min ({basis})"));
    }
    if let Some(f) = latest.get("go_memstats_gc_cpu_fraction") {
        gc.push(format!("{:.2}% of CPU since start", f * 100.0));
    }
    if let (Some(next), Some(alloc)) = (
        latest.get("go_memstats_next_gc_bytes"),
        latest.get("go_memstats_heap_alloc_bytes"),
    ) {
        let ratio = if alloc > 0.0 {
            format!(" ({:.2}x)", next / alloc)
        } else {
            String::new()
        };
        gc.push(format!(
            "next GC at {} for {} allocated{ratio}",
            mib(next),
            mib(alloc)
        ));
    }
    let settings = match &i.runtime_env {
        Ok(_) => format!(
            "GOGC={} GOMEMLIMIT={}",
            escape(i.env("GOGC").unwrap_or("default")),
            escape(i.env("GOMEMLIMIT").unwrap_or("unset"))
        ),
        Err(e) => format!("runtime settings unavailable: {}", escape(e)),
    };
    if gc.is_empty() {
        let _ = writeln!(
            out,
            "gc: no figures (they need expvar or /metrics); {settings}"
        );
    } else {
        let _ = writeln!(out, "gc: {}", gc.join(", "));
        let _ = writeln!(out, "  {settings}");
    }

    let threads = latest
        .get("process_threads")
        .map_or("unknown".to_owned(), render::number);
    let procs = match gomaxprocs(i, &latest) {
        Some((v, source)) => format!("{} ({source})", render::number(v)),
        None => "unknown".to_owned(),
    };
    let _ = writeln!(out, "threads: {threads}, GOMAXPROCS {procs}");

    out.push('\n');
    match &i.anomalies {
        Ok(a) if a.is_empty() => out.push_str("no open anomalies\n"),
        Ok(a) => out.push_str(&diagnose::anomalies_text(a, false, now)),
        Err(e) => {
            let _ = writeln!(out, "anomalies: {}", escape(e));
        }
    }
    out
}

pub fn print(i: &Inputs, output: Output) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if output == Output::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&explain_json(i))?)?;
    } else {
        write!(out, "{}", explain_text(i, goroscope_proto::unix_ms()))?;
    }
    Ok(())
}

/// How far back the GC rate looks.
const GC_RATE_WINDOW_MS: i64 = 10 * 60_000;

/// Fetches what `explain` shows of the one target `matchers` select. Only the target
/// itself is required; every other query that fails leaves its reason in its place.
pub async fn fetch(
    client: &mut QueryClient<Channel>,
    addr: &str,
    matchers: Vec<v1::LabelMatcher>,
) -> anyhow::Result<Inputs> {
    // Two at most: enough to tell one from several, as the single-target queries do.
    let page = client
        .list_targets(v1::ListTargetsRequest {
            matchers: matchers.clone(),
            seen_since_ms: 0,
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .map_err(|s| client::status_error(addr, s))?
        .into_inner();
    let target = match page.targets.as_slice() {
        [] => anyhow::bail!("no target matches"),
        [one] if page.next_page_token.is_empty() => one.clone(),
        _ => anyhow::bail!("several targets match: narrow it down (HOST:PID, or add LABEL=VALUE)"),
    };
    let id = target.id.clone().unwrap_or_default();
    let runtime_env = client
        .describe_target(v1::DescribeTargetRequest {
            matchers: matchers.clone(),
        })
        .await
        .map(|r| r.into_inner().runtime_env)
        .map_err(|s| query_failed("DescribeTarget", &s));
    let stacks = client
        .stacks(v1::StacksRequest {
            matchers: matchers.clone(),
            at_ms: 0,
            from_ms: 0,
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| query_failed("Stacks", &s));
    let anomalies = client
        .anomalies(v1::AnomaliesRequest {
            matchers: matchers.clone(),
            all: false,
            limit: 0,
        })
        .await
        .map(|r| {
            let mut a = r.into_inner().anomalies;
            a.retain(|a| a.target.as_ref() == Some(&id));
            a
        })
        .map_err(|s| query_failed("Anomalies", &s));
    let now = goroscope_proto::unix_ms();
    let gc_per_min_recent = client
        .query_range(v1::QueryRangeRequest {
            metric: "go_gc_cycles_total".into(),
            matchers,
            start_ms: now.saturating_sub(GC_RATE_WINDOW_MS),
            end_ms: now,
        })
        .await
        .ok()
        .and_then(|r| {
            r.into_inner()
                .series
                .into_iter()
                .find(|s| s.target.as_ref() == Some(&id) && s.series_labels.is_empty())
        })
        .and_then(|s| counter_per_min(&s.samples));
    Ok(Inputs {
        target,
        runtime_env,
        stacks,
        anomalies,
        gc_per_min_recent,
    })
}

/// A counter's increase per minute between its first and last samples; `None` over less
/// than a minute or across a reset.
fn counter_per_min(samples: &[v1::Sample]) -> Option<f64> {
    let (first, last) = (samples.first()?, samples.last()?);
    let minutes = (last.timestamp_ms - first.timestamp_ms) as f64 / 60_000.0;
    let increase = last.value() - first.value();
    (minutes >= 1.0 && increase >= 0.0 && increase.is_finite()).then(|| increase / minutes)
}

/// Why a query gave nothing, in one line for its section.
pub fn query_failed(what: &str, status: &tonic::Status) -> String {
    if status.code() == tonic::Code::Unimplemented {
        format!("the aggregator does not answer {what} yet")
    } else {
        format!(
            "{what} failed: {}: {}",
            goroscope_daemon::code_name(status.code()),
            status.message()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> MemoryFigures {
        MemoryFigures {
            rss: Some(100.0 * MIB),
            heap_inuse: Some(40.0 * MIB),
            heap_idle: Some(30.0 * MIB),
            heap_released: Some(10.0 * MIB),
            stack_inuse: Some(5.0 * MIB),
            sys: Some(90.0 * MIB),
            heap_sys: Some(70.0 * MIB),
            stack_sys: Some(5.0 * MIB),
            lazyfree: Some(4.0 * MIB),
        }
    }

    fn sum(b: &RssBreakdown) -> f64 {
        b.parts.iter().map(|(_, v)| v).sum()
    }

    #[test]
    fn rss_parts_sum_to_rss() {
        let b = rss_breakdown(&figures()).unwrap();
        let mib = |p| b.part(p).unwrap() / MIB;
        assert_eq!(mib(Part::HeapInuse), 40.0);
        assert_eq!(mib(Part::HeapIdleRetained), 20.0);
        // 10 MiB released, of which LazyFree says at most 4 MiB are still resident.
        assert_eq!(mib(Part::HeapReleasedLazyFree), 4.0);
        assert_eq!(mib(Part::LazyFreeOther), 0.0);
        assert_eq!(mib(Part::Stacks), 5.0);
        assert_eq!(mib(Part::OtherRuntime), 15.0);
        assert_eq!(mib(Part::OffHeap), 16.0);
        assert_eq!(b.part(Part::Unexplained), None);
        assert_eq!(b.beyond_rss, 0.0);
        assert_eq!(sum(&b), b.rss);
        assert!(b.notes.is_empty(), "{:?}", b.notes);
    }

    #[test]
    fn lazyfree_beyond_the_released_heap_is_its_own_part() {
        let b = rss_breakdown(&MemoryFigures {
            lazyfree: Some(12.0 * MIB),
            ..figures()
        })
        .unwrap();
        assert_eq!(b.part(Part::HeapReleasedLazyFree), Some(10.0 * MIB));
        assert_eq!(b.part(Part::LazyFreeOther), Some(2.0 * MIB));
        assert_eq!(b.part(Part::OffHeap), Some(8.0 * MIB));
        assert_eq!(sum(&b), b.rss);
    }

    #[test]
    fn released_heap_is_out_of_rss_without_lazyfree() {
        let b = rss_breakdown(&MemoryFigures {
            lazyfree: None,
            ..figures()
        })
        .unwrap();
        assert_eq!(b.part(Part::HeapReleasedLazyFree), None);
        assert_eq!(b.part(Part::LazyFreeOther), None);
        assert_eq!(b.part(Part::OffHeap), Some(20.0 * MIB));
        assert_eq!(sum(&b), b.rss);
        assert!(b.notes[0].contains("LazyFree not read"), "{:?}", b.notes);
    }

    #[test]
    fn figures_beyond_rss_are_said_never_negative() {
        // A heap mapped but mostly not touched: the runtime counts more than is resident.
        let b = rss_breakdown(&MemoryFigures {
            rss: Some(50.0 * MIB),
            ..figures()
        })
        .unwrap();
        assert!(b.parts.iter().all(|(_, v)| *v >= 0.0), "{:?}", b.parts);
        assert_eq!(b.part(Part::OffHeap), Some(0.0));
        assert_eq!(b.beyond_rss, 34.0 * MIB);
        assert_eq!(sum(&b) - b.beyond_rss, b.rss);
        assert!(
            b.notes[0].contains("34.0 MiB more than RSS"),
            "{:?}",
            b.notes
        );

        // Figures read at different instants can disagree: no part goes below 0.
        let b = rss_breakdown(&MemoryFigures {
            heap_released: Some(40.0 * MIB),
            sys: Some(10.0 * MIB),
            stack_inuse: Some(f64::NAN),
            ..figures()
        })
        .unwrap();
        assert!(b.parts.iter().all(|(_, v)| *v >= 0.0), "{:?}", b.parts);
        assert_eq!(b.part(Part::HeapIdleRetained), Some(0.0));
        assert_eq!(b.part(Part::OtherRuntime), Some(0.0));
        assert_eq!(sum(&b) - b.beyond_rss, b.rss);
    }

    #[test]
    fn without_the_runtime_figures_rss_is_not_broken_down() {
        let b = rss_breakdown(&MemoryFigures {
            rss: Some(100.0 * MIB),
            lazyfree: Some(1.0 * MIB),
            ..MemoryFigures::default()
        })
        .unwrap();
        assert_eq!(
            b.parts,
            [
                (Part::LazyFreeOther, 1.0 * MIB),
                (Part::Unexplained, 99.0 * MIB)
            ]
        );
        assert_eq!(b.notes, ["heap figures need expvar or /metrics"]);
        assert_eq!(rss_breakdown(&MemoryFigures::default()), None);
    }

    #[tokio::test]
    async fn explain_survives_an_aggregator_without_detection() {
        // An aggregator that knows one target and its settings, and answers every other
        // query `unimplemented`, as one without detection does.
        let mut client = crate::stub::serve(crate::stub::Stub {
            list_targets: Some(Box::new(|_| {
                Ok(v1::ListTargetsResponse {
                    targets: vec![inputs().target],
                    next_page_token: String::new(),
                })
            })),
            describe_target: Some(Box::new(|_| {
                Ok(v1::DescribeTargetResponse {
                    runtime_env: inputs().runtime_env.unwrap(),
                    ..Default::default()
                })
            })),
        })
        .await;
        let got = fetch(&mut client, "test", Vec::new()).await.unwrap();
        assert_eq!(got.target.id, inputs().target.id);
        assert_eq!(got.runtime_env, inputs().runtime_env);
        assert_eq!(
            got.stacks.unwrap_err(),
            "the aggregator does not answer Stacks yet"
        );
        assert_eq!(
            got.anomalies.unwrap_err(),
            "the aggregator does not answer Anomalies yet"
        );
        assert_eq!(got.gc_per_min_recent, None);
    }

    #[test]
    fn gc_rate_needs_a_minute_and_no_reset() {
        let s = |t: i64, v: f64| v1::Sample {
            timestamp_ms: t,
            value: Some(v),
        };
        assert_eq!(counter_per_min(&[s(0, 10.0), s(120_000, 70.0)]), Some(30.0));
        assert_eq!(counter_per_min(&[s(0, 10.0), s(30_000, 70.0)]), None);
        assert_eq!(counter_per_min(&[s(0, 70.0), s(120_000, 10.0)]), None);
        assert_eq!(counter_per_min(&[]), None);
    }

    #[test]
    fn the_bar_fills_sixty_columns() {
        assert_eq!(bar_columns(&[1.0, 1.0, 1.0], 60), [20, 20, 20]);
        assert_eq!(bar_columns(&[2.0, 1.0, 0.0], 10), [7, 3, 0]);
        assert_eq!(bar_columns(&[0.0, 0.0], 60), [0, 0]);
        let b = rss_breakdown(&figures()).unwrap();
        let text = rss_text(&b);
        let bar = text.lines().nth(1).unwrap().trim_start();
        assert_eq!(bar.chars().count(), BAR_WIDTH);
        assert!(text.starts_with("memory: RSS 100.0 MiB\n"), "{text}");
        assert!(text.contains("█ heap in use"), "{text}");
        assert!(text.contains("40.0 MiB   40%"), "{text}");
    }

    fn inputs() -> Inputs {
        let metric = |name: &str, value: f64| v1::MetricValue {
            metric: name.into(),
            value: Some(value),
            timestamp_ms: 1_795_000_000_000,
            labels: Vec::new(),
        };
        Inputs {
            target: v1::TargetInfo {
                id: Some(v1::TargetId {
                    host: "node-a".into(),
                    pid: 42,
                    start_ticks: 7,
                }),
                labels: vec![v1::Label {
                    name: "service".into(),
                    value: "billing".into(),
                }],
                start_time_ms: 1_795_000_000_000 - 600_000,
                last_seen_ms: 1_795_000_000_000,
                latest: vec![
                    metric("process_resident_memory_bytes", 100.0 * MIB),
                    metric("process_threads", 9.0),
                    metric("go_gc_cycles_total", 30.0),
                    metric("go_goroutines", 12.0),
                ],
                ..Default::default()
            },
            runtime_env: Ok(vec![v1::Label {
                name: "GOGC".into(),
                value: "50".into(),
            }]),
            stacks: Err("the aggregator does not answer Stacks yet".into()),
            anomalies: Err("the aggregator does not answer Anomalies yet".into()),
            gc_per_min_recent: None,
        }
    }

    #[test]
    fn explain_prints_what_it_has_and_says_what_is_missing() {
        let now = 1_795_000_000_000;
        let out = explain_text(&inputs(), now);
        assert!(
            out.starts_with("node-a pid 42 billing, seen 0s ago\n"),
            "{out}"
        );
        assert!(
            out.contains("(heap figures need expvar or /metrics)"),
            "{out}"
        );
        assert!(
            out.contains("goroutines: 12\n  stacks: the aggregator does not answer Stacks yet"),
            "{out}"
        );
        assert!(out.contains("gc: 3.0 cycles/min (since start)"), "{out}");
        assert!(out.contains("GOGC=50 GOMEMLIMIT=unset"), "{out}");
        assert!(out.contains("threads: 9, GOMAXPROCS unknown"), "{out}");
        assert!(
            out.ends_with("anomalies: the aggregator does not answer Anomalies yet\n"),
            "{out}"
        );

        let v = explain_json(&inputs());
        for key in ["target", "rss", "goroutines", "gc", "threads", "anomalies"] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        assert_eq!(v["rss"]["rss_bytes"], json!(100.0 * MIB));
        assert!(v["rss"]["heap_inuse_bytes"].is_null());
        assert_eq!(v["rss"]["unexplained_bytes"], json!(100.0 * MIB));
        assert_eq!(v["gc"]["cycles_per_min"], json!(3.0));
        assert_eq!(v["gc"]["cycles_per_min_basis"], "since start");
        assert_eq!(v["gc"]["gogc"], "50");
        assert!(v["gc"]["gomemlimit"].is_null());
        assert_eq!(v["threads"]["threads"], json!(9.0));
        assert!(v["threads"]["gomaxprocs"].is_null());
        assert!(v["anomalies"].is_null());
    }

    #[test]
    fn explain_shows_goroutine_states_signatures_and_anomalies() {
        let now = 1_795_000_000_000;
        let sig = |reason: &str, frame: &str, count| v1::StackSignature {
            wait_reason: reason.into(),
            frames: vec![frame.into()],
            count,
            first_seen_ms: now - 300_000,
            ..Default::default()
        };
        let mut i = inputs();
        i.target.latest.push(v1::MetricValue {
            metric: "go_sched_gomaxprocs_threads".into(),
            value: Some(1.0),
            timestamp_ms: now,
            labels: Vec::new(),
        });
        i.stacks = Ok(v1::StacksResponse {
            timestamp_ms: now - 5_000,
            total: 12,
            signatures: vec![
                sig("chan send", "main.handle.func1", 3),
                sig("chan receive", "main.handle.func2", 8),
                sig("chan send", "main.other", 1),
            ],
            ..Default::default()
        });
        i.anomalies = Ok(vec![diagnose::tests::anomaly(
            42,
            r#"{"from": 2, "to": 12}"#,
        )]);
        let out = explain_text(&i, now);
        assert!(
            out.contains("goroutines: 12 (stack summary 5s ago)"),
            "{out}"
        );
        assert!(
            out.contains("by state: chan receive 8, chan send 4"),
            "{out}"
        );
        assert!(
            out.contains("        8  chan receive  main.handle.func2, first seen 5m ago"),
            "{out}"
        );
        assert!(
            out.contains("GOMAXPROCS 1 (go_sched_gomaxprocs_threads)"),
            "{out}"
        );
        assert!(out.contains("evidence: from 2, to 12"), "{out}");

        let v = explain_json(&i);
        assert_eq!(v["goroutines"]["by_state"]["chan send"], json!(4));
        assert_eq!(v["goroutines"]["top"][0]["top_frame"], "main.handle.func2");
        assert_eq!(v["anomalies"][0]["target"]["pid"], json!(42));
        assert_eq!(v["threads"]["gomaxprocs"], json!(1.0));
    }
}
