//! `goroscope anomalies`, `goroscope incidents` and `goroscope incident ID`: what the
//! aggregator's detectors found, per process and grouped across the fleet.
//!
//! The JSON shapes are a contract: times are Unix milliseconds, and a time or id that
//! the wire leaves at 0 or empty ("not yet", "none") is `null`.

use std::io::Write;

use goroscope_daemon::escape::escape;
use goroscope_proto::v1;
use serde_json::{Value, json};

use crate::Output;
use crate::capture::kind_name;
use crate::render::{self, Table};

/// Evidence numbers shown per anomaly in the human output, at most.
const KEY_NUMBERS: usize = 4;

/// Evidence fields shown first when present, in this order; the rest follow in name order.
const KEY_FIELDS: [&str; 6] = [
    "from",
    "to",
    "slope_per_min",
    "mann_kendall_p",
    "gc_per_s",
    "gc_cpu_fraction",
];

fn non_zero(v: i64) -> Value {
    if v == 0 { Value::Null } else { json!(v) }
}

fn non_empty(s: &str) -> Value {
    if s.is_empty() { Value::Null } else { json!(s) }
}

fn target_json(id: Option<&v1::TargetId>) -> Value {
    let id = id.cloned().unwrap_or_default();
    json!({"host": id.host, "pid": id.pid, "start_ticks": id.start_ticks})
}

fn labels_json(labels: &[v1::Label]) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|l| (l.name.clone(), json!(l.value)))
            .collect(),
    )
}

fn label<'a>(labels: &'a [v1::Label], name: &str) -> &'a str {
    labels
        .iter()
        .find(|l| l.name == name)
        .map_or("", |l| l.value.as_str())
}

/// An anomaly's `evidence_json` as an object: `{}` when empty, `{"raw": TEXT}` when it is
/// not a JSON object (the aggregator's text is kept, not dropped).
pub fn evidence(text: &str) -> Value {
    if text.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({ "raw": text }),
    }
}

pub fn anomaly_json(a: &v1::Anomaly) -> Value {
    json!({
        "id": a.id,
        "diagnosis": a.diagnosis,
        "target": target_json(a.target.as_ref()),
        "labels": labels_json(&a.labels),
        "opened_ms": a.opened_ms,
        "resolved_ms": non_zero(a.resolved_ms),
        "updated_ms": a.updated_ms,
        "evidence": evidence(&a.evidence_json),
        "advice": a.advice,
        "sources": a.sources,
        "signature": a.signature,
        "incident_id": non_empty(&a.incident_id),
        "oom_at_ms": non_zero(a.oom_at_ms),
    })
}

fn capture_json(c: &v1::IncidentCapture) -> Value {
    let info = c.capture.as_ref();
    let kind = match c.kind {
        0 => info.map_or(0, |i| i.kind),
        k => k,
    };
    let target = c.target.as_ref().or(info.and_then(|i| i.target.as_ref()));
    json!({
        "id": info.map_or(Value::Null, |i| non_empty(&i.id)),
        "kind": kind_name(kind),
        "control": c.control,
        "refused": non_empty(&c.refused),
        "target": target_json(target),
        "size_bytes": info.map_or(Value::Null, |i| json!(i.size_bytes)),
        "completed_ms": info.map_or(Value::Null, |i| non_zero(i.completed_ms)),
    })
}

pub fn incident_json(i: &v1::Incident) -> Value {
    json!({
        "id": i.id,
        "diagnosis": i.diagnosis,
        "services": i.services,
        "signature": i.signature,
        "opened_ms": i.opened_ms,
        "updated_ms": i.updated_ms,
        "resolved_ms": non_zero(i.resolved_ms),
        "severity": render::json_value(i.severity),
        "summary": i.summary,
        "service_targets": i.service_targets,
        "affected": i.anomalies.len(),
        "oom_at_ms": non_zero(i.oom_at_ms),
        "causes": i.causes.iter().map(|c| json!({
            "attribute": c.attribute,
            "value": c.value,
            "affected_with": c.affected_with,
            "total_with": c.total_with,
            "affected_without": c.affected_without,
            "total_without": c.total_without,
            "p_value": render::json_value(c.p_value),
            "text": c.text,
        })).collect::<Vec<_>>(),
        "anomalies": i.anomalies.iter().map(anomaly_json).collect::<Vec<_>>(),
        "captures": i.captures.iter().map(capture_json).collect::<Vec<_>>(),
    })
}

