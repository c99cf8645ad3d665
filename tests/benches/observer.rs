//! What watching a Go service costs the service: the `service` workload (10,000
//! goroutines parked on channels; pprof, expvar and a client_golang /metrics on its
//! address) under constant load from the `loadgen` workload, with and without a
//! collector watching it at the deployed interval (10 s).
//!
//! Arms, each the same length, in this order: unwatched and watched (default settings:
//! stack summaries on, pause budget 0.2%) alternating for `GOROSCOPE_BENCH_ROUNDS`
//! rounds (A/B/A/B), then one watched arm with a generous budget (`pause_budget` 10%,
//! `full_interval` equal to the interval, so that `goroutine?debug=2` of every goroutine
//! is read every interval: thirty times the default rate, its cost made visible) and a
//! last unwatched arm beside it. A watched arm starts a fresh collector and lets it read
//! the service once before the load starts; an unwatched arm has no collector running.
//!
//! Each arm reports the load generator's throughput and latency percentiles, the
//! service's CPU over the arm, and, watched, the collector's CPU and what its stack
//! reads took the service (`goroscope_collector_stack_read_seconds_total` and
//! `goroscope_collector_stack_reads_total` from its /metrics).
//!
//! ```sh
//! cargo build --release --workspace --bins && cargo bench -p goroscope-tests --bench observer
//! ```
//!
//! `GOROSCOPE_BENCH_ARM_SECONDS` (60), `GOROSCOPE_BENCH_ROUNDS` (2),
//! `GOROSCOPE_BENCH_GOROUTINES` (10000), `GOROSCOPE_BENCH_CONCURRENCY` (4 connections)
//! and `GOROSCOPE_BENCH_RATE` (0: closed loop, each connection sends its next request
//! when the last is answered; else requests per second at a fixed rate) change the run.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use goroscope_tests::*;

const INTERVAL: &str = "10s";

#[derive(Clone, Copy, PartialEq)]
enum Arm {
    Unwatched,
    Watched,
    Generous,
}

impl Arm {
    fn name(self) -> &'static str {
        match self {
            Arm::Unwatched => "unwatched",
            Arm::Watched => "watched, default budget",
            Arm::Generous => "watched, debug=2 every interval",
        }
    }
}

struct Outcome {
    arm: Arm,
    load: serde_json::Value,
    service_cpu: f64,
    collector_cpu: Option<f64>,
    /// (reads, seconds) by source, over the arm.
    stacks: Vec<(&'static str, f64, f64)>,
    wall: f64,
    load_avg: f64,
}

fn main() {
    let secs: u64 = env_or("GOROSCOPE_BENCH_ARM_SECONDS", 60);
    let rounds: usize = env_or("GOROSCOPE_BENCH_ROUNDS", 2);
    let goroutines: u64 = env_or("GOROSCOPE_BENCH_GOROUTINES", 10_000);
    let concurrency: u32 = env_or("GOROSCOPE_BENCH_CONCURRENCY", 4);
    let rate: f64 = env_or("GOROSCOPE_BENCH_RATE", 0.0);

    let service = Workload::start("service", &["-park", &goroutines.to_string()]);
    let service_addr = service.addr.expect("service prints its address");
    let certs = Certs::new(&["observer"]);
    let data = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&certs, &data.path().join("db"), 0);
    let url = agg.url();

    let mut arms = Vec::new();
    for _ in 0..rounds {
        arms.extend([Arm::Unwatched, Arm::Watched]);
    }
    arms.extend([Arm::Generous, Arm::Unwatched]);

