//! The sampler: every interval, one [`Scrape`] of every Go process on the host.
//!
//! Targets are sampled concurrently (at most `limits.max_concurrent_scrapes` at once),
//! each request bounded by the scrape timeout, so a process
//! that hangs, answers garbage or exits costs its own sample and nothing else. The
//! runtime endpoints (expvar, pprof) are looked for among the ports the process listens
//! on, once, and again only after they stop answering.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;

use crate::config::CollectorConfig;
use crate::discovery::{Discovery, GoProcess};
use crate::model::{Coverage, Scrape, TargetMeta, TargetSample};
use crate::sources::http::{self, Read};
use crate::sources::proc::{self, ProcError};
use crate::sources::{Metrics, expvar, pprof};

/// Consecutive failed scrapes after which an endpoint is looked for again.
const MAX_ENDPOINT_FAILURES: u32 = 3;
/// Ports of one process probed at most.
const MAX_PROBED_PORTS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Endpoint {
    Unprobed,
    /// `addr` serves `/debug/vars` (`expvar`), `/debug/pprof/` (`pprof`) or both;
    /// `failures` counts consecutive scrapes in which neither answered.
    Found {
        addr: SocketAddr,
        serves: Serves,
        failures: u32,
    },
    Absent {
        since: Instant,
    },
}

/// Which runtime endpoints an address answered when probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Serves {
    expvar: bool,
    pprof: bool,
}

struct TargetState {
    meta: Arc<TargetMeta>,
    endpoint: Endpoint,
}

pub struct Sampler {
    config: Arc<CollectorConfig>,
    discovery: Discovery,
    targets: HashMap<(u32, u64), TargetState>,
    warned_max_targets: bool,
    /// The collector's own network namespace (None if unreadable: every process is
    /// then taken to share it).
    own_netns: Option<u64>,
}

/// What the collector needs of one network namespace to reach its processes: the
/// listening sockets, and (for a namespace other than its own) the addresses it has.
struct Namespace {
    listening: proc::ListeningSockets,
    foreign: bool,
    addrs: Vec<IpAddr>,
}

struct Outcome {
    metrics: Metrics,
    coverage: Coverage,
    endpoint: Endpoint,
    gone: bool,
}

