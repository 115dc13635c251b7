//! A report as the domain sees it: decoded from the exact signed bytes and
//! validated field by field. A `Report` value is always valid; code inside
//! the hub never checks a field again.

use crate::country::CountryCode;
use crate::error::Refusal;
use crate::hash::{Md5, PdqHash, Sha256};
use crate::limits::{MAX_ITEMS, MAX_URL_BYTES};
use meldnet_proto::v1 as pb;
use prost::Message;

/// Defines a UUID id type of one version: parsed only from its canonical
/// text, stored as its 16 bytes. One definition for every id kind.
#[macro_export]
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $version:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(uuid::Uuid);

        impl $name {
            /// Parses canonical lower-case hyphenated text of a UUID of this version.
            pub fn parse(s: &str) -> Result<Self, String> {
                let u = uuid::Uuid::try_parse(s).map_err(|e| format!("not a UUID: {e}"))?;
                if s.len() != 36 || s != u.hyphenated().to_string() {
                    return Err("expected the canonical lower-case hyphenated form".into());
                }
                if u.get_version_num() != $version {
                    return Err(format!(
                        "expected {}, got version {}",
                        $what,
                        u.get_version_num()
                    ));
                }
                Ok($name(u))
            }

            /// The 16 bytes, used as storage keys.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// From storage-key bytes.
            pub fn from_bytes(b: [u8; 16]) -> Self {
                $name(uuid::Uuid::from_bytes(b))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }
    };
}

/// Defines a UUIDv7 id type (time-ordered keys), made with `new_v7`.
#[macro_export]
macro_rules! uuid7_id {
    ($(#[$doc:meta])* $name:ident) => {
        $crate::uuid_id!($(#[$doc])* $name, 7, "a UUIDv7");

        impl $name {
            /// A new id, made now.
            pub fn new_v7() -> Self {
                $name(uuid::Uuid::now_v7())
            }

            /// The Unix time in milliseconds the id says it was made at.
            pub fn made_at_ms(&self) -> i64 {
                let b = self.0.as_bytes();
                let mut ms = [0u8; 8];
                ms[2..].copy_from_slice(&b[..6]);
                i64::from_be_bytes(ms)
            }
        }
    };
}

uuid7_id!(
    /// A report id: a UUIDv7 made by the origin node.
    ReportId
);

/// A hotline's classification of an item.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Classification {
    /// Illegal everywhere (INTERPOL baseline).
    Baseline,
    /// Illegal in the assessing country only.
    National,
    /// Assessed as not illegal.
    NotIllegal,
    /// Not assessed yet.
    Unassessed,
}

/// The age group an item shows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AgeGroup {
    /// Infant or toddler.
    InfantToddler,
    /// Prepubescent.
    Prepubescent,
    /// Pubescent.
    Pubescent,
    /// Unknown.
    Unknown,
}

/// What kind of media an item is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MediaType {
    /// A still image.
    Image,
    /// A video.
    Video,
    /// Anything else.
    Other,
}

/// Which hash matched a known-hash list entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum MatchKind {
    /// The same file (SHA-256).
    Sha256,
    /// The same file (MD5, as older lists hold).
    Md5,
    /// The same file (SHA-1).
    Sha1,
    /// A perceptually near copy (PDQ within the match threshold).
    Pdq,
}

macro_rules! proto_enum {
    ($ty:ident, $pb:ident, $($v:ident = $name:literal),+) => {
        impl $ty {
            /// From its wire value; a refusal names `field`.
            pub fn from_proto(v: i32, field: &str) -> Result<Self, Refusal> {
                match pb::$pb::try_from(v) {
                    $(Ok(pb::$pb::$v) => Ok($ty::$v),)+
                    Ok(pb::$pb::Unspecified) => Err(Refusal::invalid(field, "must be set")),
                    Err(_) => Err(Refusal::invalid(field, format!("unknown value {v}"))),
                }
            }

            /// The wire value.
            pub fn to_proto(self) -> pb::$pb {
                match self {
                    $($ty::$v => pb::$pb::$v,)+
                }
            }

            /// The name used on the command line and in JSON.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$v => $name,)+
                }
            }

            /// Every value, for help texts.
            pub const ALL: &'static [$ty] = &[$($ty::$v),+];
        }

        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok($ty::$v),)+
                    _ => Err(format!(
                        "unknown {}: {s:?} (one of: {})",
                        stringify!($ty),
                        [$($name),+].join(", ")
                    )),
                }
            }
        }
    };
}
/// The wire mapping, names and parsing of a domain enum (also the notices').
pub(crate) use proto_enum;

