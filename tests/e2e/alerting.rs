//! Incidents reach a real Alertmanager (Debian's `prometheus-alertmanager`) end to end:
//! a leaking workload opens an incident and its alert fires; a second leaking process
//! of the same service joins it and the alert is updated, still one alert; both exit,
//! the incident resolves and the alert with it.

use std::time::Duration;

use goroscope_tests::*;

/// The alerts for `incident` that Alertmanager holds as active.
fn active(am: &Alertmanager, incident: &str) -> Vec<serde_json::Value> {
    am.get_json("/api/v2/alerts?active=true&silenced=false&inhibited=false")
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["labels"]["incident"] == incident)
        .collect()
}

#[test]
fn an_incident_fires_updates_and_resolves_its_alertmanager_alert() {
    // Every collector sees every Go process of the machine: no other test's leaking
    // workloads meanwhile.
    let _alone = detection_lock();
    let am = Alertmanager::start();
    let host = "e2e-alerting";
    let certs = Certs::new(&[host]);
    let data = tempfile::tempdir().expect("create a temporary directory");
    let agg = Aggregator::start_with(
        &certs,
        &data.path().join("db"),
        0,
        &format!(
            "[detection]\nevaluate_every = \"2s\"\nresolve_after = \"1m\"\n\
             [notify]\nalertmanager_url = {:?}\nresend_interval = \"5s\"\n",
            am.url()
        ),
    );
    let settings = data.path().join("collector.toml");
    std::fs::write(
        &settings,
        "[stacks]\npause_budget = 0.05\nfull_interval = \"20s\"\n",
    )
    .expect("write the collector settings");
    let _collector = Proc::spawn(
        "collector",
        collector_command(&certs, host, &agg.url(), &format!("collector-{host}"))
            .arg("--config")
            .arg(&settings),
    );
    let url = agg.url();
    let mut first = Workload::start("chanleak", &["-rate", "20", "-max", "40000"]);

    // Opened: one incident, one active alert with the labels grouping needs.
    let incident = eventually(
        Duration::from_secs(300),
        "an open goroutine-leak incident",
        || {
            let v = goroscope_json(&certs, &url, &["incidents"]);
            v["incidents"]
                .as_array()?
                .iter()
                .find(|i| {
                    i["diagnosis"] == "goroutine-leak"
                        && i["services"]
                            .as_array()
                            .is_some_and(|s| s.contains(&"chanleak".into()))
                })
                .cloned()
        },
    );
    let id = incident["id"].as_str().expect("an incident id").to_owned();
    let alert = eventually(Duration::from_secs(60), "the alert in Alertmanager", || {
        active(&am, &id).into_iter().next()
    });
    assert_eq!(alert["labels"]["alertname"], "goroscope_goroutine_leak");
    assert_eq!(alert["labels"]["service"], "chanleak");
    assert_eq!(alert["labels"]["diagnosis"], "goroutine-leak");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("1 of 1")),
        "{alert}"
    );
    assert_eq!(alert["status"]["state"], "active", "{alert}");

    // The goroutine dump that proves it was taken and attached, and can be fetched.
    let capture = eventually(
        Duration::from_secs(90),
        "a capture attached to the incident",
        || {
            let v = goroscope_json(&certs, &url, &["incident", &id]);
            v["captures"]
                .as_array()?
                .iter()
                .find(|c| c["id"].is_string())
                .cloned()
        },
    );
    assert_eq!(capture["kind"], "goroutine", "{capture}");
    assert_eq!(capture["control"], false, "{capture}");
    let dump = data.path().join("dump.pb.gz");
    let got = goroscope(
        &certs,
        &url,
        None,
        &[
            "capture",
            "get",
            capture["id"].as_str().unwrap(),
            "--out",
            dump.to_str().unwrap(),
        ],
    );
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(std::fs::metadata(&dump).map(|m| m.len()).unwrap_or(0) > 0);

    // Updated: a second process of the service leaks too and joins the incident; the
    // alert's summary says so, and it is still one alert.
    let mut second = Workload::start("chanleak", &["-rate", "20", "-max", "40000"]);
    eventually(
        Duration::from_secs(300),
        "the incident's alert updated with the second process",
        || {
            let alerts = active(&am, &id);
            (alerts.len() == 1
                && alerts[0]["annotations"]["summary"]
                    .as_str()
                    .is_some_and(|s| s.contains("2 of 2")))
            .then_some(())
        },
    );
    let one = goroscope_json(&certs, &url, &["incident", &id]);
    let leaks = one["anomalies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["diagnosis"] == "goroutine-leak")
        .count();
    assert_eq!(leaks, 2, "{one}");

    // Resolved: both exit, their anomalies resolve, the incident and the alert with it.
    first.proc.kill();
    second.proc.kill();
    eventually(Duration::from_secs(120), "the incident resolved", || {
        let v = goroscope_json(&certs, &url, &["incident", &id]);
        v["resolved_ms"].as_i64().filter(|t| *t > 0)
    });
    eventually(
        Duration::from_secs(60),
        "the alert no longer active in Alertmanager",
        || active(&am, &id).is_empty().then_some(()),
    );
}
