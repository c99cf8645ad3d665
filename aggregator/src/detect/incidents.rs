//! Incidents: anomalies grouped across the fleet by diagnosis, service and stack
//! signature, with what the affected targets share that the unaffected ones of the
//! same service do not ([`super::fleet`]), a severity, the captures that prove them,
//! and the changes the notifier is told of.
//!
//! A goroutine leak whose signature sits in a library (its innermost frame of the
//! program's code is outside package `main`) groups across services: one incident for
//! the signature, naming the module and version the affected services share.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use goroscope_proto::v1;

use super::fleet;
use super::target::TargetState;
use crate::config::DetectionConfig;
use crate::storage::TargetKey;

/// What changed about an incident, for notifications.
pub use crate::notify::Change;

/// A capture the detector wants for an incident.
#[derive(Debug, Clone)]
pub struct CaptureAsk {
    pub incident: String,
    pub target: TargetKey,
    pub labels: Vec<v1::Label>,
    pub kind: v1::CaptureKind,
    pub seconds: u32,
    /// A target of the service without the anomaly, for comparison.
    pub control: bool,
    /// Wait this long before asking (the second of two heap profiles).
    pub after: Duration,
}

/// Open incidents are refreshed (fleet comparison, severity) at least this often.
const REFRESH_EVERY_MS: i64 = 60_000;
/// Causes kept per incident.
const MAX_CAUSES: usize = 8;
/// Anomalies kept in an incident's record.
const MAX_MEMBERS: usize = 1000;

struct Open {
    incident: v1::Incident,
    key: String,
    /// Its anomalies by id, open or resolved while it was open.
    members: BTreeMap<String, v1::Anomaly>,
    notified: Option<(usize, String)>,
    refreshed_ms: i64,
    captures_asked: bool,
}

pub struct Incidents {
    config: DetectionConfig,
    open: HashMap<String, Open>,
    /// Open incident by group key.
    by_key: HashMap<String, String>,
    asks: Vec<CaptureAsk>,
}

