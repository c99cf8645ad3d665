//! A daemon's own plain-HTTP endpoint (the `metrics_listen` setting): `/metrics` in the
//! Prometheus text format and `/healthz`, for Prometheus and for a kubelet probe.
//!
//! Bounded like every other input: at most [`MAX_CONNECTIONS`] connections, each
//! closed after [`CONNECTION_TIMEOUT`], requests with bodies refused. It serves only
//! what the daemon says about itself; nothing secret goes there.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Open connections, at most.
pub const MAX_CONNECTIONS: usize = 64;
/// Life of one connection, at most.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint shows: the daemon's metrics and whether it is healthy.
pub trait Exposition: Send + Sync + 'static {
    /// The metrics, in the Prometheus (OpenMetrics) text format.
    fn metrics(&self) -> String;
    /// `Err(why)` when the daemon is not healthy.
    fn health(&self) -> Result<(), String>;
}

/// Binds `addr`; an error names it.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("listen on {addr} (metrics_listen): {e}"))
    })
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    exposition: Arc<dyn Exposition>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (tcp, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let exposition = exposition.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let exposition = exposition.clone();
                async move { Ok::<_, Infallible>(respond(&*exposition, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(permit);
        });
    }
}

fn respond<B>(exposition: &dyn Exposition, req: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            exposition.metrics(),
        ),
        "/healthz" => match exposition.health() {
            Ok(()) => reply(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                format!("unhealthy: {why}\n"),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}
