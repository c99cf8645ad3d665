//! `goroscope-collector`: parses flags, loads settings, runs until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use goroscope_collector::config::CollectorConfig;

/// The goroscope collector: samples every Go process of this host and streams the
/// samples to the aggregator over mTLS gRPC.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Settings file (TOML); see deploy/collector.example.toml.
    #[arg(long, short = 'c', env = "GOROSCOPE_COLLECTOR_CONFIG")]
    config: Option<PathBuf>,
    /// This host's name, overriding the settings.
    #[arg(long)]
    host: Option<String>,
    /// The aggregator's address, overriding the settings (https://HOST:PORT).
    #[arg(long)]
    aggregator: Option<String>,
    /// Sampling interval, overriding the settings (for example 10s).
    #[arg(long)]
    interval: Option<String>,
    /// Plain-HTTP address for /metrics and /healthz, overriding the settings
    /// (metrics_listen), for example 127.0.0.1:9465.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// The spool's directory, overriding the settings (spool.dir).
    #[arg(long)]
    spool_dir: Option<String>,
    #[command(flatten)]
    tls: goroscope_daemon::TlsFlags,
    /// Log filter, overriding the settings.
    #[arg(long)]
    log: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut overrides: Vec<(&str, String)> = [
        ("host", args.host),
        ("aggregator", args.aggregator),
        ("interval", args.interval),
        ("metrics_listen", args.metrics_listen),
        ("log", args.log),
        ("spool.dir", args.spool_dir),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    overrides.extend(args.tls.overrides());
    let config = match goroscope_daemon::configure(
        "goroscope-collector",
        CollectorConfig::load(args.config.as_deref(), &overrides),
        |c| &c.log,
    ) {
        Ok(c) => c,
        Err(code) => return code,
    };

    // One host agent among many workloads: one thread is plenty and costs the least.
    goroscope_daemon::run_until_signal(
        "goroscope-collector",
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        move |shutdown| goroscope_collector::run(config, shutdown),
    )
}
