//! A fleet on one machine: six hosts, each a network namespace with its own collector
//! (its own certificate, `discovery.own_network_namespace`), all streaming to one
//! aggregator. Each host runs two processes of one service, built from one source at
//! two git tags: v2.3.1 on hosts 1-3, and on hosts 4-6 v2.4.0, whose timed-out backend
//! calls leak a goroutine each. The aggregator groups the six leaks into one incident
//! and names the version as its cause.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use goroscope_tests::*;
use serde_json::Value;
use tempfile::TempDir;

const HOSTS: usize = 6;
const PER_HOST: usize = 2;
/// The release before the leak (hosts 1-3) and the one with it (hosts 4-6).
const GOOD: &str = "v2.3.1";
const BAD: &str = "v2.4.0";
/// The service's module: a v2 module, so that tags v2.x.y are its versions.
const MODULE: &str = "example.com/fleetsvc/v2";
const STARTUP: Duration = Duration::from_secs(90);
/// From the workloads' start. Each v2.4.0 process leaks 20 goroutines a second from
/// its first request: a detector that misses one of the six in this time is wrong, so
/// all six must be in the incident (not a majority).
const DETECTION: Duration = Duration::from_secs(6 * 60);
/// Far above what a process leaks within [`DETECTION`] (about 7,200): the leak never
/// stops while the test watches.
const MAX_GOROUTINES: &str = "12000";

/// Each collector watches its own namespace only; stack summaries often enough for
/// the leak's signature (as in the detection tests).
const COLLECTOR_SETTINGS: &str = "[discovery]\nown_network_namespace = true\n\n\
                                  [stacks]\npause_budget = 0.05\nfull_interval = \"20s\"\n";
/// Targets evaluated every 2 s rather than 15 s: an anomaly opens seconds after its
/// window is long enough.
const AGGREGATOR_SETTINGS: &str = "[detection]\nevaluate_every = \"2s\"\n";

/// One process of the fleet.
struct Member {
    host: String,
    pid: u32,
    version: &'static str,
}

