//! Helpers for the tests against a real Prometheus: start and kill `prometheus` with its
//! remote-write receiver on a loopback port, query its HTTP API, make certificates.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use goroscope_remote_write::{Label, METRIC_NAME, Sample, TimeSeries};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A stored series: its labels, sorted, and its samples as (timestamp ms, value).
pub type Stored = (Vec<Label>, Vec<(i64, f64)>);

/// Waits up to `limit` for `done`, polling.
pub async fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Certificates for an mTLS receiver: a CA, a server certificate for `localhost` and
/// 127.0.0.1, a client certificate; PEM files in `dir`.
pub struct Certs {
    pub ca: PathBuf,
    pub server: PathBuf,
    pub server_key: PathBuf,
    pub client: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate of another CA, which the receiver refuses.
    pub rogue: PathBuf,
    pub rogue_key: PathBuf,
}

impl Certs {
    pub fn new(dir: &Path) -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let server = params.signed_by(&server_key, &ca).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client = CertificateParams::new(vec!["aggregator.goroscope".to_owned()])
            .unwrap()
            .signed_by(&client_key, &ca)
            .unwrap();
        let mut other_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let other_ca =
            CertifiedIssuer::self_signed(other_params, KeyPair::generate().unwrap()).unwrap();
        let rogue_key = KeyPair::generate().unwrap();
        let rogue = CertificateParams::new(vec!["aggregator.goroscope".to_owned()])
            .unwrap()
            .signed_by(&rogue_key, &other_ca)
            .unwrap();
        let certs = Certs {
            ca: dir.join("ca.pem"),
            server: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
            rogue: dir.join("rogue.pem"),
            rogue_key: dir.join("rogue-key.pem"),
        };
        std::fs::write(&certs.rogue, rogue.pem()).unwrap();
        std::fs::write(&certs.rogue_key, rogue_key.serialize_pem()).unwrap();
        std::fs::write(&certs.ca, ca.pem()).unwrap();
        std::fs::write(&certs.server, server.pem()).unwrap();
        std::fs::write(&certs.server_key, server_key.serialize_pem()).unwrap();
        std::fs::write(&certs.client, client.pem()).unwrap();
        std::fs::write(&certs.client_key, client_key.serialize_pem()).unwrap();
        certs
    }
}

/// A `prometheus` process with the remote-write receiver, killed on drop.
pub struct Prometheus {
    pub port: u16,
    pub data: PathBuf,
    child: Option<Child>,
    tls: Option<Arc<rustls::ClientConfig>>,
    web_config: Option<PathBuf>,
}

