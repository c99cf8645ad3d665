//! A real Prometheus Alertmanager on a loopback port, for the notification tests. Needs
//! only std, serde_json and tempfile: the aggregator's own tests include this file by
//! path, since they cannot depend on this crate (which builds every binary).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where the Debian package `prometheus-alertmanager` puts it.
pub const ALERTMANAGER_BIN: &str = "/usr/bin/prometheus-alertmanager";

/// Bytes of one answer read at most.
const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// Alertmanager with its own storage and a route to a receiver that sends nothing;
/// clustering off. Killed on drop.
pub struct Alertmanager {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Alertmanager {
    /// Starts it and waits until `/-/ready` answers 200. Panics if the binary is
    /// missing: scripts/install-deps.sh installs it.
    pub fn start() -> Alertmanager {
        assert!(
            Path::new(ALERTMANAGER_BIN).exists(),
            "{ALERTMANAGER_BIN} is missing: run scripts/install-deps.sh (Debian package prometheus-alertmanager)"
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: none\n  group_wait: 1s\nreceivers:\n  - name: none\n",
        )
        .expect("write the Alertmanager configuration");
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).expect("log file");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind a loopback port")
            .port();
        let child = Command::new(ALERTMANAGER_BIN)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {ALERTMANAGER_BIN}: {e}"));
        let mut am = Alertmanager { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if matches!(am.get("/-/ready"), Some((200, _))) {
                return am;
            }
            if let Ok(Some(status)) = am.child.try_wait() {
                panic!("alertmanager exited ({status}):\n{}", am.log());
            }
            assert!(
                Instant::now() < deadline,
                "alertmanager not ready after 30s:\n{}",
                am.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`, the base URL `notify.alertmanager_url` takes.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `GET /api/v2/alerts`: the alerts it holds, resolved ones left out.
    pub fn alerts(&self) -> serde_json::Value {
        self.get_json("/api/v2/alerts")
    }

    /// `GET path`, parsed as JSON; panics unless the answer is 200.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        match self.get(path) {
            Some((200, body)) => {
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
            }
            other => panic!("GET {path}: {other:?}\n{}", self.log()),
        }
    }

    /// `GET path`: the status and body, or `None` if there was no answer. HTTP/1.0, so
    /// the answer is never chunked and ends with the connection.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let addr = ([127, 0, 0, 1], self.port).into();
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nAccept: application/json\r\n\r\n",
            self.port
        )
        .ok()?;
        let mut answer = Vec::new();
        stream
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut answer)
            .ok()?;
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- alertmanager log ----\n{}", self.log());
        }
    }
}
