//! Aggregator settings: defaults, then the TOML file, then `GOROSCOPE_AGGREGATOR_*`
//! environment variables (`__` between nested keys), then command-line flags.
//! `deploy/aggregator.example.toml` documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use goroscope_daemon::settings::TlsSettings;
use goroscope_proto::tls::TlsFiles;
use serde::Deserialize;

pub use goroscope_daemon::settings::SettingsError;

pub const ENV_PREFIX: &str = "GOROSCOPE_AGGREGATOR";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Address the gRPC server listens on (ingest and query).
    pub listen: SocketAddr,
    /// Directory of the embedded RocksDB database.
    pub data_dir: PathBuf,
    /// Log filter, in `tracing_subscriber::EnvFilter` syntax.
    pub log: String,
    /// Plain-HTTP address of the aggregator's own `/metrics` and `/healthz`; off when
    /// unset.
    pub metrics_listen: Option<SocketAddr>,
    /// HTTPS address of the Prometheus HTTP API (docs/query.md), for Grafana and other
    /// Prometheus clients with an operator certificate; off when unset.
    pub http_listen: Option<SocketAddr>,
    pub tls: TlsSettings,
    pub limits: Limits,
    pub storage: StorageConfig,
    pub captures: CaptureConfig,
    pub detection: DetectionConfig,
    pub notify: NotifyConfig,
    /// Remote-write export of every stored sample (docs/export.md); off unless
    /// `export.remote_write_url` is set.
    pub export: goroscope_remote_write::Config,
}

/// Detection: how the detectors look at each target, and when an anomaly opens and
/// resolves (docs/detection.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DetectionConfig {
    /// Run the detectors at all.
    pub enabled: bool,
    /// How often each target with new samples is evaluated.
    #[serde(with = "humantime_serde")]
    pub evaluate_every: Duration,
    /// The history each detector looks at.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Evaluations in a row that must find a diagnosis before its anomaly opens.
    pub open_after: u32,
    /// How long a diagnosis must stay unfound before its anomaly resolves.
    #[serde(with = "humantime_serde")]
    pub resolve_after: Duration,
    /// `oom-risk` opens when the limit is reached within this.
    #[serde(with = "humantime_serde")]
    pub oom_horizon: Duration,
    /// Stored batches waiting for the detectors, at most; more are dropped and counted.
    pub queue: usize,
    /// Ask for captures that prove an incident when it opens.
    pub captures: bool,
    /// Affected targets captured per incident, and unaffected ones (controls).
    pub captures_per_incident: usize,
    pub controls_per_incident: usize,
    /// The second of two heap profiles is taken this long after the first.
    #[serde(with = "humantime_serde")]
    pub second_heap_after: Duration,
    /// Resolved anomalies and incidents are deleted after this.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            enabled: true,
            evaluate_every: Duration::from_secs(15),
            window: Duration::from_secs(30 * 60),
            open_after: 3,
            resolve_after: Duration::from_secs(300),
            oom_horizon: Duration::from_secs(6 * 3600),
            queue: 4096,
            captures: true,
            captures_per_incident: 2,
            controls_per_incident: 1,
            second_heap_after: Duration::from_secs(120),
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Captures operators ask for (`goroscope capture`): what they may cost the targets and
/// the aggregator.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Captures started across the fleet per minute, at most.
    pub max_per_minute: u32,
    /// The shortest time between two captures of one target.
    #[serde(with = "humantime_serde")]
    pub min_interval_per_target: Duration,
    /// Longest trace or CPU profile one may ask for, in seconds.
    pub max_seconds: u32,
    /// Bytes of one capture at most.
    pub max_bytes: usize,
    /// Captures running at once across the fleet, at most.
    pub max_running: usize,
    /// Stored captures older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Bytes of stored captures at most; the oldest are deleted beyond it.
    pub max_total_bytes: u64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            max_per_minute: 10,
            min_interval_per_target: Duration::from_secs(60),
            max_seconds: 60,
            max_bytes: 64 << 20,
            max_running: 4,
            retention: Duration::from_secs(7 * 24 * 3600),
            max_total_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open connections, at most; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Open connections from one IP address, at most; more are closed at once.
    pub max_connections_per_peer: usize,
    /// A connection with no request open for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Time a client has to finish the TLS handshake.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Time a collector has to send its Hello after opening the stream.
    #[serde(with = "humantime_serde")]
    pub hello_timeout: Duration,
    /// Largest message accepted from a client, in bytes.
    pub max_message_bytes: usize,
    /// Series one ingest stream may declare, at most; more are refused one by one.
    pub max_series_per_stream: usize,
    /// Targets one ingest stream may declare, at most.
    pub max_targets_per_stream: usize,
    /// Ingest streams one host may hold open, at most.
    pub max_streams_per_host: usize,
    /// Series of one target, at most.
    pub max_series_per_target: usize,
    /// How far in the future a sample's timestamp may be; later ones are refused.
    #[serde(with = "humantime_serde")]
    pub max_sample_future: Duration,
    /// Time one query may take.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Concurrent requests per connection, at most.
    pub max_concurrent_requests: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Wait for the write-ahead log to reach the disk before acknowledging a batch.
    pub sync_writes: bool,
    /// Samples one range query may return, at most.
    pub max_query_samples: usize,
    /// How long targets are kept after they were last seen; samples older than this are
    /// refused at ingest.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// The length of a time partition: the unit of compaction and of retention (a new
    /// database only; an existing one keeps its own).
    #[serde(with = "humantime_serde")]
    pub block: Duration,
    /// How long after its partition ended a sample is compacted (late samples arrive
    /// in the head until then).
    #[serde(with = "humantime_serde")]
    pub flush_grace: Duration,
    /// Memory the head (samples not yet compacted) may hold before it is compacted
    /// early, bytes; at twice it, ingest waits for compaction.
    pub head_max_bytes: usize,
    /// Writer threads (a new database only); 0 for one per core.
    pub writers: usize,
    /// Free bytes the database's disk must keep; below it batches are refused with
    /// UNAVAILABLE (collectors keep them and send them again) until there is room.
    pub min_free_bytes: u64,
}

