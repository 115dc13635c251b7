//! Who is speaking: SPIFFE ids taken from a client certificate's URI SAN.
//! Role and member state come only from here, never from a request field.
//!
//! Forms: `spiffe://<federation>/hub`, `.../node/<CC>`,
//! `.../agency/<CC or EU>/<name>`, `.../operator/<name>`,
//! `.../provider/<CC>/<name>` (a hosting provider, certified by its
//! country's node), `.../regulator/<CC>/<name>` (a national regulator that
//! receives escalations), `.../representative/<CC>/<name>` (a
//! victim-support organisation or lawyer that receives victims' chosen
//! notifications).

use crate::country::CountryCode;
use std::fmt;
use std::str::FromStr;

/// Why a SPIFFE id or certificate gives no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not of the form `spiffe://<trust domain>/<path>`.
    #[error("not a SPIFFE id: {0}")]
    NotSpiffe(String),
    /// The trust domain is not a lower-case DNS-like name.
    #[error("invalid trust domain {0:?}")]
    TrustDomain(String),
    /// The path names no role this federation knows.
    #[error("unknown role path {0:?}")]
    Role(String),
    /// A name part is empty, too long or has characters outside [a-z0-9-].
    #[error("invalid name {0:?}: 1-63 characters of a-z, 0-9 and '-'")]
    Name(String),
    /// A country part is not an assigned code.
    #[error("invalid country in identity: {0}")]
    Country(String),
    /// The certificate could not be parsed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The certificate has no SPIFFE URI SAN, or more than one.
    #[error("certificate must carry exactly one spiffe:// URI SAN, found {0}")]
    SanCount(usize),
    /// The identity belongs to another federation.
    #[error("identity {got} is not of federation {want}")]
    Federation {
        /// The federation this party belongs to.
        want: String,
        /// The identity presented.
        got: String,
    },
}

fn check_name(s: &str) -> Result<(), IdentityError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(IdentityError::Name(s.chars().take(70).collect()))
    }
}

/// The trust domain of a federation, e.g. `eu.meldnet.test`.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a lower-case DNS-like name of labels `[a-z0-9-]`.
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let ok = !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| check_name(l).is_ok());
        if ok {
            Ok(TrustDomain(s.to_string()))
        } else {
            Err(IdentityError::TrustDomain(s.chars().take(70).collect()))
        }
    }
    /// The domain as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An agency's jurisdiction: a country, or the EU itself (Europol).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Jurisdiction {
    /// A national agency.
    Country(CountryCode),
    /// An EU body such as Europol (code `EU`).
    Eu,
}

impl fmt::Display for Jurisdiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Jurisdiction::Country(c) => c.fmt(f),
            Jurisdiction::Eu => f.write_str("EU"),
        }
    }
}

impl FromStr for Jurisdiction {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, IdentityError> {
        if s == "EU" {
            return Ok(Jurisdiction::Eu);
        }
        CountryCode::parse(s)
            .map(Jurisdiction::Country)
            .map_err(|e| IdentityError::Country(e.to_string()))
    }
}

/// What a party is allowed to do follows from its role.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Role {
    /// The EU hub.
    Hub,
    /// A national hotline's node.
    Node(CountryCode),
    /// A police agency.
    Agency {
        /// Country, or EU for EU bodies.
        jurisdiction: Jurisdiction,
        /// Short name, e.g. `bka`.
        name: String,
    },
    /// A hub operator.
    Operator(String),
    /// A national regulator (e.g. of hosting providers) that receives
    /// escalations of missed takedown deadlines in its country.
    Regulator {
        /// Its country.
        country: CountryCode,
        /// Short name, e.g. `acm`.
        name: String,
    },
    /// A victim-support organisation or lawyer that represents victims of
    /// series linked to it by a police agency, and receives the
    /// notifications the victims chose.
    Representative {
        /// Its country.
        country: CountryCode,
        /// Short name, e.g. `fier`.
        name: String,
    },
    /// A hosting provider that checks uploads against the known-hash list
    /// at its country's node, with a certificate that node issued.
    Provider {
        /// The country of the node that issued its certificate.
        country: CountryCode,
        /// Short name, e.g. `hoster1`.
        name: String,
    },
}

