//! Loading TOML configuration: one function for every role, so that every
//! config error names the file and the key, and relative paths mean the
//! same thing everywhere (relative to the config file's folder).

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// TOML or a value is invalid (the parser's message shows the key and line).
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("config {path}: {key}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The key, dotted.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Reads and parses a TOML file into `T` (unknown keys are refused by `T`).
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The folder relative paths in `path` are resolved against.
pub fn base_dir(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// An `Invalid` error for `key` of `path`.
pub fn invalid(path: &Path, key: &str, message: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        path: path.display().to_string(),
        key: key.to_string(),
        message: message.to_string(),
    }
}
