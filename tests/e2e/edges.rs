//! The edges: what a fleet sends that no friendly test does. Non-finite samples, bad
//! labels, skewed clocks, oversized and malformed messages, escape sequences in names,
//! floods of connections without a certificate, stops mid-stream, certificates renewed
//! under load. Each must cost only itself.

use std::process::Command;
use std::time::Duration;

use goroscope_proto::v1;
use goroscope_tests::raw::{self, RawIngest, decl, sample, upsert};
use goroscope_tests::*;

const STARTUP: Duration = Duration::from_secs(60);

fn bits(v: &[(i64, f64)]) -> Vec<(i64, u64)> {
    v.iter().map(|(t, x)| (*t, x.to_bits())).collect()
}

/// One acknowledged batch with NaN and ±Inf samples: stored and returned bit for bit,
/// and the aggregator starts again on that database (it used to refuse to start).
#[test]
fn a_nan_sample_is_stored_exactly_and_the_aggregator_starts_again() {
    let certs = Certs::new(&["edge-nan"]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut agg = Aggregator::start(&certs, &data.path().join("db"), port);
    let url = agg.url();
    let rt = raw::runtime();
    let now = goroscope_proto::unix_ms();
    let odd = [
        (now - 3000, f64::NAN),
        (now - 2000, f64::INFINITY),
        (now - 1000, f64::NEG_INFINITY),
        (now, f64::from_bits(0x7ff0_0000_0000_0002)), // Prometheus' staleness marker
    ];
    rt.block_on(async {
        let mut s = RawIngest::open(&certs, &url, "edge-nan", 1).await;
        let batch = v1::Batch {
            seq: 1,
            targets: vec![upsert(0, "edge-nan", 4242, &[("service", "odd")])],
            series: vec![decl(0, 0, "go_goroutines")],
            samples: vec![v1::SeriesSamples {
                series_ref: 0,
                timestamp_deltas: vec![odd[0].0, 1000, 1000, 1000],
                values: odd.iter().map(|p| p.1).collect(),
            }],
            gone_targets: vec![],
            ..Default::default()
        };
        let ack = s.send(batch).await.expect("the batch is acked");
        assert!(ack.refused.is_empty(), "{ack:?}");
    });
    assert_eq!(agg.proc.terminate().code(), Some(0));
    let agg = Aggregator::start(&certs, &agg.data_dir, port);
    let got = rt.block_on(async {
        raw::query_client(&certs, &url)
            .query_range(v1::QueryRangeRequest {
                metric: "go_goroutines".into(),
                matchers: vec![],
                start_ms: now - 10_000,
                end_ms: now + 10_000,
            })
            .await
            .expect("query")
            .into_inner()
    });
    let points: Vec<(i64, f64)> = got.series[0]
        .samples
        .iter()
        .map(|s| (s.timestamp_ms, s.value()))
        .collect();
    assert_eq!(bits(&points), bits(&odd));
    // The CLI writes them as Prometheus does.
    let v = goroscope_json(&certs, &url, &["query", "go_goroutines", "--since", "1m"]);
    let samples = &v["series"][0]["samples"];
    assert_eq!(samples[0][1], "NaN", "{v}");
    assert_eq!(samples[1][1], "+Inf", "{v}");
    assert_eq!(samples[2][1], "-Inf", "{v}");
    let t = goroscope_json(&certs, &url, &["targets"]);
    assert_eq!(t["targets"][0]["latest"]["go_goroutines"], "NaN", "{t}");
    drop(agg);
}

/// A target with a hyphenated label name, or a label value over 1 KiB, is refused on
/// its own and named in the ack; the other targets of the batch are stored, and the
/// stream goes on.
#[test]
fn a_bad_label_costs_its_target_not_the_host() {
    let certs = Certs::new(&["edge-label"]);
    let data = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&certs, &data.path().join("db"), 0);
    let url = agg.url();
    let rt = raw::runtime();
    let now = goroscope_proto::unix_ms();
    let long = "v".repeat(1500);
    rt.block_on(async {
        let mut s = RawIngest::open(&certs, &url, "edge-label", 1).await;
        let ack = s
            .send(v1::Batch {
                seq: 1,
                targets: vec![
                    upsert(0, "edge-label", 1, &[("service", "good")]),
                    upsert(1, "edge-label", 2, &[("cluster-name", "prod")]),
                    upsert(2, "edge-label", 3, &[("cluster", &long)]),
                ],
                series: vec![
                    decl(0, 0, "go_goroutines"),
                    decl(1, 1, "go_goroutines"),
                    decl(2, 2, "go_goroutines"),
                ],
                samples: vec![
                    sample(0, now, 1.0),
                    sample(1, now, 2.0),
                    sample(2, now, 3.0),
                ],
                gone_targets: vec![],
                ..Default::default()
            })
            .await
            .expect("the batch is acked, not the stream ended");
        assert_eq!(ack.refused.len(), 2, "{ack:?}");
        assert!(
            ack.refused[0].reason.contains("\"cluster-name\""),
            "{ack:?}"
        );
        assert!(
            ack.refused[1]
                .reason
                .contains("1500 bytes, longer than 1024"),
            "{ack:?}"
        );
        // The stream is still open: the next batch is acked too.
        let ack = s
            .send(v1::Batch {
                seq: 2,
                samples: vec![sample(0, now + 1000, 4.0)],
                ..Default::default()
            })
            .await
            .expect("the stream goes on");
        assert_eq!(ack.seq, 2);
    });
    let t = targets_by_pid(&certs, &url);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[&1]["latest"]["go_goroutines"], 4.0);

    // A bad label in the collector's own settings stops it at start, naming the key.
    let config = data.path().join("c.toml");
    std::fs::write(
        &config,
        "host = \"edge-label\"\n[labels]\ncluster-name = \"prod\"\n",
    )
    .unwrap();
    let out = Command::new(bin("goroscope-collector"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("labels.cluster-name") && err.contains("letters, digits and '_'"),
        "{err}"
    );
}

