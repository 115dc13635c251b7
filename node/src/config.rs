//! `node.toml`: validated at start-up, every error naming the key. The
//! node's own country is not configured: it comes from its certificate.

use meldnet_core::config::{self, ConfigError};
use meldnet_net::HubEndpoint;
use meldnet_net::{ClientTlsFiles, ServerTlsFiles};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
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
    /// The hash-check service for the country's hosting providers (`serve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_check: Option<HashCheckConfig>,
}

/// `[hash_check]`: where and how `meldnet-node serve` answers providers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashCheckConfig {
    /// Where gRPC and HTTP/JSON are served (mTLS), e.g. `0.0.0.0:8443`.
    pub listen: SocketAddr,
    /// Where Prometheus metrics (checks per provider) are served over plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// The node's own CA that issues provider certificates.
    pub provider_ca: PathBuf,
    /// The server certificate and key, the federation CA (members are
    /// refused by role, with a reason) and the federation's CRLs.
    pub tls: ServerTlsFiles,
    /// Seconds between syncs of the list with the hub.
    #[serde(default = "default_sync_interval")]
    pub sync_interval_s: u64,
}

fn default_sync_interval() -> u64 {
    60
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
        if let Some(h) = c.hash_check.as_mut() {
            h.provider_ca = base.join(&h.provider_ca);
            h.tls.resolve(&base);
            if h.sync_interval_s == 0 {
                return Err(config::invalid(
                    path,
                    "hash_check.sync_interval_s",
                    "must be at least 1",
                ));
            }
        }
        c.tls.resolve(&base);
        Ok(c)
    }
}