/// One evidence value for people, by what its name says it measures.
fn evidence_value(name: &str, v: f64) -> String {
    if name.ends_with("_bytes") {
        render::bytes(v)
    } else if name.ends_with("_p") || name.starts_with("p_") || name == "p" {
        p_value(v)
    } else if name.ends_with("_s") && !name.ends_with("per_s") {
        render::duration_s(v)
    } else if name.ends_with("fraction") {
        format!("{:.1}%", v * 100.0)
    } else {
        render::number(v)
    }
}

/// A p value: small ones in scientific notation.
fn p_value(v: f64) -> String {
    if !v.is_finite() {
        render::non_finite(v).to_owned()
    } else if v != 0.0 && v.abs() < 0.001 {
        format!("{v:.1e}")
    } else {
        format!("{v:.3}")
    }
}

/// Up to [`KEY_NUMBERS`] numbers of an evidence object, the well-known ones first, as
/// "name value" pairs.
pub fn key_numbers(evidence: &Value) -> Vec<String> {
    let Some(map) = evidence.as_object() else {
        return Vec::new();
    };
    let numeric = |k: &str| map.get(k).and_then(Value::as_f64);
    let mut names: Vec<&str> = KEY_FIELDS
        .iter()
        .copied()
        .filter(|k| numeric(k).is_some())
        .collect();
    for k in map.keys() {
        if !KEY_FIELDS.contains(&k.as_str()) && numeric(k).is_some() {
            names.push(k);
        }
    }
    names
        .into_iter()
        .take(KEY_NUMBERS)
        .filter_map(|k| numeric(k).map(|v| format!("{k} {}", evidence_value(k, v))))
        .collect()
}

fn state(resolved_ms: i64, oom_at_ms: i64, now: i64) -> String {
    if resolved_ms != 0 {
        format!("resolved {}", render::ago(now.saturating_sub(resolved_ms)))
    } else if oom_at_ms != 0 {
        format!(
            "open, OOM in {}",
            render::duration_s(oom_at_ms.saturating_sub(now) as f64 / 1000.0)
        )
    } else {
        "open".into()
    }
}

/// The advice and key evidence of one anomaly, indented, a line each.
fn anomaly_details(a: &v1::Anomaly) -> String {
    let mut out = String::new();
    if !a.advice.is_empty() {
        out.push_str(&format!("  advice:   {}\n", escape(&a.advice)));
    }
    let numbers = key_numbers(&evidence(&a.evidence_json));
    if !numbers.is_empty() {
        out.push_str(&format!("  evidence: {}\n", escape(&numbers.join(", "))));
    }
    if !a.signature.is_empty() {
        out.push_str(&format!("  signature: {}\n", escape(&a.signature)));
    }
    out
}

