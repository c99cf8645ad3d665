//! The sampler: every interval, one [`Scrape`] of every Go process on the host.
//!
//! A round lasts at most three quarters of the interval (and at most the scrape
//! timeout), so that the next one starts on time. /proc is read off the runtime's
//! thread, each target under its own deadline. Each target's endpoint work (looking for
//! expvar, pprof and `/metrics` among the ports it listens on, then scraping what
//! answered) is a task of its own, at most `limits.max_concurrent_scrapes` at once.
//! What is not done when the round ends costs that target and nothing else: endpoint
//! work goes on in the background, its answer comes with the target's next sample, and
//! nothing more is started for that target until it has ended.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{CollectorConfig, MAX_PROBED_PORTS};
use crate::discovery::{Discovery, GoProcess, Held, OffThread, off_thread, off_thread_batched};
use crate::model::{Coverage, Labeled, Scrape, TargetMeta, TargetSample};
use crate::sources::cgroup::{self, Identity};
use crate::sources::http::{self, Read};
use crate::sources::proc::{self, ProcError};
use crate::sources::prometheus::{self, SeriesCache};
use crate::sources::{Metrics, expvar, pprof, stacks as stack_text};
use crate::stacks::{self, StackPlan, Step};
use goroscope_proto::v1;

/// Consecutive failed scrapes after which an endpoint is looked for again.
const MAX_ENDPOINT_FAILURES: u32 = 3;
/// Stack reads running at once across the host's targets.
const MAX_STACK_READS: usize = 4;
/// Candidate ports of one process probed at once.
const PROBE_PARALLELISM: usize = 8;
/// The first wait before probing again a process that served nothing; it doubles after
/// each probe that finds nothing, up to `discovery.reprobe_interval`.
const FIRST_REPROBE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Endpoint {
    Unprobed,
    /// `addr` serves `/debug/vars` (`expvar`), `/debug/pprof/` (`pprof`), `/metrics`
    /// (`metrics`) or several;
    /// `failures` counts consecutive scrapes in which not all of it answered.
    Found {
        addr: SocketAddr,
        serves: Serves,
        failures: u32,
    },
    /// The probe that ended at `since` found nothing, after `attempts` earlier ones that
    /// found nothing either.
    Absent {
        since: Instant,
        attempts: u32,
    },
}

/// Which runtime endpoints an address answered when probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Serves {
    expvar: bool,
    pprof: bool,
    metrics: bool,
}

struct TargetState {
    meta: Arc<TargetMeta>,
    endpoint: Endpoint,
    /// When to read its goroutine stacks.
    stacks: Arc<Mutex<StackPlan>>,
    /// Stack reads started in an earlier round, apart from the endpoint work so that a
    /// slow profile never holds back the target's sample; their summaries go with the
    /// first sample after they end.
    stack_task: Option<StackTask>,
    /// Endpoint work of an earlier round that has not ended yet.
    running: Option<EndpointTask>,
    /// The target's `/metrics` series, interned; with the endpoint task while it runs.
    series_cache: Option<SeriesCache>,
}

/// A target's endpoint task; aborted when the target goes.
struct EndpointTask(JoinHandle<EndpointOutcome>);

impl Drop for EndpointTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A target's stack reads; aborted when the target goes.
struct StackTask(JoinHandle<Vec<v1::StackSummary>>);

impl Drop for StackTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What every endpoint task needs.
struct Shared {
    config: Arc<CollectorConfig>,
    /// The collector's own network namespace (None if unreadable: every process is
    /// then taken to share it).
    own_netns: Option<u64>,
    /// Endpoint tasks running at once, across rounds.
    slots: Semaphore,
    /// Stack reads running at once, across targets: apart from the endpoint slots, so
    /// that slow profiles never hold back a target's sample.
    stack_slots: Semaphore,
}

pub struct Sampler {
    shared: Arc<Shared>,
    discovery: Discovery,
    targets: HashMap<(u32, u64), TargetState>,
    warned_max_targets: bool,
    /// /proc reads past their deadline, still running, by target.
    held_proc: Held<(u32, u64)>,
    /// This node's pods, when `[kubernetes]` is on: a target's pod names it.
    pods: Option<crate::kube::PodIndex>,
    /// Rounds sampled so far.
    rounds: u64,
}

/// `/proc/PID/smaps_rollup` is read every this many samples of a target: the kernel
/// builds it by walking every page table of the process, the largest single cost of a
/// sample (measured: 29% of the collector's CPU when read every sample).
const SMAPS_EVERY: u64 = 6;

/// What the collector needs of one network namespace to reach its processes: the
/// listening sockets, and (for a namespace other than its own) the addresses it has.
struct Namespace {
    listening: proc::ListeningSockets,
    foreign: bool,
    addrs: Vec<IpAddr>,
}

/// The namespaces read in one round, shared by that round's probes. The kernel builds
/// /proc/PID/net/tcp by walking every socket of the namespace, which is slow with many
/// processes: each namespace is read once per round, whichever probe needs it first.
#[derive(Default)]
struct Namespaces {
    by_inode: Mutex<HashMap<u64, Arc<NamespaceSlot>>>,
}

/// One namespace of [`Namespaces`], `None` until read.
type NamespaceSlot = Mutex<Option<Arc<Namespace>>>;

impl Namespaces {
    /// Blocks while another probe loads the same namespace.
    fn get_or_load(
        &self,
        netns: u64,
        load: impl FnOnce() -> Result<Namespace, ProcError>,
    ) -> Result<Arc<Namespace>, ProcError> {
        let slot = self
            .by_inode
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(netns)
            .or_default()
            .clone();
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ns) = &*slot {
            return Ok(ns.clone());
        }
        // A failure is not kept: it concerns the process read through, and another
        // process of the namespace may be readable.
        let ns = Arc::new(load()?);
        *slot = Some(ns.clone());
        Ok(ns)
    }
}

/// What the off-thread read of a target's /proc files and cgroups gave.
struct ProcSample {
    /// /proc and cgroup metrics.
    metrics: Metrics,
    /// The cgroups' reading, `None` if they could not be read.
    cgroup: Option<Arc<cgroup::Reading>>,
}

type ProcResult = Result<ProcSample, ProcError>;

/// How a target's endpoint work ended.
struct EndpointOutcome {
    endpoint: Endpoint,
    metrics: Metrics,
    expvar: bool,
    pprof: bool,
    /// What the pprof index said, when it answered.
    index: Option<pprof::Index>,
    /// `/metrics` answered: its series are in `series`.
    exposition: bool,
    series: Vec<Labeled>,
    series_cache: Option<SeriesCache>,
    addr: Option<SocketAddr>,
}

/// The answers of one address: `None` for what was not asked.
struct Scraped {
    vars: Option<Result<Metrics, String>>,
    goroutines: Option<Result<pprof::Index, String>>,
    exposition: Option<Result<Vec<Labeled>, String>>,
    /// The cache the exposition was read with (when it was asked for).
    series_cache: Option<SeriesCache>,
}

