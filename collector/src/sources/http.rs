//! A small HTTP/1.1 GET for the runtime endpoints of a local process.
//!
//! Bounded on every side: the caller's timeout, a cap on the bytes read, and an early
//! stop once enough is read (the goroutine count is on the first line of a profile that
//! can be megabytes long).

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connect {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("GET http://{addr}{path}: {reason}")]
    Protocol {
        addr: SocketAddr,
        path: String,
        reason: String,
    },
    #[error("GET http://{addr}{path}: status {status}")]
    Status {
        addr: SocketAddr,
        path: String,
        status: u16,
    },
    #[error("GET http://{addr}{path}: response larger than {limit} bytes")]
    TooLarge {
        addr: SocketAddr,
        path: String,
        limit: usize,
    },
}

/// When to stop reading the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The whole body, which must fit in the limit.
    All,
    /// Up to the first newline (or the limit, or the end).
    FirstLine,
}

/// GETs `path` from `addr`. A body longer than `limit` is an error with [`Read::All`].
pub async fn get(
    addr: SocketAddr,
    path: &str,
    limit: usize,
    read: Read,
) -> Result<Bytes, HttpError> {
    let protocol = |reason: String| HttpError::Protocol {
        addr,
        path: path.to_owned(),
        reason,
    };
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| HttpError::Connect { addr, source })?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| protocol(e.to_string()))?;
    // The connection task ends with this function: dropping the guard aborts it.
    let conn = AbortOnDrop(tokio::spawn(conn));
    let request = Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(
            hyper::header::USER_AGENT,
            concat!("goroscope-collector/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| protocol(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| protocol(e.to_string()))?;
    if !response.status().is_success() {
        return Err(HttpError::Status {
            addr,
            path: path.to_owned(),
            status: response.status().as_u16(),
        });
    }
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| protocol(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if read == Read::FirstLine
            && let Some(nl) = data.iter().position(|&b| b == b'\n')
        {
            buf.extend_from_slice(&data[..nl]);
            return Ok(buf.freeze());
        }
        if buf.len() + data.len() > limit {
            if read == Read::FirstLine {
                return Ok(buf.freeze());
            }
            return Err(HttpError::TooLarge {
                addr,
                path: path.to_owned(),
                limit,
            });
        }
        buf.extend_from_slice(&data);
    }
    drop(conn);
    Ok(buf.freeze())
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
