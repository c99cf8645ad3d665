//! The `Query` service: what operators ask. Reads run off the async threads, each under
//! the configured query timeout; a read whose caller gave up (the timeout passed, the
//! client went away) is told to stop and does, instead of scanning on.

use std::time::Duration;

use goroscope_proto::Role;
use goroscope_proto::v1::{self, query_server::Query};
use tonic::{Request, Response, Status};

use super::{Shared, authorize};
use crate::expr::When;
use crate::storage::{
    Cancel, OneTarget, PageToken, Selector, SeriesLabels, Storage, TargetRecord, TargetView,
};
use goroscope_promql::QueryValue;

/// Time a client has to take each chunk of a capture it fetches.
const GET_CAPTURE_SEND: Duration = Duration::from_secs(60);

/// Targets per page when the request does not say; the most a page holds.
const DEFAULT_PAGE: usize = 1000;
const MAX_PAGE: usize = 10_000;

pub struct QueryService {
    shared: Shared,
    timeout: Duration,
}

impl QueryService {
    pub fn new(shared: Shared, timeout: Duration) -> QueryService {
        QueryService { shared, timeout }
    }

    /// Runs blocking storage work on the blocking pool, bounded by the query timeout;
    /// the work is cancelled when the timeout passes or this future is dropped.
    async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        F: FnOnce(Storage, &Cancel) -> Result<T, Status> + Send + 'static,
        T: Send + 'static,
    {
        struct CancelOnDrop(Cancel);
        impl Drop for CancelOnDrop {
            fn drop(&mut self) {
                self.0.cancel();
            }
        }
        let storage = self.shared.storage.clone();
        let cancel = Cancel::new();
        let _guard = CancelOnDrop(cancel.clone());
        match tokio::time::timeout(
            self.timeout,
            tokio::task::spawn_blocking(move || f(storage, &cancel)),
        )
        .await
        {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(Status::internal(format!("query task failed: {join}"))),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "query took longer than {}",
                humantime::format_duration(self.timeout)
            ))),
        }
    }
}

fn selector(matchers: Vec<v1::LabelMatcher>) -> Result<Selector, Status> {
    let mut out = Vec::with_capacity(matchers.len());
    for (i, m) in matchers.into_iter().enumerate() {
        if m.name.is_empty() {
            return Err(Status::invalid_argument(format!(
                "matchers[{i}].name is empty"
            )));
        }
        out.push((m.name, m.value));
    }
    Ok(Selector { matchers: out })
}

fn target_id(t: &TargetRecord) -> v1::TargetId {
    v1::TargetId {
        host: t.key.host.clone(),
        pid: t.key.pid,
        start_ticks: t.key.start_ticks,
    }
}

