//! `goroscope stacks` and `goroscope describe`: one target looked at closely.

use std::io::Write;

use goroscope_daemon::escape::escape;
use goroscope_proto::v1;
use serde_json::json;

use crate::Output;
use crate::render::{self, Table};

/// A time on the command line: an age before now (`10m`, `2h`), an RFC 3339 time
/// (`2026-11-25T17:00:00Z`) or Unix milliseconds; as Unix milliseconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(age) = humantime::parse_duration(text) {
        let age = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        return Ok(goroscope_proto::unix_ms().saturating_sub(age));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .map_err(|_| format!("{text:?} is before 1970"));
    }
    match text.parse::<i64>() {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err(format!(
            "{text:?} is not an age (10m), an RFC 3339 time (2026-11-25T17:00:00Z) or Unix \
             milliseconds"
        )),
    }
}

fn target_id(t: Option<&v1::TargetInfo>) -> v1::TargetId {
    t.and_then(|t| t.id.clone()).unwrap_or_default()
}

fn target_line(t: Option<&v1::TargetInfo>) -> String {
    let Some(t) = t else {
        return String::new();
    };
    let id = t.id.clone().unwrap_or_default();
    let label = |name: &str| {
        t.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.clone())
            .unwrap_or_default()
    };
    format!(
        "{} pid {} {} {}",
        id.host,
        id.pid,
        label("service"),
        label("version")
    )
    .trim_end()
    .to_owned()
}

