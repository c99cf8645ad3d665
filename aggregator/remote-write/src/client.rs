//! One remote-write POST: hyper's pooled client over rustls (ring), trusting
//! `tls_ca` or the system's roots, with a client certificate for mTLS receivers. The
//! whole exchange, connection and TLS handshake included, is bounded by `timeout`; at
//! most 64 KiB of an answer is read. Credentials are read from their files for every
//! request, so renewed ones are used, and never reach a log or an error; renewed TLS
//! files are used from the next request on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT,
};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncReadExt;

use crate::backoff::parse_retry_after;
use crate::config::{Config, ConfigError};
use crate::stats::FailReason;

/// Bytes of an answer read at most: receivers answer a refusal with one line, and the
/// log only needs its beginning.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Characters of a refusal repeated in the log.
pub const LOGGED_BODY_CHARS: usize = 256;
/// Bytes of a token or password file read at most.
const MAX_SECRET_BYTES: u64 = 16 * 1024;

pub const REMOTE_WRITE_VERSION: &str = "0.1.0";
pub const USER_AGENT_VALUE: &str = concat!("goroscope-remote-write/", env!("CARGO_PKG_VERSION"));
static REMOTE_WRITE_VERSION_HEADER: HeaderName =
    HeaderName::from_static("x-prometheus-remote-write-version");

/// A failed request: why, how the receiver explained it (escaped, cut), and when it
/// asked to be tried again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url}: {detail}")]
pub struct SendError {
    pub reason: FailReason,
    pub status: Option<StatusCode>,
    pub retry_after: Option<Duration>,
    pub url: String,
    pub detail: String,
}

#[derive(Clone)]
enum Auth {
    None,
    Bearer(Arc<PathBuf>),
    Basic {
        user: Arc<str>,
        password: Arc<PathBuf>,
    },
}

type HttpsPool = Pool<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Clone)]
pub struct Client {
    tls: Arc<TlsFiles>,
    /// The pool over the TLS settings as last read, and the files' modification times
    /// then: when one changes (a renewed certificate), a new pool is built.
    pool: Arc<Mutex<(HttpsPool, Stamps)>>,
    uri: Uri,
    /// The URL as logged: no user information, no query.
    shown: Arc<str>,
    timeout: Duration,
    auth: Auth,
}

type Stamps = Vec<Option<SystemTime>>;

