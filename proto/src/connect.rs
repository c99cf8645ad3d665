//! The client side of the transport: connecting to the aggregator over mTLS with
//! certificates that may be renewed while the client runs.
//!
//! tonic's own TLS cannot check who the server is beyond a DNS name, nor change its
//! certificates without a new channel, so clients bring their own connector: a TCP
//! connection and a TLS handshake under one deadline, a rustls configuration read
//! afresh for every connection from a [`Reloading`] watch, and a server check that
//! wants both the DNS name and the aggregator's SPIFFE identity
//! (`spiffe://goroscope/aggregator/<name>`).
//!
//! [`Reloading`] polls the files behind a configuration (a CA bundle, a certificate and
//! its key: what cert-manager renews in place) and builds a new configuration when
//! their contents change. A bundle that holds the old and the new CA during a rotation
//! is trusted whole. A change that does not build (a certificate renewed before its
//! key) keeps the old configuration until the files agree again.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tonic::codegen::http::Uri;

use crate::identity::{Identity, Role};
use crate::tls::{TlsError, load_certs, load_key, provider, roots};

/// How often [`Reloading`] looks at its files.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// A configuration built from files, rebuilt when they change.
pub struct Reloading<T> {
    rx: watch::Receiver<Arc<T>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Builds the configuration once (an error here is the caller's to report), then
    /// polls `files` every `every` from a task of the current runtime, rebuilding on
    /// change. The polling stops when this is dropped.
    pub fn start<F>(
        files: Vec<PathBuf>,
        every: Duration,
        build: F,
    ) -> Result<Reloading<T>, TlsError>
    where
        F: Fn() -> Result<T, TlsError> + Send + 'static,
    {
        let first = build()?;
        let (tx, rx) = watch::channel(Arc::new(first));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let mut seen = fingerprint(&files);
        tokio::spawn(async move {
            let mut failing = None::<String>;
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let files2 = files.clone();
                let now = match tokio::task::spawn_blocking(move || fingerprint(&files2)).await {
                    Ok(f) => f,
                    Err(_) => continue,
                };
                if now == seen {
                    continue;
                }
                match build() {
                    Ok(config) => {
                        seen = now;
                        failing = None;
                        tracing::info!(files = %names(&files), "certificates changed: reloaded them");
                        if tx.send(Arc::new(config)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let line = e.to_string();
                        if failing.as_deref() != Some(line.as_str()) {
                            tracing::warn!(error = %line, "certificates changed but do not load; keeping the previous ones until they do");
                            failing = Some(line);
                        }
                    }
                }
            }
        });
        Ok(Reloading { rx, _stop: stop })
    }

    /// A receiver of the current configuration and its replacements.
    pub fn subscribe(&self) -> watch::Receiver<Arc<T>> {
        self.rx.clone()
    }

    pub fn current(&self) -> Arc<T> {
        self.rx.borrow().clone()
    }
}

fn names(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the files hold now (a missing file counts as a state of its own).
fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        match std::fs::read(f) {
            Ok(bytes) => bytes.hash(&mut h),
            Err(e) => e.kind().hash(&mut h),
        }
    }
    h.finish()
}

/// Wants the server's certificate to chain to the fleet CA, to name the DNS name asked
/// for, and to carry an aggregator identity.
#[derive(Debug)]
struct AggregatorVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for AggregatorVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match Identity::from_cert_der(end_entity) {
            Ok(id) if id.role == Role::Aggregator => Ok(ServerCertVerified::assertion()),
            Ok(id) => Err(rustls::Error::General(format!(
                "the server's certificate holds identity {id}, not an aggregator identity"
            ))),
            Err(e) => Err(rustls::Error::General(format!(
                "the server's certificate names no aggregator identity: {e}"
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client configuration: trusts the CA bundle `ca`, wants an aggregator identity from
/// the server, presents `client` (certificate, key) if given, speaks HTTP/2.
pub fn client_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca)?), provider.clone())
        .build()
        .map_err(|e| TlsError::Config(format!("server verifier: {e}")))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AggregatorVerifier { inner }));
    let mut config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Config(format!("{}: {e}", key.display())))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A client configuration that follows its files.
