//! A node's own CA for the hosting providers of its country: the node
//! issues their certificates (`spiffe://<federation>/provider/<CC>/<name>`)
//! and its hash-check endpoint's server certificate. Providers are not
//! members of the federation, so the federation CA never certifies them;
//! the node trusts only its own provider CA (and the federation CA, so
//! that members are refused by role with a reason, not at the handshake).
//!
//! Layout in the node's folder: `providers/ca.pem`, `providers/ca.key`,
//! `providers/server.pem`, `providers/server.key`, `providers/crl.pem`.

use crate::ca::{Ca, Issued, Validity};
use crate::error::{CertsError, Result};
use crate::fsutil::{self, Mode};
use crate::ledger::{format_time, Serial};
use meldnet_core::CountryCode;
use meldnet_core::{Role, SpiffeId, TrustDomain};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// The DNS name of a node's hash-check endpoint.
pub fn hash_check_server_name(federation: &TrustDomain, cc: CountryCode) -> String {
    format!(
        "hashcheck.{}.{federation}",
        cc.to_string().to_ascii_lowercase()
    )
}

/// A serial from the CA's own space: random, positive, never 0 (this CA
/// keeps no ledger; 63 random bits do not repeat in practice).
fn random_serial() -> Serial {
    Serial((rand::random::<u64>() >> 1).max(1))
}

/// The files of a node's provider CA and server certificate, made in memory.
pub fn make_node_files(
    node: &SpiffeId,
    ca_validity: Validity,
    validity: Validity,
) -> Result<Vec<(PathBuf, Vec<u8>, Mode)>> {
    let Role::Node(cc) = node.role() else {
        return Err(CertsError::invalid(
            "node",
            &node.to_string(),
            "not a node identity",
        ));
    };
    let (ca, ca_files) = Ca::create_named(
        format!("meldnet provider CA of node {cc} ({})", node.trust_domain()),
        random_serial(),
        ca_validity,
    )?;
    let server = ca.issue_for(
        node,
        random_serial(),
        validity,
        Some(&[hash_check_server_name(node.trust_domain(), *cc)]),
    )?;
    // An empty CRL of the provider CA: every certificate the node trusts has
    // a CRL from its issuer (a certificate of unknown status is refused).
    let crl = ca.crl(1, &[], validity.not_before, crate::init::DEFAULT_DAYS)?;
    let dir = PathBuf::from("providers");
    let both = |stem: &str, i: Issued| {
        [
            (
                dir.join(format!("{stem}.pem")),
                i.cert_pem.into_bytes(),
                Mode::Public,
            ),
            (
                dir.join(format!("{stem}.key")),
                i.key_pem.into_bytes(),
                Mode::Private,
            ),
        ]
    };
    Ok(both("ca", ca_files)
        .into_iter()
        .chain(both("server", server))
        .chain([(dir.join("crl.pem"), crl.into_bytes(), Mode::Public)])
        .collect())
}

/// What `provider` made.
#[derive(Debug, Clone)]
pub struct ProviderSummary {
    /// The identity certified.
    pub identity: SpiffeId,
    /// The certificate, its key and the CA certificate the provider trusts.
    pub files: [PathBuf; 3],
    /// End of validity (RFC 3339).
    pub not_after: String,
}

/// Issues a provider certificate from the node's provider CA in
/// `node_dir/providers`. Writes `out/<name>.pem`, `.key` and `ca.pem`.
pub fn issue_provider(
    node_dir: &Path,
    name: &str,
    out: &Path,
    days: u32,
) -> Result<ProviderSummary> {
    let node_cert = node_dir.join("node.pem");
    let der = crate::x509::pem_to_der(
        &node_cert,
        &fsutil::read_to_string(&node_cert)?,
        "CERTIFICATE",
    )?;
    let node = SpiffeId::from_certificate(&der).map_err(|e| CertsError::parse(&node_cert, e))?;
    let Role::Node(cc) = node.role() else {
        return Err(CertsError::parse(&node_cert, "not a node certificate"));
    };
    let identity = SpiffeId::parse(&format!(
        "spiffe://{}/provider/{cc}/{name}",
        node.trust_domain()
    ))
    .map_err(|e| CertsError::invalid("--name", name, e.to_string()))?;
    crate::init::check_days(days)?;
    let ca_pem = node_dir.join("providers/ca.pem");
    let ca = Ca::load(&ca_pem, &node_dir.join("providers/ca.key"))?;
    let validity = Validity::days_from(OffsetDateTime::now_utc(), days);
    let issued = ca.issue(&identity, random_serial(), validity)?;
    fsutil::create_dir_all(out)?;
    let files = [
        out.join(format!("{name}.pem")),
        out.join(format!("{name}.key")),
        out.join("ca.pem"),
    ];
    for p in &files[..2] {
        if p.exists() {
            return Err(CertsError::invalid(
                "--out",
                &out.display().to_string(),
                format!("{} already exists; refusing to overwrite it", p.display()),
            ));
        }
    }
    fsutil::write_atomic(&files[1], issued.key_pem.as_bytes(), Mode::Private)?;
    fsutil::write_atomic(&files[0], issued.cert_pem.as_bytes(), Mode::Public)?;
    fsutil::write_atomic(
        &files[2],
        fsutil::read_to_string(&ca_pem)?.as_bytes(),
        Mode::Public,
    )?;
    Ok(ProviderSummary {
        identity,
        files,
        not_after: format_time(validity.not_after)?,
    })
}
