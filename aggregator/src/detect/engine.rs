//! The detector thread: fed what each stored batch says of the series detectors read,
//! it keeps a [`TargetState`] per target, evaluates every detector on a schedule,
//! opens and resolves anomalies with hysteresis, groups them into incidents
//! ([`super::incidents`]), persists both, and tells the notifier and the capture task.
//!
//! Ingest sessions [`Detector::offer`] a [`Feed`] after their batch is stored; the
//! channel is bounded and never waited on: when it is full the feed is dropped and
//! counted (detection sees a gap; ingest never slows). All the work happens on this
//! one thread, off the async runtime. After a restart, open anomalies and incidents are
//! read back, and a target's windows are refilled from storage when it is first fed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use goroscope_proto::v1;

use super::incidents::{CaptureAsk, Change, Incidents};
use super::target::{INPUTS, SCHED_LATENCY_BUCKET, TargetMeta, TargetState};
use crate::config::DetectionConfig;
use crate::storage::{Cancel, IngestWrite, Selector, Storage, TargetKey};

/// What one stored batch says of its targets, for the detectors: the points of the
/// input series, target declarations, stack summaries and exits.
#[derive(Debug, Default)]
pub struct Feed {
    targets: Vec<TargetFeed>,
}

/// The points of one input series: its metric, its `le` for histogram buckets.
type InputPoints = (&'static str, Option<f64>, Vec<(i64, f64)>);

#[derive(Debug)]
struct TargetFeed {
    key: TargetKey,
    meta: Option<TargetMeta>,
    points: Vec<InputPoints>,
    stacks: Vec<Arc<v1::StackSummary>>,
    gone: bool,
}

impl Feed {
    /// The part of a batch the detectors read; None when there is none.
    pub fn from_write(write: &IngestWrite) -> Option<Feed> {
        let mut by_target: BTreeMap<&TargetKey, TargetFeed> = BTreeMap::new();
        let entry = |key: &TargetKey| TargetFeed {
            key: key.clone(),
            meta: None,
            points: Vec::new(),
            stacks: Vec::new(),
            gone: false,
        };
        for t in &write.targets {
            by_target
                .entry(&t.key)
                .or_insert_with(|| entry(&t.key))
                .meta = Some(TargetMeta {
                labels: t.labels.clone(),
                coverage: t.coverage.clone(),
                runtime_env: t.runtime_env.clone(),
                build: t.build.clone(),
            });
        }
        for s in &write.samples {
            let Some(metric) = INPUTS.iter().find(|m| **m == s.series.metric) else {
                continue;
            };
            let le = if *metric == SCHED_LATENCY_BUCKET {
                let Some(le) = s
                    .series
                    .labels
                    .iter()
                    .find(|(n, _)| n == "le")
                    .and_then(|(_, v)| parse_le(v))
                else {
                    continue;
                };
                Some(le)
            } else {
                None
            };
            by_target
                .entry(&s.series.target)
                .or_insert_with(|| entry(&s.series.target))
                .points
                .push((metric, le, s.points.clone()));
        }
        for s in &write.stacks {
            by_target
                .entry(&s.target)
                .or_insert_with(|| entry(&s.target))
                .stacks
                .push(Arc::new(s.summary.clone()));
        }
        for key in &write.gone {
            by_target.entry(key).or_insert_with(|| entry(key)).gone = true;
        }
        if by_target.is_empty() {
            return None;
        }
        Some(Feed {
            targets: by_target.into_values().collect(),
        })
    }
}

fn parse_le(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        _ => v.parse::<f64>().ok().filter(|f| !f.is_nan()),
    }
}

pub(super) enum Msg {
    Feed(Feed),
    Captured {
        incident: String,
        capture: Box<v1::IncidentCapture>,
    },
    Stop,
}

/// The handle ingest sessions feed; cheap to clone.
#[derive(Clone)]
pub struct Detector {
    tx: SyncSender<Msg>,
    stats: Arc<DetectorStats>,
}