/// The anomalies for people: a table, then each one's advice and evidence.
pub fn anomalies_text(anomalies: &[v1::Anomaly], all: bool, now: i64) -> String {
    if anomalies.is_empty() {
        return if all {
            "no anomalies\n".into()
        } else {
            "no open anomalies\n".into()
        };
    }
    let mut table = Table::new(&[
        ("DIAGNOSIS", false),
        ("HOST", false),
        ("PID", true),
        ("SERVICE", false),
        ("OPENED", false),
        ("STATE", false),
    ]);
    for a in anomalies {
        let id = a.target.clone().unwrap_or_default();
        table.row(vec![
            a.diagnosis.clone(),
            id.host,
            id.pid.to_string(),
            label(&a.labels, "service").to_owned(),
            render::ago(now.saturating_sub(a.opened_ms)),
            state(a.resolved_ms, a.oom_at_ms, now),
        ]);
    }
    let mut out = table.render();
    for a in anomalies {
        let id = a.target.clone().unwrap_or_default();
        let service = label(&a.labels, "service");
        out.push('\n');
        out.push_str(&format!(
            "{} on {} pid {}{}\n",
            escape(&a.diagnosis),
            escape(&id.host),
            id.pid,
            if service.is_empty() {
                String::new()
            } else {
                format!(" ({})", escape(service))
            }
        ));
        out.push_str(&anomaly_details(a));
    }
    out
}

pub fn print_anomalies(anomalies: &[v1::Anomaly], all: bool, output: Output) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if output == Output::Json {
        let items: Vec<_> = anomalies.iter().map(anomaly_json).collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({ "anomalies": items }))?
        )?;
        return Ok(());
    }
    write!(
        out,
        "{}",
        anomalies_text(anomalies, all, goroscope_proto::unix_ms())
    )?;
    Ok(())
}

fn severity(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        render::non_finite(v).to_owned()
    }
}

/// The incidents for people, one row each.
pub fn incidents_text(incidents: &[v1::Incident], all: bool, now: i64) -> String {
    if incidents.is_empty() {
        return if all {
            "no incidents\n".into()
        } else {
            "no open incidents\n".into()
        };
    }
    let mut table = Table::new(&[
        ("ID", false),
        ("DIAGNOSIS", false),
        ("SERVICES", false),
        ("AFFECTED", true),
        ("SEVERITY", true),
        ("OPENED", false),
        ("STATE", false),
        ("SUMMARY", false),
    ]);
    for i in incidents {
        table.row(vec![
            i.id.clone(),
            i.diagnosis.clone(),
            i.services.join(","),
            format!("{}/{}", i.anomalies.len(), i.service_targets),
            severity(i.severity),
            render::ago(now.saturating_sub(i.opened_ms)),
            state(i.resolved_ms, i.oom_at_ms, now),
            i.summary.clone(),
        ]);
    }
    let mut out = table.render();
    out.push_str("\n`goroscope incident ID` shows one in full.\n");
    out
}

pub fn print_incidents(
    incidents: &[v1::Incident],
    all: bool,
    output: Output,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if output == Output::Json {
        let items: Vec<_> = incidents.iter().map(incident_json).collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({ "incidents": items }))?
        )?;
        return Ok(());
    }
    write!(
        out,
        "{}",
        incidents_text(incidents, all, goroscope_proto::unix_ms())
    )?;
    Ok(())
}