impl Sampler {
    pub fn new(config: Arc<CollectorConfig>) -> Result<Sampler, ProcError> {
        let discovery = Discovery::new(&config.proc_root)?;
        let own_netns = std::fs::read_link("/proc/self/ns/net").ok().and_then(|l| {
            l.to_str()?
                .strip_prefix("net:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        });
        Ok(Sampler {
            config,
            discovery,
            targets: HashMap::new(),
            warned_max_targets: false,
            own_netns,
        })
    }

    /// Discovers and samples every Go process once.
    pub async fn sample(&mut self, timestamp_ms: i64) -> Result<Scrape, ProcError> {
        let mut scan = self.discovery.scan()?;
        let mut scrape = Scrape {
            timestamp_ms,
            ..Scrape::default()
        };
        for p in &scan.exited {
            if let Some(state) = self.targets.remove(&(p.pid, p.start_ticks)) {
                scrape.gone.push(state.meta);
            }
        }
        let max = self.config.limits.max_targets;
        if scan.running.len() > max {
            if !self.warned_max_targets {
                tracing::warn!(
                    found = scan.running.len(),
                    max,
                    "more go processes than limits.max_targets; sampling the first"
                );
                self.warned_max_targets = true;
            }
            scan.running.truncate(max);
        }

        let config = &self.config;
        // Listening sockets are looked up here, once per network namespace, before the
        // concurrent part: the kernel builds /proc/PID/net/tcp by walking every socket
        // of the namespace, which is slow with many processes and would hold the
        // runtime's one thread while other targets' request timers run.
        let mut namespaces: HashMap<u64, Arc<Namespace>> = HashMap::new();
        let own_netns = self.own_netns;
        let mut jobs = Vec::with_capacity(scan.running.len());
        for p in &scan.running {
            let state = self
                .targets
                .entry((p.pid, p.start_ticks))
                .or_insert_with(|| TargetState {
                    meta: Arc::new(initial_meta(p, config)),
                    endpoint: Endpoint::Unprobed,
                });
            let endpoint = state.endpoint;
            let probe_due = match endpoint {
                Endpoint::Unprobed => true,
                Endpoint::Absent { since } => since.elapsed() >= config.discovery.reprobe_interval,
                Endpoint::Found { .. } => false,
            };
            let candidates =
                probe_due.then(|| probe_candidates(config, p.pid, own_netns, &mut namespaces));
            let process = p.clone();
            jobs.push(async move {
                let outcome = sample_one(config, &process, endpoint, candidates).await;
                (process, outcome)
            });
        }
        let outcomes: Vec<(Arc<GoProcess>, Outcome)> = futures_util::stream::iter(jobs)
            .buffer_unordered(config.limits.max_concurrent_scrapes)
            .collect()
            .await;

        for (process, outcome) in outcomes {
            let key = (process.pid, process.start_ticks);
            if outcome.gone {
                if let Some(state) = self.targets.remove(&key) {
                    scrape.gone.push(state.meta);
                }
                continue;
            }
            let Some(state) = self.targets.get_mut(&key) else {
                continue;
            };
            state.endpoint = outcome.endpoint;
            if state.meta.coverage != outcome.coverage {
                let mut meta = (*state.meta).clone();
                meta.coverage = outcome.coverage;
                state.meta = Arc::new(meta);
            }
            scrape.samples.push(TargetSample {
                meta: state.meta.clone(),
                metrics: outcome.metrics,
            });
        }
        Ok(scrape)
    }
}

fn initial_meta(p: &GoProcess, config: &CollectorConfig) -> TargetMeta {
    let b = &p.build;
    let mut labels: Vec<(String, String)> = config
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (name, value) in [
        ("service", p.service()),
        ("version", b.version_label()),
        ("go_version", b.go_version.clone()),
        ("module", b.main_module.clone()),
        ("path", b.path.clone()),
    ] {
        if !value.is_empty() {
            labels.retain(|(k, _)| k != name);
            labels.push((name.to_owned(), value));
        }
    }
    TargetMeta {
        pid: p.pid,
        start_ticks: p.start_ticks,
        start_time_ms: p.start_time_ms,
        labels,
        coverage: Coverage {
            buildinfo: true,
            ..Coverage::default()
        },
    }
}

/// `candidates`: the addresses to probe for runtime endpoints, when a probe is due.
async fn sample_one(
    config: &CollectorConfig,
    p: &GoProcess,
    endpoint: Endpoint,
    candidates: Option<Vec<SocketAddr>>,
) -> Outcome {
    let mut out = Outcome {
        metrics: Metrics::with_capacity(32),
        coverage: Coverage {
            buildinfo: true,
            ..Coverage::default()
        },
        endpoint,
        gone: false,
    };
    match sample_proc(&config.proc_root, p.pid, &mut out.metrics) {
        Ok(()) => out.coverage.proc = true,
        Err(ProcError::Gone { .. }) => {
            out.gone = true;
            return out;
        }
        Err(e) => tracing::debug!(pid = p.pid, error = %e, "proc sample failed"),
    }

    if let Some(candidates) = candidates {
        out.endpoint = match probe(config, p.pid, &candidates).await {
            Some((addr, serves)) => {
                tracing::info!(pid = p.pid, %addr, expvar = serves.expvar, pprof = serves.pprof, "runtime endpoints found");
                Endpoint::Found {
                    addr,
                    serves,
                    failures: 0,
                }
            }
            None => Endpoint::Absent {
                since: Instant::now(),
            },
        };
    }
    if let Endpoint::Found {
        addr,
        serves,
        failures,
    } = out.endpoint
    {
        // Only what the probe found is scraped: a process without expvar costs no
        // request (and no warning) per interval.
        let (vars, goroutines) = tokio::join!(
            async {
                if serves.expvar {
                    Some(scrape_expvar(config, addr).await)
                } else {
                    None
                }
            },
            async {
                if serves.pprof {
                    Some(scrape_goroutines(config, addr).await)
                } else {
                    None
                }
            }
        );
        let vars_ok = match vars {
            Some(Ok(m)) => {
                out.metrics.extend(m);
                true
            }
            Some(Err(e)) => {
                if failures == 0 {
                    tracing::warn!(pid = p.pid, error = %e, "expvar sample failed");
                }
                false
            }
            None => false,
        };
        let goroutines_ok = match goroutines {
            Some(Ok(n)) => {
                out.metrics.push(("go_goroutines", n as f64));
                true
            }
            Some(Err(e)) => {
                if failures == 0 {
                    tracing::warn!(pid = p.pid, error = %e, "goroutine sample failed");
                }
                false
            }
            None => false,
        };
        out.coverage.expvar = vars_ok;
        out.coverage.pprof = goroutines_ok;
        out.coverage.debug_addr = addr.to_string();
        let all_ok = vars_ok == serves.expvar && goroutines_ok == serves.pprof;
        out.endpoint = if all_ok {
            Endpoint::Found {
                addr,
                serves,
                failures: 0,
            }
        } else if failures + 1 >= MAX_ENDPOINT_FAILURES {
            // Probe again: the process may have moved its endpoints or restarted them.
            Endpoint::Unprobed
        } else {
            Endpoint::Found {
                addr,
                serves,
                failures: failures + 1,
            }
        };
    }
    out
}

/// Reads the /proc vital signs of `pid` into `out`.
fn sample_proc(root: &Path, pid: u32, out: &mut Metrics) -> Result<(), ProcError> {
    let stat = proc::read_stat(root, pid)?;
    let status = proc::read_status(root, pid)?;
    let ticks = proc::clock_ticks_per_second().max(1) as f64;
    out.extend_from_slice(&[
        ("process_resident_memory_bytes", status.rss_bytes as f64),
        (
            "process_resident_memory_anon_bytes",
            status.rss_anon_bytes as f64,
        ),
        (
            "process_resident_memory_file_bytes",
            status.rss_file_bytes as f64,
        ),
        ("process_virtual_memory_bytes", stat.vsize_bytes as f64),
        ("process_threads", status.threads as f64),
        (
            "process_cpu_seconds_total",
            (stat.utime_ticks + stat.stime_ticks) as f64 / ticks,
        ),
        (
            "process_voluntary_context_switches_total",
            status.voluntary_ctxt_switches as f64,
        ),
        (
            "process_involuntary_context_switches_total",
            status.nonvoluntary_ctxt_switches as f64,
        ),
    ]);
    match proc::count_fds(root, pid) {
        Ok(n) => out.push(("process_open_fds", n as f64)),
        Err(ProcError::Gone { pid }) => return Err(ProcError::Gone { pid }),
        // Another user's process: fds need more privilege than the rest.
        Err(e) => tracing::debug!(pid, error = %e, "open fds unreadable"),
    }
    Ok(())
}

async fn scrape_expvar(config: &CollectorConfig, addr: SocketAddr) -> Result<Metrics, String> {
    let body = bounded(
        config,
        http::get(
            addr,
            expvar::PATH,
            config.limits.max_response_bytes,
            Read::All,
        ),
    )
    .await?;
    let mut m = Metrics::with_capacity(20);
    expvar::parse(&body, &mut m).map_err(|e| format!("{addr}: {e}"))?;
    Ok(m)
}

async fn scrape_goroutines(config: &CollectorConfig, addr: SocketAddr) -> Result<u64, String> {
    let line = bounded(
        config,
        http::get(addr, pprof::GOROUTINE_PATH, 256, Read::FirstLine),
    )
    .await?;
    pprof::parse_goroutine_total(&line).map_err(|e| format!("{addr}: {e}"))
}

async fn bounded<T>(
    config: &CollectorConfig,
    f: impl Future<Output = Result<T, http::HttpError>>,
) -> Result<T, String> {
    match tokio::time::timeout(config.limits.scrape_timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(config.limits.scrape_timeout)
        )),
    }
}

/// The addresses where `pid` may serve its runtime endpoints: the configured ports
/// first, then (if allowed) every other port it listens on. `namespaces` caches what
/// is read per network namespace for this round.
///
/// A process in another network namespace than the collector's (a pod beside a
/// host-network collector) is reached at its namespace's addresses when it listens on
/// a wildcard address; a listener on its loopback is out of the collector's reach.
fn probe_candidates(
    config: &CollectorConfig,
    pid: u32,
    own_netns: Option<u64>,
    namespaces: &mut HashMap<u64, Arc<Namespace>>,
) -> Vec<SocketAddr> {
    let wanted = &config.discovery.ports;
    let root = &config.proc_root;
    let found = (|| {
        let inodes = proc::socket_inodes(root, pid)?;
        if inodes.is_empty() {
            return Ok(None);
        }
        let netns = proc::net_namespace(root, pid)?;
        let ns = match namespaces.get(&netns) {
            Some(ns) => ns.clone(),
            None => {
                let foreign = own_netns.is_some_and(|own| own != netns);
                let ns = Arc::new(Namespace {
                    listening: proc::listening_sockets(root, pid)?,
                    foreign,
                    addrs: if foreign {
                        proc::namespace_addresses(root, pid)?
                    } else {
                        Vec::new()
                    },
                });
                namespaces.insert(netns, ns.clone());
                ns
            }
        };
        Ok::<_, ProcError>(Some((proc::owned_listeners(&inodes, &ns.listening), ns)))
    })();
    let mut candidates: Vec<SocketAddr> = match found {
        Ok(None) => Vec::new(),
        Ok(Some((listening, ns))) => {
            let mut addrs: Vec<SocketAddr> = Vec::new();
            for addr in listening {
                let reached = reachable(addr, &ns);
                if reached.is_empty() {
                    tracing::debug!(pid, %addr, "listens on loopback in another network namespace: out of reach");
                }
                addrs.extend(reached);
            }
            addrs.sort_by_key(|a| !wanted.contains(&a.port()));
            addrs.dedup();
            if !config.discovery.probe_listening {
                addrs.retain(|a| wanted.contains(&a.port()));
            }
            addrs
        }
        Err(e) => {
            tracing::debug!(pid, error = %e, "listening sockets unreadable; trying configured ports");
            wanted
                .iter()
                .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), *port))
                .collect()
        }
    };
    candidates.truncate(MAX_PROBED_PORTS);
    candidates
}

