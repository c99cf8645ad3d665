//! `goroscope-aggregator`: parses flags, loads settings, runs until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use goroscope_aggregator::config::AggregatorConfig;

/// The goroscope aggregator: mTLS gRPC ingest from collectors, RocksDB storage, queries.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Settings file (TOML); see deploy/aggregator.example.toml.
    #[arg(long, short = 'c', env = "GOROSCOPE_AGGREGATOR_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, overriding the settings (for example 0.0.0.0:7443).
    #[arg(long)]
    listen: Option<String>,
    /// Database directory, overriding the settings.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Plain-HTTP address for /metrics and /healthz, overriding the settings
    /// (metrics_listen), for example 127.0.0.1:9464.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// HTTPS address of the Prometheus HTTP API, overriding the settings (http_listen),
    /// for example 0.0.0.0:9443.
    #[arg(long)]
    http_listen: Option<String>,
    #[command(flatten)]
    tls: goroscope_daemon::TlsFlags,
    /// Log filter, overriding the settings (for example "info,goroscope_aggregator=debug").
    #[arg(long)]
    log: Option<String>,
    /// Time open requests get to finish after SIGTERM.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut overrides: Vec<(&str, String)> = [
        ("listen", args.listen.clone()),
        (
            "data_dir",
            args.data_dir.as_ref().map(|d| d.display().to_string()),
        ),
        ("metrics_listen", args.metrics_listen.clone()),
        ("http_listen", args.http_listen.clone()),
        ("log", args.log.clone()),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    overrides.extend(args.tls.overrides());
    let config = match goroscope_daemon::configure(
        "goroscope-aggregator",
        AggregatorConfig::load(args.config.as_deref(), &overrides),
        |c| &c.log,
    ) {
        Ok(c) => c,
        Err(code) => return code,
    };

    let grace = args.grace;
    goroscope_daemon::run_until_signal(
        "goroscope-aggregator",
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        move |shutdown| async move {
            let data_dir = config.data_dir.clone();
            // `run` gives open requests the grace period, then stops the storage writer
            // and returns: the database is closed before the process exits.
            goroscope_aggregator::run(config, shutdown, grace, move |addr| {
                tracing::info!(%addr, data_dir = %data_dir.display(), "aggregator listening");
            })
            .await
        },
    )
}