/// What each role may do, in one place: every answer is an exhaustive
/// match, so a new role does not compile until each question is answered
/// for it.
impl Role {
    /// The role in words, as reasons and messages name it.
    pub fn title(&self) -> &'static str {
        match self {
            Role::Hub => "the hub",
            Role::Node(_) => "hotline",
            Role::Agency { .. } => "police",
            Role::Operator(_) => "operator",
            Role::Regulator { .. } => "regulator",
            Role::Representative { .. } => "representative",
            Role::Provider { .. } => "hosting provider",
        }
    }

    /// Whether it has a queue at the hub and receives deliveries from it
    /// (`Inbox.Receive`).
    pub fn has_queue(&self) -> bool {
        match self {
            Role::Node(_)
            | Role::Agency { .. }
            | Role::Regulator { .. }
            | Role::Representative { .. } => true,
            Role::Hub | Role::Operator(_) | Role::Provider { .. } => false,
        }
    }

    /// Whether it has a queue and sends nothing but acknowledgements and
    /// its own requests: what `meldnet-agency` runs as.
    pub fn only_receives(&self) -> bool {
        match self {
            Role::Agency { .. } | Role::Regulator { .. } | Role::Representative { .. } => true,
            Role::Hub | Role::Node(_) | Role::Operator(_) | Role::Provider { .. } => false,
        }
    }

    /// Whether routing rules may send reports to it.
    pub fn receives_reports(&self) -> bool {
        match self {
            Role::Node(_) | Role::Agency { .. } | Role::Regulator { .. } => true,
            Role::Hub | Role::Operator(_) | Role::Representative { .. } | Role::Provider { .. } => {
                false
            }
        }
    }

    /// Whether a missed takedown deadline may escalate to it.
    pub fn receives_escalations(&self) -> bool {
        match self {
            Role::Agency { .. } | Role::Regulator { .. } => true,
            Role::Hub
            | Role::Node(_)
            | Role::Operator(_)
            | Role::Representative { .. }
            | Role::Provider { .. } => false,
        }
    }

    /// Whether operators register it at the hub (and may revoke it).
    pub fn can_be_registered(&self) -> bool {
        match self {
            Role::Node(_) | Role::Agency { .. } | Role::Regulator { .. } => true,
            Role::Hub | Role::Operator(_) | Role::Representative { .. } | Role::Provider { .. } => {
                false
            }
        }
    }

    /// Whether the hub lets it in only while it is in the registry (and
    /// not revoked there), on top of its certificate.
    pub fn must_be_registered(&self) -> bool {
        match self {
            Role::Node(_) | Role::Agency { .. } => true,
            Role::Hub
            | Role::Operator(_)
            | Role::Regulator { .. }
            | Role::Representative { .. }
            | Role::Provider { .. } => false,
        }
    }

    /// Whether it submits signed reports, case steps and list contributions.
    pub fn submits(&self) -> bool {
        match self {
            Role::Node(_) => true,
            Role::Hub
            | Role::Agency { .. }
            | Role::Operator(_)
            | Role::Regulator { .. }
            | Role::Representative { .. }
            | Role::Provider { .. } => false,
        }
    }

    /// Whether it signs with keys recipients hold in `keyring.toml`.
    pub fn signs(&self) -> bool {
        match self {
            Role::Hub | Role::Node(_) => true,
            Role::Agency { .. }
            | Role::Operator(_)
            | Role::Regulator { .. }
            | Role::Representative { .. }
            | Role::Provider { .. } => false,
        }
    }
}

/// A parsed SPIFFE id of this project's forms.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    role: Role,
}

