//! The goroscope aggregator: accepts collector streams over mTLS gRPC, stores their
//! samples in an embedded RocksDB, and answers operators' queries.
//!
//! - [`config`]: layered settings.
//! - [`grpc`]: the TLS accept loop and the `Ingest` and `Query` services.
//! - [`storage`]: time series storage on RocksDB, behind its own small API.
//! - [`metrics`]: the aggregator's own metrics and health.
//! - [`notify`]: incident notifications to a webhook and to Alertmanager
//!   (docs/notifications.md).
#![forbid(unsafe_code)]

pub mod config;
pub mod detect;
pub mod expr;
pub mod grpc;
pub mod http_api;
pub mod metrics;
pub mod notify;
pub mod storage;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::AggregatorConfig;
use crate::metrics::Metrics;
use crate::storage::{Storage, StorageOptions};

/// How often targets past the retention are looked for.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(600);

/// Opens storage, binds the listeners and serves until `shutdown` is cancelled; then
/// gives open requests `grace` to finish, stops the storage writer and returns. Returns
/// an error if the storage writer stops on its own. `on_listening` is called with the
/// bound gRPC address (useful with port 0).
pub async fn run(
    config: AggregatorConfig,
    shutdown: CancellationToken,
    grace: Duration,
    on_listening: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    // Certificates first: a missing or wrong file stops the start before anything else
    // (the database, the port) is taken.
    let files = config.tls_files();
    // Renewed certificates are picked up without a restart: the accept loop takes the
    // current configuration for every handshake.
    let tls = goroscope_proto::tls::reloading_server_config(&files).context("tls")?;
    let tls_rx = tls.subscribe();
    let data_dir = config.data_dir.clone();
    let options = StorageOptions {
        sync_writes: config.storage.sync_writes,
        max_query_samples: config.storage.max_query_samples,
        retention: config.storage.retention,
        block: config.storage.block,
        flush_grace: config.storage.flush_grace,
        head_max_bytes: config.storage.head_max_bytes,
        writers: config.storage.writers,
        export: config.export.enabled(),
        export_max_bytes: config.export.queue_max_bytes,
        min_free_bytes: config.storage.min_free_bytes,
        ..StorageOptions::default()
    };
    let (storage, writer, report) =
        tokio::task::spawn_blocking(move || Storage::open(&data_dir, options))
            .await
            .context("open storage")??;
    if report.skipped > 0 {
        tracing::warn!(
            skipped = report.skipped,
            "opened the database without the records that could not be decoded"
        );
    }
    tracing::info!(
        targets = report.targets,
        series = report.series,
        "database open"
    );
    let metrics = Arc::new(Metrics::new());
    metrics.watch_storage(storage.clone());
    // One exporter per writer shard: a series' samples leave in order.
    let mut exporters = Vec::new();
    for queue in storage.export_queues() {
        let exporter = goroscope_remote_write::spawn(&config.export, queue.clone())
            .context("start the remote-write export")?;
        queue.on_queued(exporter.waker());
        exporters.push((exporter, queue));
    }
    if !exporters.is_empty() {
        tracing::info!(
            queues = exporters.len(),
            "exporting every stored sample over remote write"
        );
        metrics.watch_exporters(
            exporters
                .iter()
                .map(|(e, q)| metrics::ExportSource {
                    stats: e.stats().clone(),
                    queue: q.clone(),
                })
                .collect(),
        );
    }
    {
        let metrics = metrics.clone();
        goroscope_daemon::watch_certificate_expiry(tls.subscribe(), files, move |f, at| {
            metrics.certificate_expires(f, at)
        });
    }

    let result = serve_all(
        &config,
        tls_rx,
        storage.clone(),
        metrics,
        shutdown,
        grace,
        on_listening,
    )
    .await;
    // Exporters get the grace to finish what they are sending (the rest stays queued).
    for (exporter, _) in exporters {
        exporter.shutdown(grace).await;
    }
    // The writer is joined before the database can be torn down.
    drop(storage);
    tokio::task::spawn_blocking(move || writer.stop())
        .await
        .context("stop the storage writer")?;
    result
}

