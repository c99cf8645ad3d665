//! Connections: the accept loop, the TLS handshake under a deadline, and the bounds on
//! what one client may hold (see the `grpc` module docs).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use goroscope_proto::Identity;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

use super::Shared;
use crate::config::Limits;
use crate::metrics::GaugeGuard;

/// How long a connection without a client certificate may stay open: enough to hear
/// why it is refused.
const CERTLESS_LIFETIME: Duration = Duration::from_secs(10);
/// Time a refused client gets to read its refusal before its connection is closed.
const CLOSE_DELAY: Duration = Duration::from_millis(200);

/// The open connections by remote address (so a service can close the one a request
/// came on), and how many each peer IP holds.
#[derive(Clone, Default)]
pub struct ConnTable {
    inner: Arc<Mutex<Table>>,
}

#[derive(Default)]
struct Table {
    closers: HashMap<SocketAddr, CancellationToken>,
    per_ip: HashMap<IpAddr, usize>,
}

impl ConnTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for `addr` unless its IP already holds `max`.
    fn admit(&self, addr: SocketAddr, max: usize) -> Option<Slot> {
        let mut t = self.lock();
        let n = t.per_ip.entry(addr.ip()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        let close = CancellationToken::new();
        t.closers.insert(addr, close.clone());
        Some(Slot {
            table: self.clone(),
            addr,
            close,
        })
    }

    /// Closes the connection from `addr` shortly, once its last answer is on its way.
    pub fn close_soon(&self, addr: SocketAddr) {
        if let Some(close) = self.lock().closers.get(&addr).cloned() {
            tokio::spawn(async move {
                tokio::time::sleep(CLOSE_DELAY).await;
                close.cancel();
            });
        }
    }
}

/// One connection's place in the table; gives it back when dropped.
struct Slot {
    table: ConnTable,
    addr: SocketAddr,
    close: CancellationToken,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.table.lock();
        t.closers.remove(&self.addr);
        if let Some(n) = t.per_ip.get_mut(&self.addr.ip()) {
            *n -= 1;
            if *n == 0 {
                t.per_ip.remove(&self.addr.ip());
            }
        }
    }
}

/// At most `burst` lines per `window`; the rest are counted and summed up in the next
/// line let through.
pub struct Paced {
    window: Duration,
    burst: u32,
    state: Mutex<(Instant, u32, u64)>,
}

impl Paced {
    pub fn new(window: Duration, burst: u32) -> Paced {
        Paced {
            window,
            burst,
            state: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// `Some(suppressed since the last line)` if a line may be written now.
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0.elapsed() >= self.window {
            *s = (Instant::now(), 0, s.2);
        }
        if s.1 < self.burst {
            s.1 += 1;
            let suppressed = std::mem::take(&mut s.2);
            Some(suppressed)
        } else {
            s.2 += 1;
            None
        }
    }
}

pub(super) async fn accept_loop(
    listener: TcpListener,
    tls: watch::Receiver<Arc<tokio_rustls::rustls::ServerConfig>>,
    limits: Limits,
    shared: Shared,
    conns: mpsc::Sender<io::Result<Conn>>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let paced = Arc::new(Paced::new(Duration::from_secs(10), 10));
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
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(slot) = shared.conns.admit(peer, limits.max_connections_per_peer) else {
            shared.metrics.handshake_failed("peer_cap");
            if let Some(suppressed) = paced.allow() {
                tracing::warn!(%peer, max = limits.max_connections_per_peer, suppressed, "connection refused: this address holds limits.max_connections_per_peer connections");
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.borrow().clone());
        let conns = conns.clone();
        let shared = shared.clone();
        let paced = paced.clone();
        let handshake_timeout = limits.handshake_timeout;
        let idle_timeout = limits.idle_timeout;
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    shared.metrics.handshake_failed(reason_label(&e));
                    if let Some(suppressed) = paced.allow() {
                        tracing::warn!(%peer, suppressed, error = %describe_handshake_error(&e), "tls handshake failed");
                    }
                    return;
                }
                Err(_) => {
                    shared.metrics.handshake_failed("timeout");
                    if let Some(suppressed) = paced.allow() {
                        tracing::warn!(%peer, suppressed, "tls handshake timed out");
                    }
                    return;
                }
            };
            let role = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|leaf| match Identity::from_cert_der(leaf) {
                    Ok(id) => id.role.as_str(),
                    Err(_) => "unknown",
                })
                .unwrap_or("none");
            // Without a certificate a connection can only be refused: it gets a short life.
            let lifetime =
                (role == "none").then(|| tokio::time::Instant::now() + CERTLESS_LIFETIME);
            let conn = Conn {
                inner: tls,
                closed: Box::pin(slot.close.clone().cancelled_owned()),
                _slot: slot,
                _permit: permit,
                _gauge: shared.metrics.connection_opened(role),
                idle: Box::pin(tokio::time::sleep(idle_timeout)),
                idle_timeout,
                lifetime: lifetime.map(|at| Box::pin(tokio::time::sleep_until(at))),
            };
            let _ = conns.send(Ok(conn)).await;
        });
    }
}

