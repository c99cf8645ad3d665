//! The Prometheus HTTP API, read side, over HTTPS (the `http_listen` setting): Grafana
//! and other Prometheus clients use the aggregator as a Prometheus data source.
//!
//! - `/api/v1/query`, `/api/v1/query_range`: PromQL ([`crate::expr`]);
//! - `/api/v1/series`, `/api/v1/labels`, `/api/v1/label/NAME/values`: the postings;
//! - `/api/v1/status/buildinfo`, `/api/v1/metadata`, `/-/healthy`, `/-/ready`: what
//!   data-source clients probe.
//!
//! Clients present a certificate of the fleet CA with an operator identity, as on the
//! gRPC port (Grafana's data source takes a client certificate). Every input is bounded:
//! connections, the TLS handshake's time, a request's headers' time, a body's bytes, a
//! query's time (the `timeout` parameter, at most `limits.query_timeout`) and its work
//! (the query limits).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use goroscope_promql::{Error as QueryError, api};
use goroscope_proto::identity::{Identity, Role};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use crate::expr::{self, When};
use crate::storage::{Cancel, Storage};

/// Open connections, at most.
const MAX_CONNECTIONS: usize = 64;
/// Time a client gets to finish the TLS handshake, and to send a request's headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a connection stays open, however busy.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(600);
/// A request body (a POSTed form), at most.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Label sets one `/api/v1/series` answer lists, at most.
const MAX_SERIES: usize = 100_000;

struct Ctx {
    storage: Storage,
    query_timeout: Duration,
}

/// Serves the API on `listener` until `shutdown`; TLS settings follow `tls`.
pub async fn serve(
    listener: TcpListener,
    tls: watch::Receiver<Arc<ServerConfig>>,
    storage: Storage,
    query_timeout: Duration,
    shutdown: CancellationToken,
) {
    let ctx = Arc::new(Ctx {
        storage,
        query_timeout,
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "http api: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let config = http1_config(&tls.borrow());
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {}
                _ = connection(tcp, peer, config, ctx) => {}
            }
        });
    }
}

/// The aggregator's TLS settings, speaking HTTP/1.1.
fn http1_config(config: &Arc<ServerConfig>) -> Arc<ServerConfig> {
    let mut c = (**config).clone();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    ctx: Arc<Ctx>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(tcp))
        .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "http api: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "http api: TLS handshake timed out");
            return;
        }
    };
    let who: Result<Identity, (StatusCode, String)> = match tls.get_ref().1.peer_certificates() {
        Some([leaf, ..]) => match Identity::from_cert_der(leaf) {
            Ok(id) if id.role == Role::Operator => Ok(id),
            Ok(id) => Err((
                StatusCode::FORBIDDEN,
                format!(
                    "identity {id} has role {}; this API is for operator identities only",
                    id.role
                ),
            )),
            Err(e) => Err((
                StatusCode::UNAUTHORIZED,
                format!("client certificate refused: {e}"),
            )),
        },
        _ => Err((
            StatusCode::UNAUTHORIZED,
            "no client certificate: connect with an operator certificate issued by the fleet CA"
                .into(),
        )),
    };
    let who = Arc::new(who);
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        let who = who.clone();
        async move { Ok::<_, Infallible>(handle(req, &ctx, &who).await) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(tls), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "http api: connection ended");
    }
}

fn respond(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn error(status: StatusCode, error_type: &str, message: &str) -> Response<Full<Bytes>> {
    respond(status, api::error_json_with(error_type, message))
}

fn query_error(e: &QueryError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(api::http_status(e.error_type()))
        .unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
    respond(status, api::error_json(e))
}

fn success(data: serde_json::Value) -> Response<Full<Bytes>> {
    respond(
        StatusCode::OK,
        json!({"status": "success", "data": data}).to_string(),
    )
}

async fn handle(
    req: Request<Incoming>,
    ctx: &Ctx,
    who: &Result<Identity, (StatusCode, String)>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    if matches!(path.as_str(), "/-/healthy" | "/-/ready") {
        return respond(StatusCode::OK, "{}".into());
    }
    if let Err((status, message)) = who {
        return error(*status, "unauthorized", message);
    }
    if !matches!(*req.method(), Method::GET | Method::POST) {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_data",
            "only GET and POST are served",
        );
    }
    let params = match params(req).await {
        Ok(p) => p,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_data", &message),
    };
    let now = goroscope_proto::unix_ms();
    match path.as_str() {
        "/api/v1/query" => match api::parse_instant_request(&params, now) {
            Ok(r) => {
                let when = When::Instant(r.time_ms);
                run_query(ctx, r.query, when, r.timeout_ms, r.lookback_ms).await
            }
            Err(e) => query_error(&e),
        },
        "/api/v1/query_range" => match api::parse_range_request(&params) {
            Ok(r) => {
                let when = When::Range {
                    start_ms: r.start_ms,
                    end_ms: r.end_ms,
                    step_ms: r.step_ms,
                };
                run_query(ctx, r.query, when, r.timeout_ms, r.lookback_ms).await
            }
            Err(e) => query_error(&e),
        },
        "/api/v1/series" => series(ctx, &params, true).await,
        "/api/v1/labels" => series(ctx, &params, false).await,
        "/api/v1/status/buildinfo" => success(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "revision": "",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
        })),
        "/api/v1/metadata" => success(json!({})),
        p => match p
            .strip_prefix("/api/v1/label/")
            .and_then(|r| r.strip_suffix("/values"))
        {
            Some(name) => {
                let name = percent_decode(name);
                let values = label_values(ctx, &params, name).await;
                match values {
                    Ok(v) => success(json!(v)),
                    Err(r) => r,
                }
            }
            None => error(
                StatusCode::NOT_FOUND,
                "bad_data",
                &format!("no such endpoint: {p}"),
            ),
        },
    }
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The URL's parameters and, for a POSTed form, the body's.
async fn params(req: Request<Incoming>) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    if req.method() == Method::POST {
        let form = req
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let body = Limited::new(req.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| format!("request body: {e} (at most {MAX_BODY_BYTES} bytes)"))?
            .to_bytes();
        if form {
            out.extend(form_urlencoded::parse(&body).into_owned());
        } else if !body.is_empty() {
            return Err("a POST body must be application/x-www-form-urlencoded".into());
        }
    }
    Ok(out)
}

