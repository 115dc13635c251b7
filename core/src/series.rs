//! Victim notification's shared rules: a series (a random id and the hashes
//! of its pictures, nothing that names or describes a person), the victim's
//! preference as its representative sets it, the digest's calendar (periods
//! cut into at most `cap` parts: the hard cap holds by construction), and
//! the hub's signature on a notification, which the representative checks.
//!
//! Why so little: the hub must never be able to tell who a victim is. The
//! protocol has no field for a name, a date of birth or free text, and these
//! types accept nothing else.

use crate::error::Refusal;
use crate::hash::{PdqHash, Sha256};
use crate::identity::{Role, SpiffeId};
use crate::keyring::Keyring;
use crate::provenance::lookup_key;
use crate::signing::{Context, KeyId, SigningKey};
use meldnet_proto::v1 as pb;
use prost::Message;

pub use meldnet_proto::limits::MAX_SERIES_HASHES;

crate::uuid_id!(
    /// A series id: a random UUID (version 4), so that not even the time of
    /// registration can be read from it.
    SeriesId,
    4,
    "a random UUID (version 4)"
);

impl SeriesId {
    /// A new random id.
    pub fn random() -> Self {
        SeriesId(uuid::Uuid::new_v4())
    }

    /// Parses `s`, a refusal naming `field`.
    pub fn parse_field(s: &str, field: &str) -> Result<Self, Refusal> {
        SeriesId::parse(s).map_err(|e| Refusal::invalid(field, e))
    }
}

crate::uuid7_id!(
    /// A notification id: a UUIDv7 the hub gives each notification, under
    /// which the representative files it.
    NotificationId
);

/// The pictures of a series, as an agency sends them: validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesHashes {
    /// Exact hashes.
    pub sha256: Vec<Sha256>,
    /// PDQ hashes with their quality.
    pub pdq: Vec<(PdqHash, u8)>,
}

impl SeriesHashes {
    /// Validates `hashes` (fields `hashes[i].sha256`, `hashes[i].pdq`,
    /// `hashes[i].pdq_quality`): at least one, at most
    /// [`MAX_SERIES_HASHES`], each with a SHA-256 or a PDQ hash or both.
    pub fn from_proto(hashes: &[pb::SeriesHash]) -> Result<SeriesHashes, Refusal> {
        if hashes.is_empty() || hashes.len() > MAX_SERIES_HASHES {
            return Err(Refusal::invalid(
                "hashes",
                format!(
                    "{} hashes: give 1 to {MAX_SERIES_HASHES} per call",
                    hashes.len()
                ),
            ));
        }
        let mut out = SeriesHashes::default();
        for (i, h) in hashes.iter().enumerate() {
            let field = |f: &str| format!("hashes[{i}].{f}");
            if h.sha256.is_empty() && h.pdq.is_empty() {
                return Err(Refusal::invalid(
                    field("sha256"),
                    "give a SHA-256, a PDQ hash or both",
                ));
            }
            if !h.sha256.is_empty() {
                out.sha256.push(
                    Sha256::parse_hex(&h.sha256)
                        .map_err(|e| Refusal::invalid(field("sha256"), e.to_string()))?,
                );
            }
            if !h.pdq.is_empty() {
                let pdq = PdqHash::parse_hex(&h.pdq)
                    .map_err(|e| Refusal::invalid(field("pdq"), e.to_string()))?;
                let q = u8::try_from(h.pdq_quality)
                    .ok()
                    .filter(|q| *q <= 100)
                    .ok_or_else(|| Refusal::invalid(field("pdq_quality"), "must be 0..=100"))?;
                out.pdq.push((pdq, q));
            } else if h.pdq_quality != 0 {
                return Err(Refusal::invalid(
                    field("pdq_quality"),
                    "a quality without a PDQ hash",
                ));
            }
        }
        Ok(out)
    }
}

/// A representative's id, checked: `.../representative/<CC>/<name>`.
pub fn representative(s: &str, field: &str) -> Result<SpiffeId, Refusal> {
    let id = SpiffeId::parse(s).map_err(|e| Refusal::invalid(field, e.to_string()))?;
    match id.role() {
        Role::Representative { .. } => Ok(id),
        _ => Err(Refusal::invalid(
            field,
            format!(
                "{id} is not a representative (spiffe://<federation>/representative/<CC>/<name>)"
            ),
        )),
    }
}

/// The length of a digest's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A calendar week from Monday 00:00 UTC.
    Week,
    /// A calendar month from the 1st, 00:00 UTC.
    Month,
}

