//! `hub.toml`: validated at start-up, every error naming the key.

use crate::rules::{RuleSet, RuleSpec, RulesError, RulesFile};
use meldnet_core::config::{self, invalid, ConfigError};
use meldnet_core::{CountryCode, EU_MEMBER_STATES};
use meldnet_core::{Role, SpiffeId, TrustDomain};
use meldnet_net::CallLimits;
use meldnet_net::ConnectionLimits;
use meldnet_net::HubEndpoint;
use meldnet_net::{ClientTlsFiles, ServerTlsFiles};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// Notice-and-takedown deadlines and where a missed one goes.
    #[serde(default, skip_serializing_if = "TakedownConfig::is_default")]
    pub takedown: TakedownConfig,
    /// What a client may cost: connection caps, timeouts, open calls.
    #[serde(default, skip_serializing_if = "ConnectionLimits::is_default")]
    pub connections: ConnectionLimits,
    /// What calls may hold in all: open calls, bytes being received.
    #[serde(default, skip_serializing_if = "CallLimits::is_default")]
    pub calls: CallLimits,
    /// The store's room on disk.
    #[serde(default, skip_serializing_if = "StoreConfig::is_default")]
    pub store: StoreConfig,
    /// How long reports and series' matches are kept.
    #[serde(default, skip_serializing_if = "RetentionConfig::is_default")]
    pub retention: RetentionConfig,
}

/// `[store]`: what the store keeps back on its disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// New reports are refused (RESOURCE_EXHAUSTED, nothing acknowledged)
    /// while the disk holding `data_dir` has less than this free (default
    /// 128). The room left keeps sled's log, acknowledgements and
    /// operators' changes writable: a hub whose store cannot flush stops.
    #[serde(default = "default_min_free_mib")]
    pub min_free_mib: u64,
    /// Memory sled, which keeps the embedded store's small state, may take
    /// as its page cache (default 64). The records that grow with every
    /// report are in the ledger, whose memory is its newest changes.
    #[serde(default = "default_cache_mib")]
    pub cache_mib: u64,
}

fn default_min_free_mib() -> u64 {
    128
}

fn default_cache_mib() -> u64 {
    64
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            min_free_mib: default_min_free_mib(),
            cache_mib: default_cache_mib(),
        }
    }
}

impl StoreConfig {
    fn is_default(&self) -> bool {
        self == &StoreConfig::default()
    }

    /// `min_free_mib` in bytes.
    pub fn min_free_bytes(&self) -> u64 {
        self.min_free_mib.saturating_mul(1 << 20)
    }

    /// What the store is opened with.
    pub fn options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            min_free: self.min_free_bytes(),
            cache_bytes: self.cache_mib.saturating_mul(1 << 20),
            ..Default::default()
        }
    }
}

/// `[retention]`: how long the hub keeps a report (its signed bytes, its
/// decision and its history) and a series' matches. The law that sets it
/// is the reporting hotline's, so a country may have its own period. A
/// report is erased only once nothing needs it: every delivery of it
/// acknowledged, its case settled, and it is not the report a location of
/// its case stands on (`store::retention` says the rules). 0 days: kept
/// for ever (the default, as the law differs from country to country).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days a report is kept after the hub received it (0: for ever).
    #[serde(default)]
    pub reports_days: u32,
    /// Days a match of a victim's series (what the digests count) is kept
    /// (0: for ever).
    #[serde(default)]
    pub series_matches_days: u32,
    /// How often the hub looks for what has expired, in minutes (default
    /// 60; also at start and whenever an operator moves a test clock).
    #[serde(default = "default_retention_every")]
    pub every_minutes: u32,
    /// Per reporting hotline's country: `[retention.countries.DE]`.
    #[serde(default)]
    pub countries: BTreeMap<CountryCode, CountryRetention>,
}

/// `[retention.countries.CC]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountryRetention {
    /// Overrides `retention.reports_days` for reports of this country's
    /// hotline (0: for ever).
    pub reports_days: u32,
}

fn default_retention_every() -> u32 {
    60
}

/// The longest period a key may say: a hundred years.
const MAX_RETENTION_DAYS: u32 = 36_500;