/// Runs blocking work with a cancel flag, bounded by `timeout`; the flag is set when the
/// time is up or the client went away (this future dropped).
async fn blocking<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce(&Cancel) -> T + Send + 'static,
) -> Option<T> {
    struct CancelOnDrop(Cancel);
    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            self.0.cancel();
        }
    }
    let cancel = Cancel::new();
    let guard = CancelOnDrop(cancel.clone());
    let task = tokio::task::spawn_blocking(move || f(&cancel));
    let out = tokio::time::timeout(timeout, task).await.ok()?.ok();
    drop(guard);
    out
}

async fn run_query(
    ctx: &Ctx,
    query: String,
    when: When,
    timeout_ms: Option<i64>,
    lookback_ms: Option<i64>,
) -> Response<Full<Bytes>> {
    let timeout = match timeout_ms {
        Some(ms) if ms > 0 => ctx.query_timeout.min(Duration::from_millis(ms as u64)),
        _ => ctx.query_timeout,
    };
    let storage = ctx.storage.clone();
    let result = blocking(timeout, move |cancel| {
        let mut limits = expr::limits(&storage);
        if let Some(l) = lookback_ms {
            limits.lookback_ms = l;
        }
        expr::evaluate(&storage, cancel, &query, when, limits)
    })
    .await;
    match result {
        Some(Ok(value)) => respond(StatusCode::OK, api::success_json(&value)),
        Some(Err(e)) => query_error(&e),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            &format!(
                "query timed out after {} (limits.query_timeout, or the timeout parameter)",
                humantime::format_duration(timeout)
            ),
        ),
    }
}

/// `match[]` selectors and the `start`/`end` range (default: everything). Listings
/// name the series with a sample at or after `start`; `end` is checked, not used.
fn selectors_and_range(
    params: &[(String, String)],
) -> Result<(Vec<Vec<goroscope_promql::Matcher>>, i64, i64), QueryError> {
    let mut selectors = Vec::new();
    for (k, v) in params {
        if k == "match[]" {
            selectors.push(goroscope_promql::parse_selector(v)?);
        }
    }
    let time = |name: &str, default: i64| -> Result<i64, QueryError> {
        match params.iter().rev().find(|(k, _)| k == name) {
            Some((_, v)) if !v.is_empty() => api::parse_time(name, v),
            _ => Ok(default),
        }
    };
    Ok((selectors, time("start", i64::MIN)?, time("end", i64::MAX)?))
}

/// `/api/v1/series` (label sets) or `/api/v1/labels` (their names).
async fn series(ctx: &Ctx, params: &[(String, String)], sets: bool) -> Response<Full<Bytes>> {
    let (selectors, start, _end) = match selectors_and_range(params) {
        Ok(s) => s,
        Err(e) => return query_error(&e),
    };
    if sets && selectors.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "no match[] parameter provided",
        );
    }
    let storage = ctx.storage.clone();
    let result = blocking(ctx.query_timeout, move |_| {
        if !sets && selectors.is_empty() {
            return json!(storage.label_names());
        }
        let mut all: Vec<Vec<(String, String)>> = Vec::new();
        for s in &selectors {
            all.extend(storage.series_labels(s, start, MAX_SERIES));
        }
        all.sort();
        all.dedup();
        all.truncate(MAX_SERIES);
        if sets {
            json!(
                all.into_iter()
                    .map(|l| {
                        l.into_iter()
                            .map(|(n, v)| (n, json!(v)))
                            .collect::<serde_json::Map<_, _>>()
                    })
                    .collect::<Vec<_>>()
            )
        } else {
            let mut names: Vec<String> = all.into_iter().flatten().map(|(n, _)| n).collect();
            names.sort();
            names.dedup();
            json!(names)
        }
    })
    .await;
    match result {
        Some(data) => success(data),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "listing timed out",
        ),
    }
}

async fn label_values(
    ctx: &Ctx,
    params: &[(String, String)],
    name: String,
) -> Result<Vec<String>, Response<Full<Bytes>>> {
    let (selectors, start, _end) = selectors_and_range(params).map_err(|e| query_error(&e))?;
    let storage = ctx.storage.clone();
    blocking(ctx.query_timeout, move |_| {
        if selectors.is_empty() {
            return storage.label_values(&name);
        }
        let mut values: Vec<String> = selectors
            .iter()
            .flat_map(|s| storage.series_labels(s, start, MAX_SERIES))
            .filter_map(|l| l.into_iter().find(|(n, _)| *n == name).map(|(_, v)| v))
            .collect();
        values.sort();
        values.dedup();
        values
    })
    .await
    .ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "listing timed out",
        )
    })
}

/// Binds the API's address, naming the setting when it cannot.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("listen on {addr} (http_listen): {e}")))
}
