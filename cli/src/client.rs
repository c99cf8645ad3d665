//! Connecting to the aggregator's query service over mTLS, and the settings that say
//! where it is and which certificate to show: flags, then `GOROSCOPE_*` environment,
//! then the config file (`--config`, else `~/.config/goroscope/cli.toml` if present).
//! Text from the aggregator in an error is escaped, as in tables.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use goroscope_daemon::escape::{Escaped, escape};
use goroscope_proto::v1;
use goroscope_proto::v1::query_client::QueryClient;
use serde::Deserialize;
use tonic::transport::Channel;

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

/// Time to connect and finish the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

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
    let tls = goroscope_proto::connect::client_config(&s.ca, Some((&s.cert, &s.key)))?;
    // The connection and the TLS handshake under one deadline: an address that accepts
    // TCP and never speaks TLS fails in seconds instead of hanging.
    let connector =
        goroscope_proto::connect::Connector::fixed(tls, &s.server_name, CONNECT_TIMEOUT)
            .with_context(|| format!("aggregator address {:?}", s.addr))?
            .request_timeout(REQUEST_TIMEOUT);
    let channel = connector.connect(&s.addr).await.map_err(|e| {
        anyhow::anyhow!(
            "connect to {}: {}",
            s.addr,
            goroscope_daemon::escape::escape(&goroscope_daemon::one_line(&e))
        )
    })?;
    Ok(QueryClient::new(channel).max_decoding_message_size(256 * 1024 * 1024))
}

/// A refusal or failure of a call, in one line; the aggregator's words escaped, since a
/// status message may carry a peer's string (a label value, a metric name) as sent.
pub fn status_error(addr: &str, status: tonic::Status) -> anyhow::Error {
    use std::error::Error;
    let mut message = format!(
        "aggregator at {addr}: {}: {}",
        goroscope_daemon::code_name(status.code()),
        status.message()
    );
    if let Some(source) = status.source() {
        message.push_str(": ");
        message.push_str(&goroscope_daemon::one_line(source));
    }
    anyhow::anyhow!(escape(&message).into_owned())
}

/// How many pages of targets `goroscope targets` follows at most: ten million targets at
/// the aggregator's default page size, far more than a fleet has; past it a
/// `next_page_token` that never ends would keep the command (and its memory) growing.
pub const MAX_TARGET_PAGES: usize = 10_000;

/// Every target `request` selects, following `next_page_token` page after page, for at
/// most `max_pages` pages.
pub async fn list_all_targets(
    client: &mut QueryClient<Channel>,
    addr: &str,
    mut request: v1::ListTargetsRequest,
    max_pages: usize,
) -> anyhow::Result<Vec<v1::TargetInfo>> {
    let mut targets = Vec::new();
    for _ in 0..max_pages {
        let page = client
            .list_targets(request.clone())
            .await
            .map_err(|s| status_error(addr, s))?
            .into_inner();
        targets.extend(page.targets);
        if page.next_page_token.is_empty() {
            return Ok(targets);
        }
        if page.next_page_token == request.page_token {
            // Asking again would get the same page forever.
            bail!(
                "aggregator at {addr}: answered page token \"{}\" with itself as the next one",
                Escaped::max(&page.next_page_token, 100)
            );
        }
        request.page_token = page.next_page_token;
    }
    bail!(
        "aggregator at {addr}: more than {max_pages} pages of targets ({} targets so far); \
         stopped following next_page_token",
        targets.len()
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tonic::Status;

    use super::*;

    /// Answers `ListTargets` a page at a time: page `n` holds target `h<n>` and points to
    /// `p<n+1>`, up to `pages` pages (never ending without a bound); `stuck` answers every
    /// token with itself. Returns the client and the tokens asked for.
    async fn serve(
        pages: Option<usize>,
        stuck: bool,
    ) -> (QueryClient<Channel>, Arc<Mutex<Vec<String>>>) {
        let asked: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = asked.clone();
        let list_targets = move |request: v1::ListTargetsRequest| {
            log.lock().unwrap().push(request.page_token.clone());
            let n: usize = match request.page_token.as_str() {
                "" => 0,
                token => token
                    .strip_prefix('p')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| Status::invalid_argument(token))?,
            };
            let next = if stuck && n > 0 {
                request.page_token.clone()
            } else if pages.is_some_and(|pages| n + 1 >= pages) {
                String::new()
            } else {
                format!("p{}", n + 1)
            };
            Ok(v1::ListTargetsResponse {
                targets: vec![v1::TargetInfo {
                    id: Some(v1::TargetId {
                        host: format!("h{n}"),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                next_page_token: next,
            })
        };
        let client = crate::stub::serve(crate::stub::Stub {
            list_targets: Some(Box::new(list_targets)),
            ..Default::default()
        })
        .await;
        (client, asked)
    }

    fn hosts(targets: &[v1::TargetInfo]) -> Vec<String> {
        targets
            .iter()
            .map(|t| t.id.clone().unwrap_or_default().host)
            .collect()
    }

    #[tokio::test]
    async fn targets_follow_every_page() {
        let (mut client, asked) = serve(Some(3), false).await;
        let request = v1::ListTargetsRequest {
            seen_since_ms: 42,
            ..Default::default()
        };
        let targets = list_all_targets(&mut client, "test", request, 10)
            .await
            .unwrap();
        assert_eq!(hosts(&targets), ["h0", "h1", "h2"]);
        assert_eq!(*asked.lock().unwrap(), ["", "p1", "p2"]);

        // Exactly as many pages as allowed is no error.
        let targets = list_all_targets(&mut client, "test", Default::default(), 3)
            .await
            .unwrap();
        assert_eq!(targets.len(), 3);
    }

    #[tokio::test]
    async fn targets_stop_after_the_page_bound() {
        let (mut client, _) = serve(None, false).await;
        let err = list_all_targets(&mut client, "test", Default::default(), 5)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "aggregator at test: more than 5 pages of targets (5 targets so far); \
             stopped following next_page_token"
        );

        let (mut client, _) = serve(None, true).await;
        let err = list_all_targets(&mut client, "test", Default::default(), 5)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "aggregator at test: answered page token \"p1\" with itself as the next one"
        );
    }

    #[test]
    fn status_errors_print_no_raw_control_character() {
        let status = Status::invalid_argument("bad label value \"\u{1b}]0;PWNED\u{7}\"");
        let message = status_error("https://agg:7443", status).to_string();
        assert_eq!(
            message,
            "aggregator at https://agg:7443: invalid argument: bad label value \"\\e]0;PWNED\\x07\""
        );
    }
}
