//! What goroscope's daemons (and, for errors and escaping, its CLI) share outside the
//! wire contract.
//!
//! - [`settings`]: the layered settings loader both daemons use, and the TLS file settings.
//! - [`escape`]: strings from peers and processes, made safe for terminals and logs.
//! - [`http`]: the daemons' own `/metrics` and `/healthz` endpoint.
//! - here: certificate flags, logging, errors in one line, gRPC code names, shutdown.
#![forbid(unsafe_code)]

pub mod escape;
pub mod http;
pub mod settings;

use std::path::PathBuf;

/// The certificate flags both daemons take; each overrides its `tls.*` setting.
#[derive(clap::Args, Debug, Default)]
pub struct TlsFlags {
    /// The fleet CA certificate, overriding the settings (tls.ca).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// This daemon's certificate, overriding the settings (tls.cert).
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// This daemon's private key, overriding the settings (tls.key).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

impl TlsFlags {
    /// The settings overrides for the flags given: (dotted key, value).
    pub fn overrides(&self) -> Vec<(&'static str, String)> {
        [
            ("tls.ca", &self.ca),
            ("tls.cert", &self.cert),
            ("tls.key", &self.key),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_ref()?.display().to_string())))
        .collect()
    }
}

/// Exit code for usage and configuration errors (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// A daemon's start: its loaded settings, and logging set up from their `log` filter.
/// Either failing prints one line `NAME: reason` on stderr and gives [`EXIT_USAGE`].
pub fn configure<C>(
    name: &str,
    loaded: Result<C, settings::SettingsError>,
    log: impl FnOnce(&C) -> &str,
) -> Result<C, std::process::ExitCode> {
    let usage = |e: &dyn std::fmt::Display| {
        eprintln!("{name}: {e}");
        std::process::ExitCode::from(EXIT_USAGE)
    };
    let config = loaded.map_err(|e| usage(&e))?;
    init_logging(log(&config)).map_err(|e| usage(&e))?;
    Ok(config)
}

/// Sends `tracing` events to stderr, filtered by `directives` (the `log` setting, e.g.
/// `info,goroscope_collector=debug`); colours only on a terminal. The error names the
/// setting and its value, for the one line a daemon prints before it exits.
pub fn init_logging(directives: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(directives)
        .map_err(|e| format!("setting log = {directives:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}

/// An error and its causes in one line, each cause added only if the text so far does
/// not already say it (many errors embed their source in their own message), and OS
/// errors without their `(os error N)` suffix: `listen on 0.0.0.0:80: permission denied`.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    for cause in std::iter::successors(Some(e), |e| e.source()) {
        let text = tidy(&cause.to_string());
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// A gRPC status code in the lower-case words a one-line error uses.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// Runs a daemon: `run` on `runtime` with a shutdown token that the first SIGTERM or
/// SIGINT cancels; then waits for `run` to finish (it owns its grace period). An error
/// is logged in one line and exits 1; a runtime that could not start exits 1 too.
pub fn run_until_signal<F, Fut>(
    name: &str,
    runtime: std::io::Result<tokio::runtime::Runtime>,
    run: F,
) -> std::process::ExitCode
where
    F: FnOnce(tokio_util::sync::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = run(shutdown.clone());
    let result = runtime.block_on(async move {
        let task = tokio::spawn(task);
        tokio::pin!(task);
        tokio::select! {
            r = &mut task => return r?,
            r = shutdown_signal() => r?,
        }
        tracing::info!("shutting down");
        shutdown.cancel();
        task.await?
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Logging is set up: one line through it, as every other line.
            tracing::error!("{}", one_line(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Keeps `set(file, not_after)` current for the certificate and CA files, through every
/// renewal `renewed` announces. Spawns on the current runtime.
pub fn watch_certificate_expiry<T: Send + Sync + 'static>(
    mut renewed: tokio::sync::watch::Receiver<T>,
    files: goroscope_proto::tls::TlsFiles,
    set: impl Fn(&'static str, i64) + Send + 'static,
) {
    tokio::spawn(async move {
        loop {
            for (which, path) in [("cert", &files.cert), ("ca", &files.ca)] {
                if let Some(at) = goroscope_proto::tls::not_after(path) {
                    set(which, at);
                }
            }
            if renewed.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Resolves at the first SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}

/// `No such file or directory (os error 2)` -> `no such file or directory`, anywhere in
/// the text.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(" (os error ") {
        let Some(close) = rest[i..].find(')') else {
            break;
        };
        // Lower-case the OS message's first letter: it follows the last ": ".
        let head = &rest[..i];
        let start = head.rfind(": ").map_or(0, |j| j + 2);
        out.push_str(&head[..start]);
        let mut chars = head[start..].chars();
        if let Some(c) = chars.next() {
            out.extend(c.to_lowercase());
            out.push_str(chars.as_str());
        }
        rest = &rest[i + close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("read {path}: {source}")]
    struct Read {
        path: String,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("tls")]
    struct Outer(#[source] Read);

    #[test]
    fn causes_once_and_os_errors_tidied() {
        let io = std::io::Error::from_raw_os_error(2);
        let e = Outer(Read {
            path: "certs/ca.pem".into(),
            source: io,
        });
        assert_eq!(
            one_line(&e),
            "tls: read certs/ca.pem: no such file or directory"
        );
        let plain = std::io::Error::other("Broken");
        assert_eq!(one_line(&plain), "Broken");
    }
}