/// A sample dated a year ahead is refused on its own and pins neither the latest value
/// nor LAST SEEN.
#[test]
fn a_sample_from_the_future_is_refused_and_pins_nothing() {
    let certs = Certs::new(&["edge-time"]);
    let data = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&certs, &data.path().join("db"), 0);
    let url = agg.url();
    let rt = raw::runtime();
    let now = goroscope_proto::unix_ms();
    let year = 365 * 24 * 3600 * 1000i64;
    rt.block_on(async {
        let mut s = RawIngest::open(&certs, &url, "edge-time", 1).await;
        let ack = s
            .send(v1::Batch {
                seq: 1,
                targets: vec![upsert(0, "edge-time", 7, &[])],
                series: vec![decl(0, 0, "go_goroutines")],
                samples: vec![v1::SeriesSamples {
                    series_ref: 0,
                    timestamp_deltas: vec![now, year],
                    values: vec![5.0, 99.0],
                }],
                gone_targets: vec![],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(ack.refused.len(), 1, "{ack:?}");
        assert_eq!(ack.refused[0].count, 1);
        assert!(
            ack.refused[0].reason.contains("outside the window"),
            "{ack:?}"
        );
    });
    let t = targets_by_pid(&certs, &url);
    assert_eq!(t[&7]["latest"]["go_goroutines"], 5.0, "{t:?}");
    assert!(
        t[&7]["last_seen_ms"].as_i64().unwrap() <= now + 1000,
        "{t:?}"
    );
}

/// A message over the aggregator's limit ends that stream with RESOURCE_EXHAUSTED naming
/// the limit (it used to end with OK and no reason); a malformed one ends its stream
/// only. The aggregator serves on.
#[test]
fn oversized_and_malformed_messages_cost_their_stream_only() {
    let certs = Certs::new(&["edge-size"]);
    let data = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::start_with(
        &certs,
        &data.path().join("db"),
        0,
        "[limits]\nmax_message_bytes = 4096\n",
    );
    let url = agg.url();
    let rt = raw::runtime();
    let now = goroscope_proto::unix_ms();
    rt.block_on(async {
        let mut s = RawIngest::open(&certs, &url, "edge-size", 1).await;
        assert_eq!(s.welcome.max_batch_bytes, 4096);
        let big = "x".repeat(1000);
        let labels: Vec<(&str, &str)> = vec![
            ("a", &big),
            ("b", &big),
            ("c", &big),
            ("d", &big),
            ("e", &big),
        ];
        let status = s
            .send(v1::Batch {
                seq: 1,
                targets: vec![upsert(0, "edge-size", 1, &labels)],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("4096")
                && status.message().contains("limits.max_message_bytes"),
            "{status:?}"
        );

        // Bytes that are not a batch: field 2 (the batch) holding garbage.
        let channel = raw::channel(&certs, &url, "collector-edge-size");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let hello = Bogus {
            hello: Some(v1::Hello {
                host: "edge-size".into(),
                collector_version: "raw".into(),
                epoch: 2,
                capabilities: vec![],
            }),
            batch: None,
        };
        let garbage = Bogus {
            hello: None,
            batch: Some(vec![0xff, 0xff, 0xff, 0x0f, 0x08]),
        };
        let outbound = tokio_stream::iter(vec![hello, garbage]);
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/goroscope.v1.Ingest/Stream");
        let codec: tonic_prost::ProstCodec<Bogus, v1::AggregatorMessage> = Default::default();
        let mut inbound = grpc
            .streaming(tonic::Request::new(outbound), path, codec)
            .await
            .expect("the stream opens")
            .into_inner();
        let status = loop {
            match tokio::time::timeout(Duration::from_secs(20), inbound.message()).await {
                Err(_) => panic!("no answer to a malformed batch"),
                Ok(Ok(Some(m))) => {
                    assert!(
                        matches!(m.msg, Some(v1::aggregator_message::Msg::Welcome(_))),
                        "{m:?}"
                    );
                }
                Ok(Ok(None)) => panic!("the malformed stream ended without a status"),
                Ok(Err(status)) => break status,
            }
        };
        assert_ne!(status.code(), tonic::Code::Ok, "{status:?}");

        // A well-behaved stream of the same host still works.
        let mut s = RawIngest::open(&certs, &url, "edge-size", 3).await;
        let ack = s
            .send(v1::Batch {
                seq: 1,
                targets: vec![upsert(0, "edge-size", 1, &[])],
                series: vec![decl(0, 0, "go_goroutines")],
                samples: vec![sample(0, now, 1.0)],
                gone_targets: vec![],
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(ack.refused.is_empty());
    });
    assert!(
        agg.proc.try_exit().is_none(),
        "the aggregator is still running"
    );
    let line = agg.proc.wait_for_line("collector stream ended", STARTUP);
    assert!(line.contains("limits.max_message_bytes"), "{line}");
}

/// A CollectorMessage whose batch field holds arbitrary bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct Bogus {
    #[prost(message, optional, tag = "1")]
    hello: Option<v1::Hello>,
    #[prost(bytes = "vec", optional, tag = "2")]
    batch: Option<Vec<u8>>,
}

/// A scrape larger than the aggregator takes in one message is split into batches
/// that fit: everything arrives, nothing is dropped.
#[test]
fn a_scrape_over_the_batch_limit_is_split_and_arrives_whole() {
    let steady = Workload::start("steady", &[]);
    let (certs, _data, mut agg, mut collector) =
        start_stack("edge-split", "[limits]\nmax_message_bytes = 1024\n");
    let url = agg.url();
    let t = eventually(STARTUP, "steady with its runtime metrics", || {
        let t = targets_by_pid(&certs, &url);
        t.get(&u64::from(steady.pid()))
            .filter(|t| {
                t["latest"]["go_goroutines"].is_number()
                    && t["latest"]["go_memstats_heap_inuse_bytes"].is_number()
                    && t["latest"]["process_resident_memory_bytes"].is_number()
            })
            .cloned()
    });
    assert_eq!(t["labels"]["service"], "steady");
    let log = collector.output();
    assert!(!log.contains("left out items"), "{log}");
    assert!(!log.contains("aggregator stream failed"), "{log}");
    assert!(collector.try_exit().is_none() && agg.proc.try_exit().is_none());
}

/// A Go program whose name carries terminal escape sequences (built outside a module,
/// so its name is its service) is listed with the sequences escaped: no raw control
/// character reaches the terminal or the collector's log.
#[test]
fn escape_sequences_in_a_program_name_print_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("main.go");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads/steady/main.go"),
        &src,
    )
    .unwrap();
    let name = "\u{1b}]0;PWNED\u{7}\u{1b}[31mred";
    let exe = dir.path().join(name);
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&exe)
        .arg("main.go")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = Workload::start_cmd("evil", &mut Command::new(&exe));
    let (certs, _data, agg, collector) = start_stack("edge-term", "");
    let url = agg.url();
    eventually(STARTUP, "the program listed", || {
        targets_by_pid(&certs, &url)
            .get(&u64::from(w.pid()))
            .cloned()
    });
    for args in [
        &["targets"][..],
        &["query", "go_goroutines", "--since", "1m"],
    ] {
        let out = goroscope(&certs, &url, None, args);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        if args[0] == "targets" {
            assert!(text.contains("\\e]0;PWNED\\x07"), "{text}");
        }
    }
    // JSON keeps the name as sent (escaped the JSON way).
    let t = targets_by_pid(&certs, &url);
    let service = t[&u64::from(w.pid())]["labels"]["service"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(service.starts_with("\u{1b}]0;PWNED\u{7}"), "{service:?}");
    let log = collector.output();
    assert!(!log.contains('\u{1b}') && !log.contains('\u{7}'), "{log:?}");
}

/// Thousands of connections without a certificate, held open: they hold only their
/// peer's share of slots and only for a moment; a real collector and the CLI still get
/// in, and the refusals are counted.
#[test]
fn certless_connections_cannot_hold_the_aggregator() {
    let steady = Workload::start("steady", &[]);
    let certs = Certs::new(&["edge-flood"]);
    let data = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let agg = Aggregator::start_with(
        &certs,
        &data.path().join("db"),
        0,
        &format!("metrics_listen = \"127.0.0.1:{metrics_port}\"\n"),
    );
    let url = agg.url();
    let rt = raw::runtime();
    let (held, flood) = rt.block_on(raw::certless_flood(
        &certs,
        agg.addr,
        "127.0.0.2".parse().unwrap(),
        3000,
    ));
    assert!(
        held <= 256,
        "at most limits.max_connections_per_peer from one address: {held}"
    );
    let _collector = start_collector(&certs, "edge-flood", &url, "collector-edge-flood");
    eventually(
        Duration::from_secs(30),
        "the collector's samples despite the flood",
        || {
            targets_by_pid(&certs, &url)
                .get(&u64::from(steady.pid()))
                .filter(|t| t["latest"]["process_resident_memory_bytes"].is_number())
                .cloned()
        },
    );
    let metrics_addr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let (_, body) = raw::http_get(metrics_addr, "/metrics");
    assert!(
        body.contains("goroscope_aggregator_tls_handshake_failures_total{reason=\"peer_cap\"}"),
        "{body}"
    );
    // Without a certificate a connection lives only moments.
    eventually(
        Duration::from_secs(30),
        "the certless connections closed",
        || {
            let (_, body) = raw::http_get(metrics_addr, "/metrics");
            let none = body
                .lines()
                .find(|l| l.starts_with("goroscope_aggregator_connections{role=\"none\"}"))
                .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                .unwrap_or(0.0);
            (none == 0.0).then_some(())
        },
    );
    for t in flood {
        t.abort();
    }
}

/// SIGTERM mid-stream ends the aggregator with exit code 0 every time (it used to abort
/// in about one stop of eight, tearing RocksDB down under its writer thread), and what
/// it acknowledged is there after the restart.
#[test]
fn the_aggregator_stops_cleanly_on_sigterm() {
    let _steady = Workload::start("steady", &[]);
    let certs = Certs::new(&["edge-stop"]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let _collector = start_collector(&certs, "edge-stop", &url, "collector-edge-stop");
    for round in 0..8 {
        let mut agg = Aggregator::start(&certs, &data.path().join("db"), port);
        agg.proc.wait_for_line("collector connected", STARTUP);
        std::thread::sleep(Duration::from_millis(300 + 170 * round));
        let status = agg.proc.terminate();
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: {status:?}\n{}",
            agg.proc.output()
        );
    }
}

/// Both daemons serve their own metrics and health on metrics_listen.
#[test]
fn both_daemons_serve_metrics_and_health() {
    let _steady = Workload::start("steady", &[]);
    let certs = Certs::new(&["edge-metrics"]);
    let data = tempfile::tempdir().unwrap();
    let (agg_port, col_port) = (free_port(), free_port());
    let agg = Aggregator::start_with(
        &certs,
        &data.path().join("db"),
        0,
        &format!("metrics_listen = \"127.0.0.1:{agg_port}\"\n"),
    );
    let _collector = Proc::spawn(
        "collector",
        collector_command(&certs, "edge-metrics", &agg.url(), "collector-edge-metrics")
            .arg(format!("--metrics-listen=127.0.0.1:{col_port}")),
    );
    let agg_addr = format!("127.0.0.1:{agg_port}").parse().unwrap();
    let col_addr = format!("127.0.0.1:{col_port}").parse().unwrap();
    let body = eventually(STARTUP, "acked batches in both daemons' metrics", || {
        let (_, a) = raw::http_get(agg_addr, "/metrics");
        let (status, c) = raw::try_http_get(col_addr, "/metrics")?;
        let acked = c
            .lines()
            .find(|l| l.starts_with("goroscope_collector_batches_acked_total"))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())?;
        (status == 200 && acked >= 2.0).then_some((a, c))
    });
    for name in [
        "goroscope_aggregator_batches_received_total",
        "goroscope_aggregator_ack_latency_seconds_bucket",
        "goroscope_aggregator_writer_queue_depth",
        "goroscope_aggregator_connections{role=\"collector\"}",
        "goroscope_aggregator_certificate_expiry_timestamp_seconds{file=\"cert\"}",
    ] {
        assert!(body.0.contains(name), "{name} missing:\n{}", body.0);
    }
    for name in [
        "goroscope_collector_outbox_bytes",
        "goroscope_collector_outbox_oldest_age_seconds",
        "goroscope_collector_batches_sent_total",
        "goroscope_collector_certificate_expiry_timestamp_seconds{file=\"cert\"}",
    ] {
        assert!(body.1.contains(name), "{name} missing:\n{}", body.1);
    }
    assert_eq!(raw::http_get(agg_addr, "/healthz"), (200, "ok\n".into()));
    assert_eq!(raw::http_get(col_addr, "/healthz"), (200, "ok\n".into()));
    assert_eq!(raw::http_get(agg_addr, "/nope").0, 404);
}

