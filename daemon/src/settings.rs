//! The one settings loader both daemons use: defaults (the struct's `Default`), then a
//! TOML file, then `<PREFIX>_*` environment variables (`__` between nested keys), then
//! overrides from command-line flags. Errors name the key and the bad value.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use goroscope_proto::tls::TlsFiles;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The `[tls]` settings of a daemon: the fleet CA and its own certificate and key. An
/// empty `cert` or `key` means the name `goroscope certs issue` gives it in `certs/`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// The fleet CA certificate (bundle) that peers' certificates must chain to.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            ca: PathBuf::from("certs/ca.pem"),
            cert: PathBuf::new(),
            key: PathBuf::new(),
        }
    }
}

impl TlsSettings {
    /// The files, with an empty `cert` or `key` read as `certs/<stem>.pem` and
    /// `certs/<stem>-key.pem`.
    pub fn files(&self, stem: &str) -> TlsFiles {
        let conventional = TlsFiles::in_dir(Path::new("certs"), stem);
        let or = |p: &PathBuf, d: PathBuf| {
            if p.as_os_str().is_empty() {
                d
            } else {
                p.clone()
            }
        };
        TlsFiles {
            ca: self.ca.clone(),
            cert: or(&self.cert, conventional.cert),
            key: or(&self.key, conventional.key),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("setting {key} = {value}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    #[error("settings: {0}")]
    Other(String),
}

/// A `validate()` failure for `key`.
pub fn invalid(key: &str, value: impl Display, reason: &str) -> SettingsError {
    SettingsError::Invalid {
        key: key.to_owned(),
        value: value.to_string(),
        reason: reason.to_owned(),
    }
}

/// Loads `T` from the layers. `overrides` are (dotted key, value) pairs.
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    env_prefix: &str,
    overrides: &[(&str, String)],
) -> Result<T, SettingsError> {
    load_with_env(file, env_prefix, None, overrides)
}

/// [`load`] with an explicit environment (`None`: the process's), for tests.
pub fn load_with_env<T: DeserializeOwned>(
    file: Option<&Path>,
    env_prefix: &str,
    env: Option<config::Map<String, String>>,
    overrides: &[(&str, String)],
) -> Result<T, SettingsError> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        if !path.is_file() {
            return Err(SettingsError::File {
                path: path.to_owned(),
                reason: "no such file".into(),
            });
        }
        builder = builder.add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    // `<PREFIX>_CONFIG` names the file itself (a flag's environment twin), not a setting.
    let env = env.unwrap_or_else(|| {
        let file_var = format!("{env_prefix}_CONFIG");
        std::env::vars()
            .filter(|(k, _)| k.starts_with(env_prefix) && *k != file_var)
            .collect()
    });
    builder = builder.add_source(
        config::Environment::with_prefix(env_prefix)
            .prefix_separator("_")
            .separator("__")
            .source(Some(env)),
    );
    for (key, value) in overrides {
        builder = builder
            .set_override(*key, value.as_str())
            .map_err(|e| SettingsError::Other(e.to_string()))?;
    }
    let raw = builder.build().map_err(|e| match (file, &e) {
        (Some(path), config::ConfigError::FileParse { .. }) => SettingsError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        },
        _ => SettingsError::Other(e.to_string()),
    })?;
    raw.clone()
        .try_deserialize::<T>()
        .map_err(|e| explain(&raw, e))
}

/// Turns a deserialisation error into one that names the key and its value.
fn explain(raw: &config::Config, err: config::ConfigError) -> SettingsError {
    let key = match &err {
        config::ConfigError::Type { key: Some(k), .. } => Some(k.clone()),
        config::ConfigError::At { key: Some(k), .. } => Some(k.clone()),
        _ => None,
    };
    match key {
        Some(key) => {
            let value = raw
                .get::<config::Value>(&key)
                .map(|v| format!("{:?}", v.to_string()))
                .unwrap_or_else(|_| "?".into());
            let reason = match err {
                config::ConfigError::At { error, .. } => error.to_string(),
                config::ConfigError::Type {
                    unexpected,
                    expected,
                    ..
                } => format!("invalid type: {unexpected}, expected {expected}"),
                other => other.to_string(),
            };
            SettingsError::Invalid { key, value, reason }
        }
        None => SettingsError::Other(err.to_string()),
    }
}