#[test]
fn a_leak_in_one_version_across_six_hosts_is_one_incident_naming_that_version() {
    // Twelve processes and six collectors: not beside the other detection tests.
    let _alone = detection_lock();
    assert!(
        is_root(),
        "the fleet test makes network namespaces and needs root: run it as root (CI does)"
    );
    let builds = Builds::new();
    let nets: Vec<NetNs> = (1..=HOSTS)
        .map(|i| NetNs::create(&format!("fleet{i}")))
        .collect();
    let hosts: Vec<String> = (1..=HOSTS).map(|i| format!("fleet-{i}")).collect();
    let certs = Certs::new(&hosts.iter().map(String::as_str).collect::<Vec<_>>());
    let data = tempfile::tempdir().unwrap();
    // On the first link's address, which every namespace reaches through its own link.
    let agg = Aggregator::start_on(
        &certs,
        &data.path().join("db"),
        &format!("{}:0", nets[0].outer),
        AGGREGATOR_SETTINGS,
    );
    let url = agg.url();
    let settings = data.path().join("collector.toml");
    std::fs::write(&settings, COLLECTOR_SETTINGS).unwrap();

    let started = Instant::now();
    let mut members = Vec::new();
    let mut workloads = Vec::new();
    for (i, (net, host)) in nets.iter().zip(&hosts).enumerate() {
        let version = if i < HOSTS / 2 { GOOD } else { BAD };
        for _ in 0..PER_HOST {
            let w = Workload::start_cmd(
                &format!("fleetsvc {version} on {host}"),
                &mut net
                    .command(Command::new(builds.binary(version)).args(["-max", MAX_GOROUTINES])),
            );
            members.push(Member {
                host: host.clone(),
                pid: w.pid(),
                version,
            });
            workloads.push(w);
        }
    }
    let _collectors: Vec<Proc> = nets
        .iter()
        .zip(&hosts)
        .map(|(net, host)| {
            let mut cmd = collector_command_at(
                &certs,
                host,
                &url,
                &format!("collector-{host}"),
                "1s",
                "info",
            );
            cmd.arg("--config").arg(&settings);
            Proc::spawn(&format!("collector {host}"), &mut net.command(&cmd))
        })
        .collect();

    // Every process is a target of its own host only, with its version: each collector
    // sees all the machine's processes through /proc and reports its namespace's.
    let targets = eventually(
        STARTUP,
        "the twelve processes as targets with their goroutine counts",
        || {
            let v = goroscope_json(&certs, &url, &["targets"]);
            let ts = v["targets"].as_array()?.clone();
            members
                .iter()
                .all(|m| {
                    ts.iter().any(|t| {
                        is_target(&t["host"], &t["pid"], m)
                            && t["latest"]["go_goroutines"].is_number()
                    })
                })
                .then_some(ts)
        },
    );
    assert_eq!(
        targets.len(),
        HOSTS * PER_HOST,
        "no target of another namespace: {targets:#?}"
    );
    for m in &members {
        let t = targets
            .iter()
            .find(|t| is_target(&t["host"], &t["pid"], m))
            .unwrap();
        assert_eq!(t["labels"]["service"], "fleetsvc", "{t}");
        assert_eq!(t["labels"]["module"], MODULE, "{t}");
        assert_eq!(t["labels"]["version"], m.version, "{t}");
    }

    // One incident, of all six v2.4.0 processes, naming the version.
    let (incidents, incident) = wait_for_incident(&certs, &url, &agg, started);
    let report = format!(
        "incidents:\n{}\naggregator log (tail):\n{}",
        serde_json::to_string_pretty(&incidents).unwrap(),
        tail(&agg.proc.output(), 80)
    );
    let open_leaks = incidents["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["diagnosis"] == "goroutine-leak" && i["resolved_ms"].is_null())
        .count();
    assert_eq!(open_leaks, 1, "one open goroutine-leak incident\n{report}");
    let id = incident["id"].as_str().unwrap_or_default();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "id {id:?}\n{report}"
    );
    assert_eq!(
        incident["services"],
        serde_json::json!(["fleetsvc"]),
        "{report}"
    );
    let cause = &incident["causes"][0];
    for (field, want) in [
        ("affected_with", 6),
        ("total_with", 6),
        ("affected_without", 0),
        ("total_without", 6),
    ] {
        assert_eq!(cause[field], want, "causes[0].{field}\n{report}");
    }
    // Fisher's exact test of 6 of 6 against 0 of 6: 1/924 one-sided, 2/924 two-sided.
    assert!(
        cause["p_value"].as_f64().is_some_and(|p| p < 0.01),
        "causes[0].p_value\n{report}"
    );
    for (what, text) in [
        ("causes[0].text", &cause["text"]),
        ("summary", &incident["summary"]),
    ] {
        assert!(
            text.as_str().is_some_and(|t| t.contains(BAD)),
            "{what} names {BAD}\n{report}"
        );
    }
    // Its anomalies: a goroutine leak on each v2.4.0 process (and what comes with one,
    // such as stack growth), none on a v2.3.1 process.
    let bad: Vec<&Member> = members.iter().filter(|m| m.version == BAD).collect();
    let anomalies = incident["anomalies"].as_array().unwrap();
    let mut leaking = HashSet::new();
    for a in anomalies {
        let Some(m) = bad
            .iter()
            .find(|m| is_target(&a["target"]["host"], &a["target"]["pid"], m))
        else {
            panic!("anomaly {a} is not on a {BAD} process\n{report}");
        };
        assert_eq!(a["labels"]["version"], BAD, "{a}\n{report}");
        if a["diagnosis"] == "goroutine-leak" {
            leaking.insert(m.pid);
        }
    }
    assert_eq!(
        leaking.len(),
        bad.len(),
        "a goroutine-leak anomaly on every {BAD} process\n{report}"
    );

    // No anomaly of any kind on a v2.3.1 process, open or resolved.
    let all = goroscope_json(&certs, &url, &["anomalies", "--all"]);
    let on_good: Vec<&Value> = all["anomalies"]
        .as_array()
        .unwrap_or_else(|| panic!("anomalies lists an array: {all}"))
        .iter()
        .filter(|a| {
            members.iter().any(|m| {
                m.version == GOOD && is_target(&a["target"]["host"], &a["target"]["pid"], m)
            })
        })
        .collect();
    assert!(
        on_good.is_empty(),
        "no anomaly on a {GOOD} process: {on_good:#?}\n{report}"
    );
}

/// Whether a target's `host` and `pid` are `m`'s.
fn is_target(host: &Value, pid: &Value, m: &Member) -> bool {
    *host == m.host.as_str() && pid.as_u64() == Some(u64::from(m.pid))
}

