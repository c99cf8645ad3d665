//! Captures on demand: an operator's `Capture` request becomes a `Command` on the
//! ingest stream of the target's collector, whose `CaptureChunk`s come back on that
//! stream and are stored once complete and verified.
//!
//! The [`CaptureHub`] knows each host's live stream (the newest, if a collector has
//! two for a moment while it reconnects) and the captures waiting for chunks. Before a
//! command goes out, the hub refuses with a reason what would hurt the service or the
//! aggregator: a target being captured, or whose last capture ended less than
//! `captures.min_interval_per_target` ago, more
//! than `captures.max_per_minute` captures across the fleet in the last minute, more
//! than `captures.max_running` at once, a trace or CPU profile longer than
//! `captures.max_seconds`. Chunks are accepted only from the host the command went to,
//! in order, up to `captures.max_bytes`; the SHA-256 the collector sends must match.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use goroscope_proto::v1::{self, CaptureKind};
use tokio::sync::mpsc;
use tonic::Status;

use crate::config::CaptureConfig;
use crate::storage::{TargetKey, captures};

/// Chunks waiting for a capture's reader, at most.
const CHUNK_QUEUE: usize = 16;
/// Time a capture may take beyond its own length.
const SLACK: Duration = Duration::from_secs(60);

/// What the ingest stream hands a waiting capture.
pub enum ChunkEvent {
    Chunk(v1::CaptureChunk),
    /// The collector's stream ended before the capture did.
    StreamEnded,
}

struct Waiting {
    host: String,
    /// The session the command went out on: only its end fails the capture.
    session: u64,
    target: TargetKey,
    tx: mpsc::Sender<ChunkEvent>,
}

#[derive(Default)]
struct Inner {
    /// Host -> (session number, the session's command queue).
    sessions: HashMap<String, (u64, mpsc::Sender<v1::Command>)>,
    waiting: HashMap<u64, Waiting>,
    /// When recent captures started, across the fleet.
    recent: VecDeque<Instant>,
    /// When each target's latest capture ended.
    last_per_target: HashMap<TargetKey, Instant>,
    next_session: u64,
    next_command: u64,
}

pub struct CaptureHub {
    inner: Mutex<Inner>,
    pub config: CaptureConfig,
}

/// A session's registration; dropping it unregisters the session (unless a newer one
/// of the same host replaced it) and fails the captures waiting on it.
pub struct SessionHandle {
    hub: Arc<CaptureHub>,
    host: String,
    number: u64,
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        if inner
            .sessions
            .get(&self.host)
            .is_some_and(|(n, _)| *n == self.number)
        {
            inner.sessions.remove(&self.host);
        }
        for w in inner.waiting.values() {
            if w.host == self.host && w.session == self.number {
                let _ = w.tx.try_send(ChunkEvent::StreamEnded);
            }
        }
    }
}

/// A capture waiting for its chunks; dropping it forgets it.
pub struct Ticket {
    hub: Arc<CaptureHub>,
    pub command_id: u64,
    pub rx: mpsc::Receiver<ChunkEvent>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        if let Some(w) = inner.waiting.remove(&self.command_id) {
            inner.last_per_target.insert(w.target, Instant::now());
        }
    }
}