/// Writes `bytes` to `path` the way a secret volume is renewed: whole, in one rename.
fn replace(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Every certificate and the CA are renewed in place while a collector streams: the
/// daemons reload them without a restart, the aggregator presents its new certificate,
/// the collector reconnects with its new one, a bundle with both CAs is trusted during
/// the overlap, and no sample is lost.
#[test]
fn certificates_rotate_without_a_restart_and_no_sample_is_lost() {
    let steady = Workload::start("steady", &[]);
    let old = Certs::new(&["edge-rot"]);
    let new = Certs::new(&["edge-rot"]);
    // The live files the daemons read, starting as the old fleet's.
    let live = tempfile::tempdir().unwrap();
    let files = [
        "ca.pem",
        "aggregator-localhost.pem",
        "aggregator-localhost-key.pem",
        "collector-edge-rot.pem",
        "collector-edge-rot-key.pem",
        "operator-alice.pem",
        "operator-alice-key.pem",
    ];
    for f in files {
        std::fs::copy(old.path(f), live.path().join(f)).unwrap();
    }
    let live_certs = Certs::at(live.path());
    let data = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&live_certs, &data.path().join("db"), 0);
    let url = agg.url();
    let collector = start_collector(&live_certs, "edge-rot", &url, "collector-edge-rot");
    eventually(STARTUP, "samples before the rotation", || {
        (series(
            &live_certs,
            &url,
            "process_resident_memory_bytes",
            steady.pid(),
            "5m",
        )
        .len()
            >= 3)
            .then_some(())
    });
    let started = goroscope_proto::unix_ms();

    // 1. The CA bundle holds both CAs.
    let bundle = [
        std::fs::read(old.ca()).unwrap(),
        std::fs::read(new.ca()).unwrap(),
    ]
    .concat();
    replace(&live.path().join("ca.pem"), &bundle);
    std::thread::sleep(Duration::from_secs(7));
    // 2. Every leaf is renewed by the new CA (certificate first, then its key).
    for f in &files[1..] {
        replace(&live.path().join(f), &std::fs::read(new.path(f)).unwrap());
    }
    collector.wait_for_line(
        "certificates renewed: reconnecting",
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_secs(7));
    // 3. The overlap ends: only the new CA.
    replace(
        &live.path().join("ca.pem"),
        &std::fs::read(new.ca()).unwrap(),
    );
    std::thread::sleep(Duration::from_secs(8));

    // The new fleet alone (its CA, its operator) reaches the aggregator: it presents
    // its new certificate and trusts the new CA.
    let t = targets_by_pid(&new, &url);
    assert!(t.contains_key(&u64::from(steady.pid())), "{t:?}");
    // The old fleet no longer does.
    let out = goroscope(&old, &url, None, &["targets"]);
    assert!(!out.status.success());

    // The collector went on through all of it: samples every second, none lost.
    std::thread::sleep(Duration::from_secs(3));
    let s = series(
        &new,
        &url,
        "process_resident_memory_bytes",
        steady.pid(),
        "5m",
    );
    let during: Vec<i64> = s.iter().map(|p| p.0).filter(|t| *t >= started).collect();
    assert!(during.len() >= 20, "{during:?}");
    let gaps: Vec<i64> = during.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g <= 1900),
        "a sample was lost: gaps {gaps:?}"
    );
    let log = agg.proc.output();
    assert!(log.contains("certificates changed: reloaded them"), "{log}");
}

