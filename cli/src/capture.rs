//! `goroscope capture` and `goroscope captures`: traces and profiles on demand.

use std::io::{IsTerminal, Write};

use anyhow::Context;
use std::path::Path;

use goroscope_daemon::escape::escape;
use goroscope_proto::v1::{self, CaptureKind, query_client::QueryClient};
use serde_json::json;
use tonic::transport::Channel;

use crate::Output;
use crate::client;
use crate::render::{self, Table};

/// The capture kinds as the command line names them.
pub fn parse_kind(kind: &str) -> Result<CaptureKind, String> {
    match kind {
        "trace" => Ok(CaptureKind::Trace),
        "heap" => Ok(CaptureKind::Heap),
        "cpu" => Ok(CaptureKind::Cpu),
        "goroutine" => Ok(CaptureKind::Goroutine),
        "goroutineleak" => Ok(CaptureKind::Goroutineleak),
        other => Err(format!(
            "{other:?} is not a capture kind: trace, heap, cpu, goroutine, goroutineleak \
             (or get ID)"
        )),
    }
}

pub fn kind_name(kind: i32) -> String {
    CaptureKind::try_from(kind)
        .map(|k| k.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| kind.to_string())
}

fn info_json(i: &v1::CaptureInfo) -> serde_json::Value {
    let id = i.target.clone().unwrap_or_default();
    json!({
        "id": i.id,
        "target": {"host": id.host, "pid": id.pid, "start_ticks": id.start_ticks},
        "labels": i.labels.iter().map(|l| (l.name.clone(), json!(l.value))).collect::<serde_json::Map<_, _>>(),
        "kind": kind_name(i.kind),
        "seconds": i.seconds,
        "requested_ms": i.requested_ms,
        "completed_ms": i.completed_ms,
        "requested_by": i.requested_by,
        "size_bytes": i.size_bytes,
        "sha256": i.sha256,
    })
}

/// Asks for a capture, shows its progress on stderr while it waits, and writes it.
pub async fn capture(
    client: &mut QueryClient<Channel>,
    addr: &str,
    request: v1::CaptureRequest,
    out: &Path,
    output: Output,
) -> anyhow::Result<()> {
    let mut stream = client
        .capture(request)
        .await
        .map_err(|s| client::status_error(addr, s))?
        .into_inner();
    let tty = std::io::stderr().is_terminal();
    let mut stored = None;
    let mut shown_bytes = 0u64;
    while let Some(progress) = stream
        .message()
        .await
        .map_err(|s| client::status_error(addr, s))?
    {
        if let Some(info) = progress.stored {
            stored = Some(info);
            break;
        }
        if progress.bytes_received == 0 {
            eprintln!("{}", escape(&progress.status));
        } else if tty {
            eprint!("\r{}", render::bytes(progress.bytes_received as f64));
            shown_bytes = progress.bytes_received;
        } else if progress.bytes_received >= shown_bytes + (1 << 20) {
            eprintln!("received {}", render::bytes(progress.bytes_received as f64));
            shown_bytes = progress.bytes_received;
        }
    }
    if tty && shown_bytes > 0 {
        eprintln!();
    }
    let info = stored
        .ok_or_else(|| anyhow::anyhow!("the aggregator ended the capture without storing it"))?;
    // Fetched back from storage: what is written is what was stored and checked.
    get(client, addr, &info.id, out, output).await
}