impl CaptureHub {
    pub fn new(config: CaptureConfig) -> Arc<CaptureHub> {
        Arc::new(CaptureHub {
            inner: Mutex::default(),
            config,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `host`'s new ingest stream; commands for the host arrive on the
    /// receiver.
    pub fn register(self: &Arc<Self>, host: &str) -> (SessionHandle, mpsc::Receiver<v1::Command>) {
        let (tx, rx) = mpsc::channel(8);
        let mut inner = self.lock();
        inner.next_session += 1;
        let number = inner.next_session;
        inner.sessions.insert(host.to_owned(), (number, tx));
        (
            SessionHandle {
                hub: self.clone(),
                host: host.to_owned(),
                number,
            },
            rx,
        )
    }

    /// Hands a chunk from `host`'s stream to the capture waiting for it. A chunk for a
    /// capture that is not waiting, or that another host was asked for, is dropped.
    ///
    /// Never waits: the ingest stream carrying it also carries the host's batches. A
    /// capture whose reader has fallen [`CHUNK_QUEUE`] chunks behind is abandoned (its
    /// reader hears so), and its later chunks dropped.
    pub fn chunk(&self, host: &str, chunk: v1::CaptureChunk) {
        let mut inner = self.lock();
        let command_id = chunk.command_id;
        let Some(w) = inner.waiting.get(&command_id).filter(|w| w.host == host) else {
            tracing::debug!(host, command_id, "dropping a chunk of no waiting capture");
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = w.tx.try_send(ChunkEvent::Chunk(chunk)) {
            tracing::warn!(
                host,
                command_id,
                "capture abandoned: its reader fell behind"
            );
            // Dropping the sender ends the reader's wait.
            inner.waiting.remove(&command_id);
        }
    }

    /// Checks the limits for a capture of `target` and, within them, sends the command
    /// to its collector.
    pub async fn ask(
        self: &Arc<Self>,
        target: &TargetKey,
        kind: CaptureKind,
        seconds: u32,
    ) -> Result<Ticket, Status> {
        let now = Instant::now();
        let c = &self.config;
        let (command, queue, rx) = {
            let mut inner = self.lock();
            while inner
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
            {
                inner.recent.pop_front();
            }
            if inner.waiting.values().any(|w| w.target == *target) {
                return Err(Status::resource_exhausted(format!(
                    "a capture of pid {} on {} is running; captures.min_interval_per_target \
                     ({}) applies from its end",
                    target.pid,
                    target.host,
                    humantime::format_duration(c.min_interval_per_target),
                )));
            }
            if let Some(last) = inner.last_per_target.get(target) {
                let since = now.duration_since(*last);
                if since < c.min_interval_per_target {
                    return Err(Status::resource_exhausted(format!(
                        "a capture of pid {} on {} ended {} ago; captures.min_interval_per_target \
                         is {} (try again in {})",
                        target.pid,
                        target.host,
                        humantime::format_duration(secs(since)),
                        humantime::format_duration(c.min_interval_per_target),
                        humantime::format_duration(secs(c.min_interval_per_target - since)),
                    )));
                }
            }
            if inner.recent.len() >= c.max_per_minute as usize {
                return Err(Status::resource_exhausted(format!(
                    "{} captures started across the fleet in the last minute, the most \
                     captures.max_per_minute allows; try again shortly",
                    inner.recent.len()
                )));
            }
            if inner.waiting.len() >= c.max_running {
                return Err(Status::resource_exhausted(format!(
                    "{} captures are running, the most captures.max_running allows",
                    inner.waiting.len()
                )));
            }
            let Some((session, queue)) = inner.sessions.get(&target.host).cloned() else {
                return Err(Status::unavailable(format!(
                    "no collector of host {} is connected",
                    target.host
                )));
            };
            inner.next_command += 1;
            let command_id = inner.next_command;
            let (tx, rx) = mpsc::channel(CHUNK_QUEUE);
            inner.waiting.insert(
                command_id,
                Waiting {
                    host: target.host.clone(),
                    session,
                    target: target.clone(),
                    tx,
                },
            );
            inner.recent.push_back(now);
            // Targets captured long ago need no entry.
            let keep = c.min_interval_per_target;
            inner
                .last_per_target
                .retain(|_, t| now.duration_since(*t) < keep);
            let command = v1::Command {
                id: command_id,
                kind: Some(v1::command::Kind::Capture(v1::Capture {
                    target: Some(v1::TargetId {
                        host: target.host.clone(),
                        pid: target.pid,
                        start_ticks: target.start_ticks,
                    }),
                    kind: kind.into(),
                    seconds,
                })),
            };
            (command, queue, rx)
        };
        let ticket = Ticket {
            hub: self.clone(),
            command_id: command.id,
            rx,
        };
        queue.send(command).await.map_err(|_| {
            Status::unavailable(format!("the collector of host {} went away", target.host))
        })?;
        Ok(ticket)
    }

    /// The longest a capture of `seconds` may take, end to end.
    pub fn deadline(&self, seconds: u32) -> Duration {
        Duration::from_secs(seconds.into()) + SLACK
    }
}

fn secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs().max(1))
}

/// Receives a capture's chunks until the last one, within `deadline`; the bytes.
/// `progress` is told the bytes received after each chunk.
pub async fn receive(
    ticket: &mut Ticket,
    max_bytes: usize,
    deadline: Duration,
    mut progress: impl FnMut(u64),
) -> Result<(Vec<u8>, String), Status> {
    let until = tokio::time::Instant::now() + deadline;
    let mut data: Vec<u8> = Vec::new();
    loop {
        let event = tokio::time::timeout_at(until, ticket.rx.recv())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "the capture did not complete within {}",
                    humantime::format_duration(deadline)
                ))
            })?;
        let chunk = match event {
            Some(ChunkEvent::Chunk(c)) => c,
            Some(ChunkEvent::StreamEnded) => {
                return Err(Status::unavailable(
                    "the collector's stream ended before the capture completed",
                ));
            }
            None => {
                return Err(Status::aborted(
                    "the capture was abandoned: its chunks came faster than they were stored",
                ));
            }
        };
        if !chunk.error.is_empty() {
            return Err(Status::failed_precondition(format!(
                "the collector could not capture: {}",
                goroscope_daemon::escape::peer(&chunk.error)
            )));
        }
        if chunk.offset != data.len() as u64 {
            return Err(Status::data_loss(format!(
                "chunk at offset {} after {} bytes",
                chunk.offset,
                data.len()
            )));
        }
        if data.len() + chunk.data.len() > max_bytes {
            return Err(Status::resource_exhausted(format!(
                "the capture is larger than captures.max_bytes ({max_bytes})"
            )));
        }
        data.extend_from_slice(&chunk.data);
        progress(data.len() as u64);
        if chunk.last {
            let digest = ring::digest::digest(&ring::digest::SHA256, &data);
            let sha256: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            if sha256 != chunk.sha256 {
                return Err(Status::data_loss(format!(
                    "the capture's SHA-256 is {sha256}, the collector sent {}",
                    goroscope_daemon::escape::peer(&chunk.sha256)
                )));
            }
            return Ok((data, sha256));
        }
    }
}

