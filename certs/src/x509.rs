//! Reading certificates back: revocation by file needs the serial and the
//! identity of a PEM certificate, and proof that this CA issued it.

use crate::error::{CertsError, Result};
use crate::ledger::Serial;
use meldnet_core::SpiffeId;
use std::path::Path;

/// The DER content of the first PEM block of `text`, which must carry `label`.
pub fn pem_to_der(path: &Path, text: &str, label: &str) -> Result<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map_err(|e| CertsError::parse(path, e))?;
    if pem.label != label {
        return Err(CertsError::parse(
            path,
            format!("expected a PEM {label} block, found {}", pem.label),
        ));
    }
    Ok(pem.contents)
}

/// What revocation needs to know of a certificate file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Its serial, if it fits the ledger's range.
    pub serial: Option<Serial>,
    /// Its SPIFFE id, if it has exactly one.
    pub identity: Option<SpiffeId>,
}

/// Reads a PEM certificate file.
pub fn read_cert(path: &Path) -> Result<CertInfo> {
    let text = crate::fsutil::read_to_string(path)?;
    let der = pem_to_der(path, &text, "CERTIFICATE")?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| CertsError::parse(path, e))?;
    Ok(CertInfo {
        serial: Serial::from_der_bytes(cert.raw_serial()),
        identity: SpiffeId::from_certificate(&der).ok(),
    })
}

/// Checks that the certificate in `cert_path` was signed by the CA in
/// `ca_path`: by name and by signature, because two federations' CAs may
/// carry the same name and the same serials.
pub fn check_issued_by(cert_path: &Path, ca_path: &Path) -> Result<()> {
    let read = |path: &Path| -> Result<Vec<u8>> {
        let text = crate::fsutil::read_to_string(path)?;
        pem_to_der(path, &text, "CERTIFICATE")
    };
    let (cert_der, ca_der) = (read(cert_path)?, read(ca_path)?);
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
        .map_err(|e| CertsError::parse(cert_path, e))?;
    let (_, ca) =
        x509_parser::parse_x509_certificate(&ca_der).map_err(|e| CertsError::parse(ca_path, e))?;
    let not_ours = |why: &str| {
        CertsError::parse(
            cert_path,
            format!("not issued by the CA of this folder ({why})"),
        )
    };
    if cert.issuer().as_raw() != ca.subject().as_raw() {
        return Err(not_ours("issuer name differs"));
    }
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|_| not_ours("the CA's key did not sign it"))
}