impl Incidents {
    pub fn new(config: DetectionConfig) -> Incidents {
        Incidents {
            config,
            open: HashMap::new(),
            by_key: HashMap::new(),
            asks: Vec::new(),
        }
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Open incidents read back after a restart.
    pub fn load(&mut self, incidents: Vec<v1::Incident>) {
        for incident in incidents {
            let Some(first) = incident.anomalies.first() else {
                continue;
            };
            let key = group_key(first);
            let members = incident
                .anomalies
                .iter()
                .map(|a| (a.id.clone(), a.clone()))
                .collect();
            self.by_key.insert(key.clone(), incident.id.clone());
            self.open.insert(
                incident.id.clone(),
                Open {
                    notified: Some((open_members(&incident.anomalies), top_cause(&incident))),
                    refreshed_ms: 0,
                    captures_asked: true,
                    incident,
                    key,
                    members,
                },
            );
        }
    }

    /// Puts anomalies that opened or resolved into their incidents (opening one when
    /// needed) and sets their `incident_id`; the incidents touched.
    pub fn apply(&mut self, anomalies: &mut [v1::Anomaly], now: i64) -> HashSet<String> {
        let mut touched = HashSet::new();
        // Goroutine diagnoses first: stack growth on the same target joins theirs.
        anomalies.sort_by_key(|a| !a.diagnosis.starts_with("goroutine-"));
        for a in anomalies.iter_mut() {
            let key = match self.symptom_of(a) {
                Some(key) => key,
                None => group_key(a),
            };
            let id = match (self.by_key.get(&key), a.incident_id.is_empty()) {
                (_, false) if self.open.contains_key(&a.incident_id) => a.incident_id.clone(),
                (Some(id), _) => id.clone(),
                (None, _) if a.resolved_ms != 0 => continue,
                (None, _) => {
                    let id = crate::storage::captures::new_id(now);
                    let incident = v1::Incident {
                        id: id.clone(),
                        diagnosis: a.diagnosis.clone(),
                        services: vec![service_of(a)],
                        signature: a.signature.clone(),
                        opened_ms: now,
                        updated_ms: now,
                        ..Default::default()
                    };
                    tracing::info!(incident = %id, diagnosis = %a.diagnosis, service = %service_of(a), "incident opened");
                    self.by_key.insert(key.clone(), id.clone());
                    self.open.insert(
                        id.clone(),
                        Open {
                            incident,
                            key: key.clone(),
                            members: BTreeMap::new(),
                            notified: None,
                            refreshed_ms: 0,
                            captures_asked: false,
                        },
                    );
                    id
                }
            };
            a.incident_id = id.clone();
            let open = self.open.get_mut(&id).expect("open incident");
            if open.members.len() < MAX_MEMBERS || open.members.contains_key(&a.id) {
                open.members.insert(a.id.clone(), a.clone());
            }
            let service = service_of(a);
            if !open.incident.services.contains(&service) {
                open.incident.services.push(service);
                open.incident.services.sort();
            }
            touched.insert(id);
        }
        touched
    }

    /// Stack growth is the memory side of a goroutine leak or explosion: on a target
    /// with one open, it joins that incident instead of opening its own.
    fn symptom_of(&self, a: &v1::Anomaly) -> Option<String> {
        if a.diagnosis != "stack-growth" {
            return None;
        }
        let target = a.target.as_ref()?;
        self.open.values().find_map(|open| {
            open.members
                .values()
                .any(|m| {
                    m.resolved_ms == 0
                        && m.diagnosis.starts_with("goroutine-")
                        && m.target.as_ref() == Some(target)
                })
                .then(|| open.key.clone())
        })
    }

    /// Recomputes the touched incidents and those not refreshed for a while: members,
    /// the fleet comparison, severity, summary; resolves those with no open anomaly.
    /// Returns the incidents to persist, each with the change to notify, if any.
    pub fn refresh(
        &mut self,
        targets: &HashMap<TargetKey, TargetState>,
        now: i64,
        touched: HashSet<String>,
    ) -> Vec<(Option<Change>, v1::Incident)> {
        let mut out = Vec::new();
        let mut closed = Vec::new();
        let mut builds: HashMap<TargetKey, Option<std::sync::Arc<v1::BuildInfo>>> = HashMap::new();
        for (id, open) in self.open.iter_mut() {
            if !touched.contains(id) && now - open.refreshed_ms < REFRESH_EVERY_MS {
                continue;
            }
            open.refreshed_ms = now;
            compare(open, targets, &mut builds);
            let inc = &mut open.incident;
            inc.updated_ms = now;
            inc.anomalies = open.members.values().cloned().collect();
            let affected = open_members(&inc.anomalies);
            if affected == 0 {
                inc.resolved_ms = now;
                tracing::info!(incident = %id, diagnosis = %inc.diagnosis, "incident resolved");
                out.push((Some(Change::Resolved), inc.clone()));
                closed.push(id.clone());
                continue;
            }
            let state = (affected, top_cause(inc));
            match &open.notified {
                None => {
                    open.notified = Some(state);
                    out.push((Some(Change::Opened), inc.clone()));
                }
                Some(before) if *before != state => {
                    open.notified = Some(state);
                    out.push((Some(Change::Updated), inc.clone()));
                }
                // New evidence only: stored, not notified.
                Some(_) => out.push((None, inc.clone())),
            }
            if !open.captures_asked {
                open.captures_asked = true;
                self.asks
                    .extend(capture_asks(&self.config, inc, &open.members, targets));
                inc.captures = self
                    .asks
                    .iter()
                    .filter(|a| a.incident == inc.id)
                    .map(|a| v1::IncidentCapture {
                        capture: None,
                        control: a.control,
                        refused: String::new(),
                        kind: a.kind.into(),
                        target: Some(target_id(&a.target)),
                    })
                    .collect();
            }
        }
        for id in closed {
            if let Some(open) = self.open.remove(&id) {
                self.by_key.remove(&open.key);
            }
        }
        out
    }

    /// Captures wanted since the last call.
    pub fn take_capture_asks(&mut self) -> Vec<CaptureAsk> {
        std::mem::take(&mut self.asks)
    }

    /// Records a capture taken (or refused) for an open incident; the incident to store.
    pub fn captured(&mut self, id: &str, capture: v1::IncidentCapture) -> Vec<v1::Incident> {
        let Some(open) = self.open.get_mut(id) else {
            return Vec::new();
        };
        let inc = &mut open.incident;
        // Fill the pending entry of that target and kind, or add one.
        let pending = inc.captures.iter_mut().find(|c| {
            c.capture.is_none()
                && c.refused.is_empty()
                && c.kind == capture.kind
                && c.target == capture.target
                && c.control == capture.control
        });
        match pending {
            Some(slot) => *slot = capture,
            None => inc.captures.push(capture),
        }
        vec![inc.clone()]
    }
}

fn target_id(k: &TargetKey) -> v1::TargetId {
    v1::TargetId {
        host: k.host.clone(),
        pid: k.pid,
        start_ticks: k.start_ticks,
    }
}

fn key_of(a: &v1::Anomaly) -> Option<TargetKey> {
    a.target.as_ref().map(|t| TargetKey {
        host: t.host.clone(),
        pid: t.pid,
        start_ticks: t.start_ticks,
    })
}

fn label<'a>(labels: &'a [v1::Label], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.value.as_str())
}

