//! The sender: keeps one ingest stream open to the aggregator and drains the outbox
//! into it.
//!
//! A session connects over mTLS (the connection and the TLS handshake under one
//! deadline), says Hello, learns from the Welcome what the aggregator already stored
//! and the largest batch it takes, then sends pending scrapes in order, each split into
//! parts that fit (at most `limits.max_in_flight` unacknowledged), and forgets each
//! once acked. Items an ack says were refused are logged (paced) and counted, never
//! sent again. Any failure ends the session; the next one starts after a jittered
//! exponential backoff and sends again whatever was not acked. Refusals that retrying
//! cannot fix (a wrong certificate or role) are logged as errors and retried only at the
//! longest backoff, since an operator may fix the certificate while the collector runs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use goroscope_proto::connect::Connector;
use goroscope_proto::v1::{
    self, aggregator_message, collector_message, ingest_client::IngestClient,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::config::{CollectorConfig, MIN_INTERVAL};
use crate::encoder::Encoder;
use crate::metrics::Metrics;
use crate::outbox::{Outbox, split_seq};

const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// An accepted session that lasted this long was healthy: the next failure starts a
/// fresh backoff.
const MIN_HEALTHY_SESSION: Duration = Duration::from_secs(2);
/// The batch limit assumed when an aggregator does not say.
const DEFAULT_MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Time to connect and finish the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes of a batch left for its `losses` (one per reason, each a few dozen bytes).
const LOSSES_RESERVE: usize = 512;
/// Time given to in-flight batches to be acked after a shutdown request.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("connect {addr}: {source}")]
    Connect {
        addr: String,
        source: goroscope_proto::connect::ConnectError,
    },
    #[error("aggregator refused: {}: {}", goroscope_daemon::code_name(.0.code()), .0.message())]
    Status(tonic::Status),
    #[error("aggregator closed the stream")]
    Closed,
    #[error("protocol: {0}")]
    Protocol(String),
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
    /// The current client TLS configuration; a renewal sends a new one.
    pub tls: watch::Receiver<Arc<rustls::ClientConfig>>,
    pub outbox: Arc<Outbox>,
    pub metrics: Arc<Metrics>,
    pub epoch: u64,
    /// The sampling interval; a SetInterval command changes it.
    pub interval: watch::Sender<Duration>,
    /// Captures the aggregator asks for.
    pub captures: Arc<crate::capture::Captures>,
}

