//! Helpers: a generated fleet-like data set, its OpenMetrics text, a Prometheus server on
//! the same data, and result comparison.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use goroscope_promql::{Labels, Matcher, RollupSeries, Series, Source, SourceError};

/// The first sample's hour (a multiple of one hour, so rollup buckets align).
pub const T0: i64 = 1_699_999_200_000;
/// Two hours of data.
pub const SPAN: i64 = 2 * 3_600_000;
pub const SCRAPE: i64 = 15_000;

/// A tiny deterministic generator, so every run sees the same data.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn labels(name: &str, target: &(&str, &str), extra: &[(&str, &str)]) -> Labels {
    let mut v = vec![
        ("__name__", name),
        ("job", target.0),
        ("instance", target.1),
    ];
    v.extend_from_slice(extra);
    Labels::new(v)
}

/// Series of three targets: counters (one with resets), Go runtime gauges, a classic
/// histogram, a gauge with NaN and infinities.
///
/// Counters start far from zero: Prometheus 2.42 clamps `rate`'s extrapolation at the
/// counter's zero point before limiting it to half a sample interval, Prometheus 3 after,
/// so the two differ for a series that starts inside the window close to zero (the unit
/// tests pin the Prometheus 3 order). A counter that resets to zero is clamped to zero by
/// both. Sample times are a few milliseconds past
/// whole seconds while every query time is a whole second: Prometheus 2.42 closes range
/// and lookback windows at the start ([t - r, t]) where Prometheus 3 leaves them open
/// ((t - r, t]), and with no sample on a window edge both give the same answer.
pub fn dataset(integer_values: bool) -> Vec<Series> {
    let targets = [("api", "a:9090"), ("api", "b:9090"), ("worker", "c:9090")];
    let bounds = ["0.05", "0.1", "0.25", "0.5", "1", "+Inf"];
    let mut rng = Lcg(42);
    let mut out: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
    let round = |v: f64| if integer_values { v.round() } else { v };
    for (ti, target) in targets.iter().enumerate() {
        let jitter = 3 + 211 * ti as i64;
        let mut c200 = 1000.0 + 100.0 * ti as f64;
        let mut c500 = 50.0 + 10.0 * ti as f64;
        let mut hist = [100.0, 200.0, 300.0, 400.0, 500.0, 600.0];
        let mut hist_sum = 0.0;
        let steps = SPAN / SCRAPE;
        for k in 0..steps {
            let ts = T0 + k * SCRAPE + jitter + (k % 7) * 13;
            let minute = k * SCRAPE / 60_000;
            // The worker is down from minute 50 to 65: a gap longer than the lookback.
            if ti == 2 && (50..65).contains(&minute) {
                continue;
            }
            c200 += round(5.0 + 20.0 * rng.next());
            c500 += round(if rng.next() < 0.2 {
                1.0 + 3.0 * rng.next()
            } else {
                0.0
            });
            // Target b restarts at minute 70: its counters start over.
            if ti == 1 && k == 70 * 4 {
                c200 = round(3.0);
                c500 = 0.0;
                hist = [0.0; 6];
                hist_sum = 0.0;
            }
            let mut push = |l: Labels, v: f64| out.entry(l).or_default().push((ts, v));
            push(
                labels("http_requests_total", target, &[("code", "200")]),
                c200,
            );
            push(
                labels("http_requests_total", target, &[("code", "500")]),
                c500,
            );
            let g =
                round(40.0 + 13.37 * ti as f64 + 10.0 * (k as f64 / 40.0).sin() + 8.0 * rng.next());
            push(labels("go_goroutines", target, &[]), g);
            let heap = round(5e7 + 1e7 * ti as f64 + 2e5 * k as f64 + 3e6 * rng.next());
            push(labels("go_memstats_heap_inuse_bytes", target, &[]), heap);
            push(
                labels("process_resident_memory_bytes", target, &[]),
                round(heap * 1.5 + 2e7 * rng.next()),
            );
            for _ in 0..(3 + (rng.next() * 10.0) as usize) {
                let obs = rng.next() * rng.next() * 1.2;
                hist_sum += obs;
                for (i, b) in bounds.iter().enumerate() {
                    let ub: f64 = if *b == "+Inf" {
                        f64::INFINITY
                    } else {
                        b.parse().unwrap()
                    };
                    if obs <= ub {
                        hist[i] += 1.0;
                    }
                }
            }
            for (i, b) in bounds.iter().enumerate() {
                push(
                    labels("http_request_duration_seconds_bucket", target, &[("le", b)]),
                    hist[i],
                );
            }
            push(
                labels("http_request_duration_seconds_sum", target, &[]),
                round(hist_sum),
            );
            push(
                labels("http_request_duration_seconds_count", target, &[]),
                hist[5],
            );
            if ti == 0 {
                let w = match k % 50 {
                    10 => f64::NAN,
                    20 => f64::INFINITY,
                    30 => f64::NEG_INFINITY,
                    _ => round(rng.next() * 100.0),
                };
                push(labels("weird_gauge", target, &[]), w);
            }
        }
    }
    out.into_iter()
        .map(|(labels, samples)| Series { labels, samples })
        .collect()
}

fn om_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

