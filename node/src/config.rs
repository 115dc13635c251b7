//! `node.toml`: validated at start-up, every error naming the key. The
//! node's own country is not configured: it comes from its certificate.

use meldnet_core::client::HubEndpoint;
use meldnet_core::config::{self, ConfigError};
use meldnet_core::tls::ClientTlsFiles;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A hotline node's configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the sled store (drafts, outbox, receipts) lives.
    pub data_dir: PathBuf,
    /// The node's Ed25519 key that signs its reports.
    pub signing_key: PathBuf,
    /// Public keys of the hub and the nodes, to verify deliveries.
    pub keyring: PathBuf,
    /// Where received deliveries are stored.
    pub inbox_dir: PathBuf,
    /// Where the node's copy of the known-hash list is kept.
    #[serde(default = "default_list_dir")]
    pub list_dir: PathBuf,
    /// The hub.
    pub hub: HubEndpoint,
    /// TLS files.
    pub tls: ClientTlsFiles,
}

fn default_list_dir() -> PathBuf {
    "hashlist".into()
}

impl NodeConfig {
    /// Loads `path` and resolves relative paths against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut c: NodeConfig = config::load(path)?;
        let base = config::base_dir(path);
        c.data_dir = base.join(&c.data_dir);
        c.signing_key = base.join(&c.signing_key);
        c.keyring = base.join(&c.keyring);
        c.inbox_dir = base.join(&c.inbox_dir);
        c.list_dir = base.join(&c.list_dir);
        c.tls.resolve(&base);
        Ok(c)
    }
}