/// Waits until an open goroutine-leak incident has all six v2.4.0 processes with the
/// version as its first cause; returns every incident listed then, and that one. On
/// timeout, panics with the last answer and the aggregator's log.
fn wait_for_incident(
    certs: &Certs,
    url: &str,
    agg: &Aggregator,
    started: Instant,
) -> (Value, Value) {
    loop {
        let out = goroscope(certs, url, None, &["incidents", "-o", "json"]);
        let last = if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            // Not a wait: this CLI or this aggregator has no incidents at all.
            assert!(
                !err.contains("unrecognized subcommand") && !err.contains("unimplemented"),
                "`goroscope incidents` cannot answer: {err}"
            );
            format!("failed: {err}")
        } else {
            match serde_json::from_slice::<Value>(&out.stdout) {
                Ok(v) => {
                    let found = v["incidents"].as_array().and_then(|is| {
                        is.iter()
                            .find(|i| {
                                let cause = &i["causes"][0];
                                i["diagnosis"] == "goroutine-leak"
                                    && i["resolved_ms"].is_null()
                                    && cause["attribute"] == "version"
                                    && cause["value"] == BAD
                                    && cause["affected_with"] == 6
                            })
                            .cloned()
                    });
                    if let Some(incident) = found {
                        return (v, incident);
                    }
                    serde_json::to_string_pretty(&v).unwrap()
                }
                Err(e) => format!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)),
            }
        };
        assert!(
            started.elapsed() < DETECTION,
            "no open goroutine-leak incident of the six {BAD} processes naming the version \
             within {DETECTION:?}; `goroscope incidents -o json` last gave:\n{last}\n\
             aggregator log (tail):\n{}",
            tail(&agg.proc.output(), 80)
        );
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `fleetsvc` built at two tags of a git repository made for the test, so that Go
/// stamps each binary's main module version from its tag: v2.3.1 as the source is,
/// v2.4.0 with the backend's result channel unbuffered (the leak).
struct Builds {
    dir: TempDir,
}

impl Builds {
    fn new() -> Builds {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        std::fs::create_dir_all(repo.join("internal/debugserve")).unwrap();
        std::fs::copy(
            src.join("internal/debugserve/serve.go"),
            repo.join("internal/debugserve/serve.go"),
        )
        .unwrap();
        std::fs::write(repo.join("go.mod"), format!("module {MODULE}\n\ngo 1.24\n")).unwrap();
        let main = std::fs::read_to_string(src.join("fleetsvc/main.go")).unwrap();
        let main = replace_once(
            &main,
            "\"goroscope.test/workloads/internal/debugserve\"",
            &format!("\"{MODULE}/internal/debugserve\""),
        );
        std::fs::write(repo.join("main.go"), &main).unwrap();
        git(&repo, &["init", "-q"]);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "fleetsvc"]);
        git(&repo, &["tag", GOOD]);
        let leaking = replace_once(
            &main,
            "const resultBuffer = 1\n",
            "const resultBuffer = 0\n",
        );
        std::fs::write(repo.join("main.go"), leaking).unwrap();
        git(
            &repo,
            &[
                "commit",
                "-q",
                "-a",
                "-m",
                "answer on an unbuffered channel",
            ],
        );
        git(&repo, &["tag", BAD]);

        let builds = Builds { dir };
        for version in [GOOD, BAD] {
            git(&repo, &["checkout", "-q", version]);
            let exe = builds.binary(version);
            let status = Command::new("go")
                .args(["build", "-o"])
                .arg(&exe)
                .arg(".")
                .current_dir(&repo)
                .env("GOFLAGS", "-buildvcs=true")
                .env("GOWORK", "off")
                .env("GOTOOLCHAIN", "local")
                .env("GOPROXY", "off")
                .status()
                .expect("run go build (is Go installed?)");
            assert!(status.success(), "go build of fleetsvc {version} failed");
            // What the collector reads: the main module's version from the tag, on a
            // clean checkout.
            let out = Command::new("go")
                .args(["version", "-m"])
                .arg(&exe)
                .output()
                .unwrap();
            let info = String::from_utf8_lossy(&out.stdout);
            assert!(
                info.contains(&format!("\tmod\t{MODULE}\t{version}\t"))
                    && info.contains("vcs.modified=false"),
                "fleetsvc {version} carries its version:\n{info}"
            );
        }
        builds
    }

    fn binary(&self, version: &str) -> PathBuf {
        self.dir.path().join(version).join("fleetsvc")
    }
}

/// `text` with its one `from` replaced; panics if `from` is not there exactly once.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "fleetsvc's source has {from:?} once"
    );
    text.replacen(from, to, 1)
}

fn git(repo: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(["-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(repo)
        .output()
        .expect("run git (is it installed?)");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
