//! A target's cgroups: memory limit and use, OOM kills, CPU quota and throttling, and
//! the container and pod the process runs in.
//!
//! `/proc/PID/cgroup` names the process's cgroups; their files are read under the
//! cgroup root as the host mounts it (`cgroup_root`, normally `/sys/fs/cgroup`). Both
//! cgroup v2 (one unified hierarchy, `0::/path`) and v1 (one hierarchy per controller
//! set, `4:memory:/path`) are read, and hosts that mount both (v1 controllers beside a
//! unified hierarchy at `unified/`): a controller is read from the v1 hierarchy that has
//! it when the process is in one, else from the unified hierarchy. Every file is read
//! under [`MAX_FILE_BYTES`]; a file that is missing or unreadable only leaves its
//! metrics out. Every function here blocks: callers run them off the runtime's thread.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::Metrics;
use super::proc::ProcError;

/// The most read of any cgroup file (or of `/proc/PID/cgroup`).
pub const MAX_FILE_BYTES: u64 = 64 * 1024;
/// Entries of the cgroup root looked at for v1 hierarchies, at most.
const MAX_ROOT_ENTRIES: usize = 64;
/// Distinct cgroup sets a round keeps, at most; past it, targets are read uncached.
const MAX_ROUND_ENTRIES: usize = 4096;
/// Lines of `/proc/PID/cgroup` kept, at most (a kernel has about 15 controllers).
const MAX_MEMBERSHIP_LINES: usize = 32;
/// A v1 memory limit at or above this is "no limit": the kernel shows its page counter
/// maximum (9223372036854771712 with 4 KiB pages), no real limit comes near it.
const V1_UNLIMITED: u64 = 1 << 62;

/// The cgroups of one process, as `/proc/PID/cgroup` lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// The path in the unified (v2) hierarchy, if the process is in one.
    pub unified: Option<String>,
    /// (controllers, path) of each v1 hierarchy: `("cpu,cpuacct", "/kubepods/...")`.
    pub v1: Vec<(String, String)>,
}

impl Membership {
    /// The v1 path of the hierarchy that has `controller`.
    fn v1_path(&self, controller: &str) -> Option<&str> {
        self.v1
            .iter()
            .find(|(controllers, _)| controllers.split(',').any(|c| c == controller))
            .map(|(_, path)| path.as_str())
    }
}

/// Parses `/proc/PID/cgroup` (`hierarchy-ID:controller-list:cgroup-path` lines, see
/// cgroups(7)). Malformed lines are skipped.
pub fn parse_membership(text: &str) -> Membership {
    let mut m = Membership::default();
    for line in text.lines().take(MAX_MEMBERSHIP_LINES) {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !path.starts_with('/') || id.parse::<u32>().is_err() {
            continue;
        }
        if id == "0" && controllers.is_empty() {
            m.unified = Some(path.to_owned());
        } else if !controllers.is_empty() {
            m.v1.push((controllers.to_owned(), path.to_owned()));
        }
    }
    m
}

/// Where the hierarchies are mounted under the cgroup root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// The unified hierarchy: the root itself (v2 only), or `unified/` beside v1 ones.
    pub unified: Option<PathBuf>,
    /// The v1 hierarchy holding each controller (`cpu` and `cpuacct` may share one,
    /// mounted as `cpu,cpuacct`).
    pub v1: HashMap<String, PathBuf>,
}