/// Writes a capture's chunks into `part`, checking the size and the SHA-256 its info
/// gives; its info.
async fn fetch_into(
    stream: &mut tonic::Streaming<v1::CaptureData>,
    addr: &str,
    id: &str,
    part: &Path,
) -> anyhow::Result<v1::CaptureInfo> {
    let mut file =
        std::fs::File::create(part).with_context(|| format!("create {}", part.display()))?;
    let mut info: Option<v1::CaptureInfo> = None;
    let mut size = 0u64;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    while let Some(data) = stream
        .message()
        .await
        .map_err(|s| client::status_error(addr, s))?
    {
        if data.info.is_some() {
            info = data.info;
        }
        let expected = info.as_ref().map_or(0, |i| i.size_bytes);
        size += data.data.len() as u64;
        if size > expected {
            anyhow::bail!("capture {id} is longer than the {expected} bytes it was stored with");
        }
        digest.update(&data.data);
        file.write_all(&data.data)
            .with_context(|| format!("write {}", part.display()))?;
    }
    let info = info.ok_or_else(|| anyhow::anyhow!("the aggregator sent no capture {id}"))?;
    let sha: String = digest
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if size != info.size_bytes || sha != info.sha256 {
        anyhow::bail!(
            "capture {id} arrived as {size} bytes with SHA-256 {sha}, stored as {} bytes with {}",
            info.size_bytes,
            escape(&info.sha256)
        );
    }
    file.sync_all()
        .with_context(|| format!("write {}", part.display()))?;
    Ok(info)
}

/// Fetches a stored capture into `out`, checking its size and SHA-256.
pub async fn get(
    client: &mut QueryClient<Channel>,
    addr: &str,
    id: &str,
    out: &Path,
    output: Output,
) -> anyhow::Result<()> {
    let mut stream = client
        .get_capture(v1::GetCaptureRequest { id: id.to_owned() })
        .await
        .map_err(|s| client::status_error(addr, s))?
        .into_inner();
    // Written as it arrives to a file beside `out`, renamed once whole and checked: a
    // failed fetch leaves `out` as it was and no partial file.
    let part = out.with_file_name(format!(
        ".{}.part",
        out.file_name().unwrap_or_default().to_string_lossy()
    ));
    let fetched = fetch_into(&mut stream, addr, id, &part).await;
    let info = match fetched {
        Ok(info) => info,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, out).with_context(|| format!("rename to {}", out.display()))?;
    let mut stdout = std::io::stdout().lock();
    if output == Output::Json {
        let mut v = info_json(&info);
        v["out"] = json!(out);
        writeln!(stdout, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        let target = info.target.clone().unwrap_or_default();
        let viewer = if info.kind == CaptureKind::Trace as i32 {
            "go tool trace"
        } else {
            "go tool pprof"
        };
        writeln!(
            stdout,
            "capture {} ({} of {} pid {}, {}) written to {}; open it with {viewer}",
            info.id,
            kind_name(info.kind),
            escape(&target.host),
            target.pid,
            render::bytes(info.size_bytes as f64),
            out.display()
        )?;
    }
    Ok(())
}

pub fn print_list(captures: &[v1::CaptureInfo], output: Output) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if output == Output::Json {
        let items: Vec<_> = captures.iter().map(info_json).collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({ "captures": items }))?
        )?;
        return Ok(());
    }
    if captures.is_empty() {
        writeln!(out, "no captures")?;
        return Ok(());
    }
    let mut table = Table::new(&[
        ("ID", false),
        ("TIME", false),
        ("KIND", false),
        ("HOST", false),
        ("PID", true),
        ("SERVICE", false),
        ("SIZE", true),
        ("ASKED BY", false),
    ]);
    for c in captures {
        let id = c.target.clone().unwrap_or_default();
        let service = c
            .labels
            .iter()
            .find(|l| l.name == "service")
            .map(|l| l.value.clone())
            .unwrap_or_default();
        let kind = match c.seconds {
            0 => kind_name(c.kind),
            s => format!("{} {s}s", kind_name(c.kind)),
        };
        table.row(vec![
            c.id.clone(),
            render::timestamp(c.completed_ms),
            kind,
            id.host,
            id.pid.to_string(),
            service,
            render::bytes(c.size_bytes as f64),
            c.requested_by.clone(),
        ]);
    }
    write!(out, "{}", table.render())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_by_their_names_only() {
        assert_eq!(parse_kind("trace"), Ok(CaptureKind::Trace));
        assert_eq!(parse_kind("goroutineleak"), Ok(CaptureKind::Goroutineleak));
        assert!(parse_kind("TRACE").unwrap_err().contains("trace, heap"));
        assert_eq!(kind_name(CaptureKind::Cpu as i32), "cpu");
    }
}