impl Period {
    /// Most messages a period may be capped at: one a day.
    pub fn max_cap(self) -> u32 {
        match self {
            Period::Week => 7,
            Period::Month => 31,
        }
    }

    /// The word used in CLIs and printouts.
    pub fn name(self) -> &'static str {
        match self {
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    /// The wire value.
    pub fn to_proto(self) -> pb::Period {
        match self {
            Period::Week => pb::Period::Week,
            Period::Month => pb::Period::Month,
        }
    }

    /// The start (ms since the epoch, UTC) of the period holding `ms`.
    pub fn start_of(self, ms: i64) -> i64 {
        let date = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            .date();
        let first = match self {
            Period::Week => {
                let back = i64::from(date.weekday().number_days_from_monday());
                date.checked_sub(time::Duration::days(back)).unwrap_or(date)
            }
            Period::Month => date.replace_day(1).unwrap_or(date),
        };
        first.midnight().assume_utc().unix_timestamp() * 1000
    }

    /// The start of the period after the one starting at `start`.
    pub fn next_start(self, start: i64) -> i64 {
        match self {
            Period::Week => start + 7 * 86_400_000,
            // 32 days on always lands in the next month.
            Period::Month => self.start_of(start + 32 * 86_400_000),
        }
    }
}

/// The victim's choice for one series. `Never` is what no choice means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preference {
    /// No notification at all (opt-in: the default, and what withdrawing sets).
    Never,
    /// One notification per case containing the series that a police
    /// agency marks as in legal proceedings.
    LegalOnly,
    /// Counts of new cases and sightings, at most `cap` messages a period.
    Digest {
        /// The period.
        period: Period,
        /// At most this many messages a period.
        cap: u32,
    },
}

impl Preference {
    /// Validates a preference as a representative sends it (fields
    /// `preference.*`).
    pub fn from_proto(p: &pb::Preference) -> Result<(SeriesId, Preference), Refusal> {
        let id = SeriesId::parse_field(&p.series_id, "preference.series_id")?;
        let extra =
            || Refusal::invalid("preference.period", "only a digest has a period and a cap");
        let pref = match pb::Choice::try_from(p.choice) {
            Ok(pb::Choice::Never) | Ok(pb::Choice::LegalOnly) if p.period != 0 || p.cap != 0 => {
                return Err(extra())
            }
            Ok(pb::Choice::Never) => Preference::Never,
            Ok(pb::Choice::LegalOnly) => Preference::LegalOnly,
            Ok(pb::Choice::Digest) => {
                let period = match pb::Period::try_from(p.period) {
                    Ok(pb::Period::Week) => Period::Week,
                    Ok(pb::Period::Month) => Period::Month,
                    _ => {
                        return Err(Refusal::invalid(
                            "preference.period",
                            "a digest needs a period: week or month",
                        ))
                    }
                };
                if p.cap == 0 || p.cap > period.max_cap() {
                    return Err(Refusal::invalid(
                        "preference.cap",
                        format!(
                            "{}: at most how many messages a {}, 1 to {}",
                            p.cap,
                            period.name(),
                            period.max_cap()
                        ),
                    ));
                }
                Preference::Digest { period, cap: p.cap }
            }
            Err(_) => {
                return Err(Refusal::invalid(
                    "preference.choice",
                    "must be never, legal-only or digest",
                ))
            }
        };
        Ok((id, pref))
    }

    /// The wire form for `series`.
    pub fn to_proto(self, series: &SeriesId) -> pb::Preference {
        let (choice, period, cap) = match self {
            Preference::Never => (pb::Choice::Never, pb::Period::Unspecified, 0),
            Preference::LegalOnly => (pb::Choice::LegalOnly, pb::Period::Unspecified, 0),
            Preference::Digest { period, cap } => (pb::Choice::Digest, period.to_proto(), cap),
        };
        pb::Preference {
            series_id: series.to_string(),
            choice: choice as i32,
            period: period as i32,
            cap,
        }
    }

    /// In words, for printouts and audit records.
    pub fn describe(self) -> String {
        match self {
            Preference::Never => "never".into(),
            Preference::LegalOnly => "legal proceedings only".into(),
            Preference::Digest { period, cap } => {
                format!("digest, at most {cap} a {}", period.name())
            }
        }
    }
}

/// Where digests are cut: the period is divided into `cap` equal parts and
/// a digest may be made only at the end of a part, so no period can hold
/// more than `cap` digests whatever happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestCalendar {
    /// The period.
    pub period: Period,
    /// Parts per period.
    pub cap: u32,
}

