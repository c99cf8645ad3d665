//! Discovery: which processes of this host are Go programs.
//!
//! A process is a Go program when its executable carries Go build info. The verdict is
//! kept per (pid, start time, executable's device and inode): a reused pid or an `exec`
//! (a shell entrypoint that execs the service, `tini`, `ip netns exec`) is examined
//! again, and nothing else is. Zombies are not programs. Every read of /proc or of an
//! executable runs off the runtime's thread under a deadline, see [`off_thread`].
//! Discovery may be kept to one network namespace
//! (`discovery.own_network_namespace`): the others' processes are not examined at all.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::sources::buildinfo::{self, BuildInfo, BuildInfoError};
use crate::sources::environ;
use crate::sources::proc::{self, ExeId, ProcError};

/// Items of work per batch in [`off_thread_batched`].
const BATCH_LEN: usize = 32;
/// Batches of [`off_thread_batched`] at once, each on a thread of tokio's blocking pool.
const BATCH_PARALLELISM: usize = 4;

/// What is known of one Go process for as long as it runs the same executable.
#[derive(Debug, Clone, PartialEq)]
pub struct GoProcess {
    pub pid: u32,
    pub start_ticks: u64,
    pub start_time_ms: i64,
    /// The process name from `/proc/PID/stat` (at most 15 bytes).
    pub comm: String,
    pub build: BuildInfo,
    /// The Go runtime settings of its environment ([`environ::RUNTIME_VARS`] only).
    pub runtime_env: Vec<(String, String)>,
}

impl GoProcess {
    /// The service name: from the build info's package path, else the process name.
    pub fn service(&self) -> String {
        let name = self.build.service_name();
        if name.is_empty() {
            self.comm.clone()
        } else {
            name
        }
    }
}

enum Verdict {
    NotGo,
    Go(Arc<GoProcess>),
}

struct Known {
    start_ticks: u64,
    /// `None` when the executable cannot be looked at (a kernel thread, another user's
    /// process): then it is not examined again either, until the pid is reused.
    exe: Option<ExeId>,
    verdict: Verdict,
}

/// The result of one scan.
#[derive(Debug, Default)]
pub struct Scan {
    /// Go processes running now.
    pub running: Vec<Arc<GoProcess>>,
    /// Go processes of earlier scans that are no longer: exited, zombies, or replaced by
    /// an `exec` (then `running` may hold the new program under the same pid and start
    /// time).
    pub exited: Vec<Arc<GoProcess>>,
}

/// One live process of the listing.
struct Listed {
    pid: u32,
    start_ticks: u64,
    comm: String,
}

/// What was judged of a process before: the executable's identity, if it was judged.
type Judged = Option<Option<ExeId>>;

/// What one examination found. Examinations are short-lived and one at a time per
/// process: the size of a full build does not matter here.
#[allow(clippy::large_enum_variant)]
enum Examined {
    /// The executable is the one already judged.
    Same,
    New {
        exe: Option<ExeId>,
        build: Result<BuildInfo, BuildInfoError>,
        /// The runtime settings, read for a Go program only.
        runtime_env: Vec<(String, String)>,
    },
}

pub struct Discovery {
    root: PathBuf,
    own_pid: u32,
    /// Only processes in this network namespace (the inode of /proc/PID/ns/net) are
    /// looked at, when set.
    net_namespace: Option<u64>,
    boot_time_ms: i64,
    ticks_per_second: u64,
    known: HashMap<u32, Known>,
    /// Examinations past their deadline, still running, by (pid, start ticks).
    held: Held<(u32, u64)>,
    /// A listing of /proc past its deadline, still running.
    listing: Option<AbortHandle>,
}

impl Discovery {
    pub fn new(root: &Path) -> Result<Discovery, ProcError> {
        let boot_time_ms = proc::boot_time_secs(root)? as i64 * 1000;
        Ok(Discovery {
            root: root.to_owned(),
            own_pid: std::process::id(),
            net_namespace: None,
            boot_time_ms,
            ticks_per_second: proc::clock_ticks_per_second().max(1),
            known: HashMap::new(),
            held: Held::default(),
            listing: None,
        })
    }

    /// Keeps discovery to the processes in network namespace `netns` (an inode, as
    /// [`proc::net_namespace`] reads it). Checked every scan: a process that moves to
    /// another namespace is gone from the targets, one that moves in is found.
    pub fn only_in_net_namespace(&mut self, netns: u64) {
        self.net_namespace = Some(netns);
    }

