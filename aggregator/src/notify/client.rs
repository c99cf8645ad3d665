//! The HTTP client both sinks post through: hyper's pooled client over rustls (ring)
//! trusting the system's roots and `notify.ca_file`. Every request, body included, is
//! bounded by `notify.timeout`; at most 64 KiB of an answer is read.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio_rustls::rustls;

use crate::config::NotifyConfig;

/// Bytes of an answer read at most: receivers answer with a few bytes, and an error
/// page only needs its beginning in the log.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Bytes of the bearer token file read at most.
const MAX_TOKEN_BYTES: u64 = 16 * 1024;
/// Characters of an error answer repeated in the log.
const LOGGED_BODY_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PostError {
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("{url}: no answer within {timeout}")]
    Timeout { url: String, timeout: String },
    #[error("bearer token file {}: {reason}", path.display())]
    Token { path: PathBuf, reason: String },
}

impl PostError {
    /// Whether trying again later may succeed: not when the receiver refused the
    /// request itself (4xx other than 408 and 429).
    pub(crate) fn retryable(&self) -> bool {
        match self {
            PostError::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            PostError::Transport { .. } | PostError::Timeout { .. } | PostError::Token { .. } => {
                true
            }
        }
    }
}

#[derive(Clone)]
pub(crate) struct Client {
    pool: Pool<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    headers: Arc<HeaderMap>,
    bearer_token_file: Option<Arc<PathBuf>>,
}

impl Client {
    /// Reads the CA files; call from startup (it reads files synchronously).
    pub(crate) fn new(config: &NotifyConfig) -> anyhow::Result<Client> {
        let mut roots = rustls::RootCertStore::empty();
        let https = [&config.webhook_url, &config.alertmanager_url]
            .into_iter()
            .flatten()
            .any(|u| u.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("https:")));
        if https {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(error = %e, "reading the system's CA certificates failed");
            }
            roots.add_parsable_certificates(native.certs);
        }
        if let Some(path) = &config.ca_file {
            for cert in goroscope_proto::tls::load_certs(path).context("notify.ca_file")? {
                roots
                    .add(cert)
                    .with_context(|| format!("notify.ca_file {}", path.display()))?;
            }
        }
        if https && roots.is_empty() {
            tracing::warn!("no CA certificates for https notifications: set notify.ca_file");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let pool = Pool::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(2)
            .build(connector);
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .with_context(|| format!("notify.headers.{name}"))?;
            let mut value = HeaderValue::from_str(value)
                .with_context(|| format!("notify.headers.{name}: not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        if let Some(path) = &config.bearer_token_file {
            // Fails the start on a missing file; renewals are read per request.
            std::fs::metadata(path)
                .with_context(|| format!("notify.bearer_token_file {}", path.display()))?;
        }
        Ok(Client {
            pool,
            timeout: config.timeout,
            headers: Arc::new(headers),
            bearer_token_file: config.bearer_token_file.clone().map(Arc::new),
        })
    }

    /// POSTs `body` as JSON; succeeds on a 2xx answer.
    pub(crate) async fn post_json(&self, url: &Uri, body: Bytes) -> Result<(), PostError> {
        let mut request = Request::post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| PostError::Transport {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let headers = request.headers_mut();
        for (name, value) in self.headers.iter() {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(path) = &self.bearer_token_file {
            headers.insert(AUTHORIZATION, bearer(path).await?);
        }
        let exchange = async {
            let response = self
                .pool
                .request(request)
                .await
                .map_err(|e| PostError::Transport {
                    url: url.to_string(),
                    reason: goroscope_daemon::one_line(&e),
                })?;
            let status = response.status();
            // Read (bounded) even on success, so the connection can be reused.
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if status.is_success() {
                return Ok(());
            }
            let text = String::from_utf8_lossy(&body);
            Err(PostError::Status {
                url: url.to_string(),
                status,
                body: goroscope_daemon::escape::Escaped::max(text.trim(), LOGGED_BODY_CHARS)
                    .to_string(),
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| PostError::Timeout {
                url: url.to_string(),
                timeout: humantime::format_duration(self.timeout).to_string(),
            })?
    }
}

/// The `Authorization` header from the token file, read now so that a renewed token is
/// used. The token itself never reaches an error or a log.
async fn bearer(path: &PathBuf) -> Result<HeaderValue, PostError> {
    let error = |reason: String| PostError::Token {
        path: path.to_path_buf(),
        reason,
    };
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| error(e.to_string()))?;
    let mut token = String::new();
    file.take(MAX_TOKEN_BYTES)
        .read_to_string(&mut token)
        .await
        .map_err(|e| error(e.to_string()))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(error("empty".into()));
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| error("not a valid header value".into()))?;
    value.set_sensitive(true);
    Ok(value)
}