/// Finds the address serving `/debug/vars` or `/debug/pprof/` for `pid` among
/// `candidates`, and which of the two it serves.
async fn probe(
    config: &CollectorConfig,
    pid: u32,
    candidates: &[SocketAddr],
) -> Option<(SocketAddr, Serves)> {
    let mut last_error = None;
    for &addr in candidates {
        let (vars, goroutines) =
            tokio::join!(scrape_expvar(config, addr), scrape_goroutines(config, addr));
        let serves = Serves {
            expvar: vars.is_ok(),
            pprof: goroutines.is_ok(),
        };
        if serves.expvar || serves.pprof {
            return Some((addr, serves));
        }
        last_error = vars.err();
    }
    tracing::debug!(
        pid,
        ports = candidates.len(),
        last_error = last_error.as_deref().unwrap_or("no listening port"),
        "no runtime endpoints found"
    );
    None
}

/// The addresses to connect to for a listening socket. In the collector's own
/// namespace the wildcard addresses mean "every interface", of which loopback is the
/// one always there. In another namespace they mean that namespace's addresses (IPv4
/// only for 0.0.0.0; both families for `::`, which is dual-stack by default), and its
/// loopback cannot be reached at all.
fn reachable(addr: SocketAddr, ns: &Namespace) -> Vec<SocketAddr> {
    let ip = addr.ip();
    if !ns.foreign {
        let ip = if ip.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            ip
        };
        return vec![SocketAddr::new(ip, addr.port())];
    }
    if ip.is_loopback() {
        return Vec::new();
    }
    if !ip.is_unspecified() {
        return vec![addr];
    }
    ns.addrs
        .iter()
        .filter(|a| ip.is_ipv6() || a.is_ipv4())
        .map(|a| SocketAddr::new(*a, addr.port()))
        .collect()
}