/// The DNS-name SANs of a DER certificate, in order.
pub fn dns_names(der: &[u8]) -> Result<Vec<String>, IdentityError> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    Ok(subject_alt_names(&cert)?
        .into_iter()
        .filter_map(|g| match g {
            GeneralName::DNSName(n) => Some(n.to_string()),
            _ => None,
        })
        .collect())
}

/// Every subject alternative name of `cert` (none without the extension).
fn subject_alt_names<'a>(
    cert: &'a x509_parser::certificate::X509Certificate<'a>,
) -> Result<Vec<&'a x509_parser::extensions::GeneralName<'a>>, IdentityError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    Ok(san
        .map(|s| s.value.general_names.iter().collect())
        .unwrap_or_default())
}

impl SpiffeId {
    /// An id from its parts (the parts are already valid).
    pub fn new(trust_domain: TrustDomain, role: Role) -> Self {
        SpiffeId { trust_domain, role }
    }

    /// Parses `spiffe://<domain>/<role path>`.
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| IdentityError::NotSpiffe(s.chars().take(100).collect()))?;
        let (domain, path) = rest
            .split_once('/')
            .ok_or_else(|| IdentityError::NotSpiffe(s.chars().take(100).collect()))?;
        let trust_domain = TrustDomain::parse(domain)?;
        let parts: Vec<&str> = path.split('/').collect();
        let country =
            |c: &str| CountryCode::parse(c).map_err(|e| IdentityError::Country(e.to_string()));
        let role = match parts.as_slice() {
            ["hub"] => Role::Hub,
            ["node", cc] => Role::Node(country(cc)?),
            ["agency", j, name] => {
                check_name(name)?;
                Role::Agency {
                    jurisdiction: j.parse()?,
                    name: (*name).to_string(),
                }
            }
            ["operator", name] => {
                check_name(name)?;
                Role::Operator((*name).to_string())
            }
            ["regulator", cc, name] => {
                check_name(name)?;
                Role::Regulator {
                    country: country(cc)?,
                    name: (*name).to_string(),
                }
            }
            ["representative", cc, name] => {
                check_name(name)?;
                Role::Representative {
                    country: country(cc)?,
                    name: (*name).to_string(),
                }
            }
            ["provider", cc, name] => {
                check_name(name)?;
                Role::Provider {
                    country: country(cc)?,
                    name: (*name).to_string(),
                }
            }
            _ => return Err(IdentityError::Role(path.chars().take(100).collect())),
        };
        Ok(SpiffeId { trust_domain, role })
    }

    /// Reads the identity from a DER certificate: exactly one `spiffe://` URI SAN.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        // TLS proves a certificate's key by a signature: a key its
        // certificate does not allow to sign speaks for nobody.
        let usage = cert
            .key_usage()
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        if usage.is_some_and(|u| !u.value.digital_signature()) {
            return Err(IdentityError::Certificate(
                "its key usage does not include digitalSignature".into(),
            ));
        }
        let uris: Vec<&str> = subject_alt_names(&cert)?
            .into_iter()
            .filter_map(|g| match g {
                GeneralName::URI(u) if u.starts_with("spiffe://") => Some(*u),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [one] => SpiffeId::parse(one),
            other => Err(IdentityError::SanCount(other.len())),
        }
    }

    /// Checks that this id belongs to `federation`.
    pub fn require_federation(self, federation: &TrustDomain) -> Result<Self, IdentityError> {
        if &self.trust_domain == federation {
            Ok(self)
        } else {
            Err(IdentityError::Federation {
                want: federation.to_string(),
                got: self.to_string(),
            })
        }
    }

    /// The federation.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The role.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// The node id of country `cc` in the same federation.
    pub fn node(trust_domain: &TrustDomain, cc: CountryCode) -> Self {
        SpiffeId::new(trust_domain.clone(), Role::Node(cc))
    }

    /// The hub's id in this federation.
    pub fn hub(trust_domain: &TrustDomain) -> Self {
        SpiffeId::new(trust_domain.clone(), Role::Hub)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/", self.trust_domain)?;
        match &self.role {
            Role::Hub => f.write_str("hub"),
            Role::Node(cc) => write!(f, "node/{cc}"),
            Role::Agency { jurisdiction, name } => write!(f, "agency/{jurisdiction}/{name}"),
            Role::Operator(name) => write!(f, "operator/{name}"),
            Role::Provider { country, name } => write!(f, "provider/{country}/{name}"),
            Role::Regulator { country, name } => write!(f, "regulator/{country}/{name}"),
            Role::Representative { country, name } => {
                write!(f, "representative/{country}/{name}")
            }
        }
    }
}

