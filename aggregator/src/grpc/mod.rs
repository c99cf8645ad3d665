//! The gRPC server: a TLS accept loop of our own in front of tonic.
//!
//! Owning the accept loop bounds what one client can cost (a connection cap, a handshake
//! timeout) and lets a failed handshake be logged in one line with the peer's address.
//! The handshake verifies any client certificate against the fleet CA; the services
//! then authorise by the identity in it (`goroscope_proto::tls::require_role`).

mod ingest;
mod query;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use goroscope_proto::v1::{ingest_server::IngestServer, query_server::QueryServer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

use crate::config::AggregatorConfig;
use crate::storage::{Storage, StorageError};

pub use ingest::IngestService;
pub use query::QueryService;

/// Largest query request accepted; queries are small.
const MAX_QUERY_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest query response sent.
const MAX_QUERY_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

impl From<StorageError> for tonic::Status {
    fn from(e: StorageError) -> tonic::Status {
        match e {
            StorageError::TooManySamples { .. } => tonic::Status::resource_exhausted(e.to_string()),
            StorageError::WriterGone => tonic::Status::unavailable(e.to_string()),
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

/// Serves ingest and query on `listener` until `shutdown` is cancelled, then lets open
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    config: &AggregatorConfig,
    storage: Storage,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let limits = config.limits.clone();
    let (conn_tx, conn_rx) = mpsc::channel::<io::Result<Conn>>(64);
    let accept = tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(tls),
        Arc::new(Semaphore::new(limits.max_connections)),
        limits.handshake_timeout,
        conn_tx,
        shutdown.clone(),
    ));

    let ingest = IngestServer::new(IngestService::new(
        storage.clone(),
        limits.clone(),
        shutdown.clone(),
    ))
    .max_decoding_message_size(limits.max_message_bytes);
    let query = QueryServer::new(QueryService::new(storage, limits.query_timeout))
        .max_decoding_message_size(MAX_QUERY_REQUEST_BYTES)
        .max_encoding_message_size(MAX_QUERY_RESPONSE_BYTES);

    let result = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(limits.max_concurrent_requests)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_service(ingest)
        .add_service(query)
        .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), shutdown.cancelled())
        .await;
    accept.abort();
    result.map_err(ServeError::from)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    slots: Arc<Semaphore>,
    handshake_timeout: std::time::Duration,
    conns: mpsc::Sender<io::Result<Conn>>,
    shutdown: CancellationToken,
) {
    loop {
        // Take a slot before accepting: beyond the cap, clients wait in the backlog.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let conns = conns.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = conns
                        .send(Ok(Conn {
                            inner: tls,
                            _permit: permit,
                        }))
                        .await;
                }
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %describe_handshake_error(&e), "tls handshake failed");
                }
                Err(_) => {
                    tracing::warn!(%peer, "tls handshake timed out");
                }
            }
        });
    }
}

/// A handshake failure in words an operator can act on; the rustls reason stays in
/// parentheses for searching.
fn describe_handshake_error(e: &io::Error) -> String {
    use tokio_rustls::rustls::{CertificateError, Error};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) else {
        return e.to_string();
    };
    match tls {
        Error::InvalidCertificate(
            reason @ (CertificateError::UnknownIssuer | CertificateError::BadSignature),
        ) => format!("client certificate is not signed by the fleet CA ({reason:?})"),
        Error::InvalidCertificate(reason @ CertificateError::Expired)
        | Error::InvalidCertificate(reason @ CertificateError::ExpiredContext { .. }) => {
            format!("client certificate has expired ({reason:?})")
        }
        other => other.to_string(),
    }
}

/// A verified TLS connection that holds its connection slot until it closes.
struct Conn {
    inner: TlsStream<TcpStream>,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Conn {
    type ConnectInfo = TlsConnectInfo<TcpConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
