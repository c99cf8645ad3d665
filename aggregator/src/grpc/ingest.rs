//! The `Ingest` service: one session per collector stream.
//!
//! The session checks the collector's identity against its Hello, resolves the stream's
//! interned refs into series keys, hands each batch to storage and acks it once durable.
//! Batches of one stream are handled in order, so acks are in order too.
//!
//! One bad item costs only itself: a target whose labels break the rules (see
//! `goroscope_proto::rules`), a series past a cap, samples outside the time window are
//! left out and named in the Ack's refusals, and the rest of the batch is stored. Only
//! what breaks the stream itself (no Hello, a message over the size limit, refs past
//! every cap) ends it, with a status that says which limit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use goroscope_daemon::escape::peer;
use goroscope_proto::Role;
use goroscope_proto::rules;
use goroscope_proto::v1::{
    self, aggregator_message, collector_message, ingest_server::Ingest, refusal::Kind,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, Streaming};

use super::{Shared, authorize};
use crate::config::Limits;
use crate::detect::engine::{Detector, Feed};
use crate::metrics::Metrics;
use crate::storage::{
    Coverage, IngestWrite, SeriesKey, SeriesPoints, StackWrite, Storage, TargetKey, TargetUpdate,
    WriteOutcome,
};

/// Refusals listed in one Ack, at most; the rest are only counted.
const MAX_REFUSALS_PER_ACK: usize = 256;

/// Bounds on a stack summary: groups, frames per group, bytes per string.
const MAX_STACK_GROUPS: usize = 1024;
const MAX_STACK_FRAMES: usize = 64;
const MAX_STACK_STRING: usize = rules::MAX_LABEL_VALUE;
/// Bounds on build information: modules, settings, bytes per string.
const MAX_BUILD_DEPS: usize = 4096;
const MAX_BUILD_SETTINGS: usize = 256;
const MAX_BUILD_STRING: usize = 4096;

