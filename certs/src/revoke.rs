//! `revoke`, `crl` and `show`: the ledger is the source of truth for what
//! is revoked; `crl.pem` is always rebuilt from all of it (never appended
//! to), and replaced atomically because the hub re-reads it while running.

use crate::ca::Ca;
use crate::error::{CertsError, Result};
use crate::fsutil::{self, Mode};
use crate::issue::load_ledger;
use crate::layout::Layout;
use crate::ledger::{format_time, IssuedEntry, Ledger, Serial};
use crate::x509;
use meldnet_core::SpiffeId;
use std::fmt;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// Which certificates to revoke.
#[derive(Debug, Clone)]
pub enum RevokeTarget {
    /// Every unrevoked certificate of this SPIFFE id (a compromised party).
    Identity(String),
    /// The one certificate in this PEM file (a lost key of one certificate).
    Cert(PathBuf),
}

/// One revoked certificate.
#[derive(Debug, Clone)]
pub struct RevokedCert {
    /// Its identity.
    pub identity: SpiffeId,
    /// Its serial.
    pub serial: Serial,
    /// Where it was written.
    pub cert: PathBuf,
}

/// What `revoke` did.
#[derive(Debug, Clone)]
pub struct RevokeSummary {
    /// The certificates revoked now.
    pub revoked: Vec<RevokedCert>,
    /// The number of the new CRL.
    pub crl_number: u64,
    /// How many serials the new CRL lists in all.
    pub crl_entries: usize,
    /// The CRL file.
    pub crl: PathBuf,
}

impl fmt::Display for RevokeSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.revoked {
            writeln!(
                f,
                "revoked {} serial {} ({})",
                r.identity,
                r.serial,
                r.cert.display()
            )?;
        }
        write!(
            f,
            "wrote {} (CRL number {}, {} revoked serial(s))",
            self.crl.display(),
            self.crl_number,
            self.crl_entries
        )
    }
}

/// Signs a CRL of everything the ledger marks revoked and replaces `crl.pem`.
fn write_crl(layout: &Layout, ca: &Ca, ledger: &Ledger, now: OffsetDateTime) -> Result<usize> {
    let revoked = ledger.revoked()?;
    let pem = ca.crl(ledger.crl_number, &revoked, now, ledger.crl_days)?;
    fsutil::write_atomic(&layout.crl(), pem.as_bytes(), Mode::Public)?;
    Ok(revoked.len())
}

/// Saves the ledger with a new CRL number, then writes the CRL. The ledger
/// goes first: if the CRL write fails, `crl` can redo it from the ledger,
/// and a CRL number is never used for two different lists.
fn publish(layout: &Layout, ca: &Ca, ledger: &mut Ledger, now: OffsetDateTime) -> Result<usize> {
    ledger.crl_number = ledger
        .crl_number
        .checked_add(1)
        .ok_or_else(|| CertsError::Ledger {
            path: layout.ledger().display().to_string(),
            message: "CRL numbers exhausted".into(),
        })?;
    ledger.save(&layout.ledger())?;
    write_crl(layout, ca, ledger, now).map_err(|e| CertsError::CrlNotWritten {
        path: layout.crl().display().to_string(),
        source: Box::new(e),
    })
}

/// Which ledger entries a revocation is about.
enum Wanted {
    /// Every certificate of this identity.
    Identity(SpiffeId),
    /// The certificate with this serial (and this identity, if it has one).
    Serial(Serial, Option<SpiffeId>),
}

impl Wanted {
    fn matches(&self, e: &IssuedEntry) -> bool {
        match self {
            Wanted::Identity(id) => e.identity == *id,
            Wanted::Serial(serial, identity) => {
                e.serial == *serial && identity.as_ref().is_none_or(|id| *id == e.identity)
            }
        }
    }
}

