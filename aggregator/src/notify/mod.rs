//! Incident notifications: every change of an incident is POSTed to a JSON webhook and
//! to Prometheus Alertmanager's v2 API. Each sink has its own task fed by its own
//! bounded queue, so a slow or failing sink holds back neither the other nor the
//! detection engine. docs/notifications.md describes the settings and payloads.
//!
//! - [`webhook`]: the webhook payload and its retries.
//! - [`alertmanager`]: alerts, kept open by re-sending them.
//! - `client`: the HTTP client both use.

pub mod alertmanager;
mod client;
pub mod webhook;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use goroscope_proto::v1::Incident;
use tokio_util::sync::CancellationToken;

use crate::config::NotifyConfig;
use crate::metrics::Metrics;

/// What happened to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened,
    Updated,
    Resolved,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Opened => "opened",
            Change::Updated => "updated",
            Change::Resolved => "resolved",
        }
    }
}

/// One change of one incident, with the incident as it is after the change.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub change: Change,
    pub incident: Incident,
}

/// The handle the detection engine announces incidents through. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    queues: Arc<[Arc<Queue>]>,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// Starts one sender task per configured sink on the current tokio runtime; they
    /// stop when `cancel` is cancelled. With no `webhook_url` and no
    /// `alertmanager_url`, [`Notifier::send`] does nothing.
    pub fn start(
        config: NotifyConfig,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) -> anyhow::Result<Notifier> {
        Notifier::start_with(config, metrics, cancel, webhook::Retry::default())
    }

    pub(crate) fn start_with(
        config: NotifyConfig,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
        retry: webhook::Retry,
    ) -> anyhow::Result<Notifier> {
        let mut queues = Vec::new();
        if config.webhook_url.is_none() && config.alertmanager_url.is_none() {
            return Ok(Notifier {
                queues: queues.into(),
                metrics,
            });
        }
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current()
            .context("incident notifications need a tokio runtime")?;
        let client = client::Client::new(&config)?;
        if let Some(url) = &config.webhook_url {
            let url = url.parse().context("notify.webhook_url")?;
            let queue = Arc::new(Queue::new(webhook::SINK, config.queue));
            runtime.spawn(webhook::run(
                webhook::Webhook {
                    client: client.clone(),
                    url,
                    retry,
                    metrics: metrics.clone(),
                },
                queue.clone(),
                cancel.clone(),
            ));
            queues.push(queue);
        }
        if let Some(base) = &config.alertmanager_url {
            let url = alertmanager::alerts_url(base).context("notify.alertmanager_url")?;
            let queue = Arc::new(Queue::new(alertmanager::SINK, config.queue));
            runtime.spawn(alertmanager::run(
                alertmanager::Sender {
                    client,
                    url,
                    tracker: alertmanager::Tracker::new(
                        config.resend_interval,
                        config.external_url.clone(),
                    ),
                    metrics: metrics.clone(),
                },
                queue.clone(),
                cancel,
            ));
            queues.push(queue);
        }
        Ok(Notifier {
            queues: queues.into(),
            metrics,
        })
    }

    /// Queues `event` for every sink. Never blocks and never fails: a sink whose queue
    /// is full loses its oldest waiting change, counted as dropped.
    pub fn send(&self, event: Event) {
        let Some((last, others)) = self.queues.split_last() else {
            return;
        };
        for queue in others {
            self.push(queue, event.clone());
        }
        self.push(last, event);
    }

    fn push(&self, queue: &Queue, event: Event) {
        if let Some(dropped) = queue.push(event) {
            self.metrics.notification(queue.sink, "dropped");
            tracing::warn!(
                sink = queue.sink,
                incident = %dropped.incident.id,
                change = dropped.change.as_str(),
                "notification queue full, dropped its oldest change"
            );
        }
    }
}

/// A sink's waiting changes, oldest first.
pub(crate) struct Queue {
    sink: &'static str,
    cap: usize,
    events: Mutex<VecDeque<Event>>,
    wake: tokio::sync::Notify,
}

