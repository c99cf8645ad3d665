//! One target as the detectors see it: a window of each input series, the latest
//! values, its newest stack summaries, and what it runs; and the evaluation of every
//! detector on it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use goroscope_proto::v1;
use serde_json::json;

use super::goroutines::{self, Pattern};
use super::memory::{self, MemNow};
use super::stats::{mann_kendall, theil_sen};
use super::trend::{self, Finding, MAX_P, MIN_COVERED_S, MIN_POINTS};
use super::window::Window;
use crate::storage::{Coverage, TargetKey};

/// The series the detectors read, by metric name. Every other series is not fed.
pub const INPUTS: [&str; 22] = [
    GOROUTINES,
    THREADS,
    RSS,
    LAZYFREE,
    CGROUP_CURRENT,
    CGROUP_MAX,
    HEAP_INUSE,
    HEAP_IDLE,
    HEAP_RELEASED,
    HEAP_ALLOC,
    NEXT_GC,
    STACK_INUSE,
    GO_SYS,
    GC_CPU_FRACTION,
    GC_CYCLES,
    GC_FORCED,
    CPU_SECONDS,
    GOMAXPROCS_METRIC,
    RUNNABLE,
    SCHED_LATENCY_BUCKET,
    MUTEX_WAIT,
    CPU_QUOTA,
];

pub const GOROUTINES: &str = "go_goroutines";
pub const THREADS: &str = "process_threads";
pub const RSS: &str = "process_resident_memory_bytes";
pub const LAZYFREE: &str = "process_lazyfree_bytes";
pub const CGROUP_CURRENT: &str = "cgroup_memory_current_bytes";
pub const CGROUP_MAX: &str = "cgroup_memory_max_bytes";
pub const HEAP_INUSE: &str = "go_memstats_heap_inuse_bytes";
pub const HEAP_IDLE: &str = "go_memstats_heap_idle_bytes";
pub const HEAP_RELEASED: &str = "go_memstats_heap_released_bytes";
pub const HEAP_ALLOC: &str = "go_memstats_heap_alloc_bytes";
pub const NEXT_GC: &str = "go_memstats_next_gc_bytes";
pub const STACK_INUSE: &str = "go_memstats_stack_inuse_bytes";
pub const GO_SYS: &str = "go_memstats_sys_bytes";
pub const GC_CPU_FRACTION: &str = "go_memstats_gc_cpu_fraction";
pub const GC_CYCLES: &str = "go_gc_cycles_total";
pub const GC_FORCED: &str = "go_gc_forced_cycles_total";
pub const CPU_SECONDS: &str = "process_cpu_seconds_total";
pub const GOMAXPROCS_METRIC: &str = "go_sched_gomaxprocs_threads";
pub const RUNNABLE: &str = "go_sched_goroutines_runnable_goroutines";
pub const SCHED_LATENCY_BUCKET: &str = "go_sched_latencies_seconds_bucket";
pub const MUTEX_WAIT: &str = "go_sync_mutex_wait_total_seconds_total";
pub const CPU_QUOTA: &str = "cgroup_cpu_quota_cores";

/// The scheduling latency's 99th percentile per sampling interval, a derived window.
const SCHED_P99: &str = "sched_p99_seconds";

/// Stack summaries kept per target, newest last (the window's oldest is kept too).
const MAX_SUMMARIES: usize = 16;

/// What one detector found, and what groups it and where it came from.
#[derive(Debug, Clone)]
pub struct Found {
    pub finding: Finding,
    /// For goroutine leaks: the pattern and the signature's innermost frame of the
    /// program's code; empty for the other diagnoses.
    pub signature: String,
    pub sources: Vec<&'static str>,
    /// For oom-risk: when the limit is reached, Unix ms.
    pub oom_at_ms: i64,
}

