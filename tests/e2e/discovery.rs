//! Discovery and probing end to end: the collector sees what the kernel sees (an exec,
//! a zombie, a binary without section headers), finds endpoints where and when they
//! appear, counts goroutines without building stacks, and a process that never answers
//! costs only itself.

use std::process::Command;
use std::time::Duration;

use goroscope_tests::*;

const STARTUP: Duration = Duration::from_secs(60);

fn go_version() -> String {
    let out = Command::new("go")
        .args(["env", "GOVERSION"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The state letter of `/proc/PID/stat`.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// The timestamps of `metric` for `pid` over the last `window`, in order.
fn times(certs: &Certs, url: &str, metric: &str, pid: u32, window: &str) -> Vec<i64> {
    let mut t: Vec<i64> = series(certs, url, metric, pid, window)
        .into_iter()
        .map(|(ts, _)| ts)
        .collect();
    t.sort_unstable();
    t
}

/// A shell entrypoint that execs the service and a Go program without section headers
/// are found; a Go program that execs something else stops being a target.
#[test]
fn a_process_is_what_it_runs_now() {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("steady-bare");
    copy_without_section_headers(&workloads().join("steady"), &bare);
    let (certs, _data, agg, _collector) = start_stack("e2e-x", "");
    let url = agg.url();

    let bare = Workload::start_cmd("steady-bare", &mut Command::new(&bare));
    let t = eventually(STARTUP, "the binary without section headers", || {
        let t = targets_by_pid(&certs, &url);
        t.get(&u64::from(bare.pid()))
            .filter(|t| t["latest"]["go_goroutines"].is_number())
            .cloned()
    });
    assert_eq!(t["labels"]["service"], "steady", "{t}");
    assert_eq!(t["labels"]["go_version"], go_version().as_str(), "{t}");
    assert_eq!(t["labels"]["module"], "goroscope.test/workloads", "{t}");

    // The collector is sampling: a shell it sees for seconds execs the service; a Go
    // launcher it has as a target execs a program that is not Go.
    let shell = Proc::spawn(
        "sh-exec-steady",
        Command::new("sh").arg("-c").arg(format!(
            "sleep 3; exec {}",
            workloads().join("steady").display()
        )),
    );
    let launcher = Proc::spawn(
        "execer",
        Command::new(workloads().join("execer")).args(["-after", "8s", "/bin/sleep", "600"]),
    );
    let t = eventually(STARTUP, "the launcher as a target", || {
        targets_by_pid(&certs, &url)
            .remove(&u64::from(launcher.pid()))
            .filter(|t| t["exited"] != true)
    });
    assert_eq!(t["labels"]["service"], "execer", "{t}");

    shell.wait_for_line("listening on", Duration::from_secs(20));
    let t = eventually(STARTUP, "the shell's pid as the service it execed", || {
        targets_by_pid(&certs, &url)
            .remove(&u64::from(shell.pid()))
            .filter(|t| t["latest"]["go_goroutines"].is_number())
    });
    assert_eq!(t["labels"]["service"], "steady", "{t}");

    eventually(STARTUP, "the launcher gone once it execed sleep", || {
        let t = targets_by_pid(&certs, &url);
        (t[&u64::from(launcher.pid())]["exited"] == true).then_some(())
    });
    let exe = std::fs::read_link(format!("/proc/{}/exe", launcher.pid())).unwrap();
    assert!(
        exe.ends_with("sleep"),
        "the pid lives on as {}",
        exe.display()
    );
}

/// A Go process that has exited but is not reaped (its parent never waits) is gone,
/// not a target sampled from what /proc still shows of it.
#[test]
fn a_zombie_is_gone_not_sampled() {
    let (certs, _data, agg, _collector) = start_stack("e2e-z", "");
    let url = agg.url();
    let parent = Proc::spawn(
        "zombie-parent",
        Command::new("sh").arg("-c").arg(format!(
            "{} & echo child $!; exec sleep 600",
            workloads().join("quiet").display()
        )),
    );
    let line = parent.wait_for_line("child ", Duration::from_secs(20));
    let child: u32 = line.trim_start_matches("child ").trim().parse().unwrap();
    eventually(STARTUP, "the child as a target", || {
        targets_by_pid(&certs, &url)
            .get(&u64::from(child))
            .filter(|t| t["latest"]["process_resident_memory_bytes"].is_number())
            .map(drop)
    });

    let killed = Command::new("kill")
        .args(["-KILL", &child.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    eventually(Duration::from_secs(10), "the child to be a zombie", || {
        (proc_state(child) == Some('Z')).then_some(())
    });
    eventually(STARTUP, "the zombie marked exited", || {
        (targets_by_pid(&certs, &url)[&u64::from(child)]["exited"] == true).then_some(())
    });
    assert_eq!(
        proc_state(child),
        Some('Z'),
        "still a zombie when marked exited"
    );
}

/// The goroutine count comes from the pprof index page, which the runtime answers from
/// a counter, never from `goroutine?debug=1`, which builds every goroutine's stack:
/// with stack summaries off, no profile is ever asked for.
#[test]
fn goroutines_are_counted_from_the_pprof_index() {
    let logged = Workload::start("logged", &["-goroutines", "500"]);
    let (certs, _data, agg, _collector) = start_stack_with("e2e-g", "[stacks]\nenabled = false\n");
    let url = agg.url();
    let t = eventually(STARTUP, "the goroutine count", || {
        targets_by_pid(&certs, &url)
            .remove(&u64::from(logged.pid()))
            .filter(|t| t["latest"]["go_goroutines"].is_number())
    });
    let n = t["latest"]["go_goroutines"].as_f64().unwrap();
    assert!((500.0..520.0).contains(&n), "{t}");
    assert_eq!(t["coverage"]["pprof"], true, "{t}");

    eventually(STARTUP, "three samples of go_goroutines", || {
        (series(&certs, &url, "go_goroutines", logged.pid(), "5m").len() >= 3).then_some(())
    });
    // Other tests' collectors, with stack summaries on, may read this process too:
    // only this one's requests (its host is in their User-Agent) count.
    let requests: String = logged
        .proc
        .output()
        .lines()
        .filter(|l| l.ends_with("(host e2e-g)"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(requests.contains("request /debug/pprof/ ua="), "{requests}");
    assert!(
        !requests.contains("request /debug/pprof/goroutine"),
        "the collector asked for a goroutine profile: {requests}"
    );
}

/// A process that starts listening seconds after it starts has its runtime metrics
/// seconds after that, not a minute later.
#[test]
fn a_late_listener_is_found_within_seconds() {
    let (certs, _data, agg, _collector) = start_stack("e2e-l", "");
    let url = agg.url();
    let late = Workload::start("late", &["-delay", "6s"]);
    eventually(STARTUP, "the late process as a target", || {
        targets_by_pid(&certs, &url)
            .get(&u64::from(late.pid()))
            .filter(|t| t["latest"]["process_resident_memory_bytes"].is_number())
            .map(drop)
    });
    let line = late
        .proc
        .wait_for_line("listening on", Duration::from_secs(20));
    let addr = line.trim_start_matches("listening on ").trim().to_owned();
    let t = eventually(
        Duration::from_secs(15),
        "runtime metrics of the late listener",
        || {
            targets_by_pid(&certs, &url)
                .remove(&u64::from(late.pid()))
                .filter(|t| t["latest"]["go_goroutines"].is_number())
        },
    );
    assert_eq!(t["coverage"]["debug_addr"], addr.as_str(), "{t}");
}

/// A process whose port accepts and never answers delays nobody: the others are
/// sampled every interval, and it keeps its /proc sample.
#[test]
fn a_silent_endpoint_delays_only_its_own_target() {
    let silent = Workload::start("silent", &[]);
    let steady = Workload::start("steady", &[]);
    let (certs, _data, agg, collector) = start_stack("e2e-s", "");
    let url = agg.url();
    eventually(STARTUP, "both targets", || {
        let t = targets_by_pid(&certs, &url);
        let ready = t
            .get(&u64::from(steady.pid()))
            .is_some_and(|t| t["latest"]["go_goroutines"].is_number())
            && t.get(&u64::from(silent.pid()))
                .is_some_and(|t| t["latest"]["process_resident_memory_bytes"].is_number());
        ready.then_some(())
    });
    // Long enough for several probes of the silent port (3s each) to be under way.
    std::thread::sleep(Duration::from_secs(10));

    for (what, pid, metric) in [
        (
            "steady's /proc",
            steady.pid(),
            "process_resident_memory_bytes",
        ),
        ("steady's goroutines", steady.pid(), "go_goroutines"),
        (
            "silent's /proc",
            silent.pid(),
            "process_resident_memory_bytes",
        ),
    ] {
        let t = times(&certs, &url, metric, pid, "9s");
        assert!(t.len() >= 7, "{what}: {} samples in 9s: {t:?}", t.len());
        let gaps: Vec<i64> = t.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().all(|g| *g <= 1500),
            "{what} sampled every interval (1s): gaps {gaps:?}"
        );
    }
    let t = targets_by_pid(&certs, &url);
    let s = &t[&u64::from(silent.pid())];
    assert!(s["latest"].get("go_goroutines").is_none(), "{s}");
    let log = collector.output();
    assert!(
        log.lines().any(|l| l.contains("no runtime endpoints found")
            && l.contains(&format!("pid={}", silent.pid()))
            && l.contains("no answer within")),
        "{log}"
    );
}

/// `discovery.service_ports` says where each service is probed; with
/// `probe_listening = false` the others are not probed at all.
#[test]
fn service_ports_choose_where_each_service_is_probed() {
    let port = free_port();
    let leaky = Workload::start(
        "leaky",
        &["-addr", &format!("127.0.0.1:{port}"), "-rate", "1"],
    );
    let steady = Workload::start("steady", &[]);
    let (certs, _data, agg, _collector) = start_stack_with(
        "e2e-p",
        &format!(
            "[discovery]\nprobe_listening = false\n[discovery.service_ports]\nleaky = [{port}]\n"
        ),
    );
    let url = agg.url();
    let t = eventually(
        STARTUP,
        "leaky probed at its port, steady from /proc",
        || {
            let t = targets_by_pid(&certs, &url);
            let ready = t
                .get(&u64::from(leaky.pid()))
                .is_some_and(|t| t["latest"]["go_goroutines"].is_number())
                && t.get(&u64::from(steady.pid()))
                    .is_some_and(|t| t["latest"]["process_resident_memory_bytes"].is_number());
            ready.then_some(t)
        },
    );
    assert_eq!(
        t[&u64::from(leaky.pid())]["coverage"]["debug_addr"],
        format!("127.0.0.1:{port}")
    );
    std::thread::sleep(Duration::from_secs(3));
    let t = targets_by_pid(&certs, &url);
    let s = &t[&u64::from(steady.pid())];
    assert!(s["latest"].get("go_goroutines").is_none(), "{s}");
    assert_eq!(s["coverage"]["expvar"], false, "{s}");
}