/// Where incident changes are announced (docs/notifications.md): a JSON webhook,
/// Prometheus Alertmanager, both or neither (the default).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Every change of an incident is POSTed here as JSON (http or https).
    pub webhook_url: Option<String>,
    /// Alertmanager's base URL; alerts go to `<base>/api/v2/alerts`.
    pub alertmanager_url: Option<String>,
    /// Time one request may take, connection and TLS handshake included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How often open incidents are posted to Alertmanager again, which expires
    /// alerts that are not.
    #[serde(with = "humantime_serde")]
    pub resend_interval: Duration,
    /// Changes waiting for each sink, at most; the oldest is dropped beyond it.
    pub queue: usize,
    /// PEM certificates trusted for https besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Alertmanager's `generatorURL`, with `{id}` replaced by the incident's id.
    pub external_url: Option<String>,
    /// Extra request headers for both sinks.
    pub headers: std::collections::BTreeMap<String, String>,
    /// File holding a bearer token sent as `Authorization`; read for every request,
    /// so a renewed token is used without a restart.
    pub bearer_token_file: Option<PathBuf>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            webhook_url: None,
            alertmanager_url: None,
            timeout: Duration::from_secs(10),
            resend_interval: Duration::from_secs(60),
            queue: 1024,
            ca_file: None,
            external_url: None,
            headers: Default::default(),
            bearer_token_file: None,
        }
    }
}

impl NotifyConfig {
    pub fn validate(&self) -> Result<(), SettingsError> {
        use goroscope_daemon::settings::invalid;
        for (key, url) in [
            ("notify.webhook_url", &self.webhook_url),
            ("notify.alertmanager_url", &self.alertmanager_url),
        ] {
            if let Some(url) = url {
                // Credentials in a URL are not repeated in the error.
                let shown = if url.contains('@') { "(hidden)" } else { url };
                check_http_url(url).map_err(|reason| invalid(key, shown, reason))?;
            }
        }
        // Alertmanager refuses a whole batch over one generatorURL it cannot parse.
        if let Some(url) = &self.external_url {
            check_http_url(&url.replace("{id}", "0"))
                .map_err(|reason| invalid("notify.external_url", url, reason))?;
        }
        if self.timeout.is_zero() {
            return Err(invalid("notify.timeout", "0s", "must be longer than 0s"));
        }
        if self.resend_interval < Duration::from_secs(1) {
            return Err(invalid(
                "notify.resend_interval",
                humantime::format_duration(self.resend_interval),
                "must be at least 1s",
            ));
        }
        if !(1..=1_000_000).contains(&self.queue) {
            return Err(invalid(
                "notify.queue",
                self.queue,
                "must be from 1 to 1000000",
            ));
        }
        for (name, value) in &self.headers {
            let key = format!("notify.headers.{name}");
            if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid(&key, name, "is not a valid header name"));
            }
            // The value may be a secret: it is never repeated in the error.
            if hyper::header::HeaderValue::from_str(value).is_err() {
                return Err(invalid(&key, "(hidden)", "is not a valid header value"));
            }
        }
        for (key, path) in [
            ("notify.ca_file", &self.ca_file),
            ("notify.bearer_token_file", &self.bearer_token_file),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(invalid(key, "\"\"", "must name a file"));
            }
        }
        Ok(())
    }
}