impl Scraped {
    fn serves(&self) -> Serves {
        Serves {
            expvar: matches!(self.vars, Some(Ok(_))),
            pprof: matches!(self.goroutines, Some(Ok(_))),
            // An empty answer (a catch-all handler) is not an exposition worth asking
            // for every interval.
            metrics: matches!(&self.exposition, Some(Ok(s)) if !s.is_empty()),
        }
    }
}

/// What the `/metrics` source needs of its target: who it is, and where its series are
/// interned.
struct ForSeries {
    meta: Arc<TargetMeta>,
    cache: SeriesCache,
}

impl Sampler {
    pub fn new(config: Arc<CollectorConfig>) -> Result<Sampler, ProcError> {
        let mut discovery = Discovery::new(&config.proc_root)?;
        let own_netns = proc::own_net_namespace();
        if config.discovery.own_network_namespace {
            // Without its own namespace the collector could not tell which processes
            // it may report: it stops rather than report them all.
            discovery.only_in_net_namespace(*own_netns.as_ref().map_err(|e| {
                ProcError::Failed {
                    what: "discovery.own_network_namespace".into(),
                    reason: e.to_string(),
                }
            })?);
        }
        let own_netns = own_netns.ok();
        let slots = Semaphore::new(config.limits.max_concurrent_scrapes);
        Ok(Sampler {
            shared: Arc::new(Shared {
                config,
                own_netns,
                slots,
                stack_slots: Semaphore::new(MAX_STACK_READS),
            }),
            discovery,
            targets: HashMap::new(),
            warned_max_targets: false,
            held_proc: Held::default(),
            pods: None,
            rounds: 0,
        })
    }

    /// Labels each target in a pod with the pod's name, namespace, container and its
    /// `service` and `version` labels, from `pods`.
    pub fn set_pods(&mut self, pods: crate::kube::PodIndex) {
        self.pods = Some(pods);
    }

    /// Discovers and samples every Go process once, within the round's time.
    pub async fn sample(&mut self, timestamp_ms: i64) -> Result<Scrape, ProcError> {
        let config = self.shared.config.clone();
        let deadline = Instant::now() + round_budget(&config);
        let per_target = config.limits.scrape_timeout;
        let mut scan = self.discovery.scan(deadline, per_target).await?;
        let mut scrape = Scrape {
            timestamp_ms,
            ..Scrape::default()
        };
        let running: HashSet<(u32, u64)> = scan
            .running
            .iter()
            .map(|p| (p.pid, p.start_ticks))
            .collect();
        for p in &scan.exited {
            let key = (p.pid, p.start_ticks);
            if let Some(state) = self.targets.remove(&key)
                // An exec into another Go program keeps the pid and the start time, so
                // the target: it is declared again with the new program's labels.
                && !running.contains(&key)
            {
                scrape.gone.push(state.meta);
            }
        }
        let max = config.limits.max_targets;
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

        // Endpoint work first, so that it runs while /proc is read.
        let namespaces = Arc::new(Namespaces::default());
        let mut tasks = Vec::with_capacity(scan.running.len());
        let mut late: HashMap<(u32, u64), EndpointOutcome> = HashMap::new();
        for p in &scan.running {
            let key = (p.pid, p.start_ticks);
            let state = self.targets.entry(key).or_insert_with(|| TargetState {
                meta: Arc::new(initial_meta(p, &config)),
                endpoint: Endpoint::Unprobed,
                stacks: Arc::default(),
                stack_task: None,
                running: None,
                series_cache: None,
            });
            if let Some(task) = &mut state.running {
                if !task.0.is_finished() {
                    continue;
                }
                // Ended since its round: its answer comes with this round's sample,
                // unless this round's own work answers in time.
                if let Ok(mut outcome) = (&mut task.0).await {
                    state.endpoint = outcome.endpoint;
                    state.series_cache = outcome.series_cache.take();
                    late.insert(key, outcome);
                }
                state.running = None;
            }
            let probe = match state.endpoint {
                Endpoint::Unprobed => true,
                Endpoint::Absent { since, attempts } => {
                    since.elapsed() >= reprobe_delay(attempts, config.discovery.reprobe_interval)
                }
                Endpoint::Found { .. } => false,
            };
            let mut cache = state
                .series_cache
                .take()
                .unwrap_or_else(|| SeriesCache::new(&state.meta.labels));
            cache.retarget(&state.meta.labels);
            let task = tokio::spawn(endpoint_work(
                self.shared.clone(),
                namespaces.clone(),
                p.pid,
                p.service(),
                state.endpoint,
                probe,
                ForSeries {
                    meta: state.meta.clone(),
                    cache,
                },
            ));
            tasks.push((key, task));
        }

        // `None`: not read in time this round.
        let mut procs: Vec<((u32, u64), Option<ProcResult>)> = Vec::new();
        let mut due = Vec::with_capacity(scan.running.len());
        for p in &scan.running {
            let key = (p.pid, p.start_ticks);
            if self.held_proc.is_held(&key) {
                procs.push((key, None));
            } else {
                due.push(key);
            }
        }
        let root = config.proc_root.clone();
        let cgroups = cgroup::Round::new(&config.cgroup_root);
        let round = self.rounds;
        self.rounds += 1;
        let batched = off_thread_batched(
            due,
            |key| key.0,
            // Each target's turn for smaps_rollup by its pid: spread over the rounds.
            move |pid| {
                let smaps = (round + u64::from(pid)).is_multiple_of(SMAPS_EVERY);
                sample_proc(&root, &cgroups, pid, smaps)
            },
            deadline,
            per_target,
        )
        .await;
        for (key, handle) in batched.stuck {
            tracing::warn!(
                pid = key.0,
                "proc sample unread in time; read again once the read ends"
            );
            self.held_proc.hold(key, handle);
            procs.push((key, None));
        }
        procs.extend(batched.done.into_iter().map(|(key, r)| (key, Some(r))));
        procs.extend(batched.left.into_iter().map(|key| (key, None)));

        let mut outcomes = late;
        for (key, mut task) in tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(outcome)) => {
                    outcomes.insert(key, outcome);
                }
                Ok(Err(e)) => tracing::warn!(pid = key.0, error = %e, "endpoint work failed"),
                Err(_) => {
                    if let Some(state) = self.targets.get_mut(&key) {
                        state.running = Some(EndpointTask(task));
                    }
                }
            }
        }

        for (key, proc_result) in procs {
            let mut coverage = Coverage {
                buildinfo: true,
                ..Coverage::default()
            };
            let mut stacks = Vec::new();
            let mut identity = None;
            let mut metrics = match proc_result {
                Some(Ok(sample)) => {
                    coverage.proc = true;
                    if let Some(reading) = sample.cgroup {
                        coverage.cgroup = !reading.metrics.is_empty();
                        identity = Some(reading.identity.clone());
                    }
                    sample.metrics
                }
                Some(Err(ProcError::Gone { .. })) => {
                    if let Some(state) = self.targets.remove(&key) {
                        scrape.gone.push(state.meta);
                    }
                    continue;
                }
                Some(Err(e)) => {
                    tracing::debug!(pid = key.0, error = %e, "proc sample failed");
                    Metrics::new()
                }
                // Not read in time this round.
                None => Metrics::new(),
            };
            let Some(state) = self.targets.get_mut(&key) else {
                continue;
            };
            if let Some(task) = &mut state.stack_task
                && task.0.is_finished()
            {
                stacks = (&mut task.0).await.unwrap_or_default();
                state.stack_task = None;
            }
            let mut series = Vec::new();
            if let Some(outcome) = outcomes.remove(&key) {
                state.endpoint = outcome.endpoint;
                if outcome.series_cache.is_some() {
                    state.series_cache = outcome.series_cache;
                }
                metrics.extend(outcome.metrics);
                coverage.expvar = outcome.expvar;
                coverage.pprof = outcome.pprof;
                coverage.goroutineleak = outcome.index.is_some_and(|i| i.leak_profile);
                coverage.debug_addr = outcome.addr.map(|a| a.to_string()).unwrap_or_default();
                if let (Some(index), Some(addr), None) =
                    (outcome.index, outcome.addr, &state.stack_task)
                    && config.stacks.enabled
                {
                    state.stack_task = Some(StackTask(tokio::spawn(read_stacks(
                        self.shared.clone(),
                        addr,
                        index,
                        state.stacks.clone(),
                    ))));
                }
                coverage.metrics = outcome.exposition;
                series = outcome.series;
                // What the collector reads itself (/proc, expvar, pprof) is the sample of
                // its catalogue's series; the exposition's copy would be a second value
                // of the same series at the same instant.
                series.retain(|(id, _)| {
                    !id.labels.is_empty() || !metrics.iter().any(|(n, _)| **n == *id.name)
                });
            }
            // A cgroup unread this round keeps the identity of the last one read.
            let mut labels = identity.and_then(|id| relabelled(&state.meta.labels, &id, key.0));
            if let Some(pods) = &self.pods {
                let base = labels.as_ref().unwrap_or(&state.meta.labels);
                if let Some(with_pod) = pod_labels(pods, base)
                    && with_pod != *base
                {
                    labels = Some(with_pod);
                }
            }
            if state.meta.coverage != coverage || labels.is_some() {
                let mut meta = (*state.meta).clone();
                meta.coverage = coverage;
                if let Some(labels) = labels {
                    meta.labels = labels;
                }
                state.meta = Arc::new(meta);
            }
            scrape.samples.push(TargetSample {
                meta: state.meta.clone(),
                metrics,
                stacks,
                series,
            });
        }
        let live = &self.targets;
        self.held_proc.retain(|key| live.contains_key(key));
        Ok(scrape)
    }
}