    /// Lists the Go processes now running. The listing of /proc must end by `deadline`;
    /// each process's examination by `per_process` too. A process whose examination is
    /// late keeps what was known of it (a Go process stays a target, sampled from /proc)
    /// and is examined again once the late read has ended. Processes that vanish
    /// mid-scan or whose files cannot be read are skipped; only a failure (or the
    /// lateness) of the listing itself is an error.
    pub async fn scan(
        &mut self,
        deadline: Instant,
        per_process: Duration,
    ) -> Result<Scan, ProcError> {
        let what = format!("list {}", self.root.display());
        let limit = deadline.saturating_duration_since(Instant::now());
        if let Some(listing) = &self.listing {
            if !listing.is_finished() {
                return Err(ProcError::Late {
                    what: format!("{what} (since an earlier round)"),
                    limit,
                });
            }
            self.listing = None;
        }
        let (root, own_pid, netns) = (self.root.clone(), self.own_pid, self.net_namespace);
        let listed = match off_thread(deadline, move || list_processes(&root, own_pid, netns)).await
        {
            OffThread::Done(listed) => listed?,
            OffThread::Late(handle) => {
                self.listing = Some(handle);
                return Err(ProcError::Late { what, limit });
            }
            OffThread::Failed(reason) => return Err(ProcError::Failed { what, reason }),
        };

        let live: HashSet<(u32, u64)> = listed.iter().map(|p| (p.pid, p.start_ticks)).collect();
        self.held.retain(|key| live.contains(key));
        let mut results: Vec<(Listed, Option<Examined>)> = Vec::with_capacity(listed.len());
        let mut pending = Vec::with_capacity(listed.len());
        for p in listed {
            let judged = self
                .known
                .get(&p.pid)
                .filter(|k| k.start_ticks == p.start_ticks)
                .map(|k| k.exe);
            if self.held.is_held(&(p.pid, p.start_ticks)) {
                results.push((p, None));
            } else {
                pending.push((p, judged));
            }
        }
        let root = self.root.clone();
        let batched = off_thread_batched(
            pending,
            |(p, judged)| (p.pid, *judged),
            move |(pid, judged)| examine(&root, pid, judged),
            deadline,
            per_process,
        )
        .await;
        for ((p, _), handle) in batched.stuck {
            tracing::warn!(pid = p.pid, limit = %humantime::format_duration(per_process), "executable unreadable in time; examined again once the read ends");
            self.held.hold((p.pid, p.start_ticks), handle);
            results.push((p, None));
        }
        results.extend(batched.done.into_iter().map(|((p, _), e)| (p, Some(e))));
        results.extend(batched.left.into_iter().map(|(p, _)| (p, None)));

        let mut scan = Scan::default();
        let mut seen: HashMap<u32, u64> = HashMap::with_capacity(results.len());
        for (p, result) in results {
            let same_process = self
                .known
                .get(&p.pid)
                .is_some_and(|k| k.start_ticks == p.start_ticks);
            match result {
                Some(Examined::Same) => {}
                Some(Examined::New {
                    exe,
                    build,
                    runtime_env,
                }) => {
                    if let Some(Known {
                        verdict: Verdict::Go(old),
                        ..
                    }) = self.known.remove(&p.pid)
                    {
                        tracing::info!(pid = p.pid, service = %goroscope_daemon::escape::peer(&old.service()), "go process exited or replaced by exec");
                        scan.exited.push(old);
                    }
                    let verdict = self.verdict(&p, build, runtime_env);
                    self.known.insert(
                        p.pid,
                        Known {
                            start_ticks: p.start_ticks,
                            exe,
                            verdict,
                        },
                    );
                }
                // Not examined this round (held, late, or out of time): what is known
                // of the same process still holds; a new process waits.
                None if same_process => {}
                None => continue,
            }
            seen.insert(p.pid, p.start_ticks);
            if let Some(Known {
                verdict: Verdict::Go(go),
                ..
            }) = self.known.get(&p.pid)
            {
                scan.running.push(go.clone());
            }
        }
        self.known.retain(|pid, known| {
            let alive = seen.get(pid) == Some(&known.start_ticks);
            if !alive && let Verdict::Go(p) = &known.verdict {
                scan.exited.push(p.clone());
            }
            alive
        });
        Ok(scan)
    }

