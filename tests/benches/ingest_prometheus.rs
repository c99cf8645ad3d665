//! The ingest load of `benches/ingest.rs`, sent to Debian's Prometheus instead: the same
//! simulated collectors, series, points and values, each collector sending one
//! remote-write request (protobuf and snappy, over plain HTTP/1.1 with keep-alive) per
//! interval and waiting for its answer. Reports the samples per second Prometheus
//! accepted and its CPU and memory over the measured window: the peer of goroscope's
//! ingest figure on the same machine.
//!
//! ```sh
//! cargo bench -p goroscope-tests --bench ingest_prometheus
//! ```
//!
//! The `GOROSCOPE_LOAD_*` settings of `benches/ingest.rs` apply.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TICK, cpu_ticks, env_or, load_points, memory, mib};
use goroscope_remote_write::client::Client;
use goroscope_remote_write::prompb::{self, Label, Sample, TimeSeries, WriteRequest};
use goroscope_tests::*;

fn main() {
    let collectors: usize = env_or("GOROSCOPE_LOAD_COLLECTORS", 1000);
    let series: u32 = env_or("GOROSCOPE_LOAD_SERIES", 100);
    let points: usize = env_or("GOROSCOPE_LOAD_POINTS", 10);
    let interval = Duration::from_millis(env_or("GOROSCOPE_LOAD_INTERVAL_MS", 1000));
    let secs: u64 = env_or("GOROSCOPE_LOAD_SECONDS", 30);
    let workers: usize = env_or("GOROSCOPE_LOAD_WORKERS", 2);

    let data = tempfile::tempdir().unwrap();
    let prom = Prometheus::start(
        data.path(),
        &data.path().join("tsdb"),
        &["--web.enable-remote-write-receiver"],
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async {
        Arc::new(
            Client::new(&goroscope_remote_write::Config {
                remote_write_url: Some(format!("{}/api/v1/write", prom.url())),
                timeout: Duration::from_secs(30),
                ..Default::default()
            })
            .expect("remote-write client"),
        )
    });
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..collectors {
        let (client, acked, failed, stop) =
            (client.clone(), acked.clone(), failed.clone(), stop.clone());
        tasks.push(rt.spawn(async move {
            tokio::time::sleep(interval.mul_f64(i as f64 / collectors as f64)).await;
            let host = format!("load-{i:05}");
            let labels = |r: u32| {
                vec![
                    Label::new("__name__", format!("load_metric_{r}")),
                    Label::new("host", host.clone()),
                    Label::new("pid", "4242"),
                    Label::new("service", "load"),
                ]
            };
            let mut seq = 0u64;
            let mut next = tokio::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let now = goroscope_proto::unix_ms();
                let step = (interval.as_millis() as i64 / points as i64).max(1);
                let request = WriteRequest {
                    timeseries: (0..series)
                        .map(|r| TimeSeries {
                            labels: labels(r),
                            samples: load_points(now, step, points, seq, r)
                                .into_iter()
                                .map(|(timestamp, value)| Sample { value, timestamp })
                                .collect(),
                        })
                        .collect(),
                };
                match client.send(prompb::encode(&request)).await {
                    Ok(()) => {
                        acked.fetch_add(u64::from(series) * points as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("{host}: request {seq}: {}", e.detail);
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                next += interval;
                tokio::time::sleep_until(next).await;
            }
        }));
    }

    // Every collector's first requests create its series.
    std::thread::sleep(interval * 3 + Duration::from_secs(2));
    let me = std::process::id();
    let (p0, g0, s0, t0) = (
        cpu_ticks(prom.pid()),
        cpu_ticks(me),
        acked.load(Ordering::Relaxed),
        Instant::now(),
    );
    eprintln!("measuring for {secs}s");
    std::thread::sleep(Duration::from_secs(secs));
    let wall = t0.elapsed().as_secs_f64();
    let samples = acked.load(Ordering::Relaxed) - s0;
    let prom_cpu = (cpu_ticks(prom.pid()) - p0) as f64 / TICK / wall;
    let gen_cpu = (cpu_ticks(me) - g0) as f64 / TICK / wall;
    let (rss, hwm) = memory(prom.pid());
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    });
    let offered = collectors as f64 * f64::from(series) * points as f64 / interval.as_secs_f64();
    println!(
        "| Prometheus 2.42, {collectors} senders x {series} series x {points} points / {} ms | offered {:.0}/s | accepted {:.0} samples/s | Prometheus {:.2} cores, RSS {:.0} MiB (peak {:.0} MiB) | load generator {:.2} cores | {} requests failed |",
        interval.as_millis(),
        offered,
        samples as f64 / wall,
        prom_cpu,
        mib(rss),
        mib(hwm),
        gen_cpu,
        failed.load(Ordering::Relaxed),
    );
    drop(prom);
}