proto_enum!(
    Classification,
    Classification,
    Baseline = "baseline",
    National = "national",
    NotIllegal = "not-illegal",
    Unassessed = "unassessed"
);
proto_enum!(
    AgeGroup,
    AgeGroup,
    InfantToddler = "infant-toddler",
    Prepubescent = "prepubescent",
    Pubescent = "pubescent",
    Unknown = "unknown"
);
proto_enum!(
    MatchKind,
    MatchKind,
    Sha256 = "sha256",
    Md5 = "md5",
    Sha1 = "sha1",
    Pdq = "pdq"
);
proto_enum!(
    MediaType,
    MediaType,
    Image = "image",
    Video = "video",
    Other = "other"
);

/// One file, by its hashes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Item {
    /// Exact hash.
    pub sha256: Sha256,
    /// Exact hash, as in older lists.
    pub md5: Md5,
    /// Perceptual hash and its quality (0-100), for images.
    pub pdq: Option<(PdqHash, u8)>,
    /// The hotline's assessment.
    pub classification: Classification,
    /// Age group shown.
    pub age_group: AgeGroup,
    /// Image, video or other.
    pub media_type: MediaType,
    /// The node's check against its copy of the known-hash list, if it holds one.
    pub known: Option<ListCheck>,
}

/// The facts that can give a report an EU link; each optional.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct EuLinkFacts {
    /// Where the material is hosted.
    pub hosting: Option<CountryCode>,
    /// Where a suspect is located.
    pub suspect: Option<CountryCode>,
    /// Where a victim is located.
    pub victim: Option<CountryCode>,
    /// Where the service provider has its main establishment.
    pub provider: Option<CountryCode>,
}

/// Schemes a reported location may have: where material is found online.
/// (Not `data:` and the like, which would carry content instead of a place.)
pub const URL_SCHEMES: &[&str] = &["http", "https", "ftp", "ftps", "sftp", "ipfs"];

/// A URL as reported: bounded, printable, with a known scheme.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReportUrl(String);

/// Whether `c` is invisible or changes the direction of the text around it
/// (Unicode's format characters, category Cf, and the fillers and
/// selectors that render as nothing): a URL holding one can show one
/// address and lead to another (`…/exe.pdf` for `…/fdp.exe`), and two
/// spellings of one location would look alike yet differ.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x034F
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x2800
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
            | 0xE0100..=0xE01EF
    )
}

impl ReportUrl {
    /// Checks length, characters and the presence of a scheme. Invisible
    /// and direction-changing characters are refused, not dropped: the
    /// analyst sees the address exactly as it goes out and can write such a
    /// character percent-encoded (`%E2%80%AE`) where it really is part of it.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must be set".into());
        }
        if s.len() > MAX_URL_BYTES {
            return Err(format!("{} bytes, at most {MAX_URL_BYTES}", s.len()));
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("contains white space or control characters".into());
        }
        if let Some((at, c)) = s.char_indices().find(|(_, c)| is_invisible(*c)) {
            return Err(format!(
                "contains the invisible or direction-changing character U+{:04X} at byte {at}; write it percent-encoded if it is part of the address",
                c as u32
            ));
        }
        match s.split_once("://") {
            Some((scheme, rest))
                if URL_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str())
                    && !rest.is_empty() =>
            {
                Ok(ReportUrl(s.to_string()))
            }
            _ => Err(format!(
                "expected an absolute URL with one of the schemes {}",
                URL_SCHEMES.join(", ")
            )),
        }
    }

    /// The URL as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How far ahead of the receiver's clock a report's times may be.
pub const MAX_CLOCK_AHEAD_MS: i64 = 24 * 3_600_000;
/// The earliest time a report may carry: 2000-01-01T00:00:00Z.
pub const EARLIEST_MS: i64 = 946_684_800_000;

/// A validated report.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Report {
    /// Made by the origin node.
    pub id: ReportId,
    /// The origin node's member state.
    pub origin: CountryCode,
    /// When the analyst made it, Unix ms.
    pub created_at_ms: i64,
    /// Where the material was seen.
    pub url: ReportUrl,
    /// EU-link facts.
    pub eu_link: EuLinkFacts,
    /// The files, by hashes.
    pub items: Vec<Item>,
}

/// A country code from its wire field; a refusal names `field`.
pub fn country(s: &str, field: &str) -> Result<CountryCode, Refusal> {
    CountryCode::parse(s).map_err(|e| Refusal::invalid(field, e.to_string()))
}

