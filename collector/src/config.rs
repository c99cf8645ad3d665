//! Collector settings: defaults, then the TOML file, then `GOROSCOPE_COLLECTOR_*`
//! environment variables (`__` between nested keys), then command-line flags.
//! `deploy/collector.example.toml` documents every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use goroscope_proto::settings::{SettingsError, invalid};
use goroscope_proto::tls::TlsFiles;
use serde::Deserialize;

pub const ENV_PREFIX: &str = "GOROSCOPE_COLLECTOR";

/// The shortest sampling interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorConfig {
    /// This host's name, as its certificate names it. Empty: `$NODE_NAME`, else the
    /// kernel's host name.
    pub host: String,
    /// The aggregator's gRPC address.
    pub aggregator: String,
    /// The DNS name the aggregator's certificate must carry.
    pub server_name: String,
    /// Time between two samples of every target.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Log filter, in `tracing_subscriber::EnvFilter` syntax.
    pub log: String,
    /// Where procfs is mounted (a DaemonSet mounts the host's /proc).
    pub proc_root: PathBuf,
    /// Labels added to every target of this host (zone, cluster, ...).
    pub labels: BTreeMap<String, String>,
    pub tls: TlsConfig,
    pub discovery: DiscoveryConfig,
    pub limits: Limits,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub ca: PathBuf,
    /// Empty: `certs/collector-<host>.pem`.
    pub cert: PathBuf,
    /// Empty: `certs/collector-<host>-key.pem`.
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Ports to try first for `/debug/vars` and `/debug/pprof/` on each Go process.
    pub ports: Vec<u16>,
    /// Also try every other TCP port the process listens on.
    pub probe_listening: bool,
    /// How long to wait before looking again for the endpoints of a process that had none.
    #[serde(with = "humantime_serde")]
    pub reprobe_interval: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Batches kept for re-sending while the aggregator is unreachable; the oldest are
    /// dropped beyond this.
    pub max_pending_batches: usize,
    /// Batches sent and not yet acknowledged, at most.
    pub max_in_flight: usize,
    /// Time one HTTP request to a process's endpoint may take.
    #[serde(with = "humantime_serde")]
    pub scrape_timeout: Duration,
    /// Largest endpoint response read, in bytes.
    pub max_response_bytes: usize,
    /// Go processes sampled at most.
    pub max_targets: usize,
    /// Go processes sampled at the same time, at most (each with its own HTTP requests).
    pub max_concurrent_scrapes: usize,
    /// Longest wait between two attempts to reach the aggregator.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            host: String::new(),
            aggregator: "https://127.0.0.1:7443".into(),
            server_name: "localhost".into(),
            interval: Duration::from_secs(10),
            log: "info".into(),
            proc_root: PathBuf::from("/proc"),
            labels: BTreeMap::new(),
            tls: TlsConfig::default(),
            discovery: DiscoveryConfig::default(),
            limits: Limits::default(),
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca: PathBuf::from("certs/ca.pem"),
            cert: PathBuf::new(),
            key: PathBuf::new(),
        }
    }
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            ports: Vec::new(),
            probe_listening: true,
            reprobe_interval: Duration::from_secs(60),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending_batches: 360,
            max_in_flight: 16,
            scrape_timeout: Duration::from_secs(3),
            max_response_bytes: 8 * 1024 * 1024,
            max_targets: 5000,
            max_concurrent_scrapes: 32,
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl CollectorConfig {
    /// Loads the layers, fills in the derived defaults (host, certificate paths) and
    /// validates. `overrides` are (key, value) pairs from command-line flags.
    pub fn load(
        file: Option<&Path>,
        overrides: &[(&str, String)],
    ) -> Result<CollectorConfig, SettingsError> {
        let mut config: CollectorConfig =
            goroscope_proto::settings::load(file, ENV_PREFIX, overrides)?;
        config.resolve()?;
        config.validate()?;
        Ok(config)
    }

    fn resolve(&mut self) -> Result<(), SettingsError> {
        if self.host.is_empty() {
            self.host = std::env::var("NODE_NAME")
                .ok()
                .filter(|h| !h.is_empty())
                .or_else(|| {
                    std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .ok()
                        .map(|h| h.trim().to_owned())
                })
                .ok_or_else(|| {
                    invalid("host", "\"\"", "not set and the host name is unreadable")
                })?;
        }
        let files = TlsFiles::in_dir(Path::new("certs"), &format!("collector-{}", self.host));
        if self.tls.cert.as_os_str().is_empty() {
            self.tls.cert = files.cert;
        }
        if self.tls.key.as_os_str().is_empty() {
            self.tls.key = files.key;
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Err(e) = goroscope_proto::Identity::collector(self.host.clone()) {
            return Err(invalid("host", format!("{:?}", self.host), &e.to_string()));
        }
        if !(self.aggregator.starts_with("https://") || self.aggregator.starts_with("http://")) {
            return Err(invalid(
                "aggregator",
                format!("{:?}", self.aggregator),
                "must be a URL such as https://aggregator:7443",
            ));
        }
        if self.aggregator.starts_with("http://") {
            return Err(invalid(
                "aggregator",
                format!("{:?}", self.aggregator),
                "must use https://: the aggregator speaks mTLS only",
            ));
        }
        if self.server_name.is_empty() {
            return Err(invalid(
                "server_name",
                "\"\"",
                "must name the aggregator's certificate",
            ));
        }
        if self.interval < MIN_INTERVAL {
            return Err(invalid(
                "interval",
                humantime::format_duration(self.interval),
                "must be at least 1s",
            ));
        }
        let l = &self.limits;
        if l.max_pending_batches == 0 {
            return Err(invalid(
                "limits.max_pending_batches",
                0,
                "must be at least 1",
            ));
        }
        if l.max_in_flight == 0 {
            return Err(invalid("limits.max_in_flight", 0, "must be at least 1"));
        }
        if l.scrape_timeout.is_zero() {
            return Err(invalid(
                "limits.scrape_timeout",
                "0s",
                "must be longer than 0s",
            ));
        }
        if l.max_response_bytes < 4096 {
            return Err(invalid(
                "limits.max_response_bytes",
                l.max_response_bytes,
                "must be at least 4096",
            ));
        }
        if l.max_targets == 0 {
            return Err(invalid("limits.max_targets", 0, "must be at least 1"));
        }
        if l.max_concurrent_scrapes == 0 {
            return Err(invalid(
                "limits.max_concurrent_scrapes",
                0,
                "must be at least 1",
            ));
        }
        if l.max_backoff < Duration::from_secs(1) {
            return Err(invalid(
                "limits.max_backoff",
                humantime::format_duration(l.max_backoff),
                "must be at least 1s",
            ));
        }
        for name in self.labels.keys() {
            if matches!(name.as_str(), "host" | "pid") || name.is_empty() {
                return Err(invalid(
                    &format!("labels.{name}"),
                    format!("{name:?}"),
                    "host and pid are set by the collector",
                ));
            }
        }
        Ok(())
    }

    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.tls.ca.clone(),
            cert: self.tls.cert.clone(),
            key: self.tls.key.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses_and_matches_the_defaults_it_documents() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/collector.example.toml");
        let config = CollectorConfig::load(Some(&path), &[]).unwrap();
        assert_eq!(config.host, "node-a");
        assert_eq!(config.interval, Duration::from_secs(10));
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.discovery, DiscoveryConfig::default());
        assert_eq!(config.tls.cert, Path::new("certs/collector-node-a.pem"));
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        for (text, key, value) in [
            ("host = \"a\"\ninterval = \"500ms\"\n", "interval", "500ms"),
            ("host = \"a\"\ninterval = \"soon\"\n", "interval", "soon"),
            ("host = \"a b\"\n", "host", "a b"),
            (
                "host = \"a\"\naggregator = \"http://x:1\"\n",
                "aggregator",
                "http://x:1",
            ),
            (
                "host = \"a\"\n[limits]\nmax_targets = 0\n",
                "limits.max_targets",
                "0",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = CollectorConfig::load(Some(&path), &[])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(key) && err.contains(value),
                "{text:?} gave {err}"
            );
        }
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "host = \"a\"\ninterval = \"5s\"\n").unwrap();
        let config = CollectorConfig::load(Some(&path), &[("interval", "1s".into())]).unwrap();
        assert_eq!(config.interval, Duration::from_secs(1));
    }
}
