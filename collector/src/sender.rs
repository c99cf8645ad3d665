//! The sender: keeps one ingest stream open to the aggregator and drains the outbox
//! into it.
//!
//! A session connects over mTLS, says Hello, learns from the Welcome which batches the
//! aggregator already stored, then sends pending scrapes in sequence order (at most
//! `limits.max_in_flight` unacknowledged) and forgets each once acked. Any failure ends
//! the session; the next one starts after a jittered exponential backoff and sends again
//! whatever was not acked. Refusals that retrying cannot fix (a wrong certificate or
//! role) are logged as errors and retried only at the longest backoff, since an operator
//! may fix the certificate while the collector runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use goroscope_proto::v1::{
    self, aggregator_message, collector_message, ingest_client::IngestClient,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::config::{CollectorConfig, MIN_INTERVAL};
use crate::model::{Scrape, TargetMeta};
use crate::outbox::Outbox;

const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// An accepted session that lasted this long was healthy: the next failure starts a
/// fresh backoff.
const MIN_HEALTHY_SESSION: Duration = Duration::from_secs(2);
/// What wrapping a Batch in a CollectorMessage adds, at most (tag and length).
const BATCH_FRAMING_BYTES: usize = 16;
const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);
/// Time given to in-flight batches to be acked after a shutdown request.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("connect {addr}: {source}")]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("aggregator refused: {}: {}", code_name(.0.code()), .0.message())]
    Status(tonic::Status),
    #[error("aggregator closed the stream")]
    Closed,
    #[error("protocol: {0}")]
    Protocol(String),
    #[error(
        "batch {seq} is {size} bytes, over the aggregator's limit of {max} (its \
         limits.max_message_bytes); dropped it: lower limits.max_targets here or raise \
         the aggregator's limit"
    )]
    Oversized { seq: u64, size: usize, max: usize },
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission denied",
        Code::InvalidArgument => "invalid argument",
        Code::Unavailable => "unavailable",
        Code::ResourceExhausted => "resource exhausted",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::Internal => "internal error",
        _ => "error",
    }
}

impl SessionError {
    /// Refusals that the same request will meet again until someone changes the setup.
    fn is_refusal(&self) -> bool {
        matches!(self, SessionError::Status(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied))
    }
}

/// Everything a session needs, shared across sessions.
pub struct Sender {
    pub config: Arc<CollectorConfig>,
    pub tls: ClientTlsConfig,
    pub outbox: Arc<Outbox>,
    pub epoch: u64,
    /// The sampling interval; a SetInterval command changes it.
    pub interval: watch::Sender<Duration>,
}

