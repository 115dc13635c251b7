//! Standard notices to hosting providers and the providers' answers: the
//! shared rules for what a hotline's node signs and a provider verifies.
//! A notice is signed by the node over its exact bytes and verifies offline
//! with the node's public key; an answer is the provider's, recorded and
//! signed by the node on receipt (a provider has a certificate, not a
//! signing key the federation knows).

use crate::case::{CaseId, HostingProvider};
use crate::country::CountryCode;
use crate::error::Refusal;
use crate::hash::{Md5, PdqHash, Sha256};
use crate::identity::{Role, SpiffeId};
use crate::keyring::Keyring;
use crate::provenance::{lookup_key, Envelope};
use crate::report::{country, proto_enum, ReportId, ReportUrl, EARLIEST_MS};
use crate::signing::{Context, SigningKey};
use meldnet_proto::v1 as pb;
use prost::Message;

crate::uuid7_id!(
    /// A notice id: a UUIDv7 made by the node, the same for every attempt.
    NoticeId
);

crate::uuid7_id!(
    /// An answer id: a UUIDv7 made by the provider, so that an answer sent
    /// twice is recorded once.
    AnswerId
);

/// Most items a notice carries (as a report).
pub const MAX_NOTICE_ITEMS: usize = 1000;
/// Longest free text of an answer, in bytes.
pub const MAX_ANSWER_DETAIL: usize = 512;

/// Decodes `bytes` as `M`, refusing anything but the canonical encoding
/// (an unknown field, a repeated scalar): the bytes are what is signed.
fn canonical<M: Message + Default>(bytes: &[u8], field: &str, what: &str) -> Result<M, Refusal> {
    let raw = M::decode(bytes)
        .map_err(|e| Refusal::invalid(field, format!("malformed protobuf: {e}")))?;
    if raw.encode_to_vec() != bytes {
        return Err(Refusal::invalid(
            field,
            format!("not the canonical encoding of a meldnet.v1.{what}"),
        ));
    }
    Ok(raw)
}

/// Why the material must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegalGround {
    /// INTERPOL baseline: illegal in every country.
    Baseline,
    /// Illegal under the hosting country's law.
    National,
}

/// What a provider is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoticeAction {
    /// Remove the material or disable access to it.
    Remove,
    /// Keep the data police may ask for, where the law asks.
    Preserve,
}

/// A provider's answer to a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerKind {
    /// The notice reached the people who act on it.
    Received,
    /// Removed, or access disabled.
    Removed,
    /// Nothing at the location.
    NotFound,
    /// The provider will not remove it.
    Refused,
    /// Back after removal.
    Reappeared,
}

/// Why a provider refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// Not on its network, or not its customer's.
    NotOurCustomer,
    /// The customer contests; a court is to decide.
    LegalDispute,
    /// The provider does not agree the material is illegal.
    NotIllegal,
    /// Anything else (the detail says what).
    Other,
}

proto_enum!(
    LegalGround,
    LegalGround,
    Baseline = "baseline",
    National = "national"
);
proto_enum!(
    NoticeAction,
    NoticeAction,
    Remove = "remove",
    Preserve = "preserve"
);
proto_enum!(
    AnswerKind,
    AnswerKind,
    Received = "received",
    Removed = "removed",
    NotFound = "not_found",
    Refused = "refused",
    Reappeared = "reappeared"
);
proto_enum!(
    RefusalReason,
    RefusalReason,
    NotOurCustomer = "not_our_customer",
    LegalDispute = "legal_dispute",
    NotIllegal = "not_illegal",
    Other = "other"
);

/// The hashes of one item, never imagery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeItem {
    /// SHA-256 of the file.
    pub sha256: Sha256,
    /// MD5 of the file.
    pub md5: Md5,
    /// PDQ of an image.
    pub pdq: Option<PdqHash>,
}

/// The provider a notice is addressed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeProvider {
    /// Name and AS number, as case steps carry them.
    pub provider: HostingProvider,
    /// Its certificate identity (`provider/<CC>/<name>`).
    pub identity: SpiffeId,
}

