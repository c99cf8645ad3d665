//! Clients that speak the wire directly, for the tests that send what a real collector
//! never would: NaN samples, bad labels, skewed clocks, oversized and malformed
//! messages, floods of connections without a certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use goroscope_proto::v1::{self, aggregator_message, collector_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::Certs;

/// A runtime for the test's async parts.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start a tokio runtime")
}

/// A channel to the aggregator at `url` as the holder of `stem`'s certificate.
pub fn channel(certs: &Certs, url: &str, stem: &str) -> tonic::transport::Channel {
    let (cert, key) = certs.leaf(stem);
    channel_with(&certs.ca(), Some((&cert, &key)), url)
}

/// A channel with any CA and (optional) client certificate.
pub fn channel_with(
    ca: &Path,
    client: Option<(&Path, &Path)>,
    url: &str,
) -> tonic::transport::Channel {
    let config = goroscope_proto::connect::client_config(ca, client).expect("client tls");
    goroscope_proto::connect::Connector::fixed(config, "localhost", Duration::from_secs(10))
        .expect("connector")
        .channel(url)
        .expect("channel")
}

/// One ingest stream, driven by hand.
pub struct RawIngest {
    tx: mpsc::Sender<v1::CollectorMessage>,
    inbound: tonic::Streaming<v1::AggregatorMessage>,
    pub welcome: v1::Welcome,
}

impl RawIngest {
    /// Opens a stream as collector `host` (with that host's certificate) and says Hello.
    pub async fn open(certs: &Certs, url: &str, host: &str, epoch: u64) -> RawIngest {
        RawIngest::try_open(certs, url, host, epoch)
            .await
            .expect("open the ingest stream")
    }

    /// [`RawIngest::open`], or the status the aggregator refused the stream with.
    pub async fn try_open(
        certs: &Certs,
        url: &str,
        host: &str,
        epoch: u64,
    ) -> Result<RawIngest, tonic::Status> {
        let channel = channel(certs, url, &format!("collector-{host}"));
        let mut client = v1::ingest_client::IngestClient::new(channel);
        let (tx, rx) = mpsc::channel(16);
        tx.send(v1::CollectorMessage {
            msg: Some(collector_message::Msg::Hello(v1::Hello {
                host: host.into(),
                collector_version: "raw".into(),
                epoch,
                capabilities: vec![],
            })),
        })
        .await
        .expect("queue the hello");
        let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        let welcome = match inbound.message().await?.map(|m| m.msg) {
            Some(Some(aggregator_message::Msg::Welcome(w))) => w,
            other => panic!("expected a welcome, got {other:?}"),
        };
        Ok(RawIngest {
            tx,
            inbound,
            welcome,
        })
    }

    /// Sends a batch and waits for its answer: the ack, or the status that ended the
    /// stream.
    pub async fn send(&mut self, batch: v1::Batch) -> Result<v1::Ack, tonic::Status> {
        self.tx
            .send(v1::CollectorMessage {
                msg: Some(collector_message::Msg::Batch(batch)),
            })
            .await
            .map_err(|_| tonic::Status::unavailable("stream closed"))?;
        loop {
            match tokio::time::timeout(Duration::from_secs(20), self.inbound.message()).await {
                Err(_) => return Err(tonic::Status::deadline_exceeded("no answer in 20s")),
                Ok(Err(status)) => return Err(status),
                Ok(Ok(None)) => return Err(tonic::Status::ok("stream ended without a status")),
                Ok(Ok(Some(m))) => {
                    if let Some(aggregator_message::Msg::Ack(ack)) = m.msg {
                        return Ok(ack);
                    }
                }
            }
        }
    }
}

/// A target upsert for host `host`.
pub fn upsert(r: u32, host: &str, pid: u32, labels: &[(&str, &str)]) -> v1::TargetUpsert {
    v1::TargetUpsert {
        r#ref: r,
        id: Some(v1::TargetId {
            host: host.into(),
            pid,
            start_ticks: 1,
        }),
        labels: labels
            .iter()
            .map(|(n, v)| v1::Label {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect(),
        coverage: Some(v1::Coverage {
            proc: true,
            ..Default::default()
        }),
        start_time_ms: 0,
        ..Default::default()
    }
}

pub fn decl(r: u32, target_ref: u32, metric: &str) -> v1::SeriesDecl {
    v1::SeriesDecl {
        r#ref: r,
        target_ref,
        metric: metric.into(),
        labels: Vec::new(),
    }
}

/// One sample of a series.
pub fn sample(series_ref: u32, ts: i64, value: f64) -> v1::SeriesSamples {
    v1::SeriesSamples {
        series_ref,
        timestamp_deltas: vec![ts],
        values: vec![value],
    }
}

/// A query client as operator alice.
pub fn query_client(
    certs: &Certs,
    url: &str,
) -> v1::query_client::QueryClient<tonic::transport::Channel> {
    v1::query_client::QueryClient::new(channel(certs, url, "operator-alice"))
}

/// Opens `n` TLS connections without a client certificate from `from` (a loopback
/// address) and keeps them until the returned handles are dropped. Returns how many
/// completed the handshake.
pub async fn certless_flood(
    certs: &Certs,
    to: std::net::SocketAddr,
    from: std::net::IpAddr,
    n: usize,
) -> (usize, Vec<tokio::task::JoinHandle<()>>) {
    let mut config = goroscope_proto::connect::client_config(&certs.ca(), None).expect("tls");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tasks = Vec::new();
    let (done_tx, mut done_rx) = mpsc::channel(n.max(1));
    for _ in 0..n {
        let connector = connector.clone();
        let done = done_tx.clone();
        tasks.push(tokio::spawn(async move {
            let socket = match from {
                std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
            }
            .expect("socket");
            socket
                .bind((from, 0).into())
                .expect("bind the flood's address");
            let Ok(Ok(tcp)) =
                tokio::time::timeout(Duration::from_secs(10), socket.connect(to)).await
            else {
                let _ = done.send(false).await;
                return;
            };
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            match tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp)).await
            {
                Ok(Ok(mut tls)) => {
                    let _ = done.send(true).await;
                    // Hold the connection: read until the server closes it.
                    let mut buf = [0u8; 1024];
                    use tokio::io::AsyncReadExt;
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                }
                _ => {
                    let _ = done.send(false).await;
                }
            }
        }));
    }
    drop(done_tx);
    let mut ok = 0;
    while let Some(done) = done_rx.recv().await {
        ok += usize::from(done);
    }
    (ok, tasks)
}

/// `GET path` from a plain-HTTP address: (status, body); panics if it cannot connect.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|| panic!("GET http://{addr}{path} failed"))
}

/// `GET path` from a plain-HTTP address: (status, body), `None` if it cannot connect.
pub fn try_http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}
