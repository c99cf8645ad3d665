//! The `Query` service: what operators ask. Reads run off the async threads, each under
//! the configured query timeout; a read whose caller gave up (the timeout passed, the
//! client went away) is told to stop and does, instead of scanning on.

use std::time::Duration;

use goroscope_proto::Role;
use goroscope_proto::v1::{self, query_server::Query};
use tonic::{Request, Response, Status};

use super::{Shared, authorize};
use crate::storage::{Cancel, PageToken, Selector, Storage, TargetRecord, TargetView};

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
                debug_addr: t.coverage.debug_addr.clone(),
                ..Default::default()
            }),
            start_time_ms: t.start_time_ms,
            first_seen_ms: t.first_seen_ms,
            last_seen_ms: view.last_seen_ms,
            exited: t.exited,
            latest: view
                .latest
                .into_iter()
                .map(|(metric, timestamp_ms, value)| v1::MetricValue {
                    metric,
                    value,
                    timestamp_ms,
                    labels: Vec::new(),
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
                            value,
                        })
                        .collect(),
                    series_labels: Vec::new(),
                })
                .collect(),
        }))
    }

    async fn stacks(
        &self,
        _request: Request<v1::StacksRequest>,
    ) -> Result<Response<v1::StacksResponse>, Status> {
        Err(Status::unimplemented("stacks"))
    }

    async fn describe_target(
        &self,
        _request: Request<v1::DescribeTargetRequest>,
    ) -> Result<Response<v1::DescribeTargetResponse>, Status> {
        Err(Status::unimplemented("describe_target"))
    }

    type CaptureStream =
        tokio_stream::wrappers::ReceiverStream<Result<v1::CaptureProgress, Status>>;

    async fn capture(
        &self,
        _request: Request<v1::CaptureRequest>,
    ) -> Result<Response<Self::CaptureStream>, Status> {
        Err(Status::unimplemented("capture"))
    }

    async fn list_captures(
        &self,
        _request: Request<v1::ListCapturesRequest>,
    ) -> Result<Response<v1::ListCapturesResponse>, Status> {
        Err(Status::unimplemented("list_captures"))
    }

    type GetCaptureStream = tokio_stream::wrappers::ReceiverStream<Result<v1::CaptureData, Status>>;

    async fn get_capture(
        &self,
        _request: Request<v1::GetCaptureRequest>,
    ) -> Result<Response<Self::GetCaptureStream>, Status> {
        Err(Status::unimplemented("get_capture"))
    }
}