pub(crate) fn optional_country(s: &str, field: &str) -> Result<Option<CountryCode>, Refusal> {
    if s.is_empty() {
        Ok(None)
    } else {
        country(s, field).map(Some)
    }
}

impl Report {
    /// Decodes the exact signed bytes and validates every field. Errors name
    /// the field under `report.`.
    ///
    /// The bytes must be the canonical encoding of what they decode to: an
    /// unknown field, a repeated scalar or any other byte that would not
    /// survive re-encoding is refused, so that no field outside the schema
    /// can carry anything (media least of all) and every report has exactly
    /// one signed form.
    pub fn decode(bytes: &[u8]) -> Result<Report, Refusal> {
        let raw = pb::Report::decode(bytes)
            .map_err(|e| Refusal::invalid("report", format!("malformed protobuf: {e}")))?;
        if raw.encoded_len() != bytes.len() || raw.encode_to_vec() != bytes {
            return Err(Refusal::invalid(
                "report",
                "not the canonical encoding of a meldnet.v1.Report (unknown or repeated fields)",
            ));
        }
        Self::from_proto(&raw).map_err(|r| r.under("report"))
    }

    /// Checks the report's times against the receiver's clock (`now_ms`):
    /// the id's time and `created_at_ms` may be at most a day ahead (clocks
    /// drift, a report is never made in the future) and not before 2000.
    pub fn check_times(&self, now_ms: i64) -> Result<(), Refusal> {
        for (field, at) in [
            ("report.created_at_ms", self.created_at_ms),
            ("report.id", self.id.made_at_ms()),
        ] {
            if at > now_ms.saturating_add(MAX_CLOCK_AHEAD_MS) {
                return Err(Refusal::invalid(
                    field,
                    format!(
                        "dated {}, more than a day after the hub's clock ({})",
                        crate::time::rfc3339(at),
                        crate::time::rfc3339(now_ms)
                    ),
                ));
            }
            if at < EARLIEST_MS {
                return Err(Refusal::invalid(
                    field,
                    format!("dated {}, before 2000", crate::time::rfc3339(at)),
                ));
            }
        }
        Ok(())
    }

