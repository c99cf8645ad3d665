//! The load generator: many simulated collectors over the real mTLS gRPC path into one
//! aggregator, for the ingest rate it sustains and what that costs it.
//!
//! Each simulated collector has its own host certificate, opens its own TLS connection
//! and ingest stream, declares one target with `SERIES` series, and then sends a batch
//! every `INTERVAL_MS` holding `POINTS` samples of each series (values that move like
//! Go runtime counters and gauges), waiting for each ack before the next batch, as a
//! collector with one batch in flight does. Reports acknowledged samples per second
//! over the measured window, the aggregator's CPU (cores) and memory (VmRSS, VmHWM), the
//! load generator's own CPU (it shares the machine), and the database's size.
//!
//! ```sh
//! cargo build --release --workspace --bins && cargo bench -p goroscope-tests --bench ingest
//! ```
//!
//! `GOROSCOPE_LOAD_COLLECTORS` (1000), `GOROSCOPE_LOAD_SERIES` (100),
//! `GOROSCOPE_LOAD_POINTS` (10), `GOROSCOPE_LOAD_INTERVAL_MS` (1000),
//! `GOROSCOPE_LOAD_SECONDS` (30), `GOROSCOPE_LOAD_WORKERS` (the runtime's threads, 2)
//! and `GOROSCOPE_LOAD_HEAD_MAX_BYTES` (the aggregator's `storage.head_max_bytes`, 512
//! MiB) shape the run.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TICK, cpu_ticks, env_or, load_points, memory, mib};
use goroscope_proto::v1;
use goroscope_tests::raw::{RawIngest, decl, upsert};
use goroscope_tests::*;

fn main() {
    let collectors: usize = env_or("GOROSCOPE_LOAD_COLLECTORS", 1000);
    let series: u32 = env_or("GOROSCOPE_LOAD_SERIES", 100);
    let points: usize = env_or("GOROSCOPE_LOAD_POINTS", 10);
    let interval = Duration::from_millis(env_or("GOROSCOPE_LOAD_INTERVAL_MS", 1000));
    let secs: u64 = env_or("GOROSCOPE_LOAD_SECONDS", 30);
    let workers: usize = env_or("GOROSCOPE_LOAD_WORKERS", 2);
    let head_max: u64 = env_or("GOROSCOPE_LOAD_HEAD_MAX_BYTES", 512 << 20);

    let hosts: Vec<String> = (0..collectors).map(|i| format!("load-{i:05}")).collect();
    eprintln!("issuing {collectors} collector certificates");
    let host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let certs = Arc::new(Certs::new(&host_refs));
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("db");
    let agg = Aggregator::start_with(
        &certs,
        &db,
        0,
        // Every simulated collector connects from 127.0.0.1: one peer.
        &format!(
            "[limits]\nmax_sample_future = \"1h\"\nmax_connections_per_peer = {}\n\
             [detection]\nenabled = false\n[storage]\nhead_max_bytes = {head_max}\n",
            collectors + 16
        ),
    );
    let url = agg.url();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let (certs, url, host) = (certs.clone(), url.clone(), host.clone());
        let (acked, failed, stop, connected) = (
            acked.clone(),
            failed.clone(),
            stop.clone(),
            connected.clone(),
        );
        tasks.push(rt.spawn(async move {
            // Spread the connections and the batches over the interval.
            tokio::time::sleep(interval.mul_f64(i as f64 / collectors as f64)).await;
            let mut s = match RawIngest::try_open(&certs, &url, &host, 1).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{host}: {e}");
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            connected.fetch_add(1, Ordering::Relaxed);
            let mut seq = 0u64;
            let mut next = tokio::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let now = goroscope_proto::unix_ms();
                let step = (interval.as_millis() as i64 / points as i64).max(1);
                let batch = v1::Batch {
                    seq,
                    targets: if seq == 1 {
                        vec![upsert(1, &host, 4242, &[("service", "load")])]
                    } else {
                        vec![]
                    },
                    series: if seq == 1 {
                        (0..series)
                            .map(|r| decl(r, 1, &format!("load_metric_{r}")))
                            .collect()
                    } else {
                        vec![]
                    },
                    samples: (0..series)
                        .map(|r| {
                            let mut deltas = Vec::with_capacity(points);
                            let mut values = Vec::with_capacity(points);
                            let mut prev = 0;
                            for (t, v) in load_points(now, step, points, seq, r) {
                                deltas.push(t - prev);
                                prev = t;
                                values.push(v);
                            }
                            v1::SeriesSamples {
                                series_ref: r,
                                timestamp_deltas: deltas,
                                values,
                            }
                        })
                        .collect(),
                    ..Default::default()
                };
                match s.send(batch).await {
                    Ok(_) => {
                        acked.fetch_add(u64::from(series) * points as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("{host}: batch {seq}: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                next += interval;
                tokio::time::sleep_until(next).await;
            }
        }));
    }

    eprintln!("waiting for {collectors} streams");
    let deadline = Instant::now() + Duration::from_secs(120);
    while (connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed)) < collectors as u64
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    // The first batches carry the declarations.
    std::thread::sleep(Duration::from_secs(3));
    let me = std::process::id();
    let (a0, g0, s0, t0) = (
        cpu_ticks(agg.proc.pid()),
        cpu_ticks(me),
        acked.load(Ordering::Relaxed),
        Instant::now(),
    );
    eprintln!("measuring for {secs}s");
    std::thread::sleep(Duration::from_secs(secs));
    let wall = t0.elapsed().as_secs_f64();
    let samples = acked.load(Ordering::Relaxed) - s0;
    let agg_cpu = (cpu_ticks(agg.proc.pid()) - a0) as f64 / TICK / wall;
    let gen_cpu = (cpu_ticks(me) - g0) as f64 / TICK / wall;
    let (rss, hwm) = memory(agg.proc.pid());
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    });
    let status = goroscope_json(&certs, &url, &["status"]);
    let offered = collectors as f64 * f64::from(series) * points as f64 / interval.as_secs_f64();
    println!(
        "| {collectors} collectors x {series} series x {points} points / {} ms | offered {:.0}/s | acked {:.0} samples/s | aggregator {:.2} cores, RSS {:.0} MiB (peak {:.0} MiB) | load generator {:.2} cores | {} streams failed | disk {:.1} MiB, head {:.0} MiB |",
        interval.as_millis(),
        offered,
        samples as f64 / wall,
        agg_cpu,
        mib(rss),
        mib(hwm),
        gen_cpu,
        failed.load(Ordering::Relaxed),
        status["disk_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        status["head_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
    );
    drop(agg);
}