impl Sender {
    /// Runs sessions until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let max_backoff = self.config.limits.max_backoff;
        let mut backoff = INITIAL_BACKOFF;
        let mut last_error = String::new();
        loop {
            let started = Instant::now();
            let mut welcomed = false;
            let result = self.session(&shutdown, &mut welcomed).await;
            if shutdown.is_cancelled() {
                return;
            }
            // A session the aggregator accepted starts the backoff afresh, unless it
            // failed at once (a flapping aggregator should not be hammered).
            if welcomed && started.elapsed() >= MIN_HEALTHY_SESSION {
                backoff = INITIAL_BACKOFF;
            }
            let delay = match &result {
                Err(e) if e.is_refusal() => max_backoff,
                _ => backoff,
            };
            let delay = jitter(delay);
            match result {
                Ok(()) => {}
                Err(e) => {
                    let message = e.to_string();
                    if e.is_refusal() {
                        tracing::error!(
                            retry_in = %humantime::format_duration(delay),
                            "{message}"
                        );
                    } else if message != last_error {
                        tracing::warn!(
                            pending = self.outbox.len(),
                            retry_in = %humantime::format_duration(delay),
                            "aggregator stream failed: {message}"
                        );
                    } else {
                        tracing::debug!(
                            pending = self.outbox.len(),
                            "aggregator stream failed again: {message}"
                        );
                    }
                    last_error = message;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            backoff = (backoff * 2).min(max_backoff);
        }
    }

    async fn session(
        &self,
        shutdown: &CancellationToken,
        welcomed: &mut bool,
    ) -> Result<(), SessionError> {
        let config = &self.config;
        let connect_err = |source| SessionError::Connect {
            addr: config.aggregator.clone(),
            source,
        };
        let channel = Endpoint::from_shared(config.aggregator.clone())
            .map_err(connect_err)?
            .tls_config(self.tls.clone())
            .map_err(connect_err)?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect()
            .await
            .map_err(connect_err)?;
        let mut client = IngestClient::new(channel)
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(4 * 1024 * 1024);

        let (tx, rx) = mpsc::channel(config.limits.max_in_flight + 2);
        let hello = v1::CollectorMessage {
            msg: Some(collector_message::Msg::Hello(v1::Hello {
                host: config.host.clone(),
                collector_version: env!("CARGO_PKG_VERSION").into(),
                epoch: self.epoch,
                capabilities: Vec::new(),
            })),
        };
        // The receiver is alive and the channel empty: this cannot fail.
        let _ = tx.try_send(hello);
        let mut inbound = client
            .stream(ReceiverStream::new(rx))
            .await
            .map_err(SessionError::Status)?
            .into_inner();

        let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await {
            Err(_) => {
                return Err(SessionError::Protocol(
                    "no welcome from the aggregator".into(),
                ));
            }
            Ok(Err(status)) => return Err(SessionError::Status(status)),
            Ok(Ok(None)) => return Err(SessionError::Closed),
            Ok(Ok(Some(m))) => match m.msg {
                Some(aggregator_message::Msg::Welcome(w)) => w,
                _ => {
                    return Err(SessionError::Protocol(
                        "first message is not a welcome".into(),
                    ));
                }
            },
        };
        *welcomed = true;
        let dropped = self.outbox.ack(welcome.last_acked_seq);
        tracing::info!(
            aggregator = %config.aggregator,
            aggregator_version = %welcome.aggregator_version,
            pending = self.outbox.len(),
            already_stored = dropped,
            "connected to aggregator"
        );

        let mut encoder = Encoder::new(&config.host);
        let mut last_sent = welcome.last_acked_seq;
        let max_in_flight = config.limits.max_in_flight;
        let max_batch_bytes = welcome.max_batch_bytes as usize;
        loop {
            while self.outbox.count_through(last_sent) < max_in_flight {
                let Some(pending) = self.outbox.next_after(last_sent) else {
                    break;
                };
                let batch = encoder.encode(pending.seq, &pending.scrape);
                let size = prost::Message::encoded_len(&batch);
                // The aggregator would end the stream over it, again after every
                // reconnect. Dropping it and starting a new stream (a fresh encoder:
                // the declarations it made went nowhere) keeps the rest flowing.
                if max_batch_bytes > 0 && size + BATCH_FRAMING_BYTES > max_batch_bytes {
                    self.outbox.discard(pending.seq);
                    return Err(SessionError::Oversized {
                        seq: pending.seq,
                        size,
                        max: max_batch_bytes,
                    });
                }
                let message = v1::CollectorMessage {
                    msg: Some(collector_message::Msg::Batch(batch)),
                };
                if tx.send(message).await.is_err() {
                    return Err(SessionError::Closed);
                }
                last_sent = pending.seq;
            }
            let message = tokio::select! {
                _ = shutdown.cancelled() => {
                    drop(tx);
                    self.drain(&mut inbound).await;
                    return Ok(());
                }
                _ = self.outbox.pushed() => continue,
                message = inbound.message() => message,
            };
            match message {
                Ok(Some(m)) => self.handle(m),
                Ok(None) => return Err(SessionError::Closed),
                Err(status) => {
                    if status.code() == Code::InvalidArgument {
                        // Batches are handled in order: the refused one is the oldest unacked.
                        if let Some(seq) = self.outbox.oldest()
                            && self.outbox.discard(seq)
                        {
                            tracing::error!(
                                seq,
                                reason = status.message(),
                                "aggregator refused a batch as malformed; dropped it"
                            );
                        }
                    }
                    return Err(SessionError::Status(status));
                }
            }
        }
    }

    fn handle(&self, message: v1::AggregatorMessage) {
        match message.msg {
            Some(aggregator_message::Msg::Ack(ack)) => {
                self.outbox.ack(ack.seq);
            }
            Some(aggregator_message::Msg::Command(command)) => match command.kind {
                Some(v1::command::Kind::SetInterval(set)) => {
                    let interval = Duration::from_millis(set.interval_ms.into()).max(MIN_INTERVAL);
                    tracing::info!(interval = %humantime::format_duration(interval), "aggregator set the sampling interval");
                    self.interval.send_replace(interval);
                }
                None => tracing::debug!(id = command.id, "ignoring an unknown command"),
            },
            Some(aggregator_message::Msg::Throttle(t)) => {
                // Acks pace the stream already; a throttle only shows up in the log for now.
                tracing::info!(delay_ms = t.delay_ms, "aggregator asked to slow down");
            }
            Some(aggregator_message::Msg::Welcome(_)) | None => {}
        }
    }

    /// After a shutdown request: takes the acks of what is in flight, for a moment.
    async fn drain(&self, inbound: &mut tonic::Streaming<v1::AggregatorMessage>) {
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while let Ok(Ok(Some(m))) = tokio::time::timeout_at(deadline, inbound.message()).await {
            self.handle(m);
        }
    }
}

/// Up to a quarter more or less, so that collectors cut off together do not reconnect
/// together.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.75 + (nanos % 1000) as f64 / 2000.0;
    d.mul_f64(factor)
}

/// Encodes scrapes into batches for one stream, declaring each target and series the
/// first time the stream carries it (and a target again when its labels or coverage
/// change). Refs are never reused within a stream.
pub struct Encoder {
    host: String,
    targets: HashMap<(u32, u64), (u32, Arc<TargetMeta>)>,
    series: HashMap<(u32, &'static str), u32>,
    next_target_ref: u32,
    next_series_ref: u32,
}

impl Encoder {
    pub fn new(host: &str) -> Encoder {
        Encoder {
            host: host.to_owned(),
            targets: HashMap::new(),
            series: HashMap::new(),
            next_target_ref: 0,
            next_series_ref: 0,
        }
    }

