//! Discovery: which processes of this host are Go programs.
//!
//! A process is a Go program when its executable carries a `.go.buildinfo` section. The
//! verdict is cached per (pid, start time), so each process's executable is read once,
//! however long it runs; a reused pid has another start time and is examined again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::sources::buildinfo::{self, BuildInfo, BuildInfoError};
use crate::sources::proc::{self, ProcError};

/// What is known of one Go process for as long as it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct GoProcess {
    pub pid: u32,
    pub start_ticks: u64,
    pub start_time_ms: i64,
    /// The process name from `/proc/PID/stat` (at most 15 bytes).
    pub comm: String,
    pub build: BuildInfo,
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

/// The result of one scan.
#[derive(Debug, Default)]
pub struct Scan {
    /// Go processes running now, by pid.
    pub running: Vec<Arc<GoProcess>>,
    /// Go processes seen by the previous scan that have exited since.
    pub exited: Vec<Arc<GoProcess>>,
}

pub struct Discovery {
    root: PathBuf,
    own_pid: u32,
    boot_time_ms: i64,
    ticks_per_second: u64,
    known: HashMap<u32, (u64, Verdict)>,
}

impl Discovery {
    pub fn new(root: &Path) -> Result<Discovery, ProcError> {
        let boot_time_ms = proc::boot_time_secs(root)? as i64 * 1000;
        Ok(Discovery {
            root: root.to_owned(),
            own_pid: std::process::id(),
            boot_time_ms,
            ticks_per_second: proc::clock_ticks_per_second().max(1),
            known: HashMap::new(),
        })
    }

    /// Lists the Go processes now running. Processes that vanish mid-scan or whose files
    /// cannot be read are skipped; only a failure to list `/proc` itself is an error.
    pub fn scan(&mut self) -> Result<Scan, ProcError> {
        let pids = proc::list_pids(&self.root)?;
        let mut scan = Scan::default();
        let mut seen: HashMap<u32, u64> = HashMap::with_capacity(pids.len());
        for pid in pids {
            if pid == self.own_pid {
                continue;
            }
            let stat = match proc::read_stat(&self.root, pid) {
                Ok(stat) => stat,
                Err(ProcError::Gone { .. }) => continue,
                Err(e) => {
                    tracing::debug!(pid, error = %e, "skipping process");
                    continue;
                }
            };
            let start_ticks = stat.start_ticks;
            seen.insert(pid, start_ticks);
            let fresh = !matches!(self.known.get(&pid), Some((t, _)) if *t == start_ticks);
            if fresh {
                if let Some((_, Verdict::Go(old))) = self.known.remove(&pid) {
                    scan.exited.push(old);
                }
                let verdict = self.examine(pid, start_ticks, stat.comm);
                self.known.insert(pid, (start_ticks, verdict));
            }
            if let Some((_, Verdict::Go(p))) = self.known.get(&pid) {
                scan.running.push(p.clone());
            }
        }
        self.known.retain(|pid, (ticks, verdict)| {
            let alive = seen.get(pid) == Some(ticks);
            if !alive && let Verdict::Go(p) = verdict {
                scan.exited.push(p.clone());
            }
            alive
        });
        Ok(scan)
    }

    fn examine(&self, pid: u32, start_ticks: u64, comm: String) -> Verdict {
        let exe = self.root.join(pid.to_string()).join("exe");
        match buildinfo::read_build_info(&exe) {
            Ok(build) => {
                let start_time_ms = self.boot_time_ms
                    + (start_ticks.saturating_mul(1000) / self.ticks_per_second) as i64;
                let p = GoProcess {
                    pid,
                    start_ticks,
                    start_time_ms,
                    comm,
                    build,
                };
                tracing::info!(
                    pid,
                    service = %p.service(),
                    go_version = %p.build.go_version,
                    "found go process"
                );
                Verdict::Go(Arc::new(p))
            }
            Err(BuildInfoError::NotElf | BuildInfoError::NotGo) => Verdict::NotGo,
            Err(e @ (BuildInfoError::Malformed(_) | BuildInfoError::Unsupported(_))) => {
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
