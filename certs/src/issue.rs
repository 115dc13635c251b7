//! `issue`: one more certificate from an existing CA — a new party, a
//! replacement after revocation, or (with `expired`) a deliberately expired
//! certificate to prove that the hub refuses it.

use crate::ca::{Ca, Validity};
use crate::error::{CertsError, Result};
use crate::fsutil::{self, Mode};
use crate::init::check_days;
use crate::layout::Layout;
use crate::ledger::{format_time, IssuedEntry, Ledger, Serial};
use meldnet_core::SpiffeId;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// What `issue` is asked to make.
#[derive(Debug, Clone)]
pub struct IssueOptions {
    /// The federation folder holding the CA.
    pub dir: PathBuf,
    /// The SPIFFE id to certify.
    pub identity: String,
    /// Output prefix: writes `PREFIX.pem` and `PREFIX.key`.
    pub out: PathBuf,
    /// Validity in days (ignored with `expired`).
    pub days: u32,
    /// Make a certificate whose validity ended yesterday.
    pub expired: bool,
}

/// What `issue` made.
#[derive(Debug, Clone)]
pub struct IssueSummary {
    /// The identity certified.
    pub identity: SpiffeId,
    /// Its serial.
    pub serial: Serial,
    /// The certificate file.
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
    /// Start of validity (RFC 3339).
    pub not_before: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
}

impl fmt::Display for IssueSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "issued {} serial {}", self.identity, self.serial)?;
        writeln!(f, "  valid   {} to {}", self.not_before, self.not_after)?;
        writeln!(f, "  cert    {}", self.cert.display())?;
        write!(f, "  key     {}", self.key.display())
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(prefix.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// Loads the ledger, with a hint when the folder has no CA yet.
pub(crate) fn load_ledger(layout: &Layout) -> Result<Ledger> {
    let path = layout.ledger();
    if !path.exists() {
        return Err(CertsError::Ledger {
            path: path.display().to_string(),
            message: "not found; is this a folder made by `meldnet-certs init`?".into(),
        });
    }
    Ledger::load(&path)
}

/// Issues one certificate. The serial is recorded in the ledger before the
/// files are written, so a failure can waste a serial but never reuse one.
pub fn issue(opts: &IssueOptions) -> Result<IssueSummary> {
    let layout = Layout::new(&opts.dir);
    let mut ledger = load_ledger(&layout)?;
    let identity = SpiffeId::parse(opts.identity.trim())?.require_federation(&ledger.federation)?;
    if !opts.expired {
        check_days(opts.days)?;
    }
    let cert_path = with_suffix(&opts.out, ".pem");
    let key_path = with_suffix(&opts.out, ".key");
    for p in [&cert_path, &key_path] {
        if p.symlink_metadata().is_ok() {
            return Err(CertsError::invalid(
                "--out",
                &opts.out.display().to_string(),
                format!("{} already exists; refusing to overwrite it", p.display()),
            ));
        }
    }
    let ca = Ca::load(&layout.ca_pem(), &layout.ca_key())?;
    let now = OffsetDateTime::now_utc();
    let validity = if opts.expired {
        Validity::expired(now)
    } else {
        Validity::days_from(now, opts.days)
    };
    let serial = ledger.take_serial()?;
    let issued = ca.issue(&identity, serial, validity)?;
    let not_after = format_time(validity.not_after)?;
    ledger.certs.push(IssuedEntry {
        identity: identity.clone(),
        serial,
        cert: layout.ledger_path(&cert_path),
        not_after: not_after.clone(),
        revoked: false,
        revoked_at: None,
    });
    ledger.save(&layout.ledger())?;
    if let Some(parent) = cert_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fsutil::create_dir_all(parent)?;
    }
    fsutil::write_atomic(&key_path, issued.key_pem.as_bytes(), Mode::Private)?;
    fsutil::write_atomic(&cert_path, issued.cert_pem.as_bytes(), Mode::Public)?;
    Ok(IssueSummary {
        identity,
        serial,
        cert: cert_path,
        key: key_path,
        not_before: format_time(validity.not_before)?,
        not_after,
    })
}
