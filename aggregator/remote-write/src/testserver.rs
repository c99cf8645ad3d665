//! A real HTTP/1 server on loopback that answers remote-write requests from a script,
//! recording what it received: for the client and sender tests.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::prompb::{self, WriteRequest};

#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = body.into();
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub request: Option<WriteRequest>,
    /// The status it was answered with.
    pub status: u16,
}

pub struct Server {
    pub addr: SocketAddr,
    script: Mutex<VecDeque<Reply>>,
    /// The answer once the script is used up.
    otherwise: Mutex<Reply>,
    received: Mutex<Vec<Received>>,
}

impl Server {
    /// Serves on `127.0.0.1:0` until the runtime ends.
    pub async fn start(script: Vec<Reply>) -> Arc<Server> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Arc::new(Server {
            addr: listener.local_addr().unwrap(),
            script: Mutex::new(script.into()),
            otherwise: Mutex::new(Reply::status(200)),
            received: Mutex::new(Vec::new()),
        });
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |r| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(s.answer(r).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    pub fn otherwise(&self, reply: Reply) {
        *self.otherwise.lock().unwrap() = reply;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The requests answered with a 2xx, decoded.
    pub fn accepted(&self) -> Vec<WriteRequest> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .filter_map(|r| r.request)
            .collect()
    }

    async fn answer(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let headers = request.headers().clone();
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let reply = {
            let next = self.script.lock().unwrap().pop_front();
            next.unwrap_or_else(|| self.otherwise.lock().unwrap().clone())
        };
        // Recorded on arrival: a delayed answer may never be read by the client.
        self.received.lock().unwrap().push(Received {
            headers,
            request: prompb::decode(&body).ok(),
            body,
            status: reply.status,
        });
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        let mut response = Response::new(Full::new(reply.body.clone()));
        *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
        for (name, value) in &reply.headers {
            response.headers_mut().insert(*name, value.parse().unwrap());
        }
        response
    }
}
