//! What the benchmarks share: reading a process's CPU and memory from /proc, a plain
//! HTTP GET, the Prometheus text of the collector's own /metrics, and the collector
//! started with a settings file.

#![allow(dead_code)] // each bench uses a part

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use goroscope_tests::{Certs, Proc, collector_command_at};

/// Clock ticks per second of /proc/PID/stat (USER_HZ).
pub const TICK: f64 = 100.0;

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A field of /proc/PID/status in bytes (for the `kB` ones) or as is (Threads).
pub fn status_field(pid: u32, key: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let kb = status.lines().find_map(|l| l.strip_prefix(key)).map(|v| {
        let mut w = v.split_whitespace();
        let n = w.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        if w.next() == Some("kB") { n * 1024 } else { n }
    });
    kb.unwrap_or(0)
}

/// (VmRSS, VmHWM) in bytes.
pub fn memory(pid: u32) -> (u64, u64) {
    (status_field(pid, "VmRSS:"), status_field(pid, "VmHWM:"))
}

/// Resident bytes of a process by kind of mapping, from /proc/PID/smaps: its own
/// executable (code, read-only data, data), shared libraries (and other files), the brk heap, thread stacks and other
/// anonymous memory (malloc arenas, the Go heap).
pub fn rss_by_mapping(pid: u32) -> BTreeMap<&'static str, u64> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut kind = "anonymous";
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let perms = line.split_whitespace().nth(1).unwrap_or("");
            let path = line.split_whitespace().nth(5).unwrap_or("");
            kind = if path.is_empty() {
                "anonymous"
            } else if Path::new(path) == exe {
                match perms.as_bytes() {
                    [_, _, b'x', ..] => "executable code",
                    [_, b'w', ..] => "executable data",
                    _ => "executable read-only data",
                }
            } else if path == "[heap]" {
                "heap (brk)"
            } else if path.starts_with("[stack") {
                "main stack"
            } else if path.starts_with('[') {
                "kernel ([vdso], ...)"
            } else {
                "libraries and files"
            };
        } else if let Some(v) = line.strip_prefix("Rss:") {
            let kb: u64 = v
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            *out.entry(kind).or_insert(0) += kb * 1024;
        }
    }
    out
}

/// /proc/PID/smaps_rollup as (field, bytes), for the fields worth printing.
pub fn smaps_rollup(pid: u32) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let kb: u64 = v.split_whitespace().next()?.parse().ok()?;
            [
                "Rss",
                "Pss",
                "Shared_Clean",
                "Private_Clean",
                "Private_Dirty",
                "Anonymous",
            ]
            .contains(&k)
            .then(|| (k.to_owned(), kb * 1024))
        })
        .collect()
}

/// A GET over a fresh connection (`Connection: close`); returns the body (de-chunked)
/// and its size as sent. `headers` are added as they are ("Name: value\r\n" each).
pub fn http_get(addr: &str, path: &str, headers: &str) -> std::io::Result<(Vec<u8>, usize)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: goroscope-bench\r\n{headers}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") && !head.starts_with("http/1.0 200") {
        return Err(std::io::Error::other(
            head.lines().next().unwrap_or("").to_owned(),
        ));
    }
    let body = &raw[split + 4..];
    let sent = body.len();
    if !head.contains("transfer-encoding: chunked") {
        return Ok((body.to_vec(), sent));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| std::io::Error::other("bad chunk"))?;
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&rest[..eol])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .map_err(std::io::Error::other)?;
        if size == 0 {
            return Ok((out, sent));
        }
        let start = eol + 2;
        out.extend_from_slice(&rest[start..(start + size).min(rest.len())]);
        rest = &rest[(start + size + 2).min(rest.len())..];
    }
}

/// The samples of the Prometheus text exposition at `addr`'s /metrics, by series as
/// written (`name{label="v"}`).
pub fn scrape_metrics(addr: &str) -> BTreeMap<String, f64> {
    let (body, _) = http_get(addr, "/metrics", "").expect("GET the collector's /metrics");
    let mut out = BTreeMap::new();
    for line in String::from_utf8_lossy(&body).lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some((series, value)) = line.rsplit_once(' ')
            && let Ok(v) = value.parse::<f64>()
        {
            out.insert(series.to_owned(), v);
        }
    }
    out
}

/// The sum of every series of `name` whose labels include each of `labels`
/// (`source="debug=1"`).
pub fn metric_sum(m: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            let (n, rest) = k.split_once('{').unwrap_or((k.as_str(), ""));
            n == name && labels.iter().all(|l| rest.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

/// A collector for `host` (its certificate from `certs`) sending to `aggregator_url` at
/// `interval`, with `settings` as its settings file (written beside the spool), logging
/// at info as deployed.
pub fn start_collector_with(
    certs: &Certs,
    host: &str,
    aggregator_url: &str,
    interval: &str,
    settings: &str,
) -> Proc {
    let file = certs.path(&format!("collector-{host}.toml"));
    std::fs::write(&file, settings).expect("write the collector settings");
    Proc::spawn(
        &format!("collector {host}"),
        collector_command_at(
            certs,
            host,
            aggregator_url,
            &format!("collector-{host}"),
            interval,
            "info",
        )
        .arg("--config")
        .arg(&file),
    )
}

pub fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// The machine's load average over the last minute, as `uptime` shows it.
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The load generators' samples of series `r` in batch `seq`: `points` samples `step_ms`
/// apart ending before `now_ms`, a few milliseconds of jitter, counters for even series
/// and gauges for odd ones.
pub fn load_points(now_ms: i64, step_ms: i64, points: usize, seq: u64, r: u32) -> Vec<(i64, f64)> {
    let base = now_ms - step_ms * points as i64;
    (0..points)
        .map(|p| {
            let t = base + step_ms * p as i64 + (p as i64 * 7 + i64::from(r)) % 5;
            let k = seq as f64 * points as f64 + p as f64;
            let v = if r.is_multiple_of(2) {
                k * 4096.0
            } else {
                (k * 0.1).sin() * 1e6
            };
            (t, v)
        })
        .collect()
}
