//! Provenance: the checks that let anyone holding the public keys verify a
//! routed report, years later, from the stored bytes alone: the origin node's
//! signature over the exact report bytes, and the hub's signature over the
//! exact decision bytes, which binds the report by its SHA-256.

use crate::error::{Refusal, RefusalKind};
use crate::hash::Sha256;
use crate::identity::SpiffeId;
use crate::keyring::Keyring;
use crate::limits::MAX_REPORT_BYTES;
use crate::merkle::{leaf_hash, Tree};
use crate::report::Report;
use crate::signing::{verify_batch, BatchItem, Context, KeyId, PublicKey, SigningKey};
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
        (prefix, what): (&str, &str),
        max: usize,
    ) -> Result<Self, Refusal> {
        if bytes.len() > max {
            return Err(Refusal::new(
                RefusalKind::InvalidArgument,
                format!("{prefix}.{what}"),
                format!("{} bytes, at most {max}", bytes.len()),
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

    /// Checks the envelope of any signed message (fields `prefix.*`, the
    /// signed bytes `prefix.what`); the bytes are copied.
    pub fn from_parts(
        bytes: &[u8],
        signature: &[u8],
        key_id: &str,
        prefix: &str,
        what: &str,
    ) -> Result<Self, Refusal> {
        Self::parse(
            bytes.to_vec(),
            signature,
            key_id,
            (prefix, what),
            MAX_REPORT_BYTES,
        )
    }

    /// As [`Envelope::from_parts`], for a message that may be larger than a
    /// report (up to `max` bytes).
    pub fn from_parts_within(
        bytes: &[u8],
        signature: &[u8],
        key_id: &str,
        (prefix, what): (&str, &str),
        max: usize,
    ) -> Result<Self, Refusal> {
        Self::parse(bytes.to_vec(), signature, key_id, (prefix, what), max)
    }

    /// Checks the envelope of a signed case step (fields `signed_step.*`).
    pub fn from_signed_step(s: pb::SignedCaseStep) -> Result<Self, Refusal> {
        Self::parse(
            s.step,
            &s.signature,
            &s.key_id,
            ("signed_step", "step"),
            MAX_REPORT_BYTES,
        )
    }

    /// Back to the wire form of a signed case step; the bytes are moved.
    pub fn into_signed_step(self) -> pb::SignedCaseStep {
        pb::SignedCaseStep {
            step: self.bytes,
            signature: self.signature.to_vec(),
            key_id: self.key_id.to_string(),
        }
    }

    /// Checks the envelope of a signed report (fields `signed_report.*`).
    pub fn from_signed_report(sr: pb::SignedReport) -> Result<Self, Refusal> {
        Self::parse(
            sr.report,
            &sr.signature,
            &sr.key_id,
            ("signed_report", "report"),
            MAX_REPORT_BYTES,
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

/// Signs the hub's statistics at `made_at_ms` over their exact encoding.
pub fn sign_stats_export(
    signer: &SigningKey,
    hub: &SpiffeId,
    stats: pb::StatsResponse,
    made_at_ms: i64,
) -> pb::SignedStatsExport {
    let stats_export = pb::StatsExport {
        stats: Some(stats),
        made_at_ms,
        hub: hub.to_string(),
    }
    .encode_to_vec();
    pb::SignedStatsExport {
        signature: signer.sign(Context::StatsExport, &stats_export).to_vec(),
        key_id: signer.public().id().to_string(),
        stats_export,
    }
}

/// Verifies a statistics export with the hub's key from `keyring` (fields
/// `signed_export.*`): offline, what a regulator does before citing it.
pub fn verify_stats_export(
    s: &pb::SignedStatsExport,
    keyring: &Keyring,
) -> Result<pb::StatsExport, Refusal> {
    let field = "signed_export";
    // An export lists every provider: it may be larger than a report, so
    // it is bounded by the message limit, not the report's.
    let env = Envelope::from_parts_within(
        &s.stats_export,
        &s.signature,
        &s.key_id,
        (field, "stats_export"),
        crate::limits::MAX_MESSAGE_BYTES,
    )?;
    let hub = SpiffeId::hub(keyring.federation());
    let key = lookup_key(keyring, &hub, env.key_id, field)?;
    env.verify(key, Context::StatsExport, field)?;
    let export = pb::StatsExport::decode(env.bytes.as_slice()).map_err(|e| {
        Refusal::invalid(
            format!("{field}.stats_export"),
            format!("malformed protobuf: {e}"),
        )
    })?;
    if export.hub != hub.to_string() {
        return Err(Refusal::invalid(
            format!("{field}.stats_export.hub"),
            format!("{} is not this federation's hub", export.hub),
        ));
    }
    Ok(export)
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

/// Encodes `decisions` and signs them as one tree (`sign_tree`): what the
/// hub does for a decision made outside a batch (an escalation, a split),
/// and what tests and the fuzz corpus make signed decisions with.
pub fn sign_decisions(signer: &SigningKey, decisions: &[pb::Decision]) -> Vec<pb::SignedDecision> {
    let mut signed: Vec<pb::SignedDecision> = decisions
        .iter()
        .map(|d| pb::SignedDecision {
            decision: d.encode_to_vec(),
            ..Default::default()
        })
        .collect();
    sign_tree(signer, &mut signed.iter_mut().collect::<Vec<_>>());
    signed
}

/// One decision signed alone, a tree of size 1 (`sign_decisions`).
pub fn sign_decision(signer: &SigningKey, decision: &pb::Decision) -> pb::SignedDecision {
    let mut signed = pb::SignedDecision {
        decision: decision.encode_to_vec(),
        ..Default::default()
    };
    sign_tree(signer, &mut [&mut signed]);
    signed
}

/// Signs decisions, as the hub does (the one place that builds the tree
/// `verify_decision` checks), (their `decision` bytes set) with one signature over
/// the head of their Merkle tree; each gets its inclusion path.
pub fn sign_tree(signer: &SigningKey, decisions: &mut [&mut pb::SignedDecision]) {
    if decisions.is_empty() {
        return;
    }
    let leaves: Vec<[u8; 32]> = decisions.iter().map(|d| leaf_hash(&d.decision)).collect();
    let tree = Tree::new(leaves);
    let size = tree.size() as u64;
    let signature = signer.sign(Context::DecisionTree, &tree_head(size, &tree.root()));
    let key_id = signer.public().id().to_string();
    for (i, d) in decisions.iter_mut().enumerate() {
        d.signature = signature.to_vec();
        d.key_id.clone_from(&key_id);
        d.tree_size = size;
        d.leaf_index = i as u64;
        d.audit_path = tree.path(i).into_iter().map(|h| h.to_vec()).collect();
    }
}

/// The bytes the hub signs for a tree of decisions.
pub fn tree_head(size: u64, root: &[u8; 32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(40);
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(root);
    v
}

/// A decision whose hub signature (through its tree path) has been verified.
#[derive(Clone, Debug)]
pub struct VerifiedDecision {
    /// The decision.
    pub decision: pb::Decision,
    /// The hub key that signed it.
    pub key_id: KeyId,
}

/// Tree heads already verified: the decisions of one hub batch share one
/// head, so a recipient checks its signature once, not once per decision.
#[derive(Default)]
pub struct HeadCache {
    verified: std::collections::HashSet<(KeyId, u64, [u8; 32], [u8; 64])>,
}

/// Verifies the hub's signature on a decision: the decision is a leaf of a
/// tree whose head the hub signed; the path leads from the leaf to the root.
pub fn verify_decision(
    sd: &pb::SignedDecision,
    keyring: &Keyring,
) -> Result<VerifiedDecision, Refusal> {
    verify_decision_cached(sd, keyring, &mut HeadCache::default())
}

/// `verify_decision`, checking each distinct tree head's signature once.
pub fn verify_decision_cached(
    sd: &pb::SignedDecision,
    keyring: &Keyring,
    cache: &mut HeadCache,
) -> Result<VerifiedDecision, Refusal> {
    let field = "signed_decision";
    if sd.decision.len() > MAX_REPORT_BYTES {
        return Err(Refusal::invalid(format!("{field}.decision"), "too large"));
    }
    let signature: &[u8; 64] = sd.signature.as_slice().try_into().map_err(|_| {
        Refusal::invalid(
            format!("{field}.signature"),
            format!("expected 64 bytes, got {}", sd.signature.len()),
        )
    })?;
    let key_id = KeyId::parse(&sd.key_id).ok_or_else(|| {
        Refusal::invalid(
            format!("{field}.key_id"),
            "expected 16 lower-case hex digits",
        )
    })?;
    if sd.audit_path.len() > crate::merkle::MAX_PATH {
        return Err(Refusal::invalid(format!("{field}.audit_path"), "too long"));
    }
    let path = sd
        .audit_path
        .iter()
        .map(|p| <[u8; 32]>::try_from(p.as_slice()))
        .collect::<Result<Vec<[u8; 32]>, _>>()
        .map_err(|_| Refusal::invalid(format!("{field}.audit_path"), "expected 32-byte hashes"))?;
    let leaf = crate::merkle::leaf_hash(&sd.decision);
    let root = crate::merkle::root_from_path(leaf, sd.leaf_index, sd.tree_size, &path).ok_or_else(
        || {
            Refusal::invalid(
                format!("{field}.audit_path"),
                "does not fit leaf_index and tree_size",
            )
        },
    )?;
    let hub = SpiffeId::hub(keyring.federation());
    let key = lookup_key(keyring, &hub, key_id, field)?;
    let head = (key_id, sd.tree_size, root, *signature);
    if !cache.verified.contains(&head) {
        key.verify(
            Context::DecisionTree,
            &tree_head(sd.tree_size, &root),
            signature,
        )
        .map_err(|_| {
            Refusal::invalid(
                format!("{field}.signature"),
                format!("does not verify with key {key_id}"),
            )
        })?;
        cache.verified.insert(head);
    }
    let decision = pb::Decision::decode(sd.decision.as_slice()).map_err(|e| {
        Refusal::invalid(
            format!("{field}.decision"),
            format!("malformed protobuf: {e}"),
        )
    })?;
    Ok(VerifiedDecision { decision, key_id })
}

/// Verifies the node signatures of many signed reports, each item giving its
/// envelope and the key to check it with: one batch check, and single checks
/// only when the batch fails, to name the bad ones (`signed_report.signature`).
pub fn verify_report_signatures<T>(
    items: Vec<Result<T, Refusal>>,
    signed: impl for<'a> Fn(&'a T) -> (&'a Envelope, &'a PublicKey),
) -> Vec<Result<T, Refusal>> {
    let batch: Vec<BatchItem<'_>> = items
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .map(|t| {
            let (env, key) = signed(t);
            BatchItem {
                key,
                context: Context::Report,
                message: &env.bytes,
                signature: &env.signature,
            }
        })
        .collect();
    if verify_batch(&batch) {
        return items;
    }
    drop(batch);
    items
        .into_iter()
        .map(|c| {
            let t = c?;
            let (env, key) = signed(&t);
            env.verify(key, Context::Report, "signed_report")?;
            Ok(t)
        })
        .collect()
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
    verify_routed_many(vec![(sr, sd)], keyring)
        .pop()
        .unwrap_or_else(|| Err(Refusal::invalid("delivery", "nothing to verify")))
}

/// A routed report checked but for the node's signature.
struct Unsigned {
    env: Envelope,
    key: PublicKey,
    verified: Verified,
}

fn check_routed(
    sr: pb::SignedReport,
    sd: &pb::SignedDecision,
    keyring: &Keyring,
    cache: &mut HeadCache,
) -> Result<Unsigned, Refusal> {
    let report_env = Envelope::from_signed_report(sr)?;
    let VerifiedDecision {
        decision,
        key_id: decision_key,
    } = verify_decision_cached(sd, keyring, cache)?;
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
    let key = *lookup_key(keyring, &origin, report_env.key_id, "signed_report")?;
    let report_key = report_env.key_id;
    Ok(Unsigned {
        env: report_env,
        key,
        verified: Verified {
            report,
            decision,
            report_digest,
            report_key,
            decision_key,
        },
    })
}

/// Verifies many routed reports, each as `verify_routed` does, with each
/// distinct tree head checked once and the nodes' signatures in one batch
/// (one by one only if the batch fails, to name the bad ones).
pub fn verify_routed_many(
    items: Vec<(pb::SignedReport, pb::SignedDecision)>,
    keyring: &Keyring,
) -> Vec<Result<Verified, Refusal>> {
    let mut cache = HeadCache::default();
    let checked: Vec<Result<Unsigned, Refusal>> = items
        .into_iter()
        .map(|(sr, sd)| check_routed(sr, &sd, keyring, &mut cache))
        .collect();
    verify_report_signatures(checked, |u| (&u.env, &u.key))
        .into_iter()
        .map(|c| c.map(|u| u.verified))
        .collect()
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
        .as_ref()
        .ok_or_else(|| Refusal::invalid("receipt.decision", "missing"))?;
    let decision = verify_decision(sd, keyring)?.decision;
    if decision.report_digest != sent_digest.0 || receipt.report_digest != sent_digest.0 {
        return Err(Refusal::invalid(
            "receipt.report_digest",
            "does not match the report sent",
        ));
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::TrustDomain;
    use crate::keyring::{KeyEntry, KeyringFile};
    use crate::signing::SigningKey;

    #[test]
    fn each_decision_of_a_signed_tree_verifies_alone_and_tampering_fails() {
        let fed = TrustDomain::parse("t.test").unwrap();
        let hub = SigningKey::generate();
        let keyring = Keyring::from_file(
            KeyringFile {
                federation: fed.clone(),
                keys: vec![KeyEntry {
                    owner: SpiffeId::hub(&fed),
                    public_key: hub.public().to_hex(),
                }],
            },
            "test",
        )
        .unwrap();
        let decisions: Vec<pb::Decision> = (0..5)
            .map(|i| pb::Decision {
                report_id: format!("r{i}"),
                ..Default::default()
            })
            .collect();
        let signed = sign_decisions(&hub, &decisions);
        for (sd, d) in signed.iter().zip(&decisions) {
            assert_eq!(&verify_decision(sd, &keyring).unwrap().decision, d);
        }
        let mut moved = signed[1].clone();
        moved.leaf_index = 2;
        assert!(verify_decision(&moved, &keyring).is_err());
        let mut edited = signed[3].clone();
        edited.decision.push(0);
        assert!(verify_decision(&edited, &keyring).is_err());
        let mut cut = signed[4].clone();
        cut.audit_path.pop();
        assert!(verify_decision(&cut, &keyring).is_err());
        let other = SigningKey::generate();
        let forged = &sign_decisions(&other, &decisions)[0];
        let e = verify_decision(forged, &keyring).unwrap_err();
        assert_eq!(e.field, "signed_decision.key_id");
    }
}