pub fn reloading_client_config(
    ca: PathBuf,
    client: Option<(PathBuf, PathBuf)>,
) -> Result<Reloading<rustls::ClientConfig>, TlsError> {
    let mut files = vec![ca.clone()];
    if let Some((c, k)) = &client {
        files.extend([c.clone(), k.clone()]);
    }
    Reloading::start(files, RELOAD_EVERY, move || {
        client_config(
            &ca,
            client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )
    })
}

/// Connects to an aggregator: TCP, then TLS with the current configuration, both under
/// `timeout`. A tower service over URIs, as tonic's custom connectors are.
#[derive(Clone)]
pub struct Connector {
    config: watch::Receiver<Arc<rustls::ClientConfig>>,
    server_name: ServerName<'static>,
    timeout: Duration,
    request_timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0:?} is not a name or address the aggregator's certificate can hold")]
    ServerName(String),
    #[error("the address {0} has no host and port")]
    Address(String),
    #[error("connect to {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("connect to {addr}: no TLS session within {}s", timeout.as_secs())]
    Timeout { addr: String, timeout: Duration },
}

/// Why [`Connector::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error(transparent)]
    Address(#[from] ConnectError),
    #[error(transparent)]
    Transport(tonic::transport::Error),
}

impl Connector {
    pub fn new(
        config: watch::Receiver<Arc<rustls::ClientConfig>>,
        server_name: &str,
        timeout: Duration,
    ) -> Result<Connector, ConnectError> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| ConnectError::ServerName(server_name.to_owned()))?;
        Ok(Connector {
            config,
            server_name,
            timeout,
            request_timeout: None,
        })
    }

    /// Every request on channels of this connector fails after `timeout` (unary calls;
    /// not for long-lived streams).
    pub fn request_timeout(mut self, timeout: Duration) -> Connector {
        self.request_timeout = Some(timeout);
        self
    }

    /// A connector with a configuration that does not change (a one-shot command).
    pub fn fixed(
        config: rustls::ClientConfig,
        server_name: &str,
        timeout: Duration,
    ) -> Result<Connector, ConnectError> {
        let (tx, rx) = watch::channel(Arc::new(config));
        // The receiver keeps the last value once the sender is gone.
        drop(tx);
        Connector::new(rx, server_name, timeout)
    }

    fn endpoint(&self, addr: &str) -> Result<tonic::transport::Endpoint, ConnectError> {
        // TLS is ours: tonic must see a plain-HTTP/2 URI.
        let plain = match addr.strip_prefix("https://") {
            Some(rest) => format!("http://{rest}"),
            None => addr.to_owned(),
        };
        let endpoint = tonic::transport::Endpoint::from_shared(plain)
            .map_err(|_| ConnectError::Address(addr.to_owned()))?
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Ok(match self.request_timeout {
            Some(t) => endpoint.timeout(t),
            None => endpoint,
        })
    }

    /// A channel to `addr` (`https://host:port`) through this connector. The channel
    /// connects on first use and again after a failure, with the configuration current
    /// then.
    pub fn channel(&self, addr: &str) -> Result<tonic::transport::Channel, ConnectError> {
        Ok(self
            .endpoint(addr)?
            .connect_with_connector_lazy(self.clone()))
    }

    /// Connects to `addr` now; the error says why not.
    pub async fn connect(&self, addr: &str) -> Result<tonic::transport::Channel, ChannelError> {
        self.endpoint(addr)?
            .connect_with_connector(self.clone())
            .await
            .map_err(ChannelError::Transport)
    }
}