pub struct IngestService {
    shared: Shared,
    storage: Storage,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl IngestService {
    pub fn new(shared: Shared, limits: Limits, shutdown: CancellationToken) -> IngestService {
        IngestService {
            storage: shared.storage.clone(),
            metrics: shared.metrics.clone(),
            shared,
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
        let identity =
            authorize(&self.shared, "ingest", &request, Role::Collector).inspect_err(|status| {
                tracing::warn!(reason = %peer(status.message()), "ingest stream refused");
            })?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.limits.hello_timeout, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no hello within {}",
                    humantime::format_duration(self.limits.hello_timeout)
                ))
            })?
            .map_err(|s| inbound_error(s, self.limits.max_message_bytes))?;
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
                identity.name,
                peer(&hello.host).to_string()
            ));
            self.metrics.refused("ingest", status.code());
            tracing::warn!(reason = %peer(status.message()), "ingest stream refused");
            return Err(status);
        }
        let Some(slot) = self
            .shared
            .streams
            .acquire(&hello.host, self.limits.max_streams_per_host)
        else {
            let status = Status::resource_exhausted(format!(
                "host {:?} has {} ingest streams open, the most one host may \
                 (limits.max_streams_per_host)",
                hello.host, self.limits.max_streams_per_host
            ));
            self.metrics.refused("ingest", status.code());
            tracing::warn!(reason = %peer(status.message()), "ingest stream refused");
            return Err(status);
        };
        let last_acked_seq = self.storage.last_seq(&hello.host, hello.epoch);
        tracing::info!(
            host = %hello.host,
            epoch = hello.epoch,
            collector_version = %peer(&hello.collector_version),
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
        let captures = self.shared.captures.register(&hello.host);
        let mut session = Session::new(
            hello.host,
            hello.epoch,
            self.storage.clone(),
            self.limits.clone(),
            self.metrics.clone(),
        );
        session.detector = self.shared.detector.clone();
        tokio::spawn(session.run(
            inbound,
            tx,
            self.shutdown.clone(),
            slot,
            captures,
            self.shared.captures.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// What the client sent that ended its stream, as the status it gets back: a message
/// over the size limit names the limit and the setting.
fn inbound_error(status: Status, max_message_bytes: usize) -> Status {
    if status.code() == Code::OutOfRange && status.message().contains("message length too large") {
        return Status::resource_exhausted(format!(
            "message larger than the aggregator accepts ({max_message_bytes} bytes, its \
             limits.max_message_bytes; Welcome.max_batch_bytes says so): {}",
            status.message()
        ));
    }
    status
}

/// A batch's refusals, and what they added up to.
#[derive(Default, Debug)]
pub(crate) struct Refusals {
    listed: Vec<v1::Refusal>,
    total: usize,
    samples: u64,
}

impl Refusals {
    fn push(&mut self, kind: Kind, r#ref: u32, count: u32, reason: String) {
        self.total += 1;
        if kind == Kind::Samples {
            self.samples += u64::from(count);
        }
        if self.listed.len() < MAX_REFUSALS_PER_ACK {
            self.listed.push(v1::Refusal {
                kind: kind.into(),
                r#ref,
                reason,
                count,
            });
        }
    }
}

struct SessionTarget {
    key: TargetKey,
    series: Vec<u32>,
}

pub(crate) struct Session {
    host: String,
    epoch: u64,
    storage: Storage,
    limits: Limits,
    metrics: Arc<Metrics>,
    targets: HashMap<u32, SessionTarget>,
    series: HashMap<u32, Arc<SeriesKey>>,
    /// Refs refused on this stream: their later items are dropped without a refusal of
    /// their own.
    refused_targets: HashSet<u32>,
    refused_series: HashSet<u32>,
    /// Batches with refusals so far, for pacing the log.
    refused_batches: u64,
    /// Fed what each stored batch says of the series detectors read.
    detector: Option<Detector>,
}

impl Session {
    pub(crate) fn new(
        host: String,
        epoch: u64,
        storage: Storage,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Session {
        Session {
            host,
            epoch,
            storage,
            limits,
            metrics,
            targets: HashMap::new(),
            series: HashMap::new(),
            refused_targets: HashSet::new(),
            refused_series: HashSet::new(),
            refused_batches: 0,
            detector: None,
        }
    }

    async fn run(
        mut self,
        mut inbound: Streaming<v1::CollectorMessage>,
        tx: mpsc::Sender<Outbound>,
        shutdown: CancellationToken,
        _slot: super::StreamSlot,
        (_registered, mut commands): (super::capture::SessionHandle, mpsc::Receiver<v1::Command>),
        hub: Arc<super::capture::CaptureHub>,
    ) {
        let _stream = self.metrics.stream_opened();
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = tx.send(Err(Status::unavailable("aggregator is shutting down"))).await;
                    break;
                }
                Some(command) = commands.recv() => {
                    let message = v1::AggregatorMessage {
                        msg: Some(aggregator_message::Msg::Command(command)),
                    };
                    if tx.send(Ok(message)).await.is_err() {
                        break;
                    }
                    continue;
                }
                message = inbound.message() => message,
            };
            let batch = match message {
                Ok(Some(v1::CollectorMessage {
                    msg: Some(collector_message::Msg::Batch(batch)),
                })) => batch,
                Ok(Some(v1::CollectorMessage {
                    msg: Some(collector_message::Msg::CaptureChunk(chunk)),
                })) => {
                    hub.chunk(&self.host, chunk);
                    continue;
                }
                Ok(Some(_)) => {
                    let status = Status::invalid_argument("expected a batch after the hello");
                    let _ = tx.send(Err(status)).await;
                    break;
                }
                Ok(None) => {
                    tracing::info!(host = %self.host, "collector closed its stream");
                    break;
                }
                Err(status) if status.code() == Code::Cancelled => {
                    tracing::info!(host = %self.host, "collector went away");
                    break;
                }
                Err(status) => {
                    let status = inbound_error(status, self.limits.max_message_bytes);
                    self.metrics.refused("ingest", status.code());
                    tracing::warn!(host = %self.host, reason = %peer(status.message()), "collector stream ended");
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            };
            self.metrics.batch_received();
            let seq = batch.seq;
            let started = std::time::Instant::now();
            let (write, refusals) = match self.decode(batch, goroscope_proto::unix_ms()) {
                Ok(decoded) => decoded,
                Err(status) => {
                    self.metrics.refused("ingest", status.code());
                    tracing::warn!(host = %self.host, seq, reason = %peer(status.message()), "stream refused");
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            };
            if refusals.total > 0 {
                self.log_refusals(seq, &refusals);
            }
            let feed = self
                .detector
                .as_ref()
                .and_then(|_| Feed::from_write(&write));
            match self.storage.write(write).await {
                Ok(outcome) => {
                    if outcome == WriteOutcome::Stored
                        && let (Some(detector), Some(feed)) = (&self.detector, feed)
                    {
                        detector.offer(feed);
                    }
                    if outcome == WriteOutcome::Duplicate {
                        tracing::debug!(host = %self.host, seq, "duplicate batch acked again");
                    }
                    self.metrics.batch_acked(started.elapsed());
                    let ack = v1::AggregatorMessage {
                        msg: Some(aggregator_message::Msg::Ack(v1::Ack {
                            seq,
                            refused: refusals.listed,
                            refused_count: u32::try_from(refusals.total).unwrap_or(u32::MAX),
                        })),
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

    fn log_refusals(&mut self, seq: u64, refusals: &Refusals) {
        self.refused_batches += 1;
        self.metrics
            .items_refused(refusals.total as u64, refusals.samples);
        let first = refusals
            .listed
            .first()
            .map(|r| r.reason.as_str())
            .unwrap_or("");
        // The first few, then one in a hundred: a collector that keeps sending what is
        // refused (a skewed clock, say) must not flood the log.
        if self.refused_batches <= 5 || self.refused_batches.is_multiple_of(100) {
            tracing::warn!(
                host = %self.host,
                seq,
                refused = refusals.total,
                samples = refusals.samples,
                batches_with_refusals = self.refused_batches,
                first = %peer(first),
                "left items of a batch out"
            );
        }
    }

    /// Resolves the stream's refs and validates the batch. Items that break a rule are
    /// left out and listed; only what breaks the stream is an error.
    pub(crate) fn decode(
        &mut self,
        batch: v1::Batch,
        now_ms: i64,
    ) -> Result<(IngestWrite, Refusals), Status> {
        let seq = batch.seq;
        let mut refusals = Refusals::default();
        let l = self.limits.clone();
        let mut targets = Vec::with_capacity(batch.targets.len());
        for mut upsert in batch.targets {
            let r = upsert.r#ref;
            let build = upsert.build.take();
            match self.check_target(&upsert) {
                Ok(mut update) => {
                    match build.map(check_build).transpose() {
                        Ok(build) => update.build = build.map(Arc::new),
                        Err(reason) => refusals.push(
                            Kind::Build,
                            r,
                            0,
                            format!("build of target ref {r}: {reason}"),
                        ),
                    }
                    self.refused_targets.remove(&r);
                    let known = self.targets.entry(r).or_insert_with(|| SessionTarget {
                        key: update.key.clone(),
                        series: Vec::new(),
                    });
                    if known.key != update.key {
                        // A ref re-used for another process: the old one's series go.
                        for s in std::mem::take(&mut known.series) {
                            self.series.remove(&s);
                        }
                        known.key = update.key.clone();
                    }
                    targets.push(update);
                }
                Err(reason) => {
                    if self.refused_targets.len() >= l.max_targets_per_stream {
                        return Err(Status::resource_exhausted(format!(
                            "batch {seq}: more than {} refused targets on one stream",
                            l.max_targets_per_stream
                        )));
                    }
                    self.refused_targets.insert(r);
                    refusals.push(Kind::Target, r, 0, format!("target ref {r}: {reason}"));
                }
            }
        }
        for decl in batch.series {
            let r = decl.r#ref;
            if self.refused_targets.contains(&decl.target_ref) {
                self.refuse_series_quietly(seq, r)?;
                continue;
            }
            match self.check_series(&decl) {
                Ok(key) => {
                    self.refused_series.remove(&r);
                    if self.series.insert(r, key).is_none()
                        && let Some(t) = self.targets.get_mut(&decl.target_ref)
                    {
                        t.series.push(r);
                    }
                }
                Err(reason) => {
                    self.refuse_series_quietly(seq, r)?;
                    refusals.push(Kind::Series, r, 0, format!("series ref {r}: {reason}"));
                }
            }
        }
        let oldest = now_ms.saturating_sub(self.storage.retention().as_millis() as i64);
        let newest = now_ms.saturating_add(l.max_sample_future.as_millis() as i64);
        let mut samples = Vec::with_capacity(batch.samples.len());
        for s in batch.samples {
            let r = s.series_ref;
            let Some(series) = self.series.get(&r) else {
                if !self.refused_series.contains(&r) {
                    refusals.push(
                        Kind::Samples,
                        r,
                        s.values.len().min(u32::MAX as usize) as u32,
                        format!(
                            "samples of series ref {r}: the ref was never declared on this stream"
                        ),
                    );
                }
                continue;
            };
            if s.timestamp_deltas.len() != s.values.len() {
                refusals.push(
                    Kind::Samples,
                    r,
                    s.values.len().min(u32::MAX as usize) as u32,
                    format!(
                        "samples of series ref {r}: {} timestamps but {} values",
                        s.timestamp_deltas.len(),
                        s.values.len()
                    ),
                );
                continue;
            }
            let mut ts = 0i64;
            let mut points = Vec::with_capacity(s.values.len());
            let mut outside = 0u32;
            let mut overflow = false;
            for (delta, value) in s.timestamp_deltas.iter().zip(&s.values) {
                let Some(next) = ts.checked_add(*delta) else {
                    overflow = true;
                    break;
                };
                ts = next;
                if ts < oldest || ts > newest {
                    outside += 1;
                    continue;
                }
                points.push((ts, *value));
            }
            if overflow {
                refusals.push(
                    Kind::Samples,
                    r,
                    s.values.len().min(u32::MAX as usize) as u32,
                    format!("samples of series ref {r}: timestamps overflow"),
                );
                continue;
            }
            if outside > 0 {
                refusals.push(
                    Kind::Samples,
                    r,
                    outside,
                    format!(
                        "samples of series ref {r}: {outside} with timestamps outside the \
                         window [now - retention, now + limits.max_sample_future \
                         ({})]",
                        humantime::format_duration(l.max_sample_future)
                    ),
                );
            }
            if !points.is_empty() {
                samples.push(SeriesPoints {
                    series: series.clone(),
                    points,
                });
            }
        }
        let mut stacks = Vec::with_capacity(batch.stacks.len());
        for summary in batch.stacks {
            let r = summary.target_ref;
            let Some(target) = self.targets.get(&r) else {
                if !self.refused_targets.contains(&r) {
                    refusals.push(
                        Kind::Stacks,
                        r,
                        1,
                        format!("stack summary of target ref {r}: the ref was never declared on this stream"),
                    );
                }
                continue;
            };
            if summary.timestamp_ms < oldest || summary.timestamp_ms > newest {
                refusals.push(
                    Kind::Stacks,
                    r,
                    1,
                    format!(
                        "stack summary of target ref {r}: timestamp {} outside the window",
                        summary.timestamp_ms
                    ),
                );
                continue;
            }
            if let Err(reason) = check_stacks(&summary) {
                refusals.push(
                    Kind::Stacks,
                    r,
                    1,
                    format!("stack summary of target ref {r}: {reason}"),
                );
                continue;
            }
            self.metrics
                .stack_summary(&summary.source, !summary.skipped.is_empty());
            stacks.push(StackWrite {
                target: target.key.clone(),
                summary,
            });
        }
        let mut losses = Vec::with_capacity(batch.losses.len().min(16));
        for loss in &batch.losses {
            if losses.len() < 16 {
                losses.push((loss.reason.clone(), loss.batches, loss.bytes));
            }
            self.metrics
                .collector_lost(&loss.reason, loss.batches, loss.bytes);
            tracing::warn!(
                host = %self.host,
                reason = %peer(&loss.reason),
                batches = loss.batches,
                bytes = loss.bytes,
                from_ms = loss.from_ms,
                to_ms = loss.to_ms,
                "collector reports data lost before it could be sent"
            );
        }
        let mut gone = Vec::with_capacity(batch.gone_targets.len());
        for r in batch.gone_targets {
            if let Some(t) = self.targets.remove(&r) {
                // Forgotten by the session: the collector declares anew if it comes back.
                for s in t.series {
                    self.series.remove(&s);
                }
                gone.push(t.key);
            } else {
                self.refused_targets.remove(&r);
            }
        }
        Ok((
            IngestWrite {
                host: self.host.clone(),
                epoch: self.epoch,
                seq,
                received_ms: now_ms,
                targets,
                samples,
                gone,
                stacks,
                losses,
            },
            refusals,
        ))
    }

    fn refuse_series_quietly(&mut self, seq: u64, r: u32) -> Result<(), Status> {
        if self.refused_series.len() >= self.limits.max_series_per_stream {
            return Err(Status::resource_exhausted(format!(
                "batch {seq}: more than {} refused series on one stream",
                self.limits.max_series_per_stream
            )));
        }
        self.series.remove(&r);
        self.refused_series.insert(r);
        Ok(())
    }

    fn check_target(&self, upsert: &v1::TargetUpsert) -> Result<TargetUpdate, String> {
        let id = upsert.id.as_ref().ok_or("id is missing")?;
        if id.host != self.host {
            return Err(format!(
                "target on host {:?}, but this stream may only ingest for host {:?}",
                peer(&id.host).to_string(),
                self.host
            ));
        }
        if !self.targets.contains_key(&upsert.r#ref)
            && self.targets.len() >= self.limits.max_targets_per_stream
        {
            return Err(format!(
                "this stream has {} targets, the most one stream may (limits.max_targets_per_stream)",
                self.limits.max_targets_per_stream
            ));
        }
        rules::check_label_count(upsert.labels.len()).map_err(|e| format!("labels: {e}"))?;
        let mut labels = BTreeMap::new();
        for label in &upsert.labels {
            rules::check_label(&label.name, &label.value)
                .map_err(|e| format!("label {:?}: {e}", peer(&label.name).to_string()))?;
            labels.insert(label.name.clone(), label.value.clone());
        }
        // A setting this aggregator does not know (a newer collector's) or one too long
        // is left out alone; the target stays.
        let mut runtime_env = BTreeMap::new();
        for setting in &upsert.runtime_env {
            if rules::RUNTIME_ENV.contains(&setting.name.as_str())
                && rules::check_label_value(&setting.value).is_ok()
            {
                runtime_env.insert(setting.name.clone(), setting.value.clone());
            } else {
                tracing::debug!(host = %self.host, setting = %peer(&setting.name), "runtime setting left out");
            }
        }
        let coverage = upsert.coverage.clone().unwrap_or_default();
        Ok(TargetUpdate {
            key: TargetKey {
                host: id.host.clone(),
                pid: id.pid,
                start_ticks: id.start_ticks,
            },
            labels,
            coverage: Coverage {
                proc: coverage.proc,
                buildinfo: coverage.buildinfo,
                expvar: coverage.expvar,
                pprof: coverage.pprof,
                metrics: coverage.metrics,
                cgroup: coverage.cgroup,
                goroutineleak: coverage.goroutineleak,
                debug_addr: coverage.debug_addr,
            },
            start_time_ms: upsert.start_time_ms,
            runtime_env,
            build: None,
        })
    }

    fn check_series(&self, decl: &v1::SeriesDecl) -> Result<Arc<SeriesKey>, String> {
        let target = self.targets.get(&decl.target_ref).ok_or_else(|| {
            format!(
                "target ref {} was never declared on this stream",
                decl.target_ref
            )
        })?;
        rules::check_metric_name(&decl.metric)
            .map_err(|e| format!("metric {:?}: {e}", peer(&decl.metric).to_string()))?;
        let l = &self.limits;
        let known = self.series.contains_key(&decl.r#ref);
        if !known && self.series.len() >= l.max_series_per_stream {
            return Err(format!(
                "this stream has {} series, the most one stream may (limits.max_series_per_stream)",
                l.max_series_per_stream
            ));
        }
        if !known && target.series.len() >= l.max_series_per_target {
            return Err(format!(
                "target ref {} has {} series, the most one target may (limits.max_series_per_target)",
                decl.target_ref, l.max_series_per_target
            ));
        }
        rules::check_label_count(decl.labels.len()).map_err(|e| format!("labels: {e}"))?;
        let mut labels: Vec<(String, String)> = Vec::with_capacity(decl.labels.len());
        for label in &decl.labels {
            rules::check_label(&label.name, &label.value)
                .map_err(|e| format!("label {:?}: {e}", peer(&label.name).to_string()))?;
            labels.push((label.name.clone(), label.value.clone()));
        }
        labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = labels.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(format!("label {:?} appears twice", w[0].0));
        }
        Ok(Arc::new(SeriesKey {
            target: target.key.clone(),
            metric: decl.metric.clone(),
            labels,
        }))
    }
}

/// Checks a stack summary against the bounds; the reason names the one broken.
fn check_stacks(s: &v1::StackSummary) -> Result<(), String> {
    let long = |what: &str, text: &str| {
        (text.len() > MAX_STACK_STRING).then(|| {
            format!(
                "{what} is {} bytes, longer than {MAX_STACK_STRING}",
                text.len()
            )
        })
    };
    if s.groups.len() > MAX_STACK_GROUPS {
        return Err(format!(
            "{} groups, more than {MAX_STACK_GROUPS}",
            s.groups.len()
        ));
    }
    for what in [("source", &s.source), ("skipped", &s.skipped)] {
        if let Some(e) = long(what.0, what.1) {
            return Err(e);
        }
    }
    for g in &s.groups {
        if g.frames.len() > MAX_STACK_FRAMES {
            return Err(format!(
                "a group has {} frames, more than {MAX_STACK_FRAMES}",
                g.frames.len()
            ));
        }
        let strings = [("wait reason", &g.wait_reason), ("location", &g.location)];
        for (what, text) in strings
            .into_iter()
            .chain(g.frames.iter().map(|f| ("frame", f)))
        {
            if let Some(e) = long(what, text) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Checks build information against the bounds; the reason names the one broken.
fn check_build(b: v1::BuildInfo) -> Result<v1::BuildInfo, String> {
    if b.deps.len() > MAX_BUILD_DEPS {
        return Err(format!(
            "{} modules, more than {MAX_BUILD_DEPS}",
            b.deps.len()
        ));
    }
    if b.settings.len() > MAX_BUILD_SETTINGS {
        return Err(format!(
            "{} settings, more than {MAX_BUILD_SETTINGS}",
            b.settings.len()
        ));
    }
    let modules = b.main.iter().chain(&b.deps).flat_map(|m| {
        let replace = m.replace.as_deref();
        [&m.path, &m.version, &m.sum].into_iter().chain(
            replace
                .into_iter()
                .flat_map(|r| [&r.path, &r.version, &r.sum]),
        )
    });
    let settings = b.settings.iter().flat_map(|l| [&l.name, &l.value]);
    for text in [&b.go_version, &b.path]
        .into_iter()
        .chain(modules)
        .chain(settings)
    {
        if text.len() > MAX_BUILD_STRING {
            return Err(format!(
                "a string is {} bytes, longer than {MAX_BUILD_STRING}",
                text.len()
            ));
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests;