fn service_of(a: &v1::Anomaly) -> String {
    label(&a.labels, "service").unwrap_or("").to_owned()
}

fn open_members(anomalies: &[v1::Anomaly]) -> usize {
    anomalies.iter().filter(|a| a.resolved_ms == 0).count()
}

fn top_cause(inc: &v1::Incident) -> String {
    inc.causes
        .first()
        .map(|c| c.text.clone())
        .unwrap_or_default()
}

/// Whether a signature's innermost frame of the program's code is in a library.
fn in_library(signature: &str) -> bool {
    let frame = signature.split_once(' ').map_or("", |(_, f)| f);
    !frame.is_empty() && !frame.starts_with("main.") && frame.contains('/')
}

/// What groups anomalies into one incident.
pub fn group_key(a: &v1::Anomaly) -> String {
    if a.diagnosis == "goroutine-leak" && in_library(&a.signature) {
        format!("{}|signature|{}", a.diagnosis, a.signature)
    } else {
        format!("{}|service|{}|{}", a.diagnosis, service_of(a), a.signature)
    }
}

/// The fleet comparison: the incident's services' live targets, affected or not, on
/// every attribute; plus, across services, the module they share.
fn compare(
    open: &mut Open,
    targets: &HashMap<TargetKey, TargetState>,
    builds: &mut HashMap<TargetKey, Option<std::sync::Arc<v1::BuildInfo>>>,
) {
    let affected: HashSet<TargetKey> = open
        .members
        .values()
        .filter(|a| a.resolved_ms == 0)
        .filter_map(key_of)
        .collect();
    let services: BTreeSet<&str> = open.incident.services.iter().map(String::as_str).collect();
    let mut members = Vec::new();
    let mut oom_at = i64::MAX;
    for a in open.members.values().filter(|a| a.resolved_ms == 0) {
        if a.oom_at_ms > 0 {
            oom_at = oom_at.min(a.oom_at_ms);
        }
    }
    let mut per_service: BTreeMap<String, (bool, BTreeMap<String, String>)> = BTreeMap::new();
    for (key, t) in targets {
        if t.gone || !services.contains(t.service()) {
            continue;
        }
        let build = builds
            .entry(key.clone())
            .or_insert_with(|| t.meta.build.clone())
            .clone();
        let (go_version, revision, deps) = match &build {
            Some(b) => (
                b.go_version.clone(),
                b.settings
                    .iter()
                    .find(|s| s.name == "vcs.revision")
                    .map(|s| s.value.clone())
                    .unwrap_or_default(),
                b.deps
                    .iter()
                    .map(|m| (m.path.clone(), module_version(m)))
                    .collect::<Vec<_>>(),
            ),
            None => (String::new(), String::new(), Vec::new()),
        };
        let go_version = t
            .meta
            .labels
            .get("go_version")
            .cloned()
            .unwrap_or(go_version);
        let is_affected = affected.contains(key);
        let entry = per_service
            .entry(t.service().to_owned())
            .or_insert_with(|| (false, deps.iter().cloned().collect()));
        entry.0 |= is_affected;
        members.push(fleet::Member {
            id: format!("{}/{}/{}", key.host, key.pid, key.start_ticks),
            affected: is_affected,
            attributes: fleet::attributes(&t.meta.labels, &key.host, &go_version, &revision, &deps),
        });
    }
    let inc = &mut open.incident;
    inc.service_targets = members.len() as u32;
    let affected_n = members.iter().filter(|m| m.affected).count();
    inc.causes = fleet::probable_causes(&members, MAX_CAUSES)
        .into_iter()
        .map(|c| v1::AttributeEvidence {
            attribute: c.attribute,
            value: c.value,
            affected_with: c.affected_with,
            total_with: c.total_with,
            affected_without: c.affected_without,
            total_without: c.total_without,
            p_value: c.p_value,
            text: c.text,
        })
        .collect();
    if inc.services.len() > 1 {
        let services: Vec<fleet::ServiceDeps> = per_service
            .into_iter()
            .map(|(service, (affected, deps))| fleet::ServiceDeps {
                service,
                affected,
                deps,
            })
            .collect();
        let frames: Vec<String> = open
            .members
            .values()
            .filter_map(|a| a.signature.split_once(' ').map(|(_, f)| f.to_owned()))
            .collect();
        if let Some(shared) = fleet::shared_module(&services, &frames) {
            inc.causes.insert(
                0,
                v1::AttributeEvidence {
                    attribute: format!("module:{}", shared.module),
                    value: shared.version,
                    affected_with: shared.affected_with,
                    total_with: shared.total_with,
                    affected_without: shared.affected_without,
                    total_without: shared.total_without,
                    p_value: 0.0,
                    text: shared.text,
                },
            );
        }
    }
    let now = goroscope_proto::unix_ms();
    let to_oom = (oom_at != i64::MAX).then(|| ((oom_at - now).max(0)) as f64 / 1000.0);
    inc.oom_at_ms = if oom_at == i64::MAX { 0 } else { oom_at };
    inc.severity = fleet::severity(affected_n, members.len().max(affected_n), to_oom);
    inc.summary = summary(inc, affected_n, members.len());
}

