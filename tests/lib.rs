//! Helpers for the end-to-end tests: the real binaries, real certificates, real Go
//! workloads, on loopback.
//!
//! The binaries are found beside the test executable (`target/<profile>/`); build them
//! first (`cargo build --workspace --bins`, which the test script does). The Go
//! workloads under `tests/workloads/` are built once per test run with `go build`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod alertmanager;
pub mod prometheus;
pub mod raw;

pub use alertmanager::Alertmanager;
pub use prometheus::Prometheus;

/// The directory holding the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/e2e-<hash> -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps")
        .to_owned()
}

/// The path of one of the workspace's binaries; panics with the fix if it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins`",
        path.display()
    );
    path
}

/// Builds the Go workloads once; returns the directory holding them.
pub fn workloads() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let out = bin_dir().join("workloads");
        std::fs::create_dir_all(&out).expect("create the workloads directory");
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg("./...")
            .current_dir(&src)
            .status()
            .expect("run `go build` (is Go installed?)");
        assert!(status.success(), "go build of tests/workloads failed");
        out
    })
}

/// Held by the tests that run leaking workloads and assert on the diagnoses of a whole
/// service: every collector discovers every Go process of the machine, so those tests
/// run one at a time. A test that panicked while holding it does not block the others.
pub fn detection_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Retries `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A free loopback port (bound, then released, so a process can bind it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// A child process whose stdout and stderr are collected; killed on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut out = output.lock().unwrap_or_else(|e| e.into_inner());
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Proc {
            name: name.to_owned(),
            child,
            output,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits for a line containing `needle`; returns that line.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        eventually(
            timeout,
            &format!("{} to print {needle:?}", self.name),
            || {
                self.output()
                    .lines()
                    .find(|l| l.contains(needle))
                    .map(str::to_owned)
            },
        )
    }

    /// The exit status if the process has ended.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for the process")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- output of {} ----\n{}", self.name, self.output());
        }
    }
}

/// A Go workload from `tests/workloads/`, started with `args`; waits until it serves.
pub struct Workload {
    pub proc: Proc,
    /// Where it serves HTTP, if it does.
    pub addr: Option<SocketAddr>,
}

impl Workload {
    pub fn start(name: &str, args: &[&str]) -> Workload {
        Workload::spawn(name, Command::new(workloads().join(name)).args(args))
    }

    /// Starts the workload inside the network namespace `ns` (`ip netns exec`, which
    /// execs in place: the pid is the workload's).
    pub fn start_in(ns: &NetNs, name: &str, args: &[&str]) -> Workload {
        Workload::spawn(
            name,
            &mut ns.command(Command::new(workloads().join(name)).args(args)),
        )
    }

    fn spawn(name: &str, cmd: &mut Command) -> Workload {
        let proc = Proc::spawn(name, cmd);
        let line = eventually(
            Duration::from_secs(20),
            &format!("workload {name} to start"),
            || {
                proc.output()
                    .lines()
                    .find(|l| l.starts_with("listening on ") || l == &"ready")
                    .map(str::to_owned)
            },
        );
        let addr = line
            .strip_prefix("listening on ")
            .map(|a| a.trim().parse().expect("workload prints a socket address"));
        Workload { proc, addr }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// A network namespace joined to this one by a veth pair: a second "host" or a pod.
/// Its default route goes through the link, so from inside it every address of this
/// namespace is reachable (an aggregator listening on one of them serves them all).
/// Needs root and iproute2. Deleted on drop.
pub struct NetNs {
    pub name: String,
    /// This side's address of the link.
    pub outer: String,
    /// The namespace's address.
    pub inner: String,
    link: String,
}

/// Namespaces made by this process so far: each gets its own link and /30, so that
/// tests running at once (and one test making many) never collide.
static NETNS_MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// /30 links per process: a /24 of 10.224.0.0/11 chosen by the pid, so that test
/// processes running at once (other clones' test runs) collide only when their pids
/// are equal modulo 8192.
const NETNS_PER_PROCESS: u32 = 64;

impl NetNs {
    /// Creates namespace `gs-<tag>-<pid>-<n>`, the process's `n`th, with its own /30
    /// link: this side its first address, inside the second.
    pub fn create(tag: &str) -> NetNs {
        let n = NETNS_MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(
            n < NETNS_PER_PROCESS,
            "at most {NETNS_PER_PROCESS} network namespaces per test process"
        );
        let pid = std::process::id();
        let name = format!("gs-{tag}-{pid}-{n}");
        // Interface names have at most 15 bytes: "gs" 6 digits "n" 2 digits "p".
        let link = format!("gs{}n{n}", pid % 1_000_000);
        let net = u32::from(std::net::Ipv4Addr::new(10, 224, 0, 0))
            + ((pid % 8192) * NETNS_PER_PROCESS + n) * 4;
        let ns = NetNs {
            name: name.clone(),
            outer: std::net::Ipv4Addr::from(net + 1).to_string(),
            inner: std::net::Ipv4Addr::from(net + 2).to_string(),
            link: link.clone(),
        };
        // Left over by an earlier process with the same pid that was killed: the drop
        // below never ran for it.
        let _ = Command::new("ip").args(["link", "del", &link]).output();
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let peer = format!("{link}p");
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), name.clone()],
            vec![
                "link".into(),
                "add".into(),
                link.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                peer.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                peer.clone(),
                "netns".into(),
                name.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{}/30", ns.outer),
                "dev".into(),
                link.clone(),
            ],
            vec!["link".into(), "set".into(), link.clone(), "up".into()],
            vec![
                "-n".into(),
                name.clone(),
                "addr".into(),
                "add".into(),
                format!("{}/30", ns.inner),
                "dev".into(),
                peer.clone(),
            ],
            vec![
                "-n".into(),
                name.clone(),
                "link".into(),
                "set".into(),
                peer,
                "up".into(),
            ],
            vec![
                "-n".into(),
                name.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
            vec![
                "-n".into(),
                name.clone(),
                "route".into(),
                "add".into(),
                "default".into(),
                "via".into(),
                ns.outer.clone(),
            ],
        ];
        for args in steps {
            let out = Command::new("ip")
                .args(&args)
                .output()
                .expect("run ip (iproute2)");
            assert!(
                out.status.success(),
                "ip {}: {} (network namespaces need root)",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        ns
    }

    /// `cmd` run inside the namespace (`ip netns exec`, which execs in place: the pid is
    /// the program's), with its arguments, environment and working directory.
    pub fn command(&self, cmd: &Command) -> Command {
        let mut inside = Command::new("ip");
        inside
            .args(["netns", "exec", &self.name])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => inside.env(key, value),
                None => inside.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            inside.current_dir(dir);
        }
        inside
    }
}

/// Whether this process runs as root (network namespaces need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let uids = s.lines().find_map(|l| l.strip_prefix("Uid:"))?.to_owned();
            // Real, effective, saved, filesystem: the effective one decides.
            uids.split_whitespace().nth(1).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A fleet CA with certificates, made by `goroscope certs`.
pub struct Certs {
    root: PathBuf,
    _dir: Option<TempDir>,
}

impl Certs {
    /// A CA, an aggregator certificate for `localhost`, a collector certificate for each
    /// of `hosts`, and an operator certificate `alice`.
    pub fn new(hosts: &[&str]) -> Certs {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let certs = Certs {
            root: dir.path().to_owned(),
            _dir: Some(dir),
        };
        certs.goroscope(&["certs", "init", "--dir"], &[]);
        certs.goroscope(
            &["certs", "issue", "--aggregator", "localhost", "--dir"],
            &[],
        );
        certs.goroscope(&["certs", "issue", "--operator", "alice", "--dir"], &[]);
        for host in hosts {
            certs.goroscope(&["certs", "issue", "--collector", host, "--dir"], &[]);
        }
        certs
    }

    fn goroscope(&self, args: &[&str], extra: &[&str]) {
        let out = Command::new(bin("goroscope"))
            .args(args)
            .arg(&self.root)
            .args(extra)
            .output()
            .expect("run goroscope certs");
        assert!(
            out.status.success(),
            "goroscope {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The certificates already in `dir` (named as `goroscope certs` names them).
    pub fn at(dir: &Path) -> Certs {
        Certs {
            root: dir.to_owned(),
            _dir: None,
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    /// The spool directory of the collector for `host`.
    pub fn spool_dir(&self, host: &str) -> PathBuf {
        self.root.join(format!("spool-{host}"))
    }

    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// curl's arguments to reach `https://localhost:PORT` with the leaf `stem` (e.g.
    /// "operator-alice") as the client: the CA, the certificate and key, and localhost
    /// resolved to loopback.
    pub fn curl_args(&self, stem: &str, port: u16) -> Vec<String> {
        let (cert, key) = self.leaf(stem);
        vec![
            "--cacert".into(),
            self.ca().display().to_string(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
            "--resolve".into(),
            format!("localhost:{port}:127.0.0.1"),
        ]
    }

    /// (cert, key) of a leaf by stem, e.g. "operator-alice".
    pub fn leaf(&self, stem: &str) -> (PathBuf, PathBuf) {
        (
            self.path(&format!("{stem}.pem")),
            self.path(&format!("{stem}-key.pem")),
        )
    }
}

