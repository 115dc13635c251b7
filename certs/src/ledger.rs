//! The CA's ledger, `issued.toml`: every certificate the CA ever signed, so
//! that serial numbers are never reused, revocation can be done by identity,
//! and the CRL can always be rebuilt from one source of truth.

use crate::error::{CertsError, Result};
use crate::fsutil::{self, Mode};
use meldnet_core::{SpiffeId, TrustDomain};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A certificate serial number. Kept small and sequential because the
/// ledger, not randomness, guarantees uniqueness within this CA.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Serial(
    /// The number; 0 is never issued.
    pub u64,
);

/// The first value of a sorted list that follows itself.
pub fn repeated<T: PartialEq>(sorted: &[T]) -> Option<&T> {
    sorted.windows(2).find_map(|w| match w {
        [a, b] if a == b => Some(a),
        _ => None,
    })
}

impl Serial {
    /// Minimal big-endian bytes (at least one), as DER encodes the integer.
    pub fn to_bytes(self) -> Vec<u8> {
        let b = self.0.to_be_bytes();
        let first = b.iter().position(|&x| x != 0).unwrap_or(b.len() - 1);
        b.get(first..).unwrap_or_default().to_vec()
    }

    /// Reads a serial from the content bytes of a DER integer; `None` if it
    /// does not fit the ledger's range (then this CA never issued it).
    pub fn from_der_bytes(bytes: &[u8]) -> Option<Self> {
        let first = bytes.iter().position(|&x| x != 0).unwrap_or(bytes.len());
        let digits = bytes.get(first..).unwrap_or_default();
        if digits.len() > 8 {
            return None;
        }
        Some(Serial(
            digits
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
        ))
    }

    /// Parses the ledger's hex form.
    pub fn parse_hex(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.is_empty() || s.len() > 16 {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Serial)
    }

    /// The form rcgen writes into certificates and CRLs.
    pub fn to_rcgen(self) -> rcgen::SerialNumber {
        rcgen::SerialNumber::from(self.to_bytes())
    }
}

impl fmt::Display for Serial {
    /// Even-length lower-case hex of the minimal bytes, as `openssl` shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_bytes()))
    }
}

impl Serialize for Serial {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Serial {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Serial::parse_hex(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("serial {s:?}: expected 1-16 hex digits"))
        })
    }
}

/// Formats a time as RFC 3339 (UTC), the ledger's time format.
pub fn format_time(t: OffsetDateTime) -> Result<String> {
    t.format(&Rfc3339).map_err(|e| CertsError::Invalid {
        what: "time",
        value: t.to_string(),
        message: e.to_string(),
    })
}

/// Parses an RFC 3339 time from the ledger.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// The CA's own certificate, recorded so its serial is never given to a leaf.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CaRecord {
    /// The CA's subject common name.
    pub subject: String,
    /// The CA certificate's serial.
    pub serial: Serial,
    /// When the CA certificate expires (RFC 3339); no leaf may outlive it.
    pub not_after: String,
}

/// One issued certificate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IssuedEntry {
    /// The SPIFFE id in the certificate's URI SAN.
    pub identity: SpiffeId,
    /// Its serial.
    pub serial: Serial,
    /// Where the certificate was written: relative to the CA folder when
    /// inside it, absolute otherwise.
    pub cert: PathBuf,
    /// When it expires (RFC 3339).
    pub not_after: String,
    /// Whether it is listed in the CRL.
    #[serde(default)]
    pub revoked: bool,
    /// When it was revoked (RFC 3339); the CRL's revocation date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// The ledger file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    /// The federation this CA serves; `issue` refuses identities of others.
    pub federation: TrustDomain,
    /// The next serial to give out; only ever grows.
    pub next_serial: Serial,
    /// The number of the CRL currently in `crl.pem`; only ever grows.
    pub crl_number: u64,
    /// How long each CRL is valid (its `nextUpdate` is this many days on).
    pub crl_days: u32,
    /// The CA certificate.
    pub ca: CaRecord,
    /// Every certificate issued, in order.
    #[serde(default)]
    pub certs: Vec<IssuedEntry>,
}

