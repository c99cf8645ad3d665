//! Captures on demand, end to end: `goroscope capture` asks the aggregator, which asks
//! the target's collector, which fetches from the target's net/http/pprof and uploads;
//! the files open in the Go toolchain's own viewers (`go tool pprof`, and
//! `go tool trace`'s parser).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use goroscope_tests::*;

use crate::STARTUP;

/// Room for several captures of one target in one test, and a window to see the
/// per-target limit refuse.
const CAPTURE_SETTINGS: &str =
    "[captures]\nmin_interval_per_target = \"3s\"\nmax_per_minute = 30\n";

fn pprof_top(file: &Path, extra: &[&str]) -> String {
    let out = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .args(extra)
        .arg(file)
        .output()
        .expect("run go tool pprof");
    assert!(
        out.status.success(),
        "go tool pprof -top {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `goroscope capture KIND ...`; retries while the per-target interval refuses it.
fn capture(certs: &Certs, url: &str, args: &[&str], out: &Path) -> serde_json::Value {
    let mut all = vec!["capture"];
    all.extend_from_slice(args);
    let out_s = out.to_str().unwrap();
    all.extend(["--out", out_s, "-o", "json"]);
    eventually(STARTUP, &format!("goroscope {all:?}"), || {
        let o = goroscope(certs, url, None, &all);
        if o.status.success() {
            return Some(serde_json::from_slice(&o.stdout).expect("JSON"));
        }
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("captures.min_interval_per_target"),
            "goroscope {all:?}: {err}"
        );
        std::thread::sleep(Duration::from_millis(500));
        None
    })
}

/// Every capture kind from real Go processes: each file opens in the viewer made for
/// it and shows what the process runs; stored captures are listed and fetched again
/// byte for byte; the limits refuse with the setting's name; a collector's
/// certificate cannot ask.
#[test]
fn every_capture_kind_opens_in_the_go_tools_and_names_what_the_process_runs() {
    let busy = Workload::start("steady", &["-spin"]);
    let leaky = Workload::start_cmd(
        "leaky with the goroutineleak profile",
        Command::new(crate::stacks::leaky_with_leak_profile())
            .args(["-rate", "1", "-orphans", "3", "-every", "200ms"]),
    );
    let (certs, data, agg, _collector) = start_stack("e2e-capture", CAPTURE_SETTINGS);
    let url = agg.url();
    let dir = data.path();
    for w in [&busy, &leaky] {
        eventually(STARTUP, "the target with pprof", || {
            (targets_by_pid(&certs, &url).get(&u64::from(w.pid()))?["coverage"]["pprof"] == true)
                .then_some(())
        });
    }
    let busy_pid = busy.pid().to_string();
    let leaky_pid = leaky.pid().to_string();

    // CPU: the busy goroutine's function leads.
    let cpu = dir.join("cpu.pb.gz");
    let info = capture(
        &certs,
        &url,
        &["cpu", "--target", &busy_pid, "--seconds", "2"],
        &cpu,
    );
    assert_eq!(info["kind"], "cpu");
    assert_eq!(info["seconds"], 2);
    assert_eq!(info["target"]["pid"].as_u64(), Some(u64::from(busy.pid())));
    assert!(
        info["requested_by"]
            .as_str()
            .unwrap()
            .ends_with("operator/alice"),
        "{info}"
    );
    assert_eq!(
        std::fs::metadata(&cpu).unwrap().len(),
        info["size_bytes"].as_u64().unwrap()
    );
    let top = pprof_top(&cpu, &[]);
    assert!(top.contains("main.spin"), "{top}");

    // The same target again at once: refused, naming the setting.
    let again = goroscope(
        &certs,
        &url,
        None,
        &[
            "capture",
            "heap",
            "--target",
            &busy_pid,
            "--out",
            dir.join("x").to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && err.contains("captures.min_interval_per_target"),
        "{err}"
    );

    // Heap: the workers' allocations.
    let heap = dir.join("heap.pb.gz");
    capture(&certs, &url, &["heap", "--target", &busy_pid], &heap);
    let top = pprof_top(&heap, &["-sample_index=alloc_space"]);
    assert!(top.contains("main.work"), "{top}");

    // Goroutines, and the proven leaks.
    let goroutines = dir.join("goroutine.pb.gz");
    capture(
        &certs,
        &url,
        &["goroutine", "--target", &leaky_pid],
        &goroutines,
    );
    let top = pprof_top(&goroutines, &[]);
    assert!(top.contains("main.(*Pool).watch"), "{top}");
    let leaks = dir.join("goroutineleak.pb.gz");
    capture(
        &certs,
        &url,
        &["goroutineleak", "--target", &leaky_pid],
        &leaks,
    );
    let top = pprof_top(&leaks, &[]);
    assert!(top.contains("main.fetch.func1"), "{top}");
    assert!(!top.contains("main.(*Pool).watch"), "{top}");

    // A runtime/trace snippet, read by go tool trace's own parser.
    let trace = dir.join("trace.out");
    let info = capture(
        &certs,
        &url,
        &["trace", "--target", &busy_pid, "--seconds", "1"],
        &trace,
    );
    assert_eq!(info["kind"], "trace");
    let parsed = Command::new("go")
        .args(["tool", "trace", "-d=parsed"])
        .arg(&trace)
        .output()
        .expect("run go tool trace");
    assert!(
        parsed.status.success(),
        "go tool trace: {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let events = String::from_utf8_lossy(&parsed.stdout);
    assert!(events.lines().count() > 100, "{events}");

    // Listed newest first, and fetched again byte for byte.
    let list = goroscope_json(&certs, &url, &["captures"]);
    let captures = list["captures"].as_array().unwrap();
    assert_eq!(captures.len(), 5, "{list}");
    assert_eq!(captures[0]["kind"], "trace");
    let only_leaky = goroscope_json(&certs, &url, &["captures", "--target", &leaky_pid]);
    assert_eq!(only_leaky["captures"].as_array().unwrap().len(), 2);
    let id = captures[4]["id"].as_str().unwrap();
    assert_eq!(captures[4]["kind"], "cpu");
    let fetched = dir.join("cpu-again.pb.gz");
    goroscope_json(
        &certs,
        &url,
        &["capture", "get", id, "--out", fetched.to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(&cpu).unwrap()
    );

    // Only operators may ask.
    let (cert, key) = certs.leaf("collector-e2e-capture");
    let ca = certs.ca();
    let refused = goroscope(
        &certs,
        &url,
        Some((&ca, &cert, &key)),
        &[
            "capture",
            "heap",
            "--target",
            &leaky_pid,
            "--out",
            dir.join("y").to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("permission denied"),
        "{err}"
    );
    assert!(!dir.join("y").exists());
}