/// A validated notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Its id, the same at every attempt.
    pub notice_id: NoticeId,
    /// The case and which of its locations.
    pub case_id: CaseId,
    /// The location's number in the case.
    pub location: u32,
    /// Where the material was seen.
    pub url: ReportUrl,
    /// The hotline's node.
    pub hotline: SpiffeId,
    /// The node's country, the hosting country.
    pub country: CountryCode,
    /// Who is noticed.
    pub provider: NoticeProvider,
    /// Why.
    pub legal_ground: LegalGround,
    /// What is asked (always `Remove`, first).
    pub actions: Vec<NoticeAction>,
    /// When this attempt was sent, Unix milliseconds.
    pub sent_at_ms: i64,
    /// The removal deadline, Unix milliseconds.
    pub deadline_ms: i64,
    /// The items' hashes.
    pub items: Vec<NoticeItem>,
    /// 1 for the first sending.
    pub attempt: u32,
    /// The report whose decision asked for it.
    pub report_id: ReportId,
}

fn spiffe(s: &str, field: &str) -> Result<SpiffeId, Refusal> {
    SpiffeId::parse(s).map_err(|e| Refusal::invalid(field, e.to_string()))
}

impl Notice {
    /// Decodes the exact signed bytes (canonical only) and validates every
    /// field; errors name it under `notice.`.
    pub fn decode(bytes: &[u8]) -> Result<Notice, Refusal> {
        let raw: pb::Notice = canonical(bytes, "notice", "Notice")?;
        Self::from_proto(&raw).map_err(|r| r.under("notice"))
    }