impl Layout {
    /// Looks at what is mounted under `root`: a hierarchy is a directory with
    /// `cgroup.procs`; a unified one also has `cgroup.controllers`, a v1 one is named
    /// after its controllers (`memory`, `cpu,cpuacct`), as systemd and Docker mount them.
    pub fn probe(root: &Path) -> Layout {
        let mut layout = Layout::default();
        if root.join("cgroup.controllers").is_file() {
            layout.unified = Some(root.to_owned());
            return layout;
        }
        let unified = root.join("unified");
        if unified.join("cgroup.controllers").is_file() {
            layout.unified = Some(unified);
        }
        let Ok(entries) = std::fs::read_dir(root) else {
            return layout;
        };
        for entry in entries.take(MAX_ROOT_ENTRIES).flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let dir = entry.path();
            if name == "unified"
                || !dir.join("cgroup.procs").is_file()
                || dir.join("cgroup.controllers").exists()
            {
                continue;
            }
            // `cpu` and `cpuacct` are often links to `cpu,cpuacct`: the first name that
            // holds a controller is kept, any of them reads the same files.
            for controller in name.split(',') {
                layout
                    .v1
                    .entry(controller.to_owned())
                    .or_insert_with(|| dir.clone());
            }
        }
        layout
    }

    /// The directory of the process's cgroup in the v1 hierarchy that has `controller`.
    fn v1_dir(&self, m: &Membership, controller: &str) -> Option<PathBuf> {
        let mount = self.v1.get(controller)?;
        under(mount, m.v1_path(controller)?)
    }

    fn unified_dir(&self, m: &Membership) -> Option<PathBuf> {
        under(self.unified.as_ref()?, m.unified.as_deref()?)
    }
}

/// `path` (absolute, from /proc/PID/cgroup) under `mount`, refused if it could leave it
/// (`..`, as a process in another cgroup namespace sees it).
fn under(mount: &Path, path: &str) -> Option<PathBuf> {
    let mut dir = mount.to_owned();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(part) => dir.push(part),
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(dir)
}

/// The container and pod a process runs in, from its cgroup paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The container runtime's 64-hex-digit id.
    pub container_id: Option<String>,
    /// The Kubernetes pod UID, with dashes.
    pub pod_uid: Option<String>,
}

impl Identity {
    /// As target labels: `container_id` and `pod_uid`, each only when found.
    pub fn labels(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("container_id", self.container_id.as_deref()),
            ("pod_uid", self.pod_uid.as_deref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
    }

    /// Finds the ids in the cgroup paths of `m`: the unified path first, then the v1
    /// ones (memory's first). What one path lacks, the next may give.
    pub fn of(m: &Membership) -> Identity {
        let mut id = Identity::default();
        let memory = m.v1_path("memory");
        let paths = m
            .unified
            .as_deref()
            .into_iter()
            .chain(memory)
            .chain(m.v1.iter().map(|(_, p)| p.as_str()));
        for path in paths {
            let found = identity_in(path);
            id.container_id = id.container_id.or(found.container_id);
            id.pod_uid = id.pod_uid.or(found.pod_uid);
            if id.container_id.is_some() && id.pod_uid.is_some() {
                break;
            }
        }
        id
    }
}

/// The ids in one cgroup path. The layouts of the usual runtimes and drivers:
///
/// - systemd driver: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid
///   with _>.slice/cri-containerd-<id>.scope` (also `crio-<id>.scope`,
///   `docker-<id>.scope`, `libpod-<id>.scope`), and on v1
///   `/system.slice/containerd.service/kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`;
/// - cgroupfs driver: `/kubepods/burstable/pod<uid>/<id>`, `/kubepods/pod<uid>/<id>`;
/// - Docker alone: `/docker/<id>`, `/system.slice/docker-<id>.scope`.
///
/// The deepest container id wins; `crio-conmon-<id>` is the runtime's monitor process,
/// not the container.
pub fn identity_in(path: &str) -> Identity {
    let mut id = Identity::default();
    for part in path.split(['/', ':']) {
        let part = part
            .strip_suffix(".scope")
            .or_else(|| part.strip_suffix(".slice"))
            .unwrap_or(part);
        if let Some(uid) = pod_uid_in(part) {
            id.pod_uid = Some(uid);
        }
        if part.starts_with("crio-conmon-") {
            continue;
        }
        let last = part.rsplit('-').next().unwrap_or(part);
        if last.len() == 64 && last.bytes().all(|b| b.is_ascii_hexdigit()) {
            id.container_id = Some(last.to_ascii_lowercase());
        }
    }
    id
}

/// `pod<uid>` at the start of `part` or after a `-` (`kubepods-besteffort-pod<uid>`),
/// the uid with `_` (systemd's escape of `-`) or `-`.
fn pod_uid_in(part: &str) -> Option<String> {
    let rest = match part.strip_prefix("pod") {
        Some(rest) => rest,
        None => &part[part.rfind("-pod")? + 4..],
    };
    let uid = rest.replace('_', "-").to_ascii_lowercase();
    let b = uid.as_bytes();
    let is_uuid = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    is_uuid.then_some(uid)
}

/// What the cgroups of a process gave: their metrics and the identity in their paths.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub metrics: Metrics,
    pub identity: Identity,
}

