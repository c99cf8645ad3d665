//! `goroscope`: the command-line companion of the aggregator.
//!
//! - [`certs`]: a development CA and the certificates of collectors, operators and
//!   aggregators.
//! - [`client`]: connecting to the aggregator as an operator.
//! - [`render`]: tables for people (`-o json` for programs).
//! - [`inspect`], [`capture`]: one target's stacks and settings; traces and profiles.
//! - [`diagnose`]: anomalies and fleet incidents; [`explain`]: one process on one page.
#![forbid(unsafe_code)]

mod capture;
mod certs;
mod client;
mod diagnose;
mod explain;
mod expr;
mod inspect;
mod render;
mod status;
#[cfg(test)]
mod stub;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use goroscope_daemon::escape::escape;
use goroscope_proto::v1;
use serde_json::json;

use crate::client::ConnectSettings;
use crate::render::Table;

/// goroscope: watch the Go processes of a fleet. Queries the aggregator and makes
/// development certificates.
#[derive(Parser, Debug)]
#[command(name = "goroscope", version, about)]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct ConnArgs {
    /// The aggregator's address [default: https://127.0.0.1:7443].
    #[arg(long, global = true, env = "GOROSCOPE_ADDR")]
    addr: Option<String>,
    /// The fleet CA certificate [default: certs/ca.pem].
    #[arg(long, global = true, env = "GOROSCOPE_CA")]
    ca: Option<PathBuf>,
    /// Your operator certificate [default: the one certs/operator-*.pem].
    #[arg(long, global = true, env = "GOROSCOPE_CERT")]
    cert: Option<PathBuf>,
    /// Your operator key [default: beside the certificate, <name>-key.pem].
    #[arg(long, global = true, env = "GOROSCOPE_KEY")]
    key: Option<PathBuf>,
    /// The name the aggregator's certificate must carry [default: localhost].
    #[arg(long, global = true, env = "GOROSCOPE_SERVER_NAME")]
    server_name: Option<String>,
    /// Settings file (TOML with addr, ca, cert, key, server_name)
    /// [default: ~/.config/goroscope/cli.toml if it exists].
    #[arg(long, global = true, env = "GOROSCOPE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
    /// Comma-separated values (`goroscope query` only).
    Csv,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the Go processes the aggregator knows, with their latest vital signs.
    Targets {
        /// Only targets matching: PID, HOST:PID or LABEL=VALUE (repeat to narrow).
        #[arg(long, short = 't')]
        target: Vec<String>,
        /// Only targets seen within this time (for example 15m); 0 for all.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        since: Duration,
    },
    /// Evaluate a PromQL expression over a time range (a range query), or show the
    /// samples of one metric per target when EXPR is a bare metric name (see
    /// docs/metrics.md and docs/query.md).
    Query {
        /// A PromQL expression, for example
        /// `process_resident_memory_bytes - go_memstats_heap_inuse_bytes`, or a metric name.
        #[arg(value_name = "EXPR")]
        metric: String,
        /// Only targets matching: PID, HOST:PID or LABEL=VALUE (repeat to narrow).
        #[arg(long, short = 't')]
        target: Vec<String>,
        /// Start of the range, as an age (for example 10m).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        since: Duration,
        /// End of the range, as an age; 0 is now.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        until: Duration,
        /// Time between two evaluations of EXPR [default: about 250 points over the
        /// range, at least 1s; from 1m up, whole minutes, with the range moved back to
        /// whole steps so that long ranges are answered from rollups].
        #[arg(long, value_parser = humantime::parse_duration)]
        step: Option<Duration>,
        /// Evaluate EXPR once, at --until (an instant query).
        #[arg(long, conflicts_with = "step")]
        instant: bool,
    },
    /// Show one target's goroutines grouped by stack signature: the newest summary, the
    /// one at a time, or how they changed between two times.
    Stacks {
        /// The target: PID, HOST:PID or LABEL=VALUE (repeat to narrow to one).
        #[arg(long, short = 't', required = true)]
        target: Vec<String>,
        /// The summary at or before this time: an age (10m), an RFC 3339 time or Unix
        /// milliseconds [default: the newest].
        #[arg(long, value_parser = inspect::parse_time, conflicts_with = "diff")]
        at: Option<i64>,
        /// Compare the summaries at or before TIME1 and TIME2 (same forms as --at).
        #[arg(long, num_args = 2, value_names = ["TIME1", "TIME2"], value_parser = inspect::parse_time)]
        diff: Vec<i64>,
        /// Signatures shown, at most (the largest; 0 for all).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Capture a trace or profile of one target through its collector, or fetch a
    /// stored one: `capture KIND --target SELECTOR [--seconds N] --out FILE`, or
    /// `capture get ID --out FILE`.
    Capture {
        /// trace, heap, cpu, goroutine or goroutineleak; or `get` to fetch a stored
        /// capture.
        kind: String,
        /// With `get`: the capture's id (as `goroscope captures` lists it).
        id: Option<String>,
        /// The target: PID, HOST:PID or LABEL=VALUE (repeat to narrow to one).
        #[arg(long, short = 't')]
        target: Vec<String>,
        /// For trace and cpu: how long to record [default: 5 for trace, 10 for cpu].
        #[arg(long)]
        seconds: Option<u32>,
        /// Where to write it (opens with `go tool pprof`, or `go tool trace` for a trace).
        #[arg(long)]
        out: PathBuf,
    },
    /// List stored captures, newest first.
    Captures {
        /// Only captures of targets matching: PID, HOST:PID or LABEL=VALUE.
        #[arg(long, short = 't')]
        target: Vec<String>,
        /// Captures listed at most.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one target's full build information and Go runtime settings.
    Describe {
        /// The target: PID, HOST:PID or LABEL=VALUE (repeat to narrow to one).
        #[arg(long, short = 't', required = true)]
        target: Vec<String>,
    },
    /// List what the detectors found on each process: open anomalies, or all.
    Anomalies {
        /// Only anomalies of targets matching: PID, HOST:PID or LABEL=VALUE.
        #[arg(long, short = 't')]
        target: Vec<String>,
        /// Resolved anomalies too, not only open ones.
        #[arg(long)]
        all: bool,
    },
    /// List fleet incidents (anomalies grouped across a service), most severe first.
    Incidents {
        /// Resolved incidents too, not only open ones.
        #[arg(long)]
        all: bool,
    },
    /// Show one incident in full: affected targets, the attributes they share, captures.
    Incident {
        /// The incident's id (as `goroscope incidents` lists it).
        id: String,
    },
    /// One page on one process: RSS broken down, goroutines, GC, threads, anomalies.
    Explain {
        /// The target: PID, HOST:PID or LABEL=VALUE (several to narrow to one).
        #[arg(required = true, value_name = "TARGET")]
        target: Vec<String>,
    },
    /// What the aggregator stores (samples, bytes on disk, series, targets per service)
    /// and each collector host's ingest: connected, last heard, gaps, reported losses.
    Status,
    /// Development certificates: a fleet CA and leaves signed by it.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Create a CA (ca.pem, ca-key.pem) in DIR.
    Init {
        #[arg(long, default_value = client::DEFAULT_CERTS_DIR)]
        dir: PathBuf,
        /// Replace an existing CA.
        #[arg(long)]
        force: bool,
    },
    /// Issue a key and certificate signed by the CA in DIR.
    Issue {
        #[arg(long, default_value = client::DEFAULT_CERTS_DIR)]
        dir: PathBuf,
        #[command(flatten)]
        subject: SubjectArgs,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Extra DNS names or IP addresses (aggregator certificates).
        #[arg(long)]
        san: Vec<String>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct SubjectArgs {
    /// A collector certificate for this host.
    #[arg(long, value_name = "HOST")]
    collector: Option<String>,
    /// An operator certificate for this person or robot.
    #[arg(long, value_name = "NAME")]
    operator: Option<String>,
    /// An aggregator (server) certificate for this DNS name or IP address.
    #[arg(long, value_name = "DNSNAME")]
    aggregator: Option<String>,
}

/// Exit code for usage and configuration errors (EX_USAGE).
const EXIT_USAGE: u8 = 64;

/// A usage or configuration error, as opposed to a failure of the operation.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("goroscope: start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            // Escaped whole: an error may quote what a peer sent.
            eprintln!(
                "goroscope: {}",
                escape(&goroscope_daemon::one_line(e.as_ref()))
            );
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.output == Output::Csv && !matches!(cli.command, Command::Query { .. }) {
        return Err(UsageError("-o csv is for goroscope query; use -o json".into()).into());
    }
    match cli.command {
        Command::Certs { command } => run_certs(command, cli.output),
        Command::Targets { target, since } => {
            let settings = connect_settings(&cli.conn)?;
            let matchers = parse_targets(&target)?;
            let mut client = client::connect(&settings).await?;
            let seen_since_ms = if since.is_zero() {
                0
            } else {
                ms_before(goroscope_proto::unix_ms(), since)
            };
            let request = v1::ListTargetsRequest {
                matchers,
                seen_since_ms,
                ..Default::default()
            };
            let targets = client::list_all_targets(
                &mut client,
                &settings.addr,
                request,
                client::MAX_TARGET_PAGES,
            )
            .await?;
            print_targets(&targets, cli.output)
        }
        Command::Query {
            metric,
            target,
            since,
            until,
            step,
            instant,
        } => {
            let settings = connect_settings(&cli.conn)?;
            let matchers = parse_targets(&target)?;
            if until >= since && !instant {
                return Err(UsageError(format!(
                    "--until {} must be more recent than --since {}",
                    humantime::format_duration(until),
                    humantime::format_duration(since)
                ))
                .into());
            }
            let now = goroscope_proto::unix_ms();
            if !expr::is_metric_name(&metric) || step.is_some() || instant {
                if !target.is_empty() {
                    return Err(UsageError(
                        "--target narrows a bare metric name; in an expression, use label \
                         matchers: go_goroutines{service=\"api\"}"
                            .into(),
                    )
                    .into());
                }
                let (start_ms, end_ms) = (ms_before(now, since), ms_before(now, until));
                let (start_ms, end_ms, step_ms) = match (instant, step) {
                    (true, _) => (start_ms, end_ms, 0),
                    (false, Some(step)) if step.as_millis() > 0 => {
                        (start_ms, end_ms, step.as_millis() as i64)
                    }
                    (false, Some(_)) => {
                        return Err(UsageError("--step must be positive".into()).into());
                    }
                    (false, None) => expr::auto_range(start_ms, end_ms),
                };
                let mut client = client::connect(&settings).await?;
                let response = client
                    .evaluate(v1::EvaluateRequest {
                        query: metric,
                        start_ms,
                        end_ms,
                        step_ms,
                    })
                    .await
                    .map_err(|s| client::status_error(&settings.addr, s))?
                    .into_inner();
                return expr::print(&response, cli.output);
            }
            let mut client = client::connect(&settings).await?;
            let response = client
                .query_range(v1::QueryRangeRequest {
                    metric: metric.clone(),
                    matchers,
                    start_ms: ms_before(now, since),
                    end_ms: ms_before(now, until),
                })
                .await
                .map_err(|s| client::status_error(&settings.addr, s))?
                .into_inner();
            print_series(&metric, &response.series, cli.output)
        }
        Command::Stacks {
            target,
            at,
            diff,
            limit,
        } => {
            let settings = connect_settings(&cli.conn)?;
            let matchers = parse_targets(&target)?;
            let (from_ms, at_ms) = match diff.as_slice() {
                [t1, t2] if t1 > t2 => {
                    return Err(UsageError(
                        "--diff TIME1 TIME2: TIME1 must be before TIME2".into(),
                    )
                    .into());
                }
                [t1, t2] => (*t1, *t2),
                _ => (0, at.unwrap_or(0)),
            };
            let mut client = client::connect(&settings).await?;
            let response = client
                .stacks(v1::StacksRequest {
                    matchers,
                    at_ms,
                    from_ms,
                })
                .await
                .map_err(|s| client::status_error(&settings.addr, s))?
                .into_inner();
            inspect::print_stacks(&response, from_ms != 0, limit, cli.output)
        }
        Command::Capture {
            kind,
            id,
            target,
            seconds,
            out,
        } => {
            let settings = connect_settings(&cli.conn)?;
            if kind == "get" {
                let Some(id) = id else {
                    return Err(UsageError("capture get needs the capture's ID".into()).into());
                };
                if !target.is_empty() || seconds.is_some() {
                    return Err(UsageError("capture get takes an ID and --out only".into()).into());
                }
                let mut client = client::connect(&settings).await?;
                return capture::get(&mut client, &settings.addr, &id, &out, cli.output).await;
            }
            if let Some(id) = id {
                return Err(UsageError(format!("unexpected argument {id:?}")).into());
            }
            let kind = capture::parse_kind(&kind).map_err(UsageError)?;
            if target.is_empty() {
                return Err(UsageError("capture needs --target".into()).into());
            }
            let matchers = parse_targets(&target)?;
            let mut client = client::connect(&settings).await?;
            capture::capture(
                &mut client,
                &settings.addr,
                v1::CaptureRequest {
                    matchers,
                    kind: kind.into(),
                    seconds: seconds.unwrap_or(0),
                },
                &out,
                cli.output,
            )
            .await
        }
        Command::Captures { target, limit } => {
            let settings = connect_settings(&cli.conn)?;
            let matchers = parse_targets(&target)?;
            let mut client = client::connect(&settings).await?;
            let response = client
                .list_captures(v1::ListCapturesRequest { matchers, limit })
                .await
                .map_err(|s| client::status_error(&settings.addr, s))?
                .into_inner();
            capture::print_list(&response.captures, cli.output)
        }
        Command::Describe { target } => {
            let settings = connect_settings(&cli.conn)?;
            let matchers = parse_targets(&target)?;
            let mut client = client::connect(&settings).await?;
            let response = client
                .describe_target(v1::DescribeTargetRequest { matchers })
                .await
                .map_err(|s| client::status_error(&settings.addr, s))?
                .into_inner();
            inspect::print_describe(&response, cli.output)
        }
        Command::Anomalies { target, all } => {
            let settings = connect_settings(&cli.conn)?;
            let matchers = parse_targets(&target)?;
            let mut client = client::connect(&settings).await?;
            let response = client
                .anomalies(v1::AnomaliesRequest {
                    matchers,
                    all,
                    limit: 0,
                })
                .await
                .map_err(|s| client::status_error(&settings.addr, s))?
                .into_inner();
            diagnose::print_anomalies(&response.anomalies, all, cli.output)
        }
        Command::Status => {
            let settings = connect_settings(&cli.conn)?;
            let mut client = client::connect(&settings).await?;
            let response = client
                .status(v1::StatusRequest {})
                .await
                .map_err(|s| client::status_error(&settings.addr, s))?
                .into_inner();
            status::print(&response, cli.output)
        }
        Command::Incidents { all } => {
            let settings = connect_settings(&cli.conn)?;
            let mut client = client::connect(&settings).await?;
            let response = client
                .incidents(v1::IncidentsRequest { all, limit: 0 })
                .await
                .map_err(|s| client::status_error(&settings.addr, s))?
                .into_inner();
            diagnose::print_incidents(&response.incidents, all, cli.output)
        }
        Command::Incident { id } => {
            let settings = connect_settings(&cli.conn)?;
            let mut client = client::connect(&settings).await?;
            let incident = client
                .get_incident(v1::GetIncidentRequest { id })
                .await
                .map_err(|s| client::status_error(&settings.addr, s))?
                .into_inner();
            diagnose::print_incident(&incident, cli.output)
        }
        Command::Explain { target } => {
            let settings = connect_settings(&cli.conn)?;
            let matchers = parse_targets(&target)?;
            let mut client = client::connect(&settings).await?;
            let inputs = explain::fetch(&mut client, &settings.addr, matchers).await?;
            explain::print(&inputs, cli.output)
        }
    }
}

/// `age` before `now`, in Unix milliseconds; an age past the epoch's range stops there.
fn ms_before(now: i64, age: Duration) -> i64 {
    now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
}

fn connect_settings(args: &ConnArgs) -> anyhow::Result<ConnectSettings> {
    let file = client::read_file_settings(args.config.as_deref())
        .map_err(|e| UsageError(format!("{e:#}")))?;
    let ca = args
        .ca
        .clone()
        .or(file.ca)
        .unwrap_or_else(|| PathBuf::from(client::DEFAULT_CERTS_DIR).join("ca.pem"));
    let (cert, key) = match (
        args.cert.clone().or(file.cert),
        args.key.clone().or(file.key),
    ) {
        (Some(cert), Some(key)) => (cert, key),
        (Some(cert), None) => {
            let key = cert.with_file_name(format!(
                "{}-key.pem",
                cert.file_stem().unwrap_or_default().to_string_lossy()
            ));
            (cert, key)
        }
        (None, Some(_)) => return Err(UsageError("--key given without --cert".into()).into()),
        (None, None) => {
            let dir = ca.parent().unwrap_or(std::path::Path::new("."));
            client::find_operator_cert(dir).map_err(|e| UsageError(format!("{e:#}")))?
        }
    };
    Ok(ConnectSettings {
        addr: args
            .addr
            .clone()
            .or(file.addr)
            .unwrap_or_else(|| client::DEFAULT_ADDR.into()),
        ca,
        cert,
        key,
        server_name: args
            .server_name
            .clone()
            .or(file.server_name)
            .unwrap_or_else(|| "localhost".into()),
    })
}

/// `PID`, `HOST:PID` or `LABEL=VALUE` into label matchers.
fn parse_targets(specs: &[String]) -> anyhow::Result<Vec<v1::LabelMatcher>> {
    let m = |name: &str, value: &str| v1::LabelMatcher {
        name: name.into(),
        value: value.into(),
    };
    let mut out = Vec::new();
    for spec in specs {
        if let Some((name, value)) = spec.split_once('=') {
            if name.is_empty() {
                return Err(
                    UsageError(format!("--target {spec:?}: the label name is empty")).into(),
                );
            }
            out.push(m(name, value));
        } else if spec.parse::<u32>().is_ok() {
            out.push(m("pid", spec));
        } else if let Some((host, pid)) = spec
            .rsplit_once(':')
            .filter(|(_, p)| p.parse::<u32>().is_ok())
        {
            out.push(m("host", host));
            out.push(m("pid", pid));
        } else {
            return Err(UsageError(format!(
                "--target {spec:?}: expected PID, HOST:PID or LABEL=VALUE"
            ))
            .into());
        }
    }
    Ok(out)
}

fn label<'a>(labels: &'a [v1::Label], name: &str) -> &'a str {
    labels
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.value.as_str())
        .unwrap_or("")
}