impl DigestCalendar {
    /// The boundaries of the period starting at `start`: the ends of its
    /// `cap` parts, the last being the next period's start.
    fn boundaries(&self, start: i64) -> impl Iterator<Item = i64> {
        let len = self.period.next_start(start) - start;
        let cap = i64::from(self.cap.max(1));
        (1..=cap).map(move |k| start + len * k / cap)
    }

    /// The latest boundary at or before `now`.
    pub fn last_boundary(&self, now: i64) -> i64 {
        let start = self.period.start_of(now);
        self.boundaries(start)
            .filter(|b| *b <= now)
            .last()
            .unwrap_or(start)
    }

    /// The period a digest made at `boundary` counts against: the one its
    /// last part belongs to.
    pub fn period_of(&self, boundary: i64) -> i64 {
        self.period.start_of(boundary - 1)
    }
}

/// Signs a notification over its exact encoding.
pub fn sign_notification(key: &SigningKey, n: &pb::Notification) -> pb::SignedNotification {
    let bytes = n.encode_to_vec();
    let signature = key.sign(Context::Notification, &bytes).to_vec();
    pb::SignedNotification {
        notification: bytes,
        signature,
        key_id: key.public().id().to_string(),
    }
}

/// A notification whose hub signature verified.
#[derive(Debug, Clone)]
pub struct VerifiedNotification {
    /// The notification, decoded from the signed bytes.
    pub notification: pb::Notification,
    /// The hub key that signed it.
    pub key_id: KeyId,
}

impl VerifiedNotification {
    /// Its id, under which the representative files it.
    pub fn id(&self) -> Result<NotificationId, Refusal> {
        NotificationId::parse(&self.notification.notification_id)
            .map_err(|e| Refusal::invalid("notification.notification_id", e))
    }
}

/// Verifies the hub's signature on a notification (fields
/// `signed_notification.*`), with the hub's key from `keyring`.
pub fn verify_notification(
    sn: &pb::SignedNotification,
    keyring: &Keyring,
) -> Result<VerifiedNotification, Refusal> {
    let field = "signed_notification";
    let env = crate::provenance::Envelope::from_parts(
        &sn.notification,
        &sn.signature,
        &sn.key_id,
        field,
        "notification",
    )?;
    let key_id = env.key_id;
    let hub = SpiffeId::hub(keyring.federation());
    let key = lookup_key(keyring, &hub, key_id, field)?;
    env.verify(key, Context::Notification, field)?;
    let notification = pb::Notification::decode(sn.notification.as_slice()).map_err(|e| {
        Refusal::invalid(
            format!("{field}.notification"),
            format!("malformed protobuf: {e}"),
        )
    })?;
    let v = VerifiedNotification {
        notification,
        key_id,
    };
    v.id()?;
    Ok(v)
}

