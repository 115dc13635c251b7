//! ISO 3166-1 alpha-2 country codes, and the member states of the EU.

use std::fmt;
use std::str::FromStr;

/// The officially assigned ISO 3166-1 alpha-2 codes.
const ASSIGNED: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL \
BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM \
DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY \
HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC \
LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE \
NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD \
SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA \
UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// The 27 member states of the European Union (Greece is `GR` in ISO 3166-1).
pub const EU_MEMBER_STATES: [&str; 27] = [
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
];

/// An officially assigned ISO 3166-1 alpha-2 code, upper case. Cannot hold
/// anything else.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

/// Why a string is not a country code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CountryError {
    /// Not two upper-case ASCII letters.
    #[error("expected an ISO 3166-1 alpha-2 code (two upper-case letters), got {0:?}")]
    Shape(String),
    /// Two letters, but not an assigned code.
    #[error("{0} is not an assigned ISO 3166-1 alpha-2 code")]
    Unassigned(String),
}

impl CountryCode {
    /// Parses an upper-case alpha-2 code and checks that it is assigned.
    pub fn parse(s: &str) -> Result<Self, CountryError> {
        let b = match <[u8; 2]>::try_from(s.as_bytes()) {
            Ok(b @ [x, y]) if x.is_ascii_uppercase() && y.is_ascii_uppercase() => b,
            _ => return Err(CountryError::Shape(truncate(s))),
        };
        if !assigned(b) {
            return Err(CountryError::Unassigned(s.to_string()));
        }
        Ok(CountryCode(b))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Built only from ASCII upper-case letters.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// Whether this is one of the 27 EU member states.
    pub fn is_eu_member(&self) -> bool {
        EU_MEMBER_STATES.contains(&self.as_str())
    }
}

/// The table's place of two upper-case letters (below 676).
fn table_index([a, b]: [u8; 2]) -> usize {
    usize::from(a - b'A') * 26 + usize::from(b - b'A')
}

/// Whether two upper-case letters are an assigned code.
fn assigned(code: [u8; 2]) -> bool {
    assigned_table()
        .get(table_index(code))
        .copied()
        .unwrap_or(false)
}

/// One flag per two-letter combination: parsing is a lookup, not a scan
/// (the hub parses several codes per report, millions of reports a minute).
fn assigned_table() -> &'static [bool; 676] {
    static TABLE: std::sync::OnceLock<[bool; 676]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [false; 676];
        for c in ASSIGNED.split_ascii_whitespace() {
            if let Some(flag) = <[u8; 2]>::try_from(c.as_bytes())
                .ok()
                .and_then(|b| t.get_mut(table_index(b)))
            {
                *flag = true;
            }
        }
        t
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(16).collect()
}

impl FromStr for CountryCode {
    type Err = CountryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountryCode({})", self.as_str())
    }
}

impl serde::Serialize for CountryCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for CountryCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CountryCode::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_complete_and_sorted() {
        let codes: Vec<&str> = ASSIGNED.split_ascii_whitespace().collect();
        assert_eq!(codes.len(), 249);
        assert!(codes.windows(2).all(|w| w[0] < w[1]));
        for m in EU_MEMBER_STATES {
            assert!(CountryCode::parse(m).unwrap().is_eu_member());
        }
    }

    #[test]
    fn refuses_bad_codes() {
        assert!(CountryCode::parse("DE").is_ok());
        assert!(matches!(
            CountryCode::parse("de"),
            Err(CountryError::Shape(_))
        ));
        assert!(matches!(
            CountryCode::parse("DEU"),
            Err(CountryError::Shape(_))
        ));
        assert!(matches!(
            CountryCode::parse("XX"),
            Err(CountryError::Unassigned(_))
        ));
        assert!(matches!(
            CountryCode::parse("EU"),
            Err(CountryError::Unassigned(_))
        ));
        assert!(!CountryCode::parse("NO").unwrap().is_eu_member());
    }
}