    /// Validates a decoded report; field names are relative to the report.
    pub fn from_proto(raw: &pb::Report) -> Result<Report, Refusal> {
        let id = ReportId::parse(&raw.id).map_err(|e| Refusal::invalid("id", e))?;
        let origin = country(&raw.origin_country, "origin_country")?;
        if raw.created_at_ms <= 0 {
            return Err(Refusal::invalid(
                "created_at_ms",
                "must be a positive Unix time in milliseconds",
            ));
        }
        let url = ReportUrl::parse(&raw.url).map_err(|e| Refusal::invalid("url", e))?;
        let link = raw.eu_link.clone().unwrap_or_default();
        let eu_link = EuLinkFacts {
            hosting: optional_country(&link.hosting_country, "eu_link.hosting_country")?,
            suspect: optional_country(&link.suspect_country, "eu_link.suspect_country")?,
            victim: optional_country(&link.victim_country, "eu_link.victim_country")?,
            provider: optional_country(&link.provider_country, "eu_link.provider_country")?,
        };
        if raw.items.is_empty() {
            return Err(Refusal::invalid(
                "items",
                "at least one assessed item: the classification, known/new and deconfliction by file all come from items",
            ));
        }
        if raw.items.len() > MAX_ITEMS {
            return Err(Refusal::new(
                crate::RefusalKind::InvalidArgument,
                "items",
                format!("{} items, at most {MAX_ITEMS}", raw.items.len()),
            ));
        }
        let items = raw
            .items
            .iter()
            .enumerate()
            .map(|(i, it)| Item::from_proto(it).map_err(|r| r.under(&format!("items[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Report {
            id,
            origin,
            created_at_ms: raw.created_at_ms,
            url,
            eu_link,
            items,
        })
    }

    /// The wire form; `encode_to_vec` of it is what a node signs.
    pub fn to_proto(&self) -> pb::Report {
        let cc = |c: Option<CountryCode>| c.map(|c| c.to_string()).unwrap_or_default();
        pb::Report {
            id: self.id.to_string(),
            origin_country: self.origin.to_string(),
            created_at_ms: self.created_at_ms,
            url: self.url.as_str().to_string(),
            eu_link: Some(pb::EuLink {
                hosting_country: cc(self.eu_link.hosting),
                suspect_country: cc(self.eu_link.suspect),
                victim_country: cc(self.eu_link.victim),
                provider_country: cc(self.eu_link.provider),
            }),
            items: self.items.iter().map(Item::to_proto).collect(),
        }
    }
}

impl Item {
    fn from_proto(it: &pb::Item) -> Result<Item, Refusal> {
        let sha256 =
            Sha256::parse_hex(&it.sha256).map_err(|e| Refusal::invalid("sha256", e.to_string()))?;
        let md5 = Md5::parse_hex(&it.md5).map_err(|e| Refusal::invalid("md5", e.to_string()))?;
        let pdq = parse_pdq(&it.pdq, it.pdq_quality)?;
        let known = it
            .known
            .as_ref()
            .map(ListCheck::from_proto)
            .transpose()
            .map_err(|r| r.under("known"))?;
        Ok(Item {
            sha256,
            md5,
            pdq,
            classification: Classification::from_proto(it.classification, "classification")?,
            age_group: AgeGroup::from_proto(it.age_group, "age_group")?,
            media_type: MediaType::from_proto(it.media_type, "media_type")?,
            known,
        })
    }

    fn to_proto(&self) -> pb::Item {
        pb::Item {
            sha256: self.sha256.to_hex(),
            md5: self.md5.to_hex(),
            pdq: self.pdq.map(|(h, _)| h.to_hex()).unwrap_or_default(),
            pdq_quality: self.pdq.map(|(_, q)| u32::from(q)).unwrap_or(0),
            classification: self.classification.to_proto() as i32,
            age_group: self.age_group.to_proto() as i32,
            media_type: self.media_type.to_proto() as i32,
            known: self.known.map(|k| k.to_proto()),
        }
    }
}

/// A PDQ hash and its quality from their wire fields: both empty/0, or a
/// valid hash with a quality of 0-100.
pub fn parse_pdq(pdq: &str, quality: u32) -> Result<Option<(PdqHash, u8)>, Refusal> {
    if pdq.is_empty() {
        if quality != 0 {
            return Err(Refusal::invalid(
                "pdq_quality",
                "must be 0 when pdq is empty",
            ));
        }
        return Ok(None);
    }
    let h = PdqHash::parse_hex(pdq).map_err(|e| Refusal::invalid("pdq", e.to_string()))?;
    let q = u8::try_from(quality)
        .ok()
        .filter(|q| *q <= 100)
        .ok_or_else(|| Refusal::invalid("pdq_quality", format!("{quality} is not in 0-100")))?;
    Ok(Some((h, q)))
}

/// How an item matched a known-hash list entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Known {
    /// The entry: the list version that added it.
    pub entry: u64,
    /// Which hash matched.
    pub kind: MatchKind,
    /// Hamming distance of a PDQ match; 0 for exact ones.
    pub distance: u32,
}

/// An item checked against a copy of the list at `list_version`: known
/// (and how) or new. Carried in reports (the node's view) and decisions
/// (the hub's).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ListCheck {
    /// The version of the list checked against.
    pub list_version: u64,
    /// The match, or None: new material.
    pub found: Option<Known>,
}

/// What a node said of an item, in the words of JSON printouts and the
/// decision's reasons (`known`, `new`, `unchecked`); a number no version of
/// the protocol defines is `unspecified`.
pub fn node_said_word(said: i32) -> &'static str {
    match pb::NodeSaid::try_from(said) {
        Ok(pb::NodeSaid::Known) => "known",
        Ok(pb::NodeSaid::New) => "new",
        Ok(pb::NodeSaid::Unchecked) => "unchecked",
        Ok(pb::NodeSaid::Unspecified) | Err(_) => "unspecified",
    }
}

impl ListCheck {
    fn from_proto(k: &pb::KnownMark) -> Result<ListCheck, Refusal> {
        let found = if k.known {
            if k.entry_version == 0 {
                return Err(Refusal::invalid("entry_version", "must be set when known"));
            }
            let kind = MatchKind::from_proto(k.kind, "kind")?;
            let limit = if kind == MatchKind::Pdq {
                meldnet_pdq::MATCH_THRESHOLD
            } else {
                0
            };
            if k.distance > limit {
                return Err(Refusal::invalid(
                    "distance",
                    format!(
                        "{} is more than {limit} for a {} match",
                        k.distance,
                        kind.name()
                    ),
                ));
            }
            Some(Known {
                entry: k.entry_version,
                kind,
                distance: k.distance,
            })
        } else {
            if k.entry_version != 0 || k.kind != 0 || k.distance != 0 {
                return Err(Refusal::invalid(
                    "known",
                    "a new item names no entry, kind or distance",
                ));
            }
            None
        };
        Ok(ListCheck {
            list_version: k.list_version,
            found,
        })
    }

