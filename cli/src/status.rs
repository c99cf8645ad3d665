//! `goroscope status`: what the aggregator stores and how each collector host's ingest
//! goes.

use std::io::Write;

use goroscope_daemon::escape::escape;
use goroscope_proto::v1;
use serde_json::{Value, json};

use crate::Output;
use crate::render::{self, Table};

pub fn print(s: &v1::StatusResponse, output: Output) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&to_json(s))?)?,
        Output::Table | Output::Csv => write!(out, "{}", text(s, goroscope_proto::unix_ms()))?,
    }
    Ok(())
}

/// Disk bytes per stored sample; none before the first sample.
fn bytes_per_sample(s: &v1::StatusResponse) -> Option<f64> {
    (s.samples_stored > 0).then(|| s.disk_bytes as f64 / s.samples_stored as f64)
}

pub fn to_json(s: &v1::StatusResponse) -> Value {
    let collectors: Vec<Value> = s
        .collectors
        .iter()
        .map(|c| {
            let losses: serde_json::Map<String, Value> = c
                .losses
                .iter()
                .map(|l| {
                    (
                        l.reason.clone(),
                        json!({"batches": l.batches, "bytes": l.bytes}),
                    )
                })
                .collect();
            json!({
                "host": c.host,
                "connected": c.streams > 0,
                "streams": c.streams,
                "first_ms": c.first_ms,
                "last_heard_ms": c.last_heard_ms,
                "batches": c.batches,
                "samples": c.samples,
                "targets": c.targets,
                "gaps": c.gaps,
                "missed_scrapes": c.missed,
                "losses": losses,
            })
        })
        .collect();
    let services: Vec<Value> = s
        .services
        .iter()
        .map(|v| json!({"service": v.service, "targets": v.targets, "live": v.live}))
        .collect();
    let coverage: serde_json::Map<String, Value> = s
        .coverage
        .iter()
        .map(|c| (c.source.clone(), json!(c.targets)))
        .collect();
    json!({
        "aggregator_version": s.aggregator_version,
        "samples_stored": s.samples_stored,
        "samples_in_head": s.samples_in_head,
        "disk_bytes": s.disk_bytes,
        "head_bytes": s.head_bytes,
        "bytes_per_sample": bytes_per_sample(s),
        "series": s.series,
        "targets": s.targets,
        "live_targets": s.live_targets,
        "ingest_samples_per_second": s.ingest_samples_per_second,
        "collectors": collectors,
        "services": services,
        "coverage": coverage,
    })
}

pub fn text(s: &v1::StatusResponse, now: i64) -> String {
    let mut out = String::new();
    let per_sample = bytes_per_sample(s).map_or("-".to_owned(), |b| format!("{b:.2}"));
    out.push_str(&format!(
        "aggregator {}: {} samples stored ({} in the head), {} on disk ({} bytes per sample), {} in the head's memory\n",
        escape(&s.aggregator_version),
        render::number(s.samples_stored as f64),
        render::number(s.samples_in_head as f64),
        render::bytes(s.disk_bytes as f64),
        per_sample,
        render::bytes(s.head_bytes as f64),
    ));
    out.push_str(&format!(
        "{} series, {} targets ({} live), ingesting {} samples/s\n",
        render::number(s.series as f64),
        render::number(s.targets as f64),
        render::number(s.live_targets as f64),
        render::number(s.ingest_samples_per_second),
    ));
    if !s.coverage.is_empty() {
        let cov: Vec<String> = s
            .coverage
            .iter()
            .map(|c| format!("{} {}", escape(&c.source), c.targets))
            .collect();
        out.push_str(&format!("live targets per source: {}\n", cov.join(", ")));
    }
    out.push('\n');
    let mut table = Table::new(&[
        ("HOST", false),
        ("CONNECTED", false),
        ("LAST HEARD", false),
        ("TARGETS", true),
        ("BATCHES", true),
        ("SAMPLES", true),
        ("GAPS", true),
        ("MISSED", true),
        ("LOST", false),
    ]);
    for c in &s.collectors {
        let lost: Vec<String> = c
            .losses
            .iter()
            .map(|l| format!("{} {}", escape(&l.reason), l.batches))
            .collect();
        table.row(vec![
            escape(&c.host).into_owned(),
            if c.streams > 0 { "yes" } else { "no" }.into(),
            if c.last_heard_ms > 0 {
                render::ago(now.saturating_sub(c.last_heard_ms))
            } else {
                "-".into()
            },
            c.targets.to_string(),
            c.batches.to_string(),
            render::number(c.samples as f64),
            c.gaps.to_string(),
            c.missed.to_string(),
            if lost.is_empty() {
                "-".into()
            } else {
                lost.join(", ")
            },
        ]);
    }
    out.push_str(&table.render());
    if !s.services.is_empty() {
        out.push('\n');
        let mut table = Table::new(&[("SERVICE", false), ("TARGETS", true), ("LIVE", true)]);
        for v in &s.services {
            let name = if v.service.is_empty() {
                "(none)".into()
            } else {
                escape(&v.service).into_owned()
            };
            table.row(vec![name, v.targets.to_string(), v.live.to_string()]);
        }
        out.push_str(&table.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> v1::StatusResponse {
        v1::StatusResponse {
            aggregator_version: "0.1.0".into(),
            samples_stored: 1000,
            samples_in_head: 10,
            disk_bytes: 250,
            series: 3,
            targets: 2,
            live_targets: 1,
            collectors: vec![v1::CollectorStatus {
                host: "node-a".into(),
                streams: 1,
                last_heard_ms: 1_000,
                batches: 5,
                samples: 1000,
                gaps: 1,
                missed: 3,
                losses: vec![v1::LossCount {
                    reason: "spool_full".into(),
                    batches: 3,
                    bytes: 900,
                }],
                targets: 1,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn json_carries_the_documented_keys() {
        let v = to_json(&sample());
        assert_eq!(v["samples_stored"], 1000);
        assert_eq!(v["disk_bytes"], 250);
        assert_eq!(v["series"], 3);
        assert_eq!(v["targets"], 2);
        assert_eq!(v["bytes_per_sample"], 0.25);
        assert_eq!(v["collectors"][0]["host"], "node-a");
        assert_eq!(v["collectors"][0]["connected"], true);
        assert_eq!(v["collectors"][0]["losses"]["spool_full"]["batches"], 3);
        let empty = to_json(&v1::StatusResponse::default());
        assert!(empty["bytes_per_sample"].is_null());
        assert_eq!(empty["collectors"], json!([]));
    }

    #[test]
    fn text_names_each_host_and_its_losses() {
        let t = text(&sample(), 61_000);
        assert!(t.contains("node-a"), "{t}");
        assert!(t.contains("spool_full 3"), "{t}");
        assert!(t.contains("0.25 bytes per sample"), "{t}");
    }
}