/// Counters the aggregator's metrics read.
#[derive(Debug, Default)]
pub struct DetectorStats {
    pub fed: AtomicU64,
    pub dropped: AtomicU64,
    pub evaluations: AtomicU64,
    pub open_anomalies: AtomicU64,
    pub open_incidents: AtomicU64,
    pub targets: AtomicU64,
}

impl Detector {
    /// Hands a stored batch's feed to the detectors; never waits. A full queue drops
    /// it and counts the drop.
    pub fn offer(&self, feed: Feed) {
        match self.tx.try_send(Msg::Feed(feed)) {
            Ok(()) => {
                self.stats.fed.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Reports a capture taken (or refused) for an incident.
    pub fn captured(&self, incident: String, capture: v1::IncidentCapture) {
        // A capture result is rare and small: it waits for room rather than be lost,
        // but never on an async thread (callers are on the blocking pool or a task
        // that may park briefly).
        let _ = self.tx.try_send(Msg::Captured {
            incident,
            capture: Box::new(capture),
        });
    }

    pub fn stats(&self) -> &Arc<DetectorStats> {
        &self.stats
    }
}

/// Stops the detector thread and waits for it when dropped.
pub struct DetectorGuard {
    tx: SyncSender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl DetectorGuard {
    /// Blocks: call it off the async threads.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        // A full queue: the thread sees the disconnect once the handles are gone, or
        // the Stop after it drains.
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DetectorGuard {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

pub type NotifyHook = Box<dyn FnMut(Change, &v1::Incident) + Send>;
pub type CaptureHook = Box<dyn FnMut(CaptureAsk) + Send>;

/// What the detector thread calls out to: the notifier, and the task that takes
/// captures for incidents.
pub struct Hooks {
    pub notify: NotifyHook,
    pub capture: CaptureHook,
}

impl Hooks {
    pub fn none() -> Hooks {
        Hooks {
            notify: Box::new(|_, _| {}),
            capture: Box::new(|_| {}),
        }
    }
}

/// Starts the detector thread.
pub fn start(
    config: DetectionConfig,
    storage: Storage,
    hooks: Hooks,
) -> std::io::Result<(Detector, DetectorGuard)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(config.queue.max(1));
    let stats = Arc::new(DetectorStats::default());
    let thread = {
        let stats = stats.clone();
        std::thread::Builder::new()
            .name("detector".into())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                    Engine::new(config, storage, hooks, stats).run(rx)
                }));
                if result.is_err() {
                    tracing::error!("the detector thread panicked; detection has stopped");
                }
            })?
    };
    Ok((
        Detector {
            tx: tx.clone(),
            stats,
        },
        DetectorGuard {
            tx,
            thread: Some(thread),
        },
    ))
}

/// One diagnosis on one target: how many evaluations in a row found it, and the open
/// anomaly if there is one.
#[derive(Debug, Default)]
struct Track {
    streak: u32,
    last_found_ms: i64,
    open: Option<v1::Anomaly>,
    persisted_ms: i64,
}

/// Anomaly updates (evidence that changed) are written at most this often.
const PERSIST_EVERY_MS: i64 = 60_000;

struct Engine {
    config: DetectionConfig,
    storage: Storage,
    hooks: Hooks,
    stats: Arc<DetectorStats>,
    targets: HashMap<TargetKey, TargetState>,
    /// Targets with points since their last evaluation.
    fresh: std::collections::HashSet<TargetKey>,
    tracks: HashMap<(TargetKey, &'static str), Track>,
    incidents: Incidents,
}

impl Engine {
    fn new(
        config: DetectionConfig,
        storage: Storage,
        hooks: Hooks,
        stats: Arc<DetectorStats>,
    ) -> Engine {
        let mut engine = Engine {
            incidents: Incidents::new(config.clone()),
            config,
            storage,
            hooks,
            stats,
            targets: HashMap::new(),
            fresh: Default::default(),
            tracks: HashMap::new(),
        };
        engine.load();
        engine
    }

