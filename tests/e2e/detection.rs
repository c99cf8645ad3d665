//! Detection end to end: one real Go program per failure pattern, under the real
//! collector and aggregator, must get its diagnosis within 5 minutes of onset; a
//! healthy program with noisy, bounded load must get none.
//!
//! The workloads run in two groups, each under one stack: goroutine and thread patterns,
//! then memory, GC and scheduler patterns (which load the CPU). Each group prints a
//! line per workload (the diagnoses, the time to detection); with
//! `GOROSCOPE_ACCURACY_OUT=FILE` the lines are appended to FILE as JSON, which
//! `scripts/accuracy.sh` turns into the table of docs/detection.md.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use goroscope_tests::*;

/// How long a diagnosis may take from the workload's start (onset is at start, except
/// goburst's burst, which comes after its delay).
const DEADLINE: Duration = Duration::from_secs(300);
/// Startup of the stack and discovery, on top of the deadline.
const SLACK: Duration = Duration::from_secs(45);

const COLLECTOR: &str = "[stacks]\npause_budget = 0.05\nfull_interval = \"20s\"\n";
const AGGREGATOR: &str = "[detection]\nevaluate_every = \"2s\"\n";

struct Case {
    workload: &'static str,
    args: &'static [&'static str],
    /// The diagnosis it must get (none for a healthy one).
    expect: Option<&'static str>,
    /// Diagnoses that are also true of it (stack growth with a goroutine leak).
    allowed: &'static [&'static str],
    /// Seconds from start to the pattern's onset.
    onset_s: u64,
}

fn run(group: &str, cases: &[Case]) {
    // Every collector sees every Go process of the machine: the groups run one at a
    // time, and no other test's leaking workloads meanwhile.
    let _alone = detection_lock();
    let host = format!("e2e-detect-{group}");
    let certs = Certs::new(&[&host]);
    let data = tempfile::tempdir().expect("create a temporary directory");
    let agg = Aggregator::start_with(&certs, &data.path().join("db"), 0, AGGREGATOR);
    let settings = data.path().join("collector.toml");
    std::fs::write(&settings, COLLECTOR).expect("write the collector settings");
    let _collector = Proc::spawn(
        &format!("collector {host}"),
        collector_command(&certs, &host, &agg.url(), &format!("collector-{host}"))
            .arg("--config")
            .arg(&settings),
    );
    let url = agg.url();
    let started = Instant::now();
    let started_ms = now_ms();
    let workloads: Vec<(&Case, Workload)> = cases
        .iter()
        .map(|c| (c, Workload::start(c.workload, c.args)))
        .collect();
    let by_pid: BTreeMap<u32, &Case> = workloads.iter().map(|(c, w)| (w.pid(), *c)).collect();

    // Poll until every expected diagnosis is there or the deadline passes.
    let mut seen: BTreeMap<u32, BTreeMap<String, i64>> = BTreeMap::new();
    loop {
        let v = goroscope_json(&certs, &url, &["anomalies", "--all"]);
        for a in v["anomalies"].as_array().into_iter().flatten() {
            let pid = a["target"]["pid"].as_u64().unwrap_or(0) as u32;
            let diagnosis = a["diagnosis"].as_str().unwrap_or("").to_owned();
            let opened = a["opened_ms"].as_i64().unwrap_or(0);
            seen.entry(pid)
                .or_default()
                .entry(diagnosis)
                .and_modify(|t| *t = (*t).min(opened))
                .or_insert(opened);
        }
        let done = by_pid.iter().all(|(pid, c)| {
            c.expect
                .is_none_or(|d| seen.get(pid).is_some_and(|s| s.contains_key(d)))
        });
        if done || started.elapsed() > DEADLINE + SLACK {
            break;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    // The healthy ones are watched to the end of the deadline.
    while started.elapsed() < DEADLINE && by_pid.values().any(|c| c.expect.is_none()) {
        std::thread::sleep(Duration::from_secs(5));
        let v = goroscope_json(&certs, &url, &["anomalies", "--all"]);
        for a in v["anomalies"].as_array().into_iter().flatten() {
            let pid = a["target"]["pid"].as_u64().unwrap_or(0) as u32;
            if by_pid.get(&pid).is_some_and(|c| c.expect.is_none()) {
                seen.entry(pid)
                    .or_default()
                    .insert(a["diagnosis"].as_str().unwrap_or("").to_owned(), 0);
            }
        }
    }

    let mut failures = Vec::new();
    // `goroscope explain` shows each diagnosed process's open anomaly and its memory.
    for (pid, c) in &by_pid {
        let Some(d) = c.expect else { continue };
        if !seen.get(pid).is_some_and(|s| s.contains_key(d)) {
            continue;
        }
        let v = goroscope_json(&certs, &url, &["explain", &pid.to_string()]);
        let listed = v["anomalies"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["diagnosis"] == d));
        // Resolved since (a burst's stack summary may settle): not listed as open then.
        let still_open = goroscope_json(&certs, &url, &["anomalies", "--target", &pid.to_string()])
            ["anomalies"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["diagnosis"] == d));
        if still_open && !listed {
            failures.push(format!(
                "explain {pid} ({}) does not list {d}: {v}",
                c.workload
            ));
        }
        if v["rss"]["rss_bytes"].as_f64().is_none_or(|r| r <= 0.0) {
            failures.push(format!(
                "explain {pid} ({}) has no RSS: {}",
                c.workload, v["rss"]
            ));
        }
    }
    let mut report = Vec::new();
    for (pid, c) in &by_pid {
        let got = seen.get(pid).cloned().unwrap_or_default();
        let onset_ms = started_ms + (c.onset_s * 1000) as i64;
        let detected_s = c
            .expect
            .and_then(|d| got.get(d))
            .map(|t| ((t - onset_ms).max(0) as f64) / 1000.0);
        let unexpected: BTreeSet<&str> = got
            .keys()
            .map(String::as_str)
            .filter(|d| Some(*d) != c.expect && !c.allowed.contains(d))
            .collect();
        let line = serde_json::json!({
            "workload": c.workload,
            "expect": c.expect,
            "got": got.keys().collect::<Vec<_>>(),
            "detected_s": detected_s,
            "unexpected": unexpected,
        });
        println!("detection {group}: {line}");
        report.push(line);
        match (c.expect, detected_s) {
            (Some(d), None) => failures.push(format!("{} (pid {pid}) never got {d}", c.workload)),
            (Some(d), Some(s)) if s > DEADLINE.as_secs_f64() => failures.push(format!(
                "{} (pid {pid}) got {d} after {s:.0} s, past {} s",
                c.workload,
                DEADLINE.as_secs()
            )),
            _ => {}
        }
        if !unexpected.is_empty() {
            failures.push(format!(
                "{} (pid {pid}) got {unexpected:?}, which it does not have",
                c.workload
            ));
        }
    }
    if let Ok(path) = std::env::var("GOROSCOPE_ACCURACY_OUT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open GOROSCOPE_ACCURACY_OUT");
        for line in &report {
            writeln!(f, "{line}").expect("write GOROSCOPE_ACCURACY_OUT");
        }
    }
    if !failures.is_empty() {
        let all = goroscope(&certs, &url, None, &["anomalies", "--all"]);
        panic!(
            "{}\n\nanomalies:\n{}\naggregator log tail:\n{}",
            failures.join("\n"),
            String::from_utf8_lossy(&all.stdout),
            tail(&agg.proc.output(), 40)
        );
    }
    drop(workloads);
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const NOISY: Case = Case {
    workload: "noisy",
    args: &[],
    expect: None,
    allowed: &[],
    onset_s: 0,
};

