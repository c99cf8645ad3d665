//! Collector settings: defaults, then the TOML file, then `GOROSCOPE_COLLECTOR_*`
//! environment variables (`__` between nested keys), then command-line flags.
//! `deploy/collector.example.toml` documents every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use goroscope_daemon::settings::{SettingsError, TlsSettings, invalid};
use goroscope_proto::tls::TlsFiles;
use serde::Deserialize;

pub const ENV_PREFIX: &str = "GOROSCOPE_COLLECTOR";

/// The labels the collector sets on every target from its build info.
pub const BUILT_IN_LABELS: [&str; 5] = ["service", "version", "go_version", "module", "path"];

/// The labels the collector sets on a target from its cgroup path, when found there.
pub const CGROUP_LABELS: [&str; 2] = ["container_id", "pod_uid"];

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
    /// Plain-HTTP address of the collector's own `/metrics` and `/healthz`; off when
    /// unset.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where procfs is mounted (a DaemonSet mounts the host's /proc).
    pub proc_root: PathBuf,
    /// Where the host's cgroup hierarchies are mounted: the unified one (cgroup v2), or
    /// one directory per v1 hierarchy (`memory`, `cpu,cpuacct`, ...) and `unified`.
    pub cgroup_root: PathBuf,
    /// Labels added to every target of this host (zone, cluster, ...).
    pub labels: BTreeMap<String, String>,
    pub tls: TlsSettings,
    pub discovery: DiscoveryConfig,
    pub limits: Limits,
    /// Goroutine stack summaries: the pause budget and schedule (see `stacks`).
    pub stacks: crate::stacks::StacksConfig,
    pub kubernetes: KubernetesConfig,
    pub spool: SpoolConfig,
}

/// The disk spool (see the `spool` module): scrapes kept on disk until acknowledged.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Off: scrapes are kept in memory only (`limits.max_pending_bytes`) and a restart
    /// loses the unacknowledged ones.
    pub enabled: bool,
    /// The spool's directory, one per collector (it is locked while in use).
    pub dir: PathBuf,
    /// Bytes of segment files at most; the oldest are dropped beyond this.
    pub max_bytes: u64,
    /// Size at which a segment file is closed and a new one started.
    pub segment_bytes: u64,
    /// Longest time a written record waits for an fsync (and acks for the checkpoint).
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            enabled: true,
            dir: PathBuf::from("/var/lib/goroscope/spool"),
            max_bytes: 256 * 1024 * 1024,
            segment_bytes: 8 * 1024 * 1024,
            sync_interval: Duration::from_secs(1),
        }
    }
}

impl SpoolConfig {
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !self.enabled {
            return Ok(());
        }
        if self.dir.as_os_str().is_empty() {
            return Err(invalid("spool.dir", "\"\"", "must name a directory"));
        }
        if self.segment_bytes < 4096 {
            return Err(invalid(
                "spool.segment_bytes",
                self.segment_bytes,
                "must be at least 4096",
            ));
        }
        if self.max_bytes < 2 * self.segment_bytes {
            return Err(invalid(
                "spool.max_bytes",
                self.max_bytes,
                &format!(
                    "must be at least twice spool.segment_bytes ({})",
                    self.segment_bytes
                ),
            ));
        }
        if self.sync_interval < Duration::from_millis(10)
            || self.sync_interval > Duration::from_secs(60)
        {
            return Err(invalid(
                "spool.sync_interval",
                humantime::format_duration(self.sync_interval),
                "must be between 10ms and 1m",
            ));
        }
        Ok(())
    }

    pub fn options(&self) -> crate::spool::SpoolOptions {
        crate::spool::SpoolOptions {
            dir: self.dir.clone(),
            max_bytes: self.max_bytes,
            segment_bytes: self.segment_bytes,
        }
    }
}

/// Pod metadata from the Kubernetes API server ([`crate::kube`]).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Watch this node's pods. Unset: on when `$KUBERNETES_SERVICE_HOST` is set (the
    /// collector runs in a pod); [`CollectorConfig::load`] resolves it.
    pub enabled: Option<bool>,
    /// The node whose pods are watched. Empty: `$NODE_NAME`.
    pub node_name: String,
}

impl KubernetesConfig {
    /// Whether the watch runs (after [`CollectorConfig::load`] resolved `enabled`).
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(false)
    }
}