/// A short label for the metric of failed handshakes.
fn reason_label(e: &io::Error) -> &'static str {
    use tokio_rustls::rustls::Error;
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(_)) => "bad_certificate",
        Some(Error::NoCertificatesPresented) => "no_certificate",
        Some(_) => "tls_error",
        None if e.kind() == io::ErrorKind::UnexpectedEof => "closed",
        None => "io_error",
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

/// A verified TLS connection that holds its slots until it closes, and ends (as if the
/// peer had hung up) when it is closed by the table, idles past the idle timeout, or
/// outlives the life a connection without a certificate gets.
pub(super) struct Conn {
    inner: TlsStream<TcpStream>,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    idle: Pin<Box<tokio::time::Sleep>>,
    idle_timeout: Duration,
    lifetime: Option<Pin<Box<tokio::time::Sleep>>>,
    _slot: Slot,
    _permit: OwnedSemaphorePermit,
    _gauge: GaugeGuard,
}

impl Conn {
    /// Whether the connection must end now.
    fn ended(&mut self, cx: &mut Context<'_>) -> bool {
        use std::future::Future;
        self.closed.as_mut().poll(cx).is_ready()
            || self.idle.as_mut().poll(cx).is_ready()
            || self
                .lifetime
                .as_mut()
                .is_some_and(|l| l.as_mut().poll(cx).is_ready())
    }
}

fn ended() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection closed by the aggregator",
    )
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
        if self.ended(cx) {
            return Poll::Ready(Err(ended()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let deadline = tokio::time::Instant::now() + self.idle_timeout;
            self.idle.as_mut().reset(deadline);
        }
        result
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.ended(cx) {
            return Poll::Ready(Err(ended()));
        }
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
        if self.ended(cx) {
            return Poll::Ready(Err(ended()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_lets_a_burst_through_then_counts() {
        let p = Paced::new(Duration::from_secs(3600), 2);
        assert_eq!(p.allow(), Some(0));
        assert_eq!(p.allow(), Some(0));
        assert_eq!(p.allow(), None);
        assert_eq!(p.allow(), None);
    }

    #[tokio::test]
    async fn a_peer_holds_at_most_its_cap_and_gets_slots_back() {
        let t = ConnTable::default();
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:1001".parse().unwrap();
        let c: SocketAddr = "10.0.0.2:1000".parse().unwrap();
        let s1 = t.admit(a, 2).unwrap();
        let _s2 = t.admit(b, 2).unwrap();
        assert!(t.admit("10.0.0.1:1002".parse().unwrap(), 2).is_none());
        let _s3 = t.admit(c, 2).unwrap();
        drop(s1);
        assert!(t.admit("10.0.0.1:1003".parse().unwrap(), 2).is_some());
    }
}