fn pairs<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> Vec<v1::Label> {
    pairs
        .into_iter()
        .map(|(name, value)| v1::Label {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

fn series_labels(labels: &SeriesLabels) -> Vec<v1::Label> {
    pairs(labels.iter().map(|(n, v)| (n, v)))
}

/// The one target a selector picks, or a status saying how many it picked.
fn one_target(storage: &Storage, selector: &Selector) -> Result<TargetView, Status> {
    storage.one_target(selector).map_err(|e| match e {
        OneTarget::None => Status::not_found("no target matches the selector"),
        OneTarget::Many(keys) => Status::invalid_argument(format!(
            "the selector matches more than one target ({}); narrow it, e.g. with pid=",
            keys.iter()
                .map(|k| format!("{} pid {}", k.host, k.pid))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    })
}

fn labels(t: &TargetRecord) -> Vec<v1::Label> {
    t.labels
        .iter()
        .map(|(name, value)| v1::Label {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

impl From<TargetView> for v1::TargetInfo {
    fn from(view: TargetView) -> v1::TargetInfo {
        let t = &view.record;
        v1::TargetInfo {
            id: Some(target_id(t)),
            labels: labels(t),
            coverage: Some(v1::Coverage {
                proc: t.coverage.proc,
                buildinfo: t.coverage.buildinfo,
                expvar: t.coverage.expvar,
                pprof: t.coverage.pprof,
                metrics: t.coverage.metrics,
                cgroup: t.coverage.cgroup,
                goroutineleak: t.coverage.goroutineleak,
                debug_addr: t.coverage.debug_addr.clone(),
            }),
            start_time_ms: t.start_time_ms,
            first_seen_ms: t.first_seen_ms,
            last_seen_ms: view.last_seen_ms,
            exited: t.exited,
            latest: view
                .latest
                .into_iter()
                .map(|l| v1::MetricValue {
                    labels: series_labels(&l.labels),
                    metric: l.metric,
                    value: Some(l.value),
                    timestamp_ms: l.timestamp_ms,
                })
                .collect(),
        }
    }
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn list_targets(
        &self,
        request: Request<v1::ListTargetsRequest>,
    ) -> Result<Response<v1::ListTargetsResponse>, Status> {
        authorize(&self.shared, "query", &request, Role::Operator)?;
        let req = request.into_inner();
        let selector = selector(req.matchers)?;
        let page_size = match req.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let after = match req.page_token.as_str() {
            "" => None,
            token => Some(PageToken::decode(token).ok_or_else(|| {
                Status::invalid_argument("page_token is not one this aggregator gave out")
            })?),
        };
        let (targets, next) = self
            .blocking(move |s, _| {
                Ok(s.list_targets(&selector, req.seen_since_ms, page_size, after.as_ref()))
            })
            .await?;
        Ok(Response::new(v1::ListTargetsResponse {
            targets: targets.into_iter().map(Into::into).collect(),
            next_page_token: next.map(|t| t.encode()).unwrap_or_default(),
        }))
    }

    async fn query_range(
        &self,
        request: Request<v1::QueryRangeRequest>,
    ) -> Result<Response<v1::QueryRangeResponse>, Status> {
        authorize(&self.shared, "query", &request, Role::Operator)?;
        let req = request.into_inner();
        if req.metric.is_empty() {
            return Err(Status::invalid_argument("metric is empty"));
        }
        if req.start_ms > req.end_ms {
            return Err(Status::invalid_argument(format!(
                "start_ms {} is after end_ms {}",
                req.start_ms, req.end_ms
            )));
        }
        let selector = selector(req.matchers)?;
        let series = self
            .blocking(move |s, cancel| {
                s.query_range(&req.metric, &selector, req.start_ms, req.end_ms, cancel)
                    .map_err(Status::from)
            })
            .await?;
        Ok(Response::new(v1::QueryRangeResponse {
            series: series
                .into_iter()
                .map(|sd| v1::Series {
                    target: Some(target_id(&sd.target)),
                    labels: labels(&sd.target),
                    metric: sd.metric,
                    samples: sd
                        .points
                        .into_iter()
                        .map(|(timestamp_ms, value)| v1::Sample {
                            timestamp_ms,
                            value: Some(value),
                        })
                        .collect(),
                    series_labels: series_labels(&sd.labels),
                })
                .collect(),
        }))
    }

    async fn stacks(
        &self,
        request: Request<v1::StacksRequest>,
    ) -> Result<Response<v1::StacksResponse>, Status> {
        authorize(&self.shared, "query", &request, Role::Operator)?;
        let req = request.into_inner();
        let selector = selector(req.matchers)?;
        let at = (req.at_ms != 0).then_some(req.at_ms);
        let from = (req.from_ms != 0).then_some(req.from_ms);
        if let (Some(from), Some(at)) = (from, at)
            && from > at
        {
            return Err(Status::invalid_argument(format!(
                "from_ms {from} is after at_ms {at}"
            )));
        }
        let response = self
            .blocking(move |s, cancel| {
                // Up to five bounded scans: stop between them once the caller gave up.
                let go_on = || {
                    if cancel.is_cancelled() {
                        Err(Status::cancelled("query cancelled"))
                    } else {
                        Ok(())
                    }
                };
                let view = one_target(&s, &selector)?;
                let key = view.record.key.clone();
                let found = s.stacks_at(&key, at, |src| src != LEAK_SOURCE)?;
                go_on()?;
                let leak = s.stacks_at(&key, at, |src| src == LEAK_SOURCE)?;
                go_on()?;
                let leaked: std::collections::HashSet<Vec<String>> = leak
                    .summary
                    .map(|l| l.groups.into_iter().map(|g| g.frames).collect())
                    .unwrap_or_default();
                let mut response = v1::StacksResponse {
                    target: Some(view.into()),
                    ..Default::default()
                };
                if let Some((ts, why)) = found.last_skip {
                    response.skipped = why;
                    response.skipped_ms = ts;
                }
                let Some(mut summary) = found.summary else {
                    return Ok(response);
                };
                if summary.source == GROUPED_SOURCE
                    && let Some(full) = s.stacks_at(&key, at, |src| src == FULL_SOURCE)?.summary
                {
                    add_wait_reasons(&mut summary, &full);
                }
                let earlier = match from {
                    Some(from) => {
                        let source = summary.source.clone();
                        let mut e = s.stacks_at(&key, Some(from), |src| src == source)?.summary;
                        if let Some(e) = &mut e
                            && e.source == GROUPED_SOURCE
                            && let Some(full) = s
                                .stacks_at(&key, Some(from), |src| src == FULL_SOURCE)?
                                .summary
                        {
                            add_wait_reasons(e, &full);
                        }
                        e
                    }
                    None => None,
                };
                response.timestamp_ms = summary.timestamp_ms;
                response.total = summary.total;
                response.omitted = summary.omitted;
                response.source = summary.source.clone();
                response.signatures = signatures(&summary, earlier.as_ref(), &leaked);
                if let Some(e) = earlier {
                    response.from_timestamp_ms = e.timestamp_ms;
                    response.from_total = e.total;
                }
                Ok(response)
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn describe_target(
        &self,
        request: Request<v1::DescribeTargetRequest>,
    ) -> Result<Response<v1::DescribeTargetResponse>, Status> {
        authorize(&self.shared, "query", &request, Role::Operator)?;
        let selector = selector(request.into_inner().matchers)?;
        let response = self
            .blocking(move |s, _| {
                let view = one_target(&s, &selector)?;
                let build = s.build(&view.record)?;
                let runtime_env = pairs(&view.record.runtime_env);
                Ok(v1::DescribeTargetResponse {
                    target: Some(view.into()),
                    build,
                    runtime_env,
                })
            })
            .await?;
        Ok(Response::new(response))
    }

    type CaptureStream =
        tokio_stream::wrappers::ReceiverStream<Result<v1::CaptureProgress, Status>>;

    async fn capture(
        &self,
        request: Request<v1::CaptureRequest>,
    ) -> Result<Response<Self::CaptureStream>, Status> {
        let identity = authorize(&self.shared, "query", &request, Role::Operator)?;
        let req = request.into_inner();
        let hub = self.shared.captures.clone();
        let kind = v1::CaptureKind::try_from(req.kind)
            .ok()
            .filter(|k| *k != v1::CaptureKind::Unspecified)
            .ok_or_else(|| Status::invalid_argument("kind is not a capture kind"))?;
        let seconds = match (kind, req.seconds) {
            (v1::CaptureKind::Trace, 0) => 5,
            (v1::CaptureKind::Cpu, 0) => 10,
            (v1::CaptureKind::Trace | v1::CaptureKind::Cpu, s) => s,
            _ => 0,
        };
        if seconds > hub.config.max_seconds {
            return Err(Status::invalid_argument(format!(
                "seconds {seconds} is more than captures.max_seconds ({})",
                hub.config.max_seconds
            )));
        }
        let selector = selector(req.matchers)?;
        let view = self.blocking(move |s, _| one_target(&s, &selector)).await?;
        if view.record.exited {
            return Err(Status::failed_precondition(format!(
                "pid {} on {} has exited",
                view.record.key.pid, view.record.key.host
            )));
        }
        if !view.record.coverage.pprof {
            return Err(Status::failed_precondition(format!(
                "pid {} on {} serves no net/http/pprof endpoint the collector found",
                view.record.key.pid, view.record.key.host
            )));
        }
        let key = view.record.key.clone();
        let labels = labels(&view.record);
        let mut ticket = hub.ask(&key, kind, seconds).await?;
        tracing::info!(identity = %identity, host = %key.host, pid = key.pid, kind = kind.as_str_name(), seconds, "capture asked");
        let storage = self.shared.storage.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let requested_ms = goroscope_proto::unix_ms();
        tokio::spawn(async move {
            let status = |status: String, bytes: u64| {
                Ok(v1::CaptureProgress {
                    status,
                    bytes_received: bytes,
                    stored: None,
                })
            };
            let _ = tx
                .send(status(
                    format!(
                        "asked the collector on {} for a {} of pid {}{}",
                        key.host,
                        kind.as_str_name().to_ascii_lowercase(),
                        key.pid,
                        if seconds > 0 {
                            format!(" ({seconds} s)")
                        } else {
                            String::new()
                        }
                    ),
                    0,
                ))
                .await;
            let progress_tx = tx.clone();
            let received = super::capture::receive(
                &mut ticket,
                hub.config.max_bytes,
                hub.deadline(seconds),
                |bytes| {
                    let _ = progress_tx.try_send(status(format!("received {bytes} bytes"), bytes));
                },
            )
            .await;
            let (data, sha256) = match received {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(host = %key.host, pid = key.pid, reason = %e.message(), "capture failed");
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let info = v1::CaptureInfo {
                id: super::capture::new_id(),
                target: Some(v1::TargetId {
                    host: key.host.clone(),
                    pid: key.pid,
                    start_ticks: key.start_ticks,
                }),
                labels,
                kind: kind.into(),
                seconds,
                requested_ms,
                completed_ms: goroscope_proto::unix_ms(),
                requested_by: identity.uri(),
                size_bytes: data.len() as u64,
                sha256,
            };
            let (retention, budget) = (hub.config.retention, hub.config.max_total_bytes);
            let stored = {
                let info = info.clone();
                tokio::task::spawn_blocking(move || {
                    storage.store_capture(&info, &data)?;
                    // The budget holds after every capture, not only at housekeeping.
                    let before =
                        goroscope_proto::unix_ms().saturating_sub(retention.as_millis() as i64);
                    storage.forget_captures(before, budget).map(drop)
                })
                .await
            };
            let result = match stored {
                Ok(Ok(())) => Ok(v1::CaptureProgress {
                    status: format!("stored as {}", info.id),
                    bytes_received: info.size_bytes,
                    stored: Some(info),
                }),
                Ok(Err(e)) => Err(Status::from(e)),
                Err(e) => Err(Status::internal(format!("store task: {e}"))),
            };
            let _ = tx.send(result).await;
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn list_captures(
        &self,
        request: Request<v1::ListCapturesRequest>,
    ) -> Result<Response<v1::ListCapturesResponse>, Status> {
        authorize(&self.shared, "query", &request, Role::Operator)?;
        let req = request.into_inner();
        let selector = selector(req.matchers)?;
        let limit = match req.limit {
            0 => 100,
            n => (n as usize).min(10_000),
        };
        let captures = self
            .blocking(move |s, _| {
                s.list_captures(limit, |info| capture_matches(&selector, info))
                    .map_err(Status::from)
            })
            .await?;
        Ok(Response::new(v1::ListCapturesResponse { captures }))
    }

    type GetCaptureStream = tokio_stream::wrappers::ReceiverStream<Result<v1::CaptureData, Status>>;

    async fn get_capture(
        &self,
        request: Request<v1::GetCaptureRequest>,
    ) -> Result<Response<Self::GetCaptureStream>, Status> {
        authorize(&self.shared, "query", &request, Role::Operator)?;
        let id = request.into_inner().id;
        if !crate::storage::captures::valid_id(&id) {
            return Err(Status::invalid_argument(
                "id is not a capture id (16 hex digits, as goroscope captures lists them)",
            ));
        }
        let storage = self.shared.storage.clone();
        let info = {
            let (s, id) = (storage.clone(), id.clone());
            tokio::task::spawn_blocking(move || s.capture_info(&id))
                .await
                .map_err(|e| Status::internal(e.to_string()))??
        }
        .ok_or_else(|| Status::not_found(format!("no capture {id}")))?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        // Chunk by chunk, each read off the async threads, each sent within a deadline: a
        // client that stops reading holds no thread and no iterator, and is dropped.
        tokio::spawn(async move {
            let mut info = Some(info);
            let mut index = 0u32;
            loop {
                let (s, id2) = (storage.clone(), id.clone());
                let chunk =
                    match tokio::task::spawn_blocking(move || s.capture_chunk(&id2, index)).await {
                        Ok(Ok(c)) => c,
                        Ok(Err(e)) => {
                            let _ = tx.send(Err(Status::from(e))).await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                            return;
                        }
                    };
                let last = chunk.is_none();
                if last && info.is_none() {
                    return;
                }
                let message = v1::CaptureData {
                    info: info.take(),
                    data: chunk.unwrap_or_default(),
                };
                match tokio::time::timeout(GET_CAPTURE_SEND, tx.send(Ok(message))).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
                if last {
                    return;
                }
                index += 1;
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn anomalies(
        &self,
        request: Request<v1::AnomaliesRequest>,
    ) -> Result<Response<v1::AnomaliesResponse>, Status> {
        authorize(&self.shared, "query", &request, Role::Operator)?;
        let req = request.into_inner();
        let selector = selector(req.matchers)?;
        let limit = limit_or_default(req.limit);
        let all = req.all;
        let anomalies = self
            .blocking(move |s, cancel| {
                let mut seen = 0usize;
                let out = s.list_anomalies(limit, |a| {
                    seen += 1;
                    !cancel.is_cancelled()
                        && (all || a.resolved_ms == 0)
                        && anomaly_matches(&selector, a)
                })?;
                if cancel.is_cancelled() {
                    return Err(Status::cancelled("query cancelled"));
                }
                Ok(out)
            })
            .await?;
        Ok(Response::new(v1::AnomaliesResponse { anomalies }))
    }

    async fn incidents(
        &self,
        request: Request<v1::IncidentsRequest>,
    ) -> Result<Response<v1::IncidentsResponse>, Status> {
        authorize(&self.shared, "query", &request, Role::Operator)?;
        let req = request.into_inner();
        let limit = limit_or_default(req.limit);
        let all = req.all;
        let mut incidents = self
            .blocking(move |s, cancel| {
                Ok(s.list_incidents(limit, |i| {
                    !cancel.is_cancelled() && (all || i.resolved_ms == 0)
                })?)
            })
            .await?;
        // Most severe first; open before resolved; then newest.
        incidents.sort_by(|a, b| {
            (a.resolved_ms != 0)
                .cmp(&(b.resolved_ms != 0))
                .then(b.severity.total_cmp(&a.severity))
                .then(b.opened_ms.cmp(&a.opened_ms))
        });
        Ok(Response::new(v1::IncidentsResponse { incidents }))
    }

    async fn evaluate(
        &self,
        request: Request<v1::EvaluateRequest>,
    ) -> Result<Response<v1::EvaluateResponse>, Status> {
        authorize(&self.shared, "query", &request, Role::Operator)?;
        let req = request.into_inner();
        let when = if req.step_ms > 0 {
            if req.start_ms > req.end_ms {
                return Err(Status::invalid_argument(format!(
                    "start_ms {} is after end_ms {}",
                    req.start_ms, req.end_ms
                )));
            }
            When::Range {
                start_ms: req.start_ms,
                end_ms: req.end_ms,
                step_ms: req.step_ms,
            }
        } else {
            When::Instant(req.end_ms)
        };
        let value = self
            .blocking(move |s, cancel| {
                crate::expr::evaluate(&s, cancel, &req.query, when, crate::expr::limits(&s))
                    .map_err(|e| match e.error_type() {
                        "bad_data" => Status::invalid_argument(e.to_string()),
                        "canceled" => Status::cancelled(e.to_string()),
                        _ => Status::failed_precondition(e.to_string()),
                    })
            })
            .await?;
        Ok(Response::new(evaluate_response(value)))
    }

    async fn status(
        &self,
        request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        authorize(&self.shared, "query", &request, Role::Operator)?;
        let open = self.shared.streams.open();
        let now = goroscope_proto::unix_ms();
        let (
            census,
            hosts,
            (compacted, in_head),
            (head_bytes, disk_bytes),
            (targets, series),
            rate,
        ) = self
            .blocking(move |s, _| {
                Ok((
                    s.census(now - LIVE_WITHIN_MS),
                    s.hosts(),
                    s.samples_stored(),
                    s.usage(),
                    s.sizes(),
                    s.ingest_rate(),
                ))
            })
            .await?;
        let mut collectors: Vec<v1::CollectorStatus> = hosts
            .into_iter()
            .map(|(host, h)| v1::CollectorStatus {
                streams: open.get(&host).copied().unwrap_or(0) as u32,
                targets: census.hosts.get(&host).copied().unwrap_or(0) as u64,
                host,
                first_ms: h.first_ms,
                last_heard_ms: h.last_ms,
                batches: h.batches,
                samples: h.samples,
                gaps: h.gaps,
                missed: h.missed,
                losses: h
                    .losses
                    .into_iter()
                    .map(|(reason, (batches, bytes))| v1::LossCount {
                        reason,
                        batches,
                        bytes,
                    })
                    .collect(),
            })
            .collect();
        // Connected before its first batch was stored.
        for (host, streams) in open {
            if !collectors.iter().any(|c| c.host == host) {
                collectors.push(v1::CollectorStatus {
                    host,
                    streams: streams as u32,
                    ..Default::default()
                });
            }
        }
        collectors.sort_by(|a, b| a.host.cmp(&b.host));
        Ok(Response::new(v1::StatusResponse {
            aggregator_version: env!("CARGO_PKG_VERSION").into(),
            samples_stored: compacted + in_head,
            samples_in_head: in_head,
            disk_bytes,
            head_bytes: head_bytes as u64,
            series: series as u64,
            targets: targets as u64,
            live_targets: census.live as u64,
            ingest_samples_per_second: rate,
            collectors,
            services: census
                .services
                .into_iter()
                .map(|(service, (targets, live))| v1::ServiceStatus {
                    service,
                    targets: targets as u64,
                    live: live as u64,
                })
                .collect(),
            coverage: census
                .coverage
                .into_iter()
                .map(|(source, targets)| v1::SourceCoverage {
                    source: source.into(),
                    targets: targets as u64,
                })
                .collect(),
        }))
    }

    async fn get_incident(
        &self,
        request: Request<v1::GetIncidentRequest>,
    ) -> Result<Response<v1::Incident>, Status> {
        authorize(&self.shared, "query", &request, Role::Operator)?;
        let id = request.into_inner().id;
        if !crate::storage::captures::valid_id(&id) {
            return Err(Status::invalid_argument(
                "id is not an incident id (16 hex digits, as goroscope incidents lists them)",
            ));
        }
        let found = {
            let id = id.clone();
            self.blocking(move |s, _| Ok(s.incident(&id)?)).await?
        };
        found
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no incident {id}")))
    }
}

/// The sources of summaries: grouped stacks (no wait reasons), every goroutine, and
/// the goroutineleak profile.
const GROUPED_SOURCE: &str = "debug=1";
const FULL_SOURCE: &str = "debug=2";
const LEAK_SOURCE: &str = "goroutineleak";

/// Gives the groups of a debug=1 summary the wait reason and wait times of the newest
/// debug=2 summary's group with the same frames (its largest, if several), so that
/// every interval's summary says what its goroutines wait on.
fn add_wait_reasons(grouped: &mut v1::StackSummary, full: &v1::StackSummary) {
    use std::collections::HashMap;
    let mut by_frames: HashMap<&[String], &v1::StackGroup> = HashMap::new();
    for g in &full.groups {
        let e = by_frames.entry(&g.frames).or_insert(g);
        if g.count > e.count {
            *e = g;
        }
    }
    for g in &mut grouped.groups {
        if g.wait_reason.is_empty()
            && let Some(f) = by_frames.get(g.frames.as_slice())
        {
            g.wait_reason = f.wait_reason.clone();
            g.max_wait_s = f.max_wait_s;
            g.median_wait_s = f.median_wait_s;
        }
    }
}

/// The signatures of a summary, largest first; with `earlier`, also those only in it
/// (count 0), and each one's count there.
fn signatures(
    later: &v1::StackSummary,
    earlier: Option<&v1::StackSummary>,
    leaked: &std::collections::HashSet<Vec<String>>,
) -> Vec<v1::StackSignature> {
    use std::collections::HashMap;
    // By frames: the wait reason of a signature may differ between two summaries (a
    // goroutine moves from one wait to another in the same code).
    let key = |g: &v1::StackGroup| g.frames.clone();
    let before: HashMap<_, &v1::StackGroup> = earlier
        .map(|e| e.groups.iter().map(|g| (key(g), g)).collect())
        .unwrap_or_default();
    let mut out: Vec<v1::StackSignature> = later
        .groups
        .iter()
        .map(|g| v1::StackSignature {
            wait_reason: g.wait_reason.clone(),
            frames: g.frames.clone(),
            count: g.count,
            max_wait_s: g.max_wait_s,
            median_wait_s: g.median_wait_s,
            first_seen_ms: g.first_seen_ms,
            last_seen_ms: later.timestamp_ms,
            location: g.location.clone(),
            from_count: before.get(&key(g)).map_or(0, |b| b.count),
            leaked: leaked.contains(&g.frames),
        })
        .collect();
    if let Some(e) = earlier {
        let now: std::collections::HashSet<_> = later.groups.iter().map(key).collect();
        out.extend(e.groups.iter().filter(|g| !now.contains(&key(g))).map(|g| {
            v1::StackSignature {
                wait_reason: g.wait_reason.clone(),
                frames: g.frames.clone(),
                count: 0,
                max_wait_s: 0.0,
                median_wait_s: 0.0,
                first_seen_ms: g.first_seen_ms,
                last_seen_ms: e.timestamp_ms,
                location: g.location.clone(),
                from_count: g.count,
                leaked: leaked.contains(&g.frames),
            }
        }));
        // A diff reads best by growth.
        out.sort_by_key(|s| std::cmp::Reverse(s.count as i128 - s.from_count as i128));
    } else {
        out.sort_by_key(|s| std::cmp::Reverse(s.count));
    }
    out
}

/// Anomalies or incidents one query returns when it does not say; the most.
const DEFAULT_LIST: usize = 1000;
const MAX_LIST: usize = 10_000;

fn limit_or_default(limit: u32) -> usize {
    match limit {
        0 => DEFAULT_LIST,
        n => (n as usize).min(MAX_LIST),
    }
}

fn result_series(labels: goroscope_promql::Labels, samples: Vec<(i64, f64)>) -> v1::ResultSeries {
    v1::ResultSeries {
        labels: labels
            .0
            .into_iter()
            .map(|(name, value)| v1::Label { name, value })
            .collect(),
        samples: samples
            .into_iter()
            .map(|(timestamp_ms, value)| v1::Sample {
                timestamp_ms,
                value: Some(value),
            })
            .collect(),
    }
}

fn evaluate_response(value: QueryValue) -> v1::EvaluateResponse {
    match value {
        QueryValue::Scalar { t_ms, value } => v1::EvaluateResponse {
            result_type: "scalar".into(),
            scalar: Some(value),
            time_ms: t_ms,
            ..Default::default()
        },
        QueryValue::String { t_ms, value } => v1::EvaluateResponse {
            result_type: "string".into(),
            string: value,
            time_ms: t_ms,
            ..Default::default()
        },
        QueryValue::Vector(samples) => v1::EvaluateResponse {
            result_type: "vector".into(),
            series: samples
                .into_iter()
                .map(|s| result_series(s.labels, vec![(s.t_ms, s.value)]))
                .collect(),
            ..Default::default()
        },
        QueryValue::Matrix(series) => v1::EvaluateResponse {
            result_type: "matrix".into(),
            series: series
                .into_iter()
                .map(|s| result_series(s.labels, s.samples))
                .collect(),
            ..Default::default()
        },
    }
}

/// A target seen this recently (and not exited) counts as live in a status report.
const LIVE_WITHIN_MS: i64 = 5 * 60 * 1000;

/// Whether an anomaly's target matches the selector (its id and the labels it had).
fn anomaly_matches(selector: &Selector, a: &v1::Anomaly) -> bool {
    recorded_target_matches(selector, a.target.as_ref(), &a.labels)
}

/// Whether a stored capture's target matches the selector (its id and the labels it had).
fn capture_matches(selector: &Selector, info: &v1::CaptureInfo) -> bool {
    recorded_target_matches(selector, info.target.as_ref(), &info.labels)
}

/// Whether a target a record names (by id, with the labels it had then) matches.
fn recorded_target_matches(
    selector: &Selector,
    id: Option<&v1::TargetId>,
    labels: &[v1::Label],
) -> bool {
    let id = id.cloned().unwrap_or_default();
    selector
        .matchers
        .iter()
        .all(|(name, value)| match name.as_str() {
            "host" => id.host == *value,
            "pid" => value.parse::<u32>().is_ok_and(|pid| pid == id.pid),
            _ => labels.iter().any(|l| l.name == *name && l.value == *value),
        })
}
