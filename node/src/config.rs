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
    /// Standard notices to the country's hosting providers (`serve`, on the
    /// hash-check port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notices: Option<NoticesConfig>,
}

/// `[notices]`: the provider register and the re-notice schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoticesConfig {
    /// Where the notices are kept (a sled store of its own, so that
    /// `serve` and the report commands never hold the same lock).
    #[serde(default = "default_notices_dir")]
    pub dir: PathBuf,
    /// A notice the provider has not answered is sent again after this
    /// many seconds (default 12 hours).
    #[serde(default = "default_renotice")]
    pub renotice_after_s: u64,
    /// Sendings of one notice at most, the first included (default 3).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Ask providers to keep the data police may ask for (default true).
    #[serde(default = "yes")]
    pub ask_preserve: bool,
    /// The register of the country's hosting providers.
    #[serde(default)]
    pub providers: Vec<ProviderEntry>,
}

/// One hosting provider of the register.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    /// Its name: the `<name>` of `spiffe://<fed>/provider/<CC>/<name>`.
    pub name: String,
    /// Its autonomous system number.
    pub asn: u32,
    /// Host names it serves; a location's host matches one exactly or is
    /// under it (`files.example.de` is under `example.de`).
    pub hostnames: Vec<String>,
    /// Receives notices over the API (default); false: the node writes
    /// each notice out as a document a person e-mails.
    #[serde(default = "yes")]
    pub api: bool,
}

fn default_notices_dir() -> PathBuf {
    "notices".into()
}

fn default_renotice() -> u64 {
    12 * 3600
}

fn default_attempts() -> u32 {
    3
}

fn yes() -> bool {
    true
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
        if let Some(n) = c.notices.as_mut() {
            n.dir = base.join(&n.dir);
            check_notices(path, n)?;
            if c.hash_check.is_none() {
                return Err(config::invalid(
                    path,
                    "notices",
                    "notices are served on the hash-check port: [hash_check] is needed too",
                ));
            }
        }
        c.tls.resolve(&base);
        Ok(c)
    }
}

fn check_notices(path: &Path, n: &NoticesConfig) -> Result<(), ConfigError> {
    if n.renotice_after_s == 0 {
        return Err(config::invalid(
            path,
            "notices.renotice_after_s",
            "must be at least 1",
        ));
    }
    if !(1..=10).contains(&n.max_attempts) {
        return Err(config::invalid(
            path,
            "notices.max_attempts",
            "must be 1 to 10",
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, p) in n.providers.iter().enumerate() {
        let key = |k: &str| format!("notices.providers[{i}].{k}");
        let probe = format!("spiffe://probe.test/provider/DE/{}", p.name);
        if meldnet_core::SpiffeId::parse(&probe).is_err() {
            return Err(config::invalid(
                path,
                &key("name"),
                "must be a certificate name: lower-case letters, digits, '-' and '.'",
            ));
        }
        if !names.insert(p.name.clone()) {
            return Err(config::invalid(path, &key("name"), "named twice"));
        }
        if let Err(e) = meldnet_core::HostingProvider::new(&p.name, p.asn) {
            return Err(config::invalid(path, &key("asn"), &e.reason));
        }
        if p.hostnames.is_empty() {
            return Err(config::invalid(
                path,
                &key("hostnames"),
                "at least one host name the provider serves",
            ));
        }
        for (j, h) in p.hostnames.iter().enumerate() {
            let ok = !h.is_empty()
                && h.len() <= 253
                && h.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
                && !h.starts_with('.')
                && !h.ends_with('.');
            if !ok {
                return Err(config::invalid(
                    path,
                    &format!("notices.providers[{i}].hostnames[{j}]"),
                    "a host name in lower case (letters, digits, '-', '.')",
                ));
            }
        }
    }
    Ok(())
}
