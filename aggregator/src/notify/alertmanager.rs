//! The Alertmanager sink: one alert per incident, POSTed to `/api/v2/alerts`.
//!
//! Alertmanager resolves an alert at its `endsAt`, so open incidents are posted again
//! every `resend_interval` with `endsAt` [`ENDS_AFTER_RESENDS`] intervals ahead, and a
//! resolved one once with `endsAt` at its resolution. An alert's labels are fixed when
//! its incident is first seen (grouping and silences match on them); only a rise from
//! `warning` to `critical` changes them, which ends the warning alert.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use goroscope_proto::v1::Incident;
use hyper::Uri;
use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::{Change, Event, Queue};
use crate::metrics::Metrics;

pub(crate) const SINK: &str = "alertmanager";
/// An open alert's `endsAt` is this many resend intervals ahead: a few missed posts do
/// not resolve it, a stopped aggregator's alerts resolve within minutes.
pub const ENDS_AFTER_RESENDS: u32 = 4;
/// Open incidents tracked at most; beyond, the oldest is forgotten (its alert then
/// expires in Alertmanager).
const MAX_OPEN: usize = 10_000;
/// Ended alerts waiting to be delivered, at most.
const MAX_ENDED: usize = 1_000;
/// Alerts in one POST at most.
const BATCH: usize = 500;
/// An OOM expected within this long makes an incident critical.
const OOM_SOON_MS: i64 = 3_600_000;

/// `<base>/api/v2/alerts`.
pub(crate) fn alerts_url(base: &str) -> anyhow::Result<Uri> {
    Ok(format!("{}/api/v2/alerts", base.trim_end_matches('/')).parse()?)
}

/// One alert as Alertmanager's API takes it, but for `endsAt` while it is open.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: BTreeMap<&'static str, String>,
    pub annotations: BTreeMap<&'static str, String>,
    pub starts_at_ms: i64,
    /// When it ended (resolved, or replaced by a critical one); `None` while open.
    pub ends_at_ms: Option<i64>,
    pub generator_url: Option<String>,
}

impl Alert {
    /// The alert of `incident` as it is now; `external_url` makes the `generatorURL`.
    pub fn of(incident: &Incident, now_ms: i64, external_url: Option<&str>) -> Alert {
        let i = incident;
        let mut labels = BTreeMap::new();
        labels.insert("alertname", alertname(&i.diagnosis));
        labels.insert("incident", i.id.clone());
        labels.insert("severity", severity(i, now_ms).to_owned());
        // An empty label is no label to Alertmanager; leave those out.
        for (name, value) in [
            ("diagnosis", i.diagnosis.clone()),
            ("service", i.services.join(",")),
        ] {
            if !value.is_empty() {
                labels.insert(name, value);
            }
        }
        let mut annotations = BTreeMap::new();
        let advice = i
            .anomalies
            .first()
            .map(|a| a.advice.clone())
            .unwrap_or_default();
        for (name, value) in [
            ("summary", i.summary.clone()),
            ("description", description(i)),
            ("advice", advice),
        ] {
            if !value.is_empty() {
                annotations.insert(name, value);
            }
        }
        Alert {
            labels,
            annotations,
            starts_at_ms: i.opened_ms,
            ends_at_ms: None,
            generator_url: external_url.map(|u| u.replace("{id}", &i.id)),
        }
    }

    /// The JSON Alertmanager takes; an open alert ends `ENDS_AFTER_RESENDS` times
    /// `resend` after `now_ms`.
    pub fn to_json(&self, now_ms: i64, resend: Duration) -> Value {
        let ends_at = self
            .ends_at_ms
            .unwrap_or_else(|| now_ms.saturating_add(horizon_ms(resend)));
        let mut alert = json!({
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": rfc3339(self.starts_at_ms),
            "endsAt": rfc3339(ends_at),
        });
        if let Some(url) = &self.generator_url {
            alert["generatorURL"] = Value::String(url.clone());
        }
        alert
    }

    fn severity(&self) -> &str {
        self.labels.get("severity").map_or("", String::as_str)
    }
}

