//! Connecting to the aggregator's query service over mTLS, and the settings that say
//! where it is and which certificate to show: flags, then `GOROSCOPE_*` environment,
//! then the config file (`--config`, else `~/.config/goroscope/cli.toml` if present).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use goroscope_proto::v1::query_client::QueryClient;
use serde::Deserialize;
use tonic::transport::{Channel, Endpoint};

/// What the config file may hold; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileSettings {
    pub addr: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
}

/// The resolved connection settings.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    pub addr: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server_name: String,
}

pub const DEFAULT_ADDR: &str = "https://127.0.0.1:7443";
pub const DEFAULT_CERTS_DIR: &str = "certs";

/// Reads the config file: the one named, else the default one if it exists.
pub fn read_file_settings(path: Option<&Path>) -> anyhow::Result<FileSettings> {
    let (path, required) = match path {
        Some(p) => (p.to_owned(), true),
        None => match default_config_path() {
            Some(p) => (p, false),
            None => return Ok(FileSettings::default()),
        },
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let builder = config::Config::builder()
                .add_source(config::File::from_str(&text, config::FileFormat::Toml))
                .build()
                .with_context(|| format!("config file {}", path.display()))?;
            builder
                .try_deserialize()
                .with_context(|| format!("config file {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            Ok(FileSettings::default())
        }
        Err(e) => Err(e).with_context(|| format!("read config file {}", path.display())),
    }
}

fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("goroscope").join("cli.toml"))
}

/// Without a named certificate: the only `operator-*.pem` in the certificate directory.
pub fn find_operator_cert(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("operator-")
                && name.ends_with(".pem")
                && !name.ends_with("-key.pem")
            {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    match found.as_slice() {
        [cert] => {
            let key = cert.with_file_name(format!(
                "{}-key.pem",
                cert.file_stem().unwrap_or_default().to_string_lossy()
            ));
            Ok((cert.clone(), key))
        }
        [] => bail!(
            "no operator certificate: pass --cert and --key (or set GOROSCOPE_CERT and GOROSCOPE_KEY), \
             or issue one with `goroscope certs issue --dir {} --operator NAME`",
            dir.display()
        ),
        _ => bail!(
            "{} operator certificates in {}: pass --cert and --key to choose one",
            found.len(),
            dir.display()
        ),
    }
}

pub async fn connect(s: &ConnectSettings) -> anyhow::Result<QueryClient<Channel>> {
    let tls = goroscope_proto::tls::client_tls(&s.ca, Some((&s.cert, &s.key)), &s.server_name)?;
    let channel = Endpoint::from_shared(s.addr.clone())
        .with_context(|| format!("aggregator address {:?}", s.addr))?
        .tls_config(tls)
        .context("tls settings")?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("connect to {}: {}", s.addr, error_chain(&e)))?;
    Ok(QueryClient::new(channel).max_decoding_message_size(256 * 1024 * 1024))
}

/// A transport error's whole chain in one line ("transport error: ... : invalid peer
/// certificate: UnknownIssuer").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A refusal or failure of a call, in one line.
pub fn status_error(addr: &str, status: tonic::Status) -> anyhow::Error {
    use std::error::Error;
    let mut message = format!(
        "aggregator at {addr}: {}: {}",
        code_name(status.code()),
        status.message()
    );
    if let Some(source) = status.source() {
        message.push_str(": ");
        message.push_str(&error_chain(source));
    }
    anyhow::anyhow!(message)
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission denied",
        Code::InvalidArgument => "invalid argument",
        Code::NotFound => "not found",
        Code::ResourceExhausted => "resource exhausted",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::Unavailable => "unavailable",
        Code::Internal => "internal error",
        Code::Unimplemented => "unimplemented",
        _ => "error",
    }
}