fn om_time(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// The data set as OpenMetrics text, and the same series with each timestamp as Prometheus
/// reads it back (it parses seconds as a float and truncates to milliseconds).
pub fn openmetrics(series: &[Series]) -> (String, Vec<Series>) {
    let mut text = String::new();
    let mut read_back = Vec::new();
    for s in series {
        let mut name = "";
        let mut ls = Vec::new();
        for (k, v) in &s.labels.0 {
            if k == "__name__" {
                name = v;
            } else {
                ls.push(format!("{k}=\"{v}\""));
            }
        }
        let mut samples = Vec::new();
        for &(t, v) in &s.samples {
            let ts = om_time(t);
            text.push_str(&format!(
                "{name}{{{}}} {} {ts}\n",
                ls.join(","),
                om_value(v)
            ));
            samples.push(((ts.parse::<f64>().unwrap() * 1000.0) as i64, v));
        }
        read_back.push(Series {
            labels: s.labels.clone(),
            samples,
        });
    }
    text.push_str("# EOF\n");
    (text, read_back)
}

/// A Prometheus server on a backfilled TSDB, killed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    pub fn start(openmetrics: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let om = dir.path().join("data.om");
        std::fs::write(&om, openmetrics).unwrap();
        let tsdb = dir.path().join("tsdb");
        let out = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&om)
            .arg(&tsdb)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 15s\n").unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg("--storage.tsdb.retention.time=100y")
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((status, _)) = http_get(&p.addr, "/-/ready")
                && status == 200
            {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 30 s: {}",
                p.log(&p._dir.path().join("prometheus.log"))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self, path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    pub fn get(&self, path_and_query: &str) -> String {
        let (status, body) = http_get(&self.addr, path_and_query).expect("prometheus answers");
        assert!(
            status == 200 || status == 400 || status == 422,
            "status {status}: {body}"
        );
        body
    }
}

/// A minimal HTTP/1.0 GET (the server closes the connection, no chunking).
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A parsed API response: result type and series (labels, points); a scalar or string is
/// one series without labels.
#[derive(Debug)]
pub struct Parsed {
    pub result_type: String,
    pub series: Vec<ParsedSeries>,
}

/// Labels and `(timestamp ms, value text)` points.
pub type ParsedSeries = (BTreeMap<String, String>, Vec<(i64, String)>);

fn point(p: &serde_json::Value) -> (i64, String) {
    let t = p[0].as_f64().unwrap();
    (
        (t * 1000.0).round() as i64,
        p[1].as_str().unwrap().to_string(),
    )
}

pub fn parse_response(body: &str) -> Result<Parsed, String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
    if v["status"] != "success" {
        return Err(body.to_string());
    }
    let rt = v["data"]["resultType"].as_str().unwrap().to_string();
    let result = &v["data"]["result"];
    let mut series = Vec::new();
    match rt.as_str() {
        "scalar" | "string" => series.push((BTreeMap::new(), vec![point(result)])),
        _ => {
            for s in result.as_array().unwrap() {
                let metric: BTreeMap<String, String> = s["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                let points = if let Some(vs) = s.get("values") {
                    vs.as_array().unwrap().iter().map(point).collect()
                } else {
                    vec![point(&s["value"])]
                };
                series.push((metric, points));
            }
        }
    }
    series.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Parsed {
        result_type: rt,
        series,
    })
}

fn parse_value(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => s.parse().unwrap(),
    }
}

pub fn values_match(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    diff <= 1e-9 * a.abs().max(b.abs()) || diff < 1e-12
}

/// Compares two API bodies; returns what differs.
pub fn compare(ours: &str, theirs: &str) -> Result<(), String> {
    let ours = parse_response(ours)?;
    let theirs = parse_response(theirs)?;
    if ours.result_type != theirs.result_type {
        return Err(format!(
            "result type {} vs {}",
            ours.result_type, theirs.result_type
        ));
    }
    let ol: Vec<_> = ours.series.iter().map(|s| &s.0).collect();
    let tl: Vec<_> = theirs.series.iter().map(|s| &s.0).collect();
    if ol != tl {
        return Err(format!(
            "label sets differ:\n ours   {ol:?}\n theirs {tl:?}"
        ));
    }
    for (o, t) in ours.series.iter().zip(&theirs.series) {
        let ot: Vec<i64> = o.1.iter().map(|p| p.0).collect();
        let tt: Vec<i64> = t.1.iter().map(|p| p.0).collect();
        if ot != tt {
            return Err(format!(
                "timestamps of {:?} differ:\n ours   {ot:?}\n theirs {tt:?}",
                o.0
            ));
        }
        for (op, tp) in o.1.iter().zip(&t.1) {
            if !values_match(parse_value(&op.1), parse_value(&tp.1)) {
                return Err(format!(
                    "{:?} at {}: ours {} theirs {}",
                    o.0, op.0, op.1, tp.1
                ));
            }
        }
    }
    Ok(())
}

/// A source that counts its calls, to check which read path a query took.
pub struct Counting<S> {
    pub inner: S,
    pub selects: Mutex<usize>,
    pub rollups: Mutex<usize>,
}

impl<S> Counting<S> {
    pub fn new(inner: S) -> Self {
        Counting {
            inner,
            selects: Mutex::new(0),
            rollups: Mutex::new(0),
        }
    }
    pub fn take(&self) -> (usize, usize) {
        let s = std::mem::take(&mut *self.selects.lock().unwrap());
        let r = std::mem::take(&mut *self.rollups.lock().unwrap());
        (s, r)
    }
}

impl<S: Source> Source for Counting<S> {
    fn select(
        &self,
        m: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, SourceError> {
        *self.selects.lock().unwrap() += 1;
        self.inner.select(m, start_ms, end_ms)
    }
    fn select_rollup(
        &self,
        m: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        res: i64,
    ) -> Result<Option<Vec<RollupSeries>>, SourceError> {
        let r = self.inner.select_rollup(m, start_ms, end_ms, res)?;
        if r.is_some() {
            *self.rollups.lock().unwrap() += 1;
        }
        Ok(r)
    }
}
