//! A small HTTP/1.1 GET for the runtime endpoints of a local process.
//!
//! Bounded on every side: the caller's timeout, a cap on the bytes read, and an early
//! stop once enough is read (the goroutine count is in the table at the top of the
//! pprof index page; the descriptions after it are not needed).

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

static USER_AGENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names this collector's host in the `User-Agent` of its requests (from then on), so
/// that a service's owners can tell which collector reads it.
pub fn set_host(host: &str) {
    let _ = USER_AGENT.set(format!(
        "goroscope-collector/{} (host {host})",
        env!("CARGO_PKG_VERSION")
    ));
}

fn user_agent() -> &'static str {
    USER_AGENT.get().map_or(
        concat!("goroscope-collector/", env!("CARGO_PKG_VERSION")),
        String::as_str,
    )
}

/// When to stop reading the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The whole body, which must fit in the limit.
    All,
    /// Up to the end of the first occurrence of the marker, or as much as the limit
    /// allows, or the end: a prefix of the body, never an error for its length.
    Until(&'static [u8]),
}

/// Sends a GET of `path` to `addr`; the response's body, and the connection task,
/// which ends when the guard is dropped.
async fn send(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> Result<(hyper::body::Incoming, AbortOnDrop<()>), HttpError> {
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
    // The connection task ends with the caller's read: dropping the guard aborts it.
    let conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let mut request = Request::get(path);
    if let Some(accept) = accept {
        request = request.header(hyper::header::ACCEPT, accept);
    }
    let request = request
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::USER_AGENT, user_agent())
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
    Ok((response.into_body(), conn))
}

/// GETs `path` from `addr`. A body longer than `limit` is an error with [`Read::All`].
pub async fn get(
    addr: SocketAddr,
    path: &str,
    limit: usize,
    read: Read,
) -> Result<Bytes, HttpError> {
    get_accepting(addr, path, None, limit, read).await
}

/// [`get`] with an `Accept` header.
pub async fn get_accepting(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
    limit: usize,
    read: Read,
) -> Result<Bytes, HttpError> {
    let protocol = |reason: String| HttpError::Protocol {
        addr,
        path: path.to_owned(),
        reason,
    };
    let (mut body, conn) = send(addr, path, accept).await?;
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| protocol(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            let Read::Until(_) = read else {
                return Err(HttpError::TooLarge {
                    addr,
                    path: path.to_owned(),
                    limit,
                });
            };
            buf.extend_from_slice(&data[..limit - buf.len()]);
            return Ok(buf.freeze());
        }
        let searched_from = buf.len();
        buf.extend_from_slice(&data);
        if let Read::Until(marker) = read
            && let Some(end) = find_end(&buf, searched_from, marker)
        {
            buf.truncate(end);
            return Ok(buf.freeze());
        }
    }
    drop(conn);
    Ok(buf.freeze())
}

/// GETs `path` from `addr` and hands the body to `sink` as it arrives, never holding
/// it whole; the bytes read. A body longer than `limit` is an error once `limit` bytes
/// went to the sink.
pub async fn get_streaming(
    addr: SocketAddr,
    path: &str,
    limit: usize,
    mut sink: impl FnMut(&[u8]),
) -> Result<usize, HttpError> {
    let (mut body, conn) = send(addr, path, None).await?;
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| HttpError::Protocol {
            addr,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if read + data.len() > limit {
            sink(&data[..limit - read]);
            return Err(HttpError::TooLarge {
                addr,
                path: path.to_owned(),
                limit,
            });
        }
        read += data.len();
        sink(&data);
    }
    drop(conn);
    Ok(read)
}

/// The end of the first `marker` in `buf` that reaches past `from`, where the bytes
/// not yet searched begin (a marker may straddle two frames).
fn find_end(buf: &[u8], from: usize, marker: &[u8]) -> Option<usize> {
    if marker.is_empty() {
        return Some(0);
    }
    let start = from.saturating_sub(marker.len() - 1);
    buf[start..]
        .windows(marker.len())
        .position(|w| w == marker)
        .map(|i| start + i + marker.len())
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_marker_across_frames() {
        assert_eq!(find_end(b"abc</table>def", 0, b"</table>"), Some(11));
        // The marker began in the previous frame (which ended at 5).
        assert_eq!(find_end(b"abc</table>def", 5, b"</table>"), Some(11));
        // Only text already searched: not found again from past it.
        assert_eq!(find_end(b"</table>abcdefghijkl", 16, b"</table>"), None);
        assert_eq!(find_end(b"ab", 0, b"</table>"), None);
    }

    /// One HTTP/1.1 answer per connection, `body` in chunks of `chunk` bytes.
    async fn serve_once(body: Vec<u8>, chunk: usize) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 1024];
            let _ = conn.read(&mut req).await;
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await;
            for part in body.chunks(chunk) {
                let _ = conn
                    .write_all(format!("{:x}\r\n", part.len()).as_bytes())
                    .await;
                let _ = conn.write_all(part).await;
                let _ = conn.write_all(b"\r\n").await;
                let _ = conn.flush().await;
            }
            let _ = conn.write_all(b"0\r\n\r\n").await;
        });
        addr
    }

    #[tokio::test]
    async fn until_stops_at_the_marker_or_the_limit() {
        let page = b"<table><tr>1</tr></table><ul>descriptions</ul>".to_vec();
        let addr = serve_once(page.clone(), 5).await;
        let got = get(addr, "/", 1024, Read::Until(b"</table>"))
            .await
            .unwrap();
        assert_eq!(&got[..], b"<table><tr>1</tr></table>");

        let addr = serve_once(page.clone(), 5).await;
        let got = get(addr, "/", 12, Read::Until(b"</table>")).await.unwrap();
        assert_eq!(&got[..], &page[..12]);

        let addr = serve_once(page, 5).await;
        let err = get(addr, "/", 12, Read::All).await.unwrap_err();
        assert!(
            matches!(err, HttpError::TooLarge { limit: 12, .. }),
            "{err}"
        );
    }
}
