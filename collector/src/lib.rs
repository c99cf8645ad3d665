//! The goroscope collector: finds the Go processes of its host, samples their vital
//! signs every interval, and streams them to the aggregator over mTLS gRPC.
//!
//! - [`config`]: layered settings.
//! - [`discovery`]: which processes are Go programs (their executable's Go build info).
//! - [`kube`]: pod names, namespaces and labels from the Kubernetes API server.
//! - [`sources`]: one module per source (`/proc`, expvar, pprof, build info).
//! - [`sources`]: one module per source (`/proc`, expvar, pprof, `/metrics`, build info).
//! - [`sampler`]: one scrape of every target per interval.
//! - [`model`]: what a scrape is made of.
//! - [`outbox`]: scrapes kept until acknowledged.
//! - [`spool`]: the disk spool behind the outbox, its record format and its thread.
//! - [`encoder`]: scrapes into batches that fit, with the stream's declarations.
//! - [`sender`]: the ingest stream, reconnects and backoff.
//! - [`metrics`]: the collector's own metrics and health.
#![forbid(unsafe_code)]

pub mod capture;
pub mod config;
pub mod discovery;
pub mod encoder;
pub mod kube;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod sampler;
pub mod sender;
pub mod sources;
pub mod spool;
pub mod stacks;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use goroscope_proto::Role;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::CollectorConfig;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::sampler::Sampler;
use crate::sender::Sender;

/// Samples and streams until `shutdown` is cancelled; then gives in-flight batches a
/// moment to be acknowledged.
pub async fn run(config: CollectorConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let files = config.tls_files();
    // Renewed certificates are picked up without a restart (the sender reconnects with
    // them); the aggregator must prove the aggregator identity, not only its DNS name.
    let tls = goroscope_proto::connect::reloading_client_config(
        files.ca.clone(),
        Some((files.cert.clone(), files.key.clone())),
    )?;
    match goroscope_proto::tls::identity_of_file(&files.cert) {
        Ok(id) if id.role == Role::Collector && id.name == config.host => {}
        Ok(id) => tracing::warn!(
            certificate = %id,
            host = %config.host,
            "the certificate does not name this collector's host; the aggregator will refuse it"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "the certificate names no goroscope identity; the aggregator will refuse it")
        }
    }

    sources::http::set_host(&config.host);
    let config = Arc::new(config);
    let mut sampler = Sampler::new(config.clone())
        .with_context(|| format!("read {}", config.proc_root.display()))?;
    let metrics = Arc::new(Metrics::new(
        (config.interval * 3).max(Duration::from_secs(60)),
    ));
    let (outbox, spool_thread) = if config.spool.enabled {
        let (outbox, thread) = spool::service::start(
            config.spool.options(),
            config.spool.sync_interval,
            config.limits.max_pending_bytes,
            metrics.clone(),
        )
        .await
        .context("open the spool (spool.dir)")?;
        (outbox, Some(thread))
    } else {
        (Arc::new(Outbox::new(config.limits.max_pending_bytes)), None)
    };
    metrics.watch_outbox(outbox.clone());
    {
        let metrics = metrics.clone();
        goroscope_daemon::watch_certificate_expiry(tls.subscribe(), files.clone(), move |f, at| {
            metrics.certificate_expires(f, at)
        });
    }
    // Stops the helper tasks however this function ends.
    let tasks = shutdown.child_token();
    let _stop_tasks = tasks.clone().drop_guard();
    if config.kubernetes.is_enabled() {
        // Without the API server, targets keep their cgroup and build-info labels: the
        // watch retries in the background, sampling never waits for it.
        match kube::client().await {
            Ok(client) => {
                let node = config.kubernetes.node_name.clone();
                tracing::info!(%node, "watching this node's pods for target labels");
                sampler.set_pods(kube::spawn(client, &node, tasks.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "no Kubernetes client; targets get no pod labels")
            }
        }
    }
    if let Some(addr) = config.metrics_listen {
        let listener = goroscope_daemon::http::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "metrics listening");
        tokio::spawn(goroscope_daemon::http::serve(
            listener,
            metrics.clone(),
            tasks.clone(),
        ));
    }
    let (interval_tx, mut interval_rx) = watch::channel(config.interval);
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    tracing::info!(
        host = %config.host,
        aggregator = %config.aggregator,
        interval = %humantime::format_duration(config.interval),
        epoch,
        "collector starting"
    );
    let captures = capture::Captures::new();
    let sender = Sender {
        captures: captures.clone(),
        config: config.clone(),
        tls: tls.subscribe(),
        outbox: outbox.clone(),
        metrics: metrics.clone(),
        epoch,
        interval: interval_tx,
    };
    let sender_stop = CancellationToken::new();
    let sender_task = tokio::spawn(sender.run(sender_stop.clone()));

    let mut ticker = new_ticker(*interval_rx.borrow());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = interval_rx.changed() => {
                ticker = new_ticker(*interval_rx.borrow_and_update());
                continue;
            }
            _ = ticker.tick() => {}
        }
        let started = std::time::Instant::now();
        // A round ends early on shutdown: stopping must not wait for a slow target.
        let sampled = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = sampler.sample(goroscope_proto::unix_ms()) => r,
        };
        match sampled {
            Ok(scrape) => {
                tracing::debug!(
                    targets = scrape.samples.len(),
                    gone = scrape.gone.len(),
                    timestamp_ms = scrape.timestamp_ms,
                    "sampled"
                );
                metrics.round_done(started.elapsed(), scrape.samples.len());
                captures.update(&scrape);
                outbox.push(scrape);
            }
            Err(e) => tracing::warn!(error = %e, "scan of processes failed"),
        }
    }
    sender_stop.cancel();
    let _ = sender_task.await;
    match spool_thread {
        Some(thread) => thread.close().await,
        None if !outbox.is_empty() => tracing::warn!(
            pending = outbox.len(),
            "stopping with unacknowledged scrapes (the spool is off: they are lost)"
        ),
        None => {}
    }
    Ok(())
}

fn new_ticker(every: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}