const DAY_MS: i64 = 86_400_000;

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            reports_days: 0,
            series_matches_days: 0,
            every_minutes: default_retention_every(),
            countries: BTreeMap::new(),
        }
    }
}

impl RetentionConfig {
    fn is_default(&self) -> bool {
        self == &RetentionConfig::default()
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let days = |key: &str, d: u32| {
            if d <= MAX_RETENTION_DAYS {
                Ok(())
            } else {
                Err(invalid(path, key, "0 (for ever) to 36500 days"))
            }
        };
        days("retention.reports_days", self.reports_days)?;
        days("retention.series_matches_days", self.series_matches_days)?;
        for (cc, c) in &self.countries {
            days(
                &format!("retention.countries.{cc}.reports_days"),
                c.reports_days,
            )?;
        }
        if !(1..=1440).contains(&self.every_minutes) {
            return Err(invalid(
                path,
                "retention.every_minutes",
                "1 to 1440 minutes",
            ));
        }
        Ok(())
    }

    /// The rules a retention pass applies.
    pub fn policy(&self) -> crate::store::RetentionPolicy {
        let ms = |d: u32| (d > 0).then(|| i64::from(d) * DAY_MS);
        crate::store::RetentionPolicy {
            reports_ms: ms(self.reports_days),
            countries: self
                .countries
                .iter()
                .map(|(cc, c)| (*cc, ms(c.reports_days)))
                .collect(),
            series_matches_ms: ms(self.series_matches_days),
        }
    }
}

/// `[takedown]`: how long a hosting provider has, per country, and who is
/// told when the time passes without removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TakedownConfig {
    /// Hours from a case's opening to its deadline (default 24).
    #[serde(default = "default_deadline_hours")]
    pub deadline_hours: u32,
    /// Where escalations go: `"police"` (the hosting country's police
    /// agencies) and/or SPIFFE ids of agencies or regulators.
    #[serde(default = "default_escalate_to")]
    pub escalate_to: Vec<String>,
    /// Per hosting country: `[takedown.countries.DE]`.
    #[serde(default)]
    pub countries: BTreeMap<CountryCode, CountryTakedown>,
}

/// `[takedown.countries.CC]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountryTakedown {
    /// Overrides `takedown.deadline_hours`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_hours: Option<u32>,
    /// Overrides `takedown.escalate_to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_to: Option<Vec<String>>,
}

fn default_deadline_hours() -> u32 {
    24
}

fn default_escalate_to() -> Vec<String> {
    vec!["police".into()]
}

impl Default for TakedownConfig {
    fn default() -> Self {
        TakedownConfig {
            deadline_hours: default_deadline_hours(),
            escalate_to: default_escalate_to(),
            countries: BTreeMap::new(),
        }
    }
}

/// Where an escalation goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EscalateTo {
    /// The police agencies of the hosting country.
    Police,
    /// One agency or regulator.
    Party(SpiffeId),
}

/// The deadline and escalation recipients for one hosting country.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakedownPolicy {
    /// Milliseconds from opening to deadline.
    pub deadline_ms: i64,
    /// Where a missed deadline goes.
    pub escalate_to: Vec<EscalateTo>,
}

impl TakedownConfig {
    fn is_default(&self) -> bool {
        self == &TakedownConfig::default()
    }

    /// The policy for a hosting country (validated at load).
    pub fn policy(&self, country: CountryCode) -> TakedownPolicy {
        let c = self.countries.get(&country);
        let hours = c
            .and_then(|c| c.deadline_hours)
            .unwrap_or(self.deadline_hours);
        let to = c
            .and_then(|c| c.escalate_to.as_ref())
            .unwrap_or(&self.escalate_to);
        TakedownPolicy {
            deadline_ms: i64::from(hours) * 3_600_000,
            escalate_to: to.iter().filter_map(|t| parse_escalate(t).ok()).collect(),
        }
    }