/// An absolute http or https URL with a host and no credentials (they would show in
/// logs; `notify.bearer_token_file` and `notify.headers` carry them instead).
fn check_http_url(url: &str) -> Result<(), &'static str> {
    let uri: hyper::Uri = url.parse().map_err(|_| "is not a URL")?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
        _ => return Err("must start with http:// or https://"),
    }
    match uri.authority() {
        None => Err("must name a host"),
        Some(a) if a.as_str().contains('@') => {
            Err("must not hold credentials; use notify.bearer_token_file or notify.headers")
        }
        Some(a) if a.host().is_empty() => Err("must name a host"),
        Some(_) => Ok(()),
    }
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            listen: "127.0.0.1:7443".parse().expect("literal socket address"),
            data_dir: PathBuf::from("goroscope-data"),
            log: "info".into(),
            metrics_listen: None,
            http_listen: None,
            tls: TlsSettings::default(),
            limits: Limits::default(),
            storage: StorageConfig::default(),
            captures: CaptureConfig::default(),
            detection: DetectionConfig::default(),
            notify: NotifyConfig::default(),
            export: goroscope_remote_write::Config::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            max_connections_per_peer: 256,
            idle_timeout: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            max_message_bytes: 16 * 1024 * 1024,
            max_series_per_stream: 1_000_000,
            max_targets_per_stream: 100_000,
            max_streams_per_host: 4,
            max_series_per_target: 20_000,
            max_sample_future: Duration::from_secs(300),
            query_timeout: Duration::from_secs(30),
            max_concurrent_requests: 64,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            sync_writes: true,
            max_query_samples: 10_000_000,
            retention: Duration::from_secs(15 * 24 * 3600),
            block: Duration::from_secs(2 * 3600),
            flush_grace: Duration::from_secs(5 * 60),
            head_max_bytes: 512 << 20,
            writers: 0,
            min_free_bytes: 256 << 20,
        }
    }
}