/// A running aggregator on a loopback port with its own database directory.
pub struct Aggregator {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl Aggregator {
    /// Starts an aggregator on `port` (0 for any) storing in `data_dir`.
    pub fn start(certs: &Certs, data_dir: &Path, port: u16) -> Aggregator {
        Aggregator::start_with(certs, data_dir, port, "")
    }

    /// Like `start`, with `extra` appended to the settings file (TOML tables).
    pub fn start_with(certs: &Certs, data_dir: &Path, port: u16, extra: &str) -> Aggregator {
        Aggregator::start_on(certs, data_dir, &format!("127.0.0.1:{port}"), extra)
    }

    /// Like `start_with`, listening on `listen` (an address and port, 0 for any).
    pub fn start_on(certs: &Certs, data_dir: &Path, listen: &str, extra: &str) -> Aggregator {
        let config = data_dir.with_extension("toml");
        // Top-level keys of `extra` (before its first table) go before [tls].
        let (top, tables) = match extra
            .find("\n[")
            .map(|i| i + 1)
            .or(extra.starts_with('[').then_some(0))
        {
            Some(i) => extra.split_at(i),
            None => (extra, ""),
        };
        std::fs::write(
            &config,
            format!(
                "listen = \"{listen}\"\ndata_dir = {:?}\nlog = \"info,goroscope_aggregator=debug\"\n{top}\n\
                 [tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n{tables}",
                data_dir,
                certs.ca(),
                certs.path("aggregator-localhost.pem"),
                certs.path("aggregator-localhost-key.pem"),
            ),
        )
        .expect("write the aggregator config");
        let proc = Proc::spawn(
            "aggregator",
            Command::new(bin("goroscope-aggregator"))
                .arg("--config")
                .arg(&config),
        );
        let line = proc.wait_for_line("aggregator listening", Duration::from_secs(30));
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no addr= in {line:?}"));
        Aggregator {
            proc,
            addr,
            data_dir: data_dir.to_owned(),
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

/// The command of a collector for `host` sending to `aggregator_url`, sampling every
/// second, with debug logs, spooling in [`Certs::spool_dir`] (one per host and CA, so
/// that a restarted collector finds its spool). `cert_stem` picks the certificate
/// ("collector-<host>" normally). Add flags to it as a test needs.
pub fn collector_command(
    certs: &Certs,
    host: &str,
    aggregator_url: &str,
    cert_stem: &str,
) -> Command {
    collector_command_at(
        certs,
        host,
        aggregator_url,
        cert_stem,
        "1s",
        "info,goroscope_collector=debug",
    )
}

/// [`collector_command`] sampling every `interval` and logging with `log`.
pub fn collector_command_at(
    certs: &Certs,
    host: &str,
    aggregator_url: &str,
    cert_stem: &str,
    interval: &str,
    log: &str,
) -> Command {
    let (cert, key) = certs.leaf(cert_stem);
    let mut cmd = Command::new(bin("goroscope-collector"));
    cmd.args(["--host", host, "--aggregator", aggregator_url])
        .args(["--interval", interval, "--log", log])
        .arg("--spool-dir")
        .arg(certs.spool_dir(host))
        .arg("--ca")
        .arg(certs.ca())
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key);
    cmd
}

/// Starts [`collector_command`].
pub fn start_collector(certs: &Certs, host: &str, aggregator_url: &str, cert_stem: &str) -> Proc {
    Proc::spawn(
        &format!("collector {host}"),
        &mut collector_command(certs, host, aggregator_url, cert_stem),
    )
}

/// The usual stack for a test: a CA with certificates for `host`, an aggregator on its
/// own database (with `extra_settings` appended to its settings file) and a collector
/// for `host`. Keep the directory alive as long as the aggregator.
pub fn start_stack(host: &str, extra_settings: &str) -> (Certs, TempDir, Aggregator, Proc) {
    let certs = Certs::new(&[host]);
    let data = tempfile::tempdir().expect("create a temporary directory");
    let agg = Aggregator::start_with(&certs, &data.path().join("db"), 0, extra_settings);
    let collector = start_collector(&certs, host, &agg.url(), &format!("collector-{host}"));
    (certs, data, agg, collector)
}

/// Runs the CLI against `url` as the operator `alice` (or with `leaf` if given).
pub fn goroscope(
    certs: &Certs,
    url: &str,
    leaf: Option<(&Path, &Path, &Path)>,
    args: &[&str],
) -> Output {
    let (ca, cert, key) = match leaf {
        Some((ca, cert, key)) => (ca.to_owned(), cert.to_owned(), key.to_owned()),
        None => {
            let (cert, key) = certs.leaf("operator-alice");
            (certs.ca(), cert, key)
        }
    };
    Command::new(bin("goroscope"))
        .args(args)
        .env("GOROSCOPE_ADDR", url)
        .env("GOROSCOPE_CA", ca)
        .env("GOROSCOPE_CERT", cert)
        .env("GOROSCOPE_KEY", key)
        .output()
        .expect("run goroscope")
}

/// `goroscope ... -o json` parsed; panics with stderr if it failed.
pub fn goroscope_json(certs: &Certs, url: &str, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = goroscope(certs, url, None, &all);
    assert!(
        out.status.success(),
        "goroscope {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("goroscope -o json prints JSON")
}

/// The targets the aggregator lists, by pid.
pub fn targets_by_pid(certs: &Certs, url: &str) -> HashMap<u64, serde_json::Value> {
    let v = goroscope_json(certs, url, &["targets"]);
    v["targets"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter_map(|t| Some((t["pid"].as_u64()?, t.clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// The samples of `metric` for the target with `pid`: (timestamp ms, value).
pub fn series(certs: &Certs, url: &str, metric: &str, pid: u32, since: &str) -> Vec<(i64, f64)> {
    let v = goroscope_json(
        certs,
        url,
        &[
            "query",
            metric,
            "--target",
            &pid.to_string(),
            "--since",
            since,
        ],
    );
    v["series"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["samples"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| Some((p[0].as_i64()?, p[1].as_f64()?)))
        .collect()
}

impl Workload {
    /// Starts `cmd` as a workload (a shell or wrapper around one of them, for example);
    /// waits until it prints "ready" or "listening on ADDR", like [`Workload::start`].
    pub fn start_cmd(name: &str, cmd: &mut Command) -> Workload {
        Workload::spawn(name, cmd)
    }
}

/// Like [`start_stack`], with `collector_settings` as the collector's settings file
/// (flags still set the host, aggregator, interval, log and certificates).
pub fn start_stack_with(
    host: &str,
    collector_settings: &str,
) -> (Certs, TempDir, Aggregator, Proc) {
    let certs = Certs::new(&[host]);
    let data = tempfile::tempdir().expect("create a temporary directory");
    let agg = Aggregator::start(&certs, &data.path().join("db"), 0);
    let settings = data.path().join("collector.toml");
    std::fs::write(&settings, collector_settings).expect("write the collector settings");
    let collector = Proc::spawn(
        &format!("collector {host}"),
        collector_command(&certs, host, &agg.url(), &format!("collector-{host}"))
            .arg("--config")
            .arg(&settings),
    );
    (certs, data, agg, collector)
}

/// Copies the 64-bit ELF executable `src` to `dst` without its section headers
/// (e_shoff, e_shnum and e_shstrndx zeroed): it still runs, since the loader reads
/// program headers only.
pub fn copy_without_section_headers(src: &Path, dst: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut bytes = std::fs::read(src).expect("read the executable");
    assert!(
        bytes.starts_with(b"\x7fELF") && bytes[4] == 2,
        "{} is not a 64-bit ELF file",
        src.display()
    );
    bytes[0x28..0x30].fill(0);
    bytes[0x3c..0x40].fill(0);
    std::fs::write(dst, bytes).expect("write the copy");
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755))
        .expect("make the copy executable");
}

/// The latest value of `metric` in a target of `goroscope targets -o json`: the series
/// without labels of its own, else the first with (`metric{le="0.5"}`).
pub fn latest_of(latest: &serde_json::Value, metric: &str) -> Option<f64> {
    if let Some(v) = latest.get(metric).and_then(serde_json::Value::as_f64) {
        return Some(v);
    }
    let prefix = format!("{metric}{{");
    latest
        .as_object()?
        .iter()
        .find(|(k, _)| k.starts_with(&prefix))
        .and_then(|(_, v)| v.as_f64())
}