impl Sender {
    /// Runs sessions until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let max_backoff = self.config.limits.max_backoff;
        let mut backoff = INITIAL_BACKOFF;
        let mut last_error = String::new();
        let mut paced = Paced::default();
        loop {
            let started = Instant::now();
            let mut welcomed = false;
            let result = self.session(&shutdown, &mut welcomed, &mut paced).await;
            self.metrics.connected.set(0);
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
                    let message = goroscope_daemon::escape::peer(&e.to_string()).to_string();
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
        paced: &mut Paced,
    ) -> Result<(), SessionError> {
        let config = &self.config;
        let mut tls = self.tls.clone();
        tls.mark_unchanged();
        // The connection and the TLS handshake have one deadline: a peer that accepts
        // TCP and never speaks TLS cannot hold the collector.
        let channel = Connector::new(tls.clone(), &config.server_name, CONNECT_TIMEOUT)
            .and_then(|c| c.channel(&config.aggregator))
            .map_err(|source| SessionError::Connect {
                addr: config.aggregator.clone(),
                source,
            })?;
        let mut client = IngestClient::new(channel)
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(4 * 1024 * 1024);

        let (tx, rx) = mpsc::channel(config.limits.max_in_flight + 2);
        let hello = v1::CollectorMessage {
            msg: Some(collector_message::Msg::Hello(v1::Hello {
                host: config.host.clone(),
                collector_version: env!("CARGO_PKG_VERSION").into(),
                epoch: self.epoch,
                capabilities: vec!["stacks".into(), "captures".into(), "spool".into()],
            })),
        };
        // The receiver is alive and the channel empty: this cannot fail.
        let _ = tx.try_send(hello);
        let opened = async {
            let inbound = client
                .stream(ReceiverStream::new(rx))
                .await
                .map_err(SessionError::Status)?
                .into_inner();
            Ok::<_, SessionError>(inbound)
        };
        let mut inbound = match tokio::time::timeout(WELCOME_TIMEOUT, opened).await {
            Ok(r) => r?,
            Err(_) => return Err(SessionError::Protocol("no answer to the hello".into())),
        };

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
        self.metrics.connected.set(1);
        let dropped = self.outbox.ack(welcome.last_acked_seq);
        let max_batch_bytes = match welcome.max_batch_bytes as usize {
            0 => DEFAULT_MAX_BATCH_BYTES,
            n => n,
        };
        self.captures.set_max_message(max_batch_bytes);
        tracing::info!(
            aggregator = %config.aggregator,
            aggregator_version = %goroscope_daemon::escape::peer(&welcome.aggregator_version),
            pending = self.outbox.len(),
            already_stored = dropped,
            max_batch_bytes,
            "connected to aggregator"
        );

        // Losses a failed stream carried without an ack go with this stream's first batch.
        self.outbox.requeue_losses();
        let mut encoder = Encoder::new(&config.host);
        // Where the next batch starts: a scrape number and an item in it.
        let (mut number, mut item) = match split_seq(welcome.last_acked_seq) {
            (0, _) => (0, 0),
            (n, crate::outbox::COMPLETE) => (n.wrapping_add(1), 0),
            (n, end) => (n, end),
        };
        let mut in_flight: VecDeque<u64> = VecDeque::new();
        let max_in_flight = config.limits.max_in_flight;
        loop {
            while in_flight.len() < max_in_flight {
                let Some(pending) = self.outbox.next_pending(number).await else {
                    break;
                };
                let from = if pending.number == number {
                    item.max(pending.acked_items)
                } else {
                    pending.acked_items
                };
                // Room is left for the losses the batch may carry.
                let mut part = encoder.encode_part(
                    pending.number,
                    &pending.scrape,
                    from,
                    max_batch_bytes.saturating_sub(LOSSES_RESERVE).max(1),
                );
                if part.oversized > 0 {
                    self.metrics.oversized_items.inc_by(part.oversized.into());
                    let ts = pending.scrape.timestamp_ms;
                    self.outbox.add_loss(v1::Loss {
                        reason: "oversized".into(),
                        batches: part.oversized.into(),
                        bytes: 0,
                        from_ms: ts,
                        to_ms: ts,
                    });
                    tracing::error!(
                        scrape = pending.number,
                        items = part.oversized,
                        max_batch_bytes,
                        "left out items larger than the aggregator's batch limit on their own \
                         (its limits.max_message_bytes)"
                    );
                }
                let seq = part.batch.seq;
                part.batch.losses = self.outbox.take_losses(seq);
                if !part.batch.losses.is_empty() {
                    tracing::info!(seq, losses = ?part.batch.losses, "reporting lost data to the aggregator");
                }
                let message = v1::CollectorMessage {
                    msg: Some(collector_message::Msg::Batch(part.batch)),
                };
                if tx.send(message).await.is_err() {
                    return Err(SessionError::Closed);
                }
                self.metrics.batches_sent.inc();
                in_flight.push_back(seq);
                (number, item) = match part.end {
                    Some(end) => (pending.number, end),
                    None => (pending.number.wrapping_add(1), 0),
                };
            }
            let message = tokio::select! {
                _ = shutdown.cancelled() => {
                    drop(tx);
                    self.drain(&mut inbound, paced).await;
                    return Ok(());
                }
                _ = tls.changed() => {
                    // Renewed certificates: finish what is in flight, then reconnect so
                    // that the aggregator sees the new certificate now, not whenever
                    // this connection happens to end.
                    tracing::info!("certificates renewed: reconnecting with them");
                    drop(tx);
                    self.drain(&mut inbound, paced).await;
                    return Ok(());
                }
                _ = self.outbox.pushed() => continue,
                message = inbound.message() => message,
            };
            match message {
                Ok(Some(m)) => {
                    if let Some(seq) = self.handle(m, paced, Some(&tx)) {
                        while in_flight.front().is_some_and(|s| *s <= seq) {
                            in_flight.pop_front();
                        }
                    }
                }
                Ok(None) => return Err(SessionError::Closed),
                Err(status) => {
                    if status.code() == Code::InvalidArgument {
                        // Batches are handled in order: the refused one is the oldest unacked.
                        if let Some(seq) = in_flight.front()
                            && self.outbox.discard(split_seq(*seq).0)
                        {
                            tracing::error!(
                                seq,
                                reason = %goroscope_daemon::escape::peer(status.message()),
                                "aggregator refused a batch as malformed; dropped its scrape"
                            );
                        }
                    }
                    return Err(SessionError::Status(status));
                }
            }
        }
    }