type Io = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower::Service<Uri> for Connector {
    type Response = Io;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Io, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.borrow().clone();
        let server_name = self.server_name.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let addr = match (uri.host(), uri.port_u16()) {
                (Some(h), Some(p)) => {
                    format!("{}:{p}", h.trim_start_matches('[').trim_end_matches(']'))
                }
                _ => return Err(ConnectError::Address(uri.to_string())),
            };
            let io_err = |source| ConnectError::Io {
                addr: addr.clone(),
                source,
            };
            let connect = async {
                let tcp = TcpStream::connect(addr.as_str()).await.map_err(io_err)?;
                let _ = tcp.set_nodelay(true);
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(server_name, tcp)
                    .await
                    .map_err(io_err)?;
                Ok(TokioIo::new(tls))
            };
            match tokio::time::timeout(timeout, connect).await {
                Ok(r) => r,
                Err(_) => Err(ConnectError::Timeout { addr, timeout }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
    use tower::Service;

    /// A CA, and a server certificate for DNS name `localhost` holding `identity`.
    fn fleet(dir: &Path, identity: &str) -> (PathBuf, PathBuf, PathBuf) {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::URI(identity.try_into().unwrap()));
        let cert = params.signed_by(&key, &ca).unwrap();
        let paths = (
            dir.join("ca.pem"),
            dir.join("server.pem"),
            dir.join("server-key.pem"),
        );
        std::fs::write(&paths.0, ca.pem()).unwrap();
        std::fs::write(&paths.1, cert.pem()).unwrap();
        std::fs::write(&paths.2, key.serialize_pem()).unwrap();
        paths
    }

    /// Serves TLS (no HTTP) with the given certificate; returns the address.
    async fn tls_server(cert: &Path, key: &Path) -> std::net::SocketAddr {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(load_certs(cert).unwrap(), load_key(key).unwrap())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        drop(tls);
                    }
                });
            }
        });
        addr
    }

    async fn connect(ca: &Path, addr: std::net::SocketAddr) -> Result<(), String> {
        let config = client_config(ca, None).unwrap();
        let mut connector = Connector::fixed(config, "localhost", Duration::from_secs(5)).unwrap();
        let uri: Uri = format!("http://{addr}").parse().unwrap();
        connector
            .call(uri)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn the_server_must_hold_an_aggregator_identity_not_only_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        let bad = dir.path().join("bad");
        std::fs::create_dir_all(&good).unwrap();
        std::fs::create_dir_all(&bad).unwrap();
        let (ca, cert, key) = fleet(&good, "spiffe://goroscope/aggregator/localhost");
        let addr = tls_server(&cert, &key).await;
        assert_eq!(connect(&ca, addr).await, Ok(()));

        // Right CA, right DNS name, wrong identity: refused.
        let (ca, cert, key) = fleet(&bad, "spiffe://goroscope/operator/imposter");
        let addr = tls_server(&cert, &key).await;
        let err = connect(&ca, addr).await.unwrap_err();
        assert!(err.contains("not an aggregator identity"), "{err}");
    }

    #[tokio::test]
    async fn a_server_that_never_speaks_tls_fails_within_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _, _) = fleet(dir.path(), "spiffe://goroscope/aggregator/localhost");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let config = client_config(&ca, None).unwrap();
        let mut connector =
            Connector::fixed(config, "localhost", Duration::from_millis(300)).unwrap();
        let err = connector
            .call(format!("http://{addr}").parse().unwrap())
            .await
            .map(drop)
            .unwrap_err();
        assert!(matches!(err, ConnectError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn renewed_files_are_loaded_and_bad_ones_keep_the_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("value");
        std::fs::write(&path, "1").unwrap();
        let p = path.clone();
        let reloading =
            Reloading::start(vec![path.clone()], Duration::from_millis(50), move || {
                let text = std::fs::read_to_string(&p).map_err(|source| TlsError::Read {
                    path: p.clone(),
                    source,
                })?;
                text.trim()
                    .parse::<u32>()
                    .map_err(|e| TlsError::Config(e.to_string()))
            })
            .unwrap();
        let mut rx = reloading.subscribe();
        std::fs::write(&path, "2").unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*reloading.current(), 2);
        // A change that does not build keeps the last good value...
        std::fs::write(&path, "garbage").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(*reloading.current(), 2);
        // ... until the files agree again.
        std::fs::write(&path, "3").unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(*reloading.current(), 3);
    }
}