/// The JSON a representative reads: what the notification says, in plain
/// fields, with the signed bytes (base64) so the file alone re-verifies.
pub fn describe_notification(
    v: &VerifiedNotification,
    sn: &pb::SignedNotification,
    seq: u64,
) -> serde_json::Value {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let n = &v.notification;
    let body = match &n.body {
        Some(pb::notification::Body::Proceedings(p)) => serde_json::json!({
            "kind": "legal_proceedings",
            "case_id": p.case_id,
            "marked_by": p.agency,
            "marked_at": crate::time::rfc3339(p.marked_at_ms),
        }),
        Some(pb::notification::Body::Digest(d)) => serde_json::json!({
            "kind": "digest",
            "period": pb::Period::try_from(d.period).map_or("UNKNOWN", |p| p.as_str_name()),
            "from": crate::time::rfc3339(d.from_ms),
            "to": crate::time::rfc3339(d.to_ms),
            "new_cases": d.new_cases,
            "sightings": d.sightings,
            "message": format!("{} of at most {} this period", d.number, d.cap),
        }),
        None => serde_json::json!({"kind": "empty"}),
    };
    serde_json::json!({
        "notification_id": n.notification_id,
        "series_id": n.series_id,
        "representative": n.representative,
        "made_at": crate::time::rfc3339(n.made_at_ms),
        "notification": body,
        "seq": seq,
        "verified": {"hub_key": v.key_id.to_string()},
        "signed": {
            "notification": b64(&sn.notification),
            "signature": b64(&sn.signature),
            "key_id": sn.key_id,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
            * 1000
    }

    #[test]
    fn periods_start_on_monday_and_the_first() {
        // 2026-11-25 is a Wednesday.
        let now = ms("2026-11-25T13:00:00Z");
        assert_eq!(Period::Week.start_of(now), ms("2026-11-23T00:00:00Z"));
        assert_eq!(Period::Month.start_of(now), ms("2026-11-01T00:00:00Z"));
        assert_eq!(
            Period::Month.next_start(ms("2026-12-01T00:00:00Z")),
            ms("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            Period::Month.next_start(ms("2026-02-01T00:00:00Z")),
            ms("2026-03-01T00:00:00Z")
        );
    }

    #[test]
    fn a_calendar_never_gives_more_boundaries_than_the_cap() {
        for cap in 1..=7 {
            let cal = DigestCalendar {
                period: Period::Week,
                cap,
            };
            let start = ms("2026-11-23T00:00:00Z");
            let mut seen = std::collections::BTreeSet::new();
            let mut t = start;
            while t < Period::Week.next_start(start) + 3_600_000 {
                let b = cal.last_boundary(t);
                assert!(b <= t);
                if b > start {
                    seen.insert(b);
                }
                t += 600_000;
            }
            // Boundaries whose digests count against this week.
            let this_week = seen.iter().filter(|b| cal.period_of(**b) == start).count();
            assert_eq!(this_week, cap as usize, "cap {cap}");
        }
    }

    #[test]
    fn preferences_are_checked_field_by_field() {
        let id = SeriesId::random().to_string();
        let p = |choice: pb::Choice, period: pb::Period, cap| pb::Preference {
            series_id: id.clone(),
            choice: choice as i32,
            period: period as i32,
            cap,
        };
        let (_, d) = Preference::from_proto(&p(pb::Choice::Digest, pb::Period::Month, 1)).unwrap();
        assert_eq!(
            d,
            Preference::Digest {
                period: Period::Month,
                cap: 1
            }
        );
        let err = |p| Preference::from_proto(&p).unwrap_err().field;
        assert_eq!(
            err(p(pb::Choice::Digest, pb::Period::Week, 8)),
            "preference.cap"
        );
        assert_eq!(
            err(p(pb::Choice::Digest, pb::Period::Week, 0)),
            "preference.cap"
        );
        assert_eq!(
            err(p(pb::Choice::Digest, pb::Period::Unspecified, 1)),
            "preference.period"
        );
        assert_eq!(
            err(p(pb::Choice::LegalOnly, pb::Period::Week, 1)),
            "preference.period"
        );
        let mut bad = p(pb::Choice::Never, pb::Period::Unspecified, 0);
        bad.series_id = crate::report::ReportId::new_v7().to_string();
        assert_eq!(err(bad), "preference.series_id");
    }

    #[test]
    fn a_notification_verifies_only_with_the_hubs_key_and_its_bytes() {
        let hub_key = SigningKey::generate();
        let file = crate::keyring::KeyringFile {
            federation: crate::identity::TrustDomain::parse("eu.meldnet.test").unwrap(),
            keys: vec![crate::keyring::KeyEntry {
                owner: SpiffeId::parse("spiffe://eu.meldnet.test/hub").unwrap(),
                public_key: hub_key.public().to_hex(),
            }],
        };
        let keyring = Keyring::from_file(file, "test").unwrap();
        let n = pb::Notification {
            notification_id: NotificationId::new_v7().to_string(),
            series_id: SeriesId::random().to_string(),
            representative: "spiffe://eu.meldnet.test/representative/NL/fier".into(),
            made_at_ms: 1,
            body: Some(pb::notification::Body::Digest(pb::Digest {
                new_cases: 3,
                ..Default::default()
            })),
        };
        let mut sn = sign_notification(&hub_key, &n);
        assert_eq!(verify_notification(&sn, &keyring).unwrap().notification, n);
        let last = sn.notification.len() - 1;
        sn.notification[last] ^= 1;
        assert_eq!(
            verify_notification(&sn, &keyring).unwrap_err().field,
            "signed_notification.signature"
        );
        let other = sign_notification(&SigningKey::generate(), &n);
        assert_eq!(
            verify_notification(&other, &keyring).unwrap_err().field,
            "signed_notification.key_id"
        );
    }

    #[test]
    fn series_hashes_name_the_bad_field() {
        let ok = pb::SeriesHash {
            sha256: "ab".repeat(32),
            pdq: String::new(),
            pdq_quality: 0,
        };
        let bad_pdq = pb::SeriesHash {
            sha256: String::new(),
            pdq: "zz".repeat(32),
            pdq_quality: 80,
        };
        assert_eq!(
            SeriesHashes::from_proto(&[ok.clone(), bad_pdq])
                .unwrap_err()
                .field,
            "hashes[1].pdq"
        );
        assert_eq!(SeriesHashes::from_proto(&[]).unwrap_err().field, "hashes");
        assert_eq!(SeriesHashes::from_proto(&[ok]).unwrap().sha256.len(), 1);
    }
}