fn module_version(m: &v1::Module) -> String {
    match &m.replace {
        Some(r) if r.version.is_empty() => format!("{} => {}", m.version, r.path),
        Some(r) => format!("=> {} {}", r.path, r.version),
        None => m.version.clone(),
    }
}

fn summary(inc: &v1::Incident, affected: usize, total: usize) -> String {
    let what = if inc.signature.is_empty() {
        inc.diagnosis.clone()
    } else {
        format!("{} ({})", inc.diagnosis, inc.signature)
    };
    let mut s = format!(
        "{what} in {}: {affected} of {} target{} affected",
        inc.services.join(", "),
        total.max(affected),
        if total.max(affected) == 1 { "" } else { "s" }
    );
    match inc.causes.first() {
        Some(c) => s.push_str(&format!("; probable cause: {}", c.text)),
        None if affected == total && total > 1 => s.push_str("; every target of the service"),
        None => {}
    }
    s
}

/// The captures that prove an incident, from a few affected targets and one or two
/// controls of the same service; within the capture hub's limits, asked by the caller.
fn capture_asks(
    config: &DetectionConfig,
    inc: &v1::Incident,
    members: &BTreeMap<String, v1::Anomaly>,
    targets: &HashMap<TargetKey, TargetState>,
) -> Vec<CaptureAsk> {
    if !config.captures {
        return Vec::new();
    }
    let heap = v1::CaptureKind::Heap;
    let plan: &[(v1::CaptureKind, u32, Duration)] = match inc.diagnosis.as_str() {
        "goroutine-leak" | "goroutine-explosion" | "stack-growth" | "thread-leak" => {
            &[(v1::CaptureKind::Goroutine, 0, Duration::ZERO)]
        }
        "heap-leak" | "offheap-growth" | "oom-risk" | "gc-thrash" => &[
            (heap, 0, Duration::ZERO),
            (heap, 0, config.second_heap_after),
        ],
        "sched-pressure" => &[(v1::CaptureKind::Trace, 5, Duration::ZERO)],
        _ => &[],
    };
    if plan.is_empty() {
        return Vec::new();
    }
    let affected: BTreeSet<TargetKey> = members
        .values()
        .filter(|a| a.resolved_ms == 0)
        .filter_map(key_of)
        .collect();
    let usable = |k: &TargetKey| {
        targets
            .get(k)
            .is_some_and(|t| !t.gone && t.meta.coverage.pprof)
    };
    let labels = |k: &TargetKey| -> Vec<v1::Label> {
        targets.get(k).map_or_else(Vec::new, |t| {
            t.meta
                .labels
                .iter()
                .map(|(n, v)| v1::Label {
                    name: n.clone(),
                    value: v.clone(),
                })
                .collect()
        })
    };
    let services: BTreeSet<&str> = inc.services.iter().map(String::as_str).collect();
    let mut controls: Vec<&TargetKey> = targets
        .iter()
        .filter(|(k, t)| services.contains(t.service()) && !affected.contains(*k) && usable(k))
        .map(|(k, _)| k)
        .collect();
    controls.sort();
    let mut out = Vec::new();
    let picks = affected
        .iter()
        .filter(|k| usable(k))
        .take(config.captures_per_incident)
        .map(|k| (k, false))
        .chain(
            controls
                .into_iter()
                .take(config.controls_per_incident)
                .map(|k| (k, true)),
        );
    for (k, control) in picks {
        for (i, (kind, seconds, after)) in plan.iter().enumerate() {
            // Controls get one of each kind.
            if control && i > 0 {
                continue;
            }
            let mut kind = *kind;
            if kind == v1::CaptureKind::Goroutine
                && targets
                    .get(k)
                    .is_some_and(|t| t.meta.coverage.goroutineleak)
            {
                kind = v1::CaptureKind::Goroutineleak;
            }
            out.push(CaptureAsk {
                incident: inc.id.clone(),
                target: k.clone(),
                labels: labels(k),
                kind,
                seconds: *seconds,
                control,
                after: *after,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn config() -> DetectionConfig {
        DetectionConfig::default()
    }

    fn target(
        host: &str,
        pid: u32,
        service: &str,
        version: &str,
        deps: &[(&str, &str)],
    ) -> (TargetKey, TargetState) {
        let key = TargetKey {
            host: host.into(),
            pid,
            start_ticks: 1,
        };
        let mut t = TargetState::new(key.clone(), 1800.0);
        t.meta.labels = [
            ("service".to_owned(), service.to_owned()),
            ("version".to_owned(), version.to_owned()),
            ("go_version".to_owned(), "go1.26.0".to_owned()),
        ]
        .into_iter()
        .collect();
        t.meta.coverage.pprof = true;
        t.meta.build = Some(Arc::new(v1::BuildInfo {
            go_version: "go1.26.0".into(),
            deps: deps
                .iter()
                .map(|(p, v)| v1::Module {
                    path: (*p).into(),
                    version: (*v).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }));
        (key, t)
    }

    fn leak_on(key: &TargetKey, t: &TargetState, signature: &str, id: u32) -> v1::Anomaly {
        v1::Anomaly {
            id: format!("{id:016x}"),
            diagnosis: "goroutine-leak".into(),
            target: Some(target_id(key)),
            labels: t
                .meta
                .labels
                .iter()
                .map(|(n, v)| v1::Label {
                    name: n.clone(),
                    value: v.clone(),
                })
                .collect(),
            signature: signature.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_leak_on_the_new_version_only_names_the_version_and_asks_for_captures() {
        let mut targets = HashMap::new();
        for i in 0..12u32 {
            let version = if i < 6 { "v2.3.1" } else { "v2.4.0" };
            let (k, t) = target(&format!("node-{}", i / 2), 100 + i, "orders", version, &[]);
            targets.insert(k, t);
        }
        let mut inc = Incidents::new(config());
        let sig = "abandoned-channel main.handle.func1";
        let mut anomalies: Vec<v1::Anomaly> = targets
            .iter()
            .filter(|(_, t)| t.meta.labels["version"] == "v2.4.0")
            .enumerate()
            .map(|(n, (k, t))| leak_on(k, t, sig, n as u32))
            .collect();
        let touched = inc.apply(&mut anomalies, 1000);
        assert_eq!(touched.len(), 1, "one incident for the six");
        assert!(anomalies.iter().all(|a| !a.incident_id.is_empty()));
        let changes = inc.refresh(&targets, 1000, touched);
        assert_eq!(changes.len(), 1);
        let (change, incident) = &changes[0];
        assert_eq!(*change, Some(Change::Opened));
        assert_eq!(incident.service_targets, 12);
        let cause = &incident.causes[0];
        assert_eq!(
            (cause.attribute.as_str(), cause.value.as_str()),
            ("version", "v2.4.0")
        );
        assert_eq!(
            (
                cause.affected_with,
                cause.total_with,
                cause.affected_without,
                cause.total_without
            ),
            (6, 6, 0, 6)
        );
        assert_eq!(cause.text, "6 of 6 on v2.4.0 affected, 0 of 6 on v2.3.1");
        assert!(incident.summary.contains("6 of 12"), "{}", incident.summary);
        assert!((incident.severity - 0.5).abs() < 1e-9);
        // Two affected targets and one control, a goroutine dump each.
        let asks = inc.take_capture_asks();
        assert_eq!(asks.iter().filter(|a| !a.control).count(), 2);
        assert_eq!(asks.iter().filter(|a| a.control).count(), 1);
        assert!(asks.iter().all(|a| a.kind == v1::CaptureKind::Goroutine));
        let control = asks.iter().find(|a| a.control).unwrap();
        assert_eq!(targets[&control.target].meta.labels["version"], "v2.3.1");

        // All resolve: the incident does, and says so once.
        for a in &mut anomalies {
            a.resolved_ms = 2000;
        }
        let touched = inc.apply(&mut anomalies, 2000);
        let changes = inc.refresh(&targets, 2000, touched);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].0, Some(Change::Resolved));
        assert_eq!(changes[0].1.resolved_ms, 2000);
        assert_eq!(inc.open_count(), 0);
    }

    #[test]
    fn one_library_signature_leaking_in_several_services_names_the_shared_module() {
        let pool = ("github.com/acme/pool", "v1.4.0");
        let other = ("github.com/acme/pool", "v1.3.0");
        let mut targets = HashMap::new();
        let specs = [
            ("orders", pool),
            ("billing", pool),
            ("search", pool),
            ("auth", other),
            ("mail", other),
        ];
        for (i, (service, dep)) in specs.iter().enumerate() {
            let (k, t) = target("node-1", 10 + i as u32, service, "v1", &[*dep]);
            targets.insert(k, t);
        }
        let sig = "abandoned-channel github.com/acme/pool.(*Pool).watch";
        let mut inc = Incidents::new(config());
        let mut anomalies: Vec<v1::Anomaly> = targets
            .iter()
            .filter(|(_, t)| ["orders", "billing", "search"].contains(&t.service()))
            .enumerate()
            .map(|(n, (k, t))| leak_on(k, t, sig, n as u32))
            .collect();
        let touched = inc.apply(&mut anomalies, 1000);
        assert_eq!(touched.len(), 1, "one incident across the services");
        let changes = inc.refresh(&targets, 1000, touched);
        let incident = &changes[0].1;
        assert_eq!(incident.services, ["billing", "orders", "search"]);
        let cause = &incident.causes[0];
        assert_eq!(cause.attribute, "module:github.com/acme/pool");
        assert_eq!(cause.value, "v1.4.0");
        assert!(
            cause.text.contains("github.com/acme/pool v1.4.0"),
            "{}",
            cause.text
        );
    }

    #[test]
    fn stack_growth_joins_the_goroutine_leak_of_its_target() {
        let mut targets = HashMap::new();
        let (k, t) = target("node-1", 1, "orders", "v1", &[]);
        targets.insert(k.clone(), t);
        let t = &targets[&k];
        let mut inc = Incidents::new(config());
        let mut growth = leak_on(&k, t, "", 2);
        growth.diagnosis = "stack-growth".into();
        let mut both = vec![growth, leak_on(&k, t, "abandoned-channel main.f", 1)];
        let touched = inc.apply(&mut both, 1000);
        assert_eq!(touched.len(), 1);
        assert_eq!(both[0].incident_id, both[1].incident_id);
    }

    fn anomaly(diagnosis: &str, service: &str, signature: &str) -> v1::Anomaly {
        v1::Anomaly {
            diagnosis: diagnosis.into(),
            signature: signature.into(),
            labels: vec![v1::Label {
                name: "service".into(),
                value: service.into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn leaks_in_a_library_group_across_services_and_the_rest_by_service() {
        let lib = "abandoned-channel github.com/acme/pool.(*P).watch";
        assert_eq!(
            group_key(&anomaly("goroutine-leak", "a", lib)),
            group_key(&anomaly("goroutine-leak", "b", lib))
        );
        let main = "abandoned-channel main.handle.func1";
        assert_ne!(
            group_key(&anomaly("goroutine-leak", "a", main)),
            group_key(&anomaly("goroutine-leak", "b", main))
        );
        assert_ne!(
            group_key(&anomaly("heap-leak", "a", "")),
            group_key(&anomaly("goroutine-leak", "a", ""))
        );
    }
}