    /// Reads back what was open before a restart.
    fn load(&mut self) {
        let now = goroscope_proto::unix_ms();
        match self
            .storage
            .list_anomalies(usize::MAX, |a| a.resolved_ms == 0)
        {
            Ok(open) => {
                for a in open {
                    let Some(id) = a.target.clone() else { continue };
                    let Some(diagnosis) = diagnosis_id(&a.diagnosis) else {
                        continue;
                    };
                    let key = TargetKey {
                        host: id.host,
                        pid: id.pid,
                        start_ticks: id.start_ticks,
                    };
                    self.tracks.insert(
                        (key, diagnosis),
                        Track {
                            streak: self.config.open_after,
                            last_found_ms: now,
                            persisted_ms: now,
                            open: Some(a),
                        },
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading open anomalies failed"),
        }
        match self
            .storage
            .list_incidents(usize::MAX, |i| i.resolved_ms == 0)
        {
            Ok(open) => self.incidents.load(open),
            Err(e) => tracing::warn!(error = %e, "reading open incidents failed"),
        }
        self.count_open();
    }

    fn run(mut self, rx: Receiver<Msg>) {
        let every = self.config.evaluate_every.max(Duration::from_millis(100));
        let mut next_round = Instant::now() + every;
        loop {
            let wait = next_round.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Msg::Feed(feed)) => self.feed(feed),
                Ok(Msg::Captured { incident, capture }) => {
                    let changed = self.incidents.captured(&incident, *capture);
                    self.persist_incidents(changed);
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_round {
                self.round(goroscope_proto::unix_ms());
                next_round = Instant::now() + every;
            }
        }
    }

    fn feed(&mut self, feed: Feed) {
        let span = self.config.window.as_secs_f64();
        for t in feed.targets {
            if !self.targets.contains_key(&t.key) {
                let mut state = TargetState::new(t.key.clone(), span);
                self.refill(&mut state);
                self.targets.insert(t.key.clone(), state);
            }
            let state = self.targets.get_mut(&t.key).expect("inserted above");
            if let Some(meta) = t.meta {
                // A re-declaration without the build (it is sent once per stream)
                // keeps the one known.
                let build = meta.build.clone().or_else(|| state.meta.build.take());
                state.meta = TargetMeta { build, ..meta };
            }
            for (metric, le, points) in &t.points {
                state.push(metric, *le, points);
            }
            for s in t.stacks {
                state.push_stacks(s);
            }
            if t.gone {
                state.gone = true;
            }
            self.fresh.insert(t.key);
        }
    }

    /// Fills a target first seen by this thread with its stored history (after a
    /// restart), and its record's labels and build.
    fn refill(&self, state: &mut TargetState) {
        let key = &state.key.clone();
        let selector = Selector {
            matchers: vec![
                ("host".into(), key.host.clone()),
                ("pid".into(), key.pid.to_string()),
            ],
        };
        let (views, _) = self.storage.list_targets(&selector, 0, 8, None);
        let Some(view) = views.into_iter().find(|v| v.record.key == *key) else {
            return;
        };
        state.meta = TargetMeta {
            labels: view.record.labels.clone(),
            coverage: view.record.coverage.clone(),
            runtime_env: view.record.runtime_env.clone(),
            build: self
                .storage
                .build(&view.record)
                .ok()
                .flatten()
                .map(Arc::new),
        };
        let end = goroscope_proto::unix_ms();
        let start = end - self.config.window.as_millis() as i64;
        let cancel = Cancel::new();
        for metric in INPUTS {
            let Ok(series) = self
                .storage
                .query_range(metric, &selector, start, end, &cancel)
            else {
                continue;
            };
            for s in series.iter().filter(|s| s.target.key == *key) {
                let le = s
                    .labels
                    .iter()
                    .find(|(n, _)| n == "le")
                    .and_then(|(_, v)| parse_le(v));
                if metric == SCHED_LATENCY_BUCKET && le.is_none() {
                    continue;
                }
                state.push(metric, le, &s.points);
            }
        }
    }

    /// Evaluates the targets fed since the last round, resolves anomalies of targets
    /// that went quiet, and updates incidents.
    fn round(&mut self, now: i64) {
        let horizon = self.config.oom_horizon.as_secs_f64();
        let fresh: Vec<TargetKey> = self.fresh.drain().collect();
        let mut changed_anomalies: Vec<v1::Anomaly> = Vec::new();
        for key in &fresh {
            let Some(state) = self.targets.get_mut(key) else {
                continue;
            };
            let found = if state.gone {
                Vec::new()
            } else {
                self.stats.evaluations.fetch_add(1, Ordering::Relaxed);
                state.evaluate(horizon)
            };
            let gone = state.gone;
            let labels = state.meta.labels.clone();
            for f in found {
                let track = self
                    .tracks
                    .entry((key.clone(), f.finding.diagnosis))
                    .or_default();
                track.streak += 1;
                track.last_found_ms = now;
                let evidence = f.finding.evidence.to_string();
                match &mut track.open {
                    Some(a) => {
                        a.updated_ms = now;
                        a.evidence_json = evidence;
                        a.advice = f.finding.advice.clone();
                        if !f.signature.is_empty() {
                            a.signature = f.signature.clone();
                        }
                        a.sources = f.sources.iter().map(|s| (*s).to_owned()).collect();
                        a.oom_at_ms = f.oom_at_ms;
                        if now - track.persisted_ms >= PERSIST_EVERY_MS {
                            track.persisted_ms = now;
                            changed_anomalies.push(a.clone());
                        }
                    }
                    None if track.streak >= self.config.open_after => {
                        let a = v1::Anomaly {
                            id: crate::storage::captures::new_id(now),
                            diagnosis: f.finding.diagnosis.to_owned(),
                            target: Some(v1::TargetId {
                                host: key.host.clone(),
                                pid: key.pid,
                                start_ticks: key.start_ticks,
                            }),
                            labels: labels
                                .iter()
                                .map(|(n, v)| v1::Label {
                                    name: n.clone(),
                                    value: v.clone(),
                                })
                                .collect(),
                            opened_ms: now,
                            resolved_ms: 0,
                            updated_ms: now,
                            evidence_json: evidence,
                            advice: f.finding.advice.clone(),
                            sources: f.sources.iter().map(|s| (*s).to_owned()).collect(),
                            signature: f.signature.clone(),
                            incident_id: String::new(),
                            oom_at_ms: f.oom_at_ms,
                        };
                        tracing::info!(
                            host = %key.host,
                            pid = key.pid,
                            diagnosis = f.finding.diagnosis,
                            anomaly = %a.id,
                            "anomaly opened"
                        );
                        track.persisted_ms = now;
                        track.open = Some(a.clone());
                        changed_anomalies.push(a);
                    }
                    None => {}
                }
            }
            // What was not found this time.
            for ((k, diagnosis), track) in self.tracks.iter_mut() {
                if k != key || track.last_found_ms == now {
                    continue;
                }
                track.streak = 0;
                let healthy_for = now - track.last_found_ms;
                let resolve = gone || healthy_for >= self.config.resolve_after.as_millis() as i64;
                if resolve && let Some(mut a) = track.open.take() {
                    a.resolved_ms = now;
                    a.updated_ms = now;
                    if gone {
                        let mut evidence: serde_json::Value =
                            serde_json::from_str(&a.evidence_json).unwrap_or_default();
                        if evidence.is_object() {
                            evidence["target_exited"] = serde_json::Value::Bool(true);
                            a.evidence_json = evidence.to_string();
                        }
                    }
                    tracing::info!(
                        host = %k.host,
                        pid = k.pid,
                        diagnosis = *diagnosis,
                        anomaly = %a.id,
                        "anomaly resolved"
                    );
                    changed_anomalies.push(a);
                }
            }
        }
        // Targets gone quiet: their anomalies resolve once healthy_for passes.
        let quiet_ms = self.config.resolve_after.as_millis() as i64;
        let quiet: Vec<TargetKey> = self
            .targets
            .iter()
            .filter(|(k, t)| !fresh.contains(k) && now - t.last_ms > quiet_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for key in quiet {
            for ((k, diagnosis), track) in self.tracks.iter_mut() {
                if *k != key {
                    continue;
                }
                if let Some(mut a) = track.open.take() {
                    a.resolved_ms = now;
                    a.updated_ms = now;
                    tracing::info!(host = %k.host, pid = k.pid, diagnosis = *diagnosis, anomaly = %a.id, "anomaly resolved: the target went quiet");
                    changed_anomalies.push(a);
                }
            }
            self.tracks
                .retain(|(k, _), t| *k != key || t.open.is_some());
            self.targets.remove(&key);
        }
        self.tracks
            .retain(|(k, _), t| t.open.is_some() || t.streak > 0 || fresh.contains(k));

        // Incidents: group what changed, compare the fleet, notify, ask for captures.
        let incident_ids = self.incidents.apply(&mut changed_anomalies, now);
        for a in &changed_anomalies {
            if let Some(id) = a.target.as_ref().map(|t| TargetKey {
                host: t.host.clone(),
                pid: t.pid,
                start_ticks: t.start_ticks,
            }) && let Some(diagnosis) = diagnosis_id(&a.diagnosis)
                && let Some(track) = self.tracks.get_mut(&(id, diagnosis))
                && let Some(open) = &mut track.open
                && open.id == a.id
            {
                open.incident_id = a.incident_id.clone();
            }
        }
        let changes = self.incidents.refresh(&self.targets, now, incident_ids);
        if let Err(e) = self.storage.put_diagnoses(&changed_anomalies, &[]) {
            tracing::warn!(error = %e, "storing anomalies failed");
        }
        let mut changed_incidents = Vec::new();
        for (change, incident) in changes {
            if let Some(change) = change {
                (self.hooks.notify)(change, &incident);
            }
            changed_incidents.push(incident);
        }
        for ask in self.incidents.take_capture_asks() {
            (self.hooks.capture)(ask);
        }
        self.persist_incidents(changed_incidents);
        self.count_open();
    }

    fn persist_incidents(&mut self, incidents: Vec<v1::Incident>) {
        if incidents.is_empty() {
            return;
        }
        if let Err(e) = self.storage.put_diagnoses(&[], &incidents) {
            tracing::warn!(error = %e, "storing incidents failed");
        }
    }

    fn count_open(&self) {
        let open = self.tracks.values().filter(|t| t.open.is_some()).count();
        self.stats
            .open_anomalies
            .store(open as u64, Ordering::Relaxed);
        self.stats
            .open_incidents
            .store(self.incidents.open_count() as u64, Ordering::Relaxed);
        self.stats
            .targets
            .store(self.targets.len() as u64, Ordering::Relaxed);
    }
}

/// The diagnosis ids, as `&'static str`.
pub const DIAGNOSES: [&str; 11] = [
    "rss-retention",
    "heap-leak",
    "goroutine-leak",
    "goroutine-explosion",
    "stack-growth",
    "offheap-growth",
    "thread-leak",
    "gc-thrash",
    "forced-gc",
    "sched-pressure",
    "oom-risk",
];

pub fn diagnosis_id(name: &str) -> Option<&'static str> {
    DIAGNOSES.iter().copied().find(|d| *d == name)
}