/// The TLS settings' files, read at start and again when they change.
struct TlsFiles {
    https: bool,
    ca: Option<PathBuf>,
    cert_and_key: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self.ca.iter().cloned().collect();
        if let Some((cert, key)) = &self.cert_and_key {
            paths.push(cert.clone());
            paths.push(key.clone());
        }
        paths
    }

    fn stamps(&self) -> Stamps {
        self.paths()
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// A pool over the files as they are now (blocking file reads).
    fn pool(&self) -> Result<HttpsPool, ConfigError> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = &self.ca {
            for cert in load_certs("tls_ca", path)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error("tls_ca", path, e.to_string()))?;
            }
        } else if self.https {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(error = %e, "reading the system's CA certificates failed");
            }
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                tracing::warn!(
                    "no CA certificates for the remote-write receiver: set export.tls_ca"
                );
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| file_error("tls_ca", Path::new(""), e.to_string()))?
        .with_root_certificates(roots);
        let tls = match &self.cert_and_key {
            Some((cert, key)) => {
                let chain = load_certs("tls_cert", cert)?;
                let pem = read_file("tls_key", key)?;
                let key_der = PrivateKeyDer::from_pem_slice(&pem)
                    .map_err(|e| file_error("tls_key", key, e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| file_error("tls_key", key, e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Pool::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1)
            .build(connector))
    }
}

impl Client {
    /// Reads the CA and client certificate files; call from startup (it reads files
    /// synchronously). Checks `config` with [`Config::validate`] first.
    pub fn new(config: &Config) -> Result<Client, ConfigError> {
        config.validate()?;
        let url = config.remote_write_url.as_deref().unwrap_or_default();
        let uri: Uri = url.parse().map_err(|_| ConfigError::Invalid {
            key: "remote_write_url",
            value: url.to_owned(),
            reason: "not a URL",
        })?;
        let tls = TlsFiles {
            https: uri.scheme_str() == Some("https"),
            ca: config.tls_ca.clone(),
            cert_and_key: config.tls_cert.clone().zip(config.tls_key.clone()),
        };
        let stamps = tls.stamps();
        let pool = tls.pool()?;
        let auth = match (
            &config.bearer_token_file,
            &config.basic_auth_user,
            &config.basic_auth_password_file,
        ) {
            (Some(token), _, _) => {
                std::fs::metadata(token)
                    .map_err(|e| file_error("bearer_token_file", token, e.to_string()))?;
                Auth::Bearer(Arc::new(token.clone()))
            }
            (None, Some(user), Some(password)) => {
                std::fs::metadata(password)
                    .map_err(|e| file_error("basic_auth_password_file", password, e.to_string()))?;
                Auth::Basic {
                    user: user.as_str().into(),
                    password: Arc::new(password.clone()),
                }
            }
            _ => Auth::None,
        };
        Ok(Client {
            tls: Arc::new(tls),
            pool: Arc::new(Mutex::new((pool, stamps))),
            shown: shown_url(&uri).into(),
            uri,
            timeout: config.timeout,
            auth,
        })
    }

    /// The receiver's URL as it may be logged.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// POSTs one encoded request; succeeds on a 2xx answer.
    pub async fn send(&self, body: Bytes) -> Result<(), SendError> {
        let fail = |reason, status, detail: String| SendError {
            reason,
            status,
            retry_after: None,
            url: self.shown.to_string(),
            detail,
        };
        let mut request = Request::post(self.uri.clone())
            .header(CONTENT_ENCODING, "snappy")
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header(&REMOTE_WRITE_VERSION_HEADER, REMOTE_WRITE_VERSION)
            .header(USER_AGENT, USER_AGENT_VALUE)
            .body(Full::new(body))
            .map_err(|e| fail(FailReason::Network, None, e.to_string()))?;
        match self.authorization().await {
            Ok(Some(value)) => {
                request.headers_mut().insert(AUTHORIZATION, value);
            }
            Ok(None) => {}
            Err(detail) => return Err(fail(FailReason::Credentials, None, detail)),
        }
        let pool = self.current_pool().await;
        let exchange = async {
            let response = pool
                .request(request)
                .await
                .map_err(|e| fail(FailReason::Network, None, error_chain(&e)))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            // Read (bounded) even on success, so the connection can be reused.
            let body = read_bounded(response.into_body(), MAX_RESPONSE_BYTES).await;
            if status.is_success() {
                return Ok(());
            }
            let text = String::from_utf8_lossy(&body);
            let detail = format!(
                "answered {status}: {}",
                printable(text.trim(), LOGGED_BODY_CHARS)
            );
            Err(SendError {
                retry_after,
                ..fail(classify(status), Some(status), detail)
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(fail(
                FailReason::Timeout,
                None,
                format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                ),
            )),
        }
    }

    /// The pool, rebuilt first if a TLS file changed since it was built. A file that
    /// cannot be read or parsed keeps the pool as it is, with a warning, until it is
    /// fixed. Costs a `stat` of each TLS file per request.
    async fn current_pool(&self) -> HttpsPool {
        if self.tls.ca.is_none() && self.tls.cert_and_key.is_none() {
            return self.lock_pool().0.clone();
        }
        let tls = self.tls.clone();
        let Ok(stamps) = tokio::task::spawn_blocking(move || tls.stamps()).await else {
            return self.lock_pool().0.clone();
        };
        {
            let current = self.lock_pool();
            if current.1 == stamps {
                return current.0.clone();
            }
        }
        let tls = self.tls.clone();
        let rebuilt = tokio::task::spawn_blocking(move || tls.pool()).await;
        let mut current = self.lock_pool();
        match rebuilt {
            Ok(Ok(pool)) => {
                tracing::info!(files = ?self.tls.paths(), "TLS files changed, using them");
                *current = (pool, stamps);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "TLS files changed but cannot be used, keeping the previous ones");
                // Not tried again until the files change again.
                current.1 = stamps;
            }
            Err(_) => {}
        }
        current.0.clone()
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, (HttpsPool, Stamps)> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn authorization(&self) -> Result<Option<HeaderValue>, String> {
        let value = match &self.auth {
            Auth::None => return Ok(None),
            Auth::Bearer(path) => {
                format!("Bearer {}", read_secret("bearer_token_file", path).await?)
            }
            Auth::Basic { user, password } => {
                let password = read_secret("basic_auth_password_file", password).await?;
                format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
            }
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            "the credentials file holds characters a header cannot carry".to_owned()
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// What a non-2xx status means for the samples. 401, 403 and 404 say the request did
/// not reach whatever judges samples (credentials, tenant, path): retried, so a
/// misconfiguration fixed later loses nothing. 408 and 429 ask to come back later.
/// Any other 4xx refuses the samples themselves.
pub fn classify(status: StatusCode) -> FailReason {
    match status.as_u16() {
        429 => FailReason::Status429,
        401 | 403 | 404 | 408 => FailReason::Status4xxRetried,
        400..=499 => FailReason::Status4xx,
        500..=599 => FailReason::Status5xx,
        _ => FailReason::StatusOther,
    }
}

/// Reads at most `limit` bytes of `body`, then stops (the connection is then closed
/// rather than reused). Errors end the read: the beginning is all the log needs.
pub async fn read_bounded<B>(body: B, limit: usize) -> Vec<u8>
where
    B: hyper::body::Body,
{
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    while out.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(mut data) = frame.into_data() {
                    use bytes::Buf;
                    let take = data.remaining().min(limit - out.len());
                    out.extend_from_slice(&data.copy_to_bytes(take));
                }
            }
            _ => break,
        }
    }
    out
}

/// `text` for a log line: control and bidi characters escaped, cut after `max`
/// characters with the number of bytes left out.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, (i, c)) in text.char_indices().enumerate() {
        if n == max {
            out.push_str(&format!("…(+{} bytes)", text.len() - i));
            break;
        }
        if c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
        {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `scheme://host[:port]/path`: user information and the query may hold secrets.
fn shown_url(uri: &Uri) -> String {
    format!(
        "{}://{}{}{}",
        uri.scheme_str().unwrap_or("http"),
        uri.host().unwrap_or_default(),
        uri.port().map(|p| format!(":{p}")).unwrap_or_default(),
        uri.path()
    )
}

/// An error and its causes in one line, each cause added only when not already said.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    for cause in std::iter::successors(Some(e), |e| e.source()) {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

async fn read_secret(key: &str, path: &Path) -> Result<String, String> {
    let error = |reason: String| format!("export.{key} {}: {reason}", path.display());
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| error(e.to_string()))?;
    let mut text = String::new();
    file.take(MAX_SECRET_BYTES)
        .read_to_string(&mut text)
        .await
        .map_err(|e| error(e.to_string()))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(error("empty".into()));
    }
    Ok(text.to_owned())
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| file_error(key, path, e.to_string()))
}

