//! What goroscope costs to run: one collector watching N Go processes (each serving
//! expvar and pprof) at a 1 s interval, streaming to one aggregator, for D seconds.
//!
//! Reports the collector's and the aggregator's CPU (from /proc/PID/stat) and memory
//! (VmRSS, VmHWM), the samples stored per second (counted back through the CLI), and the
//! database's size on disk. Build the release binaries first; `scripts/bench.sh` does:
//!
//! ```sh
//! cargo build --release --workspace --bins && cargo bench -p goroscope-tests --bench fleet
//! ```
//!
//! `GOROSCOPE_BENCH_TARGETS` (default 50) and `GOROSCOPE_BENCH_SECONDS` (default 60)
//! change the size and the length of the run.

mod common;

use std::time::{Duration, Instant};

use common::{cpu_ticks, env_or, memory, mib};
use goroscope_tests::*;

fn main() {
    let n: usize = env_or("GOROSCOPE_BENCH_TARGETS", 50);
    let secs: u64 = env_or("GOROSCOPE_BENCH_SECONDS", 60);
    let interval = 1.0_f64;

    eprintln!("starting {n} Go workloads");
    let workloads: Vec<Workload> = (0..n)
        .map(|_| Workload::start("steady", &["-workers", "1"]))
        .collect();
    let certs = Certs::new(&["bench"]);
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("db");
    let agg = Aggregator::start(&certs, &db, 0);
    let url = agg.url();
    let collector = start_collector(&certs, "bench", &url, "collector-bench");

    eprintln!("waiting for all {n} targets");
    let series_per_target = eventually(
        Duration::from_secs(120),
        "every workload as a target",
        || {
            let t = targets_by_pid(&certs, &url);
            let ready: Vec<usize> = workloads
                .iter()
                .filter_map(|w| {
                    let t = t.get(&u64::from(w.pid()))?;
                    t["latest"]["go_goroutines"]
                        .is_number()
                        .then(|| t["latest"].as_object().unwrap().len())
                })
                .collect();
            (ready.len() == n).then(|| ready.into_iter().max().unwrap())
        },
    );
    // Let the first, larger batches (series declarations) pass.
    std::thread::sleep(Duration::from_secs(5));

    eprintln!("measuring for {secs}s");
    let (c0, a0) = (cpu_ticks(collector.pid()), cpu_ticks(agg.proc.pid()));
    let wall0 = Instant::now();
    let t0 = goroscope_proto::unix_ms();
    std::thread::sleep(Duration::from_secs(secs));
    let (c1, a1) = (cpu_ticks(collector.pid()), cpu_ticks(agg.proc.pid()));
    let wall = wall0.elapsed().as_secs_f64();
    let t1 = goroscope_proto::unix_ms();

    // Count what was stored in [t0, t1) through the CLI, one metric at a time.
    let metrics: Vec<String> = targets_by_pid(&certs, &url)
        .values()
        .flat_map(|t| {
            t["latest"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut stored = 0usize;
    for m in &metrics {
        let v = goroscope_json(
            &certs,
            &url,
            &["query", m, "--target", "service=steady", "--since", "10m"],
        );
        stored += v["series"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["samples"].as_array().cloned().unwrap_or_default())
            .filter(|p| p[0].as_i64().is_some_and(|ts| ts >= t0 && ts < t1))
            .count();
    }
    let scrapes = n as f64 * wall / interval;
    let tick = 100.0; // USER_HZ
    let c_cpu = (c1 - c0) as f64 / tick;
    let a_cpu = (a1 - a0) as f64 / tick;
    let (c_rss, c_hwm) = memory(collector.pid());
    let (a_rss, a_hwm) = memory(agg.proc.pid());
    let disk = dir_bytes(&db);

    println!(
        "fleet: {n} Go targets, {series_per_target} series each, interval {interval}s, {wall:.0}s measured"
    );
    println!(
        "collector   cpu {:5.2}% of a core  {:6.3} ms per target scrape  rss {:6.1} MiB  peak {:6.1} MiB",
        100.0 * c_cpu / wall,
        1000.0 * c_cpu / scrapes,
        mib(c_rss),
        mib(c_hwm)
    );
    println!(
        "aggregator  cpu {:5.2}% of a core  {:6.1} us per sample stored  rss {:6.1} MiB  peak {:6.1} MiB",
        100.0 * a_cpu / wall,
        1e6 * a_cpu / stored.max(1) as f64,
        mib(a_rss),
        mib(a_hwm)
    );
    println!(
        "stored      {:.0} samples/s ({stored} in the window, {:.0} expected)  database {:.1} MiB on disk after the run",
        stored as f64 / wall,
        scrapes * series_per_target as f64,
        mib(disk)
    );
    drop(collector);
    drop(agg);
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