pub fn print_stacks(
    r: &v1::StacksResponse,
    diff: bool,
    limit: usize,
    output: Output,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let shown = match limit {
        0 => r.signatures.len(),
        n => n.min(r.signatures.len()),
    };
    if output == Output::Json {
        let id = target_id(r.target.as_ref());
        let signatures: Vec<_> = r.signatures[..shown]
            .iter()
            .map(|s| {
                let mut v = json!({
                    "wait_reason": s.wait_reason,
                    "frames": s.frames,
                    "count": s.count,
                    "max_wait_s": s.max_wait_s,
                    "median_wait_s": s.median_wait_s,
                    "first_seen_ms": s.first_seen_ms,
                    "last_seen_ms": s.last_seen_ms,
                    "location": s.location,
                    "leaked": s.leaked,
                });
                if diff {
                    v["from_count"] = json!(s.from_count);
                }
                v
            })
            .collect();
        let mut doc = json!({
            "target": {"host": id.host, "pid": id.pid, "start_ticks": id.start_ticks},
            "timestamp_ms": r.timestamp_ms,
            "source": r.source,
            "total": r.total,
            "omitted": r.omitted,
            "signatures": signatures,
        });
        if diff {
            doc["from_timestamp_ms"] = json!(r.from_timestamp_ms);
            doc["from_total"] = json!(r.from_total);
        }
        if !r.skipped.is_empty() {
            doc["skipped"] = json!({"reason": r.skipped, "timestamp_ms": r.skipped_ms});
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    let now = goroscope_proto::unix_ms();
    let target = escape(&target_line(r.target.as_ref())).to_string();
    if r.timestamp_ms == 0 {
        writeln!(out, "no stack summary of {target}")?;
    } else if diff {
        writeln!(
            out,
            "{target}: {} goroutines at {} ({}), {} at {}",
            r.total,
            render::timestamp(r.timestamp_ms),
            escape(&r.source),
            r.from_total,
            render::timestamp(r.from_timestamp_ms),
        )?;
    } else {
        writeln!(
            out,
            "{target}: {} goroutines at {} ({})",
            r.total,
            render::timestamp(r.timestamp_ms),
            escape(&r.source),
        )?;
    }
    if !r.skipped.is_empty() {
        writeln!(
            out,
            "newest summaries not read: {} ({})",
            escape(&r.skipped),
            render::ago(now.saturating_sub(r.skipped_ms))
        )?;
    }
    if r.signatures.is_empty() {
        return Ok(());
    }
    let mut columns = vec![("COUNT", true)];
    if diff {
        columns.push(("CHANGE", true));
    }
    columns.extend([
        ("WAIT REASON", false),
        ("MAX WAIT", true),
        ("FIRST SEEN", false),
        ("", false),
        ("TOP FRAMES", false),
    ]);
    let mut table = Table::new(&columns);
    for s in &r.signatures[..shown] {
        let mut row = vec![s.count.to_string()];
        if diff {
            let change = s.count as i128 - s.from_count as i128;
            row.push(format!("{change:+}"));
        }
        row.extend([
            if s.wait_reason.is_empty() {
                "-".into()
            } else {
                s.wait_reason.clone()
            },
            if s.max_wait_s > 0.0 {
                render::duration_s(s.max_wait_s)
            } else {
                "-".into()
            },
            if s.first_seen_ms > 0 {
                render::ago(now.saturating_sub(s.first_seen_ms))
            } else {
                "-".into()
            },
            if s.leaked {
                "LEAKED".into()
            } else {
                String::new()
            },
            s.frames
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(" < "),
        ]);
        table.row(row);
    }
    write!(out, "{}", table.render())?;
    if shown < r.signatures.len() {
        writeln!(
            out,
            "{} more signatures (--limit 0 shows all)",
            r.signatures.len() - shown
        )?;
    }
    Ok(())
}

pub fn print_describe(r: &v1::DescribeTargetResponse, output: Output) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let build = r.build.clone().unwrap_or_default();
    let module = |m: &v1::Module| {
        let mut v = json!({"path": m.path, "version": m.version, "sum": m.sum});
        if let Some(rep) = &m.replace {
            v["replace"] = json!({"path": rep.path, "version": rep.version, "sum": rep.sum});
        }
        v
    };
    if output == Output::Json {
        let id = target_id(r.target.as_ref());
        let doc = json!({
            "target": {"host": id.host, "pid": id.pid, "start_ticks": id.start_ticks},
            "labels": r.target.iter().flat_map(|t| &t.labels).map(|l| (l.name.clone(), json!(l.value))).collect::<serde_json::Map<_, _>>(),
            "runtime_env": r.runtime_env.iter().map(|l| (l.name.clone(), json!(l.value))).collect::<serde_json::Map<_, _>>(),
            "build": r.build.as_ref().map(|b| json!({
                "go_version": b.go_version,
                "path": b.path,
                "main": b.main.as_ref().map(module),
                "deps": b.deps.iter().map(module).collect::<Vec<_>>(),
                "settings": b.settings.iter().map(|l| (l.name.clone(), json!(l.value))).collect::<serde_json::Map<_, _>>(),
            })),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    writeln!(out, "{}", escape(&target_line(r.target.as_ref())))?;
    let mut table = Table::new(&[("", false), ("", false)]);
    for l in r.target.iter().flat_map(|t| &t.labels) {
        table.row(vec![format!("label {}", l.name), l.value.clone()]);
    }
    if r.runtime_env.is_empty() {
        table.row(vec!["environment".into(), "no Go runtime settings".into()]);
    }
    for l in &r.runtime_env {
        table.row(vec![format!("env {}", l.name), l.value.clone()]);
    }
    if r.build.is_none() {
        table.row(vec!["build".into(), "not known".into()]);
    } else {
        table.row(vec!["go".into(), build.go_version.clone()]);
        table.row(vec!["path".into(), build.path.clone()]);
        if let Some(m) = &build.main {
            table.row(vec!["main".into(), format!("{} {}", m.path, m.version)]);
        }
        for l in &build.settings {
            table.row(vec![format!("build {}", l.name), l.value.clone()]);
        }
        for m in &build.deps {
            let replaced = m
                .replace
                .as_ref()
                .map(|r| format!(" => {} {}", r.path, r.version))
                .unwrap_or_default();
            table.row(vec![
                "dep".into(),
                format!("{} {}{replaced}", m.path, m.version),
            ]);
        }
    }
    write!(out, "{}", table.render())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_ages_rfc3339_or_unix_ms() {
        let now = goroscope_proto::unix_ms();
        let ten_min = parse_time("10m").unwrap();
        assert!((now - 600_000 - ten_min).abs() < 5_000);
        assert_eq!(
            parse_time("2026-11-25T17:00:00Z").unwrap(),
            1_795_626_000_000
        );
        assert_eq!(parse_time("1795626000000").unwrap(), 1_795_626_000_000);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("-5").is_err());
    }
}