/// What a collector declared of a target.
#[derive(Debug, Clone, Default)]
pub struct TargetMeta {
    pub labels: BTreeMap<String, String>,
    pub coverage: Coverage,
    pub runtime_env: BTreeMap<String, String>,
    pub build: Option<Arc<v1::BuildInfo>>,
}

pub struct TargetState {
    pub key: TargetKey,
    pub meta: TargetMeta,
    pub last_ms: i64,
    pub gone: bool,
    windows: HashMap<&'static str, Window>,
    latest: HashMap<&'static str, (i64, f64)>,
    /// The scheduling latency histogram's previous cumulative buckets (le, count).
    sched_prev: Option<(i64, Vec<(f64, f64)>)>,
    sched_pending: Option<(i64, Vec<(f64, f64)>)>,
    /// debug=1 and debug=2 summaries, oldest first.
    summaries: VecDeque<Arc<v1::StackSummary>>,
    /// The newest debug=2 summary (wait reasons) and goroutineleak profile.
    full: Option<Arc<v1::StackSummary>>,
    leak_profile: Option<Arc<v1::StackSummary>>,
    span_s: f64,
}

impl TargetState {
    pub fn new(key: TargetKey, span_s: f64) -> TargetState {
        TargetState {
            key,
            meta: TargetMeta::default(),
            last_ms: 0,
            gone: false,
            windows: HashMap::new(),
            latest: HashMap::new(),
            sched_prev: None,
            sched_pending: None,
            summaries: VecDeque::new(),
            full: None,
            leak_profile: None,
            span_s,
        }
    }

    pub fn service(&self) -> &str {
        self.meta.labels.get("service").map_or("", String::as_str)
    }

    /// Adds the points of one input series; `le` for the latency histogram's buckets.
    pub fn push(&mut self, metric: &'static str, le: Option<f64>, points: &[(i64, f64)]) {
        for &(ts, v) in points {
            self.last_ms = self.last_ms.max(ts);
            if metric == SCHED_LATENCY_BUCKET {
                if let Some(le) = le {
                    self.push_bucket(ts, le, v);
                }
                continue;
            }
            if !v.is_finite() {
                continue;
            }
            self.latest.insert(metric, (ts, v));
            self.windows
                .entry(metric)
                .or_insert_with(|| Window::new(self.span_s))
                .push(ts as f64 / 1000.0, v);
        }
    }

    /// Buckets of one scrape arrive one series at a time; a scrape is complete when a
    /// bucket of a newer one arrives (or at evaluation).
    fn push_bucket(&mut self, ts: i64, le: f64, count: f64) {
        if self.sched_pending.as_ref().is_some_and(|(t, _)| *t != ts) {
            self.close_scrape();
        }
        let pending = self.sched_pending.get_or_insert_with(|| (ts, Vec::new()));
        if count.is_finite() {
            pending.1.push((le, count));
        }
    }

    fn close_scrape(&mut self) {
        let Some((ts, mut buckets)) = self.sched_pending.take() else {
            return;
        };
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((_, prev)) = &self.sched_prev
            && let Some(p99) = delta_quantile(prev, &buckets, 0.99)
        {
            self.windows
                .entry(SCHED_P99)
                .or_insert_with(|| Window::new(self.span_s))
                .push(ts as f64 / 1000.0, p99);
            self.latest.insert(SCHED_P99, (ts, p99));
        }
        self.sched_prev = Some((ts, buckets));
    }

    pub fn push_stacks(&mut self, summary: Arc<v1::StackSummary>) {
        if !summary.skipped.is_empty() {
            return;
        }
        match summary.source.as_str() {
            "goroutineleak" => self.leak_profile = Some(summary),
            source => {
                if source == "debug=2" {
                    self.full = Some(summary.clone());
                }
                self.summaries.push_back(summary);
                let horizon = self.last_ms - (self.span_s * 1000.0) as i64;
                while self.summaries.len() > 2
                    && self
                        .summaries
                        .front()
                        .is_some_and(|s| s.timestamp_ms < horizon)
                {
                    self.summaries.pop_front();
                }
                // Keep the oldest (the window's start) and the newest ones.
                while self.summaries.len() > MAX_SUMMARIES {
                    self.summaries.remove(1);
                }
            }
        }
    }

