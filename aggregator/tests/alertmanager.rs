//! Incident notifications against a real Prometheus Alertmanager: one incident is one
//! alert from its opening to its resolution.

#[path = "../../tests/alertmanager.rs"]
mod alertmanager;

use std::sync::Arc;
use std::time::{Duration, Instant};

use alertmanager::Alertmanager;
use goroscope_aggregator::config::NotifyConfig;
use goroscope_aggregator::metrics::Metrics;
use goroscope_aggregator::notify::{Change, Event, Notifier};
use goroscope_proto::v1::{Anomaly, Incident, TargetId};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const ID: &str = "00000000000000c7";

fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The alerts of our incident among `alerts`.
fn ours(alerts: &Value) -> Vec<Value> {
    alerts
        .as_array()
        .expect("an array of alerts")
        .iter()
        .filter(|a| a["labels"]["incident"] == ID)
        .cloned()
        .collect()
}

#[test]
fn an_incident_is_one_alert_from_opened_to_resolved() {
    let am = Alertmanager::start();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let _enter = runtime.enter();
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let notifier = Notifier::start(
        NotifyConfig {
            alertmanager_url: Some(am.url()),
            external_url: Some("https://goroscope.example/incidents/{id}".into()),
            ..Default::default()
        },
        Arc::new(Metrics::new()),
        cancel.clone(),
    )
    .expect("start the notifier");

    let now = goroscope_proto::unix_ms();
    let mut incident = Incident {
        id: ID.into(),
        diagnosis: "goroutine-leak".into(),
        services: vec!["checkout".into()],
        opened_ms: now - 60_000,
        updated_ms: now,
        severity: 0.2,
        summary: "goroutine leak in checkout".into(),
        service_targets: 4,
        anomalies: vec![Anomaly {
            target: Some(TargetId {
                host: "node-1".into(),
                pid: 42,
                start_ticks: 1,
            }),
            advice: "look at the blocked channel sends".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    notifier.send(Event {
        change: Change::Opened,
        incident: incident.clone(),
    });
    let alert = eventually("the alert to be active", || {
        ours(&am.alerts())
            .into_iter()
            .find(|a| a["status"]["state"] == "active")
    });
    assert_eq!(alert["labels"]["alertname"], "goroscope_goroutine_leak");
    assert_eq!(alert["labels"]["service"], "checkout");
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["labels"]["diagnosis"], "goroutine-leak");
    assert_eq!(
        alert["annotations"]["summary"],
        "goroutine leak in checkout"
    );
    assert_eq!(
        alert["annotations"]["description"],
        "1 of 4 targets affected"
    );
    assert_eq!(
        alert["generatorURL"],
        format!("https://goroscope.example/incidents/{ID}")
    );

    incident.summary = "goroutine leak in checkout, growing".into();
    incident.updated_ms = goroscope_proto::unix_ms();
    notifier.send(Event {
        change: Change::Updated,
        incident: incident.clone(),
    });
    eventually("the alert's summary to change", || {
        let alerts = ours(&am.alerts());
        (alerts.len() == 1
            && alerts[0]["annotations"]["summary"] == "goroutine leak in checkout, growing")
            .then_some(())
    });
    assert_eq!(ours(&am.alerts())[0]["labels"], alert["labels"]);

    incident.resolved_ms = goroscope_proto::unix_ms();
    notifier.send(Event {
        change: Change::Resolved,
        incident,
    });
    eventually("the alert to be resolved", || {
        ours(&am.get_json("/api/v2/alerts?active=true"))
            .is_empty()
            .then_some(())
    });
}