/// `goroscope_` and the diagnosis with `_` for `-`: `goroutine-leak` gives
/// `goroscope_goroutine_leak`.
pub fn alertname(diagnosis: &str) -> String {
    let diagnosis = if diagnosis.is_empty() {
        "unknown"
    } else {
        diagnosis
    };
    format!("goroscope_{}", diagnosis.replace('-', "_"))
}

/// `critical` from a severity of 0.5 (half the service affected) or an OOM expected
/// within the hour; `warning` below.
pub fn severity(incident: &Incident, now_ms: i64) -> &'static str {
    let oom_soon = incident.oom_at_ms > 0 && incident.oom_at_ms - now_ms <= OOM_SOON_MS;
    if incident.severity >= 0.5 || oom_soon {
        "critical"
    } else {
        "warning"
    }
}

/// The probable cause and how many targets are affected.
fn description(i: &Incident) -> String {
    let affected = i
        .anomalies
        .iter()
        .filter_map(|a| a.target.as_ref())
        .map(|t| (&t.host, t.pid, t.start_ticks))
        .collect::<HashSet<_>>()
        .len();
    let total = if i.service_targets > 0 {
        format!("{affected} of {}", i.service_targets)
    } else {
        affected.to_string()
    };
    let plural = if (i.service_targets as usize).max(affected) == 1 {
        ""
    } else {
        "s"
    };
    let count = format!("{total} target{plural} affected");
    match i.causes.first() {
        Some(cause) if !cause.text.is_empty() => format!("{}; {count}", cause.text),
        _ => count,
    }
}

fn horizon_ms(resend: Duration) -> i64 {
    i64::try_from((resend * ENDS_AFTER_RESENDS).as_millis()).unwrap_or(i64::MAX)
}

fn rfc3339(unix_ms: i64) -> String {
    // The end of year 9999, past which RFC 3339 has no digits.
    const MAX_MS: i64 = 253_402_300_799_000;
    let at = UNIX_EPOCH + Duration::from_millis(unix_ms.clamp(0, MAX_MS) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

/// The alerts of open incidents, and of ended ones until Alertmanager has them.
pub struct Tracker {
    resend: Duration,
    external_url: Option<String>,
    open: HashMap<String, Alert>,
    ended: Vec<Alert>,
}

impl Tracker {
    pub fn new(resend: Duration, external_url: Option<String>) -> Tracker {
        Tracker {
            resend,
            external_url,
            open: HashMap::new(),
            ended: Vec::new(),
        }
    }

    /// Takes in one change; returns the alerts to post for it.
    pub fn apply(&mut self, event: &Event, now_ms: i64) -> Vec<Alert> {
        let i = &event.incident;
        let mut alert = Alert::of(i, now_ms, self.external_url.as_deref());
        let mut post = Vec::new();
        if let Some(old) = self.open.remove(&i.id) {
            // A resolution ends the alert that is open, whatever its severity now.
            let escalated = event.change != Change::Resolved
                && old.severity() == "warning"
                && alert.severity() == "critical";
            let mut labels = old.labels.clone();
            if escalated {
                labels.insert("severity", "critical".to_owned());
                let mut ended = old;
                ended.ends_at_ms = Some(now_ms.max(ended.starts_at_ms));
                post.push(ended);
            }
            alert.labels = labels;
        }
        if event.change == Change::Resolved {
            let at = if i.resolved_ms > 0 {
                i.resolved_ms
            } else {
                now_ms
            };
            alert.ends_at_ms = Some(at.max(alert.starts_at_ms));
        } else {
            if self.open.len() >= MAX_OPEN
                && let Some(oldest) = self
                    .open
                    .iter()
                    .min_by_key(|(_, a)| a.starts_at_ms)
                    .map(|(id, _)| id.clone())
            {
                tracing::warn!(incident = %oldest, "too many open incidents, forgot the oldest");
                self.open.remove(&oldest);
            }
            self.open.insert(i.id.clone(), alert.clone());
        }
        post.push(alert);
        self.ended
            .extend(post.iter().filter(|a| a.ends_at_ms.is_some()).cloned());
        if self.ended.len() > MAX_ENDED {
            let excess = self.ended.len() - MAX_ENDED;
            self.ended.drain(..excess);
        }
        post
    }

    /// Alertmanager took `alerts`: the ended ones among them need no more posts.
    pub fn delivered(&mut self, alerts: &[Alert]) {
        self.ended.retain(|a| !alerts.contains(a));
    }

    /// The alerts to post again: every open one, and the ended ones not yet delivered
    /// unless Alertmanager has expired them by now anyway.
    pub fn due(&mut self, now_ms: i64) -> Vec<Alert> {
        let horizon = horizon_ms(self.resend);
        self.ended.retain(|a| {
            a.ends_at_ms
                .is_some_and(|t| t.saturating_add(horizon) > now_ms)
        });
        self.open.values().chain(&self.ended).cloned().collect()
    }

    pub fn resend_interval(&self) -> Duration {
        self.resend
    }
}

pub(crate) struct Sender {
    pub client: Client,
    pub url: Uri,
    pub tracker: Tracker,
    pub metrics: Arc<Metrics>,
}

/// Posts each change as it comes and every open alert each resend interval. A failed
/// post is not retried on its own: the next resend carries its alerts again.
pub(crate) async fn run(mut sender: Sender, queue: Arc<Queue>, cancel: CancellationToken) {
    let resend = sender.tracker.resend_interval();
    let mut tick = tokio::time::interval_at(Instant::now() + resend, resend);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let alerts = tokio::select! {
            _ = cancel.cancelled() => return,
            event = queue.next() => sender.tracker.apply(&event, goroscope_proto::unix_ms()),
            _ = tick.tick() => sender.tracker.due(goroscope_proto::unix_ms()),
        };
        for batch in alerts.chunks(BATCH) {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = sender.post(batch) => {}
            }
        }
    }
}

