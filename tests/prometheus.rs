//! Debian's Prometheus on a loopback port: the peer the PromQL, export, storage and
//! ingest checks compare goroscope with.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Proc, eventually, free_port};

/// Where the Debian package `prometheus` puts it.
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";

/// A running Prometheus: its settings file in `dir` (no scrape targets), its TSDB at
/// `data`, and the extra command-line arguments it was started with. Killed on drop;
/// [`Prometheus::stop`] ends it with SIGTERM.
pub struct Prometheus {
    proc: Option<Proc>,
    pub port: u16,
    dir: PathBuf,
    data: PathBuf,
    args: Vec<String>,
}

impl Prometheus {
    /// Starts it on a free port and waits until `/-/ready` answers. `args` such as
    /// `--web.enable-remote-write-receiver`.
    pub fn start(dir: &Path, data: &Path, args: &[&str]) -> Prometheus {
        let mut p = Prometheus {
            proc: None,
            port: free_port(),
            dir: dir.to_owned(),
            data: data.to_owned(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        p.restart();
        p
    }

    /// Starts it (again, after a stop) on its port and data.
    pub fn restart(&mut self) {
        let config = self.dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1m\n").unwrap();
        let proc = Proc::spawn(
            "prometheus",
            Command::new(PROMETHEUS_BIN)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", self.data.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
                .args(&self.args),
        );
        self.proc = Some(proc);
        let ready = format!("{}/-/ready", self.url());
        eventually(Duration::from_secs(120), "prometheus ready", || {
            let out = Command::new("curl").args(["-sf", &ready]).output().ok()?;
            out.status.success().then_some(())
        });
    }

    /// Stops it with SIGTERM: it closes its database as it would in production.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate();
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, Proc::pid)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