/// Reads a cgroup file, at most [`MAX_FILE_BYTES`]; `None` if it cannot be read (the
/// controller is not enabled there, the cgroup went, the kernel has no such file).
fn read_file(path: &Path) -> Option<String> {
    let mut bytes = Vec::new();
    File::open(path)
        .ok()?
        .take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// One number alone in a file (`memory.current`, `cpuacct.usage`).
pub fn parse_number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A v2 limit: `Some(None)` for `max` (no limit), `None` for anything else not a number.
pub fn parse_v2_limit(text: &str) -> Option<Option<u64>> {
    match text.trim() {
        "max" => Some(None),
        n => n.parse().ok().map(Some),
    }
}

/// v2 `cpu.max` (`$MAX $PERIOD`) as cores: `Some(None)` when unlimited (`max`).
pub fn parse_cpu_max(text: &str) -> Option<Option<f64>> {
    let mut fields = text.split_ascii_whitespace();
    let quota = parse_v2_limit(fields.next()?)?;
    let period: u64 = fields.next()?.parse().ok()?;
    if period == 0 || fields.next().is_some() {
        return None;
    }
    Some(quota.map(|q| q as f64 / period as f64))
}

/// The value of `key` in a flat-keyed file (`key value` lines: `memory.stat`,
/// `cpu.stat`, `memory.events`, `memory.oom_control`).
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// Reads the cgroups of `m` under `layout`.
pub fn read(layout: &Layout, m: &Membership) -> Reading {
    let mut out = Metrics::with_capacity(16);
    let unified = layout.unified_dir(m);
    match (layout.v1_dir(m, "memory"), &unified) {
        (Some(dir), _) => memory_v1(&dir, &mut out),
        (None, Some(dir)) => memory_v2(dir, &mut out),
        (None, None) => {}
    }
    let (cpu, cpuacct) = (layout.v1_dir(m, "cpu"), layout.v1_dir(m, "cpuacct"));
    if cpu.is_some() || cpuacct.is_some() {
        if let Some(dir) = cpu {
            cpu_v1(&dir, &mut out);
        }
        let usage = cpuacct.and_then(|d| read_file(&d.join("cpuacct.usage")));
        if let Some(ns) = usage.and_then(|t| parse_number(&t)) {
            out.push(("cgroup_cpu_usage_seconds_total", ns as f64 / 1e9));
        }
    } else if let Some(dir) = &unified {
        cpu_v2(dir, &mut out);
    }
    Reading {
        metrics: out,
        identity: Identity::of(m),
    }
}

fn memory_v2(dir: &Path, out: &mut Metrics) {
    // "max" is no limit: the metric is left out rather than sent as +Inf, so that a
    // ratio to the limit exists only where there is one.
    if let Some(Some(max)) = read_file(&dir.join("memory.max")).and_then(|t| parse_v2_limit(&t)) {
        out.push(("cgroup_memory_max_bytes", max as f64));
    }
    if let Some(n) = read_file(&dir.join("memory.current")).and_then(|t| parse_number(&t)) {
        out.push(("cgroup_memory_current_bytes", n as f64));
    }
    if let Some(n) = read_file(&dir.join("memory.swap.current")).and_then(|t| parse_number(&t)) {
        out.push(("cgroup_memory_swap_current_bytes", n as f64));
    }
    if let Some(stat) = read_file(&dir.join("memory.stat")) {
        let get = |key| keyed(&stat, key);
        if let Some(n) = get("anon") {
            out.push(("cgroup_memory_anon_bytes", n as f64));
        }
        if let Some(n) = get("file") {
            out.push(("cgroup_memory_file_bytes", n as f64));
        }
        // `kernel` (Linux 5.18+) sums the kernel's own memory; before it, its parts.
        let kernel = get("kernel").or_else(|| {
            let parts = ["kernel_stack", "pagetables", "percpu", "slab", "vmalloc"];
            parts
                .iter()
                .filter_map(|k| get(k))
                .reduce(u64::saturating_add)
        });
        if let Some(n) = kernel {
            out.push(("cgroup_memory_kernel_bytes", n as f64));
        }
        if let Some(n) = get("sock") {
            out.push(("cgroup_memory_sock_bytes", n as f64));
        }
    }
    if let Some(events) = read_file(&dir.join("memory.events")) {
        for (key, name) in [
            ("oom_kill", "cgroup_oom_kills_total"),
            ("max", "cgroup_memory_events_max_total"),
            ("high", "cgroup_memory_events_high_total"),
        ] {
            if let Some(n) = keyed(&events, key) {
                out.push((name, n as f64));
            }
        }
    }
}

fn memory_v1(dir: &Path, out: &mut Metrics) {
    if let Some(n) = read_file(&dir.join("memory.limit_in_bytes")).and_then(|t| parse_number(&t))
        && n < V1_UNLIMITED
    {
        out.push(("cgroup_memory_max_bytes", n as f64));
    }
    if let Some(n) = read_file(&dir.join("memory.usage_in_bytes")).and_then(|t| parse_number(&t)) {
        out.push(("cgroup_memory_current_bytes", n as f64));
    }
    if let Some(stat) = read_file(&dir.join("memory.stat")) {
        // The `total_` keys include the cgroup's descendants, as usage_in_bytes does.
        for (key, name) in [
            ("total_rss", "cgroup_memory_anon_bytes"),
            ("total_cache", "cgroup_memory_file_bytes"),
            ("total_swap", "cgroup_memory_swap_current_bytes"),
        ] {
            if let Some(n) = keyed(&stat, key) {
                out.push((name, n as f64));
            }
        }
    }
    for (file, name) in [
        ("memory.kmem.usage_in_bytes", "cgroup_memory_kernel_bytes"),
        ("memory.kmem.tcp.usage_in_bytes", "cgroup_memory_sock_bytes"),
    ] {
        if let Some(n) = read_file(&dir.join(file)).and_then(|t| parse_number(&t)) {
            out.push((name, n as f64));
        }
    }
    if let Some(n) = read_file(&dir.join("memory.oom_control")).and_then(|t| keyed(&t, "oom_kill"))
    {
        out.push(("cgroup_oom_kills_total", n as f64));
    }
}

fn cpu_v2(dir: &Path, out: &mut Metrics) {
    if let Some(Some(cores)) = read_file(&dir.join("cpu.max")).and_then(|t| parse_cpu_max(&t)) {
        out.push(("cgroup_cpu_quota_cores", cores));
    }
    if let Some(stat) = read_file(&dir.join("cpu.stat")) {
        for (key, name, scale) in [
            ("usage_usec", "cgroup_cpu_usage_seconds_total", 1e-6),
            ("nr_periods", "cgroup_cpu_periods_total", 1.0),
            ("nr_throttled", "cgroup_cpu_throttled_periods_total", 1.0),
            ("throttled_usec", "cgroup_cpu_throttled_seconds_total", 1e-6),
        ] {
            if let Some(n) = keyed(&stat, key) {
                out.push((name, n as f64 * scale));
            }
        }
    }
}

fn cpu_v1(dir: &Path, out: &mut Metrics) {
    let number = |file: &str| read_file(&dir.join(file)).and_then(|t| t.trim().parse::<i64>().ok());
    // A quota of -1 is no limit.
    if let (Some(quota), Some(period)) = (number("cpu.cfs_quota_us"), number("cpu.cfs_period_us"))
        && quota > 0
        && period > 0
    {
        out.push(("cgroup_cpu_quota_cores", quota as f64 / period as f64));
    }
    if let Some(stat) = read_file(&dir.join("cpu.stat")) {
        for (key, name, scale) in [
            ("nr_periods", "cgroup_cpu_periods_total", 1.0),
            ("nr_throttled", "cgroup_cpu_throttled_periods_total", 1.0),
            ("throttled_time", "cgroup_cpu_throttled_seconds_total", 1e-9),
        ] {
            if let Some(n) = keyed(&stat, key) {
                out.push((name, n as f64 * scale));
            }
        }
    }
}

/// Reads `/proc/PID/cgroup` under `proc_root`.
pub fn read_membership(proc_root: &Path, pid: u32) -> Result<String, ProcError> {
    let path = proc_root.join(pid.to_string()).join("cgroup");
    let mut bytes = Vec::new();
    File::open(&path)
        .and_then(|f| f.take(MAX_FILE_BYTES).read_to_end(&mut bytes))
        .map_err(|e| super::proc::pid_err(pid, path, e))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The cgroups read in one sampling round. Many targets share a cgroup (the processes
/// of a pod, or every process of a host without containers): each distinct
/// `/proc/PID/cgroup` is read once per round. The layout is probed by the first target
/// that needs it. Dropped with the round, so it forgets; holds at most
/// `MAX_ROUND_ENTRIES` cgroup sets.
pub struct Round {
    cgroup_root: PathBuf,
    layout: OnceLock<Layout>,
    by_membership: Mutex<HashMap<String, Arc<Reading>>>,
}

impl Round {
    pub fn new(cgroup_root: &Path) -> Round {
        Round {
            cgroup_root: cgroup_root.to_owned(),
            layout: OnceLock::new(),
            by_membership: Mutex::new(HashMap::new()),
        }
    }

    /// The cgroups of `pid`.
    pub fn read(&self, proc_root: &Path, pid: u32) -> Result<Arc<Reading>, ProcError> {
        let text = read_membership(proc_root, pid)?;
        let cached = self
            .by_membership
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&text)
            .cloned();
        if let Some(reading) = cached {
            return Ok(reading);
        }
        // Read outside the lock: two targets of one cgroup in different batches may
        // both read it, which costs a few reads and gives the same answer.
        let layout = self.layout.get_or_init(|| Layout::probe(&self.cgroup_root));
        let reading = Arc::new(read(layout, &parse_membership(&text)));
        let mut cache = self
            .by_membership
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if cache.len() < MAX_ROUND_ENTRIES {
            cache.insert(text, reading.clone());
        }
        Ok(reading)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sources/testdata/cgroup")
    }

    fn metric(r: &Reading, name: &str) -> Option<f64> {
        r.metrics.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    const POD_V2: &str = "/kubepods.slice/kubepods-burstable.slice/\
        kubepods-burstable-pod0f8e5ab2_4c1d_4a9e_9b7e_2d3c4b5a6f70.slice/\
        cri-containerd-4e1f0c0a3b2d9f8e7c6b5a4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b.scope";

    #[test]
    fn reads_a_v2_pod_container() {
        let root = fixtures().join("v2");
        let layout = Layout::probe(&root);
        assert_eq!(layout.unified.as_deref(), Some(root.as_path()));
        assert!(layout.v1.is_empty());
        let m = parse_membership(&format!("0::{POD_V2}\n"));
        let r = read(&layout, &m);
        let expect = [
            ("cgroup_memory_max_bytes", 536870912.0),
            ("cgroup_memory_current_bytes", 187817984.0),
            ("cgroup_memory_swap_current_bytes", 0.0),
            ("cgroup_memory_anon_bytes", 151379968.0),
            ("cgroup_memory_file_bytes", 28672000.0),
            ("cgroup_memory_kernel_bytes", 5918720.0),
            ("cgroup_memory_sock_bytes", 4096.0),
            ("cgroup_oom_kills_total", 2.0),
            ("cgroup_memory_events_max_total", 311.0),
            ("cgroup_memory_events_high_total", 0.0),
            ("cgroup_cpu_quota_cores", 1.5),
            ("cgroup_cpu_usage_seconds_total", 1234.567891),
            ("cgroup_cpu_periods_total", 98211.0),
            ("cgroup_cpu_throttled_periods_total", 4417.0),
            ("cgroup_cpu_throttled_seconds_total", 310.456789),
        ];
        for (name, value) in expect {
            let got = metric(&r, name).unwrap_or_else(|| panic!("{name} missing: {r:?}"));
            assert!((got - value).abs() < 1e-6, "{name}: {got} != {value}");
        }
        assert_eq!(r.metrics.len(), expect.len(), "{r:?}");
        assert_eq!(
            r.identity,
            Identity {
                container_id: Some(
                    "4e1f0c0a3b2d9f8e7c6b5a4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b".into()
                ),
                pod_uid: Some("0f8e5ab2-4c1d-4a9e-9b7e-2d3c4b5a6f70".into()),
            }
        );
    }

    #[test]
    fn unlimited_v2_limits_and_old_kernels_leave_metrics_out() {
        // The pod's cgroup: memory.max and cpu.max "max", a memory.stat without the
        // `kernel` key (before Linux 5.18), no memory.swap.current.
        let root = fixtures().join("v2");
        let m = parse_membership(
            "0::/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod0f8e5ab2_4c1d_4a9e_9b7e_2d3c4b5a6f70.slice\n",
        );
        let r = read(&Layout::probe(&root), &m);
        assert_eq!(metric(&r, "cgroup_memory_max_bytes"), None);
        assert_eq!(metric(&r, "cgroup_cpu_quota_cores"), None);
        assert_eq!(metric(&r, "cgroup_memory_swap_current_bytes"), None);
        assert_eq!(metric(&r, "cgroup_memory_current_bytes"), Some(190054400.0));
        // kernel_stack + pagetables + percpu + slab
        assert_eq!(
            metric(&r, "cgroup_memory_kernel_bytes"),
            Some((1_048_576 + 2_097_152 + 65_536 + 3_145_728) as f64)
        );
        assert_eq!(r.identity.container_id, None);
        assert_eq!(
            r.identity.pod_uid.as_deref(),
            Some("0f8e5ab2-4c1d-4a9e-9b7e-2d3c4b5a6f70")
        );

        // A cgroup that does not exist: nothing, and no error.
        let gone = read(&Layout::probe(&root), &parse_membership("0::/no/such\n"));
        assert!(gone.metrics.is_empty());
        // A path that climbs out of the root is not followed.
        let out = read(&Layout::probe(&root), &parse_membership("0::/../../etc\n"));
        assert!(out.metrics.is_empty());
    }

    #[test]
    fn reads_v1_hierarchies_beside_a_unified_one() {
        // As this kind of host mounts them: memory, cpu,cpuacct (with cpu and cpuacct
        // links), and a unified hierarchy without the memory controller.
        let root = fixtures().join("v1");
        let layout = Layout::probe(&root);
        assert_eq!(layout.unified, Some(root.join("unified")));
        assert_eq!(layout.v1.get("memory"), Some(&root.join("memory")));
        assert!(layout.v1.contains_key("cpuacct"));
        let id = "9d1b3c0e2f4a6b8c0d2e4f6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8e0f2a4b6c";
        let path = format!("/kubepods/burstable/pod7c3b1a2e-5d4f-4e6a-8b9c-0d1e2f3a4b5c/{id}");
        let m = parse_membership(&format!(
            "12:pids:{path}\n5:memory:{path}\n3:cpu,cpuacct:{path}\n1:name=systemd:{path}\n0::{path}\n"
        ));
        let r = read(&layout, &m);
        let expect = [
            ("cgroup_memory_max_bytes", 268435456.0),
            ("cgroup_memory_current_bytes", 104857600.0),
            ("cgroup_memory_anon_bytes", 83886080.0),
            ("cgroup_memory_file_bytes", 16777216.0),
            ("cgroup_memory_swap_current_bytes", 0.0),
            ("cgroup_memory_kernel_bytes", 3145728.0),
            ("cgroup_memory_sock_bytes", 0.0),
            ("cgroup_oom_kills_total", 1.0),
            ("cgroup_cpu_quota_cores", 0.5),
            ("cgroup_cpu_periods_total", 5120.0),
            ("cgroup_cpu_throttled_periods_total", 77.0),
            ("cgroup_cpu_throttled_seconds_total", 12.5),
            ("cgroup_cpu_usage_seconds_total", 3456.789),
        ];
        for (name, value) in expect {
            let got = metric(&r, name).unwrap_or_else(|| panic!("{name} missing: {r:?}"));
            assert!((got - value).abs() < 1e-6, "{name}: {got} != {value}");
        }
        // Nothing comes from the unified hierarchy: v1 has memory and cpu.
        assert_eq!(r.metrics.len(), expect.len(), "{r:?}");
        assert_eq!(r.identity.container_id.as_deref(), Some(id));
        assert_eq!(
            r.identity.pod_uid.as_deref(),
            Some("7c3b1a2e-5d4f-4e6a-8b9c-0d1e2f3a4b5c")
        );

        // The v1 root: no limit (the page counter's maximum), no quota (-1).
        let r = read(
            &layout,
            &parse_membership("5:memory:/\n3:cpu,cpuacct:/\n0::/\n"),
        );
        assert_eq!(metric(&r, "cgroup_memory_max_bytes"), None);
        assert_eq!(metric(&r, "cgroup_cpu_quota_cores"), None);
        assert_eq!(
            metric(&r, "cgroup_memory_current_bytes"),
            Some(4294967296.0)
        );
        assert_eq!(r.identity, Identity::default());
    }

    #[test]
    fn a_controller_without_a_v1_mount_comes_from_the_unified_hierarchy() {
        // The process names a v1 memory hierarchy the root does not have mounted.
        let root = fixtures().join("v2");
        let m = parse_membership(&format!("4:memory:/elsewhere\n0::{POD_V2}\n"));
        let r = read(&Layout::probe(&root), &m);
        assert_eq!(metric(&r, "cgroup_memory_max_bytes"), Some(536870912.0));
    }

    #[test]
    fn parses_membership() {
        let m = parse_membership(
            "12:pids:/user.slice\n4:memory:/a:b\n1:name=systemd:/init.scope\n0::/user.slice/x\n\
             garbage\nx:memory:/y\n3:cpu:relative\n",
        );
        assert_eq!(m.unified.as_deref(), Some("/user.slice/x"));
        assert_eq!(
            m.v1,
            [
                ("pids".to_string(), "/user.slice".to_string()),
                ("memory".to_string(), "/a:b".to_string()),
                ("name=systemd".to_string(), "/init.scope".to_string()),
            ]
        );
        assert_eq!(m.v1_path("memory"), Some("/a:b"));
        assert_eq!(m.v1_path("mem"), None);
        assert_eq!(parse_membership(""), Membership::default());
    }

    #[test]
    fn container_and_pod_ids_from_the_usual_layouts() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let uid = "4a1b2c3d-5e6f-4a8b-9c0d-1e2f3a4b5c6d";
        let uid_ = uid.replace('-', "_");
        for (path, container, pod) in [
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{id}.scope"
                ),
                true,
                true,
            ),
            (
                format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{id}.scope"),
                true,
                true,
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/docker-{id}.scope"
                ),
                true,
                true,
            ),
            (format!("/kubepods/burstable/pod{uid}/{id}"), true, true),
            (format!("/kubepods/pod{uid}/{id}"), true, true),
            (
                format!(
                    "/system.slice/containerd.service/kubepods-burstable-pod{uid_}.slice:cri-containerd:{id}"
                ),
                true,
                true,
            ),
            (format!("/docker/{id}"), true, false),
            (format!("/system.slice/docker-{id}.scope"), true, false),
            (
                format!("/machine.slice/libpod-{id}.scope/container"),
                true,
                false,
            ),
            (
                format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-conmon-{id}.scope"),
                false,
                true,
            ),
            (
                "/user.slice/user-1000.slice/session-2.scope".to_string(),
                false,
                false,
            ),
            ("/".to_string(), false, false),
            (format!("/docker/{}", &id[..63]), false, false),
            (format!("/kubepods/podnot-a-uid/{id}x"), false, false),
        ] {
            let found = identity_in(&path);
            assert_eq!(
                found.container_id.as_deref(),
                container.then_some(id),
                "{path}"
            );
            assert_eq!(found.pod_uid.as_deref(), pod.then_some(uid), "{path}");
        }
        // Upper-case hex is the same id.
        let upper = identity_in(&format!("/docker/{}", id.to_ascii_uppercase()));
        assert_eq!(upper.container_id.as_deref(), Some(id));
        let labels: Vec<_> = identity_in(&format!("/kubepods/pod{uid}/{id}"))
            .labels()
            .map(|(k, v)| (k, v.to_owned()))
            .collect();
        assert_eq!(
            labels,
            [("container_id", id.to_owned()), ("pod_uid", uid.to_owned())]
        );
        assert_eq!(Identity::default().labels().count(), 0);
    }

    #[test]
    fn parses_single_values_and_limits() {
        assert_eq!(parse_number("123\n"), Some(123));
        assert_eq!(parse_number("-1\n"), None);
        assert_eq!(parse_v2_limit("max\n"), Some(None));
        assert_eq!(parse_v2_limit("1048576\n"), Some(Some(1048576)));
        assert_eq!(parse_v2_limit("lots"), None);
        assert_eq!(parse_cpu_max("max 100000\n"), Some(None));
        assert_eq!(parse_cpu_max("250000 100000\n"), Some(Some(2.5)));
        assert_eq!(parse_cpu_max("250000 0\n"), None);
        assert_eq!(parse_cpu_max("250000\n"), None);
        assert_eq!(parse_cpu_max("1 2 3"), None);
        assert_eq!(keyed("a 1\nbb 2\nb 3\n", "b"), Some(3));
        assert_eq!(keyed("a x\n", "a"), None);
        assert_eq!(keyed("", "a"), None);
    }

    #[test]
    fn a_round_reads_each_cgroup_once_and_own_process_cgroups_read() {
        // A /proc with two processes in one cgroup and one in another.
        let proc_root = tempfile::tempdir().unwrap();
        for (pid, path) in [(1, POD_V2), (2, POD_V2), (3, "/no/such")] {
            let d = proc_root.path().join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cgroup"), format!("0::{path}\n")).unwrap();
        }
        let round = Round::new(&fixtures().join("v2"));
        let a = round.read(proc_root.path(), 1).unwrap();
        let b = round.read(proc_root.path(), 2).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!a.metrics.is_empty());
        assert!(round.read(proc_root.path(), 3).unwrap().metrics.is_empty());
        assert!(matches!(
            round.read(proc_root.path(), 4),
            Err(ProcError::Gone { pid: 4 })
        ));

        // This process, on this host: whatever is mounted, reading never fails.
        let own = Round::new(Path::new("/sys/fs/cgroup"))
            .read(Path::new("/proc"), std::process::id())
            .unwrap();
        assert!(
            own.metrics.iter().all(|(_, v)| v.is_finite() && *v >= 0.0),
            "{own:?}"
        );
    }
}