    /// Takes one message from the aggregator; returns the acknowledged seq, if any.
    fn handle(
        &self,
        message: v1::AggregatorMessage,
        paced: &mut Paced,
        tx: Option<&mpsc::Sender<v1::CollectorMessage>>,
    ) -> Option<u64> {
        match message.msg {
            Some(aggregator_message::Msg::Ack(ack)) => {
                self.outbox.ack(ack.seq);
                self.metrics.batches_acked.inc();
                if !ack.refused.is_empty() {
                    self.note_refusals(&ack, paced);
                }
                Some(ack.seq)
            }
            Some(aggregator_message::Msg::Command(command)) => {
                match command.kind {
                    Some(v1::command::Kind::SetInterval(set)) => {
                        let interval =
                            Duration::from_millis(set.interval_ms.into()).max(MIN_INTERVAL);
                        tracing::info!(interval = %humantime::format_duration(interval), "aggregator set the sampling interval");
                        self.interval.send_replace(interval);
                    }
                    Some(v1::command::Kind::Capture(capture)) => match tx {
                        Some(tx) => self.captures.start(command.id, capture, tx.clone()),
                        None => tracing::info!(
                            id = command.id,
                            "capture asked while stopping; not started"
                        ),
                    },
                    None => tracing::debug!(id = command.id, "ignoring an unknown command"),
                }
                None
            }
            Some(aggregator_message::Msg::Throttle(t)) => {
                // Acks pace the stream already; a throttle only shows up in the log for now.
                tracing::info!(delay_ms = t.delay_ms, "aggregator asked to slow down");
                None
            }
            Some(aggregator_message::Msg::Welcome(_)) | None => None,
        }
    }

    fn note_refusals(&self, ack: &v1::Ack, paced: &mut Paced) {
        use v1::refusal::Kind;
        let refused = &ack.refused;
        for r in refused {
            let kind = match Kind::try_from(r.kind).unwrap_or(Kind::Unspecified) {
                Kind::Target => "target",
                Kind::Series => "series",
                Kind::Samples => "samples",
                Kind::Stacks => "stacks",
                Kind::Build => "build",
                Kind::Unspecified => "other",
            };
            self.metrics.refused(kind, 1);
        }
        let unlisted = (ack.refused_count as usize).saturating_sub(refused.len());
        if unlisted > 0 {
            self.metrics.refused("unlisted", unlisted as u64);
        }
        if paced.allow() {
            tracing::warn!(
                seq = ack.seq,
                refused = refused.len().max(ack.refused_count as usize),
                first = %goroscope_daemon::escape::peer(&refused[0].reason),
                "the aggregator left items of a batch out"
            );
        }
    }

    /// After a shutdown request: takes the acks of what is in flight, for a moment.
    async fn drain(
        &self,
        inbound: &mut tonic::Streaming<v1::AggregatorMessage>,
        paced: &mut Paced,
    ) {
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while let Ok(Ok(Some(m))) = tokio::time::timeout_at(deadline, inbound.message()).await {
            self.handle(m, paced, None);
        }
    }
}

/// Lets the first few refusal lines through, then one a minute.
#[derive(Default)]
struct Paced {
    lines: u32,
    last: Option<Instant>,
}

impl Paced {
    fn allow(&mut self) -> bool {
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        if self.lines < 5 || due {
            self.lines += 1;
            self.last = Some(Instant::now());
            true
        } else {
            false
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