/// How long one round may take: three quarters of the interval, so that the next tick
/// finds the thread free, and at most the scrape timeout.
fn round_budget(config: &CollectorConfig) -> Duration {
    (config.interval * 3 / 4).min(config.limits.scrape_timeout)
}

/// The wait before probing again a process whose last probe found nothing, after
/// `attempts` earlier ones that found nothing either: 1s, 2s, 4s ... up to `cap`. A
/// process that starts listening a few seconds after it starts is found seconds later.
fn reprobe_delay(attempts: u32, cap: Duration) -> Duration {
    let factor = 1u32.checked_shl(attempts).unwrap_or(u32::MAX);
    FIRST_REPROBE.checked_mul(factor).unwrap_or(cap).min(cap)
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
            // A value from the binary may be longer than a label may be: cut, counted,
            // so that the aggregator does not refuse the whole target over it.
            let value = match goroscope_proto::rules::trim_label_value(&value) {
                std::borrow::Cow::Borrowed(_) => value,
                std::borrow::Cow::Owned(cut) => {
                    crate::model::LABELS_TRIMMED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(
                        pid = p.pid,
                        label = name,
                        bytes = value.len(),
                        "label value from the build info cut to 1024 bytes"
                    );
                    cut
                }
            };
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
        build: Some(Arc::new(b.to_wire())),
        runtime_env: p.runtime_env.clone(),
    }
}