/// One incident in full, for people.
pub fn incident_text(i: &v1::Incident, now: i64) -> String {
    let mut out = String::new();
    let services = if i.services.is_empty() {
        "no service label".to_owned()
    } else {
        i.services.join(", ")
    };
    out.push_str(&format!(
        "incident {}: {} in {}\n",
        escape(&i.id),
        escape(&i.diagnosis),
        escape(&services)
    ));
    let mut when = format!(
        "opened {} ({})",
        render::timestamp(i.opened_ms),
        render::ago(now.saturating_sub(i.opened_ms))
    );
    if i.resolved_ms != 0 {
        when.push_str(&format!(
            ", resolved {} ({})",
            render::timestamp(i.resolved_ms),
            render::ago(now.saturating_sub(i.resolved_ms))
        ));
    } else {
        when.push_str(", open");
    }
    out.push_str(&format!("{when}; severity {}\n", severity(i.severity)));
    if i.oom_at_ms != 0 && i.resolved_ms == 0 {
        out.push_str(&format!(
            "out of memory at {} at the current rate\n",
            render::timestamp(i.oom_at_ms)
        ));
    }
    if !i.signature.is_empty() {
        out.push_str(&format!("signature: {}\n", escape(&i.signature)));
    }
    if !i.summary.is_empty() {
        out.push_str(&format!("\n{}\n", escape(&i.summary)));
    }

    out.push_str(&format!(
        "\naffected: {} of {} targets of the service\n",
        i.anomalies.len(),
        i.service_targets
    ));
    if !i.anomalies.is_empty() {
        let mut table = Table::new(&[
            ("HOST", false),
            ("PID", true),
            ("SERVICE", false),
            ("VERSION", false),
            ("OPENED", false),
            ("STATE", false),
        ]);
        for a in &i.anomalies {
            let id = a.target.clone().unwrap_or_default();
            table.row(vec![
                id.host,
                id.pid.to_string(),
                label(&a.labels, "service").to_owned(),
                label(&a.labels, "version").to_owned(),
                render::ago(now.saturating_sub(a.opened_ms)),
                state(a.resolved_ms, a.oom_at_ms, now),
            ]);
        }
        out.push_str(&table.render());
    }

    out.push_str("\nshared attributes:");
    if i.causes.is_empty() {
        out.push_str(" none found that separates affected targets from the others\n");
    } else {
        out.push('\n');
        let mut table = Table::new(&[
            ("ATTRIBUTE", false),
            ("VALUE", false),
            ("AFFECTED WITH", true),
            ("TOTAL WITH", true),
            ("AFFECTED WITHOUT", true),
            ("TOTAL WITHOUT", true),
            ("P", true),
        ]);
        for c in &i.causes {
            table.row(vec![
                c.attribute.clone(),
                c.value.clone(),
                c.affected_with.to_string(),
                c.total_with.to_string(),
                c.affected_without.to_string(),
                c.total_without.to_string(),
                p_value(c.p_value),
            ]);
        }
        out.push_str(&table.render());
    }

    if let Some(first) = i.anomalies.first() {
        let id = first.target.clone().unwrap_or_default();
        out.push_str(&format!(
            "\nevidence ({} pid {}):\n",
            escape(&id.host),
            id.pid
        ));
        let details = anomaly_details(first);
        if details.is_empty() {
            out.push_str("  none given\n");
        } else {
            out.push_str(&details);
        }
    }

    out.push_str("\ncaptures:");
    if i.captures.is_empty() {
        out.push_str(" none\n");
    } else {
        out.push('\n');
        for c in &i.captures {
            out.push_str(&capture_line(c));
        }
    }
    out
}

fn capture_line(c: &v1::IncidentCapture) -> String {
    let info = c.capture.as_ref();
    let kind = kind_name(match c.kind {
        0 => info.map_or(0, |i| i.kind),
        k => k,
    });
    let id = c
        .target
        .clone()
        .or_else(|| info.and_then(|i| i.target.clone()))
        .unwrap_or_default();
    let role = if c.control { ", control" } else { "" };
    let what = format!("{kind} of {} pid {}{role}", escape(&id.host), id.pid);
    match info.filter(|i| !i.id.is_empty()) {
        Some(i) => format!(
            "  {what}, {}: goroscope capture get {} --out {}\n",
            render::bytes(i.size_bytes as f64),
            escape(&i.id),
            escape(&capture_file(&i.id, &kind, id.pid))
        ),
        None if !c.refused.is_empty() => {
            format!("  {what}: not taken ({})\n", escape(&c.refused))
        }
        None => format!("  {what}: not taken yet\n"),
    }
}

/// A file name for a fetched capture, by what opens it.
fn capture_file(id: &str, kind: &str, pid: u32) -> String {
    let ext = if kind == "trace" { "trace" } else { "pb.gz" };
    let short: String = id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!("{kind}-{pid}-{short}.{ext}")
}

