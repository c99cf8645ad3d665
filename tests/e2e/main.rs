//! End-to-end tests: real Go workloads, the real collector and aggregator binaries over
//! mTLS on loopback, and answers read through the real `goroscope` CLI.

mod alerting;
mod captures;
mod cgroup;
mod detection;
mod discovery;
mod durability;
mod edges;
mod fleet;
mod metrics;
mod promql;
mod spool;
mod stacks;
mod storage;

use std::time::Duration;

use goroscope_tests::*;

const STARTUP: Duration = Duration::from_secs(60);

/// (a) the workloads appear as targets with their Go version, RSS and goroutine count;
/// (b) the leaking workload's go_goroutines series rises; a Go process without HTTP
/// endpoints and one whose endpoints answer garbage are still targets, from /proc.
#[test]
fn workloads_appear_as_targets_and_a_goroutine_leak_shows_as_a_rising_series() {
    let steady = Workload::start("steady", &[]);
    let leaky = Workload::start("leaky", &["-rate", "20", "-every", "500ms"]);
    let quiet = Workload::start("quiet", &[]);
    let garbage = Workload::start("garbage", &[]);
    let (certs, _data, agg, collector) = start_stack("e2e-a", "");
    let url = agg.url();

    let targets = eventually(
        STARTUP,
        "all four workloads with their goroutine counts",
        || {
            let t = targets_by_pid(&certs, &url);
            // smaps_rollup is read every sixth sample: its series come within six.
            let ready = [steady.pid(), leaky.pid()].iter().all(|pid| {
                t.get(&u64::from(*pid)).is_some_and(|t| {
                    t["latest"]["go_goroutines"].is_number()
                        && t["latest"]["process_anon_bytes"].is_number()
                })
            }) && t.contains_key(&u64::from(quiet.pid()))
                && t.contains_key(&u64::from(garbage.pid()));
            ready.then_some(t)
        },
    );

    let go_version = {
        let out = std::process::Command::new("go")
            .arg("env")
            .arg("GOVERSION")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    for (w, service) in [(&steady, "steady"), (&leaky, "leaky")] {
        let t = &targets[&u64::from(w.pid())];
        assert_eq!(t["host"], "e2e-a");
        assert_eq!(t["labels"]["service"], service);
        assert_eq!(t["labels"]["go_version"], go_version.as_str());
        assert_eq!(t["labels"]["module"], "goroscope.test/workloads");
        assert!(
            t["latest"]["process_resident_memory_bytes"]
                .as_f64()
                .unwrap()
                > 1e6,
            "{t}"
        );
        assert!(t["latest"]["go_goroutines"].as_f64().unwrap() >= 2.0, "{t}");
        // From /proc/PID/smaps_rollup: the anonymous memory, what of it the kernel may
        // take back (LazyFree), and swap.
        assert!(
            t["latest"]["process_anon_bytes"].as_f64().unwrap() > 1e5,
            "{t}"
        );
        assert!(
            t["latest"]["process_lazyfree_bytes"].as_f64().unwrap() >= 0.0,
            "{t}"
        );
        assert!(t["latest"]["process_swap_bytes"].is_number(), "{t}");
        assert!(
            t["latest"]["go_memstats_heap_inuse_bytes"]
                .as_f64()
                .unwrap()
                > 0.0,
            "{t}"
        );
        assert_eq!(t["coverage"]["expvar"], true, "{t}");
        assert_eq!(t["coverage"]["pprof"], true, "{t}");
        assert_eq!(t["coverage"]["debug_addr"], w.addr.unwrap().to_string());
    }
    let q = &targets[&u64::from(quiet.pid())];
    assert_eq!(q["labels"]["service"], "quiet");
    assert!(
        q["latest"]["process_resident_memory_bytes"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(q["latest"].get("go_goroutines").is_none(), "{q}");
    assert_eq!(q["coverage"]["expvar"], false);

    // Garbage from an endpoint costs that target its runtime sample, nothing more.
    let g = &targets[&u64::from(garbage.pid())];
    assert!(
        g["latest"]["process_resident_memory_bytes"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(g["latest"].get("go_goroutines").is_none(), "{g}");
    assert!(
        g["latest"].get("go_memstats_heap_inuse_bytes").is_none(),
        "{g}"
    );

    // The leak: go_goroutines of leaky rises over the samples, steady's does not.
    let leak = eventually(STARTUP, "six samples of leaky's go_goroutines", || {
        let s = series(&certs, &url, "go_goroutines", leaky.pid(), "5m");
        (s.len() >= 6).then_some(s)
    });
    assert!(
        leak.windows(2).all(|w| w[0].0 < w[1].0),
        "timestamps increase: {leak:?}"
    );
    let (first, last) = (leak[0].1, leak[leak.len() - 1].1);
    assert!(
        last >= first + 50.0,
        "leaky's goroutines rose from {first} to {last}: {leak:?}"
    );
    let rises = leak.windows(2).filter(|w| w[1].1 > w[0].1).count();
    assert!(
        rises >= leak.len() - 2,
        "nearly every sample is higher: {leak:?}"
    );

    let calm = series(&certs, &url, "go_goroutines", steady.pid(), "5m");
    let (lo, hi) = calm.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    assert!(hi - lo <= 6.0, "steady's goroutines stay flat: {calm:?}");

    // The table output names the columns and the targets.
    let out = goroscope(&certs, &url, None, &["targets"]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("HOST"), "{table}");
    assert!(table.contains("GOROUTINES") && table.contains("leaky") && table.contains(&go_version));

    // The collector said why the garbage endpoint is not used, and kept going.
    let log = collector.output();
    assert!(
        log.lines().any(|l| l.contains("no runtime endpoints found")
            && l.contains(&format!("pid={}", garbage.pid()))
            && l.contains("not expvar JSON")),
        "{log}"
    );
    // A target that vanishes is marked exited; the others go on being sampled.
    let mut garbage = garbage;
    garbage.proc.kill();
    let seen_before = targets[&u64::from(steady.pid())]["last_seen_ms"]
        .as_i64()
        .unwrap();
    eventually(STARTUP, "the vanished workload marked exited", || {
        let t = targets_by_pid(&certs, &url);
        let exited = t[&u64::from(garbage.pid())]["exited"] == true;
        let steady_seen = t[&u64::from(steady.pid())]["last_seen_ms"]
            .as_i64()
            .unwrap();
        (exited && steady_seen > seen_before + 2000).then_some(())
    });
    let mut collector = collector;
    assert!(
        collector.try_exit().is_none(),
        "the collector is still running"
    );
}

/// Real third-party Go programs: Debian's Prometheus and node_exporter, built by another
/// toolchain (Go 1.19, `-trimpath`, no module line). Both serve pprof and `/metrics`,
/// only node_exporter expvar; both are found by their build info and sampled from what
/// they serve, their own series from their expositions.
#[test]
fn prometheus_and_node_exporter_are_found_and_sampled() {
    let dir = tempfile::tempdir().unwrap();
    let (prom_port, node_port) = (free_port(), free_port());
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: node\n    \
             static_configs:\n      - targets: ['127.0.0.1:{node_port}']\n"
        ),
    )
    .unwrap();
    let node = Proc::spawn(
        "node_exporter",
        std::process::Command::new(third_party("prometheus-node-exporter"))
            .arg(format!("--web.listen-address=127.0.0.1:{node_port}")),
    );
    let prom = Proc::spawn(
        "prometheus",
        std::process::Command::new(third_party("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}")),
    );
    prom.wait_for_line("Server is ready to receive web requests", STARTUP);

    let (certs, _data, agg, collector) = start_stack("e2e-d", "");
    let url = agg.url();

    let targets = eventually(
        STARTUP,
        "prometheus and node_exporter with goroutine counts",
        || {
            let t = targets_by_pid(&certs, &url);
            [prom.pid(), node.pid()]
                .iter()
                .all(|pid| {
                    t.get(&u64::from(*pid))
                        .is_some_and(|t| t["latest"]["go_goroutines"].is_number())
                })
                .then_some(t)
        },
    );
    for (p, service, path, port, expvar) in [
        (
            &prom,
            "prometheus",
            "github.com/prometheus/prometheus/cmd/prometheus",
            prom_port,
            false,
        ),
        (
            &node,
            "node_exporter",
            "github.com/prometheus/node_exporter",
            node_port,
            true,
        ),
    ] {
        let t = &targets[&u64::from(p.pid())];
        assert_eq!(t["labels"]["service"], service, "{t}");
        assert_eq!(t["labels"]["path"], path, "{t}");
        assert!(
            t["labels"]["go_version"]
                .as_str()
                .unwrap()
                .starts_with("go1."),
            "{t}"
        );
        assert_eq!(t["coverage"]["pprof"], true, "{t}");
        assert_eq!(t["coverage"]["expvar"], expvar, "{t}");
        // From expvar where it is served, else from the exposition.
        assert!(
            t["latest"]["go_memstats_heap_inuse_bytes"].is_number(),
            "{t}"
        );
        assert_eq!(
            t["coverage"]["debug_addr"],
            format!("127.0.0.1:{port}"),
            "{t}"
        );
        assert!(t["latest"]["go_goroutines"].as_f64().unwrap() >= 1.0, "{t}");
        assert!(
            t["latest"]["process_resident_memory_bytes"]
                .as_f64()
                .unwrap()
                > 1e6,
            "{t}"
        );
        assert!(
            t["latest"]["process_threads"].as_f64().unwrap() >= 1.0,
            "{t}"
        );
    }
    // Their own series, from their expositions (OpenMetrics was asked for; Prometheus
    // 2.42 and node_exporter 1.5 answer in the text format).
    let own = eventually(STARTUP, "the programs' own series", || {
        let t = targets_by_pid(&certs, &url);
        let prom_ok =
            t[&u64::from(prom.pid())]["latest"]["prometheus_tsdb_head_series"].is_number();
        let node_ok = latest_of(
            &t[&u64::from(node.pid())]["latest"],
            "node_cpu_seconds_total",
        )
        .is_some();
        (prom_ok && node_ok).then_some(t)
    });
    for p in [&prom, &node] {
        let t = &own[&u64::from(p.pid())];
        assert!(
            t["latest"]["go_gc_duration_seconds_count"].is_number(),
            "{t}"
        );
    }
    // A counter Prometheus serves only in its exposition (it has no expvar), over time.
    let allocated = eventually(STARTUP, "prometheus' allocations over time", || {
        let s = series(
            &certs,
            &url,
            "go_memstats_alloc_bytes_total",
            prom.pid(),
            "5m",
        );
        (s.len() >= 3).then_some(s)
    });
    assert!(
        allocated.windows(2).all(|w| w[0].1 <= w[1].1) && allocated[0].1 > 0.0,
        "{allocated:?}"
    );
    // Stack summaries of goroutine profiles printed by another Go release (Prometheus
    // 2.42 is built with Go 1.19), their cgroup read, and their full build.
    for p in [&prom, &node] {
        let pid = p.pid().to_string();
        let stacks = eventually(STARTUP, "a stack summary of a third-party program", || {
            let out = goroscope(
                &certs,
                &url,
                None,
                &["stacks", "--target", &pid, "-o", "json"],
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["signatures"].as_array()?.len() >= 2).then_some(v)
        });
        let signatures = stacks["signatures"].as_array().unwrap();
        let counted: u64 = signatures
            .iter()
            .map(|s| s["count"].as_u64().unwrap())
            .sum();
        assert!(counted + stacks["omitted"].as_u64().unwrap() <= stacks["total"].as_u64().unwrap());
        assert!(
            signatures
                .iter()
                .all(|s| s["frames"].as_array().is_some_and(|f| !f.is_empty()
                    && f.iter().all(|f| !f.as_str().unwrap().contains("+0x")
                        && !f.as_str().unwrap().contains("(0x")))),
            "{stacks}"
        );
        // The build as the Go toolchain's own reader sees it (Debian builds these
        // without modules: a path and settings, no dependency lines).
        let desc = goroscope_json(&certs, &url, &["describe", "--target", &pid]);
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        let m = std::process::Command::new("go")
            .args(["version", "-m"])
            .arg(&exe)
            .output()
            .unwrap();
        let m = String::from_utf8_lossy(&m.stdout);
        let count = |kind: &str| {
            m.lines()
                .filter(|l| l.trim_start().starts_with(kind))
                .count()
        };
        assert_eq!(
            desc["build"]["deps"].as_array().unwrap().len(),
            count("dep\t"),
            "{desc}\n{m}"
        );
        assert_eq!(
            desc["build"]["settings"].as_object().unwrap().len(),
            count("build\t"),
            "{desc}\n{m}"
        );
        assert!(
            m.contains(desc["build"]["go_version"].as_str().unwrap()),
            "{desc}\n{m}"
        );
        assert_eq!(desc["target"]["pid"].as_u64(), Some(u64::from(p.pid())));
    }
    let t = targets_by_pid(&certs, &url);
    assert_eq!(t[&u64::from(prom.pid())]["coverage"]["cgroup"], true);
    // What a program does not serve is not asked for again every interval.
    let log = collector.output();
    assert!(!log.contains("sample failed"), "{log}");
}

/// A program from a Debian package the test script installs.
fn third_party(name: &str) -> std::path::PathBuf {
    let path = std::path::Path::new("/usr/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: scripts/install-deps.sh installs it",
        path.display()
    );
    path
}

/// A process in another network namespace (a pod beside a host-network collector) is
/// found through /proc like any other; listening on a wildcard address it is reached at
/// its namespace's address, while one listening on its own loopback keeps its /proc
/// sample only.
#[test]
fn a_process_in_another_network_namespace_is_reached_at_its_address() {
    let ns = NetNs::create("pod");
    let pod = Workload::start_in(&ns, "steady", &["-addr", "0.0.0.0:0"]);
    let hidden = Workload::start_in(&ns, "steady", &["-addr", "127.0.0.1:0"]);
    let (certs, _data, agg, _collector) = start_stack("e2e-f", "");
    let url = agg.url();

    let targets = eventually(STARTUP, "both namespaced workloads", || {
        let t = targets_by_pid(&certs, &url);
        let ready = t
            .get(&u64::from(pod.pid()))
            .is_some_and(|t| t["latest"]["go_goroutines"].is_number())
            && t.get(&u64::from(hidden.pid()))
                .is_some_and(|t| t["latest"]["process_resident_memory_bytes"].is_number());
        ready.then_some(t)
    });
    let p = &targets[&u64::from(pod.pid())];
    let port = pod.addr.unwrap().port();
    assert_eq!(
        p["coverage"]["debug_addr"],
        format!("{}:{port}", ns.inner),
        "{p}"
    );
    assert_eq!(p["coverage"]["expvar"], true, "{p}");
    assert!(
        p["latest"]["go_memstats_heap_inuse_bytes"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{p}"
    );
    let h = &targets[&u64::from(hidden.pid())];
    assert_eq!(h["labels"]["service"], "steady", "{h}");
    assert!(h["latest"].get("go_goroutines").is_none(), "{h}");
    assert_eq!(h["coverage"]["proc"], true, "{h}");
}

/// A collector that starts before its aggregator keeps its samples and delivers them
/// once the aggregator is up; what the aggregator acknowledged survives its crash.
#[test]
fn samples_survive_a_dead_aggregator_and_an_aggregator_crash() {
    let leaky = Workload::start("leaky", &["-rate", "1"]);
    let certs = Certs::new(&["e2e-b"]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let collector = start_collector(&certs, "e2e-b", &url, "collector-e2e-b");
    collector.wait_for_line("aggregator stream failed", STARTUP);
    std::thread::sleep(Duration::from_secs(3));
    let before_start = goroscope_proto::unix_ms();

    let mut agg = Aggregator::start(&certs, &data.path().join("db"), port);
    let early = eventually(
        STARTUP,
        "samples taken while the aggregator was down",
        || {
            let s = series(
                &certs,
                &url,
                "process_resident_memory_bytes",
                leaky.pid(),
                "5m",
            );
            let early = s.iter().filter(|p| p.0 < before_start - 1000).count();
            (early >= 2).then_some(s)
        },
    );

    // Crash the aggregator (no graceful shutdown), start it again on the same database.
    agg.proc.kill();
    let acked = early.len();
    std::thread::sleep(Duration::from_secs(2));
    let agg = Aggregator::start(&certs, &agg.data_dir, port);
    let after = eventually(STARTUP, "new samples after the restart", || {
        let s = series(
            &certs,
            &url,
            "process_resident_memory_bytes",
            leaky.pid(),
            "5m",
        );
        (s.len() >= acked + 3).then_some(s)
    });
    for p in &early {
        assert!(
            after.contains(p),
            "acknowledged sample {p:?} survived the crash"
        );
    }
    let mut ts: Vec<i64> = after.iter().map(|p| p.0).collect();
    ts.dedup();
    assert_eq!(ts.len(), after.len(), "no sample is stored twice");
    drop(agg);
}

/// The four refusals: no certificate, a certificate of another CA, the wrong role, and
/// a collector whose Hello names another host than its certificate.
#[test]
fn the_aggregator_refuses_the_wrong_identities() {
    let certs = Certs::new(&["e2e-c"]);
    let data = tempfile::tempdir().unwrap();
    let agg = Aggregator::start(&certs, &data.path().join("db"), 0);
    let url = agg.url();

    // 1. No client certificate: the TLS handshake completes, the call is refused.
    let status = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let channel = goroscope_tests::raw::channel_with(&certs.ca(), None, &url);
            goroscope_proto::v1::query_client::QueryClient::new(channel)
                .list_targets(goroscope_proto::v1::ListTargetsRequest::default())
                .await
                .unwrap_err()
        });
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("no client certificate"),
        "{status:?}"
    );

    // 2. A certificate from another CA: the handshake fails, and both sides say why.
    let other = Certs::new(&["e2e-c"]);
    let (cert, key) = other.leaf("operator-alice");
    let out = goroscope(&certs, &url, Some((&certs.ca(), &cert, &key)), &["targets"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(&url), "{err}");
    let line = agg.proc.wait_for_line("tls handshake failed", STARTUP);
    assert!(
        line.contains("client certificate is not signed by the fleet CA (UnknownIssuer)"),
        "{line}"
    );

    // 3a. The wrong role: a collector certificate may not query.
    let (cert, key) = certs.leaf("collector-e2e-c");
    let out = goroscope(&certs, &url, Some((&certs.ca(), &cert, &key)), &["targets"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "{err}");
    assert!(err.contains("spiffe://goroscope/collector/e2e-c"), "{err}");

    // 3b. The wrong role: an operator certificate may not ingest.
    let as_operator = start_collector(&certs, "alice", &url, "operator-alice");
    let line = as_operator.wait_for_line("aggregator refused", STARTUP);
    assert!(
        line.contains("permission denied") && line.contains("spiffe://goroscope/operator/alice"),
        "{line}"
    );

    // 4. A Hello that names another host than the certificate.
    let liar = start_collector(&certs, "someone-else", &url, "collector-e2e-c");
    let line = liar.wait_for_line("aggregator refused", STARTUP);
    assert!(
        line.contains("permission denied") && line.contains("may only ingest for host \"e2e-c\""),
        "{line}"
    );
    assert!(line.contains("\"someone-else\""), "{line}");

    // Nothing was stored from any of them, and both collectors are still running.
    std::thread::sleep(Duration::from_secs(2));
    let t = goroscope_json(&certs, &url, &["targets"]);
    assert_eq!(t["targets"].as_array().map(Vec::len), Some(0), "{t}");
    let mut as_operator = as_operator;
    let mut liar = liar;
    assert!(as_operator.proc_alive() && liar.proc_alive());
}

/// A bad setting stops a daemon at start, with one line naming the key and the value.
#[test]
fn bad_settings_stop_the_daemons_with_one_line() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[limits]\nmax_connections = 0\n").unwrap();
    let err = one_line_failure(
        Command::new(bin("goroscope-aggregator"))
            .arg("--config")
            .arg(&config),
        64,
    );
    assert!(
        err.contains("limits.max_connections") && err.contains('0'),
        "{err}"
    );

    let err = one_line_failure(
        Command::new(bin("goroscope-collector")).args(["--host", "node-a", "--interval", "0.5s"]),
        64,
    );
    assert!(
        err.contains("interval = 500ms") && err.contains("at least 1s"),
        "{err}"
    );

    let err = one_line_failure(
        Command::new(bin("goroscope-collector"))
            .env("GOROSCOPE_COLLECTOR_LIMITS__MAX_TARGETS", "many")
            .args(["--host", "node-a"]),
        64,
    );
    assert!(
        err.contains("limits.max_targets") && err.contains("many"),
        "{err}"
    );

    // A certificate file that is not there: one line naming it, before anything else
    // (the database, the port) is taken.
    let err = one_line_failure(
        Command::new(bin("goroscope-aggregator"))
            .args(["--listen", "127.0.0.1:0", "--ca", "/nonexistent/ca.pem"])
            .arg("--data-dir")
            .arg(dir.path().join("db")),
        1,
    );
    assert!(
        err.contains("read /nonexistent/ca.pem: no such file or directory"),
        "{err}"
    );
    assert!(!dir.path().join("db").exists(), "no database was created");
}

/// Runs a daemon that must stop at start: asserts its exit code and that it said why
/// in exactly one line, and returns that line.
fn one_line_failure(cmd: &mut std::process::Command, code: i32) -> String {
    let out = cmd.output().expect("run the daemon");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

trait Alive {
    fn proc_alive(&mut self) -> bool;
}

impl Alive for Proc {
    fn proc_alive(&mut self) -> bool {
        self.try_exit().is_none()
    }
}