    pub fn encode(&mut self, seq: u64, scrape: &Scrape) -> v1::Batch {
        let mut batch = v1::Batch {
            seq,
            ..v1::Batch::default()
        };
        for sample in &scrape.samples {
            let target_ref = self.declare_target(&sample.meta, &mut batch);
            for &(metric, value) in &sample.metrics {
                let series_ref = match self.series.get(&(target_ref, metric)) {
                    Some(r) => *r,
                    None => {
                        let r = self.next_series_ref;
                        self.next_series_ref += 1;
                        self.series.insert((target_ref, metric), r);
                        batch.series.push(v1::SeriesDecl {
                            r#ref: r,
                            target_ref,
                            metric: metric.to_owned(),
                        });
                        r
                    }
                };
                batch.samples.push(v1::SeriesSamples {
                    series_ref,
                    timestamp_deltas: vec![scrape.timestamp_ms],
                    values: vec![value],
                });
            }
        }
        for meta in &scrape.gone {
            let target_ref = self.declare_target(meta, &mut batch);
            batch.gone_targets.push(target_ref);
            self.targets.remove(&(meta.pid, meta.start_ticks));
            self.series.retain(|(t, _), _| *t != target_ref);
        }
        batch
    }

    fn declare_target(&mut self, meta: &Arc<TargetMeta>, batch: &mut v1::Batch) -> u32 {
        let key = (meta.pid, meta.start_ticks);
        let target_ref = match self.targets.get(&key) {
            Some((r, known)) if Arc::ptr_eq(known, meta) || known == meta => return *r,
            Some((r, _)) => *r,
            None => {
                let r = self.next_target_ref;
                self.next_target_ref += 1;
                r
            }
        };
        self.targets.insert(key, (target_ref, meta.clone()));
        batch.targets.push(v1::TargetUpsert {
            r#ref: target_ref,
            id: Some(v1::TargetId {
                host: self.host.clone(),
                pid: meta.pid,
                start_ticks: meta.start_ticks,
            }),
            labels: meta
                .labels
                .iter()
                .map(|(name, value)| v1::Label {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            coverage: Some(meta.coverage.clone()),
            start_time_ms: meta.start_time_ms,
        });
        target_ref
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Coverage, TargetSample};

    fn meta(pid: u32, expvar: bool) -> Arc<TargetMeta> {
        Arc::new(TargetMeta {
            pid,
            start_ticks: 7,
            start_time_ms: 1,
            labels: vec![("service".into(), "billing".into())],
            coverage: Coverage {
                expvar,
                ..Coverage::default()
            },
        })
    }

    fn scrape(ts: i64, metas: &[Arc<TargetMeta>]) -> Scrape {
        Scrape {
            timestamp_ms: ts,
            samples: metas
                .iter()
                .map(|m| TargetSample {
                    meta: m.clone(),
                    metrics: vec![("go_goroutines", 3.0), ("process_threads", 5.0)],
                })
                .collect(),
            gone: vec![],
        }
    }

    #[test]
    fn declares_targets_and_series_once_per_stream() {
        let a = meta(1, false);
        let mut enc = Encoder::new("node-a");
        let first = enc.encode(1, &scrape(1000, std::slice::from_ref(&a)));
        assert_eq!(first.targets.len(), 1);
        assert_eq!(first.targets[0].id.as_ref().unwrap().host, "node-a");
        assert_eq!(first.series.len(), 2);
        assert_eq!(first.samples.len(), 2);
        assert_eq!(first.samples[0].timestamp_deltas, vec![1000]);

        let second = enc.encode(2, &scrape(2000, std::slice::from_ref(&a)));
        assert!(second.targets.is_empty() && second.series.is_empty());
        assert_eq!(second.samples.len(), 2);

        // Changed coverage: the same ref is declared again, its series are not.
        let a2 = meta(1, true);
        let third = enc.encode(3, &scrape(3000, std::slice::from_ref(&a2)));
        assert_eq!(third.targets.len(), 1);
        assert_eq!(third.targets[0].r#ref, first.targets[0].r#ref);
        assert!(third.series.is_empty());

        // A new stream (a new encoder) declares everything again.
        let mut fresh = Encoder::new("node-a");
        let again = fresh.encode(3, &scrape(3000, &[a2]));
        assert_eq!((again.targets.len(), again.series.len()), (1, 2));
    }

    #[test]
    fn gone_targets_are_declared_if_needed_and_forgotten() {
        let a = meta(1, false);
        let mut enc = Encoder::new("node-a");
        let gone = Scrape {
            timestamp_ms: 1,
            samples: vec![],
            gone: vec![a.clone()],
        };
        let batch = enc.encode(1, &gone);
        assert_eq!(batch.targets.len(), 1);
        assert_eq!(batch.gone_targets, vec![batch.targets[0].r#ref]);
        assert!(enc.targets.is_empty() && enc.series.is_empty());
    }
}
