//! Captures on demand: the aggregator's `Capture` command fetches a runtime/trace
//! snippet, a heap, CPU or goroutine profile or the goroutineleak profile from a
//! target's net/http/pprof endpoint, and uploads it on the ingest stream in
//! `CaptureChunk`s with a SHA-256 of the whole.
//!
//! What a capture costs the target is the aggregator's to allow (it rate-limits per
//! target and fleet-wide, and only operators may ask); the collector bounds its own
//! side: one capture per target at a time, [`MAX_RUNNING`] at once, a size cap, and a
//! deadline of the capture's length plus [`SLACK`]. The body is streamed through, never
//! held whole.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use goroscope_proto::v1::{self, CaptureKind, collector_message};
use tokio::sync::{Semaphore, mpsc};

use crate::model::Scrape;
use crate::sources::http;

/// Captures running at once, at most.
pub const MAX_RUNNING: usize = 2;
/// Bytes of one capture at most.
pub const MAX_BYTES: usize = 64 << 20;
/// Bytes per chunk.
pub const CHUNK_BYTES: usize = 256 << 10;
/// Time a capture may take beyond its own length (the target's answer, the upload).
pub const SLACK: Duration = Duration::from_secs(30);
/// Longest trace or CPU profile recorded.
pub const MAX_SECONDS: u32 = 300;

/// The targets' debug addresses, as of the latest sample, and the captures running.
pub struct Captures {
    /// Bytes per chunk: [`CHUNK_BYTES`], or less when the aggregator takes smaller
    /// messages.
    chunk_bytes: std::sync::atomic::AtomicUsize,
    addrs: Mutex<HashMap<(u32, u64), SocketAddr>>,
    running: Mutex<HashSet<(u32, u64)>>,
    slots: Semaphore,
}

impl Captures {
    pub fn new() -> Arc<Captures> {
        Arc::new(Captures {
            chunk_bytes: std::sync::atomic::AtomicUsize::new(CHUNK_BYTES),
            addrs: Mutex::default(),
            running: Mutex::default(),
            slots: Semaphore::new(MAX_RUNNING),
        })
    }

    /// Fits chunks to the largest message the aggregator takes (its Welcome says).
    pub fn set_max_message(&self, max_batch_bytes: usize) {
        // Room for the chunk's other fields and the message's framing.
        let chunk = max_batch_bytes.saturating_sub(256).clamp(1, CHUNK_BYTES);
        self.chunk_bytes
            .store(chunk, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records where each target of `scrape` serves pprof.
    pub fn update(&self, scrape: &Scrape) {
        let mut addrs = self.addrs.lock().unwrap_or_else(PoisonError::into_inner);
        for s in &scrape.samples {
            let key = (s.meta.pid, s.meta.start_ticks);
            match s.meta.coverage.debug_addr.parse() {
                Ok(addr) if s.meta.coverage.pprof => {
                    addrs.insert(key, addr);
                }
                _ => {
                    addrs.remove(&key);
                }
            }
        }
        for m in &scrape.gone {
            addrs.remove(&(m.pid, m.start_ticks));
        }
    }

    /// Starts the capture `command_id` asks for; its chunks (or its failure) go to `tx`.
    pub fn start(
        self: &Arc<Self>,
        command_id: u64,
        capture: v1::Capture,
        tx: mpsc::Sender<v1::CollectorMessage>,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(why) = this.run(command_id, &capture, &tx).await {
                tracing::warn!(command_id, reason = %why, "capture failed");
                let _ = tx
                    .send(chunk(v1::CaptureChunk {
                        command_id,
                        last: true,
                        error: why,
                        ..Default::default()
                    }))
                    .await;
            }
        });
    }