/// The labels the collector sets from the pod of a target when `[kubernetes]` is on,
/// besides `service` and `version` ([`crate::kube::apply_pod_labels`]).
pub const KUBERNETES_LABELS: [&str; 3] = ["pod", "namespace", "container"];

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Ports to try first for `/debug/vars`, `/debug/pprof/` and `/metrics` on each Go
    /// process.
    pub ports: Vec<u16>,
    /// Also try every other TCP port the process listens on.
    pub probe_listening: bool,
    /// The longest wait before looking again for the endpoints of a process that had
    /// none; the waits start at 1s and double up to this.
    #[serde(with = "humantime_serde")]
    pub reprobe_interval: Duration,
    /// By service (the `service` label): the only ports its processes are probed on, in
    /// order. `ports` and `probe_listening` do not apply to a service listed here; an
    /// empty list means its processes are never probed.
    pub service_ports: BTreeMap<String, Vec<u16>>,
    /// Watch only the Go processes in the collector's own network namespace (their
    /// /proc/PID/ns/net against the collector's): a collector per pod or per network
    /// namespace that shares its pid namespace with the host's other processes must
    /// not report them. A process whose namespace cannot be read is not watched.
    pub own_network_namespace: bool,
}

/// Ports of one process probed at most.
pub const MAX_PROBED_PORTS: usize = 16;

impl DiscoveryConfig {
    pub fn validate(&self) -> Result<(), SettingsError> {
        check_ports("discovery.ports", &self.ports)?;
        if self.reprobe_interval < Duration::from_secs(1) {
            return Err(invalid(
                "discovery.reprobe_interval",
                humantime::format_duration(self.reprobe_interval),
                "must be at least 1s",
            ));
        }
        for (service, ports) in &self.service_ports {
            if service.is_empty() {
                return Err(invalid(
                    "discovery.service_ports",
                    "\"\"",
                    "a service name cannot be empty",
                ));
            }
            check_ports(&format!("discovery.service_ports.{service}"), ports)?;
        }
        Ok(())
    }
}