fn load_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read_file(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "no certificate in the file".into()));
    }
    Ok(certs)
}

fn file_error(key: &'static str, path: &Path, reason: String) -> ConfigError {
    ConfigError::File {
        key,
        path: path.to_owned(),
        reason,
    }
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let c = |s: u16| classify(StatusCode::from_u16(s).unwrap());
        assert_eq!(c(400), FailReason::Status4xx);
        assert_eq!(c(413), FailReason::Status4xx);
        assert_eq!(c(422), FailReason::Status4xx);
        assert_eq!(c(401), FailReason::Status4xxRetried);
        assert_eq!(c(404), FailReason::Status4xxRetried);
        assert_eq!(c(408), FailReason::Status4xxRetried);
        assert_eq!(c(429), FailReason::Status429);
        assert_eq!(c(500), FailReason::Status5xx);
        assert_eq!(c(503), FailReason::Status5xx);
        assert_eq!(c(302), FailReason::StatusOther);
        assert!(!c(400).retried());
        assert!(c(503).retried() && c(429).retried() && c(302).retried());
    }

    #[test]
    fn printable_escapes_and_cuts() {
        assert_eq!(printable("out of order sample", 100), "out of order sample");
        assert_eq!(printable("a\u{1b}[2Jb\n", 100), "a\\u{1b}[2Jb\\n");
        assert_eq!(printable("abcdef", 3), "abc…(+3 bytes)");
    }

    #[test]
    fn shown_url_has_no_secrets() {
        let uri: Uri = "https://user:pass@mimir:8080/api/v1/push?token=x"
            .parse()
            .unwrap();
        assert_eq!(shown_url(&uri), "https://mimir:8080/api/v1/push");
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }
}
