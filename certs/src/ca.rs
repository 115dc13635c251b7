//! The federation CA: makes its own certificate, signs leaf certificates
//! whose only identity is one SPIFFE URI SAN, and signs CRLs.
//!
//! All keys are ECDSA P-256, which rustls (ring) accepts for both TLS
//! signatures and certificate chains. Every leaf gets explicit validity
//! dates, an explicit serial from the ledger and explicit extended key
//! usages: a certificate without EKUs would be accepted for any purpose.

use crate::error::{CertsError, Result};
use crate::ledger::Serial;
use meldnet_core::{Role, SpiffeId, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType,
};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// When a certificate or CRL is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Valid from a minute before `now` (tolerates small clock skew between
    /// machines) until `days` after `now`.
    pub fn days_from(now: OffsetDateTime, days: u32) -> Self {
        let now = whole_seconds(now);
        Validity {
            not_before: now - Duration::minutes(1),
            not_after: now + Duration::days(i64::from(days)),
        }
    }

    /// A validity that ended yesterday, for proving that expired
    /// certificates are refused.
    pub fn expired(now: OffsetDateTime) -> Self {
        let now = whole_seconds(now);
        Validity {
            not_before: now - Duration::days(10),
            not_after: now - Duration::days(1),
        }
    }
}

/// Certificates carry whole seconds; dropping the rest up front keeps the
/// ledger's times equal to the certificate's.
fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// The DNS name clients use to reach the hub, and check in its certificate.
pub fn hub_server_name(federation: &TrustDomain) -> String {
    format!("hub.{federation}")
}

/// The CA's subject common name.
pub fn ca_common_name(federation: &TrustDomain) -> String {
    format!("meldnet federation CA {federation}")
}

/// A certificate and its new private key, both PEM.
#[derive(Debug)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// The CA, able to sign.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for Ca {
    /// Shows the issuer without its key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("issuer", &self.issuer)
            .field("not_after", &self.not_after)
            .finish()
    }
}

fn ia5(what: &str, s: String) -> Result<rcgen::string::Ia5String> {
    rcgen::string::Ia5String::try_from(s).map_err(|e| CertsError::crypto(what, e))
}

impl Ca {
    /// Makes a new self-signed CA for `federation`; returns it with its
    /// certificate and key.
    pub fn create(
        federation: &TrustDomain,
        serial: Serial,
        validity: Validity,
    ) -> Result<(Self, Issued)> {
        Self::create_named(ca_common_name(federation), serial, validity)
    }

    /// Makes a new self-signed CA with this common name (a node's CA for
    /// its hosting providers is one).
    pub fn create_named(
        common_name: String,
        serial: Serial,
        validity: Validity,
    ) -> Result<(Self, Issued)> {
        let what = "CA certificate";
        let key = KeyPair::generate().map_err(|e| CertsError::crypto(what, e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.serial_number = Some(serial.to_rcgen());
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params
            .self_signed(&key)
            .map_err(|e| CertsError::crypto(what, e))?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        let ca = Ca {
            issuer: Issuer::new(params, key),
            not_after: validity.not_after,
        };
        Ok((ca, issued))
    }

    /// Loads the CA from its certificate and key files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let cert_pem = crate::fsutil::read_to_string(cert_path)?;
        let key_pem = crate::fsutil::read_to_string(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CertsError::parse(key_path, e))?;
        let der = crate::x509::pem_to_der(cert_path, &cert_pem, "CERTIFICATE")?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| CertsError::parse(cert_path, e))?;
        if !x509.is_ca() {
            return Err(CertsError::parse(cert_path, "not a CA certificate"));
        }
        let spki = x509.public_key().raw;
        if spki != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(CertsError::parse(
                key_path,
                "this key does not belong to the CA certificate",
            ));
        }
        let not_after = OffsetDateTime::from_unix_timestamp(x509.validity().not_after.timestamp())
            .map_err(|e| CertsError::parse(cert_path, e))?;
        let issuer = Issuer::from_ca_cert_der(&der.clone().into(), key)
            .map_err(|e| CertsError::parse(cert_path, e))?;
        Ok(Ca { issuer, not_after })
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Issues a certificate for `identity` with a new key. The hub gets a
    /// server certificate (DNS `hub.<federation>`, `localhost`, IP 127.0.0.1;
    /// server and client auth); every other role a client-only certificate
    /// whose one SAN is its SPIFFE id.
    pub fn issue(&self, identity: &SpiffeId, serial: Serial, validity: Validity) -> Result<Issued> {
        let server = matches!(identity.role(), Role::Hub)
            .then(|| vec![hub_server_name(identity.trust_domain())]);
        self.issue_for(identity, serial, validity, server.as_deref())
    }

    /// Issues a certificate for `identity`; with `server_names`, a server
    /// certificate for those DNS names (and `localhost`, 127.0.0.1) that
    /// also authenticates as a client.
    pub fn issue_for(
        &self,
        identity: &SpiffeId,
        serial: Serial,
        validity: Validity,
        server_names: Option<&[String]>,
    ) -> Result<Issued> {
        let what = format!("certificate for {identity}");
        if validity.not_after > self.not_after {
            return Err(CertsError::Invalid {
                what: "validity",
                value: identity.to_string(),
                message: format!(
                    "the certificate would end after the CA does ({}); choose fewer --days",
                    self.not_after
                ),
            });
        }
        let key = KeyPair::generate().map_err(|e| CertsError::crypto(&what, e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.to_string());
        params.distinguished_name = dn;
        params.serial_number = Some(serial.to_rcgen());
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let mut sans = vec![SanType::URI(ia5(&what, identity.to_string())?)];
        if let Some(names) = server_names {
            for n in names {
                sans.push(SanType::DnsName(ia5(&what, n.clone())?));
            }
            sans.push(SanType::DnsName(ia5(&what, "localhost".to_string())?));
            sans.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        } else {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        params.subject_alt_names = sans;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| CertsError::crypto(&what, e))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a CRL listing `revoked`, valid from `this_update` for `days`.
    pub fn crl(
        &self,
        number: u64,
        revoked: &[(Serial, OffsetDateTime)],
        this_update: OffsetDateTime,
        days: u32,
    ) -> Result<String> {
        let what = "CRL";
        let this_update = whole_seconds(this_update);
        let params = CertificateRevocationListParams {
            this_update,
            next_update: this_update + Duration::days(i64::from(days.max(1))),
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, at)| RevokedCertParams {
                    serial_number: serial.to_rcgen(),
                    revocation_time: whole_seconds(*at),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(|e| CertsError::crypto(what, e))?;
        crl.pem().map_err(|e| CertsError::crypto(what, e))
    }
}