    fn window(&self, metric: &str) -> Option<&Window> {
        self.windows.get(metric).filter(|w| !w.is_empty())
    }

    fn now(&self, metric: &str) -> Option<f64> {
        self.latest.get(metric).map(|(_, v)| *v)
    }

    /// GOMAXPROCS: the runtime's own figure, the environment's, or the CPU quota.
    pub fn gomaxprocs(&self) -> Option<f64> {
        self.now(GOMAXPROCS_METRIC)
            .or_else(|| {
                self.meta
                    .runtime_env
                    .get("GOMAXPROCS")
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|v| *v >= 1.0)
            })
            .or_else(|| {
                self.now(CPU_QUOTA)
                    .filter(|q| q.is_finite() && *q > 0.0)
                    .map(|q| q.ceil().max(1.0))
            })
    }

    fn memory_source(&self) -> &'static str {
        if self.meta.coverage.expvar {
            "expvar"
        } else {
            "metrics"
        }
    }

    /// Every detector on this target's current windows.
    pub fn evaluate(&mut self, oom_horizon_s: f64) -> Vec<Found> {
        self.close_scrape();
        let mut out = Vec::new();
        let mem = self.memory_source();
        let plain = |finding: Finding, sources: Vec<&'static str>| Found {
            finding,
            signature: String::new(),
            sources,
            oom_at_ms: 0,
        };
        let empty = Window::new(self.span_s);
        let w = |m: &str| self.window(m).unwrap_or(&empty);

        if let Some(threads) = self.window(THREADS)
            && let Some(f) = trend::thread_leak(threads, self.gomaxprocs())
        {
            out.push(plain(f, vec!["proc"]));
        }
        if let Some(f) = self.oom_risk(oom_horizon_s) {
            out.push(f);
        }
        let explosion = self.window(GOROUTINES).and_then(trend::goroutine_explosion);
        let leak = self.goroutine_leak();
        if let Some(f) = explosion {
            out.push(plain(f, vec!["pprof"]));
        } else if let Some(f) = leak {
            out.push(f);
        }
        if let Some(f) = self.window(GC_FORCED).and_then(trend::forced_gc) {
            out.push(plain(f, vec![mem]));
        }
        if let Some(heap) = self.window(HEAP_INUSE) {
            if let Some(f) = memory::heap_leak(heap, w(GC_CYCLES), w(GOROUTINES)) {
                out.push(plain(f, vec![mem]));
            }
            if let Some(now) = self.mem_now()
                && let Some(f) = memory::rss_retention(now, heap)
            {
                out.push(plain(f, vec!["proc", mem]));
            }
        }
        if let (Some(rss), Some(sys)) = (self.window(RSS), self.window(GO_SYS))
            && let Some(f) = memory::offheap_growth(rss, sys)
        {
            out.push(plain(f, vec!["proc", mem]));
        }
        if let Some(stack) = self.window(STACK_INUSE)
            && let Some(f) = memory::stack_growth(stack, w(GOROUTINES))
        {
            out.push(plain(f, vec![mem, "pprof"]));
        }
        if let (Some(cycles), Some(frac)) = (self.window(GC_CYCLES), self.now(GC_CPU_FRACTION))
            && let Some(f) = memory::gc_thrash(
                cycles,
                frac,
                self.now(NEXT_GC).unwrap_or(0.0),
                self.now(HEAP_ALLOC).unwrap_or(0.0),
            )
        {
            // Forced collections explain frequent cycles on their own.
            if !out.iter().any(|o| o.finding.diagnosis == "forced-gc") {
                out.push(plain(f, vec![mem]));
            }
        }
        if let Some(f) = self.sched_pressure() {
            out.push(f);
        }
        out
    }

    fn mem_now(&self) -> Option<MemNow> {
        let lazy = self.now(LAZYFREE).unwrap_or(0.0);
        // Memory returned with MADV_FREE counts as released but stays resident (as
        // LazyFree) until the kernel needs it: for RSS it is still retained.
        let released = (self.now(HEAP_RELEASED)? - lazy).max(0.0);
        Some(MemNow {
            rss: self.now(RSS)?,
            heap_inuse: self.now(HEAP_INUSE)?,
            heap_idle: self.now(HEAP_IDLE)?,
            heap_released: released,
            stack_inuse: self.now(STACK_INUSE).unwrap_or(0.0),
        })
    }

    fn oom_risk(&self, horizon_s: f64) -> Option<Found> {
        let limit = self
            .now(CGROUP_MAX)
            .filter(|l| l.is_finite() && *l > 0.0 && *l < 1e18)?;
        let (series, source) = match self.window(CGROUP_CURRENT) {
            Some(w) => (w, "cgroup"),
            None => (self.window(RSS)?, "proc"),
        };
        let f = trend::oom_risk(series, limit, horizon_s)?;
        let in_s = f.evidence["limit_in_s"].as_f64().unwrap_or(0.0);
        let oom_at_ms = self.last_ms + (in_s * 1000.0) as i64;
        let mut f = f;
        f.evidence["oom_at_ms"] = json!(oom_at_ms);
        f.evidence["memory_series"] = json!(if source == "cgroup" {
            CGROUP_CURRENT
        } else {
            RSS
        });
        Some(Found {
            finding: f,
            signature: String::new(),
            sources: vec![source, "cgroup"],
            oom_at_ms,
        })
    }

    /// `goroutine-leak`: the count rises steadily (the trend test, no big fall-backs,
    /// no single jump), and when stack summaries exist, one signature accounts for the
    /// growth; its wait reason and frames name the pattern.
    fn goroutine_leak(&self) -> Option<Found> {
        let w = self.window(GOROUTINES)?;
        let rise = trend::rising(w, 50.0, 0.2)?;
        let growth = rise.to - rise.from;
        let points = w.points();
        // A leak only grows: a count that falls back by much of its rise is load.
        let drawdown = max_drawdown(&points);
        if drawdown > 0.3 * growth {
            return None;
        }
        // A jump within seconds is a burst (goroutine-explosion), not a leak.
        if trend::fastest_rise(&points, trend::BURST_S) > 0.5 * growth {
            return None;
        }
        let mut evidence = rise.evidence();
        evidence["max_drawdown"] = json!(drawdown);
        let mut sources = vec!["pprof"];
        let mut signature = String::new();
        let mut advice =
            "The goroutine count keeps rising: goroutines start and never finish. Look at \
             the stack that gains them (goroscope stacks --diff) and what should wake them."
                .to_owned();
        if let Some(sig) = self.leak_signature() {
            if sig.moving {
                // The goroutines that grew are running or keep waking up: more work,
                // not goroutines stuck for good.
                return None;
            }
            sources.push("stacks");
            let pattern = goroutines::pattern(&sig.wait_reason, &sig.frames);
            let top = sig.frames.first().cloned().unwrap_or_default();
            signature = format!("{} {}", pattern.id(), top);
            evidence["pattern"] = json!(pattern.id());
            evidence["signature"] = json!({
                "wait_reason": sig.wait_reason,
                "frames": sig.frames.iter().take(8).collect::<Vec<_>>(),
                "location": sig.location,
                "count": sig.count,
                "growth": sig.growth,
                "share_of_growth": sig.share,
                "max_wait_s": sig.max_wait_s,
                "first_seen_ms": sig.first_seen_ms,
                "leaked": sig.leaked,
            });
            if sig.leaked {
                sources.push("goroutineleak");
            }
            advice = if pattern == Pattern::Other && sig.wait_reason.is_empty() {
                format!(
                    "Goroutines pile up in {top}: they start and never finish. {}",
                    Pattern::Other.advice()
                )
            } else {
                format!("{} (in {top})", pattern.advice())
            };
            if sig.leaked {
                advice.push_str(
                    " The runtime's goroutineleak profile proves these goroutines can never \
                     run again.",
                );
            }
        }
        Some(Found {
            finding: Finding {
                diagnosis: "goroutine-leak",
                evidence,
                advice,
            },
            signature,
            sources,
            oom_at_ms: 0,
        })
    }

    /// The signature that grew most between the oldest and the newest summary of the
    /// window, with its wait reason from the newest debug=2 summary when the summaries
    /// are debug=1 (which has none).
    fn leak_signature(&self) -> Option<LeakSignature> {
        let later = self.summaries.back()?;
        let earlier = self
            .summaries
            .iter()
            .find(|s| later.timestamp_ms - s.timestamp_ms >= 30_000)?;
        let (group, growth) = goroutines::growing_signature(earlier, later, 0.3)?;
        let total_growth = later.total.saturating_sub(earlier.total).max(1);
        let full_group = self.full.as_ref().and_then(|f| {
            f.groups
                .iter()
                .filter(|g| g.frames == group.frames)
                .max_by_key(|g| g.count)
        });
        let wait_reason = if group.wait_reason.is_empty() {
            full_group
                .map(|g| g.wait_reason.clone())
                .unwrap_or_default()
        } else {
            group.wait_reason.clone()
        };
        let max_wait_s = if group.max_wait_s > 0.0 {
            group.max_wait_s
        } else {
            full_group.map_or(0.0, |g| g.max_wait_s)
        };
        // Goroutines queued for a CPU are work, not stuck: the signature's goroutines
        // in the newest debug=2 dump (by innermost frame), mostly runnable or running.
        let moving = self.full.as_ref().is_some_and(|full| {
            let top = group.frames.first();
            let (mut busy, mut all) = (0u64, 0u64);
            for g in full.groups.iter().filter(|g| g.frames.first() == top) {
                all += g.count;
                if g.wait_reason == "runnable" || g.wait_reason == "running" {
                    busy += g.count;
                }
            }
            all > 0 && busy * 2 >= all
        });
        let leaked = self
            .leak_profile
            .as_ref()
            .is_some_and(|p| p.groups.iter().any(|g| g.frames == group.frames));
        Some(LeakSignature {
            wait_reason,
            frames: group.frames.clone(),
            location: group.location.clone(),
            count: group.count,
            growth,
            share: growth as f64 / total_growth as f64,
            max_wait_s,
            first_seen_ms: group.first_seen_ms,
            leaked,
            moving: moving && !leaked,
        })
    }

    /// `sched-pressure`: goroutines wait to run. From the scheduling latency's tail
    /// (/metrics) when the target exposes it, else from runnable goroutines against
    /// GOMAXPROCS (the runtime's gauge, or debug=2 summaries).
    fn sched_pressure(&self) -> Option<Found> {
        let procs = self.gomaxprocs();
        if let Some(w) = self.window(SCHED_P99)
            && w.covered() >= MIN_COVERED_S
            && w.len() >= MIN_POINTS
        {
            let values: Vec<f64> = w.points().iter().map(|p| p.1).collect();
            let median = median(&values);
            let high = values.iter().filter(|v| **v >= 0.02).count() as f64 / values.len() as f64;
            let rising = mann_kendall(&w.points()).is_some_and(|t| t.p < MAX_P && t.s > 0);
            if median >= 0.05 || (high >= 0.8 && rising) {
                let mut evidence = json!({
                    "window_s": w.covered(),
                    "p99_latency_median_s": median,
                    "share_of_intervals_p99_over_20ms": high,
                    "p99_latency_now_s": self.now(SCHED_P99),
                    "latency_rising": rising,
                });
                if let Some(p) = procs {
                    evidence["gomaxprocs"] = json!(p);
                }
                if let Some(r) = self.now(RUNNABLE) {
                    evidence["runnable_goroutines"] = json!(r);
                }
                return Some(Found {
                    finding: Finding {
                        diagnosis: "sched-pressure",
                        evidence,
                        advice: sched_advice(),
                    },
                    signature: String::new(),
                    sources: vec!["metrics"],
                    oom_at_ms: 0,
                });
            }
            return None;
        }
        let procs = procs?;
        if let Some(w) = self.window(RUNNABLE)
            && w.covered() >= MIN_COVERED_S
            && w.len() >= MIN_POINTS
        {
            let values: Vec<f64> = w.points().iter().map(|p| p.1).collect();
            let median = median(&values);
            if median >= (4.0 * procs).max(8.0) {
                return Some(Found {
                    finding: Finding {
                        diagnosis: "sched-pressure",
                        evidence: json!({
                            "window_s": w.covered(),
                            "runnable_median": median,
                            "gomaxprocs": procs,
                        }),
                        advice: sched_advice(),
                    },
                    signature: String::new(),
                    sources: vec!["metrics"],
                    oom_at_ms: 0,
                });
            }
            return None;
        }
        // debug=2 summaries: goroutines waiting in "runnable", in the two newest.
        let full: Vec<&v1::StackSummary> = self
            .summaries
            .iter()
            .rev()
            .filter(|s| s.source == "debug=2")
            .take(2)
            .map(|s| s.as_ref())
            .collect();
        if full.len() == 2 {
            let runnable = |s: &v1::StackSummary| -> u64 {
                s.groups
                    .iter()
                    .filter(|g| g.wait_reason == "runnable")
                    .map(|g| g.count)
                    .sum()
            };
            let (a, b) = (runnable(full[0]), runnable(full[1]));
            let floor = (4.0 * procs).max(8.0);
            if a as f64 >= floor && b as f64 >= floor {
                return Some(Found {
                    finding: Finding {
                        diagnosis: "sched-pressure",
                        evidence: json!({
                            "runnable_in_last_two_dumps": [b, a],
                            "gomaxprocs": procs,
                        }),
                        advice: sched_advice(),
                    },
                    signature: String::new(),
                    sources: vec!["stacks"],
                    oom_at_ms: 0,
                });
            }
        }
        None
    }
}