impl Queue {
    pub(crate) fn new(sink: &'static str, cap: usize) -> Queue {
        Queue {
            sink,
            cap: cap.max(1),
            events: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Appends `event`; returns the oldest one if it had to make room.
    pub(crate) fn push(&self, event: Event) -> Option<Event> {
        let dropped = {
            let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
            let dropped = if events.len() >= self.cap {
                events.pop_front()
            } else {
                None
            };
            events.push_back(event);
            dropped
        };
        self.wake.notify_one();
        dropped
    }

    fn pop(&self) -> Option<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// The oldest waiting change, once there is one.
    pub(crate) async fn next(&self) -> Event {
        loop {
            if let Some(event) = self.pop() {
                return event;
            }
            // A push between pop() and here leaves a permit, so no wake-up is lost.
            self.wake.notified().await;
        }
    }
}

/// An open incident with one anomaly and one cause, for the tests.
#[cfg(test)]
pub(crate) fn sample_incident() -> Incident {
    Incident {
        id: "00000000000000a1".into(),
        diagnosis: "goroutine-leak".into(),
        services: vec!["checkout".into()],
        opened_ms: 1_700_000_000_000,
        updated_ms: 1_700_000_060_000,
        severity: 0.3,
        summary: "goroutine leak in checkout".into(),
        service_targets: 10,
        anomalies: vec![goroscope_proto::v1::Anomaly {
            id: "00000000000000b1".into(),
            diagnosis: "goroutine-leak".into(),
            target: Some(goroscope_proto::v1::TargetId {
                host: "node-1".into(),
                pid: 42,
                start_ticks: 7,
            }),
            evidence_json: r#"{"slope":1.5,"window":"1h"}"#.into(),
            advice: "look at the blocked channel sends".into(),
            ..Default::default()
        }],
        causes: vec![goroscope_proto::v1::AttributeEvidence {
            attribute: "version".into(),
            value: "v2.4.0".into(),
            text: "9 of 10 on v2.4.0 affected, 0 of 8 on v2.3.1".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Event {
        Event {
            change: Change::Opened,
            incident: Incident {
                id: id.into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_full_queue_drops_its_oldest_change() {
        let queue = Queue::new("webhook", 2);
        assert!(queue.push(event("a")).is_none());
        assert!(queue.push(event("b")).is_none());
        assert_eq!(queue.push(event("c")).unwrap().incident.id, "a");
        assert_eq!(queue.pop().unwrap().incident.id, "b");
        assert_eq!(queue.pop().unwrap().incident.id, "c");
        assert!(queue.pop().is_none());
    }

    #[tokio::test]
    async fn send_without_sinks_does_nothing() {
        let notifier = Notifier::start(
            NotifyConfig::default(),
            Arc::new(Metrics::new()),
            CancellationToken::new(),
        )
        .unwrap();
        notifier.send(event("a"));
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let bad = [
            (
                NotifyConfig {
                    webhook_url: Some("ftp://example.com/hook".into()),
                    ..Default::default()
                },
                "notify.webhook_url",
            ),
            (
                NotifyConfig {
                    alertmanager_url: Some("http://user:secret@am:9093".into()),
                    ..Default::default()
                },
                "notify.alertmanager_url",
            ),
            (
                NotifyConfig {
                    external_url: Some("goroscope incident {id}".into()),
                    ..Default::default()
                },
                "notify.external_url",
            ),
            (
                NotifyConfig {
                    resend_interval: std::time::Duration::ZERO,
                    ..Default::default()
                },
                "notify.resend_interval",
            ),
            (
                NotifyConfig {
                    queue: 0,
                    ..Default::default()
                },
                "notify.queue",
            ),
            (
                NotifyConfig {
                    headers: [("X-Token".to_owned(), "a\nb".to_owned())].into(),
                    ..Default::default()
                },
                "notify.headers.X-Token",
            ),
        ];
        for (config, key) in bad {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
            assert!(!err.contains("secret") && !err.contains("a\nb"), "{err}");
        }
        NotifyConfig {
            webhook_url: Some("https://hooks.example.com/goroscope".into()),
            alertmanager_url: Some("http://127.0.0.1:9093".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
    }
}