impl FromStr for SpiffeId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, IdentityError> {
        SpiffeId::parse(s)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SpiffeId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for TrustDomain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TrustDomain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TrustDomain::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn what_each_role_may_do() {
        let cc = CountryCode::parse("DE").unwrap();
        let name = "x".to_string();
        // title, has_queue, only_receives, receives_reports,
        // receives_escalations, can_be_registered, must_be_registered,
        // submits, signs
        type Row = (Role, &'static str, [bool; 8]);
        let table: [Row; 7] = [
            (
                Role::Hub,
                "the hub",
                [false, false, false, false, false, false, false, true],
            ),
            (
                Role::Node(cc),
                "hotline",
                [true, false, true, false, true, true, true, true],
            ),
            (
                Role::Agency {
                    jurisdiction: Jurisdiction::Country(cc),
                    name: name.clone(),
                },
                "police",
                [true, true, true, true, true, true, false, false],
            ),
            (Role::Operator(name.clone()), "operator", [false; 8]),
            (
                Role::Regulator {
                    country: cc,
                    name: name.clone(),
                },
                "regulator",
                [true, true, true, true, true, false, false, false],
            ),
            (
                Role::Representative {
                    country: cc,
                    name: name.clone(),
                },
                "representative",
                [true, true, false, false, false, false, false, false],
            ),
            (
                Role::Provider { country: cc, name },
                "hosting provider",
                [false; 8],
            ),
        ];
        for (role, title, row) in table {
            let got = [
                role.has_queue(),
                role.only_receives(),
                role.receives_reports(),
                role.receives_escalations(),
                role.can_be_registered(),
                role.must_be_registered(),
                role.submits(),
                role.signs(),
            ];
            assert_eq!((role.title(), got), (title, row), "{role:?}");
        }
    }
    use super::*;

    #[test]
    fn round_trips_every_role() {
        for s in [
            "spiffe://eu.meldnet.test/hub",
            "spiffe://eu.meldnet.test/node/NL",
            "spiffe://eu.meldnet.test/agency/DE/bka",
            "spiffe://eu.meldnet.test/agency/EU/europol",
            "spiffe://eu.meldnet.test/operator/alice",
            "spiffe://eu.meldnet.test/provider/DE/hoster1",
            "spiffe://eu.meldnet.test/regulator/NL/acm",
        ] {
            assert_eq!(SpiffeId::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn refuses_malformed_ids() {
        for s in [
            "https://eu.meldnet.test/hub",
            "spiffe://eu.meldnet.test/node/XX",
            "spiffe://eu.meldnet.test/node/NL/extra",
            "spiffe://eu.meldnet.test/agency/DE/BKA",
            "spiffe://EU.test/hub",
            "spiffe://eu.meldnet.test/admin",
            "spiffe://eu.meldnet.test/provider/EU/x",
            "spiffe://eu.meldnet.test/regulator/NL",
        ] {
            assert!(SpiffeId::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn federation_is_checked() {
        let id = SpiffeId::parse("spiffe://other.test/node/NL").unwrap();
        let fed = TrustDomain::parse("eu.meldnet.test").unwrap();
        assert!(id.require_federation(&fed).is_err());
    }
}
