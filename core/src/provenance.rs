//! Provenance: the checks that let anyone holding the public keys verify a
//! routed report, years later, from the stored bytes alone: the origin node's
//! signature over the exact report bytes, and the hub's signature over the
//! exact decision bytes, which binds the report by its SHA-256.

use crate::error::{Refusal, RefusalKind};
use crate::hash::Sha256;
use crate::identity::SpiffeId;
use crate::keyring::Keyring;
use crate::limits::MAX_REPORT_BYTES;
use crate::report::Report;
use crate::signing::{Context, KeyId, PublicKey};
use meldnet_proto::v1 as pb;
use prost::Message;

/// A signed message whose envelope has been checked: the bytes are within
/// bounds, the signature has the right length and the key id is well formed.
/// The signature itself is not verified yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The exact signed bytes.
    pub bytes: Vec<u8>,
    /// Ed25519 signature.
    pub signature: [u8; 64],
    /// Which key of the signer.
    pub key_id: KeyId,
}

impl Envelope {
    fn parse(
        bytes: Vec<u8>,
        signature: &[u8],
        key_id: &str,
        prefix: &str,
        what: &str,
    ) -> Result<Self, Refusal> {
        if bytes.len() > MAX_REPORT_BYTES {
            return Err(Refusal::new(
                RefusalKind::InvalidArgument,
                format!("{prefix}.{what}"),
                format!("{} bytes, at most {MAX_REPORT_BYTES}", bytes.len()),
            ));
        }
        let signature: [u8; 64] = signature.try_into().map_err(|_| {
            Refusal::invalid(
                format!("{prefix}.signature"),
                format!(
                    "expected 64 bytes of Ed25519 signature, got {}",
                    signature.len()
                ),
            )
        })?;
        let key_id = KeyId::parse(key_id).ok_or_else(|| {
            Refusal::invalid(
                format!("{prefix}.key_id"),
                "expected 16 lower-case hex digits",
            )
        })?;
        Ok(Envelope {
            bytes,
            signature,
            key_id,
        })
    }

    /// Checks the envelope of a signed report (fields `signed_report.*`).
    pub fn from_signed_report(sr: pb::SignedReport) -> Result<Self, Refusal> {
        Self::parse(
            sr.report,
            &sr.signature,
            &sr.key_id,
            "signed_report",
            "report",
        )
    }

    /// Checks the envelope of a signed decision (fields `signed_decision.*`).
    pub fn from_signed_decision(sd: pb::SignedDecision) -> Result<Self, Refusal> {
        Self::parse(
            sd.decision,
            &sd.signature,
            &sd.key_id,
            "signed_decision",
            "decision",
        )
    }

    /// SHA-256 of the signed bytes.
    pub fn digest(&self) -> Sha256 {
        Sha256::of(&self.bytes)
    }

    /// Back to the wire form of a signed report; the bytes are moved, not re-encoded.
    pub fn into_signed_report(self) -> pb::SignedReport {
        pb::SignedReport {
            report: self.bytes,
            signature: self.signature.to_vec(),
            key_id: self.key_id.to_string(),
        }
    }

    /// Verifies the signature with `key` under `context`.
    pub fn verify(&self, key: &PublicKey, context: Context, field: &str) -> Result<(), Refusal> {
        key.verify(context, &self.bytes, &self.signature)
            .map_err(|_| {
                Refusal::invalid(
                    format!("{field}.signature"),
                    format!("does not verify with key {}", self.key_id),
                )
            })
    }
}

/// Finds the signing key of `owner`; a key the keyring does not hold is
/// `FAILED_PRECONDITION` naming `field.key_id`.
pub fn lookup_key<'k>(
    keyring: &'k Keyring,
    owner: &SpiffeId,
    key_id: KeyId,
    field: &str,
) -> Result<&'k PublicKey, Refusal> {
    keyring.get(owner, key_id).ok_or_else(|| {
        Refusal::new(
            RefusalKind::FailedPrecondition,
            format!("{field}.key_id"),
            format!("no key {key_id} is registered for {owner}"),
        )
    })
}

/// A delivery whose two signatures and binding have been verified.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The report, validated.
    pub report: Report,
    /// The hub's decision on it.
    pub decision: pb::Decision,
    /// SHA-256 of the report bytes.
    pub report_digest: Sha256,
    /// Key that signed the report.
    pub report_key: KeyId,
    /// Key that signed the decision.
    pub decision_key: KeyId,
}

/// Verifies a routed report offline: the hub's signature on the decision, the
/// decision's binding to the exact report bytes, the report's validity, and
/// the origin node's signature.
pub fn verify_routed(
    sr: pb::SignedReport,
    sd: pb::SignedDecision,
    keyring: &Keyring,
) -> Result<Verified, Refusal> {
    let report_env = Envelope::from_signed_report(sr)?;
    let decision_env = Envelope::from_signed_decision(sd)?;
    let hub = SpiffeId::hub(keyring.federation());
    let hub_key = lookup_key(keyring, &hub, decision_env.key_id, "signed_decision")?;
    decision_env.verify(hub_key, Context::Decision, "signed_decision")?;
    let decision = pb::Decision::decode(decision_env.bytes.as_slice()).map_err(|e| {
        Refusal::invalid(
            "signed_decision.decision",
            format!("malformed protobuf: {e}"),
        )
    })?;
    let report_digest = report_env.digest();
    if decision.report_digest != report_digest.0 {
        return Err(Refusal::invalid(
            "decision.report_digest",
            "does not match the SHA-256 of the report bytes",
        ));
    }
    let report = Report::decode(&report_env.bytes)?;
    if decision.report_id != report.id.to_string() {
        return Err(Refusal::invalid(
            "decision.report_id",
            "does not match report.id",
        ));
    }
    let origin = SpiffeId::node(keyring.federation(), report.origin);
    if decision.origin != origin.to_string() {
        return Err(Refusal::invalid(
            "decision.origin",
            "does not match report.origin_country",
        ));
    }
    let node_key = lookup_key(keyring, &origin, report_env.key_id, "signed_report")?;
    report_env.verify(node_key, Context::Report, "signed_report")?;
    Ok(Verified {
        report,
        decision,
        report_digest,
        report_key: report_env.key_id,
        decision_key: decision_env.key_id,
    })
}

/// Verifies the hub's receipt for a report this node sent: the hub's
/// signature on the decision and its binding to the exact bytes sent
/// (`sent_digest`, the SHA-256 of `SignedReport.report`).
pub fn verify_receipt(
    receipt: &pb::Receipt,
    sent_digest: &Sha256,
    keyring: &Keyring,
) -> Result<pb::Decision, Refusal> {
    let sd = receipt
        .decision
        .clone()
        .ok_or_else(|| Refusal::invalid("receipt.decision", "missing"))?;
    let env = Envelope::from_signed_decision(sd)?;
    let hub = SpiffeId::hub(keyring.federation());
    env.verify(
        lookup_key(keyring, &hub, env.key_id, "signed_decision")?,
        Context::Decision,
        "signed_decision",
    )?;
    let decision = pb::Decision::decode(env.bytes.as_slice()).map_err(|e| {
        Refusal::invalid(
            "signed_decision.decision",
            format!("malformed protobuf: {e}"),
        )
    })?;
    if decision.report_digest != sent_digest.0 || receipt.report_digest != sent_digest.0 {
        return Err(Refusal::invalid(
            "receipt.report_digest",
            "does not match the report sent",
        ));
    }
    Ok(decision)
}
