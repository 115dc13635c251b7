//! `agency.toml`: validated at start-up, every error naming the key. The
//! agency's identity is not configured: it comes from its certificate.

use meldnet_core::config::{self, ConfigError};
use meldnet_net::ClientTlsFiles;
use meldnet_net::HubEndpoint;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A police agency client's configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencyConfig {
    /// Public keys of the hub and the nodes, to verify deliveries.
    pub keyring: PathBuf,
    /// Where received deliveries are stored (default of `pull --out`).
    pub out_dir: PathBuf,
    /// The hub.
    pub hub: HubEndpoint,
    /// TLS files.
    pub tls: ClientTlsFiles,
}

impl AgencyConfig {
    /// Loads `path` and resolves relative paths against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut c: AgencyConfig = config::load(path)?;
        let base = config::base_dir(path);
        c.keyring = base.join(&c.keyring);
        c.out_dir = base.join(&c.out_dir);
        c.tls.resolve(&base);
        Ok(c)
    }
}
