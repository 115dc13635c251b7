//! Reading certificates back: revocation by file needs the serial, the
//! issuer and the identity of a PEM certificate.

use crate::error::{CertsError, Result};
use crate::ledger::Serial;
use meldnet_core::identity::SpiffeId;
use std::path::Path;

/// The DER content of the first PEM block of `text`, which must carry `label`.
pub fn pem_to_der(path: &Path, text: &str, label: &str) -> Result<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes()).map_err(|e| CertsError::parse(path, e))?;
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
    /// Its issuer name (DER), to check it is this CA's.
    pub issuer_der: Vec<u8>,
    /// Its SPIFFE id, if it has exactly one.
    pub identity: Option<SpiffeId>,
}

/// Reads a PEM certificate file.
pub fn read_cert(path: &Path) -> Result<CertInfo> {
    let text = crate::fsutil::read_to_string(path)?;
    let der = pem_to_der(path, &text, "CERTIFICATE")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| CertsError::parse(path, e))?;
    Ok(CertInfo {
        serial: Serial::from_der_bytes(cert.raw_serial()),
        issuer_der: cert.issuer().as_raw().to_vec(),
        identity: SpiffeId::from_certificate(&der).ok(),
    })
}

/// The subject name (DER) of a PEM certificate file.
pub fn subject_der(path: &Path) -> Result<Vec<u8>> {
    let text = crate::fsutil::read_to_string(path)?;
    let der = pem_to_der(path, &text, "CERTIFICATE")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| CertsError::parse(path, e))?;
    Ok(cert.subject().as_raw().to_vec())
}
