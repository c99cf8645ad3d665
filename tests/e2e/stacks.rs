//! Goroutine stack summaries and target descriptions, from real Go processes through
//! the real collector and aggregator to `goroscope stacks` and `goroscope describe`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use goroscope_tests::*;

const STARTUP: Duration = Duration::from_secs(60);

/// Stacks read often and in full every few seconds, with a budget a test can afford.
const STACK_SETTINGS: &str = "[stacks]\npause_budget = 0.05\nfull_interval = \"3s\"\n";

/// `leaky` built with `GOEXPERIMENT=goroutineleakprofile`: it serves Go 1.26's
/// goroutineleak profile.
pub fn leaky_with_leak_profile() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = bin_dir().join("workloads-leakprofile");
        std::fs::create_dir_all(&out).unwrap();
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg("./leaky")
            .env("GOEXPERIMENT", "goroutineleakprofile")
            .current_dir(workloads_src())
            .status()
            .expect("run go build");
        assert!(
            status.success(),
            "go build of leaky with the experiment failed"
        );
        out.join("leaky")
    })
    .clone()
}

fn workloads_src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("workloads")
}

/// `goroscope ARGS -o json`, or `None` while it fails (the target is not known yet).
fn try_json(certs: &Certs, url: &str, args: &[&str]) -> Option<serde_json::Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = goroscope(certs, url, None, &all);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("goroscope -o json prints JSON"))
}

fn signature<'a>(v: &'a serde_json::Value, frame: &str) -> Option<&'a serde_json::Value> {
    v["signatures"].as_array()?.iter().find(|s| {
        s["frames"].as_array().is_some_and(|f| {
            f.iter()
                .any(|f| f.as_str().is_some_and(|f| f.contains(frame)))
        })
    })
}