    fn verdict(
        &self,
        p: &Listed,
        build: Result<BuildInfo, BuildInfoError>,
        runtime_env: Vec<(String, String)>,
    ) -> Verdict {
        let pid = p.pid;
        match build {
            Ok(build) => {
                let start_time_ms = self.boot_time_ms
                    + (p.start_ticks.saturating_mul(1000) / self.ticks_per_second) as i64;
                let p = GoProcess {
                    pid,
                    start_ticks: p.start_ticks,
                    start_time_ms,
                    comm: p.comm.clone(),
                    build,
                    runtime_env,
                };
                tracing::info!(
                    pid,
                    service = %goroscope_daemon::escape::peer(&p.service()),
                    go_version = %goroscope_daemon::escape::peer(&p.build.go_version),
                    "found go process"
                );
                Verdict::Go(Arc::new(p))
            }
            Err(BuildInfoError::NotElf | BuildInfoError::NotGo) => Verdict::NotGo,
            Err(e @ BuildInfoError::Malformed(_)) => {
                tracing::warn!(pid, error = %e, "go process with unreadable build info is not sampled");
                Verdict::NotGo
            }
            // Kernel threads have no executable; others may be unreadable to us.
            Err(e @ BuildInfoError::Io { .. }) => {
                tracing::debug!(pid, error = %e, "cannot read executable");
                Verdict::NotGo
            }
        }
    }
}

/// The live processes of `root` but the collector itself, in network namespace `netns`
/// if given. Zombies are left out: they have exited, and their /proc files no longer
/// describe a program.
fn list_processes(root: &Path, own_pid: u32, netns: Option<u64>) -> Result<Vec<Listed>, ProcError> {
    let pids = proc::list_pids(root)?;
    let mut listed = Vec::with_capacity(pids.len());
    for pid in pids {
        if pid == own_pid {
            continue;
        }
        // One readlink per process: a process of another namespace costs no more.
        if let Some(netns) = netns {
            match proc::net_namespace(root, pid) {
                Ok(ns) if ns == netns => {}
                Ok(_) | Err(ProcError::Gone { .. }) => continue,
                // Every round for each such process (another user's, to a collector
                // without CAP_SYS_PTRACE): below debug.
                Err(e) => {
                    tracing::trace!(pid, error = %e, "network namespace unreadable; not watched");
                    continue;
                }
            }
        }
        match proc::read_stat(root, pid) {
            Ok(stat) if stat.is_dead() => {}
            Ok(stat) => listed.push(Listed {
                pid,
                start_ticks: stat.start_ticks,
                comm: stat.comm,
            }),
            Err(ProcError::Gone { .. }) => {}
            Err(e) => tracing::debug!(pid, error = %e, "skipping process"),
        }
    }
    Ok(listed)
}

/// Looks at what `pid` runs now; reads its build info unless it is the executable
/// `judged` already (a `stat`, the common case).
fn examine(root: &Path, pid: u32, judged: Judged) -> Examined {
    let path = root.join(pid.to_string()).join("exe");
    let now = proc::exe_identity(root, pid).ok();
    if judged == Some(now) {
        return Examined::Same;
    }
    // The identity recorded is that of the file read, taken from the open file: an exec
    // between the stat above and the open below is then seen next round.
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(source) => {
            return Examined::New {
                exe: now,
                build: Err(BuildInfoError::Io { path, source }),
                runtime_env: Vec::new(),
            };
        }
    };
    let exe = file.metadata().ok().map(|m| ExeId::of(&m));
    let build = buildinfo::read_build_info_from(&file, &path);
    // Read with the executable: the environment changes only with it, by `exec`. The
    // kernel fills a new environment in moments after the exe link changes, long
    // before the build info above has been read.
    let runtime_env = match &build {
        Ok(_) => environ::read(root, pid).unwrap_or_else(|e| {
            tracing::debug!(pid, error = %e, "runtime settings unreadable");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    };
    Examined::New {
        exe,
        build,
        runtime_env,
    }
}

/// How blocking work sent off the runtime's thread ended.
pub(crate) enum OffThread<T> {
    Done(T),
    /// Past its deadline and still running; its handle tells when it ends.
    Late(AbortHandle),
    /// It panicked, or was not run; the reason may be empty when nothing went wrong
    /// but the work was skipped.
    Failed(String),
}

/// Runs `f` on tokio's blocking pool and waits for it until `deadline`. Work past its
/// deadline is not cancelled (a thread in a read of a hung FUSE or NFS file cannot be)
/// but reported [`OffThread::Late`]; the caller holds it in a [`Held`] so that nothing
/// more is started for the same key until it ends: one hung file costs one thread, not
/// one per round, and the runtime's thread is never the one waiting.
pub(crate) async fn off_thread<T: Send + 'static>(
    deadline: Instant,
    f: impl FnOnce() -> T + Send + 'static,
) -> OffThread<T> {
    let mut handle = tokio::task::spawn_blocking(f);
    match tokio::time::timeout_at(deadline, &mut handle).await {
        Ok(Ok(v)) => OffThread::Done(v),
        Ok(Err(e)) => OffThread::Failed(e.to_string()),
        Err(_) => OffThread::Late(handle.abort_handle()),
    }
}