#[test]
fn goroutine_and_thread_patterns_are_diagnosed_and_noisy_load_is_not() {
    const LEAK: &[&str] = &["stack-growth"];
    run(
        "goroutines",
        &[
            Case {
                workload: "chanleak",
                args: &["-rate", "10", "-max", "20000"],
                expect: Some("goroutine-leak"),
                allowed: LEAK,
                onset_s: 0,
            },
            Case {
                workload: "ctxleak",
                args: &["-rate", "20", "-max", "20000"],
                expect: Some("goroutine-leak"),
                allowed: LEAK,
                onset_s: 0,
            },
            Case {
                workload: "wgleak",
                args: &["-rate", "10", "-lockers", "10", "-max", "20000"],
                expect: Some("goroutine-leak"),
                allowed: LEAK,
                onset_s: 0,
            },
            Case {
                workload: "tickerleak",
                args: &["-rate", "10", "-max", "20000"],
                expect: Some("goroutine-leak"),
                allowed: LEAK,
                onset_s: 0,
            },
            Case {
                workload: "httphang",
                args: &["-rate", "2", "-max", "1000"],
                expect: Some("goroutine-leak"),
                allowed: LEAK,
                onset_s: 0,
            },
            Case {
                workload: "threadleak",
                args: &["-rate", "1", "-max", "500"],
                expect: Some("thread-leak"),
                // Its goroutines sit in syscalls for good: a leak of goroutines too.
                allowed: &["goroutine-leak", "stack-growth"],
                onset_s: 0,
            },
            Case {
                workload: "goburst",
                args: &["-n", "20000", "-delay", "60s"],
                expect: Some("goroutine-explosion"),
                allowed: LEAK,
                onset_s: 60,
            },
            NOISY,
        ],
    );
}

#[test]
fn memory_gc_and_scheduler_patterns_are_diagnosed_and_noisy_load_is_not() {
    run(
        "memory",
        &[
            Case {
                workload: "mapcache",
                args: &["-rate", "256", "-max", "1000"],
                expect: Some("heap-leak"),
                allowed: &[],
                onset_s: 0,
            },
            Case {
                workload: "burstidle",
                args: &["-every", "20s"],
                expect: Some("rss-retention"),
                allowed: &[],
                onset_s: 0,
            },
            Case {
                workload: "cgoleak",
                args: &["-rate", "1", "-max", "1000"],
                expect: Some("offheap-growth"),
                allowed: &[],
                onset_s: 0,
            },
            Case {
                workload: "gcstorm",
                args: &["-workers", "1", "-live", "32"],
                expect: Some("gc-thrash"),
                allowed: &[],
                onset_s: 0,
            },
            Case {
                workload: "forcedgc",
                args: &[],
                expect: Some("forced-gc"),
                allowed: &[],
                onset_s: 0,
            },
            Case {
                workload: "schedpressure",
                // All workers from the start: a steady ramp of CPU-bound goroutines is
                // growth the goroutine detectors would judge too.
                args: &["-workers", "200", "-ramp", "0"],
                expect: Some("sched-pressure"),
                allowed: &[],
                onset_s: 0,
            },
            NOISY,
        ],
    );
}