/// A peer that accepts TCP and never speaks TLS (it used to hang the collector and
/// `goroscope targets` forever): the CLI gives up within its deadline with one line, the
/// collector goes on sampling into its outbox, and stops within Kubernetes' grace.
#[test]
fn a_peer_that_never_speaks_tls_holds_no_one() {
    let _steady = Workload::start("steady", &[]);
    let certs = Certs::new(&["edge-mute"]);
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", mute.local_addr().unwrap());
    // Accept and hold every connection, saying nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in mute.incoming() {
            held.push(conn);
        }
    });
    let started = std::time::Instant::now();
    let out = goroscope(&certs, &url, None, &["targets"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no TLS session within"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    let mut collector = start_collector(&certs, "edge-mute", &url, "collector-edge-mute");
    collector.wait_for_line("no TLS session within", STARTUP);
    // Sampling goes on meanwhile: rounds complete into the outbox.
    let rounds = collector.output().matches("sampled targets=").count();
    std::thread::sleep(Duration::from_secs(3));
    assert!(collector.output().matches("sampled targets=").count() >= rounds + 2);
    let stopping = std::time::Instant::now();
    let status = collector.terminate();
    assert_eq!(status.code(), Some(0), "{}", collector.output());
    assert!(
        stopping.elapsed() < Duration::from_secs(30),
        "{:?}",
        stopping.elapsed()
    );
}

/// One collector certificate declaring a flood of series on one target gets what
/// limits.max_series_per_target allows and refusals for the rest, in its acks; the
/// aggregator's index holds no more, and other collectors are not held up.
#[test]
fn a_flood_of_series_on_one_target_is_capped() {
    let certs = Certs::new(&["edge-many", "edge-calm"]);
    let data = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let agg = Aggregator::start_with(
        &certs,
        &data.path().join("db"),
        0,
        &format!(
            "metrics_listen = \"127.0.0.1:{metrics_port}\"\n[limits]\nmax_series_per_target = 5000\n"
        ),
    );
    let url = agg.url();
    let rt = raw::runtime();
    let now = goroscope_proto::unix_ms();
    rt.block_on(async {
        let mut s = RawIngest::open(&certs, &url, "edge-many", 1).await;
        let mut refused = 0;
        for chunk in 0..4u32 {
            let refs = chunk * 5000..(chunk + 1) * 5000;
            let ack = s
                .send(v1::Batch {
                    seq: u64::from(chunk) + 1,
                    targets: if chunk == 0 {
                        vec![upsert(0, "edge-many", 1, &[])]
                    } else {
                        vec![]
                    },
                    series: refs
                        .clone()
                        .map(|r| decl(r, 0, &format!("m_{r}")))
                        .collect(),
                    samples: refs.map(|r| sample(r, now, 1.0)).collect(),
                    gone_targets: vec![],
                    ..Default::default()
                })
                .await
                .expect("acked, not the stream ended");
            refused += ack.refused_count;
        }
        assert_eq!(refused, 15_000);
        // Another host's one-sample batches are still acked.
        let mut calm = RawIngest::open(&certs, &url, "edge-calm", 1).await;
        for seq in 1..=5 {
            let ack = calm
                .send(v1::Batch {
                    seq,
                    targets: vec![upsert(0, "edge-calm", 2, &[])],
                    series: vec![decl(0, 0, "go_goroutines")],
                    samples: vec![sample(0, now + seq as i64, 1.0)],
                    gone_targets: vec![],
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(ack.refused.is_empty());
        }
    });
    let (_, body) = raw::http_get(
        format!("127.0.0.1:{metrics_port}").parse().unwrap(),
        "/metrics",
    );
    let series = body
        .lines()
        .find(|l| l.starts_with("goroscope_aggregator_series "))
        .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .unwrap();
    assert_eq!(series, 5001.0, "{body}");
}

/// One collector certificate opens a handful of streams at most; the next is refused
/// naming the limit, and a slot comes back when a stream ends.
#[test]
fn streams_per_host_are_capped() {
    let certs = Certs::new(&["edge-streams"]);
    let data = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&certs, &data.path().join("db"), 0);
    let url = agg.url();
    let rt = raw::runtime();
    rt.block_on(async {
        let mut open = Vec::new();
        for epoch in 1..=4 {
            open.push(RawIngest::open(&certs, &url, "edge-streams", epoch).await);
        }
        let status = RawIngest::try_open(&certs, &url, "edge-streams", 5)
            .await
            .err()
            .expect("a fifth stream is refused");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("limits.max_streams_per_host"),
            "{status:?}"
        );
        drop(open.pop());
        eventually_async(|| async {
            RawIngest::try_open(&certs, &url, "edge-streams", 6)
                .await
                .ok()
        })
        .await;
    });
}

async fn eventually_async<T, F: std::future::Future<Output = Option<T>>>(
    mut f: impl FnMut() -> F,
) -> T {
    for _ in 0..100 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after 20s");
}

/// A storage writer that cannot write (the disk is full) stops the aggregator with a
/// non-zero exit and one line saying why, instead of refusing every batch forever;
/// nothing it acknowledged before is lost.
#[test]
fn a_full_disk_stops_the_aggregator_instead_of_refusing_forever() {
    let certs = Certs::new(&["edge-disk"]);
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("db");
    std::fs::create_dir_all(&db).unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        mount.status.success(),
        "mount a small tmpfs (needs root): {}",
        String::from_utf8_lossy(&mount.stderr)
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(db.clone());
    // No free-space margin: the write itself fails.
    let mut agg = Aggregator::start_with(
        &certs,
        &db,
        0,
        "[storage]\nsync_writes = true\nmin_free_bytes = 0\n",
    );
    let url = agg.url();
    let rt = raw::runtime();
    let now = goroscope_proto::unix_ms();
    let failed = rt.block_on(async {
        let mut s = RawIngest::open(&certs, &url, "edge-disk", 1).await;
        let big = "x".repeat(1000);
        let names: Vec<String> = (0..30).map(|i| format!("note_{i}")).collect();
        let labels: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), big.as_str())).collect();
        for seq in 1..=10_000u64 {
            let batch = v1::Batch {
                seq,
                targets: vec![upsert(seq as u32, "edge-disk", seq as u32, &labels)],
                series: (0..50)
                    .map(|i| decl(seq as u32 * 100 + i, seq as u32, &format!("m_{i}")))
                    .collect(),
                samples: (0..50)
                    .map(|i| sample(seq as u32 * 100 + i, now, 1.0))
                    .collect(),
                gone_targets: vec![],
                ..Default::default()
            };
            if let Err(status) = s.send(batch).await {
                return status;
            }
        }
        panic!("16 MiB held 10,000 batches of 30 KiB");
    });
    assert_ne!(failed.code(), tonic::Code::Ok, "{failed:?}");
    let status = eventually(Duration::from_secs(30), "the aggregator to exit", || {
        agg.proc.try_exit()
    });
    assert!(!status.success(), "{status:?}");
    let out = agg.proc.output();
    assert!(out.contains("storage writer stopped"), "{out}");
}