    fn validate(&self, path: &Path, federation: &TrustDomain) -> Result<(), ConfigError> {
        let hours = |key: &str, h: u32| {
            if (1..=8760).contains(&h) {
                Ok(())
            } else {
                Err(invalid(path, key, "1 to 8760 hours"))
            }
        };
        let targets = |key: &str, list: &[String]| -> Result<(), ConfigError> {
            if list.is_empty() {
                return Err(invalid(path, key, "name at least one recipient"));
            }
            for (i, t) in list.iter().enumerate() {
                let key = format!("{key}[{i}]");
                match parse_escalate(t).map_err(|m| invalid(path, &key, m))? {
                    EscalateTo::Party(id) if id.trust_domain() != federation => {
                        return Err(invalid(
                            path,
                            &key,
                            format!("{id} is not of federation {federation}"),
                        ))
                    }
                    _ => {}
                }
            }
            Ok(())
        };
        hours("takedown.deadline_hours", self.deadline_hours)?;
        targets("takedown.escalate_to", &self.escalate_to)?;
        for (cc, c) in &self.countries {
            if let Some(h) = c.deadline_hours {
                hours(&format!("takedown.countries.{cc}.deadline_hours"), h)?;
            }
            if let Some(t) = &c.escalate_to {
                targets(&format!("takedown.countries.{cc}.escalate_to"), t)?;
            }
        }
        Ok(())
    }
}

fn parse_escalate(t: &str) -> Result<EscalateTo, String> {
    if t == "police" {
        return Ok(EscalateTo::Police);
    }
    let id = SpiffeId::parse(t).map_err(|e| format!("{t:?}: \"police\" or a SPIFFE id: {e}"))?;
    if id.role().receives_escalations() {
        Ok(EscalateTo::Party(id))
    } else {
        Err(format!("{id}: escalations go to agencies or regulators"))
    }
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
    /// The routing rules (`[[routing.rules]]`); none: the embedded defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
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
            rules: Vec::new(),
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
        c.takedown.validate(path, &c.federation)?;
        c.retention.validate(path)?;
        c.connections
            .validate()
            .and_then(|()| c.calls.validate())
            .map_err(|(key, message)| invalid(path, &key, message))?;
        c.rule_set(1)
            .map_err(|e| invalid(path, &format!("routing.{}", e.key), e.message))?;
        Ok(c)
    }

    /// The rules of `[[routing.rules]]`, or the embedded defaults.
    pub fn rule_set(&self, version: u64) -> Result<RuleSet, RulesError> {
        if self.routing.rules.is_empty() {
            return Ok(RuleSet::default_rules(&self.federation));
        }
        let text = toml::to_string(&RulesFile {
            rules: self.routing.rules.clone(),
        })
        .map_err(|e| RulesError {
            key: "rules".into(),
            message: e.to_string(),
        })?;
        RuleSet::from_specs(&self.routing.rules, text, &self.federation, version)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn retention(text: &str) -> Result<RetentionConfig, String> {
        let c: RetentionConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate(Path::new("hub.toml"))
            .map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn retention_is_for_ever_unless_said_and_a_country_may_differ() {
        let c = retention("").unwrap();
        assert_eq!(c.policy(), crate::store::RetentionPolicy::default());
        let c = retention(
            "reports_days = 365\nseries_matches_days = 90\n[countries.DE]\nreports_days = 0\n[countries.FR]\nreports_days = 30\n",
        )
        .unwrap();
        let p = c.policy();
        assert_eq!(p.reports_ms, Some(365 * DAY_MS));
        assert_eq!(p.series_matches_ms, Some(90 * DAY_MS));
        let cc = |s| CountryCode::parse(s).unwrap();
        assert_eq!(p.countries.get(&cc("DE")), Some(&None), "0: for ever");
        assert_eq!(p.countries.get(&cc("FR")), Some(&Some(30 * DAY_MS)));
    }

    #[test]
    fn retention_errors_name_the_key() {
        for (text, key) in [
            ("reports_days = 40000", "retention.reports_days"),
            (
                "series_matches_days = 99999",
                "retention.series_matches_days",
            ),
            ("every_minutes = 0", "retention.every_minutes"),
            (
                "[countries.FR]\nreports_days = 50000",
                "retention.countries.FR.reports_days",
            ),
        ] {
            let e = retention(text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
        let e = retention("[countries.XX]\nreports_days = 1").unwrap_err();
        assert!(e.contains("XX"), "{e}");
        let e = retention("reports_dayz = 1").unwrap_err();
        assert!(e.contains("reports_dayz"), "{e}");
    }
}
