//! What the collector costs a host, against Debian's `prometheus-node-exporter` in the
//! same run: N Go processes (default 50) serving every source the collector reads, one
//! collector at the deployed interval (10 s) with its default settings (stack summaries
//! on, the spool on, logs at info), streaming to an aggregator over mTLS on loopback;
//! beside it node_exporter on a free port, scraped every interval by this bench as
//! Prometheus would (a GET of /metrics asking for gzip).
//!
//! The workloads are a mix, a third each: `service` (expvar, pprof and a client_golang
//! /metrics on one address, 200 parked goroutines, so stack summaries have something to
//! group), `steady` (expvar and pprof) and `instrumented` (client_golang /metrics only).
//! Both daemons are measured over the same window: CPU from /proc/PID/stat (utime +
//! stime), VmRSS sampled every second (average and largest) and VmHWM; then where the
//! collector's resident memory lies (/proc/PID/smaps) and its threads.
//!
//! ```sh
//! cargo build --release --workspace --bins && cargo bench -p goroscope-tests --bench footprint
//! ```
//!
//! `GOROSCOPE_BENCH_TARGETS` (50), `GOROSCOPE_BENCH_SECONDS` (240, the window measured),
//! `GOROSCOPE_BENCH_INTERVAL` (10s) and `GOROSCOPE_NODE_EXPORTER`
//! (/usr/bin/prometheus-node-exporter) change the run.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use goroscope_tests::*;