/// `labels` with the container and pod of `identity` in place of those they have, or
/// `None` if that changes nothing (the common case: a process stays in its cgroup).
fn relabelled(
    labels: &[(String, String)],
    identity: &Identity,
    pid: u32,
) -> Option<Vec<(String, String)>> {
    let is_cgroup_label = |name: &str| crate::config::CGROUP_LABELS.contains(&name);
    let wanted: Vec<(&str, std::borrow::Cow<'_, str>)> = identity
        .labels()
        .map(|(name, value)| (name, goroscope_proto::rules::trim_label_value(value)))
        .collect();
    if labels
        .iter()
        .filter(|(k, _)| is_cgroup_label(k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .eq(wanted.iter().map(|(k, v)| (*k, v.as_ref())))
    {
        return None;
    }
    tracing::debug!(pid, container_id = ?identity.container_id, pod_uid = ?identity.pod_uid, "container and pod from the cgroup");
    let mut out: Vec<(String, String)> = labels
        .iter()
        .filter(|(k, _)| !is_cgroup_label(k))
        .cloned()
        .collect();
    out.extend(
        wanted
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_owned())),
    );
    Some(out)
}

/// `labels` with those of the target's pod (found by the cgroup's `pod_uid`, else its
/// `container_id`), or `None` if the index knows no such pod.
fn pod_labels(
    pods: &crate::kube::PodIndex,
    labels: &[(String, String)],
) -> Option<Vec<(String, String)>> {
    let get = |name: &str| {
        labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let container_id = get("container_id");
    let pod = get("pod_uid")
        .and_then(|uid| pods.lookup(uid))
        .or_else(|| container_id.and_then(|id| pods.lookup_container(id)))?;
    let mut out = labels.to_vec();
    crate::kube::apply_pod_labels(&mut out, &pod, container_id);
    Some(out)
}

/// One target's endpoint work for a round: a probe when `probe`, then a scrape of what
/// the endpoint serves.
async fn endpoint_work(
    shared: Arc<Shared>,
    namespaces: Arc<Namespaces>,
    pid: u32,
    service: String,
    endpoint: Endpoint,
    probe: bool,
    for_series: ForSeries,
) -> EndpointOutcome {
    // The semaphore is never closed; without a slot the work would only run unbounded.
    let _slot = shared.slots.acquire().await.ok();
    let config = &shared.config;
    let ForSeries { meta, cache } = for_series;
    let nothing = |endpoint, series_cache| EndpointOutcome {
        endpoint,
        metrics: Metrics::new(),
        expvar: false,
        pprof: false,
        index: None,
        exposition: false,
        series: Vec::new(),
        series_cache,
        addr: None,
    };

    let (addr, serves, failures, scraped) = if probe {
        let attempts = match endpoint {
            Endpoint::Absent { attempts, .. } => attempts.saturating_add(1),
            _ => 0,
        };
        let for_thread = shared.clone();
        let until = Instant::now() + config.limits.scrape_timeout;
        let candidates = match off_thread(until, move || {
            probe_candidates(
                &for_thread.config,
                pid,
                &service,
                for_thread.own_netns,
                &namespaces,
            )
        })
        .await
        {
            OffThread::Done(c) => c,
            OffThread::Late(_) | OffThread::Failed(_) => {
                tracing::debug!(pid, "listening sockets unread in time; probing later");
                Vec::new()
            }
        };
        match probe_ports(config, pid, &meta, &candidates).await {
            Some((addr, scraped)) => {
                let serves = scraped.serves();
                tracing::info!(pid, %addr, expvar = serves.expvar, pprof = serves.pprof, metrics = serves.metrics, "runtime endpoints found");
                // What the address does not serve is not a failed sample.
                let scraped = Scraped {
                    vars: scraped.vars.filter(|r| r.is_ok()),
                    goroutines: scraped.goroutines.filter(|r| r.is_ok()),
                    exposition: scraped.exposition.filter(|_| serves.metrics),
                    // The probe's cache holds what this address exposes; without an
                    // exposition the target keeps its own for later.
                    series_cache: scraped
                        .series_cache
                        .filter(|_| serves.metrics)
                        .or(Some(cache)),
                };
                (addr, serves, 0, scraped)
            }
            None => {
                return nothing(
                    Endpoint::Absent {
                        since: Instant::now(),
                        attempts,
                    },
                    Some(cache),
                );
            }
        }
    } else {
        let Endpoint::Found {
            addr,
            serves,
            failures,
        } = endpoint
        else {
            return nothing(endpoint, Some(cache));
        };
        // Only what the probe found is scraped: a process without expvar costs no
        // request (and no warning) per interval.
        let (asked, idle) = if serves.metrics {
            (Some(cache), None)
        } else {
            (None, Some(cache))
        };
        let mut scraped = scrape(config, addr, pid, serves.expvar, serves.pprof, asked).await;
        scraped.series_cache = scraped.series_cache.or(idle);
        (addr, serves, failures, scraped)
    };

    let mut out = nothing(endpoint, scraped.series_cache);
    out.addr = Some(addr);
    match scraped.vars {
        Some(Ok(m)) => {
            out.metrics.extend(m);
            out.expvar = true;
        }
        Some(Err(e)) if failures == 0 => {
            tracing::warn!(pid, error = %goroscope_daemon::escape::peer(&e), "expvar sample failed");
        }
        _ => {}
    }
    match scraped.goroutines {
        Some(Ok(index)) => {
            out.metrics.push(("go_goroutines", index.goroutines as f64));
            out.pprof = true;
            out.index = Some(index);
        }
        Some(Err(e)) if failures == 0 => {
            tracing::warn!(pid, error = %goroscope_daemon::escape::peer(&e), "goroutine sample failed");
        }
        _ => {}
    }
    match scraped.exposition {
        Some(Ok(series)) => {
            out.series = series;
            out.exposition = true;
        }
        Some(Err(e)) if failures == 0 => {
            tracing::warn!(pid, error = %goroscope_daemon::escape::peer(&e), "metrics sample failed");
        }
        _ => {}
    }
    let all_ok = out.expvar == serves.expvar
        && out.pprof == serves.pprof
        && out.exposition == serves.metrics;
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
    out
}

/// Reads what the stack plan allows of `addr`'s goroutine profiles, one at a time;
/// a summary per read, and one per skip saying why.
async fn read_stacks(
    shared: Arc<Shared>,
    addr: SocketAddr,
    index: pprof::Index,
    plan: Arc<Mutex<StackPlan>>,
) -> Vec<v1::StackSummary> {
    let _slot = shared.stack_slots.acquire().await.ok();
    let s = &shared.config.stacks;
    let goroutines = index.goroutines;
    let steps = plan.lock().unwrap_or_else(PoisonError::into_inner).plan(
        Instant::now(),
        goroutines,
        index.leak_profile,
        s,
    );
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        let kind = match step {
            Step::Read(kind) => kind,
            Step::Skip(kind, why) => {
                let reason = if why.starts_with("pause budget") {
                    "budget"
                } else {
                    "goroutines"
                };
                stacks::METRICS.skipped(kind, reason);
                out.push(skipped(kind, goroutines, why));
                continue;
            }
        };
        let format = if kind == stacks::Kind::Each {
            stack_text::Format::Each
        } else {
            stack_text::Format::Grouped
        };
        let mut summariser = stack_text::Summariser::new(format, s.max_groups);
        let started_ms = goroscope_proto::unix_ms();
        let started = Instant::now();
        let read = tokio::time::timeout(
            s.timeout,
            http::get_streaming(addr, kind.path(), s.max_response_bytes, |data| {
                summariser.feed(data)
            }),
        )
        .await;
        let took = started.elapsed();
        let failure = match read {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "no answer within stacks.timeout ({})",
                humantime::format_duration(s.timeout)
            )),
        };
        let mut p = plan.lock().unwrap_or_else(PoisonError::into_inner);
        match failure {
            None => {
                p.charge(Instant::now(), kind, goroutines, took, s);
                drop(p);
                stacks::METRICS.read(kind, took);
                let mut summary = summariser.finish(kind.source());
                summary.timestamp_ms = started_ms;
                summary.request_ms = took.as_millis().min(u32::MAX as u128) as u32;
                out.push(summary);
            }
            Some(why) => {
                p.failed(Instant::now(), kind, goroutines, took, s);
                drop(p);
                stacks::METRICS.skipped(kind, "failed");
                tracing::debug!(%addr, source = kind.source(), error = %goroscope_daemon::escape::peer(&why), "stack read failed");
                let mut summary = skipped(kind, goroutines, why);
                summary.request_ms = took.as_millis().min(u32::MAX as u128) as u32;
                out.push(summary);
            }
        }
    }
    out
}

fn skipped(kind: stacks::Kind, goroutines: u64, why: String) -> v1::StackSummary {
    v1::StackSummary {
        timestamp_ms: goroscope_proto::unix_ms(),
        source: kind.source().to_owned(),
        total: goroutines,
        skipped: goroscope_proto::rules::trim_label_value(&why).into_owned(),
        ..Default::default()
    }
}