fn check_ports(key: &str, ports: &[u16]) -> Result<(), SettingsError> {
    if ports.len() > MAX_PROBED_PORTS {
        return Err(invalid(
            key,
            format!("{} ports", ports.len()),
            &format!("at most {MAX_PROBED_PORTS} ports are probed"),
        ));
    }
    for (i, port) in ports.iter().enumerate() {
        if *port == 0 {
            return Err(invalid(key, 0, "port 0 cannot be probed"));
        }
        if ports[..i].contains(port) {
            return Err(invalid(key, port, "listed twice"));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Bytes of unacknowledged scrapes kept in memory. With the spool, older ones are
    /// read back from disk; without it (or for a scrape the spool could not write),
    /// the oldest are dropped beyond this.
    pub max_pending_bytes: usize,
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
    /// Series kept at most from one target's `/metrics`, in the order it lists them;
    /// the rest are counted (`goroscope_collector_series_capped_total`) and left out.
    pub max_series_per_target: usize,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            host: String::new(),
            aggregator: "https://127.0.0.1:7443".into(),
            server_name: "localhost".into(),
            interval: Duration::from_secs(10),
            log: "info".into(),
            metrics_listen: None,
            proc_root: PathBuf::from("/proc"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            labels: BTreeMap::new(),
            tls: TlsSettings::default(),
            discovery: DiscoveryConfig::default(),
            limits: Limits::default(),
            stacks: crate::stacks::StacksConfig::default(),
            kubernetes: KubernetesConfig::default(),
            spool: SpoolConfig::default(),
        }
    }
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            ports: Vec::new(),
            probe_listening: true,
            reprobe_interval: Duration::from_secs(60),
            service_ports: BTreeMap::new(),
            own_network_namespace: false,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending_bytes: 64 * 1024 * 1024,
            max_in_flight: 16,
            scrape_timeout: Duration::from_secs(3),
            max_response_bytes: 8 * 1024 * 1024,
            max_targets: 5000,
            max_concurrent_scrapes: 32,
            max_backoff: Duration::from_secs(30),
            max_series_per_target: 2000,
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
            goroscope_daemon::settings::load(file, ENV_PREFIX, overrides)?;
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
        let k = &mut self.kubernetes;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if k.enabled.is_none() {
            k.enabled = Some(env("KUBERNETES_SERVICE_HOST").is_some());
        }
        if k.is_enabled() && k.node_name.is_empty() {
            k.node_name = env("NODE_NAME").ok_or_else(|| {
                invalid(
                    "kubernetes.node_name",
                    "\"\"",
                    "not set and $NODE_NAME is empty: the pod watch needs this node's name \
                     (the DaemonSet sets NODE_NAME from spec.nodeName), or set \
                     kubernetes.enabled = false",
                )
            })?;
        }
        let files = self.tls.files(&format!("collector-{}", self.host));
        self.tls.cert = files.cert;
        self.tls.key = files.key;
        Ok(())
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        let node = &self.kubernetes.node_name;
        // It goes into the watch's field selector: a node's name (a DNS subdomain), not a
        // selector of its own.
        if self.kubernetes.is_enabled()
            && (node.len() > 253
                || !node.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                }))
        {
            return Err(invalid(
                "kubernetes.node_name",
                format!("{node:?}"),
                "must be a node's name: lower-case letters, digits, '-' and '.'",
            ));
        }
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
        self.stacks.validate()?;
        let l = &self.limits;
        if l.max_pending_bytes < 64 * 1024 {
            return Err(invalid(
                "limits.max_pending_bytes",
                l.max_pending_bytes,
                "must be at least 65536",
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
        if l.max_series_per_target == 0 {
            return Err(invalid(
                "limits.max_series_per_target",
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
        // The aggregator would refuse every target of this host over a bad label: refuse
        // it here, at start, naming the key.
        for (name, value) in &self.labels {
            if let Err(e) = goroscope_proto::rules::check_label(name, value) {
                return Err(invalid(
                    &format!("labels.{name}"),
                    format!("{value:?}"),
                    &e.to_string(),
                ));
            }
            if BUILT_IN_LABELS.contains(&name.as_str()) {
                return Err(invalid(
                    &format!("labels.{name}"),
                    format!("{value:?}"),
                    "the collector sets this label from the build info",
                ));
            }
            if CGROUP_LABELS.contains(&name.as_str()) {
                return Err(invalid(
                    &format!("labels.{name}"),
                    format!("{value:?}"),
                    "the collector sets this label from the process's cgroup",
                ));
            }
            if self.kubernetes.is_enabled() && KUBERNETES_LABELS.contains(&name.as_str()) {
                return Err(invalid(
                    &format!("labels.{name}"),
                    format!("{value:?}"),
                    "the collector sets this label from the target's pod ([kubernetes])",
                ));
            }
        }
        let kubernetes_labels = if self.kubernetes.is_enabled() {
            KUBERNETES_LABELS.len()
        } else {
            0
        };
        let own = BUILT_IN_LABELS.len() + CGROUP_LABELS.len() + kubernetes_labels;
        let most = goroscope_proto::rules::MAX_LABELS - own;
        if self.labels.len() > most {
            return Err(invalid(
                "labels",
                format!("{} labels", self.labels.len()),
                &format!("at most {most} (the collector adds {own} of its own)"),
            ));
        }
        self.discovery.validate()?;
        self.spool.validate()?;
        Ok(())
    }

    pub fn tls_files(&self) -> TlsFiles {
        self.tls.files(&format!("collector-{}", self.host))
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
        assert_eq!(config.spool, SpoolConfig::default());
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
            (
                "host = \"a\"\n[labels]\ncluster-name = \"prod\"\n",
                "labels.cluster-name",
                "letters, digits and '_'",
            ),
            (
                "host = \"a\"\n[labels]\nhost = \"prod\"\n",
                "labels.host",
                "target's id",
            ),
            (
                "host = \"a\"\n[labels]\nservice = \"x\"\n",
                "labels.service",
                "build info",
            ),
            (
                "host = \"a\"\n[labels]\npod_uid = \"x\"\n",
                "labels.pod_uid",
                "cgroup",
            ),
            (
                "host = \"a\"\n[spool]\nmax_bytes = 100000\nsegment_bytes = 65536\n",
                "spool.max_bytes",
                "100000",
            ),
            (
                "host = \"a\"\n[spool]\nsync_interval = \"2m\"\n",
                "spool.sync_interval",
                "2m",
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
    fn a_label_value_over_the_limit_is_refused_for_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            format!("host = \"a\"\n[labels]\nzone = \"{}\"\n", "x".repeat(1100)),
        )
        .unwrap();
        let err = CollectorConfig::load(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("labels.zone") && err.contains("1100 bytes, longer than 1024"),
            "{err}"
        );
    }

    #[test]
    fn kubernetes_manifest_settings_parse() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/collector.toml");
        // The DaemonSet sets the host (its pod's name) and NODE_NAME in the environment.
        let config = CollectorConfig::load(
            Some(&path),
            &[
                ("host", "goroscope-collector-x7k2p".into()),
                ("kubernetes.node_name", "node-a".into()),
            ],
        )
        .unwrap();
        assert!(config.kubernetes.is_enabled());
        assert_eq!(config.kubernetes.node_name, "node-a");
        assert_eq!(config.proc_root, Path::new("/host/proc"));
        assert_eq!(config.tls.cert, Path::new("/etc/goroscope/tls/tls.crt"));
    }

    #[test]
    fn kubernetes_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "host = \"a\"\n[kubernetes]\nenabled = false\n").unwrap();
        let config = CollectorConfig::load(Some(&path), &[]).unwrap();
        assert!(!config.kubernetes.is_enabled());

        for (text, key, value) in [
            (
                "[kubernetes]\nenabled = true\nnode_name = \"a,metadata.name=b\"\n",
                "kubernetes.node_name",
                "a,metadata.name=b",
            ),
            (
                "[kubernetes]\nenabled = true\nnode_name = \"n\"\n[labels]\npod = \"x\"\n",
                "labels.pod",
                "target's pod",
            ),
            ("[kubernetes]\nenabeld = true\n", "enabeld", "unknown field"),
        ] {
            std::fs::write(&path, format!("host = \"a\"\n{text}")).unwrap();
            let err = CollectorConfig::load(Some(&path), &[])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(key) && err.contains(value),
                "{text:?} gave {err}"
            );
        }
        // Without a node name the watch cannot be scoped to this node.
        if std::env::var_os("NODE_NAME").is_none() {
            std::fs::write(&path, "host = \"a\"\n[kubernetes]\nenabled = true\n").unwrap();
            let err = CollectorConfig::load(Some(&path), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("kubernetes.node_name"), "{err}");
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

    #[test]
    fn own_network_namespace_is_off_unless_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "host = \"a\"\n").unwrap();
        let config = CollectorConfig::load(Some(&path), &[]).unwrap();
        assert!(!config.discovery.own_network_namespace);
        std::fs::write(
            &path,
            "host = \"a\"\n[discovery]\nown_network_namespace = true\n",
        )
        .unwrap();
        let config = CollectorConfig::load(Some(&path), &[]).unwrap();
        assert!(config.discovery.own_network_namespace);
    }

    #[test]
    fn service_ports_parse_and_bad_ones_name_the_service() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "host = \"a\"\n[discovery]\nprobe_listening = false\n\
             [discovery.service_ports]\nbilling = [6060, 8080]\nbatch = []\n",
        )
        .unwrap();
        let config = CollectorConfig::load(Some(&path), &[]).unwrap();
        assert_eq!(config.discovery.service_ports["billing"], [6060, 8080]);
        assert!(config.discovery.service_ports["batch"].is_empty());
        assert!(!config.discovery.probe_listening);

        let many: Vec<String> = (1..=17).map(|p| p.to_string()).collect();
        for (table, key, value) in [
            (
                "billing = [6060, 0]",
                "discovery.service_ports.billing",
                "= 0",
            ),
            (
                "billing = [6060, 6060]",
                "discovery.service_ports.billing",
                "= 6060",
            ),
            (
                &format!("billing = [{}]", many.join(", ")),
                "discovery.service_ports.billing",
                "17 ports",
            ),
        ] {
            std::fs::write(
                &path,
                format!("host = \"a\"\n[discovery.service_ports]\n{table}\n"),
            )
            .unwrap();
            let err = CollectorConfig::load(Some(&path), &[])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(key) && err.contains(value),
                "{table:?} gave {err}"
            );
        }
        for (text, key) in [
            ("[discovery]\nports = [0]\n", "discovery.ports"),
            (
                "[discovery]\nreprobe_interval = \"500ms\"\n",
                "discovery.reprobe_interval",
            ),
            ("[discovery.service_ports]\nbilling = [70000]\n", "billing"),
        ] {
            std::fs::write(&path, format!("host = \"a\"\n{text}")).unwrap();
            let err = CollectorConfig::load(Some(&path), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text:?} gave {err}");
        }
    }
}
