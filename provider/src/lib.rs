//! A hosting provider's side of standard notices: the reference client the
//! tests use and integrators read. It receives the notices of its country's
//! hotline node over mTLS (`ProviderNotices.Receive`), verifies each offline
//! with the node's public key, stores it (written and synced) and only then
//! acknowledges it; it answers a notice (`ProviderNotices.Answer`) and keeps
//! the node's signed record of the answer, verified too.

use meldnet_core::config::{self, ConfigError};
use meldnet_core::{verify_answer_record, verify_notice, Keyring, Notice, SpiffeId};
use meldnet_net::{ClientTlsFiles, HubEndpoint};
use meldnet_proto::v1 as pb;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `provider.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The country's node: its hash-check address and the DNS name in its
    /// server certificate.
    pub node: HubEndpoint,
    /// Public keys of the federation (the node's key verifies notices).
    pub keyring: PathBuf,
    /// Where notices and answer records are kept.
    pub notices_dir: PathBuf,
    /// The provider's certificate and key from its node, and the node's
    /// provider CA (`ca.pem`), which issued the node's server certificate.
    pub tls: ClientTlsFiles,
}

impl ProviderConfig {
    /// Loads `path`; relative paths are relative to its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut c: ProviderConfig = config::load(path)?;
        let base = config::base_dir(path);
        c.keyring = base.join(&c.keyring);
        c.notices_dir = base.join(&c.notices_dir);
        c.tls.resolve(&base);
        Ok(c)
    }
}

/// Why a notice was not stored.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// It does not verify, or is not addressed to this provider.
    #[error("notice refused: {0}")]
    Refused(String),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Writes `bytes` to `path` durably (`append_file::write_durably`).
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), ProviderError> {
    meldnet_core::append_file::write_durably(path, bytes).map_err(|source| ProviderError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Verifies a pushed notice for `me` and stores it as
/// `<dir>/<notice_id>-<attempt>.json` (what it says, with the signed bytes).
pub fn store_notice(
    signed: &pb::SignedNotice,
    keyring: &Keyring,
    me: &SpiffeId,
    dir: &Path,
) -> Result<(Notice, PathBuf), ProviderError> {
    let notice =
        verify_notice(signed, keyring).map_err(|r| ProviderError::Refused(r.to_string()))?;
    if &notice.provider.identity != me {
        return Err(ProviderError::Refused(format!(
            "notice {} is addressed to {}, not to {me}",
            notice.notice_id, notice.provider.identity
        )));
    }
    let path = dir.join(format!("{}-{}.json", notice.notice_id, notice.attempt));
    let body = serde_json::to_vec_pretty(&notice.describe(signed)).unwrap_or_default();
    write_durably(&path, &body)?;
    Ok((notice, path))
}

/// The part of a stored notice file that verifies: its signed bytes.
#[derive(Deserialize)]
struct StoredDoc {
    signed: SignedDoc,
}

#[derive(Deserialize)]
struct SignedDoc {
    notice: String,
    signature: String,
    key_id: String,
}

/// Reads a stored notice file and verifies it again from its signed bytes.
pub fn verify_file(path: &Path, keyring: &Keyring) -> Result<Notice, String> {
    use base64::Engine as _;
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| at(&e))?;
    let doc: StoredDoc = serde_json::from_str(&text).map_err(|e| at(&e))?;
    let b64 = |k: &str, s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| at(&format!("signed.{k}: {e}")))
    };
    let signed = pb::SignedNotice {
        notice: b64("notice", &doc.signed.notice)?,
        signature: b64("signature", &doc.signed.signature)?,
        key_id: doc.signed.key_id,
    };
    verify_notice(&signed, keyring).map_err(|r| at(&r))
}

/// Verifies the node's signed record of an answer and that it records
/// `sent`, as sent, for `me`.
pub fn check_record(
    record: &pb::SignedAnswerRecord,
    sent: &pb::NoticeAnswer,
    keyring: &Keyring,
    me: &SpiffeId,
) -> Result<meldnet_core::AnswerRecord, String> {
    let r = verify_answer_record(record, keyring).map_err(|e| e.to_string())?;
    let ours = meldnet_core::NoticeAnswer::from_proto(sent).map_err(|e| e.to_string())?;
    if r.answer != ours || &r.provider != me {
        return Err("the node's record does not record the answer sent".into());
    }
    Ok(r)
}