/// What [`off_thread_batched`] did with its items.
pub(crate) struct Batched<I, O> {
    pub(crate) done: Vec<(I, O)>,
    /// The item each late batch is stuck on, with the batch's handle to hold.
    pub(crate) stuck: Vec<(I, AbortHandle)>,
    /// Items not done: after a stuck one in a batch stuck twice, or not started before
    /// the deadline.
    pub(crate) left: Vec<I>,
}

/// What a batch has done so far; `abandoned` once nobody waits for it any more.
struct Progress<O> {
    done: Vec<O>,
    abandoned: bool,
}

/// Runs `f` over `items` on tokio's blocking pool, in batches: most of this work is a
/// few reads of /proc, and a batch costs one thread hand-off rather than one per item.
/// Each batch must end within `per_batch` and all by `deadline`. A late batch is
/// stuck on one item, which is handed back with the batch's handle (for a [`Held`]);
/// the items it finished count, and those after the stuck one get one more pass, so
/// that one hung read delays no other item (unless a second one hangs in the same
/// batch).
pub(crate) async fn off_thread_batched<I, W, O>(
    items: Vec<I>,
    work: impl Fn(&I) -> W,
    f: impl Fn(W) -> O + Send + Sync + 'static,
    deadline: Instant,
    per_batch: Duration,
) -> Batched<I, O>
where
    W: Send + 'static,
    O: Send + 'static,
{
    let f = Arc::new(f);
    let mut out = Batched {
        done: Vec::with_capacity(items.len()),
        stuck: Vec::new(),
        left: Vec::new(),
    };
    let mut pending = items;
    for pass in 0..2 {
        let mut batches = Vec::with_capacity(pending.len() / BATCH_LEN + 1);
        let mut rest = pending.into_iter().peekable();
        while rest.peek().is_some() {
            batches.push(rest.by_ref().take(BATCH_LEN).collect::<Vec<I>>());
        }
        let runs: Vec<_> = futures_util::stream::iter(batches)
            .map(|batch| {
                let f = f.clone();
                let work: Vec<W> = batch.iter().map(&work).collect();
                async move {
                    let progress = Arc::new(Mutex::new(Progress {
                        done: Vec::with_capacity(work.len()),
                        abandoned: false,
                    }));
                    let now = Instant::now();
                    if now >= deadline {
                        return (batch, OffThread::Failed(String::new()), progress);
                    }
                    let to = progress.clone();
                    let until = deadline.min(now + per_batch);
                    let ended = off_thread(until, move || {
                        for w in work {
                            let o = f(w);
                            let mut to = to.lock().unwrap_or_else(PoisonError::into_inner);
                            if to.abandoned {
                                return;
                            }
                            to.done.push(o);
                        }
                    })
                    .await;
                    (batch, ended, progress)
                }
            })
            .buffer_unordered(BATCH_PARALLELISM)
            .collect()
            .await;

        let mut again = Vec::new();
        for (batch, ended, progress) in runs {
            let done = {
                let mut progress = progress.lock().unwrap_or_else(PoisonError::into_inner);
                progress.abandoned = true;
                std::mem::take(&mut progress.done)
            };
            let finished = done.len();
            let mut batch = batch.into_iter();
            out.done.extend(batch.by_ref().take(finished).zip(done));
            match ended {
                OffThread::Late(handle) => {
                    if let Some(item) = batch.next() {
                        out.stuck.push((item, handle));
                    }
                }
                OffThread::Failed(reason) if !reason.is_empty() => {
                    tracing::warn!(%reason, finished, "work off the runtime's thread failed");
                }
                _ => {}
            }
            again.extend(batch);
        }
        pending = again;
        if pending.is_empty() || pass == 1 {
            break;
        }
    }
    out.left = pending;
    out
}

