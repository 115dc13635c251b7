//! Cases and their notice-and-takedown steps: the shared rules for what a
//! hosting country's node signs and the hub stores. A case is what
//! deconfliction makes of reports of one location or one file; its steps
//! (notice sent, removed, not removed, re-appeared) are signed by the node
//! of the hosting country over exact bytes, like a report.

use crate::country::CountryCode;
use crate::error::Refusal;
use crate::report::country;
use crate::signing::{Context, SigningKey};
use meldnet_proto::v1 as pb;
use prost::Message;

crate::uuid7_id!(
    /// A case id: a UUIDv7 the hub gives the case when it opens it.
    CaseId
);

crate::uuid7_id!(
    /// A step id: a UUIDv7 made by the node, so that a step sent twice is
    /// stored once.
    StepId
);

/// Longest hosting provider name, in bytes.
pub const MAX_PROVIDER_NAME: usize = 128;

/// A step of notice-and-takedown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Notice sent to the hosting provider.
    NoticeSent,
    /// Gone from the URL.
    Removed,
    /// The provider did not remove it.
    NotRemoved,
    /// Back after removal.
    Reappeared,
    /// The provider confirmed it received the notice.
    Received,
    /// The provider found nothing at the location.
    NotFound,
    /// The provider refused to remove it; counts as not removed.
    Refused,
}

impl StepKind {
    /// The word used in CLIs, history and audit records.
    pub fn name(self) -> &'static str {
        match self {
            StepKind::NoticeSent => "notice_sent",
            StepKind::Removed => "removed",
            StepKind::NotRemoved => "not_removed",
            StepKind::Reappeared => "reappeared",
            StepKind::Received => "received",
            StepKind::NotFound => "not_found",
            StepKind::Refused => "refused",
        }
    }

    /// The wire value.
    pub fn to_proto(self) -> pb::StepKind {
        match self {
            StepKind::NoticeSent => pb::StepKind::NoticeSent,
            StepKind::Removed => pb::StepKind::Removed,
            StepKind::NotRemoved => pb::StepKind::NotRemoved,
            StepKind::Reappeared => pb::StepKind::Reappeared,
            StepKind::Received => pb::StepKind::Received,
            StepKind::NotFound => pb::StepKind::NotFound,
            StepKind::Refused => pb::StepKind::Refused,
        }
    }

    fn from_proto(v: i32) -> Result<StepKind, Refusal> {
        match pb::StepKind::try_from(v) {
            Ok(pb::StepKind::NoticeSent) => Ok(StepKind::NoticeSent),
            Ok(pb::StepKind::Removed) => Ok(StepKind::Removed),
            Ok(pb::StepKind::NotRemoved) => Ok(StepKind::NotRemoved),
            Ok(pb::StepKind::Reappeared) => Ok(StepKind::Reappeared),
            Ok(pb::StepKind::Received) => Ok(StepKind::Received),
            Ok(pb::StepKind::NotFound) => Ok(StepKind::NotFound),
            Ok(pb::StepKind::Refused) => Ok(StepKind::Refused),
            _ => Err(Refusal::invalid(
                "kind",
                "must be notice_sent, removed, not_removed, reappeared, received, not_found or refused",
            )),
        }
    }
}

/// A hosting provider as the hotline records it: a name and its AS number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostingProvider {
    name: String,
    asn: u32,
}

impl HostingProvider {
    /// Validates a name (1 to 128 bytes, no control characters) and an ASN
    /// (1 to 4294967294: 0 and 4294967295 are reserved).
    pub fn new(name: &str, asn: u32) -> Result<HostingProvider, Refusal> {
        let name = name.trim();
        if name.is_empty() || name.len() > MAX_PROVIDER_NAME {
            return Err(Refusal::invalid(
                "provider.name",
                format!("must be 1 to {MAX_PROVIDER_NAME} bytes"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(Refusal::invalid(
                "provider.name",
                "must not hold control characters",
            ));
        }
        if asn == 0 || asn == u32::MAX {
            return Err(Refusal::invalid(
                "provider.asn",
                "must be an AS number from 1 to 4294967294",
            ));
        }
        Ok(HostingProvider {
            name: name.to_string(),
            asn,
        })
    }

    /// The name as recorded.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The AS number.
    pub fn asn(&self) -> u32 {
        self.asn
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::HostingProvider {
        pb::HostingProvider {
            name: self.name.clone(),
            asn: self.asn,
        }
    }

    /// From the wire form; field names relative to the provider's parent.
    pub fn from_proto(p: &pb::HostingProvider) -> Result<HostingProvider, Refusal> {
        if p.name.trim() != p.name {
            return Err(Refusal::invalid(
                "provider.name",
                "must not start or end with spaces",
            ));
        }
        HostingProvider::new(&p.name, p.asn)
    }
}

impl std::fmt::Display for HostingProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (AS{})", self.name, self.asn)
    }
}

/// A validated case step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseStep {
    /// Its id.
    pub step_id: StepId,
    /// The case.
    pub case_id: CaseId,
    /// The node's country (checked against its certificate by the hub).
    pub country: CountryCode,
    /// What happened.
    pub kind: StepKind,
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// Who was noticed; required for a notice.
    pub provider: Option<HostingProvider>,
    /// Which location of the case (0: the first), as the decision that
    /// asked for the notice named it.
    pub location: u32,
    /// Why the provider refused (refused only): its reason code and words.
    pub reason: String,
}

/// Longest reason of a refusal step, in bytes.
pub const MAX_STEP_REASON: usize = 512;

impl CaseStep {
    /// Decodes the exact signed bytes (the canonical encoding only, as for
    /// reports) and validates every field; errors name it under `step.`.
    pub fn decode(bytes: &[u8]) -> Result<CaseStep, Refusal> {
        let raw = pb::CaseStep::decode(bytes)
            .map_err(|e| Refusal::invalid("step", format!("malformed protobuf: {e}")))?;
        if raw.encode_to_vec() != bytes {
            return Err(Refusal::invalid(
                "step",
                "not the canonical encoding of a meldnet.v1.CaseStep",
            ));
        }
        Self::from_proto(&raw).map_err(|r| r.under("step"))
    }