async fn serve_all(
    config: &AggregatorConfig,
    tls_rx: tokio::sync::watch::Receiver<Arc<tokio_rustls::rustls::ServerConfig>>,
    storage: Storage,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    grace: Duration,
    on_listening: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    let addr = listener
        .local_addr()
        .context("local address of the listener")?;
    // Stops the helper tasks when serving ends, however it ends.
    let tasks = shutdown.child_token();
    let _stop_tasks = tasks.clone().drop_guard();
    if let Some(metrics_addr) = config.metrics_listen {
        let listener = goroscope_daemon::http::bind(metrics_addr).await?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(metrics_addr), "metrics listening");
        tokio::spawn(goroscope_daemon::http::serve(
            listener,
            metrics.clone(),
            tasks.clone(),
        ));
    }
    if let Some(http_addr) = config.http_listen {
        let listener = http_api::bind(http_addr).await?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(http_addr), "prometheus http api listening");
        tokio::spawn(http_api::serve(
            listener,
            tls_rx.clone(),
            storage.clone(),
            config.limits.query_timeout,
            tasks.clone(),
        ));
    }
    on_listening(addr);

    let housekeeping = {
        let storage = storage.clone();
        let tasks = tasks.clone();
        let captures = config.captures.clone();
        let diagnoses_retention = config.detection.retention;
        async move {
            let mut every = tokio::time::interval(HOUSEKEEPING_EVERY);
            loop {
                tokio::select! {
                    _ = tasks.cancelled() => return,
                    _ = every.tick() => {}
                }
                if let Err(e) = storage.forget_expired(goroscope_proto::unix_ms()).await {
                    tracing::warn!(error = %e, "forgetting targets past the retention failed");
                }
                let s = storage.clone();
                let before = goroscope_proto::unix_ms()
                    .saturating_sub(captures.retention.as_millis() as i64);
                let budget = captures.max_total_bytes;
                match tokio::task::spawn_blocking(move || s.forget_captures(before, budget)).await {
                    Ok(Err(e)) => tracing::warn!(error = %e, "deleting old captures failed"),
                    Err(e) => tracing::warn!(error = %e, "deleting old captures failed"),
                    Ok(Ok(_)) => {}
                }
                let s = storage.clone();
                let before = goroscope_proto::unix_ms()
                    .saturating_sub(diagnoses_retention.as_millis() as i64);
                match tokio::task::spawn_blocking(move || s.forget_diagnoses(before)).await {
                    Ok(Err(e)) => tracing::warn!(error = %e, "deleting old anomalies failed"),
                    Err(e) => tracing::warn!(error = %e, "deleting old anomalies failed"),
                    Ok(Ok(_)) => {}
                }
            }
        }
    };
    tokio::spawn(housekeeping);

    let captures = grpc::capture::CaptureHub::new(config.captures.clone());
    let detection = if config.detection.enabled {
        let notifier =
            notify::Notifier::start(config.notify.clone(), metrics.clone(), tasks.clone())
                .context("start the notifier")?;
        let (detector, guard) = start_detection(config, &storage, &captures, &tasks, notifier)?;
        metrics.watch_detector(detector.stats().clone());
        Some((detector, guard))
    } else {
        None
    };
    let shared = grpc::Shared {
        storage: storage.clone(),
        metrics: metrics.clone(),
        conns: grpc::ConnTable::default(),
        streams: grpc::HostStreams::default(),
        captures,
        detector: detection.as_ref().map(|(d, _)| d.clone()),
    };
    let server = grpc::serve(listener, tls_rx, config, shared, shutdown.clone(), grace);
    let result = tokio::select! {
        result = server => result.map_err(anyhow::Error::from),
        reason = storage.failed() => {
            metrics.writer_failed(reason.clone());
            shutdown.cancel();
            Err(anyhow::anyhow!("storage writer stopped: {reason}"))
        }
    };
    // The detector thread writes anomalies: it stops before the storage does.
    if let Some((detector, guard)) = detection {
        drop(detector);
        tokio::task::spawn_blocking(move || guard.stop())
            .await
            .context("stop the detector")?;
    }
    result
}