fn main() {
    let n: usize = env_or("GOROSCOPE_BENCH_TARGETS", 50);
    let secs: u64 = env_or("GOROSCOPE_BENCH_SECONDS", 240);
    let interval: String = env_or("GOROSCOPE_BENCH_INTERVAL", "10s".to_owned());
    let every = humantime_secs(&interval);
    let node_exporter: String = env_or(
        "GOROSCOPE_NODE_EXPORTER",
        "/usr/bin/prometheus-node-exporter".to_owned(),
    );

    eprintln!("starting {n} Go workloads");
    let workloads: Vec<Workload> = (0..n)
        .map(|i| match i % 3 {
            0 => Workload::start("service", &["-park", "200"]),
            1 => Workload::start("steady", &["-workers", "1"]),
            _ => Workload::start("instrumented", &[]),
        })
        .collect();

    // node_exporter first, so that it is as warm as the collector when measured.
    let ne_addr = format!("127.0.0.1:{}", free_port());
    let ne = Proc::spawn(
        "node_exporter",
        Command::new(&node_exporter).arg(format!("--web.listen-address={ne_addr}")),
    );
    eventually(Duration::from_secs(20), "node_exporter to serve", || {
        http_get(&ne_addr, "/metrics", "").ok()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (ne_scrapes, ne_bytes, ne_micros) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let scraper = {
        let (stop, addr) = (stop.clone(), ne_addr.clone());
        let (count, bytes, micros) = (ne_scrapes.clone(), ne_bytes.clone(), ne_micros.clone());
        std::thread::spawn(move || {
            // Prometheus' scrape request: text format, gzip.
            let headers = "Accept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1\r\n\
                           Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n";
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if let Ok((_, sent)) = http_get(&addr, "/metrics", headers) {
                    micros.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                    bytes.fetch_add(sent as u64, Ordering::Relaxed);
                    count.fetch_add(1, Ordering::Relaxed);
                }
                next += Duration::from_secs_f64(every);
                while !stop.load(Ordering::Relaxed) && Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };

    let certs = Certs::new(&["bench"]);
    let data = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&certs, &data.path().join("db"), 0);
    let url = agg.url();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    // node_exporter is a Go process too: the collector samples it from /proc but is
    // told not to probe it, so that only this bench scrapes its /metrics.
    let collector = start_collector_with(
        &certs,
        "bench",
        &url,
        &interval,
        &format!(
            "metrics_listen = {metrics_addr:?}\n[discovery.service_ports]\nnode_exporter = []\n"
        ),
    );

    eprintln!("waiting for all {n} targets and their sources");
    let wanted: std::collections::HashSet<u64> =
        workloads.iter().map(|w| u64::from(w.pid())).collect();
    let coverage = eventually(
        Duration::from_secs(180),
        "every workload as a target with its sources",
        || {
            let t = targets_by_pid(&certs, &url);
            let mut cov = [0usize; 4]; // expvar, pprof, metrics, all of them
            for pid in &wanted {
                let c = &t.get(pid)?["coverage"];
                let [e, p, m] = ["expvar", "pprof", "metrics"].map(|k| c[k] == true);
                cov[0] += usize::from(e);
                cov[1] += usize::from(p);
                cov[2] += usize::from(m);
                cov[3] += usize::from(e || p || m);
            }
            (cov[3] == n).then_some(cov)
        },
    );
    // Let the first, larger batches (series declarations) and first probes pass.
    std::thread::sleep(Duration::from_secs_f64(2.0 * every));

    let load_before = load1();
    eprintln!("measuring for {secs}s (load average {load_before:.2})");
    let m0 = scrape_metrics(&metrics_addr);
    let (c0, e0) = (cpu_ticks(collector.pid()), cpu_ticks(ne.pid()));
    let (ne_n0, ne_b0, ne_us0) = (
        ne_scrapes.load(Ordering::Relaxed),
        ne_bytes.load(Ordering::Relaxed),
        ne_micros.load(Ordering::Relaxed),
    );
    let wall0 = Instant::now();
    let (mut c_rss, mut e_rss) = (Vec::new(), Vec::new());
    while wall0.elapsed() < Duration::from_secs(secs) {
        c_rss.push(memory(collector.pid()).0);
        e_rss.push(memory(ne.pid()).0);
        std::thread::sleep(Duration::from_secs(1));
    }
    let (c1, e1) = (cpu_ticks(collector.pid()), cpu_ticks(ne.pid()));
    let wall = wall0.elapsed().as_secs_f64();
    let m1 = scrape_metrics(&metrics_addr);
    let load_after = load1();
    let (ne_n, ne_b, ne_us) = (
        ne_scrapes.load(Ordering::Relaxed) - ne_n0,
        ne_bytes.load(Ordering::Relaxed) - ne_b0,
        ne_micros.load(Ordering::Relaxed) - ne_us0,
    );
    stop.store(true, Ordering::Relaxed);

    let avg = |v: &[u64]| v.iter().sum::<u64>() / v.len().max(1) as u64;
    let max = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
    let c_cpu = (c1 - c0) as f64 / TICK;
    let e_cpu = (e1 - e0) as f64 / TICK;
    let delta =
        |name: &str, labels: &[&str]| metric_sum(&m1, name, labels) - metric_sum(&m0, name, labels);
    let rounds = delta("goroscope_collector_rounds_total", &[]);
    let targets = metric_sum(&m1, "goroscope_collector_targets", &[]);

    println!(
        "footprint: {n} Go workloads (expvar {}, pprof {}, /metrics {}), {targets:.0} targets sampled, \
         interval {interval}, {wall:.0}s measured, load average {load_before:.2} before, {load_after:.2} after",
        coverage[0], coverage[1], coverage[2]
    );
    println!(
        "| daemon | CPU (% of a core) | CPU per interval | RSS average | RSS largest | VmHWM | threads |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, pid, cpu, rss) in [
        ("goroscope-collector", collector.pid(), c_cpu, &c_rss),
        ("prometheus-node-exporter", ne.pid(), e_cpu, &e_rss),
    ] {
        println!(
            "| {name} | {:.3} % | {:.1} ms | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} |",
            100.0 * cpu / wall,
            1000.0 * cpu * every / wall,
            mib(avg(rss)),
            mib(max(rss)),
            mib(memory(pid).1),
            status_field(pid, "Threads:"),
        );
    }
    println!(
        "collector: {rounds:.0} rounds, {:.2} ms per target sampled; stack reads {:.0} (debug=1 {:.0}, debug=2 {:.0}) taking the targets {:.1} ms, {:.0} skipped",
        1000.0 * c_cpu / (rounds.max(1.0) * targets.max(1.0)),
        delta("goroscope_collector_stack_reads_total", &[]),
        delta(
            "goroscope_collector_stack_reads_total",
            &["source=\"debug=1\""]
        ),
        delta(
            "goroscope_collector_stack_reads_total",
            &["source=\"debug=2\""]
        ),
        1000.0 * delta("goroscope_collector_stack_read_seconds_total", &[]),
        delta("goroscope_collector_stack_skips_total", &[]),
    );
    let skips: Vec<String> = m1
        .keys()
        .filter(|k| k.starts_with("goroscope_collector_stack_skips_total{"))
        .map(|k| {
            let d = m1[k] - m0.get(k).copied().unwrap_or(0.0);
            format!(
                "{} {d:.0}",
                &k["goroscope_collector_stack_skips_total".len()..]
            )
        })
        .collect();
    println!("collector stack skips: {}", skips.join(", "));
    println!(
        "node_exporter: {ne_n} scrapes, {:.1} KiB gzipped and {:.1} ms each on average",
        ne_b as f64 / 1024.0 / ne_n.max(1) as f64,
        ne_us as f64 / 1000.0 / ne_n.max(1) as f64
    );
    for (name, pid) in [("collector", collector.pid()), ("node_exporter", ne.pid())] {
        let by: Vec<String> = rss_by_mapping(pid)
            .iter()
            .map(|(k, v)| format!("{k} {:.1}", mib(*v)))
            .collect();
        let roll: Vec<String> = smaps_rollup(pid)
            .iter()
            .map(|(k, v)| format!("{k} {:.1}", mib(*v)))
            .collect();
        println!("{name} RSS by mapping (MiB): {}", by.join(", "));
        println!("{name} smaps_rollup (MiB): {}", roll.join(", "));
    }
    drop(collector);
    scraper.join().unwrap();
    drop(ne);
    drop(agg);
}

/// Seconds of a duration written as the collector reads it ("10s", "1m", "500ms").
fn humantime_secs(s: &str) -> f64 {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: f64 = num
        .parse()
        .expect("GOROSCOPE_BENCH_INTERVAL: a number then s, ms or m");
    match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        other => panic!("GOROSCOPE_BENCH_INTERVAL: unit {other:?} is not s, ms or m"),
    }
}