/// Under its free-space margin (storage.min_free_bytes) the aggregator refuses batches
/// with UNAVAILABLE instead of acknowledging them, stays up, and takes them again once
/// there is room: every batch acknowledged, before and after, is stored.
#[test]
fn a_nearly_full_disk_refuses_batches_until_there_is_room_again() {
    let certs = Certs::new(&["edge-room"]);
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("db");
    std::fs::create_dir_all(&db).unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(mount.status.success(), "mount a tmpfs (needs root)");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(db.clone());
    // Something else on the disk takes most of it.
    let filler = db.join("filler");
    std::fs::write(&filler, vec![1u8; 24 << 20]).unwrap();
    let agg = Aggregator::start_with(
        &certs,
        &db.join("data"),
        0,
        "[storage]\nmin_free_bytes = 25165824\n",
    );
    let url = agg.url();
    let rt = raw::runtime();
    let now = goroscope_proto::unix_ms();
    let big = "x".repeat(1000);
    let names: Vec<String> = (0..30).map(|i| format!("note_{i}")).collect();
    let labels: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), big.as_str())).collect();
    let batch = |seq: u64| v1::Batch {
        seq,
        targets: vec![upsert(seq as u32, "edge-room", seq as u32, &labels)],
        series: vec![decl(seq as u32, seq as u32, "go_goroutines")],
        samples: vec![sample(seq as u32, now - 1000 + seq as i64, seq as f64)],
        ..Default::default()
    };
    let (acked, refused) = rt.block_on(async {
        let mut s = RawIngest::open(&certs, &url, "edge-room", 1).await;
        for seq in 1..=5_000u64 {
            match s.send(batch(seq)).await {
                Ok(ack) => assert_eq!(ack.seq, seq),
                Err(status) => return (seq - 1, status),
            }
        }
        panic!("the margin was never reached");
    });
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("min_free_bytes"), "{refused:?}");
    assert!(acked > 10, "{acked} batches before the margin");
    // Still refused while there is no room; the aggregator stays up.
    let again = rt.block_on(async {
        let mut s = RawIngest::open(&certs, &url, "edge-room", 1).await;
        assert_eq!(
            s.welcome.last_acked_seq, acked,
            "nothing refused was marked stored"
        );
        s.send(batch(acked + 1)).await
    });
    assert_eq!(again.unwrap_err().code(), tonic::Code::Unavailable);
    // Room again: the same batches go through.
    std::fs::remove_file(&filler).unwrap();
    let more = acked + 20;
    eventually(Duration::from_secs(20), "batches taken again", || {
        rt.block_on(async {
            let mut s = RawIngest::try_open(&certs, &url, "edge-room", 1)
                .await
                .ok()?;
            let from = s.welcome.last_acked_seq + 1;
            for seq in from..=more {
                s.send(batch(seq)).await.ok()?;
            }
            Some(())
        })
    });
    let stored = goroscope_json(&certs, &url, &["status"]);
    assert_eq!(stored["collectors"][0]["batches"], more, "{stored}");
    let targets = goroscope_json(&certs, &url, &["targets", "--since", "0s"]);
    assert_eq!(targets["targets"].as_array().unwrap().len() as u64, more);
    drop(agg);
}

/// A connection that opens TLS with a valid certificate and then says nothing is closed
/// after limits.idle_timeout: holding a slot costs traffic.
#[test]
fn an_idle_connection_is_closed() {
    let certs = Certs::new(&[]);
    let data = tempfile::tempdir().unwrap();
    let agg = Aggregator::start_with(
        &certs,
        &data.path().join("db"),
        0,
        "[limits]\nidle_timeout = \"2s\"\n",
    );
    let rt = raw::runtime();
    let held = rt.block_on(async {
        let (cert, key) = certs.leaf("operator-alice");
        let config =
            goroscope_proto::connect::client_config(&certs.ca(), Some((&cert, &key))).unwrap();
        let tcp = tokio::net::TcpStream::connect(agg.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("the handshake completes");
        let started = std::time::Instant::now();
        let mut buf = [0u8; 256];
        use tokio::io::AsyncReadExt;
        loop {
            match tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf)).await {
                Err(_) => panic!("the idle connection is still open after 20s"),
                Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
                Ok(Ok(_)) => continue,
            }
        }
    });
    assert!(
        held >= Duration::from_millis(1500),
        "closed too early: {held:?}"
    );
}