pub fn print_incident(i: &v1::Incident, output: Output) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if output == Output::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(&incident_json(i))?)?;
        return Ok(());
    }
    write!(out, "{}", incident_text(i, goroscope_proto::unix_ms()))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000_000;

    fn target(host: &str, pid: u32) -> Option<v1::TargetId> {
        Some(v1::TargetId {
            host: host.into(),
            pid,
            start_ticks: 456,
        })
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<v1::Label> {
        pairs
            .iter()
            .map(|(n, v)| v1::Label {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect()
    }

    pub(crate) fn anomaly(pid: u32, evidence_json: &str) -> v1::Anomaly {
        v1::Anomaly {
            id: "00112233aabbccdd".into(),
            diagnosis: "goroutine-leak".into(),
            target: target("node-a", pid),
            labels: labels(&[("service", "billing"), ("version", "v2.4.0")]),
            opened_ms: NOW - 12 * 60_000,
            resolved_ms: 0,
            updated_ms: NOW - 1_000,
            evidence_json: evidence_json.into(),
            advice: "Close the channel when the caller gives up.".into(),
            sources: vec!["proc".into(), "stacks".into()],
            signature: "chan send main.handle.func1".into(),
            incident_id: String::new(),
            oom_at_ms: 0,
        }
    }

    /// Re-parsed from the text printed, as a program reading `-o json` would.
    fn round_trip(v: &Value) -> Value {
        serde_json::from_str(&serde_json::to_string_pretty(v).unwrap()).unwrap()
    }

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<_> = v.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn anomaly_json_has_the_contract_keys() {
        let evidence =
            r#"{"from": 12, "to": 25000, "slope_per_min": 1200.5, "mann_kendall_p": 1e-9}"#;
        let open = round_trip(&anomaly_json(&anomaly(123, evidence)));
        assert_eq!(
            keys(&open),
            [
                "advice",
                "diagnosis",
                "evidence",
                "id",
                "incident_id",
                "labels",
                "oom_at_ms",
                "opened_ms",
                "resolved_ms",
                "signature",
                "sources",
                "target",
                "updated_ms"
            ]
        );
        assert_eq!(open["id"], "00112233aabbccdd");
        assert_eq!(open["diagnosis"], "goroutine-leak");
        assert_eq!(
            open["target"],
            json!({"host": "node-a", "pid": 123, "start_ticks": 456})
        );
        assert_eq!(open["labels"]["service"], "billing");
        assert_eq!(open["opened_ms"], json!(NOW - 720_000));
        assert_eq!(open["updated_ms"], json!(NOW - 1_000));
        assert!(open["resolved_ms"].is_null());
        assert!(open["incident_id"].is_null());
        assert!(open["oom_at_ms"].is_null());
        assert_eq!(open["evidence"]["to"], json!(25000));
        assert_eq!(open["sources"], json!(["proc", "stacks"]));
        assert_eq!(open["signature"], "chan send main.handle.func1");

        let mut a = anomaly(123, "");
        a.resolved_ms = NOW;
        a.incident_id = "ffeeddccbbaa9988".into();
        a.oom_at_ms = NOW + 3_600_000;
        let resolved = round_trip(&anomaly_json(&a));
        assert_eq!(resolved["resolved_ms"], json!(NOW));
        assert!(resolved["resolved_ms"].is_i64());
        assert_eq!(resolved["incident_id"], "ffeeddccbbaa9988");
        assert_eq!(resolved["oom_at_ms"], json!(NOW + 3_600_000));
        assert_eq!(resolved["evidence"], json!({}));
    }

    #[test]
    fn evidence_that_is_not_an_object_is_kept_raw() {
        assert_eq!(evidence("  "), json!({}));
        assert_eq!(evidence(r#"{"a": 1}"#), json!({"a": 1}));
        assert_eq!(evidence("{not json"), json!({"raw": "{not json"}));
        assert_eq!(evidence("[1, 2]"), json!({"raw": "[1, 2]"}));
        // JSON has no NaN: what an aggregator may write by mistake stays readable.
        assert_eq!(evidence(r#"{"p": NaN}"#), json!({"raw": r#"{"p": NaN}"#}));
    }

    pub(crate) fn incident() -> v1::Incident {
        let mut second = anomaly(124, "");
        second.target = target("node-b", 124);
        v1::Incident {
            id: "ffeeddccbbaa9988".into(),
            diagnosis: "goroutine-leak".into(),
            services: vec!["billing".into()],
            signature: "chan send main.handle.func1".into(),
            opened_ms: NOW - 600_000,
            updated_ms: NOW - 2_000,
            resolved_ms: 0,
            severity: 0.5,
            summary: "goroutine leak in billing on 2 of 4 targets; probably version v2.4.0".into(),
            anomalies: vec![anomaly(123, r#"{"from": 12, "to": 25000}"#), second],
            service_targets: 4,
            causes: vec![v1::AttributeEvidence {
                attribute: "version".into(),
                value: "v2.4.0".into(),
                affected_with: 2,
                total_with: 2,
                affected_without: 0,
                total_without: 2,
                p_value: 1.0 / 6.0,
                text: "2 of 2 on v2.4.0 affected, 0 of 2 on v2.3.1".into(),
            }],
            captures: vec![
                v1::IncidentCapture {
                    capture: Some(v1::CaptureInfo {
                        id: "c0ffee0123456789".into(),
                        target: target("node-a", 123),
                        kind: v1::CaptureKind::Goroutine as i32,
                        completed_ms: NOW - 500_000,
                        size_bytes: 2048,
                        ..Default::default()
                    }),
                    control: false,
                    refused: String::new(),
                    kind: v1::CaptureKind::Goroutine as i32,
                    target: target("node-a", 123),
                },
                v1::IncidentCapture {
                    capture: None,
                    control: true,
                    refused: "capture limit reached".into(),
                    kind: v1::CaptureKind::Heap as i32,
                    target: target("node-c", 9),
                },
            ],
            oom_at_ms: 0,
        }
    }

    #[test]
    fn incident_json_has_the_contract_keys() {
        let v = round_trip(&incident_json(&incident()));
        assert_eq!(
            keys(&v),
            [
                "affected",
                "anomalies",
                "captures",
                "causes",
                "diagnosis",
                "id",
                "oom_at_ms",
                "opened_ms",
                "resolved_ms",
                "service_targets",
                "services",
                "severity",
                "signature",
                "summary",
                "updated_ms"
            ]
        );
        assert_eq!(v["id"], "ffeeddccbbaa9988");
        assert_eq!(v["services"], json!(["billing"]));
        assert_eq!(v["affected"], json!(2));
        assert_eq!(v["service_targets"], json!(4));
        assert_eq!(v["severity"], json!(0.5));
        assert!(v["resolved_ms"].is_null());
        assert!(v["oom_at_ms"].is_null());
        assert_eq!(v["opened_ms"], json!(NOW - 600_000));

        let cause = &v["causes"][0];
        assert_eq!(
            keys(cause),
            [
                "affected_with",
                "affected_without",
                "attribute",
                "p_value",
                "text",
                "total_with",
                "total_without",
                "value"
            ]
        );
        assert_eq!(cause["affected_with"], json!(2));
        assert_eq!(cause["total_without"], json!(2));
        assert!(cause["p_value"].is_f64());

        assert_eq!(v["anomalies"].as_array().unwrap().len(), 2);
        assert_eq!(v["anomalies"][1]["target"]["host"], "node-b");

        let taken = &v["captures"][0];
        assert_eq!(
            keys(taken),
            [
                "completed_ms",
                "control",
                "id",
                "kind",
                "refused",
                "size_bytes",
                "target"
            ]
        );
        assert_eq!(taken["id"], "c0ffee0123456789");
        assert_eq!(taken["kind"], "goroutine");
        assert_eq!(taken["control"], false);
        assert!(taken["refused"].is_null());
        assert_eq!(taken["size_bytes"], json!(2048));
        assert_eq!(taken["completed_ms"], json!(NOW - 500_000));
        let refused = &v["captures"][1];
        assert!(refused["id"].is_null());
        assert_eq!(refused["kind"], "heap");
        assert_eq!(refused["control"], true);
        assert_eq!(refused["refused"], "capture limit reached");
        assert_eq!(refused["target"]["host"], "node-c");

        let mut resolved = incident();
        resolved.resolved_ms = NOW;
        resolved.oom_at_ms = NOW + 60_000;
        let v = round_trip(&incident_json(&resolved));
        assert_eq!(v["resolved_ms"], json!(NOW));
        assert_eq!(v["oom_at_ms"], json!(NOW + 60_000));
    }

    #[test]
    fn key_numbers_put_the_trend_first_and_stop_at_four() {
        let e = evidence(
            r#"{"window_s": 600, "to": 25000, "from": 12, "mann_kendall_p": 0.00001,
                "slope_per_min": 1200, "rss_bytes": 1048576, "leak": false}"#,
        );
        assert_eq!(
            key_numbers(&e),
            [
                "from 12",
                "to 25000",
                "slope_per_min 1200",
                "mann_kendall_p 1.0e-5"
            ]
        );
        let e = evidence(r#"{"rss_bytes": 1048576, "window_s": 600, "leak": false}"#);
        assert_eq!(key_numbers(&e), ["rss_bytes 1.0 MiB", "window_s 10m"]);
        assert!(key_numbers(&evidence("oops")).is_empty());
    }

    #[test]
    fn anomalies_read_as_a_table_then_details() {
        let out = anomalies_text(&[anomaly(123, r#"{"from": 12, "to": 25000}"#)], false, NOW);
        assert_eq!(
            out,
            "DIAGNOSIS       HOST    PID  SERVICE  OPENED   STATE\n\
             goroutine-leak  node-a  123  billing  12m ago  open\n\
             \n\
             goroutine-leak on node-a pid 123 (billing)\n  \
             advice:   Close the channel when the caller gives up.\n  \
             evidence: from 12, to 25000\n  \
             signature: chan send main.handle.func1\n"
        );
        assert_eq!(anomalies_text(&[], false, NOW), "no open anomalies\n");
        assert_eq!(anomalies_text(&[], true, NOW), "no anomalies\n");
    }

    #[test]
    fn incident_shows_causes_and_how_to_fetch_captures() {
        let out = incident_text(&incident(), NOW);
        assert!(
            out.starts_with("incident ffeeddccbbaa9988: goroutine-leak in billing\n"),
            "{out}"
        );
        assert!(out.contains("severity 0.50"), "{out}");
        assert!(out.contains("affected: 2 of 4 targets"), "{out}");
        assert!(out.contains("ATTRIBUTE  VALUE   AFFECTED WITH"), "{out}");
        assert!(out.contains("version    v2.4.0"), "{out}");
        assert!(out.contains("evidence: from 12, to 25000"), "{out}");
        assert!(
            out.contains(
                "goroutine of node-a pid 123, 2.0 KiB: goroscope capture get c0ffee0123456789 \
                 --out goroutine-123-c0ffee01.pb.gz"
            ),
            "{out}"
        );
        assert!(
            out.contains("heap of node-c pid 9, control: not taken (capture limit reached)"),
            "{out}"
        );
    }

    #[test]
    fn diagnosis_text_prints_no_raw_control_character() {
        let evil = "\u{1b}]0;PWNED\u{7}";
        let mut a = anomaly(1, "");
        a.advice = evil.into();
        a.diagnosis = evil.into();
        let mut i = incident();
        i.summary = evil.into();
        i.anomalies = vec![a.clone()];
        for out in [anomalies_text(&[a], false, NOW), incident_text(&i, NOW)] {
            assert!(
                !out.chars()
                    .any(|c| c != '\n' && goroscope_daemon::escape::is_unsafe(c)),
                "{out:?}"
            );
        }
    }
}