    fn from_proto(raw: &pb::CaseStep) -> Result<CaseStep, Refusal> {
        let step_id = StepId::parse(&raw.step_id).map_err(|e| Refusal::invalid("step_id", e))?;
        let case_id = CaseId::parse(&raw.case_id).map_err(|e| Refusal::invalid("case_id", e))?;
        let country = country(&raw.country, "country")?;
        let kind = StepKind::from_proto(raw.kind)?;
        if raw.at_ms <= 0 {
            return Err(Refusal::invalid(
                "at_ms",
                "must be a positive Unix time in milliseconds",
            ));
        }
        let provider = raw
            .provider
            .as_ref()
            .map(HostingProvider::from_proto)
            .transpose()?;
        if kind == StepKind::NoticeSent && provider.is_none() {
            return Err(Refusal::invalid(
                "provider",
                "a notice names the hosting provider it was sent to (name and ASN)",
            ));
        }
        match (kind, raw.reason.is_empty()) {
            (StepKind::Refused, true) => {
                return Err(Refusal::invalid(
                    "reason",
                    "a refusal says why (the provider's reason code)",
                ))
            }
            (StepKind::Refused, false) => {}
            (_, false) => return Err(Refusal::invalid("reason", "only a refusal has a reason")),
            (_, true) => {}
        }
        if raw.reason.len() > MAX_STEP_REASON
            || raw.reason.chars().any(|c| c.is_control() && c != '\n')
        {
            return Err(Refusal::invalid(
                "reason",
                format!("at most {MAX_STEP_REASON} bytes, without control characters"),
            ));
        }
        Ok(CaseStep {
            step_id,
            case_id,
            country,
            kind,
            at_ms: raw.at_ms,
            provider,
            location: raw.location,
            reason: raw.reason.clone(),
        })
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::CaseStep {
        pb::CaseStep {
            step_id: self.step_id.to_string(),
            case_id: self.case_id.to_string(),
            country: self.country.to_string(),
            kind: self.kind.to_proto() as i32,
            at_ms: self.at_ms,
            provider: self.provider.as_ref().map(HostingProvider::to_proto),
            location: self.location,
            reason: self.reason.clone(),
        }
    }

    /// Encodes once and signs those bytes.
    pub fn sign(&self, key: &SigningKey) -> pb::SignedCaseStep {
        let step = self.to_proto().encode_to_vec();
        pb::SignedCaseStep {
            signature: key.sign(Context::CaseStep, &step).to_vec(),
            key_id: key.public().id().to_string(),
            step,
        }
    }

    /// One line for history and audit records.
    pub fn describe(&self) -> String {
        let provider = match &self.provider {
            Some(p) => format!(" ({p})"),
            None => String::new(),
        };
        let provider = if self.reason.is_empty() {
            provider
        } else {
            format!("{provider}: {}", self.reason)
        };
        format!(
            "{}{provider} at location {}, at {} by the node's clock",
            self.kind.name(),
            self.location,
            crate::time::rfc3339(self.at_ms)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(kind: StepKind, provider: Option<HostingProvider>) -> CaseStep {
        CaseStep {
            step_id: StepId::new_v7(),
            case_id: CaseId::new_v7(),
            country: CountryCode::parse("DE").unwrap(),
            kind,
            at_ms: 1_700_000_000_000,
            provider,
            location: 0,
            reason: String::new(),
        }
    }

    #[test]
    fn a_step_round_trips_through_its_signed_bytes() {
        let p = HostingProvider::new("Hoster GmbH", 64500).unwrap();
        let s = step(StepKind::NoticeSent, Some(p));
        let bytes = s.to_proto().encode_to_vec();
        assert_eq!(CaseStep::decode(&bytes).unwrap(), s);
    }

    #[test]
    fn a_notice_names_its_provider_and_fields_are_named() {
        let s = step(StepKind::NoticeSent, None);
        let e = CaseStep::decode(&s.to_proto().encode_to_vec()).unwrap_err();
        assert_eq!(e.field, "step.provider");
        let mut raw = step(StepKind::Removed, None).to_proto();
        raw.case_id = "not-a-uuid".into();
        let e = CaseStep::decode(&raw.encode_to_vec()).unwrap_err();
        assert_eq!(e.field, "step.case_id");
        raw = step(StepKind::Removed, None).to_proto();
        raw.kind = 9;
        assert_eq!(
            CaseStep::decode(&raw.encode_to_vec()).unwrap_err().field,
            "step.kind"
        );
        assert_eq!(
            HostingProvider::new("x", 0).unwrap_err().field,
            "provider.asn"
        );
        assert_eq!(
            HostingProvider::new("a\nb", 1).unwrap_err().field,
            "provider.name"
        );
        // Bytes that are not the canonical encoding are refused.
        let mut bytes = step(StepKind::Removed, None).to_proto().encode_to_vec();
        bytes.extend_from_slice(&[0x08, 0x01]);
        assert_eq!(CaseStep::decode(&bytes).unwrap_err().field, "step");
    }
}
