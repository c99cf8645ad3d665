//! The `[export]` settings. The aggregator embeds [`Config`] in its own configuration;
//! docs/export.md describes each key.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Most samples one request may carry; receivers refuse far smaller bodies than this
/// allows anyway (Mimir's default limit is 10k series a request).
pub const MAX_SAMPLES_PER_SEND: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The receiver's remote-write endpoint, e.g. `https://mimir:8080/api/v1/push`.
    /// Export is off without one.
    pub remote_write_url: Option<String>,
    /// Samples packed into one request at most.
    pub max_samples_per_send: usize,
    /// The deadline of one request, connection and TLS handshake included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// What the aggregator's export queue may hold before it slows ingest (the sender
    /// does not use it; the queue does).
    pub queue_max_bytes: u64,
    /// PEM file of the CAs that sign the receiver's certificate; the system's roots
    /// when unset.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate chain and key, for a receiver that requires mTLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A file holding a bearer token, read again for every request so that a renewed
    /// token is used.
    pub bearer_token_file: Option<PathBuf>,
    /// Basic authentication: the user, and a file holding the password.
    pub basic_auth_user: Option<String>,
    pub basic_auth_password_file: Option<PathBuf>,
    /// The first wait before retrying a failed request; doubled on each failure...
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    /// ... up to this.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How often the queue is read even when no new entry was announced.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            remote_write_url: None,
            max_samples_per_send: 2000,
            timeout: Duration::from_secs(30),
            queue_max_bytes: 256 * 1024 * 1024,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            bearer_token_file: None,
            basic_auth_user: None,
            basic_auth_password_file: None,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            poll_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("export.{key} = {value}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("export.{key} {}: {reason}", path.display())]
    File {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
}

fn invalid(key: &'static str, value: impl ToString, reason: &'static str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason,
    }
}

impl Config {
    /// Whether export is on.
    pub fn enabled(&self) -> bool {
        self.remote_write_url.is_some()
    }

    /// Checks the settings together; the error names the key and its value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Some(url) = &self.remote_write_url else {
            return Ok(());
        };
        let uri: hyper::Uri = url
            .parse()
            .map_err(|_| invalid("remote_write_url", url, "not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(invalid(
                    "remote_write_url",
                    url,
                    "not an http:// or https:// URL",
                ));
            }
        };
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            // The value is not repeated: it holds a password.
            return Err(invalid(
                "remote_write_url",
                "(not shown)",
                "holds user information: use basic_auth_user and basic_auth_password_file",
            ));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("remote_write_url", url, "has no host"));
        }
        if !(1..=MAX_SAMPLES_PER_SEND).contains(&self.max_samples_per_send) {
            return Err(invalid(
                "max_samples_per_send",
                self.max_samples_per_send,
                "must be between 1 and 100000",
            ));
        }
        for (key, d) in [
            ("timeout", self.timeout),
            ("min_backoff", self.min_backoff),
            ("max_backoff", self.max_backoff),
            ("poll_interval", self.poll_interval),
        ] {
            if d.is_zero() {
                return Err(invalid(
                    key,
                    humantime::format_duration(d).to_string(),
                    "must be more than 0s",
                ));
            }
        }
        if self.max_backoff < self.min_backoff {
            return Err(invalid(
                "max_backoff",
                humantime::format_duration(self.max_backoff).to_string(),
                "must not be less than min_backoff",
            ));
        }
        if !https {
            for (key, set) in [
                ("tls_ca", self.tls_ca.is_some()),
                ("tls_cert", self.tls_cert.is_some()),
                ("tls_key", self.tls_key.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        key,
                        url,
                        "set, but remote_write_url is not https://",
                    ));
                }
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            let key = if self.tls_cert.is_some() {
                "tls_key"
            } else {
                "tls_cert"
            };
            return Err(invalid(key, "", "tls_cert and tls_key go together"));
        }
        if self.basic_auth_user.is_some() != self.basic_auth_password_file.is_some() {
            return Err(invalid(
                "basic_auth_user",
                self.basic_auth_user.clone().unwrap_or_default(),
                "basic_auth_user and basic_auth_password_file go together",
            ));
        }
        if let Some(user) = &self.basic_auth_user
            && (user.contains(':') || user.chars().any(char::is_control))
        {
            return Err(invalid(
                "basic_auth_user",
                user,
                "must not contain ':' or control characters",
            ));
        }
        if self.basic_auth_user.is_some() && self.bearer_token_file.is_some() {
            return Err(invalid(
                "bearer_token_file",
                "",
                "set together with basic_auth_user: choose one",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Config {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_and_durations_parse() {
        let c =
            parse(r#"{"remote_write_url": "http://127.0.0.1:9090/api/v1/write", "timeout": "5s"}"#);
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.max_samples_per_send, 2000);
        assert_eq!(c.min_backoff, Duration::from_millis(100));
        assert_eq!(c.max_backoff, Duration::from_secs(30));
        c.validate().unwrap();
        assert!(serde_json::from_str::<Config>(r#"{"remote_write_urll": "x"}"#).is_err());
        assert!(!Config::default().enabled());
        Config::default().validate().unwrap();
    }

    #[test]
    fn validate_names_the_key_and_value() {
        let base = || Config {
            remote_write_url: Some("https://mimir/api/v1/push".into()),
            ..Config::default()
        };
        let err = |c: Config| c.validate().unwrap_err().to_string();
        assert_eq!(
            err(Config {
                remote_write_url: Some("ftp://x/".into()),
                ..base()
            }),
            "export.remote_write_url = ftp://x/: not an http:// or https:// URL"
        );
        let secret = err(Config {
            remote_write_url: Some("https://u:hunter2@mimir/api/v1/push".into()),
            ..base()
        });
        assert!(secret.contains("basic_auth_user"), "{secret}");
        assert!(!secret.contains("hunter2"), "{secret}");
        assert!(
            err(Config {
                max_samples_per_send: 0,
                ..base()
            })
            .starts_with("export.max_samples_per_send = 0")
        );
        assert!(
            err(Config {
                tls_cert: Some("c.pem".into()),
                ..base()
            })
            .contains("tls_key")
        );
        assert!(
            err(Config {
                remote_write_url: Some("http://x/".into()),
                tls_ca: Some("ca.pem".into()),
                ..base()
            })
            .starts_with("export.tls_ca")
        );
        assert!(
            err(Config {
                basic_auth_user: Some("u".into()),
                basic_auth_password_file: Some("p".into()),
                bearer_token_file: Some("t".into()),
                ..base()
            })
            .starts_with("export.bearer_token_file")
        );
        assert!(
            err(Config {
                timeout: Duration::ZERO,
                ..base()
            })
            .starts_with("export.timeout = 0s")
        );
        base().validate().unwrap();
    }
}