impl Ledger {
    /// Reads and checks `issued.toml`.
    pub fn load(path: &Path) -> Result<Self> {
        let err = |message: String| CertsError::Ledger {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let ledger: Ledger = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        ledger.check().map_err(err)?;
        Ok(ledger)
    }

    /// The invariants that keep serials unique.
    fn check(&self) -> Result<(), String> {
        let highest = self
            .certs
            .iter()
            .map(|c| c.serial)
            .chain(std::iter::once(self.ca.serial))
            .max()
            .unwrap_or(Serial(0));
        if self.next_serial <= highest {
            return Err(format!(
                "next_serial {} is not above the highest serial issued ({highest})",
                self.next_serial
            ));
        }
        let mut serials: Vec<Serial> = self.certs.iter().map(|c| c.serial).collect();
        serials.sort();
        if let Some(twice) = repeated(&serials) {
            return Err(format!("serial {twice} appears twice"));
        }
        for c in &self.certs {
            if c.identity.trust_domain() != &self.federation {
                return Err(format!(
                    "{} is not of federation {}",
                    c.identity, self.federation
                ));
            }
        }
        Ok(())
    }

    /// Writes the ledger atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string(self).map_err(|e| CertsError::Serialize {
            what: path.display().to_string(),
            message: e.to_string(),
        })?;
        fsutil::write_atomic(path, text.as_bytes(), Mode::Public)
    }

    /// Takes the next serial; the caller must save the ledger before the
    /// certificate is handed out, so a crash can never lead to reuse.
    pub fn take_serial(&mut self) -> Result<Serial> {
        let s = self.next_serial;
        let next = s.0.checked_add(1).ok_or_else(|| CertsError::Ledger {
            path: "issued.toml".into(),
            message: "serial numbers exhausted".into(),
        })?;
        self.next_serial = Serial(next);
        Ok(s)
    }

    /// The revoked certificates with their revocation times, for the CRL.
    pub fn revoked(&self) -> Result<Vec<(Serial, OffsetDateTime)>> {
        self.certs
            .iter()
            .filter(|c| c.revoked)
            .map(|c| {
                let at = c
                    .revoked_at
                    .as_deref()
                    .and_then(parse_time)
                    .ok_or_else(|| CertsError::Ledger {
                        path: "issued.toml".into(),
                        message: format!(
                            "serial {} is revoked but has no valid revoked_at",
                            c.serial
                        ),
                    })?;
                Ok((c.serial, at))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_round_trip_through_every_form() {
        for n in [1u64, 0x7f, 0x80, 0xff, 0x100, u64::MAX] {
            let s = Serial(n);
            assert_eq!(Serial::parse_hex(&s.to_string()), Some(s));
            assert_eq!(Serial::from_der_bytes(&s.to_bytes()), Some(s));
            // A DER integer with the high bit set carries a leading zero.
            let mut der = vec![0];
            der.extend(s.to_bytes());
            assert_eq!(Serial::from_der_bytes(&der), Some(s));
        }
        assert_eq!(Serial(1).to_string(), "01");
        assert_eq!(Serial(0x100).to_string(), "0100");
        assert_eq!(Serial::from_der_bytes(&[1; 9]), None);
        assert_eq!(Serial::parse_hex("xyz"), None);
    }

    #[test]
    fn refuses_a_ledger_that_would_reuse_serials() {
        let fed = TrustDomain::parse("eu.meldnet.test").unwrap();
        let entry = IssuedEntry {
            identity: SpiffeId::hub(&fed),
            serial: Serial(5),
            cert: "hub/hub.pem".into(),
            not_after: "2030-01-01T00:00:00Z".into(),
            revoked: false,
            revoked_at: None,
        };
        let mut ledger = Ledger {
            federation: fed,
            next_serial: Serial(5),
            crl_number: 1,
            crl_days: 30,
            ca: CaRecord {
                subject: "ca".into(),
                serial: Serial(1),
                not_after: "2030-01-01T00:00:00Z".into(),
            },
            certs: vec![entry.clone()],
        };
        assert!(ledger.check().unwrap_err().contains("next_serial"));
        ledger.next_serial = Serial(6);
        ledger.certs.push(entry);
        assert!(ledger.check().unwrap_err().contains("twice"));
        ledger.certs.pop();
        assert_eq!(ledger.check(), Ok(()));

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("issued.toml");
        ledger.save(&p).unwrap();
        assert_eq!(Ledger::load(&p).unwrap(), ledger);
    }
}