/// The id a new capture is stored under.
pub fn new_id() -> String {
    captures::new_id(goroscope_proto::unix_ms())
}

/// Takes a capture of `target` within the hub's limits and stores it: what the
/// detectors ask for an incident (`requested_by` names them).
pub async fn take(
    hub: &Arc<CaptureHub>,
    storage: &crate::storage::Storage,
    target: &TargetKey,
    labels: Vec<v1::Label>,
    kind: CaptureKind,
    seconds: u32,
    requested_by: &str,
) -> Result<v1::CaptureInfo, Status> {
    let requested_ms = goroscope_proto::unix_ms();
    let mut ticket = hub.ask(target, kind, seconds).await?;
    let (data, sha256) = receive(
        &mut ticket,
        hub.config.max_bytes,
        hub.deadline(seconds),
        |_| {},
    )
    .await?;
    let info = v1::CaptureInfo {
        id: new_id(),
        target: Some(v1::TargetId {
            host: target.host.clone(),
            pid: target.pid,
            start_ticks: target.start_ticks,
        }),
        labels,
        kind: kind.into(),
        seconds,
        requested_ms,
        completed_ms: goroscope_proto::unix_ms(),
        requested_by: requested_by.to_owned(),
        size_bytes: data.len() as u64,
        sha256,
    };
    let (retention, budget) = (hub.config.retention, hub.config.max_total_bytes);
    let storage = storage.clone();
    let stored = info.clone();
    tokio::task::spawn_blocking(move || {
        storage.store_capture(&stored, &data)?;
        let before = goroscope_proto::unix_ms().saturating_sub(retention.as_millis() as i64);
        storage.forget_captures(before, budget).map(drop)
    })
    .await
    .map_err(|e| Status::internal(format!("store task: {e}")))??;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pid: u32) -> TargetKey {
        TargetKey {
            host: "node-a".into(),
            pid,
            start_ticks: 1,
        }
    }

    #[tokio::test]
    async fn limits_refuse_with_a_reason_and_commands_reach_the_hosts_stream() {
        let hub = CaptureHub::new(CaptureConfig {
            max_per_minute: 2,
            ..CaptureConfig::default()
        });
        let err = hub.ask(&key(1), CaptureKind::Heap, 0).await.err().unwrap();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(err.message().contains("no collector of host node-a"));

        let (session, mut commands) = hub.register("node-a");
        let mut ticket = hub.ask(&key(1), CaptureKind::Heap, 0).await.unwrap();
        let command = commands.recv().await.unwrap();
        assert_eq!(command.id, ticket.command_id);
        // The same target again at once: refused, naming the setting.
        let err = hub.ask(&key(1), CaptureKind::Heap, 0).await.err().unwrap();
        assert!(
            err.message().contains("captures.min_interval_per_target"),
            "{err}"
        );
        let _second = hub.ask(&key(2), CaptureKind::Trace, 1).await.unwrap();
        let err = hub.ask(&key(3), CaptureKind::Cpu, 1).await.err().unwrap();
        assert!(err.message().contains("captures.max_per_minute"), "{err}");

        // Chunks from another host are not taken; from the right one, in order.
        let data = b"profile bytes".to_vec();
        let sha: String = ring::digest::digest(&ring::digest::SHA256, &data)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        hub.chunk(
            "node-b",
            v1::CaptureChunk {
                command_id: ticket.command_id,
                data: b"evil".to_vec(),
                ..Default::default()
            },
        );
        hub.chunk(
            "node-a",
            v1::CaptureChunk {
                command_id: ticket.command_id,
                data: data.clone(),
                last: true,
                sha256: sha.clone(),
                ..Default::default()
            },
        );
        let (got, got_sha) = receive(&mut ticket, 1 << 20, Duration::from_secs(5), |_| {})
            .await
            .unwrap();
        assert_eq!((got, got_sha), (data, sha));

        // A session that ends fails the captures waiting on it.
        let mut third = {
            let hub = CaptureHub::new(CaptureConfig::default());
            let (session, _commands) = hub.register("node-a");
            let t = hub.ask(&key(9), CaptureKind::Heap, 0).await.unwrap();
            drop(session);
            t
        };
        let err = receive(&mut third, 1 << 20, Duration::from_secs(5), |_| {})
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        drop(session);
    }

    #[tokio::test]
    async fn a_wrong_checksum_or_an_oversized_capture_is_refused() {
        let hub = CaptureHub::new(CaptureConfig::default());
        let (_session, _commands) = hub.register("node-a");
        let mut t = hub.ask(&key(1), CaptureKind::Heap, 0).await.unwrap();
        hub.chunk(
            "node-a",
            v1::CaptureChunk {
                command_id: t.command_id,
                data: vec![1; 10],
                last: true,
                sha256: "00".into(),
                ..Default::default()
            },
        );
        let err = receive(&mut t, 1 << 20, Duration::from_secs(5), |_| {})
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), tonic::Code::DataLoss);
        let mut t = hub.ask(&key(2), CaptureKind::Heap, 0).await.unwrap();
        hub.chunk(
            "node-a",
            v1::CaptureChunk {
                command_id: t.command_id,
                data: vec![1; 100],
                ..Default::default()
            },
        );
        let err = receive(&mut t, 50, Duration::from_secs(5), |_| {})
            .await
            .err()
            .unwrap();
        assert!(err.message().contains("captures.max_bytes"), "{err}");
    }
}
