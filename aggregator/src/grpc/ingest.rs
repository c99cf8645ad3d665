//! The `Ingest` service: one session per collector stream.
//!
//! The session checks the collector's identity against its Hello, resolves the stream's
//! interned refs into series keys, hands each batch to storage and acks it once durable.
//! Batches of one stream are handled in order, so acks are in order too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use goroscope_proto::Role;
use goroscope_proto::tls::require_role;
use goroscope_proto::v1::{self, aggregator_message, collector_message, ingest_server::Ingest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::config::Limits;
use crate::storage::{
    Coverage, IngestWrite, SeriesKey, SeriesPoints, Storage, TargetKey, TargetUpdate, WriteOutcome,
};

pub struct IngestService {
    storage: Storage,
    limits: Limits,
    shutdown: CancellationToken,
}

impl IngestService {
    pub fn new(storage: Storage, limits: Limits, shutdown: CancellationToken) -> IngestService {
        IngestService {
            storage,
            limits,
            shutdown,
        }
    }
}

type Outbound = Result<v1::AggregatorMessage, Status>;

#[tonic::async_trait]
impl Ingest for IngestService {
    type StreamStream = ReceiverStream<Outbound>;

    async fn stream(
        &self,
        request: Request<Streaming<v1::CollectorMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let identity = require_role(&request, Role::Collector).inspect_err(|status| {
            tracing::warn!(reason = status.message(), "ingest stream refused");
        })?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.limits.hello_timeout, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no hello within {}",
                    humantime::format_duration(self.limits.hello_timeout)
                ))
            })??;
        let hello = match first.and_then(|m| m.msg) {
            Some(collector_message::Msg::Hello(hello)) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ));
            }
        };
        if hello.host != identity.name {
            let status = Status::permission_denied(format!(
                "certificate {identity} may only ingest for host {:?}, hello names host {:?}",
                identity.name, hello.host
            ));
            tracing::warn!(reason = status.message(), "ingest stream refused");
            return Err(status);
        }
        let last_acked_seq = self.storage.last_seq(&hello.host, hello.epoch);
        tracing::info!(
            host = %hello.host,
            epoch = hello.epoch,
            collector_version = %hello.collector_version,
            last_acked_seq,
            "collector connected"
        );

        let (tx, rx) = mpsc::channel(64);
        let welcome = v1::AggregatorMessage {
            msg: Some(aggregator_message::Msg::Welcome(v1::Welcome {
                aggregator_version: env!("CARGO_PKG_VERSION").into(),
                last_acked_seq,
                max_batch_bytes: u32::try_from(self.limits.max_message_bytes).unwrap_or(u32::MAX),
            })),
        };
        // The channel is fresh and has room: this cannot fail.
        let _ = tx.try_send(Ok(welcome));
        let session = Session {
            host: hello.host,
            epoch: hello.epoch,
            storage: self.storage.clone(),
            max_series: self.limits.max_series_per_stream,
            targets: HashMap::new(),
            series: HashMap::new(),
        };
        tokio::spawn(session.run(inbound, tx, self.shutdown.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Session {
    host: String,
    epoch: u64,
    storage: Storage,
    max_series: usize,
    targets: HashMap<u32, TargetKey>,
    series: HashMap<u32, Arc<SeriesKey>>,
}

impl Session {
    async fn run(
        mut self,
        mut inbound: Streaming<v1::CollectorMessage>,
        tx: mpsc::Sender<Outbound>,
        shutdown: CancellationToken,
    ) {
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = tx.send(Err(Status::unavailable("aggregator is shutting down"))).await;
                    break;
                }
                message = inbound.message() => message,
            };
            let batch = match message {
                Ok(Some(v1::CollectorMessage {
                    msg: Some(collector_message::Msg::Batch(batch)),
                })) => batch,
                Ok(Some(_)) => {
                    let status = Status::invalid_argument("expected a batch after the hello");
                    let _ = tx.send(Err(status)).await;
                    break;
                }
                Ok(None) => {
                    tracing::info!(host = %self.host, "collector closed its stream");
                    break;
                }
                Err(status) => {
                    tracing::info!(host = %self.host, error = %status.message(), "collector stream ended");
                    break;
                }
            };
            let seq = batch.seq;
            let write = match self.decode(batch) {
                Ok(write) => write,
                Err(status) => {
                    tracing::warn!(host = %self.host, seq, reason = status.message(), "batch refused");
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            };
            match self.storage.write(write).await {
                Ok(outcome) => {
                    if outcome == WriteOutcome::Duplicate {
                        tracing::debug!(host = %self.host, seq, "duplicate batch acked again");
                    }
                    let ack = v1::AggregatorMessage {
                        msg: Some(aggregator_message::Msg::Ack(v1::Ack { seq })),
                    };
                    if tx.send(Ok(ack)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(Status::from(e))).await;
                    break;
                }
            }
        }
    }

    /// Resolves the stream's refs and validates the batch; refuses it with the field named.
    fn decode(&mut self, batch: v1::Batch) -> Result<IngestWrite, Status> {
        let seq = batch.seq;
        let bad = |what: String| Status::invalid_argument(format!("batch {seq}: {what}"));
        let mut targets = Vec::with_capacity(batch.targets.len());
        for upsert in batch.targets {
            let id = upsert
                .id
                .ok_or_else(|| bad(format!("targets[ref={}].id is missing", upsert.r#ref)))?;
            if id.host != self.host {
                return Err(Status::permission_denied(format!(
                    "batch {seq}: target on host {:?}, but this stream may only ingest for host {:?}",
                    id.host, self.host
                )));
            }
            if upsert.labels.len() > MAX_LABELS {
                return Err(bad(format!(
                    "targets[ref={}].labels has {} labels, more than {MAX_LABELS}",
                    upsert.r#ref,
                    upsert.labels.len()
                )));
            }
            let mut labels = BTreeMap::new();
            for label in upsert.labels {
                if !valid_label_name(&label.name) || label.value.len() > MAX_LABEL_VALUE {
                    return Err(bad(format!(
                        "targets[ref={}].labels has an invalid label {:?}",
                        upsert.r#ref, label.name
                    )));
                }
                labels.insert(label.name, label.value);
            }
            let key = TargetKey {
                host: id.host,
                pid: id.pid,
                start_ticks: id.start_ticks,
            };
            let coverage = upsert.coverage.unwrap_or_default();
            self.targets.insert(upsert.r#ref, key.clone());
            targets.push(TargetUpdate {
                key,
                labels,
                coverage: Coverage {
                    proc: coverage.proc,
                    buildinfo: coverage.buildinfo,
                    expvar: coverage.expvar,
                    pprof: coverage.pprof,
                    debug_addr: coverage.debug_addr,
                },
                start_time_ms: upsert.start_time_ms,
            });
        }
        for decl in batch.series {
            let target = self.targets.get(&decl.target_ref).ok_or_else(|| {
                bad(format!(
                    "series[ref={}].target_ref {} was never declared on this stream",
                    decl.r#ref, decl.target_ref
                ))
            })?;
            if !valid_metric_name(&decl.metric) {
                return Err(bad(format!(
                    "series[ref={}].metric {:?} is not a valid metric name",
                    decl.r#ref, decl.metric
                )));
            }
            if self.series.len() >= self.max_series && !self.series.contains_key(&decl.r#ref) {
                return Err(Status::resource_exhausted(format!(
                    "batch {seq}: this stream declared {} series, the most one stream may",
                    self.max_series
                )));
            }
            let key = Arc::new(SeriesKey {
                target: target.clone(),
                metric: decl.metric,
            });
            self.series.insert(decl.r#ref, key);
        }
        let mut samples = Vec::with_capacity(batch.samples.len());
        for s in batch.samples {
            let series = self.series.get(&s.series_ref).ok_or_else(|| {
                bad(format!(
                    "samples.series_ref {} was never declared on this stream",
                    s.series_ref
                ))
            })?;
            if s.timestamp_deltas.len() != s.values.len() {
                return Err(bad(format!(
                    "samples[series_ref={}] has {} timestamps but {} values",
                    s.series_ref,
                    s.timestamp_deltas.len(),
                    s.values.len()
                )));
            }
            let mut ts = 0i64;
            let mut points = Vec::with_capacity(s.values.len());
            for (delta, value) in s.timestamp_deltas.iter().zip(&s.values) {
                ts = ts.checked_add(*delta).ok_or_else(|| {
                    bad(format!(
                        "samples[series_ref={}] timestamps overflow",
                        s.series_ref
                    ))
                })?;
                points.push((ts, *value));
            }
            samples.push(SeriesPoints {
                series: series.clone(),
                points,
            });
        }
        let mut gone = Vec::with_capacity(batch.gone_targets.len());
        for r in batch.gone_targets {
            let key = self.targets.get(&r).ok_or_else(|| {
                bad(format!(
                    "gone_targets names ref {r}, never declared on this stream"
                ))
            })?;
            gone.push(key.clone());
        }
        Ok(IngestWrite {
            host: self.host.clone(),
            epoch: self.epoch,
            seq,
            received_ms: goroscope_proto::unix_ms(),
            targets,
            samples,
            gone,
        })
    }
}

const MAX_LABELS: usize = 64;
const MAX_LABEL_VALUE: usize = 1024;

fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 128
}

fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        && name.len() <= 256
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_rules() {
        assert!(valid_metric_name("go_goroutines"));
        assert!(valid_metric_name("job:rate5m"));
        assert!(!valid_metric_name(""));
        assert!(!valid_metric_name("9lives"));
        assert!(!valid_metric_name("go-goroutines"));
        assert!(valid_label_name("go_version"));
        assert!(!valid_label_name("go:version"));
    }
}