    fn from_proto(raw: &pb::Notice) -> Result<Notice, Refusal> {
        let notice_id =
            NoticeId::parse(&raw.notice_id).map_err(|e| Refusal::invalid("notice_id", e))?;
        let case_id = CaseId::parse(&raw.case_id).map_err(|e| Refusal::invalid("case_id", e))?;
        let url = ReportUrl::parse(&raw.url).map_err(|e| Refusal::invalid("url", e))?;
        let hotline = spiffe(&raw.hotline, "hotline")?;
        let cc = country(&raw.country, "country")?;
        if hotline.role() != &Role::Node(cc) {
            return Err(Refusal::invalid(
                "hotline",
                format!("must be the node of {cc}, the notice's country"),
            ));
        }
        let p = raw
            .provider
            .as_ref()
            .ok_or_else(|| Refusal::invalid("provider", "must be set"))?;
        let provider = HostingProvider::new(&p.name, p.asn)?;
        let identity = spiffe(&p.identity, "provider.identity")?;
        match identity.role() {
            Role::Provider { country: pc, .. } if *pc == cc => {}
            _ => {
                return Err(Refusal::invalid(
                    "provider.identity",
                    format!("must be a hosting provider of {cc}"),
                ))
            }
        }
        if identity.trust_domain() != hotline.trust_domain() {
            return Err(Refusal::invalid(
                "provider.identity",
                "must be in the hotline's federation",
            ));
        }
        let legal_ground = LegalGround::from_proto(raw.legal_ground, "legal_ground")?;
        let actions = raw
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| NoticeAction::from_proto(*a, &format!("actions[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        if actions.first() != Some(&NoticeAction::Remove)
            || actions.len() > NoticeAction::ALL.len()
            || actions.iter().skip(1).any(|a| *a == NoticeAction::Remove)
        {
            return Err(Refusal::invalid(
                "actions",
                "must be remove, then preserve where asked",
            ));
        }
        for (field, at) in [
            ("sent_at_ms", raw.sent_at_ms),
            ("deadline_ms", raw.deadline_ms),
        ] {
            if at < EARLIEST_MS {
                return Err(Refusal::invalid(
                    field,
                    "must be a Unix time in milliseconds after 2000",
                ));
            }
        }
        if raw.items.is_empty() || raw.items.len() > MAX_NOTICE_ITEMS {
            return Err(Refusal::invalid(
                "items",
                format!(
                    "{} items: a notice names 1 to {MAX_NOTICE_ITEMS}",
                    raw.items.len()
                ),
            ));
        }
        let items = raw
            .items
            .iter()
            .enumerate()
            .map(|(i, it)| {
                let field = |f: &str| format!("items[{i}].{f}");
                Ok(NoticeItem {
                    sha256: Sha256::parse_hex(&it.sha256)
                        .map_err(|e| Refusal::invalid(field("sha256"), e.to_string()))?,
                    md5: Md5::parse_hex(&it.md5)
                        .map_err(|e| Refusal::invalid(field("md5"), e.to_string()))?,
                    pdq: if it.pdq.is_empty() {
                        None
                    } else {
                        Some(
                            PdqHash::parse_hex(&it.pdq)
                                .map_err(|e| Refusal::invalid(field("pdq"), e.to_string()))?,
                        )
                    },
                })
            })
            .collect::<Result<Vec<_>, Refusal>>()?;
        if raw.attempt == 0 {
            return Err(Refusal::invalid("attempt", "starts at 1"));
        }
        let report_id =
            ReportId::parse(&raw.report_id).map_err(|e| Refusal::invalid("report_id", e))?;
        Ok(Notice {
            notice_id,
            case_id,
            location: raw.location,
            url,
            hotline,
            country: cc,
            provider: NoticeProvider { provider, identity },
            legal_ground,
            actions,
            sent_at_ms: raw.sent_at_ms,
            deadline_ms: raw.deadline_ms,
            items,
            attempt: raw.attempt,
            report_id,
        })
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::Notice {
        pb::Notice {
            notice_id: self.notice_id.to_string(),
            case_id: self.case_id.to_string(),
            location: self.location,
            url: self.url.as_str().to_string(),
            hotline: self.hotline.to_string(),
            country: self.country.to_string(),
            provider: Some(pb::NoticeProvider {
                name: self.provider.provider.name().to_string(),
                asn: self.provider.provider.asn(),
                identity: self.provider.identity.to_string(),
            }),
            legal_ground: self.legal_ground.to_proto() as i32,
            actions: self.actions.iter().map(|a| a.to_proto() as i32).collect(),
            sent_at_ms: self.sent_at_ms,
            deadline_ms: self.deadline_ms,
            items: self
                .items
                .iter()
                .map(|i| pb::NoticeItem {
                    sha256: i.sha256.to_hex(),
                    md5: i.md5.to_hex(),
                    pdq: i.pdq.map(|p| p.to_hex()).unwrap_or_default(),
                })
                .collect(),
            attempt: self.attempt,
            report_id: self.report_id.to_string(),
        }
    }

    /// Encodes once and signs those bytes with the node's key.
    pub fn sign(&self, key: &SigningKey) -> pb::SignedNotice {
        let notice = self.to_proto().encode_to_vec();
        pb::SignedNotice {
            signature: key.sign(Context::Notice, &notice).to_vec(),
            key_id: key.public().id().to_string(),
            notice,
        }
    }

    /// The notice as a person reads it (the e-mail form, and the JSON
    /// providers without the API get), with the signed bytes so that the
    /// document alone verifies.
    pub fn describe(&self, signed: &pb::SignedNotice) -> serde_json::Value {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        serde_json::json!({
            "notice_id": self.notice_id.to_string(),
            "attempt": self.attempt,
            "case_id": self.case_id.to_string(),
            "location": self.location,
            "url": self.url.as_str(),
            "hotline": self.hotline.to_string(),
            "country": self.country.as_str(),
            "provider": {
                "name": self.provider.provider.name(),
                "asn": self.provider.provider.asn(),
                "identity": self.provider.identity.to_string(),
            },
            "legal_ground": self.legal_ground.name(),
            "legal_ground_words": self.legal_ground_words(),
            "actions": self.actions.iter().map(|a| a.name()).collect::<Vec<_>>(),
            "sent_at": crate::time::rfc3339(self.sent_at_ms),
            "deadline": crate::time::rfc3339(self.deadline_ms),
            "items": self.items.iter().map(|i| serde_json::json!({
                "sha256": i.sha256.to_hex(),
                "md5": i.md5.to_hex(),
                "pdq": i.pdq.map(|p| p.to_hex()),
            })).collect::<Vec<_>>(),
            "report_id": self.report_id.to_string(),
            "signed": {
                "notice": b64(&signed.notice),
                "signature": b64(&signed.signature),
                "key_id": signed.key_id,
            },
        })
    }

    /// The legal ground in the field's words.
    pub fn legal_ground_words(&self) -> String {
        match self.legal_ground {
            LegalGround::Baseline => {
                "child sexual abuse material under the INTERPOL baseline: illegal in every country"
                    .to_string()
            }
            LegalGround::National => format!(
                "child sexual abuse material under the law of {}, the hosting country",
                self.country
            ),
        }
    }

    /// The notice as plain text, for a provider without the API: a person
    /// e-mails it; the JSON block at the end verifies with the node's key.
    pub fn render_text(&self, signed: &pb::SignedNotice) -> String {
        let mut t = String::new();
        let asks = if self.actions.contains(&NoticeAction::Preserve) {
            "remove the material or disable access to it, and keep the data police may ask for (account, logs) as the law asks"
        } else {
            "remove the material or disable access to it"
        };
        t.push_str(&format!(
            "NOTICE OF CHILD SEXUAL ABUSE MATERIAL\n\n\
             Notice:      {} (attempt {})\n\
             From:        the recognised hotline of {} ({})\n\
             To:          {}\n\
             Location:    {}\n\
             Legal ground: {}\n\
             Asked:       {asks}\n\
             Sent:        {}\n\
             Deadline:    {}\n\
             Case:        {} location {}\n\n\
             The material is identified by these hashes, so that you can find copies on your systems.\n\
             No imagery is attached, and none will be.\n",
            self.notice_id,
            self.attempt,
            self.country,
            self.hotline,
            self.provider.provider,
            self.url.as_str(),
            self.legal_ground_words(),
            crate::time::rfc3339(self.sent_at_ms),
            crate::time::rfc3339(self.deadline_ms),
            self.case_id,
            self.location,
        ));
        for (i, it) in self.items.iter().enumerate() {
            t.push_str(&format!(
                "  item {i}: sha256 {}  md5 {}{}\n",
                it.sha256,
                it.md5,
                it.pdq.map(|p| format!("  pdq {p}")).unwrap_or_default()
            ));
        }
        t.push_str(
            "\nAnswer: received, removed (when), not found, or refused (why), quoting the notice id.\n\
             Signed notice (verifies with the hotline node's public key):\n",
        );
        t.push_str(&self.describe(signed).to_string());
        t.push('\n');
        t
    }
}

/// Verifies a signed notice with its hotline node's key from `keyring`
/// (fields `signed_notice.*`) and decodes it: what a provider does
/// offline, with nothing but the federation's keyring.
pub fn verify_notice(sn: &pb::SignedNotice, keyring: &Keyring) -> Result<Notice, Refusal> {
    let field = "signed_notice";
    let env = Envelope::from_parts(&sn.notice, &sn.signature, &sn.key_id, field, "notice")?;
    let notice = Notice::decode(&env.bytes).map_err(|r| r.under(field))?;
    let key = lookup_key(keyring, &notice.hotline, env.key_id, field)?;
    env.verify(key, Context::Notice, field)?;
    Ok(notice)
}

/// A validated answer from a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeAnswer {
    /// The notice answered.
    pub notice_id: NoticeId,
    /// Its id (the same answer sent twice is recorded once).
    pub answer_id: AnswerId,
    /// What the provider says.
    pub kind: AnswerKind,
    /// When it was removed or came back (0: on receipt).
    pub at_ms: i64,
    /// Why it refuses (refused only).
    pub reason: Option<RefusalReason>,
    /// Free text.
    pub detail: String,
}

impl NoticeAnswer {
    /// Validates a provider's answer; errors name the field under `answer.`.
    pub fn from_proto(raw: &pb::NoticeAnswer) -> Result<NoticeAnswer, Refusal> {
        Self::check(raw).map_err(|r| r.under("answer"))
    }

    fn check(raw: &pb::NoticeAnswer) -> Result<NoticeAnswer, Refusal> {
        let notice_id =
            NoticeId::parse(&raw.notice_id).map_err(|e| Refusal::invalid("notice_id", e))?;
        let answer_id =
            AnswerId::parse(&raw.answer_id).map_err(|e| Refusal::invalid("answer_id", e))?;
        let kind = AnswerKind::from_proto(raw.kind, "kind")?;
        let reason = match (kind, raw.reason) {
            (AnswerKind::Refused, r) => Some(RefusalReason::from_proto(r, "reason")?),
            (_, 0) => None,
            _ => return Err(Refusal::invalid("reason", "only a refusal gives a reason")),
        };
        if raw.at_ms != 0 && raw.at_ms < EARLIEST_MS {
            return Err(Refusal::invalid(
                "at_ms",
                "must be 0 (now) or a Unix time in milliseconds after 2000",
            ));
        }
        if raw.detail.len() > MAX_ANSWER_DETAIL {
            return Err(Refusal::invalid(
                "detail",
                format!("{} bytes, at most {MAX_ANSWER_DETAIL}", raw.detail.len()),
            ));
        }
        if raw.detail.chars().any(|c| c.is_control() && c != '\n') {
            return Err(Refusal::invalid(
                "detail",
                "must not hold control characters",
            ));
        }
        Ok(NoticeAnswer {
            notice_id,
            answer_id,
            kind,
            at_ms: raw.at_ms,
            reason,
            detail: raw.detail.clone(),
        })
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::NoticeAnswer {
        pb::NoticeAnswer {
            notice_id: self.notice_id.to_string(),
            kind: self.kind.to_proto() as i32,
            at_ms: self.at_ms,
            reason: self.reason.map_or(0, |r| r.to_proto() as i32),
            detail: self.detail.clone(),
            answer_id: self.answer_id.to_string(),
        }
    }
}

/// An answer as the node recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRecord {
    /// The provider's answer.
    pub answer: NoticeAnswer,
    /// Who sent it, from its certificate.
    pub provider: SpiffeId,
    /// When the node received it.
    pub received_at_ms: i64,
    /// The node that recorded it.
    pub recorded_by: SpiffeId,
}

impl AnswerRecord {
    /// The wire form.
    pub fn to_proto(&self) -> pb::AnswerRecord {
        pb::AnswerRecord {
            answer: Some(self.answer.to_proto()),
            provider: self.provider.to_string(),
            received_at_ms: self.received_at_ms,
            recorded_by: self.recorded_by.to_string(),
        }
    }

    /// Encodes once and signs those bytes with the node's key.
    pub fn sign(&self, key: &SigningKey) -> pb::SignedAnswerRecord {
        let answer_record = self.to_proto().encode_to_vec();
        pb::SignedAnswerRecord {
            signature: key.sign(Context::NoticeAnswer, &answer_record).to_vec(),
            key_id: key.public().id().to_string(),
            answer_record,
        }
    }

    /// Decodes the exact signed bytes (canonical only).
    pub fn decode(bytes: &[u8]) -> Result<AnswerRecord, Refusal> {
        let raw: pb::AnswerRecord = canonical(bytes, "record", "AnswerRecord")?;
        let answer = raw
            .answer
            .as_ref()
            .ok_or_else(|| Refusal::invalid("record.answer", "must be set"))
            .and_then(|a| NoticeAnswer::from_proto(a).map_err(|r| r.under("record")))?;
        Ok(AnswerRecord {
            answer,
            provider: spiffe(&raw.provider, "record.provider")?,
            received_at_ms: raw.received_at_ms,
            recorded_by: spiffe(&raw.recorded_by, "record.recorded_by")?,
        })
    }
}

/// Verifies a node's signed answer record with the node's key from
/// `keyring` (fields `signed_record.*`).
pub fn verify_answer_record(
    sr: &pb::SignedAnswerRecord,
    keyring: &Keyring,
) -> Result<AnswerRecord, Refusal> {
    let field = "signed_record";
    let env = Envelope::from_parts(
        &sr.answer_record,
        &sr.signature,
        &sr.key_id,
        field,
        "answer_record",
    )?;
    let record = AnswerRecord::decode(&env.bytes).map_err(|r| r.under(field))?;
    let key = lookup_key(keyring, &record.recorded_by, env.key_id, field)?;
    env.verify(key, Context::NoticeAnswer, field)?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn notice(key: &SigningKey) -> (Notice, pb::SignedNotice) {
        let fed = crate::identity::TrustDomain::parse("eu.meldnet.test").unwrap();
        let de = CountryCode::parse("DE").unwrap();
        let n = Notice {
            notice_id: NoticeId::new_v7(),
            case_id: CaseId::new_v7(),
            location: 0,
            url: ReportUrl::parse("https://files.example.de/a/1.jpg").unwrap(),
            hotline: SpiffeId::node(&fed, de),
            country: de,
            provider: NoticeProvider {
                provider: HostingProvider::new("hoster", 64500).unwrap(),
                identity: SpiffeId::parse("spiffe://eu.meldnet.test/provider/DE/hoster").unwrap(),
            },
            legal_ground: LegalGround::Baseline,
            actions: vec![NoticeAction::Remove, NoticeAction::Preserve],
            sent_at_ms: 1_800_000_000_000,
            deadline_ms: 1_800_086_400_000,
            items: vec![NoticeItem {
                sha256: Sha256::of(b"x"),
                md5: Md5::parse_hex("0123456789abcdef0123456789abcdef").unwrap(),
                pdq: None,
            }],
            attempt: 1,
            report_id: ReportId::new_v7(),
        };
        let s = n.sign(key);
        (n, s)
    }

    #[test]
    fn a_notice_round_trips_and_its_fields_are_named() {
        let key = SigningKey::generate();
        let (n, s) = notice(&key);
        assert_eq!(Notice::decode(&s.notice).unwrap(), n);
        let mut raw = n.to_proto();
        raw.actions = vec![pb::NoticeAction::Preserve as i32];
        assert_eq!(
            Notice::decode(&raw.encode_to_vec()).unwrap_err().field,
            "notice.actions"
        );
        let mut raw = n.to_proto();
        raw.provider.as_mut().unwrap().identity =
            "spiffe://eu.meldnet.test/provider/NL/hoster".into();
        assert_eq!(
            Notice::decode(&raw.encode_to_vec()).unwrap_err().field,
            "notice.provider.identity"
        );
        let mut raw = n.to_proto();
        raw.items.clear();
        assert_eq!(
            Notice::decode(&raw.encode_to_vec()).unwrap_err().field,
            "notice.items"
        );
        let mut raw = n.to_proto();
        raw.items[0].md5 = "xyz".into();
        assert_eq!(
            Notice::decode(&raw.encode_to_vec()).unwrap_err().field,
            "notice.items[0].md5"
        );
        let mut bytes = s.notice.clone();
        bytes.extend_from_slice(&[0x68, 0x01]);
        assert_eq!(Notice::decode(&bytes).unwrap_err().field, "notice");
    }

    #[test]
    fn an_answer_names_its_reason_only_when_it_refuses() {
        let mut raw = NoticeAnswer {
            notice_id: NoticeId::new_v7(),
            answer_id: AnswerId::new_v7(),
            kind: AnswerKind::Refused,
            at_ms: 0,
            reason: Some(RefusalReason::LegalDispute),
            detail: "court date set".into(),
        }
        .to_proto();
        NoticeAnswer::from_proto(&raw).unwrap();
        raw.reason = 0;
        assert_eq!(
            NoticeAnswer::from_proto(&raw).unwrap_err().field,
            "answer.reason"
        );
        raw.kind = pb::AnswerKind::Removed as i32;
        NoticeAnswer::from_proto(&raw).unwrap();
        raw.reason = pb::RefusalReason::Other as i32;
        assert_eq!(
            NoticeAnswer::from_proto(&raw).unwrap_err().field,
            "answer.reason"
        );
        raw.reason = 0;
        raw.detail = "x".repeat(MAX_ANSWER_DETAIL + 1);
        assert_eq!(
            NoticeAnswer::from_proto(&raw).unwrap_err().field,
            "answer.detail"
        );
    }

    #[test]
    fn a_signed_answer_record_verifies_and_a_changed_byte_does_not() {
        let key = SigningKey::generate();
        let fed = crate::identity::TrustDomain::parse("eu.meldnet.test").unwrap();
        let node = SpiffeId::node(&fed, CountryCode::parse("DE").unwrap());
        let keyring = Keyring::from_file(
            crate::keyring::KeyringFile {
                federation: fed.clone(),
                keys: vec![crate::keyring::KeyEntry {
                    owner: node.clone(),
                    public_key: key.public().to_hex(),
                }],
            },
            "test",
        )
        .unwrap();
        let rec = AnswerRecord {
            answer: NoticeAnswer {
                notice_id: NoticeId::new_v7(),
                answer_id: AnswerId::new_v7(),
                kind: AnswerKind::Removed,
                at_ms: 1_800_000_000_000,
                reason: None,
                detail: String::new(),
            },
            provider: SpiffeId::parse("spiffe://eu.meldnet.test/provider/DE/hoster").unwrap(),
            received_at_ms: 1_800_000_000_500,
            recorded_by: node,
        };
        let mut s = rec.sign(&key);
        assert_eq!(verify_answer_record(&s, &keyring).unwrap(), rec);
        let last = s.answer_record.len() - 1;
        s.answer_record[last] ^= 1;
        assert!(verify_answer_record(&s, &keyring).is_err());
        // The node's notices verify with the same keyring, offline.
        let (n, mut sn) = notice(&key);
        assert_eq!(verify_notice(&sn, &keyring).unwrap(), n);
        sn.signature[0] ^= 1;
        assert_eq!(
            verify_notice(&sn, &keyring).unwrap_err().field,
            "signed_notice.signature"
        );
    }
}