/// Reads the /proc vital signs of `pid`, and those of its cgroups.
fn sample_proc(
    root: &Path,
    cgroups: &cgroup::Round,
    pid: u32,
    smaps: bool,
) -> Result<ProcSample, ProcError> {
    let stat = proc::read_stat(root, pid)?;
    if stat.is_dead() {
        return Err(ProcError::Gone { pid });
    }
    let status = proc::read_status(root, pid)?;
    let ticks = proc::clock_ticks_per_second().max(1) as f64;
    let mut out = Metrics::with_capacity(32);
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
    match smaps.then(|| proc::read_smaps_rollup(root, pid)) {
        None => {}
        Some(Ok(m)) => out.extend_from_slice(&[
            ("process_anon_bytes", m.anon_bytes as f64),
            ("process_lazyfree_bytes", m.lazyfree_bytes as f64),
            ("process_swap_bytes", m.swap_bytes as f64),
        ]),
        // Needs the same privilege as fds, and kernels before 4.14 have no rollup (a
        // missing file looks like a vanished process): the sample goes on without it,
        // and a process that really vanished is seen by the next read of its stat.
        Some(Err(e)) => tracing::debug!(pid, error = %e, "smaps_rollup unreadable"),
    }
    let cgroup = match cgroups.read(root, pid) {
        Ok(reading) => {
            out.extend_from_slice(&reading.metrics);
            Some(reading)
        }
        // A kernel without cgroups has no /proc/PID/cgroup (which looks like a
        // vanished process): as for smaps_rollup, the stat read tells.
        Err(e) => {
            tracing::debug!(pid, error = %e, "cgroup unreadable");
            None
        }
    };
    Ok(ProcSample {
        metrics: out,
        cgroup,
    })
}

/// Asks `addr` for what is wanted, all at once, each under the scrape timeout; the
/// exposition when given a cache to read it with.
async fn scrape(
    config: &CollectorConfig,
    addr: SocketAddr,
    pid: u32,
    expvar: bool,
    pprof: bool,
    series_cache: Option<SeriesCache>,
) -> Scraped {
    let (vars, goroutines, exposition) = tokio::join!(
        async {
            if expvar {
                Some(scrape_expvar(config, addr).await)
            } else {
                None
            }
        },
        async {
            if pprof {
                Some(scrape_goroutines(config, addr).await)
            } else {
                None
            }
        },
        async {
            match series_cache {
                Some(cache) => Some(scrape_metrics(config, addr, pid, cache).await),
                None => None,
            }
        }
    );
    let (exposition, series_cache) = match exposition {
        Some((cache, result)) => (Some(result), Some(cache)),
        None => (None, None),
    };
    Scraped {
        vars,
        goroutines,
        exposition,
        series_cache,
    }
}

