//! `hub.toml`: validated at start-up, every error naming the key.

use meldnet_core::client::HubEndpoint;
use meldnet_core::config::{self, invalid, ConfigError};
use meldnet_core::country::{CountryCode, EU_MEMBER_STATES};
use meldnet_core::identity::{Role, SpiffeId, TrustDomain};
use meldnet_core::tls::{ClientTlsFiles, ServerTlsFiles};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The hub's configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// The federation's trust domain; every peer identity must belong to it.
    pub federation: TrustDomain,
    /// Where gRPC (mTLS) is served.
    pub listen: SocketAddr,
    /// Where the sled store lives.
    pub data_dir: PathBuf,
    /// The hub's Ed25519 key that signs routing decisions.
    pub signing_key: PathBuf,
    /// Public keys of the nodes (and the hub), `keyring.toml`.
    pub keyring: PathBuf,
    /// Where Prometheus metrics are served over plain HTTP (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// TLS files.
    pub tls: ServerTlsFiles,
    /// Police agencies registered to receive reports.
    #[serde(default)]
    pub agencies: Vec<AgencyEntry>,
    /// Routing settings.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// The hub's clock.
    #[serde(default, skip_serializing_if = "ClockConfig::is_default")]
    pub clock: ClockConfig,
}

/// `[clock]`: the time deadlines are measured on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// Let operators move the clock forward (`Admin.AdvanceClock`): for
    /// tests of deadlines only, never in production.
    #[serde(default)]
    pub adjustable: bool,
}

impl ClockConfig {
    fn is_default(&self) -> bool {
        self == &ClockConfig::default()
    }
}

/// A registered agency.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencyEntry {
    /// Its SPIFFE id, as in its certificate.
    pub identity: SpiffeId,
}

/// Routing settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// The countries whose link makes a report routable inside the EU.
    #[serde(default = "default_member_states")]
    pub member_states: Vec<CountryCode>,
    /// EEA and partner countries that take part: a link to one counts as
    /// an EU link, and they are routed to like member states.
    #[serde(default)]
    pub participating: Vec<CountryCode>,
}

fn default_member_states() -> Vec<CountryCode> {
    EU_MEMBER_STATES
        .iter()
        .filter_map(|c| CountryCode::parse(c).ok())
        .collect()
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            member_states: default_member_states(),
            participating: Vec::new(),
        }
    }
}

impl HubConfig {
    /// Loads `path`, resolves relative paths against its folder and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut c: HubConfig = config::load(path)?;
        let base = config::base_dir(path);
        c.data_dir = base.join(&c.data_dir);
        c.signing_key = base.join(&c.signing_key);
        c.keyring = base.join(&c.keyring);
        c.tls.resolve(&base);
        for (i, a) in c.agencies.iter().enumerate() {
            let key = format!("agencies[{i}].identity");
            if a.identity.trust_domain() != &c.federation {
                return Err(invalid(
                    path,
                    &key,
                    format!("{} is not of federation {}", a.identity, c.federation),
                ));
            }
            if !matches!(a.identity.role(), Role::Agency { .. }) {
                return Err(invalid(
                    path,
                    &key,
                    format!("{} is not an agency identity", a.identity),
                ));
            }
        }
        if c.tls.crls.is_empty() {
            return Err(invalid(
                path,
                "tls.crls",
                "at least one CRL file is required: without one no revocation would be checked",
            ));
        }
        if c.routing.member_states.is_empty() {
            return Err(invalid(path, "routing.member_states", "must not be empty"));
        }
        if let Some(both) = c
            .routing
            .participating
            .iter()
            .find(|p| c.routing.member_states.contains(p))
        {
            return Err(invalid(
                path,
                "routing.participating",
                format!("{both} is also in routing.member_states"),
            ));
        }
        Ok(c)
    }
}

/// `operator.toml`: how an operator's `meldnet-hub list ...` commands reach
/// the running hub. The operator's identity comes from its certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Public keys of the hub, to verify the list heads it signs.
    pub keyring: PathBuf,
    /// The hub.
    pub hub: HubEndpoint,
    /// TLS files (an operator certificate).
    pub tls: ClientTlsFiles,
}

impl OperatorConfig {
    /// Loads `path` and resolves relative paths against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut c: OperatorConfig = config::load(path)?;
        let base = config::base_dir(path);
        c.keyring = base.join(&c.keyring);
        c.tls.resolve(&base);
        Ok(c)
    }
}
