//! The gRPC server: a TLS accept loop of our own in front of tonic.
//!
//! Owning the accept loop bounds what one client can cost: a cap on open connections,
//! a cap per peer address, a handshake timeout, an idle timeout, and a short life for
//! a connection without a client certificate (it may hear why it is refused, once, and
//! is then closed). A failed handshake is logged in one line with the peer's address
//! (paced, so a flood of them cannot flood the log) and counted. The handshake
//! verifies any client certificate against the fleet CA; the services then authorise
//! by the identity in it ([`authorize`]).
//!
//! tonic's own tower stack adds, per RPC: a tracing span, the request timeout, a
//! concurrency limit per connection with load shedding beyond it, HTTP/2
//! `max_concurrent_streams`, and decode-size limits per service.

pub mod capture;
mod conn;
mod ingest;
mod query;

use std::sync::Arc;
use std::time::Duration;

use goroscope_proto::tls::require_role;
use goroscope_proto::v1::{ingest_server::IngestServer, query_server::QueryServer};
use goroscope_proto::{Identity, Role};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::config::AggregatorConfig;
use crate::metrics::Metrics;
use crate::storage::{Storage, StorageError};

pub use conn::ConnTable;
pub use ingest::IngestService;
pub use query::QueryService;

/// Largest query request accepted; queries are small.
const MAX_QUERY_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest query response sent.
const MAX_QUERY_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// Largest header block a client may send.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

impl From<StorageError> for tonic::Status {
    fn from(e: StorageError) -> tonic::Status {
        match e {
            StorageError::TooManySamples { .. } => tonic::Status::resource_exhausted(e.to_string()),
            StorageError::WriterGone | StorageError::DiskFull { .. } => {
                tonic::Status::unavailable(e.to_string())
            }
            StorageError::Cancelled => tonic::Status::cancelled(e.to_string()),
            StorageError::Open { .. } | StorageError::Engine(_) | StorageError::Corrupt { .. } => {
                tonic::Status::internal(e.to_string())
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// What the services share: the storage, the metrics, and the table of open
/// connections (to close one whose client has no certificate).
#[derive(Clone)]
pub struct Shared {
    pub storage: Storage,
    pub metrics: Arc<Metrics>,
    pub conns: ConnTable,
    pub streams: HostStreams,
    pub captures: Arc<capture::CaptureHub>,
    /// The detectors, when detection runs.
    pub detector: Option<crate::detect::engine::Detector>,
}

/// Open ingest streams per host: a collector has one (two for a moment while it
/// reconnects); a certificate cannot open hundreds.
#[derive(Clone, Default)]
pub struct HostStreams(Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>);

/// One open stream of a host; given back when dropped.
pub struct StreamSlot {
    table: HostStreams,
    host: String,
}

impl HostStreams {
    /// Open streams by host.
    pub fn open(&self) -> std::collections::HashMap<String, usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A slot for `host` unless it holds `max` streams already.
    pub fn acquire(&self, host: &str, max: usize) -> Option<StreamSlot> {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = t.entry(host.to_owned()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            table: self.clone(),
            host: host.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = t.get_mut(&self.host) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.host);
            }
        }
    }
}

/// Refuses `request` unless its peer holds `role`. A peer without a certificate hears
/// why, and its connection is closed right after: it cannot hold a slot by retrying.
pub fn authorize<T>(
    shared: &Shared,
    service: &'static str,
    request: &tonic::Request<T>,
    role: Role,
) -> Result<Identity, tonic::Status> {
    require_role(request, role).inspect_err(|status| {
        shared.metrics.refused(service, status.code());
        if status.code() == tonic::Code::Unauthenticated
            && let Some(addr) = request.remote_addr()
        {
            shared.conns.close_soon(addr);
        }
    })
}

/// Serves ingest and query on `listener` until `shutdown` is cancelled, then lets open
/// requests finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    tls: watch::Receiver<Arc<tokio_rustls::rustls::ServerConfig>>,
    config: &AggregatorConfig,
    shared: Shared,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<(), ServeError> {
    let limits = config.limits.clone();
    let (conn_tx, conn_rx) = mpsc::channel(64);
    let accept = tokio::spawn(conn::accept_loop(
        listener,
        tls,
        limits.clone(),
        shared.clone(),
        conn_tx,
        shutdown.clone(),
    ));

    let ingest = IngestServer::new(IngestService::new(
        shared.clone(),
        limits.clone(),
        shutdown.clone(),
    ))
    .max_decoding_message_size(limits.max_message_bytes);
    let query = QueryServer::new(QueryService::new(shared.clone(), limits.query_timeout))
        .max_decoding_message_size(MAX_QUERY_REQUEST_BYTES)
        .max_encoding_message_size(MAX_QUERY_RESPONSE_BYTES);

    let max_streams = u32::try_from(limits.max_concurrent_requests).unwrap_or(u32::MAX);
    let server = tonic::transport::Server::builder()
        .trace_fn(|req| tracing::info_span!("rpc", method = %req.uri().path()))
        .timeout(limits.query_timeout)
        .concurrency_limit_per_connection(limits.max_concurrent_requests)
        .load_shed(true)
        .max_concurrent_streams(max_streams)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_max_pending_accept_reset_streams(Some(max_streams as usize))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(ingest)
        .add_service(query)
        .serve_with_incoming_shutdown(
            ReceiverStream::new(conn_rx),
            Box::pin(shutdown.clone().cancelled_owned()),
        );
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace = %humantime::format_duration(grace), "requests still open after the grace period; closing them");
            Ok(())
        }
    };
    accept.abort();
    result.map_err(ServeError::from)
}