impl Sender {
    async fn post(&mut self, alerts: &[Alert]) {
        let now = goroscope_proto::unix_ms();
        let resend = self.tracker.resend_interval();
        let body = Value::Array(alerts.iter().map(|a| a.to_json(now, resend)).collect());
        match self
            .client
            .post_json(&self.url, Bytes::from(body.to_string()))
            .await
        {
            Ok(()) => {
                self.metrics.notification(SINK, "sent");
                self.tracker.delivered(alerts);
            }
            Err(e) => {
                self.metrics.notification(SINK, "failed");
                tracing::warn!(
                    alerts = alerts.len(),
                    error = %e,
                    "posting alerts to Alertmanager failed; they go again with the next resend"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::sample_incident;

    const RESEND: Duration = Duration::from_secs(60);

    fn event(change: Change, incident: &Incident) -> Event {
        Event {
            change,
            incident: incident.clone(),
        }
    }

    #[test]
    fn alertname_maps_the_diagnosis() {
        assert_eq!(alertname("goroutine-leak"), "goroscope_goroutine_leak");
        assert_eq!(alertname("oom-risk"), "goroscope_oom_risk");
        assert_eq!(alertname("gc-thrash"), "goroscope_gc_thrash");
        assert_eq!(alertname(""), "goroscope_unknown");
    }

    #[test]
    fn alert_carries_labels_annotations_and_times() {
        let i = sample_incident();
        let now = i.updated_ms;
        let alert = Alert::of(&i, now, Some("https://goroscope.example/incidents/{id}"));
        let json = alert.to_json(now, RESEND);
        assert_eq!(
            json["labels"],
            json!({
                "alertname": "goroscope_goroutine_leak",
                "service": "checkout",
                "severity": "warning",
                "incident": "00000000000000a1",
                "diagnosis": "goroutine-leak",
            })
        );
        assert_eq!(json["annotations"]["summary"], "goroutine leak in checkout");
        assert_eq!(
            json["annotations"]["description"],
            "9 of 10 on v2.4.0 affected, 0 of 8 on v2.3.1; 1 of 10 targets affected"
        );
        assert_eq!(
            json["annotations"]["advice"],
            "look at the blocked channel sends"
        );
        assert_eq!(json["startsAt"], "2023-11-14T22:13:20.000Z");
        // Open: four resend intervals ahead.
        assert_eq!(json["endsAt"], "2023-11-14T22:18:20.000Z");
        assert_eq!(
            json["generatorURL"],
            "https://goroscope.example/incidents/00000000000000a1"
        );
    }

    #[test]
    fn severity_is_critical_from_half_the_service_or_an_oom_within_the_hour() {
        let mut i = sample_incident();
        let now = 1_700_000_000_000;
        assert_eq!(severity(&i, now), "warning");
        i.severity = 0.5;
        assert_eq!(severity(&i, now), "critical");
        i.severity = 0.1;
        i.oom_at_ms = now + 3 * 3_600_000;
        assert_eq!(severity(&i, now), "warning");
        i.oom_at_ms = now + 1_800_000;
        assert_eq!(severity(&i, now), "critical");
    }

    #[test]
    fn labels_stay_the_same_from_opened_to_resolved() {
        let mut tracker = Tracker::new(RESEND, None);
        let mut i = sample_incident();
        let now = i.updated_ms;
        let opened = tracker.apply(&event(Change::Opened, &i), now);
        assert_eq!(opened.len(), 1);
        assert_eq!(opened[0].ends_at_ms, None);

        // The incident spreads to a second service: the summary says so, the labels do not.
        i.services.push("payments".into());
        i.summary = "goroutine leak in checkout and payments".into();
        let updated = tracker.apply(&event(Change::Updated, &i), now + 60_000);
        assert_eq!(updated.len(), 1);
        assert_eq!(updated[0].labels, opened[0].labels);
        assert_eq!(
            updated[0].annotations["summary"],
            "goroutine leak in checkout and payments"
        );
        assert_eq!(tracker.due(now + 60_000), updated);

        i.resolved_ms = now + 120_000;
        let resolved = tracker.apply(&event(Change::Resolved, &i), now + 125_000);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].labels, opened[0].labels);
        assert_eq!(resolved[0].ends_at_ms, Some(now + 120_000));
        let json = resolved[0].to_json(now + 125_000, RESEND);
        assert_eq!(json["endsAt"], rfc3339(now + 120_000));
        assert_eq!(json["startsAt"], rfc3339(i.opened_ms));
    }

    #[test]
    fn a_resolved_alert_is_posted_again_until_delivered() {
        let mut tracker = Tracker::new(RESEND, None);
        let mut i = sample_incident();
        let now = i.updated_ms;
        tracker.apply(&event(Change::Opened, &i), now);
        i.resolved_ms = now;
        let resolved = tracker.apply(&event(Change::Resolved, &i), now);
        // The post failed: the next resend carries it.
        assert_eq!(tracker.due(now + 60_000), resolved);
        tracker.delivered(&resolved);
        assert!(tracker.due(now + 120_000).is_empty());

        // Undelivered past the horizon: Alertmanager has expired it anyway.
        tracker.apply(&event(Change::Resolved, &i), now);
        assert!(tracker.due(now + 5 * 60_000).is_empty());
    }

    #[test]
    fn a_rise_to_critical_ends_the_warning_alert_and_severity_never_falls() {
        let mut tracker = Tracker::new(RESEND, None);
        let mut i = sample_incident();
        let now = i.updated_ms;
        let warning = tracker.apply(&event(Change::Opened, &i), now).remove(0);
        i.severity = 0.8;
        let posted = tracker.apply(&event(Change::Updated, &i), now + 60_000);
        assert_eq!(posted.len(), 2);
        assert_eq!(posted[0].labels, warning.labels);
        assert_eq!(posted[0].ends_at_ms, Some(now + 60_000));
        assert_eq!(posted[1].labels["severity"], "critical");
        assert_eq!(posted[1].labels["incident"], warning.labels["incident"]);
        assert_eq!(posted[1].ends_at_ms, None);

        i.severity = 0.2;
        let posted = tracker.apply(&event(Change::Updated, &i), now + 120_000);
        assert_eq!(posted.len(), 1);
        assert_eq!(posted[0].labels["severity"], "critical");
    }
}