impl Prometheus {
    /// Starts Prometheus on `127.0.0.1:port` with its TSDB in `dir/data`; serves
    /// https requiring a client certificate when `certs` is given. Waits until ready.
    pub async fn start(dir: &Path, port: u16, certs: Option<&Certs>) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            "global:\n  scrape_interval: 1h\nscrape_configs: []\n",
        )
        .unwrap();
        let (web_config, tls) = match certs {
            Some(c) => {
                let path = dir.join("web.yml");
                std::fs::write(
                    &path,
                    format!(
                        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_ca_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n",
                        c.server.display(),
                        c.server_key.display(),
                        c.ca.display()
                    ),
                )
                .unwrap();
                (Some(path), Some(client_tls(c)))
            }
            None => (None, None),
        };
        let mut p = Prometheus {
            port,
            data: dir.join("data"),
            child: None,
            tls,
            web_config,
        };
        p.restart().await;
        p
    }

    /// Starts the process again on the same port and storage.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.with_extension("log"))
            .unwrap();
        let mut command = Command::new(PROMETHEUS);
        command
            .arg(format!(
                "--config.file={}",
                self.data.with_file_name("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", self.data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--web.enable-remote-write-receiver")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(web) = &self.web_config {
            command.arg(format!("--web.config.file={}", web.display()));
        }
        self.child = Some(command.spawn().expect("start /usr/bin/prometheus"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = self.get("/-/ready").await {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("prometheus exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 30 s: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no flush beyond what the WAL already holds.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    pub fn write_url(&self) -> String {
        // `localhost` over TLS, to check the server name against the certificate.
        let host = if self.tls.is_some() {
            "localhost"
        } else {
            "127.0.0.1"
        };
        format!("{}://{host}:{}/api/v1/write", self.scheme(), self.port)
    }

    pub async fn get(&self, path_and_query: &str) -> Result<(u16, Bytes), String> {
        let uri: hyper::Uri = format!(
            "{}://localhost:{}{path_and_query}",
            self.scheme(),
            self.port
        )
        .parse()
        .unwrap();
        let tls = self.tls.clone().unwrap_or_else(client_tls_plain);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .build();
        let client: Client<_, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
            .await
            .map_err(|_| "timeout".to_owned())?
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }

    /// Every sample of every series `selector` matches in the last two hours, as
    /// stored: series labels (sorted) to (timestamp ms, value).
    pub async fn raw_samples(&self, selector: &str) -> Vec<Stored> {
        let query = format!("{selector}[2h]");
        let time = (now_ms() + 60_000) as f64 / 1000.0;
        let (status, body) = self
            .get(&format!(
                "/api/v1/query?query={}&time={time:.3}",
                percent(&query)
            ))
            .await
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["data"]["resultType"], "matrix", "{json}");
        let mut out = Vec::new();
        for series in json["data"]["result"].as_array().unwrap() {
            let mut labels: Vec<Label> = series["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| Label::new(k.clone(), v.as_str().unwrap()))
                .collect();
            labels.sort();
            let samples = series["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|pair| {
                    let t = pair[0].as_f64().unwrap();
                    let v = pair[1].as_str().unwrap();
                    ((t * 1000.0).round() as i64, parse_value(v))
                })
                .collect();
            out.push((labels, samples));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A value as Prometheus' API prints it (Go's shortest round-trip form, `NaN`,
/// `+Inf`, `-Inf`).
pub fn parse_value(v: &str) -> f64 {
    match v {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("value {v:?}")),
    }
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn client_tls_plain() -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth(),
    )
}

fn client_tls(c: &Certs) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&c.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_file_iter(&c.client)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&c.client_key).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap(),
    )
}

/// The fleet's series as the aggregator would export them: `__name__`, target labels,
/// `host`, `pid`, series labels; `n` samples each ending about now, every few of
/// them a special value.
pub fn fleet_series(metric: &str, hosts: usize, n: usize, step_ms: i64) -> Vec<TimeSeries> {
    let end = now_ms() - 1000;
    (0..hosts)
        .map(|h| TimeSeries {
            labels: vec![
                Label::new(METRIC_NAME, metric),
                Label::new("service", "checkout"),
                Label::new("host", format!("host-{h}")),
                Label::new("pid", format!("{}", 4000 + h)),
                Label::new("quantile", "0.99"),
            ],
            samples: (0..n)
                .map(|i| Sample {
                    timestamp: end - (n - 1 - i) as i64 * step_ms,
                    value: special(h, i),
                })
                .collect(),
        })
        .collect()
}

fn special(h: usize, i: usize) -> f64 {
    match (h * 7 + i) % 53 {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => -0.0,
        4 => 5e-324,
        5 => f64::MAX,
        6 => -1.0 / 3.0,
        _ => (h * 1000 + i) as f64 * 0.1 + 1e-9,
    }
}

/// Chops `series` into queue entries of `per_entry` samples of each series, so that
/// each entry holds every series and entries are in time order.
pub fn entries(series: &[TimeSeries], per_entry: usize) -> Vec<Vec<TimeSeries>> {
    let n = series[0].samples.len();
    (0..n.div_ceil(per_entry))
        .map(|k| {
            series
                .iter()
                .map(|s| TimeSeries {
                    labels: s.labels.clone(),
                    samples: s.samples[k * per_entry..((k + 1) * per_entry).min(n)].to_vec(),
                })
                .collect()
        })
        .collect()
}

/// Asserts that Prometheus holds exactly `sent`: the same series, each sample once, at
/// the same timestamp, with the same value bits (NaN as NaN: the API prints no payload).
pub fn assert_stored_exactly(stored: &[Stored], sent: &[TimeSeries]) {
    let mut want: Vec<(Vec<Label>, &[Sample])> = sent
        .iter()
        .map(|s| {
            let mut labels = s.labels.clone();
            labels.sort();
            (labels, s.samples.as_slice())
        })
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        stored.iter().map(|s| &s.0).collect::<Vec<_>>(),
        want.iter().map(|s| &s.0).collect::<Vec<_>>(),
        "series"
    );
    for ((labels, got), (_, want)) in stored.iter().zip(&want) {
        assert_eq!(got.len(), want.len(), "sample count of {labels:?}");
        for (g, w) in got.iter().zip(want.iter()) {
            assert_eq!(g.0, w.timestamp, "timestamp in {labels:?}");
            if w.value.is_nan() {
                assert!(
                    g.1.is_nan(),
                    "{labels:?} at {}: {} instead of NaN",
                    w.timestamp,
                    g.1
                );
            } else {
                assert_eq!(
                    g.1.to_bits(),
                    w.value.to_bits(),
                    "{labels:?} at {}: {} vs {}",
                    w.timestamp,
                    g.1,
                    w.value
                );
            }
        }
    }
}