/// Work past its deadline that is still running, by key.
pub(crate) struct Held<K> {
    running: HashMap<K, AbortHandle>,
}

impl<K> Default for Held<K> {
    fn default() -> Self {
        Held {
            running: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> Held<K> {
    /// Whether work for `key` is still running; forgets it once it has ended.
    pub(crate) fn is_held(&mut self, key: &K) -> bool {
        match self.running.get(key) {
            Some(h) if h.is_finished() => {
                self.running.remove(key);
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    pub(crate) fn hold(&mut self, key: K, handle: AbortHandle) {
        self.running.insert(key, handle);
    }

    /// Forgets the keys `keep` refuses (their process has exited: nothing more will be
    /// started for them anyway) and the work that has ended.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.running.retain(|k, h| keep(k) && !h.is_finished());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::os::unix::fs::symlink;
    use std::sync::OnceLock;

    /// A Go program built once for the tests of this crate.
    pub(crate) fn go_binary() -> &'static Path {
        static EXE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
        let (_, exe) = EXE.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let exe = crate::sources::buildinfo::tests::build_go(
                dir.path(),
                "example.test/svc",
                "package main\n\nfunc main() {}\n",
                &[],
            );
            (dir, exe)
        });
        exe
    }

    /// A /proc of our own making: `stat`, `status`, `fd` and `exe` links to real files.
    pub(crate) struct FakeProc {
        dir: tempfile::TempDir,
    }

    impl FakeProc {
        pub(crate) fn new() -> FakeProc {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("stat"), "cpu 1 2 3\nbtime 1700000000\n").unwrap();
            FakeProc { dir }
        }

        pub(crate) fn root(&self) -> &Path {
            self.dir.path()
        }

        /// Process `pid`, started at `start` ticks, in `state`, running `exe`.
        pub(crate) fn set(&self, pid: u32, start: u64, state: char, exe: &Path) {
            let d = self.dir.path().join(pid.to_string());
            std::fs::create_dir_all(d.join("fd")).unwrap();
            std::fs::write(
                d.join("stat"),
                format!("{pid} (svc) {state} 1 1 1 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 {start} 6 7\n"),
            )
            .unwrap();
            std::fs::write(
                d.join("status"),
                "Name:\tsvc\nVmRSS:\t  1024 kB\nThreads:\t3\n\
                 voluntary_ctxt_switches:\t1\nnonvoluntary_ctxt_switches:\t2\n",
            )
            .unwrap();
            let link = d.join("exe");
            let _ = std::fs::remove_file(&link);
            symlink(exe, link).unwrap();
        }

        /// Listening sockets, one per process: each gets the socket in its fds, and
        /// every process the whole table of namespace `netns` (which they all share).
        pub(crate) fn listen(&self, netns: u64, sockets: &[(u32, SocketAddr)]) {
            let mut table = String::from(
                "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n",
            );
            for (i, (pid, addr)) in sockets.iter().enumerate() {
                let SocketAddr::V4(v4) = addr else {
                    panic!("IPv4 only: {addr}");
                };
                let hex = u32::from_ne_bytes(v4.ip().octets());
                let inode = 70_000 + i;
                table.push_str(&format!(
                    "   {i}: {hex:08X}:{:04X} 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 {inode} 1 0000000000000000 100 0 0 10 0\n",
                    v4.port()
                ));
                let fd = self.dir.path().join(format!("{pid}/fd/{}", 3 + i));
                symlink(format!("socket:[{inode}]"), fd).unwrap();
            }
            for (pid, _) in sockets {
                let d = self.dir.path().join(pid.to_string());
                std::fs::create_dir_all(d.join("net")).unwrap();
                std::fs::write(d.join("net/tcp"), &table).unwrap();
                self.set_netns(*pid, netns);
            }
        }

        /// Puts process `pid` in network namespace `netns` (its `ns/net` link).
        pub(crate) fn set_netns(&self, pid: u32, netns: u64) {
            let d = self.dir.path().join(format!("{pid}/ns"));
            std::fs::create_dir_all(&d).unwrap();
            let _ = std::fs::remove_file(d.join("net"));
            symlink(format!("net:[{netns}]"), d.join("net")).unwrap();
        }

        pub(crate) fn remove(&self, pid: u32) {
            std::fs::remove_dir_all(self.dir.path().join(pid.to_string())).unwrap();
        }
    }

    async fn scan(d: &mut Discovery) -> Scan {
        let deadline = Instant::now() + Duration::from_secs(30);
        d.scan(deadline, Duration::from_secs(30)).await.unwrap()
    }

    fn pids(ps: &[Arc<GoProcess>]) -> Vec<u32> {
        let mut pids: Vec<u32> = ps.iter().map(|p| p.pid).collect();
        pids.sort();
        pids
    }

    #[tokio::test]
    async fn a_shell_that_execs_into_go_is_found_and_a_go_program_that_execs_away_is_gone() {
        let fake = FakeProc::new();
        fake.set(10, 500, 'S', Path::new("/bin/sh"));
        fake.set(11, 600, 'S', go_binary());
        let mut d = Discovery::new(fake.root()).unwrap();
        let s = scan(&mut d).await;
        assert_eq!((pids(&s.running), pids(&s.exited)), (vec![11], vec![]));

        // Same pid, same start time, another executable: `exec` both ways.
        fake.set(10, 500, 'S', go_binary());
        fake.set(11, 600, 'S', Path::new("/bin/sh"));
        let s = scan(&mut d).await;
        assert_eq!((pids(&s.running), pids(&s.exited)), (vec![10], vec![11]));
        assert_eq!(s.running[0].service(), "svc");
        assert_eq!(s.running[0].start_ticks, 500);

        // Nothing changed: nothing is reported again.
        let s = scan(&mut d).await;
        assert_eq!((pids(&s.running), pids(&s.exited)), (vec![10], vec![]));
    }

    #[tokio::test]
    async fn zombies_are_not_targets() {
        let fake = FakeProc::new();
        fake.set(20, 700, 'S', go_binary());
        fake.set(21, 800, 'Z', go_binary());
        let mut d = Discovery::new(fake.root()).unwrap();
        let s = scan(&mut d).await;
        assert_eq!((pids(&s.running), pids(&s.exited)), (vec![20], vec![]));

        // A target that dies and is not reaped is gone, once.
        fake.set(20, 700, 'Z', go_binary());
        let s = scan(&mut d).await;
        assert_eq!((pids(&s.running), pids(&s.exited)), (vec![], vec![20]));
        fake.set(20, 700, 'X', go_binary());
        let s = scan(&mut d).await;
        assert_eq!((pids(&s.running), pids(&s.exited)), (vec![], vec![]));
    }

    #[tokio::test]
    async fn kept_to_one_network_namespace_it_finds_only_that_namespace_s_processes() {
        const OURS: u64 = 4_026_531_840;
        const THEIRS: u64 = 4_026_532_999;
        let fake = FakeProc::new();
        for pid in [60, 61, 62] {
            fake.set(pid, 100, 'S', go_binary());
        }
        fake.set_netns(60, OURS);
        fake.set_netns(61, THEIRS);
        // 62 has no namespace link: it cannot be told to be ours.
        let mut everywhere = Discovery::new(fake.root()).unwrap();
        assert_eq!(pids(&scan(&mut everywhere).await.running), [60, 61, 62]);

        let mut d = Discovery::new(fake.root()).unwrap();
        d.only_in_net_namespace(OURS);
        let s = scan(&mut d).await;
        assert_eq!((pids(&s.running), pids(&s.exited)), (vec![60], vec![]));

        // A process that changes namespace is found, or gone, at the next scan.
        fake.set_netns(60, THEIRS);
        fake.set_netns(61, OURS);
        let s = scan(&mut d).await;
        assert_eq!((pids(&s.running), pids(&s.exited)), (vec![61], vec![60]));
    }

    #[tokio::test]
    async fn a_reused_pid_is_another_process() {
        let fake = FakeProc::new();
        fake.set(30, 900, 'S', go_binary());
        let mut d = Discovery::new(fake.root()).unwrap();
        let first = scan(&mut d).await.running;
        fake.set(30, 950, 'S', go_binary());
        let s = scan(&mut d).await;
        assert_eq!((pids(&s.running), pids(&s.exited)), (vec![30], vec![30]));
        assert_eq!(s.exited[0], first[0]);
        assert_eq!(s.running[0].start_ticks, 950);
        fake.remove(30);
        let s = scan(&mut d).await;
        assert_eq!((pids(&s.running), pids(&s.exited)), (vec![], vec![30]));
    }

    /// A FIFO stands in for a binary on a hung FUSE or NFS mount: `stat` answers, `open`
    /// blocks until a writer comes.
    #[tokio::test]
    async fn an_executable_that_hangs_costs_only_its_own_process() {
        let fake = FakeProc::new();
        let fifo = fake.root().join("hung-exe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // The hung one among others, wherever the listing puts it in its batch.
        let healthy: Vec<u32> = (40..50).filter(|p| *p != 45).collect();
        for pid in &healthy {
            fake.set(*pid, 100, 'S', go_binary());
        }
        fake.set(45, 100, 'S', &fifo);
        let mut d = Discovery::new(fake.root()).unwrap();

        let per_process = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let s = d
            .scan(Instant::now() + Duration::from_secs(20), per_process)
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(pids(&s.running), healthy);
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(d.held.is_held(&(45, 100)));

        // While the read hangs, the next rounds do not start another one for it.
        for _ in 0..3 {
            let started = std::time::Instant::now();
            let s = d
                .scan(Instant::now() + Duration::from_secs(20), per_process)
                .await
                .unwrap();
            assert_eq!(pids(&s.running), healthy);
            assert!(started.elapsed() < per_process, "{:?}", started.elapsed());
        }
        assert!(d.held.is_held(&(45, 100)));

        // The mount comes back: the read ends, and the process is examined again.
        let writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        drop(writer);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!d.held.is_held(&(45, 100)));
        fake.set(45, 100, 'S', go_binary());
        let s = scan(&mut d).await;
        assert_eq!(pids(&s.running), (40..50).collect::<Vec<u32>>());
    }

    #[tokio::test]
    async fn blocking_work_past_its_deadline_is_late_and_held() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let started = std::time::Instant::now();
        let r = off_thread(Instant::now() + Duration::from_millis(100), move || {
            let _ = rx.recv();
            7
        })
        .await;
        assert!(started.elapsed() < Duration::from_secs(2));
        let OffThread::Late(handle) = r else {
            panic!("expected the work to be late");
        };
        let mut held = Held::default();
        held.hold(1u32, handle);
        assert!(held.is_held(&1));
        // Other work goes on meanwhile.
        let r = off_thread(Instant::now() + Duration::from_secs(5), || 8).await;
        assert!(matches!(r, OffThread::Done(8)));
        tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!held.is_held(&1));

        let r = off_thread(Instant::now() + Duration::from_secs(5), || -> u8 {
            panic!("boom")
        })
        .await;
        assert!(matches!(r, OffThread::Failed(reason) if reason.contains("panic")));
    }

    #[tokio::test]
    async fn a_batch_stuck_on_one_item_costs_only_that_item() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Mutex::new(rx);
        let started = std::time::Instant::now();
        let b = off_thread_batched(
            (0..100u32).collect(),
            |i| *i,
            move |i| {
                if i == 37 {
                    let _ = rx.lock().unwrap().recv();
                }
                i * 2
            },
            Instant::now() + Duration::from_secs(10),
            Duration::from_millis(200),
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(b.stuck.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [37]);
        let mut done: Vec<u32> = b
            .done
            .iter()
            .map(|(i, o)| {
                assert_eq!(*o, i * 2);
                *i
            })
            .collect();
        done.sort();
        assert_eq!(done, (0..100).filter(|i| *i != 37).collect::<Vec<_>>());
        assert!(b.left.is_empty());
        tx.send(()).unwrap();

        // Past the round's deadline nothing starts.
        let b = off_thread_batched(
            vec![1u32, 2],
            |i| *i,
            |i| i,
            Instant::now(),
            Duration::from_secs(1),
        )
        .await;
        assert!(b.done.is_empty() && b.stuck.is_empty());
        assert_eq!(b.left, [1, 2]);
    }
}