    let mut outcomes = Vec::new();
    for (i, &arm) in arms.iter().enumerate() {
        eprintln!("arm {}/{}: {}", i + 1, arms.len(), arm.name());
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let collector = (arm != Arm::Unwatched).then(|| {
            let stacks = if arm == Arm::Generous {
                format!("[stacks]\npause_budget = 0.1\nfull_interval = {INTERVAL:?}\n")
            } else {
                String::new()
            };
            let c = start_collector_with(
                &certs,
                "observer",
                &url,
                INTERVAL,
                &format!("metrics_listen = {metrics_addr:?}\n{stacks}"),
            );
            // The first read of the service's stacks: discovery and probing are over.
            eventually(
                Duration::from_secs(60),
                "the collector to read the stacks",
                || {
                    let m = scrape_metrics_or_none(&metrics_addr)?;
                    (metric_sum(&m, "goroscope_collector_stack_reads_total", &[]) >= 1.0)
                        .then_some(())
                },
            );
            c
        });
        let m0 = collector.as_ref().map(|_| scrape_metrics(&metrics_addr));
        let s0 = cpu_ticks(service.pid());
        let c0 = collector.as_ref().map(|c| cpu_ticks(c.pid()));
        let wall0 = Instant::now();
        let mut cmd = Command::new(workloads().join("loadgen"));
        cmd.arg(format!("-url=http://{service_addr}/work?user=42&item=7"))
            .arg(format!("-duration={secs}s"))
            .arg("-warmup=5s")
            .arg(format!("-concurrency={concurrency}"))
            .arg(format!("-rate={rate}"));
        let out = cmd.output().expect("run loadgen");
        assert!(
            out.status.success(),
            "loadgen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let wall = wall0.elapsed().as_secs_f64();
        let service_cpu = (cpu_ticks(service.pid()) - s0) as f64 / TICK;
        let collector_cpu = collector
            .as_ref()
            .zip(c0)
            .map(|(c, c0)| (cpu_ticks(c.pid()) - c0) as f64 / TICK);
        let stacks = match &m0 {
            Some(m0) => {
                let m1 = scrape_metrics(&metrics_addr);
                ["debug=1", "debug=2", "goroutineleak"]
                    .into_iter()
                    .map(|source| {
                        let l = format!("source=\"{source}\"");
                        let d =
                            |name: &str| metric_sum(&m1, name, &[&l]) - metric_sum(m0, name, &[&l]);
                        (
                            source,
                            d("goroscope_collector_stack_reads_total"),
                            d("goroscope_collector_stack_read_seconds_total"),
                        )
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        drop(collector);
        let load: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("loadgen prints JSON");
        eprintln!("  {load}");
        outcomes.push(Outcome {
            arm,
            load,
            service_cpu,
            collector_cpu,
            stacks,
            wall,
            load_avg: load1(),
        });
    }

    let mode = if rate > 0.0 {
        format!("{rate} requests/s over {concurrency} connections")
    } else {
        format!("closed loop over {concurrency} connections")
    };
    println!(
        "observer: service with {goroutines} parked goroutines, {mode}, {secs}s per arm, collector interval {INTERVAL}"
    );
    println!(
        "| arm | requests/s | p50 | p99 | p99.9 | errors | service CPU | collector CPU | stack reads in the arm (time they took the service) | load average after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        let f = |k: &str| o.load[k].as_f64().unwrap_or(f64::NAN);
        let reads: Vec<String> = o
            .stacks
            .iter()
            .filter(|(_, n, _)| *n > 0.0)
            .map(|(s, n, t)| {
                format!(
                    "{n:.0} × {s} ({:.1} ms, {:.1} ms each)",
                    t * 1e3,
                    t * 1e3 / n
                )
            })
            .collect();
        println!(
            "| {} | {:.0} | {:.3} ms | {:.3} ms | {:.3} ms | {} | {:.1} % | {} | {} | {:.2} |",
            o.arm.name(),
            f("per_second"),
            f("p50_ms"),
            f("p99_ms"),
            f("p999_ms"),
            o.load["errors"],
            100.0 * o.service_cpu / o.wall,
            o.collector_cpu
                .map(|c| format!("{:.2} %", 100.0 * c / o.wall))
                .unwrap_or_else(|| "-".into()),
            if reads.is_empty() {
                "-".into()
            } else {
                reads.join(", ")
            },
            o.load_avg,
        );
    }
    // Each watched arm against the mean of the unwatched ones.
    let unwatched: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.arm == Arm::Unwatched)
        .collect();
    let mean = |os: &[&Outcome], k: &str| {
        os.iter()
            .map(|o| o.load[k].as_f64().unwrap_or(f64::NAN))
            .sum::<f64>()
            / os.len() as f64
    };
    let (base_rps, base_p99) = (mean(&unwatched, "per_second"), mean(&unwatched, "p99_ms"));
    for arm in [Arm::Watched, Arm::Generous] {
        let these: Vec<&Outcome> = outcomes.iter().filter(|o| o.arm == arm).collect();
        if these.is_empty() {
            continue;
        }
        println!(
            "{}: throughput {:+.2} % and p99 {:+.3} ms against unwatched (mean of {} arms: {:.0} requests/s, p99 {:.3} ms)",
            arm.name(),
            100.0 * (mean(&these, "per_second") / base_rps - 1.0),
            mean(&these, "p99_ms") - base_p99,
            unwatched.len(),
            base_rps,
            base_p99
        );
    }
    drop(agg);
    drop(service);
}

fn scrape_metrics_or_none(addr: &str) -> Option<std::collections::BTreeMap<String, f64>> {
    http_get(addr, "/metrics", "").ok()?;
    Some(scrape_metrics(addr))
}