/// The series of the exposition at `/metrics`, at most `limits.max_series_per_target`
/// of them; hands the cache back whatever happens.
async fn scrape_metrics(
    config: &CollectorConfig,
    addr: SocketAddr,
    pid: u32,
    mut cache: SeriesCache,
) -> (SeriesCache, Result<Vec<Labeled>, String>) {
    let body = bounded(
        config,
        http::get_accepting(
            addr,
            prometheus::PATH,
            Some(prometheus::ACCEPT),
            config.limits.max_response_bytes,
            Read::All,
        ),
    )
    .await;
    let body = match body {
        Ok(b) => b,
        Err(e) => return (cache, Err(e)),
    };
    let cap = config.limits.max_series_per_target;
    let parsed = match prometheus::parse(&body, &mut cache, cap) {
        Ok(p) => p,
        Err(e) => return (cache, Err(format!("{addr}: {e}"))),
    };
    if parsed.capped > 0 && cache.cap_log_due() {
        tracing::warn!(
            pid,
            %addr,
            kept = parsed.series.len(),
            left_out = parsed.capped,
            "more series at /metrics than limits.max_series_per_target; keeping the first"
        );
    }
    if parsed.malformed > 0 {
        tracing::debug!(pid, %addr, lines = parsed.malformed, "malformed lines at /metrics skipped");
    }
    (cache, Ok(parsed.series))
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

/// The goroutine count from the pprof index page, which the runtime answers without
/// building any stack.
async fn scrape_goroutines(
    config: &CollectorConfig,
    addr: SocketAddr,
) -> Result<pprof::Index, String> {
    let page = bounded(
        config,
        http::get(
            addr,
            pprof::INDEX_PATH,
            pprof::MAX_INDEX_BYTES.min(config.limits.max_response_bytes),
            Read::Until(pprof::TABLE_END),
        ),
    )
    .await?;
    pprof::parse_index(&page).map_err(|e| format!("{addr}: {e}"))
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

/// The addresses where `pid` may serve its runtime endpoints. For a service listed in
/// `discovery.service_ports`, those ports only; else the configured ports first, then
/// (if allowed) every other port it listens on. Reads /proc: blocking.
///
/// A process in another network namespace than the collector's (a pod beside a
/// host-network collector) is reached at its namespace's addresses when it listens on
/// a wildcard address; a listener on its loopback is out of the collector's reach.
fn probe_candidates(
    config: &CollectorConfig,
    pid: u32,
    service: &str,
    own_netns: Option<u64>,
    namespaces: &Namespaces,
) -> Vec<SocketAddr> {
    let discovery = &config.discovery;
    let (wanted, others): (&[u16], bool) = match discovery.service_ports.get(service) {
        Some(ports) => (ports, false),
        None => (&discovery.ports, discovery.probe_listening),
    };
    if wanted.is_empty() && !others {
        return Vec::new();
    }
    let root = &config.proc_root;
    let found = (|| {
        let inodes = proc::socket_inodes(root, pid)?;
        if inodes.is_empty() {
            return Ok(None);
        }
        let netns = proc::net_namespace(root, pid)?;
        let ns = namespaces.get_or_load(netns, || {
            let foreign = own_netns.is_some_and(|own| own != netns);
            Ok(Namespace {
                listening: proc::listening_sockets(root, pid)?,
                foreign,
                addrs: if foreign {
                    proc::namespace_addresses(root, pid)?
                } else {
                    Vec::new()
                },
            })
        })?;
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
            addrs.sort_by_key(|a| {
                wanted
                    .iter()
                    .position(|p| *p == a.port())
                    .unwrap_or(usize::MAX)
            });
            addrs.dedup();
            if !others {
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

/// Finds the address serving `/debug/vars`, `/debug/pprof/` or `/metrics` for `pid` among
/// `candidates`, and what it answered. The candidates are asked at once (a few at a
/// time), and the whole probe ends within twice the scrape timeout; of those that
/// answer, the first in the candidates' order wins.
async fn probe_ports(
    config: &CollectorConfig,
    pid: u32,
    meta: &TargetMeta,
    candidates: &[SocketAddr],
) -> Option<(SocketAddr, Scraped)> {
    let deadline = Instant::now() + config.limits.scrape_timeout * 2;
    let mut answers = futures_util::stream::iter(candidates.iter().copied().enumerate())
        .map(|(i, addr)| async move {
            let cache = SeriesCache::new(&meta.labels);
            (
                i,
                addr,
                scrape(config, addr, pid, true, true, Some(cache)).await,
            )
        })
        .buffer_unordered(PROBE_PARALLELISM);
    let mut done = vec![false; candidates.len()];
    let mut best: Option<(usize, SocketAddr, Scraped)> = None;
    let mut last_error: Option<String> = None;
    loop {
        // Nothing better can come once every candidate before the best has answered.
        if let Some((i, ..)) = &best
            && done[..*i].iter().all(|d| *d)
        {
            break;
        }
        let Ok(Some((i, addr, scraped))) = tokio::time::timeout_at(deadline, answers.next()).await
        else {
            break;
        };
        done[i] = true;
        let serves = scraped.serves();
        if serves.expvar || serves.pprof || serves.metrics {
            if best.as_ref().is_none_or(|(b, ..)| i < *b) {
                best = Some((i, addr, scraped));
            }
        } else if let Some(Err(e)) = scraped.vars {
            last_error = Some(e);
        }
    }
    if let Some((_, addr, scraped)) = best {
        return Some((addr, scraped));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::tests::{FakeProc, go_binary};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn reprobe_waits_double_up_to_the_cap() {
        let cap = Duration::from_secs(60);
        let waits: Vec<u64> = (0..8).map(|a| reprobe_delay(a, cap).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(reprobe_delay(u32::MAX, cap), cap);
        assert_eq!(
            reprobe_delay(3, Duration::from_millis(1500)),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn a_round_fits_in_the_interval() {
        let mut config = CollectorConfig::default();
        assert_eq!(round_budget(&config), Duration::from_secs(3));
        config.interval = Duration::from_secs(1);
        assert_eq!(round_budget(&config), Duration::from_millis(750));
    }

    /// A port that accepts connections (the kernel does, into the backlog) and never
    /// answers.
    fn silent() -> (std::net::TcpListener, SocketAddr) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    }

    const INDEX: &str = "<table>\n<thead><td>Count</td><td>Profile</td></thead>\n\
        <tr><td>4</td><td><a href='goroutine?debug=1'>goroutine</a></td></tr>\n</table>\n";
    const VARS: &str = r#"{"memstats": {"Alloc":1,"TotalAlloc":2,"Sys":3,"Mallocs":4,"Frees":5,
        "HeapAlloc":6,"HeapSys":7,"HeapIdle":8,"HeapInuse":9,"HeapReleased":10,"HeapObjects":11,
        "StackInuse":12,"StackSys":13,"NextGC":14,"LastGC":15,"PauseTotalNs":16,"NumGC":17,
        "NumForcedGC":18,"GCCPUFraction":0.5}}"#;

    /// A server answering `/debug/vars` and `/debug/pprof/` as a Go program does.
    async fn runtime_endpoints() -> SocketAddr {
        slow_runtime_endpoints(Duration::ZERO).await
    }

    /// [`runtime_endpoints`], each answer `delay` late.
    async fn slow_runtime_endpoints(delay: Duration) -> SocketAddr {
        serve(&[("/debug/vars", VARS), ("/debug/pprof/", INDEX)], delay).await
    }

    /// A server answering each path of `routes` with its body, `delay` late, and 404
    /// to anything else.
    async fn serve(routes: &'static [(&'static str, &'static str)], delay: Duration) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split_whitespace().nth(1).unwrap_or("");
                    let (status, body) = routes
                        .iter()
                        .find(|(p, _)| *p == path)
                        .map_or(("404 Not Found", "404 page not found\n"), |(_, body)| {
                            ("200 OK", *body)
                        });
                    tokio::time::sleep(delay).await;
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn probing_many_silent_ports_costs_one_timeout() {
        let mut config = CollectorConfig::default();
        config.limits.scrape_timeout = Duration::from_millis(500);
        let silent: Vec<_> = (0..7).map(|_| silent()).collect();
        let good = runtime_endpoints().await;
        let mut candidates: Vec<SocketAddr> = silent.iter().map(|s| s.1).collect();
        candidates.push(good);

        let started = std::time::Instant::now();
        let meta = test_meta();
        let (addr, scraped) = probe_ports(&config, 1, &meta, &candidates).await.unwrap();
        let took = started.elapsed();
        // One after the other, the silent ports would take 7 × 500ms.
        assert!(took < Duration::from_millis(1400), "{took:?}");
        assert_eq!(addr, good);
        assert_eq!(
            scraped.serves(),
            Serves {
                expvar: true,
                pprof: true,
                metrics: false,
            }
        );
        assert!(matches!(
            scraped.goroutines,
            Some(Ok(pprof::Index { goroutines: 4, .. }))
        ));

        // Of two that answer, the first in the candidates' order, without waiting for
        // the silent ones after it.
        let other = runtime_endpoints().await;
        let started = std::time::Instant::now();
        let (addr, _) = probe_ports(&config, 1, &meta, &[other, silent[0].1, good])
            .await
            .unwrap();
        assert_eq!(addr, other);
        assert!(started.elapsed() < Duration::from_millis(400));

        assert!(
            probe_ports(&config, 1, &meta, &[silent[1].1])
                .await
                .is_none()
        );
        assert!(probe_ports(&config, 1, &meta, &[]).await.is_none());
    }

    #[test]
    fn service_ports_are_the_only_ports_probed_for_their_service() {
        let (a, a_addr) = silent();
        let (b, b_addr) = silent();
        let me = std::process::id();
        let own = proc::net_namespace(Path::new("/proc"), me).ok();
        let mut config = CollectorConfig::default();
        config.discovery.service_ports = [
            ("billing".to_string(), vec![b_addr.port()]),
            ("batch".to_string(), vec![]),
        ]
        .into();
        let candidates = |config: &CollectorConfig, service: &str| {
            probe_candidates(config, me, service, own, &Namespaces::default())
        };
        assert_eq!(candidates(&config, "billing"), vec![b_addr]);
        assert_eq!(candidates(&config, "batch"), vec![]);

        // Any other service: the configured ports first, then every listener.
        config.discovery.ports = vec![b_addr.port()];
        let web = candidates(&config, "web");
        assert_eq!(web[0], b_addr, "{web:?}");
        // Tests beside this one listen too; past the cap, `a` may be cut off.
        assert!(
            web.len() == MAX_PROBED_PORTS || web.contains(&a_addr),
            "{web:?}"
        );
        config.discovery.probe_listening = false;
        assert_eq!(candidates(&config, "web"), vec![b_addr]);
        drop((a, b));
    }

    fn fake_config(root: &Path) -> Arc<CollectorConfig> {
        Arc::new(CollectorConfig {
            proc_root: root.to_owned(),
            interval: Duration::from_secs(1),
            ..CollectorConfig::default()
        })
    }

    fn metric(s: &TargetSample, name: &str) -> Option<f64> {
        s.metrics.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    fn test_meta() -> TargetMeta {
        TargetMeta {
            pid: 1,
            start_ticks: 1,
            start_time_ms: 0,
            labels: vec![("service".into(), "svc".into())],
            coverage: Coverage::default(),
            runtime_env: vec![],
            build: None,
        }
    }

    /// What client_golang serves, recorded.
    const EXPOSITION: &str = include_str!("sources/testdata/client_golang.prom.txt");

    /// A service instrumented with client_golang serves `/metrics` and nothing else: it
    /// is found by its exposition, sampled from it, and capped.
    #[tokio::test]
    async fn a_service_serving_only_metrics_is_found_and_sampled() {
        let fake = FakeProc::new();
        let addr = serve(&[("/metrics", EXPOSITION)], Duration::ZERO).await;
        let netns = proc::net_namespace(Path::new("/proc"), std::process::id()).unwrap();
        fake.set(70, 100, 'S', go_binary());
        fake.listen(netns, &[(70, addr)]);
        let mut config = (*fake_config(fake.root())).clone();
        config.limits.max_series_per_target = 40;
        let mut sampler = Sampler::new(Arc::new(config)).unwrap();
        let capped_before = prometheus::SERIES_CAPPED.load(std::sync::atomic::Ordering::Relaxed);
        let mut kept = Vec::new();
        for round in 0..2 {
            let scrape = sampler.sample(round).await.unwrap();
            let s = &scrape.samples[0];
            let c = &s.meta.coverage;
            assert!(c.metrics && !c.expvar && !c.pprof, "{c:?}");
            assert_eq!(c.debug_addr, addr.to_string());
            // The cap; /proc's own process_* readings are kept, the exposition's copies
            // of them are not.
            assert!(
                s.series.len() <= 40 && s.series.len() >= 35,
                "{}",
                s.series.len()
            );
            assert_eq!(metric(s, "process_threads"), Some(3.0));
            assert!(
                !s.series
                    .iter()
                    .any(|(id, _)| s.metrics.iter().any(|(n, _)| **n == *id.name))
            );
            let quantile = s.series.iter().find(|(id, _)| {
                &*id.name == "app_response_size_bytes"
                    && id
                        .labels
                        .iter()
                        .any(|(k, v)| &**k == "quantile" && &**v == "0.99")
            });
            assert!(quantile.is_some(), "{:?}", s.series);
            kept.push(s.series.clone());
        }
        // The same series, interned once.
        for (a, b) in kept[0].iter().zip(&kept[1]) {
            assert!(Arc::ptr_eq(&a.0, &b.0));
        }
        // On the wire: each quantile and bucket a series of its own, declared with its
        // labels, sorted by name.
        let scrape = sampler.sample(3).await.unwrap();
        let batch = crate::encoder::Encoder::new("node-a")
            .encode_part(1, &scrape, 0, 0)
            .batch;
        let decl = |metric: &str, labels: &[(&str, &str)]| {
            batch.series.iter().any(|d| {
                d.metric == metric
                    && d.labels
                        .iter()
                        .map(|l| (l.name.as_str(), l.value.as_str()))
                        .eq(labels.iter().copied())
            })
        };
        assert!(decl(
            "app_response_size_bytes",
            &[("quantile", "0.5"), ("route", "/api")]
        ));
        assert!(decl(
            "app_request_duration_seconds_bucket",
            &[("code", "200"), ("le", "+Inf"), ("route", "/health")]
        ));
        assert!(decl("process_threads", &[]));
        assert_eq!(batch.series.len(), batch.samples.len());
        let capped = prometheus::SERIES_CAPPED.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            capped >= capped_before + 2 * 100,
            "{capped_before} -> {capped}"
        );
    }

    #[tokio::test]
    async fn a_silent_endpoint_costs_only_its_own_target_and_rounds_end_on_time() {
        let fake = FakeProc::new();
        let (_silent, silent_addr) = silent();
        let good = runtime_endpoints().await;
        let netns = proc::net_namespace(Path::new("/proc"), std::process::id()).unwrap();
        fake.set(50, 100, 'S', go_binary());
        fake.set(51, 100, 'S', go_binary());
        fake.listen(netns, &[(50, silent_addr), (51, good)]);
        let config = fake_config(fake.root());
        assert_eq!(config.limits.scrape_timeout, Duration::from_secs(3));
        let mut sampler = Sampler::new(config).unwrap();

        for round in 0..3 {
            let started = std::time::Instant::now();
            let scrape = sampler.sample(round).await.unwrap();
            let took = started.elapsed();
            assert!(
                took < Duration::from_millis(900),
                "round {round} took {took:?}"
            );
            let by_pid: HashMap<u32, &TargetSample> =
                scrape.samples.iter().map(|s| (s.meta.pid, s)).collect();
            assert_eq!(by_pid.len(), 2, "round {round}");
            let (hung, ok) = (by_pid[&50], by_pid[&51]);
            assert_eq!(metric(hung, "process_threads"), Some(3.0), "round {round}");
            assert!(hung.meta.coverage.proc && !hung.meta.coverage.pprof);
            assert_eq!(metric(hung, "go_goroutines"), None);
            assert_eq!(metric(ok, "go_goroutines"), Some(4.0), "round {round}");
            assert_eq!(metric(ok, "go_memstats_heap_inuse_bytes"), Some(9.0));
            assert_eq!(ok.meta.coverage.debug_addr, good.to_string());
        }
        // The silent target's probe is still running: no second one was started.
        assert!(sampler.targets[&(50, 100)].running.is_some());
    }

    #[tokio::test]
    async fn kept_to_its_own_network_namespace_it_samples_no_other() {
        let fake = FakeProc::new();
        let own = proc::own_net_namespace().unwrap();
        fake.set(80, 100, 'S', go_binary());
        fake.set_netns(80, own);
        fake.set(81, 100, 'S', go_binary());
        fake.set_netns(81, own + 1);
        let sampled = |scrape: Scrape| {
            let mut pids: Vec<u32> = scrape.samples.iter().map(|s| s.meta.pid).collect();
            pids.sort();
            pids
        };

        let mut all = Sampler::new(fake_config(fake.root())).unwrap();
        assert_eq!(sampled(all.sample(1).await.unwrap()), [80, 81]);
        let mut config = (*fake_config(fake.root())).clone();
        config.discovery.own_network_namespace = true;
        let mut own = Sampler::new(Arc::new(config)).unwrap();
        assert_eq!(sampled(own.sample(1).await.unwrap()), [80]);
    }

    #[tokio::test]
    async fn a_slow_endpoint_answers_with_the_next_sample() {
        let fake = FakeProc::new();
        let slow = slow_runtime_endpoints(Duration::from_millis(900)).await;
        let netns = proc::net_namespace(Path::new("/proc"), std::process::id()).unwrap();
        fake.set(55, 100, 'S', go_binary());
        fake.listen(netns, &[(55, slow)]);
        let mut sampler = Sampler::new(fake_config(fake.root())).unwrap();

        // Slower than the round (750ms): the first sample has /proc only.
        let first = sampler.sample(1).await.unwrap();
        assert_eq!(metric(&first.samples[0], "go_goroutines"), None);
        assert_eq!(metric(&first.samples[0], "process_threads"), Some(3.0));
        for round in 2..5 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let started = std::time::Instant::now();
            let scrape = sampler.sample(round).await.unwrap();
            assert!(started.elapsed() < Duration::from_millis(900));
            let s = &scrape.samples[0];
            assert_eq!(metric(s, "go_goroutines"), Some(4.0), "round {round}");
            assert!(s.meta.coverage.pprof && s.meta.coverage.expvar);
        }
    }

    #[tokio::test]
    async fn a_real_go_process_brings_its_runtime_settings_and_cgroup_and_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = crate::sources::environ::tests::start_sleeper(&dir);
        let pid = child.id();
        let config = Arc::new(CollectorConfig {
            interval: Duration::from_secs(1),
            ..CollectorConfig::default()
        });
        let mut sampler = Sampler::new(config).unwrap();
        let mut found = None;
        for round in 0..10 {
            let scrape = sampler.sample(round).await.unwrap();
            found = scrape.samples.into_iter().find(|s| s.meta.pid == pid);
            if found.is_some() {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let sample = found.expect("the Go process is a target");
        let meta = &sample.meta;
        assert_eq!(
            meta.runtime_env,
            [
                ("GOGC".to_string(), "50".to_string()),
                ("GOMEMLIMIT".to_string(), "1GiB".to_string())
            ]
        );
        let everything = format!("{meta:?}");
        assert!(!everything.contains("SECRET_TOKEN"), "{everything}");

        // Whatever this host mounts, the cgroup sample is well formed, and covered
        // when it gave anything.
        let cgroup: Vec<_> = sample
            .metrics
            .iter()
            .filter(|(n, _)| n.starts_with("cgroup_"))
            .collect();
        assert_eq!(meta.coverage.cgroup, !cgroup.is_empty(), "{cgroup:?}");
        assert!(cgroup.iter().all(|(_, v)| v.is_finite() && *v >= 0.0));
        if Path::new("/sys/fs/cgroup/memory/cgroup.procs").is_file() {
            // A v1 memory hierarchy (as on this kind of host): the usage is there.
            assert!(
                metric(&sample, "cgroup_memory_current_bytes").is_some_and(|v| v > 0.0),
                "{cgroup:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_container_target_carries_its_cgroup_metrics_and_identity() {
        let fake = FakeProc::new();
        fake.set(70, 100, 'S', go_binary());
        fake.set(71, 100, 'S', go_binary());
        let container = "/kubepods.slice/kubepods-burstable.slice/\
            kubepods-burstable-pod0f8e5ab2_4c1d_4a9e_9b7e_2d3c4b5a6f70.slice/\
            cri-containerd-4e1f0c0a3b2d9f8e7c6b5a4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b.scope";
        std::fs::write(fake.root().join("70/cgroup"), format!("0::{container}\n")).unwrap();
        let config = Arc::new(CollectorConfig {
            proc_root: fake.root().to_owned(),
            cgroup_root: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/sources/testdata/cgroup/v2"),
            interval: Duration::from_secs(1),
            ..CollectorConfig::default()
        });
        let mut sampler = Sampler::new(config).unwrap();
        let first = sampler.sample(1).await.unwrap();
        let by_pid: HashMap<u32, &TargetSample> =
            first.samples.iter().map(|s| (s.meta.pid, s)).collect();
        let (inside, outside) = (by_pid[&70], by_pid[&71]);
        assert_eq!(metric(inside, "cgroup_memory_max_bytes"), Some(536870912.0));
        assert_eq!(metric(inside, "cgroup_oom_kills_total"), Some(2.0));
        assert_eq!(metric(inside, "process_threads"), Some(3.0));
        assert!(inside.meta.coverage.cgroup && inside.meta.coverage.proc);
        let label = |s: &TargetSample, name: &str| {
            s.meta
                .labels
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            label(inside, "container_id").as_deref(),
            Some("4e1f0c0a3b2d9f8e7c6b5a4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b")
        );
        assert_eq!(
            label(inside, "pod_uid").as_deref(),
            Some("0f8e5ab2-4c1d-4a9e-9b7e-2d3c4b5a6f70")
        );
        assert_eq!(label(inside, "service").as_deref(), Some("svc"));
        // No /proc/PID/cgroup: sampled from /proc all the same, without cgroup.
        assert_eq!(metric(outside, "process_threads"), Some(3.0));
        assert!(!outside.meta.coverage.cgroup);
        assert!(
            outside
                .metrics
                .iter()
                .all(|(n, _)| !n.starts_with("cgroup_"))
        );
        assert_eq!(label(outside, "container_id"), None);

        // Unchanged, the target is not declared again: the same meta is sent.
        let second = sampler.sample(2).await.unwrap();
        let again = second.samples.iter().find(|s| s.meta.pid == 70).unwrap();
        assert!(Arc::ptr_eq(&again.meta, &inside.meta));
    }

    #[test]
    fn cgroup_identity_becomes_labels_only_when_it_changes() {
        let base = vec![("service".to_string(), "svc".to_string())];
        let none = Identity::default();
        assert_eq!(relabelled(&base, &none, 1), None);
        let id = Identity {
            container_id: Some("ab".repeat(32)),
            pod_uid: Some("4a1b2c3d-5e6f-4a8b-9c0d-1e2f3a4b5c6d".into()),
        };
        let with = relabelled(&base, &id, 1).unwrap();
        assert_eq!(
            with,
            [
                ("service".to_string(), "svc".to_string()),
                ("container_id".to_string(), "ab".repeat(32)),
                (
                    "pod_uid".to_string(),
                    "4a1b2c3d-5e6f-4a8b-9c0d-1e2f3a4b5c6d".to_string()
                ),
            ]
        );
        assert_eq!(relabelled(&with, &id, 1), None);
        // Moved out of its container: the labels go.
        assert_eq!(relabelled(&with, &none, 1), Some(base.clone()));
        let pod_only = Identity {
            container_id: None,
            ..id.clone()
        };
        assert_eq!(relabelled(&with, &pod_only, 1).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_exec_declares_the_target_again_or_ends_it() {
        let fake = FakeProc::new();
        fake.set(60, 100, 'S', go_binary());
        let mut sampler = Sampler::new(fake_config(fake.root())).unwrap();
        let first = sampler.sample(1).await.unwrap();
        assert_eq!(first.samples.len(), 1);
        let meta = first.samples[0].meta.clone();

        // Another Go program under the same pid and start time: the same target, with
        // new labels, not a gone one.
        let other = fake.root().join("other-go");
        std::fs::copy(go_binary(), &other).unwrap();
        fake.set(60, 100, 'S', &other);
        let second = sampler.sample(2).await.unwrap();
        assert!(second.gone.is_empty());
        assert_eq!(second.samples.len(), 1);
        assert!(!Arc::ptr_eq(&second.samples[0].meta, &meta));
        assert_eq!(
            (
                second.samples[0].meta.pid,
                second.samples[0].meta.start_ticks
            ),
            (60, 100)
        );

        // Something else than Go: gone, while the pid lives on.
        fake.set(60, 100, 'S', Path::new("/bin/sh"));
        let third = sampler.sample(3).await.unwrap();
        assert!(third.samples.is_empty());
        assert_eq!(third.gone.len(), 1);
        assert_eq!(third.gone[0].pid, 60);
        let fourth = sampler.sample(4).await.unwrap();
        assert!(fourth.samples.is_empty() && fourth.gone.is_empty());
    }
}
