//! cgroups on this host, end to end: Go workloads started inside v1 memory cgroups made
//! for the test, their limit, use and OOM kills read by the real collector and stored
//! by the aggregator. Needs root and the v1 memory controller mounted at
//! /sys/fs/cgroup/memory; the tests say why and pass when they cannot run.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use goroscope_tests::*;

const STARTUP: Duration = Duration::from_secs(60);
const V1_MEMORY: &str = "/sys/fs/cgroup/memory";

/// A v1 memory cgroup of its own; on drop, what is left in it goes back to this
/// process's cgroup and the directory is removed.
struct MemoryCgroup {
    dir: PathBuf,
}

impl MemoryCgroup {
    /// `None`, with the reason printed, where the test cannot run.
    fn create(tag: &str, limit_bytes: u64) -> Option<MemoryCgroup> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let root = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().nth(1))
            == Some("0");
        if !root {
            eprintln!("skipped: creating a cgroup needs root");
            return None;
        }
        if !Path::new(V1_MEMORY).join("cgroup.procs").is_file() {
            eprintln!("skipped: no v1 memory controller mounted at {V1_MEMORY}");
            return None;
        }
        let dir = Path::new(V1_MEMORY).join(format!("goroscope-test-{}-{tag}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&dir) {
            eprintln!("skipped: create {}: {e}", dir.display());
            return None;
        }
        let cgroup = MemoryCgroup { dir };
        cgroup.write("memory.limit_in_bytes", &limit_bytes.to_string());
        Some(cgroup)
    }

    fn write(&self, file: &str, value: &str) {
        let path = self.dir.join(file);
        std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// A shell that moves itself into the cgroup, then execs `workload` (the pid stays,
    /// and every page the workload touches is charged to the cgroup).
    fn start(&self, workload: &str, args: &[&str]) -> Workload {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec {} \"$@\"",
            self.dir.display(),
            workloads().join(workload).display()
        );
        Workload::start_cmd(
            workload,
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .arg(workload)
                .args(args),
        )
    }

    fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // This process's own memory cgroup, where anything left goes back.
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
                controllers
                    .split(',')
                    .any(|c| c == "memory")
                    .then(|| path.trim_start_matches('/').to_owned())
            })
            .unwrap_or_default();
        let back = Path::new(V1_MEMORY).join(own).join("cgroup.procs");
        for _ in 0..50 {
            for pid in self.pids() {
                let _ = std::fs::write(&back, pid.to_string());
            }
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

/// A Go process in a v1 memory cgroup limited to 256 MiB: the collector reports that
/// limit and a non-zero use for it, and the aggregator stores them.
#[test]
fn a_v1_memory_limit_reaches_the_aggregator() {
    const LIMIT: u64 = 256 << 20;
    let Some(cgroup) = MemoryCgroup::create("limit", LIMIT) else {
        return;
    };
    let steady = cgroup.start("steady", &[]);
    assert_eq!(cgroup.pids(), [steady.pid()]);
    let (certs, _data, agg, _collector) = start_stack("e2e-cg", "");
    let url = agg.url();

    let t = eventually(STARTUP, "steady's cgroup memory", || {
        targets_by_pid(&certs, &url)
            .remove(&u64::from(steady.pid()))
            .filter(|t| t["latest"]["cgroup_memory_current_bytes"].is_number())
    });
    assert_eq!(
        t["latest"]["cgroup_memory_max_bytes"].as_f64(),
        Some(LIMIT as f64),
        "{t}"
    );
    let current = t["latest"]["cgroup_memory_current_bytes"].as_f64().unwrap();
    assert!(current > 0.0 && current < LIMIT as f64, "{t}");
    assert_eq!(
        t["latest"]["cgroup_oom_kills_total"].as_f64(),
        Some(0.0),
        "{t}"
    );
    assert!(
        t["latest"]["cgroup_memory_anon_bytes"].as_f64().unwrap() > 0.0,
        "{t}"
    );
    // No container here: no container or pod labels.
    assert!(t["labels"].get("container_id").is_none(), "{t}");
    assert!(t["labels"].get("pod_uid").is_none(), "{t}");

    // The stored series, not only the latest value.
    let limits = series(&certs, &url, "cgroup_memory_max_bytes", steady.pid(), "5m");
    assert!(
        !limits.is_empty() && limits.iter().all(|(_, v)| *v == LIMIT as f64),
        "{limits:?}"
    );
}

/// A Go program that takes memory until the kernel kills it, in a 64 MiB v1 memory
/// cgroup it shares with a quiet Go program: the survivor's `cgroup_oom_kills_total`
/// counts the kill.
#[test]
fn an_oom_kill_in_a_v1_memory_cgroup_is_counted() {
    let Some(cgroup) = MemoryCgroup::create("oom", 64 << 20) else {
        return;
    };
    // No swap to fall back on: the limit is the limit.
    let _ = std::fs::write(cgroup.dir.join("memory.swappiness"), "0");
    let quiet = cgroup.start("quiet", &[]);
    let (certs, _data, agg, _collector) = start_stack("e2e-oom", "");
    let url = agg.url();

    let before = eventually(STARTUP, "quiet's cgroup OOM kill count", || {
        targets_by_pid(&certs, &url)
            .remove(&u64::from(quiet.pid()))
            .and_then(|t| t["latest"]["cgroup_oom_kills_total"].as_f64())
    });
    assert_eq!(before, 0.0);

    let mut hog = cgroup.start("hog", &["-step", "8", "-every", "50ms"]);
    let status = eventually(Duration::from_secs(30), "the hog killed", || {
        hog.proc.try_exit()
    });
    assert_eq!(status.signal(), Some(9), "the hog ended with {status}");

    eventually(STARTUP, "the kill counted on quiet's cgroup", || {
        let t = targets_by_pid(&certs, &url).remove(&u64::from(quiet.pid()))?;
        (t["latest"]["cgroup_oom_kills_total"].as_f64()? >= 1.0).then_some(())
    });
    assert!(cgroup.pids().contains(&quiet.pid()), "quiet survived");
}

/// A heap growing by 2 MiB/s in a v1 memory cgroup limited to 1 GiB: the detectors
/// open `oom-risk` and say when the limit will be reached (a few minutes ahead, before
/// the kernel acts).
#[test]
fn memory_growing_towards_the_cgroup_limit_is_an_oom_risk_that_says_when() {
    const LIMIT: u64 = 1 << 30;
    let Some(cgroup) = MemoryCgroup::create("oomrisk", LIMIT) else {
        return;
    };
    let _alone = detection_lock();
    let growing = cgroup.start("mapcache", &["-rate", "512", "-max", "2000"]);
    let (certs, _data, agg, _collector) =
        start_stack("e2e-oomrisk", "[detection]\nevaluate_every = \"2s\"\n");
    let url = agg.url();
    let pid = growing.pid().to_string();
    let anomaly = eventually(
        Duration::from_secs(330),
        "an oom-risk anomaly on the growing process",
        || {
            let v = goroscope_json(&certs, &url, &["anomalies", "--target", &pid]);
            v["anomalies"]
                .as_array()?
                .iter()
                .find(|a| a["diagnosis"] == "oom-risk")
                .cloned()
        },
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let at = anomaly["oom_at_ms"].as_i64().expect("oom_at_ms is set");
    // 1 GiB at 2 MiB/s from a few MiB: about 8.5 minutes after start.
    assert!(at > now && at < now + 15 * 60 * 1000, "{anomaly}");
    assert_eq!(
        anomaly["evidence"]["limit_bytes"].as_f64(),
        Some(LIMIT as f64),
        "{anomaly}"
    );
    assert!(
        anomaly["advice"]
            .as_str()
            .is_some_and(|a| a.contains("reaches it in")),
        "{anomaly}"
    );
}