/// Revokes every matching unrevoked certificate and rewrites `crl.pem`.
/// Errors if nothing matched, so a typo cannot pass for a revocation.
pub fn revoke(dir: &Path, target: &RevokeTarget) -> Result<RevokeSummary> {
    let layout = Layout::new(dir);
    let mut ledger = load_ledger(&layout)?;
    let ca = Ca::load(&layout.ca_pem(), &layout.ca_key())?;
    let (what, wanted) = match target {
        RevokeTarget::Identity(s) => {
            let id = SpiffeId::parse(s.trim())?.require_federation(&ledger.federation)?;
            (id.to_string(), Wanted::Identity(id))
        }
        RevokeTarget::Cert(path) => {
            x509::check_issued_by(path, &layout.ca_pem())?;
            let info = x509::read_cert(path)?;
            let what = format!("certificate {}", path.display());
            let Some(serial) = info.serial else {
                return Err(CertsError::NothingToRevoke(what));
            };
            (what, Wanted::Serial(serial, info.identity))
        }
    };
    let matches = |e: &IssuedEntry| wanted.matches(e);
    let now = OffsetDateTime::now_utc();
    let at = format_time(now.replace_nanosecond(0).unwrap_or(now))?;
    let mut revoked = Vec::new();
    for e in ledger.certs.iter_mut().filter(|e| !e.revoked && matches(e)) {
        e.revoked = true;
        e.revoked_at = Some(at.clone());
        revoked.push(RevokedCert {
            identity: e.identity.clone(),
            serial: e.serial,
            cert: e.cert.clone(),
        });
    }
    if revoked.is_empty() {
        let already = ledger
            .certs
            .iter()
            .filter(|e| e.revoked && matches(e))
            .count();
        let detail = if already > 0 {
            format!("{what} ({already} already revoked)")
        } else {
            what
        };
        return Err(CertsError::NothingToRevoke(detail));
    }
    let crl_entries = publish(&layout, &ca, &mut ledger, now)?;
    Ok(RevokeSummary {
        revoked,
        crl_number: ledger.crl_number,
        crl_entries,
        crl: layout.crl(),
    })
}

/// Re-signs `crl.pem` from the ledger with a new number and a fresh
/// validity: before the current CRL's next update, or after a failed write.
pub fn refresh_crl(dir: &Path) -> Result<RevokeSummary> {
    let layout = Layout::new(dir);
    let mut ledger = load_ledger(&layout)?;
    let ca = Ca::load(&layout.ca_pem(), &layout.ca_key())?;
    let crl_entries = publish(&layout, &ca, &mut ledger, OffsetDateTime::now_utc())?;
    Ok(RevokeSummary {
        revoked: Vec::new(),
        crl_number: ledger.crl_number,
        crl_entries,
        crl: layout.crl(),
    })
}

/// The ledger, for `show`.
#[derive(Debug, Clone)]
pub struct ShowSummary(
    /// The ledger as read.
    pub Ledger,
);

impl fmt::Display for ShowSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.0;
        writeln!(
            f,
            "federation {}  CA serial {} valid to {}  CRL number {}  next serial {}",
            l.federation, l.ca.serial, l.ca.not_after, l.crl_number, l.next_serial
        )?;
        let width = l
            .certs
            .iter()
            .map(|c| c.identity.to_string().len())
            .max()
            .unwrap_or(8)
            .max(8);
        write!(
            f,
            "{:<width$}  {:>6}  {:<25}  revoked",
            "identity", "serial", "not_after"
        )?;
        for c in &l.certs {
            let revoked = match (&c.revoked, &c.revoked_at) {
                (true, Some(at)) => format!("yes, {at}"),
                (true, None) => "yes".to_string(),
                (false, _) => "no".to_string(),
            };
            write!(
                f,
                "\n{:<width$}  {:>6}  {:<25}  {revoked}",
                c.identity.to_string(),
                c.serial.to_string(),
                c.not_after
            )?;
        }
        Ok(())
    }
}

/// Reads the ledger of `dir`.
pub fn show(dir: &Path) -> Result<ShowSummary> {
    load_ledger(&Layout::new(dir)).map(ShowSummary)
}
