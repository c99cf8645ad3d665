//! What both daemons do the same way at start: logging to stderr from the `log` setting.

/// Exit code for usage and configuration errors (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

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