    async fn run(
        &self,
        command_id: u64,
        capture: &v1::Capture,
        tx: &mpsc::Sender<v1::CollectorMessage>,
    ) -> Result<(), String> {
        let id = capture
            .target
            .clone()
            .ok_or("the command names no target")?;
        let key = (id.pid, id.start_ticks);
        let kind = CaptureKind::try_from(capture.kind).unwrap_or(CaptureKind::Unspecified);
        let seconds = capture.seconds.clamp(1, MAX_SECONDS);
        let path =
            path(kind, seconds).ok_or_else(|| format!("unknown capture kind {}", capture.kind))?;
        let addr = self
            .addrs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied()
            .ok_or_else(|| {
                format!(
                    "pid {} serves no pprof endpoint this collector knows of",
                    id.pid
                )
            })?;
        if !self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key)
        {
            return Err(format!("a capture of pid {} is already running", id.pid));
        }
        let _running = Running(self, key);
        let _slot = self
            .slots
            .try_acquire()
            .map_err(|_| format!("{MAX_RUNNING} captures are already running on this host"))?;
        tracing::info!(command_id, pid = id.pid, %addr, path, "capture started");

        // Chunks go out as they fill; the sink cannot await, so it hands them to a task
        // of their own through an unbounded queue whose size the capture cap bounds.
        let (chunks, mut queue) = mpsc::unbounded_channel::<Vec<u8>>();
        let forward = {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut offset = 0u64;
                while let Some(data) = queue.recv().await {
                    let len = data.len() as u64;
                    let message = chunk(v1::CaptureChunk {
                        command_id,
                        offset,
                        data,
                        ..Default::default()
                    });
                    if tx.send(message).await.is_err() {
                        return Err("the stream to the aggregator closed".to_owned());
                    }
                    offset += len;
                }
                Ok(offset)
            })
        };
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let chunk_bytes = self.chunk_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let mut buf: Vec<u8> = Vec::with_capacity(chunk_bytes);
        let deadline = Duration::from_secs(seconds.into()) + SLACK;
        let read = tokio::time::timeout(
            deadline,
            http::get_streaming(addr, &path, MAX_BYTES, |data| {
                hasher.update(data);
                let mut data = data;
                while !data.is_empty() {
                    let take = (chunk_bytes - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if buf.len() == chunk_bytes {
                        let _ = chunks
                            .send(std::mem::replace(&mut buf, Vec::with_capacity(chunk_bytes)));
                    }
                }
            }),
        )
        .await;
        let failed = match read {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "no complete answer within {}",
                humantime::format_duration(deadline)
            )),
        };
        if !buf.is_empty() {
            let _ = chunks.send(buf);
        }
        drop(chunks);
        let size = forward.await.map_err(|e| format!("upload task: {e}"))??;
        if let Some(why) = failed {
            return Err(why);
        }
        let sha256 = hex(hasher.finish().as_ref());
        tracing::info!(command_id, pid = id.pid, bytes = size, "capture uploaded");
        tx.send(chunk(v1::CaptureChunk {
            command_id,
            offset: size,
            last: true,
            sha256,
            ..Default::default()
        }))
        .await
        .map_err(|_| "the stream to the aggregator closed".to_owned())
    }
}

/// Ends a target's running capture when dropped.
struct Running<'a>(&'a Captures, (u32, u64));

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.1);
    }
}

fn chunk(c: v1::CaptureChunk) -> v1::CollectorMessage {
    v1::CollectorMessage {
        msg: Some(collector_message::Msg::CaptureChunk(c)),
    }
}

/// The pprof path of a capture kind.
pub fn path(kind: CaptureKind, seconds: u32) -> Option<String> {
    Some(match kind {
        CaptureKind::Trace => format!("/debug/pprof/trace?seconds={seconds}"),
        CaptureKind::Heap => "/debug/pprof/heap".to_owned(),
        CaptureKind::Cpu => format!("/debug/pprof/profile?seconds={seconds}"),
        CaptureKind::Goroutine => "/debug/pprof/goroutine".to_owned(),
        CaptureKind::Goroutineleak => "/debug/pprof/goroutineleak".to_owned(),
        CaptureKind::Unspecified => return None,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_pprof_path() {
        assert_eq!(
            path(CaptureKind::Trace, 5).unwrap(),
            "/debug/pprof/trace?seconds=5"
        );
        assert_eq!(
            path(CaptureKind::Cpu, 10).unwrap(),
            "/debug/pprof/profile?seconds=10"
        );
        assert_eq!(path(CaptureKind::Heap, 0).unwrap(), "/debug/pprof/heap");
        assert_eq!(
            path(CaptureKind::Goroutineleak, 0).unwrap(),
            "/debug/pprof/goroutineleak"
        );
        assert!(path(CaptureKind::Unspecified, 1).is_none());
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
    }
}