/// Capture asks waiting for the capture task, at most; more are refused.
const CAPTURE_ASKS: usize = 64;
/// Tries of one capture an incident asked for, when the limits say "not now".
const CAPTURE_ATTEMPTS: u32 = 4;

/// Starts the detector thread, and the task that takes the captures it asks for.
fn start_detection(
    config: &AggregatorConfig,
    storage: &Storage,
    captures: &Arc<grpc::capture::CaptureHub>,
    tasks: &CancellationToken,
    notifier: notify::Notifier,
) -> anyhow::Result<(detect::engine::Detector, detect::engine::DetectorGuard)> {
    use detect::incidents::{CaptureAsk, Change};
    let (ask_tx, mut ask_rx) = tokio::sync::mpsc::channel::<CaptureAsk>(CAPTURE_ASKS);
    let hooks = detect::engine::Hooks {
        notify: Box::new(
            move |change: Change, incident: &goroscope_proto::v1::Incident| {
                notifier.send(notify::Event {
                    change,
                    incident: incident.clone(),
                });
            },
        ),
        capture: Box::new(move |ask: CaptureAsk| {
            if ask_tx.try_send(ask).is_err() {
                tracing::warn!("too many captures asked for incidents at once; one is skipped");
            }
        }),
    };
    let (detector, guard) = detect::engine::start(config.detection.clone(), storage.clone(), hooks)
        .context("start the detector thread")?;
    let (hub, storage, tasks, to_detector) = (
        captures.clone(),
        storage.clone(),
        tasks.clone(),
        detector.clone(),
    );
    tokio::spawn(async move {
        loop {
            let ask = tokio::select! {
                _ = tasks.cancelled() => return,
                ask = ask_rx.recv() => match ask { Some(a) => a, None => return },
            };
            let (hub, storage, to_detector) = (hub.clone(), storage.clone(), to_detector.clone());
            // Each capture in its own task: the hub's limits pace them, not this loop.
            tokio::spawn(async move {
                tokio::time::sleep(ask.after).await;
                // Incidents opening together meet the hub's limits: wait and try again
                // a few times, at the pace of the per-target interval.
                let mut attempt = 0;
                let result = loop {
                    attempt += 1;
                    let result = grpc::capture::take(
                        &hub,
                        &storage,
                        &ask.target,
                        ask.labels.clone(),
                        ask.kind,
                        ask.seconds,
                        "goroscope-detector",
                    )
                    .await;
                    let busy = matches!(&result, Err(s) if s.code() == tonic::Code::ResourceExhausted
                        || s.message().contains("already running"));
                    if !busy || attempt >= CAPTURE_ATTEMPTS {
                        break result;
                    }
                    tokio::time::sleep(hub.config.min_interval_per_target + Duration::from_secs(5))
                        .await;
                };
                let (capture, refused) = match result {
                    Ok(info) => (Some(info), String::new()),
                    Err(status) => {
                        tracing::info!(incident = %ask.incident, host = %ask.target.host, pid = ask.target.pid, reason = %status.message(), "capture for an incident not taken");
                        (None, status.message().to_owned())
                    }
                };
                to_detector.captured(
                    ask.incident.clone(),
                    goroscope_proto::v1::IncidentCapture {
                        capture,
                        control: ask.control,
                        refused,
                        kind: ask.kind.into(),
                        target: Some(goroscope_proto::v1::TargetId {
                            host: ask.target.host.clone(),
                            pid: ask.target.pid,
                            start_ticks: ask.target.start_ticks,
                        }),
                    },
                );
            });
        }
    });
    Ok((detector, guard))
}