fn print_targets(targets: &[v1::TargetInfo], output: Output) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if output == Output::Json {
        let items: Vec<_> = targets
            .iter()
            .map(|t| {
                let id = t.id.clone().unwrap_or_default();
                let c = t.coverage.clone().unwrap_or_default();
                json!({
                    "host": id.host,
                    "pid": id.pid,
                    "start_ticks": id.start_ticks,
                    "labels": t.labels.iter().map(|l| (l.name.clone(), json!(l.value))).collect::<serde_json::Map<_, _>>(),
                    "coverage": {"proc": c.proc, "buildinfo": c.buildinfo, "expvar": c.expvar, "pprof": c.pprof, "metrics": c.metrics, "cgroup": c.cgroup, "goroutineleak": c.goroutineleak, "debug_addr": c.debug_addr},
                    "start_time_ms": t.start_time_ms,
                    "first_seen_ms": t.first_seen_ms,
                    "last_seen_ms": t.last_seen_ms,
                    "exited": t.exited,
                    "latest": t.latest.iter().map(|m| (render::series_name(&m.metric, &m.labels), render::json_value(m.value()))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({ "targets": items }))?
        )?;
        return Ok(());
    }
    if targets.is_empty() {
        writeln!(out, "no targets")?;
        return Ok(());
    }
    write!(
        out,
        "{}",
        targets_table(targets, goroscope_proto::unix_ms())
    )?;
    Ok(())
}

/// The targets as a table for people, ages counted from `now` (Unix milliseconds).
fn targets_table(targets: &[v1::TargetInfo], now: i64) -> String {
    let latest = |t: &v1::TargetInfo, metric: &str| {
        t.latest
            .iter()
            .find(|m| m.metric == metric && m.labels.is_empty())
            .map(|m| m.value())
    };
    let mut table = Table::new(&[
        ("HOST", false),
        ("PID", true),
        ("SERVICE", false),
        ("VERSION", false),
        ("GO", false),
        ("RSS", true),
        ("HEAP INUSE", true),
        ("GOROUTINES", true),
        ("THREADS", true),
        ("LAST SEEN", false),
    ]);
    let opt = |v: Option<f64>, f: fn(f64) -> String| v.map(f).unwrap_or_else(|| "-".into());
    for t in targets {
        let id = t.id.clone().unwrap_or_default();
        let seen = render::ago(now.saturating_sub(t.last_seen_ms));
        table.row(vec![
            id.host,
            id.pid.to_string(),
            label(&t.labels, "service").to_owned(),
            label(&t.labels, "version").to_owned(),
            label(&t.labels, "go_version").to_owned(),
            opt(latest(t, "process_resident_memory_bytes"), render::bytes),
            opt(latest(t, "go_memstats_heap_inuse_bytes"), render::bytes),
            opt(latest(t, "go_goroutines"), render::number),
            opt(latest(t, "process_threads"), render::number),
            if t.exited {
                format!("exited, {seen}")
            } else {
                seen
            },
        ]);
    }
    table.render()
}

fn print_series(metric: &str, series: &[v1::Series], output: Output) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if output == Output::Json {
        let items: Vec<_> = series
            .iter()
            .map(|s| {
                let id = s.target.clone().unwrap_or_default();
                json!({
                    "metric": s.metric,
                    "target": {"host": id.host, "pid": id.pid, "start_ticks": id.start_ticks},
                    "labels": s.labels.iter().map(|l| (l.name.clone(), json!(l.value))).collect::<serde_json::Map<_, _>>(),
                    "series_labels": s.series_labels.iter().map(|l| (l.name.clone(), json!(l.value))).collect::<serde_json::Map<_, _>>(),
                    "samples": s.samples.iter().map(|p| json!([p.timestamp_ms, render::json_value(p.value())])).collect::<Vec<_>>(),
                })
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({ "series": items }))?
        )?;
        return Ok(());
    }
    if output == Output::Csv {
        writeln!(out, "timestamp_ms,host,pid,service,series,value")?;
        for s in series {
            let id = s.target.clone().unwrap_or_default();
            let name = render::series_name("", &s.series_labels);
            for p in &s.samples {
                let v = if p.value().is_finite() {
                    p.value().to_string()
                } else {
                    render::non_finite(p.value()).to_owned()
                };
                let quote = expr::csv_field;
                writeln!(
                    out,
                    "{},{},{},{},{},{v}",
                    p.timestamp_ms,
                    quote(&id.host),
                    id.pid,
                    quote(label(&s.labels, "service")),
                    quote(&name),
                )?;
            }
        }
        return Ok(());
    }
    if series.iter().all(|s| s.samples.is_empty()) {
        writeln!(out, "no samples of {} in that range", escape(metric))?;
        return Ok(());
    }
    write!(out, "{}", series_table(series))?;
    Ok(())
}

/// The samples of each series as a table for people, one row per sample.
fn series_table(series: &[v1::Series]) -> String {
    let labelled = series.iter().any(|s| !s.series_labels.is_empty());
    let mut columns = vec![
        ("TIME", false),
        ("HOST", false),
        ("PID", true),
        ("SERVICE", false),
    ];
    if labelled {
        columns.push(("SERIES", false));
    }
    columns.push(("VALUE", true));
    let mut table = Table::new(&columns);
    for s in series {
        let id = s.target.clone().unwrap_or_default();
        let name = render::series_name("", &s.series_labels);
        for p in &s.samples {
            let mut row = vec![
                render::timestamp(p.timestamp_ms),
                id.host.clone(),
                id.pid.to_string(),
                label(&s.labels, "service").to_owned(),
            ];
            if labelled {
                row.push(name.clone());
            }
            row.push(render::number(p.value()));
            table.row(row);
        }
    }
    table.render()
}

fn run_certs(command: CertsCommand, output: Output) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        CertsCommand::Init { dir, force } => {
            let ca = certs::init_ca(&dir, force).map_err(|e| UsageError(e.to_string()))?;
            if output == Output::Json {
                writeln!(out, "{}", json!({ "ca": ca }))?;
            } else {
                writeln!(out, "created CA {}", ca.display())?;
            }
        }
        CertsCommand::Issue {
            dir,
            subject,
            days,
            san,
            force,
        } => {
            let subject = match (subject.collector, subject.operator, subject.aggregator) {
                (Some(h), None, None) => certs::Subject::Collector(h),
                (None, Some(n), None) => certs::Subject::Operator(n),
                (None, None, Some(n)) => certs::Subject::Aggregator(n),
                _ => bail!(UsageError(
                    "name exactly one of --collector, --operator, --aggregator".into()
                )),
            };
            let (cert, key) = certs::issue(&dir, &subject, days, &san, force)
                .map_err(|e| UsageError(e.to_string()))?;
            let identity = goroscope_proto::tls::identity_of_file(&cert)
                .context("read back the issued certificate")?;
            if output == Output::Json {
                writeln!(
                    out,
                    "{}",
                    json!({ "cert": cert, "key": key, "identity": identity.uri() })
                )?;
            } else {
                writeln!(out, "issued {} for {identity}", cert.display())?;
                writeln!(out, "key    {}", key.display())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_specs() {
        let got =
            parse_targets(&["42".into(), "node-a:7".into(), "service=billing".into()]).unwrap();
        let pairs: Vec<_> = got
            .iter()
            .map(|m| (m.name.as_str(), m.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("pid", "42"),
                ("host", "node-a"),
                ("pid", "7"),
                ("service", "billing")
            ]
        );
        assert!(parse_targets(&["node-a".into()]).is_err());
        assert!(parse_targets(&["=x".into()]).is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    fn target(
        host: &str,
        pid: u32,
        labels: &[(&str, &str)],
        latest: &[(&str, f64)],
        last_seen_ms: i64,
    ) -> v1::TargetInfo {
        v1::TargetInfo {
            id: Some(v1::TargetId {
                host: host.into(),
                pid,
                ..Default::default()
            }),
            labels: labels
                .iter()
                .map(|(name, value)| v1::Label {
                    name: (*name).into(),
                    value: (*value).into(),
                })
                .collect(),
            latest: latest
                .iter()
                .map(|(metric, value)| v1::MetricValue {
                    metric: (*metric).into(),
                    value: Some(*value),
                    timestamp_ms: last_seen_ms,
                    labels: Vec::new(),
                })
                .collect(),
            last_seen_ms,
            ..Default::default()
        }
    }

    #[test]
    fn targets_table_looks_as_the_readme_shows() {
        const MIB: f64 = 1024.0 * 1024.0;
        let now = 1_795_000_000_000;
        let row = |pid, service, rss, heap, goroutines| {
            target(
                "vm",
                pid,
                &[
                    ("service", service),
                    ("version", "(devel)"),
                    ("go_version", "go1.26.8"),
                ],
                &[
                    ("process_resident_memory_bytes", rss * MIB),
                    ("go_memstats_heap_inuse_bytes", heap * MIB),
                    ("go_goroutines", goroutines),
                    ("process_threads", 5.0),
                ],
                now - 1_000,
            )
        };
        let targets = [
            row(29740, "steady", 10.2, 10.7, 12.0),
            row(29741, "leaky", 9.2, 1.0, 25.0),
        ];
        assert_eq!(
            targets_table(&targets, now),
            "HOST    PID  SERVICE  VERSION  GO             RSS  HEAP INUSE  GOROUTINES  THREADS  LAST SEEN\n\
             vm    29740  steady   (devel)  go1.26.8  10.2 MiB    10.7 MiB          12        5  1s ago\n\
             vm    29741  leaky    (devel)  go1.26.8   9.2 MiB     1.0 MiB          25        5  1s ago\n"
        );
    }

    /// What a Go binary named with terminal sequences puts in its labels, and a host that
    /// a hostile collector could report.
    const EVIL: &str = "\u{1b}]0;PWNED\u{7}\u{1b}[31mred\u{1b}[2J";

    fn assert_no_raw_control(out: &str) {
        assert!(
            !out.chars()
                .any(|c| c != '\n' && goroscope_daemon::escape::is_unsafe(c)),
            "{out:?}"
        );
        assert!(out.contains("\\e]0;PWNED\\x07\\e[31mred\\e[2J"), "{out}");
    }

    #[test]
    fn targets_table_prints_no_raw_control_character() {
        let targets = [target(
            EVIL,
            1,
            &[
                ("service", EVIL),
                ("version", EVIL),
                ("go_version", "go1.26.8\r"),
            ],
            &[("go_goroutines", 3.0)],
            // From an aggregator whose clock is wrong, or that lies: no overflow.
            i64::MIN,
        )];
        let out = targets_table(&targets, 1_795_000_000_000);
        assert_no_raw_control(&out);
        assert!(out.contains("go1.26.8\\r"), "{out}");
        // Every line as long as the others where the last column is as wide: the widths
        // counted the escaped text.
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        let seen = lines[1].rfind("  ").unwrap();
        assert_eq!(lines[0].find("LAST SEEN").unwrap(), seen + 2);
    }

    #[test]
    fn series_table_prints_no_raw_control_character() {
        let series = [v1::Series {
            series_labels: Vec::new(),
            metric: EVIL.into(),
            target: Some(v1::TargetId {
                host: EVIL.into(),
                pid: 7,
                ..Default::default()
            }),
            labels: vec![v1::Label {
                name: "service".into(),
                value: EVIL.into(),
            }],
            samples: vec![
                v1::Sample {
                    timestamp_ms: 0,
                    value: Some(1.5),
                },
                v1::Sample {
                    timestamp_ms: i64::MAX,
                    value: Some(f64::NAN),
                },
            ],
        }];
        let out = series_table(&series);
        assert_no_raw_control(&out);
        assert!(out.starts_with("TIME "), "{out}");
        assert_eq!(out.lines().count(), 3);
    }

    #[test]
    fn ages_before_now_saturate() {
        assert_eq!(ms_before(10_000, Duration::from_secs(3)), 7_000);
        assert_eq!(ms_before(0, Duration::MAX), -i64::MAX);
        assert_eq!(ms_before(i64::MIN, Duration::from_secs(1)), i64::MIN);
    }
}