impl AggregatorConfig {
    /// Loads the layers; `overrides` are (key, value) pairs from command-line flags.
    pub fn load(
        file: Option<&Path>,
        overrides: &[(&str, String)],
    ) -> Result<AggregatorConfig, SettingsError> {
        let config: AggregatorConfig =
            goroscope_daemon::settings::load(file, ENV_PREFIX, overrides)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        use goroscope_daemon::settings::invalid;
        let d = &self.detection;
        if d.evaluate_every < Duration::from_millis(100) || d.evaluate_every > d.window {
            return Err(invalid(
                "detection.evaluate_every",
                humantime::format_duration(d.evaluate_every),
                "must be at least 100ms and at most detection.window",
            ));
        }
        if d.window < Duration::from_secs(60) || d.window > Duration::from_secs(7 * 24 * 3600) {
            return Err(invalid(
                "detection.window",
                humantime::format_duration(d.window),
                "must be from 1m to 7days",
            ));
        }
        if d.open_after == 0 || d.open_after > 100 {
            return Err(invalid(
                "detection.open_after",
                d.open_after,
                "must be from 1 to 100",
            ));
        }
        if d.queue == 0 || d.queue > 1_000_000 {
            return Err(invalid(
                "detection.queue",
                d.queue,
                "must be from 1 to 1000000",
            ));
        }
        if d.captures_per_incident > 10 || d.controls_per_incident > 10 {
            return Err(invalid(
                "detection.captures_per_incident",
                d.captures_per_incident.max(d.controls_per_incident),
                "at most 10 affected targets and 10 controls are captured per incident",
            ));
        }
        let c = &self.captures;
        if c.max_seconds == 0 || c.max_seconds > 300 {
            return Err(invalid(
                "captures.max_seconds",
                c.max_seconds,
                "must be from 1 to 300",
            ));
        }
        // A capture is held whole while it arrives: max_running of them at most.
        if c.max_bytes < 4096 || c.max_bytes > (256 << 20) {
            return Err(invalid(
                "captures.max_bytes",
                c.max_bytes,
                "must be from 4096 to 268435456",
            ));
        }
        if c.max_total_bytes < c.max_bytes as u64 {
            return Err(invalid(
                "captures.max_total_bytes",
                c.max_total_bytes,
                "must be at least captures.max_bytes",
            ));
        }
        if c.max_running == 0 {
            return Err(invalid("captures.max_running", 0, "must be at least 1"));
        }
        let l = &self.limits;
        if l.max_connections == 0 {
            return Err(invalid(
                "limits.max_connections",
                l.max_connections,
                "must be at least 1",
            ));
        }
        if l.handshake_timeout.is_zero() {
            return Err(invalid(
                "limits.handshake_timeout",
                "0s",
                "must be longer than 0s",
            ));
        }
        if l.hello_timeout.is_zero() {
            return Err(invalid(
                "limits.hello_timeout",
                "0s",
                "must be longer than 0s",
            ));
        }
        if l.query_timeout.is_zero() {
            return Err(invalid(
                "limits.query_timeout",
                "0s",
                "must be longer than 0s",
            ));
        }
        if !(1024..=256 * 1024 * 1024).contains(&l.max_message_bytes) {
            return Err(invalid(
                "limits.max_message_bytes",
                l.max_message_bytes,
                "must be between 1024 and 268435456",
            ));
        }
        for (key, v) in [
            (
                "limits.max_connections_per_peer",
                l.max_connections_per_peer,
            ),
            ("limits.max_targets_per_stream", l.max_targets_per_stream),
            ("limits.max_streams_per_host", l.max_streams_per_host),
            ("limits.max_series_per_target", l.max_series_per_target),
        ] {
            if v == 0 {
                return Err(invalid(key, 0, "must be at least 1"));
            }
        }
        if l.idle_timeout < Duration::from_secs(1) {
            return Err(invalid(
                "limits.idle_timeout",
                humantime::format_duration(l.idle_timeout),
                "must be at least 1s",
            ));
        }
        if self.storage.retention < Duration::from_secs(3600) {
            return Err(invalid(
                "storage.retention",
                humantime::format_duration(self.storage.retention),
                "must be at least 1h",
            ));
        }
        let block = self.storage.block;
        if block < Duration::from_secs(60) || block > Duration::from_secs(7 * 24 * 3600) {
            return Err(invalid(
                "storage.block",
                humantime::format_duration(block),
                "must be between 1m and 7d",
            ));
        }
        if self.storage.head_max_bytes < 1 << 20 {
            return Err(invalid(
                "storage.head_max_bytes",
                self.storage.head_max_bytes,
                "must be at least 1048576 (1 MiB)",
            ));
        }
        if l.max_series_per_stream == 0 {
            return Err(invalid(
                "limits.max_series_per_stream",
                0,
                "must be at least 1",
            ));
        }
        if l.max_concurrent_requests == 0 {
            return Err(invalid(
                "limits.max_concurrent_requests",
                0,
                "must be at least 1",
            ));
        }
        if self.storage.max_query_samples == 0 {
            return Err(invalid(
                "storage.max_query_samples",
                0,
                "must be at least 1",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "\"\"", "must name a directory"));
        }
        self.notify.validate()?;
        self.export.validate().map_err(|e| match e {
            goroscope_remote_write::ConfigError::Invalid { key, value, reason } => {
                invalid(&format!("export.{key}"), value, reason)
            }
            other => goroscope_daemon::settings::SettingsError::Other(other.to_string()),
        })?;
        Ok(())
    }

    /// The TLS files; without `tls.cert` and `tls.key`, `certs/aggregator-localhost*.pem`.
    pub fn tls_files(&self) -> TlsFiles {
        self.tls.files("aggregator-localhost")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses_and_matches_the_defaults_it_documents() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/aggregator.example.toml");
        let config = AggregatorConfig::load(Some(&path), &[]).unwrap();
        assert_eq!(config.limits, Limits::default());
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(config.http_listen, Some("127.0.0.1:9443".parse().unwrap()));
        assert_eq!(config.storage, StorageConfig::default());
    }

    #[test]
    fn kubernetes_manifest_settings_parse() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/aggregator.toml");
        let config = AggregatorConfig::load(Some(&path), &[]).unwrap();
        assert_eq!(config.listen, "0.0.0.0:7443".parse().unwrap());
        assert_eq!(config.data_dir, Path::new("/var/lib/goroscope/data"));
        assert_eq!(config.tls.cert, Path::new("/etc/goroscope/tls/tls.crt"));
    }

    #[test]
    fn flags_override_the_file_and_bad_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\n[limits]\nmax_connections = 5\n",
        )
        .unwrap();
        let config =
            AggregatorConfig::load(Some(&path), &[("listen", "127.0.0.1:2".into())]).unwrap();
        assert_eq!(config.listen.port(), 2);
        assert_eq!(config.limits.max_connections, 5);

        std::fs::write(&path, "[limits]\nmax_connections = 0\n").unwrap();
        let err = AggregatorConfig::load(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("limits.max_connections") && err.contains('0'),
            "{err}"
        );

        std::fs::write(&path, "listen = \"nowhere\"\n").unwrap();
        let err = AggregatorConfig::load(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen") && err.contains("nowhere"), "{err}");

        std::fs::write(&path, "lisen = \"127.0.0.1:1\"\n").unwrap();
        let err = AggregatorConfig::load(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
    }
}