fn sched_advice() -> String {
    "Goroutines wait to be scheduled: more runnable work than GOMAXPROCS can run. Raise \
     the CPU limit or GOMAXPROCS, bound the concurrency of CPU-bound work, or look for lock \
     contention in a trace (goroscope capture trace)."
        .into()
}

struct LeakSignature {
    wait_reason: String,
    frames: Vec<String>,
    location: String,
    count: u64,
    growth: u64,
    share: f64,
    max_wait_s: f64,
    first_seen_ms: i64,
    leaked: bool,
    /// Its goroutines run or keep waking: not stuck.
    moving: bool,
}

/// The largest fall from a running maximum.
pub fn max_drawdown(points: &[(f64, f64)]) -> f64 {
    let mut peak = f64::NEG_INFINITY;
    let mut worst: f64 = 0.0;
    for &(_, v) in points {
        peak = peak.max(v);
        worst = worst.max(peak - v);
    }
    worst
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The `q` quantile of the observations between two cumulative histograms (sorted by
/// `le`): the upper bound of the bucket where it falls; None without observations.
pub fn delta_quantile(prev: &[(f64, f64)], now: &[(f64, f64)], q: f64) -> Option<f64> {
    let before = |le: f64| prev.iter().find(|(l, _)| *l == le).map_or(0.0, |(_, c)| *c);
    let deltas: Vec<(f64, f64)> = now
        .iter()
        .map(|&(le, c)| (le, (c - before(le)).max(0.0)))
        .collect();
    let total = deltas.last()?.1;
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let target = q * total;
    let (le, _) = deltas.iter().find(|(_, c)| *c >= target)?;
    // The +Inf bucket: say the largest finite bound.
    if le.is_infinite() {
        return deltas
            .iter()
            .rev()
            .find(|(l, _)| l.is_finite())
            .map(|(l, _)| *l);
    }
    Some(*le)
}

/// A slope and trend on a window, when there is one: for the evidence of open anomalies.
pub fn slope_per_min(w: &Window) -> Option<f64> {
    theil_sen(&w.points()).map(|l| l.slope * 60.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TargetKey {
        TargetKey {
            host: "h".into(),
            pid: 1,
            start_ticks: 1,
        }
    }

    fn summary(ts: i64, source: &str, groups: &[(&str, &str, u64)]) -> Arc<v1::StackSummary> {
        Arc::new(v1::StackSummary {
            timestamp_ms: ts,
            source: source.into(),
            total: groups.iter().map(|g| g.2).sum(),
            groups: groups
                .iter()
                .map(|(reason, frame, count)| v1::StackGroup {
                    wait_reason: (*reason).into(),
                    frames: vec![(*frame).into()],
                    count: *count,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn a_steady_climb_with_a_growing_signature_is_a_goroutine_leak_with_its_pattern() {
        let mut t = TargetState::new(key(), 1800.0);
        for s in 0..300i64 {
            let ts = s * 1000;
            let n = 10.0 + 20.0 * s as f64 + (s % 3) as f64;
            t.push(GOROUTINES, None, &[(ts, n)]);
            if s % 10 == 0 {
                let leak = 20 * s as u64;
                t.push_stacks(summary(
                    ts,
                    "debug=1",
                    &[("", "main.handle.func1", leak), ("", "main.main", 10)],
                ));
            }
        }
        t.push_stacks(summary(
            299_000,
            "debug=2",
            &[
                ("chan send", "main.handle.func1", 5900),
                ("select", "main.main", 10),
            ],
        ));
        let found = t.evaluate(3600.0);
        let leak = found
            .iter()
            .find(|f| f.finding.diagnosis == "goroutine-leak")
            .expect("a leak");
        assert_eq!(leak.signature, "abandoned-channel main.handle.func1");
        assert_eq!(leak.finding.evidence["pattern"], "abandoned-channel");
        assert!(leak.sources.contains(&"stacks"));
    }

    #[test]
    fn goroutines_queued_for_a_cpu_are_not_a_leak_however_steadily_they_grow() {
        let grow = |t: &mut TargetState| {
            for s in 0..300i64 {
                let ts = s * 1000;
                t.push(GOROUTINES, None, &[(ts, 10.0 + s as f64)]);
                if s % 10 == 0 {
                    t.push_stacks(summary(ts, "debug=1", &[("", "main.worker", s as u64)]));
                }
            }
        };
        let mut t = TargetState::new(key(), 1800.0);
        grow(&mut t);
        t.push_stacks(summary(
            299_500,
            "debug=2",
            &[
                ("runnable", "main.worker", 200),
                ("sleep", "main.worker", 99),
            ],
        ));
        let found = t.evaluate(3600.0);
        assert!(
            !found
                .iter()
                .any(|f| f.finding.diagnosis == "goroutine-leak"),
            "{found:?}"
        );
        // The same growth waiting on a channel is a leak.
        let mut t = TargetState::new(key(), 1800.0);
        grow(&mut t);
        t.push_stacks(summary(
            299_500,
            "debug=2",
            &[("chan send", "main.worker", 299)],
        ));
        let found = t.evaluate(3600.0);
        assert!(
            found
                .iter()
                .any(|f| f.finding.diagnosis == "goroutine-leak"),
            "{found:?}"
        );
    }

    #[test]
    fn goroutines_swinging_without_a_trend_or_a_burst_are_not_a_leak() {
        let mut t = TargetState::new(key(), 1800.0);
        let mut n: f64 = 400.0;
        for s in 0..600i64 {
            // A bounded random walk between 100 and 800.
            let step = ((s * 7919) % 13) as f64 * 20.0 - 120.0;
            n = (n + step).clamp(100.0, 800.0);
            t.push(GOROUTINES, None, &[(s * 1000, n)]);
        }
        let found = t.evaluate(3600.0);
        assert!(
            !found
                .iter()
                .any(|f| f.finding.diagnosis == "goroutine-leak"),
            "{found:?}"
        );
    }

    #[test]
    fn a_burst_is_an_explosion_not_a_leak() {
        let mut t = TargetState::new(key(), 1800.0);
        for s in 0..300i64 {
            let n = if s < 100 { 4.0 } else { 20_004.0 };
            t.push(GOROUTINES, None, &[(s * 1000, n)]);
        }
        let found = t.evaluate(3600.0);
        let ids: Vec<_> = found.iter().map(|f| f.finding.diagnosis).collect();
        assert!(ids.contains(&"goroutine-explosion"), "{ids:?}");
        assert!(!ids.contains(&"goroutine-leak"), "{ids:?}");
    }

    #[test]
    fn latency_quantiles_come_from_the_difference_of_cumulative_buckets() {
        let prev = [
            (0.001, 100.0),
            (0.01, 100.0),
            (0.1, 100.0),
            (f64::INFINITY, 100.0),
        ];
        let now = [
            (0.001, 101.0),
            (0.01, 102.0),
            (0.1, 200.0),
            (f64::INFINITY, 200.0),
        ];
        assert_eq!(delta_quantile(&prev, &now, 0.99), Some(0.1));
        assert_eq!(delta_quantile(&prev, &now, 0.01), Some(0.001));
        assert_eq!(delta_quantile(&now, &now, 0.99), None);
        let inf = [(0.001, 0.0), (f64::INFINITY, 5.0)];
        assert_eq!(delta_quantile(&[], &inf, 0.99), Some(0.001));
    }

    #[test]
    fn a_high_scheduling_latency_tail_is_sched_pressure() {
        let mut t = TargetState::new(key(), 1800.0);
        let mut cum = [0.0f64; 4];
        let les = [0.001, 0.01, 0.1, f64::INFINITY];
        for s in 0..240i64 {
            // Per second: 100 waits under 1 ms, 100 under 100 ms.
            cum[0] += 100.0;
            cum[1] += 100.0;
            cum[2] += 200.0;
            cum[3] += 200.0;
            for (le, c) in les.iter().zip(cum) {
                t.push(SCHED_LATENCY_BUCKET, Some(*le), &[(s * 1000, c)]);
            }
        }
        let found = t.evaluate(3600.0);
        assert!(
            found
                .iter()
                .any(|f| f.finding.diagnosis == "sched-pressure"),
            "{found:?}"
        );
    }

    #[test]
    fn retained_rss_counts_lazyfree_memory_as_not_released() {
        let mut t = TargetState::new(key(), 1800.0);
        const MIB: f64 = 1024.0 * 1024.0;
        for s in 0..240i64 {
            let ts = s * 1000;
            t.push(RSS, None, &[(ts, 260.0 * MIB)]);
            t.push(HEAP_INUSE, None, &[(ts, 4.0 * MIB + (s % 2) as f64)]);
            t.push(HEAP_IDLE, None, &[(ts, 256.0 * MIB)]);
            t.push(HEAP_RELEASED, None, &[(ts, 250.0 * MIB)]);
            t.push(LAZYFREE, None, &[(ts, 250.0 * MIB)]);
        }
        let found = t.evaluate(3600.0);
        assert!(
            found.iter().any(|f| f.finding.diagnosis == "rss-retention"),
            "{found:?}"
        );
    }
}