    /// As people read it (JSON): known, and how, or new.
    pub fn describe(&self) -> serde_json::Value {
        match self.found {
            None => serde_json::json!({"known": false, "list_version": self.list_version}),
            Some(f) => {
                serde_json::json!({"known": true, "entry": f.entry, "kind": f.kind.name(), "distance": f.distance, "list_version": self.list_version})
            }
        }
    }

    /// The hub's record of this check for item `index` of a decision.
    pub fn to_item_check(self, index: u32, node_said: pb::NodeSaid) -> pb::ItemCheck {
        let f = self.found;
        pb::ItemCheck {
            index,
            known: f.is_some(),
            entry_version: f.map_or(0, |k| k.entry),
            kind: f.map_or(0, |k| k.kind.to_proto() as i32),
            distance: f.map_or(0, |k| k.distance),
            list_version: self.list_version,
            node_said: node_said as i32,
        }
    }

    /// The wire form.
    pub fn to_proto(self) -> pb::KnownMark {
        let f = self.found;
        pb::KnownMark {
            known: f.is_some(),
            entry_version: f.map_or(0, |k| k.entry),
            kind: f.map_or(0, |k| k.kind.to_proto() as i32),
            distance: f.map_or(0, |k| k.distance),
            list_version: self.list_version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            id: ReportId::new_v7(),
            origin: CountryCode::parse("NL").unwrap(),
            created_at_ms: 1_700_000_000_000,
            url: ReportUrl::parse("https://example.test/a").unwrap(),
            eu_link: EuLinkFacts {
                hosting: CountryCode::parse("DE").ok(),
                ..Default::default()
            },
            items: vec![Item {
                sha256: Sha256::of(b"x"),
                md5: Md5([1; 16]),
                pdq: Some((PdqHash([7; 32]), 90)),
                classification: Classification::Baseline,
                age_group: AgeGroup::Prepubescent,
                media_type: MediaType::Image,
                known: None,
            }],
        }
    }

    #[test]
    fn round_trips_through_bytes() {
        let r = sample();
        let bytes = r.to_proto().encode_to_vec();
        assert_eq!(Report::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn refusals_name_the_field() {
        let mut p = sample().to_proto();
        p.items[0].sha256 = "zz".into();
        let e = Report::decode(&p.encode_to_vec()).unwrap_err();
        assert_eq!(e.field, "report.items[0].sha256");
        let mut p = sample().to_proto();
        p.eu_link.as_mut().unwrap().hosting_country = "XX".into();
        assert_eq!(
            Report::decode(&p.encode_to_vec()).unwrap_err().field,
            "report.eu_link.hosting_country"
        );
        let mut p = sample().to_proto();
        p.id = "6ba7b810-9dad-41d1-80b4-00c04fd430c8".into();
        assert_eq!(
            Report::decode(&p.encode_to_vec()).unwrap_err().field,
            "report.id"
        );
        let mut p = sample().to_proto();
        p.items[0].classification = 0;
        assert_eq!(
            Report::decode(&p.encode_to_vec()).unwrap_err().to_string(),
            "report.items[0].classification: must be set"
        );
        assert_eq!(Report::decode(b"\xff\xff").unwrap_err().field, "report");
    }

    #[test]
    fn only_canonical_bytes_are_accepted() {
        let bytes = sample().to_proto().encode_to_vec();
        // An unknown field (99, bytes) appended: it could carry anything.
        let mut extra = bytes.clone();
        extra.extend_from_slice(&[0x9a, 0x06, 0x03, b'a', b'b', b'c']);
        let e = Report::decode(&extra).unwrap_err();
        assert_eq!(e.field, "report");
        assert!(e.reason.contains("canonical"), "{e}");
        // A scalar field given twice (the last one wins when decoding).
        let mut twice = bytes.clone();
        twice.extend_from_slice(&[0x18, 0x01]);
        assert!(Report::decode(&twice).is_err());
        assert!(ReportUrl::parse("data://text/plain;base64,AAAA").is_err());
        assert!(ReportUrl::parse("https://x.test/").is_ok());
    }

    #[test]
    fn names_parse_back() {
        for c in Classification::ALL {
            assert_eq!(c.name().parse::<Classification>().unwrap(), *c);
        }
        assert!("illegal".parse::<Classification>().is_err());
    }
}