/// A leaking service's leak shows as one signature (wait reason, frames, location)
/// whose count grows, with its first-seen time kept; `--diff` shows the growth; the
/// target's build and runtime settings are described in full.
#[test]
fn stack_summaries_name_the_leak_and_show_it_growing() {
    let leaky = Workload::start_cmd(
        "leaky",
        Command::new(workloads().join("leaky"))
            .args(["-rate", "10", "-every", "500ms"])
            .env("GOGC", "50")
            .env("GOMEMLIMIT", "1GiB")
            .env("SECRET_TOKEN", "hunter2"),
    );
    let (certs, _data, agg, _collector) = start_stack_with("e2e-stacks", STACK_SETTINGS);
    let url = agg.url();
    let pid = leaky.pid().to_string();

    // A debug=2 summary, or a debug=1 one given its wait reasons: either way the leak's
    // signature has its wait reason.
    let full = eventually(
        STARTUP,
        "a summary naming the leak and its wait reason",
        || {
            let v = try_json(&certs, &url, &["stacks", "--target", &pid])?;
            (signature(&v, "main.(*Pool).watch")?["wait_reason"] == "chan receive").then_some(v)
        },
    );
    let leak = signature(&full, "main.(*Pool).watch").unwrap();
    assert_eq!(leak["wait_reason"], "chan receive", "{leak}");
    assert_eq!(leak["frames"][0], "main.(*Pool).watch", "{leak}");
    assert!(
        leak["location"]
            .as_str()
            .unwrap()
            .contains("leaky/main.go:"),
        "{leak}"
    );
    let first_seen = leak["first_seen_ms"].as_i64().unwrap();
    assert!(first_seen > 0 && first_seen <= leak["last_seen_ms"].as_i64().unwrap());
    // The leak is the largest signature, and counts add up to at most the total.
    assert_eq!(full["signatures"][0]["frames"][0], "main.(*Pool).watch");
    let counted: u64 = full["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["count"].as_u64().unwrap())
        .sum();
    assert!(counted + full["omitted"].as_u64().unwrap() <= full["total"].as_u64().unwrap());

    // Later summaries: the count grew, the first-seen time stayed.
    let t1 = full["timestamp_ms"].as_i64().unwrap();
    let later = eventually(
        STARTUP,
        "a later summary with more leaked goroutines",
        || {
            let v = goroscope_json(&certs, &url, &["stacks", "--target", &pid]);
            let s = signature(&v, "main.(*Pool).watch")?;
            (v["timestamp_ms"].as_i64()? > t1 + 2_000
                && s["count"].as_u64()? > leak["count"].as_u64()?)
            .then(|| v.clone())
        },
    );
    let grown = signature(&later, "main.(*Pool).watch").unwrap();
    assert_eq!(
        grown["first_seen_ms"].as_i64().unwrap(),
        first_seen,
        "{grown}"
    );
    let t2 = later["timestamp_ms"].as_i64().unwrap();
    let diff = goroscope_json(
        &certs,
        &url,
        &[
            "stacks",
            "--target",
            &pid,
            "--diff",
            &t1.to_string(),
            &t2.to_string(),
        ],
    );
    let d = signature(&diff, "main.(*Pool).watch").unwrap();
    assert!(
        d["count"].as_u64().unwrap() > d["from_count"].as_u64().unwrap(),
        "{d}"
    );
    // Compared with the summary of the same kind at or before TIME1.
    assert!(diff["from_timestamp_ms"].as_i64().unwrap() <= t1, "{diff}");
    assert_eq!(diff["timestamp_ms"].as_i64().unwrap(), t2);
    // The table for people names the leak too.
    let out = goroscope(&certs, &url, None, &["stacks", "--target", &pid]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("main.(*Pool).watch"),
        "{table}"
    );
    assert!(table.contains("chan receive"), "{table}");

    // The target's build in full and its Go runtime settings, and nothing else of its
    // environment.
    let desc = goroscope_json(&certs, &url, &["describe", "--target", &pid]);
    assert_eq!(desc["runtime_env"]["GOGC"], "50", "{desc}");
    assert_eq!(desc["runtime_env"]["GOMEMLIMIT"], "1GiB", "{desc}");
    assert!(!desc.to_string().contains("hunter2"), "{desc}");
    let build = &desc["build"];
    assert!(
        build["go_version"].as_str().unwrap().starts_with("go1."),
        "{desc}"
    );
    assert_eq!(build["path"], "goroscope.test/workloads/leaky");
    assert_eq!(build["main"]["path"], "goroscope.test/workloads");
    assert_eq!(build["settings"]["GOOS"], "linux", "{desc}");
    assert!(build["settings"]["CGO_ENABLED"].is_string(), "{desc}");
}

/// A service built with Go 1.26's goroutineleak profile: the goroutines the garbage
/// collector proves leaked are marked so, and coverage says the profile is served.
#[test]
fn the_goroutineleak_profile_marks_proven_leaks() {
    let leaky = Workload::start_cmd(
        "leaky with the goroutineleak profile",
        Command::new(leaky_with_leak_profile())
            .args(["-rate", "1", "-orphans", "5", "-every", "200ms"]),
    );
    let (certs, _data, agg, _collector) = start_stack_with("e2e-leakprofile", STACK_SETTINGS);
    let url = agg.url();
    let pid = leaky.pid().to_string();
    let v = eventually(STARTUP, "the orphaned senders marked leaked", || {
        let v = try_json(&certs, &url, &["stacks", "--target", &pid])?;
        let s = signature(&v, "main.fetch.func1")?;
        (s["leaked"] == true).then(|| v.clone())
    });
    let orphan = signature(&v, "main.fetch.func1").unwrap();
    assert!(orphan["count"].as_u64().unwrap() >= 5, "{orphan}");
    // The watchers wait on channels the pool still holds: not provably leaked.
    let watchers = signature(&v, "main.(*Pool).watch").unwrap();
    assert_eq!(watchers["leaked"], false, "{watchers}");
    let t = &targets_by_pid(&certs, &url)[&u64::from(leaky.pid())];
    assert_eq!(t["coverage"]["goroutineleak"], true, "{t}");
}
