//! Reading known-hash lists in the forms hotlines and police hold them:
//! CSV with a header (which column holds what is configuration) and Project
//! VIC VICS JSON. Both stream, a row at a time, so a ten-million-row file
//! never sits in memory whole; every row comes out as an entry or as an
//! error with its line (CSV) or position (VICS) and the reason. Whoever
//! stores the entries counts added and duplicate; invalid rows never get
//! that far.

use meldnet_core::Classification;
use meldnet_core::{Md5, PdqHash, Sha1, Sha256};
use std::collections::BTreeMap;
use std::io::Read;

/// One valid row of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedEntry {
    /// Line (CSV, 1 = the header) or item number (VICS, from 1).
    pub line: u64,
    /// MD5, when given.
    pub md5: Option<Md5>,
    /// SHA-1, when given.
    pub sha1: Option<Sha1>,
    /// SHA-256, when given.
    pub sha256: Option<Sha256>,
    /// PDQ and its quality (None when the list does not say).
    pub pdq: Option<(PdqHash, Option<u8>)>,
    /// Baseline or national: only illegal material enters the list.
    pub classification: Classification,
    /// The list's series name or id, when given.
    pub series: Option<String>,
}

/// Why a row was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// Line (CSV) or item number (VICS).
    pub line: u64,
    /// The field and what is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Why a file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The CSV header is unreadable or names none of the hash columns.
    #[error("header: {0}")]
    Header(String),
    /// The file could not be read.
    #[error("{0}")]
    Read(String),
}

fn default_categories() -> BTreeMap<String, Classification> {
    BTreeMap::from([
        ("1".to_string(), Classification::Baseline),
        ("2".to_string(), Classification::National),
        ("baseline".to_string(), Classification::Baseline),
        ("national".to_string(), Classification::National),
    ])
}

/// Which CSV column holds what (by header name, compared without case), and
/// what each category value means. Every name has a default.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvMapping {
    /// Column of MD5 digests.
    pub md5: String,
    /// Column of SHA-1 digests.
    pub sha1: String,
    /// Column of SHA-256 digests.
    pub sha256: String,
    /// Column of PDQ hashes.
    pub pdq: String,
    /// Column of PDQ qualities (0-100).
    pub pdq_quality: String,
    /// Column of categories.
    pub category: String,
    /// Column of series names or ids.
    pub series: String,
    /// Category value → classification. Values mapped to nothing, or to
    /// not-illegal/unassessed, are refused: the list holds illegal material.
    #[serde(deserialize_with = "categories_by_name")]
    pub categories: BTreeMap<String, Classification>,
}

/// `[categories]` as `value = "classification name"`; a wrong name is an
/// error naming it and the names allowed.
fn categories_by_name<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Classification>, D::Error> {
    let names: BTreeMap<String, String> = serde::Deserialize::deserialize(d)?;
    names
        .into_iter()
        .map(|(k, v)| {
            v.parse::<Classification>()
                .map(|c| (k.to_ascii_lowercase(), c))
                .map_err(serde::de::Error::custom)
        })
        .collect()
}

impl Default for CsvMapping {
    fn default() -> Self {
        CsvMapping {
            md5: "md5".into(),
            sha1: "sha1".into(),
            sha256: "sha256".into(),
            pdq: "pdq".into(),
            pdq_quality: "pdq_quality".into(),
            category: "category".into(),
            series: "series".into(),
            categories: default_categories(),
        }
    }
}

/// The values of one row, by meaning, before validation.
#[derive(Default)]
struct Raw<'a> {
    md5: Option<&'a str>,
    sha1: Option<&'a str>,
    sha256: Option<&'a str>,
    pdq: Option<&'a str>,
    pdq_quality: Option<&'a str>,
    category: Option<&'a str>,
    series: Option<&'a str>,
}

fn non_empty(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

/// Validates one row: at least one hash, every given hash well-formed (upper
/// case accepted and lowered), a category that maps to illegal material.
fn validate(
    line: u64,
    raw: Raw<'_>,
    categories: &BTreeMap<String, Classification>,
) -> Result<ImportedEntry, RowError> {
    let err = |reason: String| RowError { line, reason };
    fn hash<T>(
        field: &str,
        v: Option<&str>,
        parse: fn(&str) -> Result<T, meldnet_core::HashError>,
    ) -> Result<Option<T>, String> {
        non_empty(v)
            .map(|s| parse(&s.to_ascii_lowercase()).map_err(|e| format!("{field}: {e}")))
            .transpose()
    }
    let md5 = hash("md5", raw.md5, Md5::parse_hex).map_err(err)?;
    let sha1 = hash("sha1", raw.sha1, Sha1::parse_hex).map_err(err)?;
    let sha256 = hash("sha256", raw.sha256, Sha256::parse_hex).map_err(err)?;
    let pdq = hash("pdq", raw.pdq, PdqHash::parse_hex).map_err(err)?;
    let quality = non_empty(raw.pdq_quality)
        .map(|q| match q.parse::<u8>() {
            Ok(n) if n <= 100 => Ok(n),
            _ => Err(err(format!(
                "pdq_quality: {q:?} is not a number from 0 to 100"
            ))),
        })
        .transpose()?;
    if md5.is_none() && sha1.is_none() && sha256.is_none() && pdq.is_none() {
        return Err(err("no hash: give md5, sha1, sha256 or pdq".into()));
    }
    let category = non_empty(raw.category).ok_or_else(|| err("category: empty".into()))?;
    let classification = match categories.get(&category.to_ascii_lowercase()) {
        Some(c @ (Classification::Baseline | Classification::National)) => *c,
        Some(other) => {
            return Err(err(format!(
                "category {category:?} means {}: only illegal material is listed",
                other.name()
            )))
        }
        None => {
            return Err(err(format!(
                "category {category:?} is not mapped (known: {})",
                categories.keys().cloned().collect::<Vec<_>>().join(", ")
            )))
        }
    };
    Ok(ImportedEntry {
        line,
        md5,
        sha1,
        sha256,
        pdq: pdq.map(|h| (h, quality)),
        classification,
        series: non_empty(raw.series).map(str::to_string),
    })
}

/// Reads a CSV list row by row. The header decides which columns are used;
/// a header naming none of the hash columns is refused before any row.
pub fn csv_rows<'m, R: Read + 'm>(
    input: R,
    mapping: &'m CsvMapping,
) -> Result<impl Iterator<Item = Result<ImportedEntry, RowError>> + 'm, ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let header = reader
        .headers()
        .map_err(|e| ImportError::Header(e.to_string()))?
        .clone();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let cols = [
        col(&mapping.md5),
        col(&mapping.sha1),
        col(&mapping.sha256),
        col(&mapping.pdq),
        col(&mapping.pdq_quality),
        col(&mapping.category),
        col(&mapping.series),
    ];
    if cols[..4].iter().all(Option::is_none) {
        return Err(ImportError::Header(format!(
            "none of the hash columns ({}, {}, {}, {}) is in the header: {}",
            mapping.md5,
            mapping.sha1,
            mapping.sha256,
            mapping.pdq,
            header.iter().collect::<Vec<_>>().join(",")
        )));
    }
    Ok(reader.into_records().map(move |record| {
        let record = record.map_err(|e| RowError {
            line: e.position().map_or(0, |p| p.line()),
            reason: e.to_string(),
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let get = |i: usize| cols.get(i).copied().flatten().and_then(|c| record.get(c));
        let raw = Raw {
            md5: get(0),
            sha1: get(1),
            sha256: get(2),
            pdq: get(3),
            pdq_quality: get(4),
            category: get(5),
            series: get(6),
        };
        validate(line, raw, &mapping.categories)
    }))
}

/// Project VIC category numbers and what they mean by default: 1 (child
/// abuse material) is baseline, 2 (child exploitative, age-difficult) is
/// national; 0 (uncategorised) and the rest are refused.
pub fn vics_default_categories() -> BTreeMap<String, Classification> {
    BTreeMap::from([
        ("1".to_string(), Classification::Baseline),
        ("2".to_string(), Classification::National),
    ])
}

/// Reads a Project VIC VICS JSON export (`{"value": [case, ...]}`, each case
/// with `"Media": [item, ...]`, OData v3 or v4) and calls `each` for every
/// media item, in order, as soon as it is read: the file is never held
/// whole, only one item at a time. Items are numbered from 1; a malformed
/// item is a row error, a malformed file an `ImportError`.
pub fn vics_rows<R: Read>(
    input: R,
    categories: &BTreeMap<String, Classification>,
    each: impl FnMut(Result<ImportedEntry, RowError>),
) -> Result<(), ImportError> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::cell::RefCell;

    struct Ctx<'c, F> {
        categories: &'c BTreeMap<String, Classification>,
        each: F,
        n: u64,
    }

    fn text(v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn field<'v>(item: &'v serde_json::Value, name: &str) -> Option<&'v serde_json::Value> {
        item.as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    impl<F: FnMut(Result<ImportedEntry, RowError>)> Ctx<'_, F> {
        fn item(&mut self, item: serde_json::Value) {
            self.n += 1;
            let get = |name: &str| field(&item, name).and_then(text);
            let (md5, sha1, sha256, category, series) = (
                get("MD5"),
                get("SHA1"),
                get("SHA256"),
                get("Category"),
                get("Series"),
            );
            let raw = Raw {
                md5: md5.as_deref(),
                sha1: sha1.as_deref(),
                sha256: sha256.as_deref(),
                pdq: None,
                pdq_quality: None,
                category: category.as_deref(),
                series: series.as_deref(),
            };
            let row = if item.is_object() {
                validate(self.n, raw, self.categories)
            } else {
                Err(RowError {
                    line: self.n,
                    reason: "a media item must be a JSON object".into(),
                })
            };
            (self.each)(row);
        }
    }

    /// Visits `{"value": [...]}` (top level) or `{"Media": [...]}` (a case).
    struct Level<'a, 'c, F> {
        ctx: &'a RefCell<Ctx<'c, F>>,
        list_key: &'static str,
        items_are_media: bool,
    }

    impl<'de, F: FnMut(Result<ImportedEntry, RowError>)> Visitor<'de> for Level<'_, '_, F> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "an object with {:?}", self.list_key)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if key.eq_ignore_ascii_case(self.list_key) {
                    map.next_value_seed(List {
                        ctx: self.ctx,
                        items_are_media: self.items_are_media,
                    })?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }

    impl<'de, F: FnMut(Result<ImportedEntry, RowError>)> DeserializeSeed<'de> for Level<'_, '_, F> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }

    struct List<'a, 'c, F> {
        ctx: &'a RefCell<Ctx<'c, F>>,
        items_are_media: bool,
    }

    impl<'de, F: FnMut(Result<ImportedEntry, RowError>)> Visitor<'de> for List<'_, '_, F> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            if self.items_are_media {
                while let Some(item) = seq.next_element::<serde_json::Value>()? {
                    self.ctx.borrow_mut().item(item);
                }
            } else {
                while seq
                    .next_element_seed(Level {
                        ctx: self.ctx,
                        list_key: "Media",
                        items_are_media: true,
                    })?
                    .is_some()
                {}
            }
            Ok(())
        }
    }

    impl<'de, F: FnMut(Result<ImportedEntry, RowError>)> DeserializeSeed<'de> for List<'_, '_, F> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }

    let ctx = RefCell::new(Ctx {
        categories,
        each,
        n: 0,
    });
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(input));
    Level {
        ctx: &ctx,
        list_key: "value",
        items_are_media: false,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(|e| ImportError::Read(format!("VICS JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD_MD5: &str = "900150983cd24fb0d6963f7d28e17f72";
    const GOOD_SHA1: &str = "A9993E364706816ABA3E25717850C26C9CD0D89D";

    fn rows(text: &str) -> Vec<Result<ImportedEntry, RowError>> {
        csv_rows(text.as_bytes(), &CsvMapping::default())
            .unwrap()
            .collect()
    }

    #[test]
    fn good_and_bad_rows_each_say_what_they_are() {
        let text = format!(
            "MD5,SHA1,Category,Series\n\
             {GOOD_MD5},{GOOD_SHA1},1,s-17\n\
             {GOOD_MD5},,2,\n\
             nothex,,1,\n\
             ,,1,\n\
             {GOOD_MD5},,3,\n\
             {GOOD_MD5},,,\n"
        );
        let got = rows(&text);
        assert_eq!(got.len(), 6);
        let first = got[0].as_ref().unwrap();
        assert_eq!(first.line, 2);
        assert_eq!(first.md5.unwrap().to_hex(), GOOD_MD5);
        assert_eq!(first.sha1.unwrap().to_hex(), GOOD_SHA1.to_ascii_lowercase());
        assert_eq!(first.classification, Classification::Baseline);
        assert_eq!(first.series.as_deref(), Some("s-17"));
        assert_eq!(
            got[1].as_ref().unwrap().classification,
            Classification::National
        );
        let reasons: Vec<String> = got[2..]
            .iter()
            .map(|r| r.as_ref().unwrap_err().to_string())
            .collect();
        assert!(reasons[0].starts_with("line 4: md5:"), "{}", reasons[0]);
        assert!(reasons[1].contains("no hash"), "{}", reasons[1]);
        assert!(
            reasons[2].contains("category \"3\" is not mapped"),
            "{}",
            reasons[2]
        );
        assert!(reasons[3].contains("category: empty"), "{}", reasons[3]);
    }

    #[test]
    fn columns_and_categories_come_from_the_mapping() {
        let mapping: CsvMapping = toml::from_str(
            "md5 = \"hash_md5\"\npdq = \"photo_pdq\"\ncategory = \"cat\"\n[categories]\na = \"baseline\"\nb = \"not-illegal\"\n",
        )
        .unwrap();
        let pdq = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";
        let text = format!("cat,photo_pdq,pdq_quality,hash_md5\na,{pdq},90,\nb,{pdq},,\n");
        let got: Vec<_> = csv_rows(text.as_bytes(), &mapping).unwrap().collect();
        let e = got[0].as_ref().unwrap();
        assert_eq!(
            e.pdq.map(|(h, q)| (h.to_hex(), q)),
            Some((pdq.to_string(), Some(90)))
        );
        let refused = got[1].as_ref().unwrap_err().to_string();
        assert!(refused.contains("only illegal material"), "{refused}");
        assert!(
            toml::from_str::<CsvMapping>("md6 = \"x\"").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn vics_items_of_every_case_come_out_in_order_with_their_errors() {
        let json = format!(
            r#"{{"odata.metadata":"http://example.test/vics#Cases","value":[
                {{"CaseNumber":"A","Media":[
                    {{"MediaID":1,"Category":1,"MD5":"{GOOD_MD5}","SHA1":"{GOOD_SHA1}","Series":"s1","Exifs":[{{"x":1}}]}},
                    {{"MediaID":2,"Category":0,"MD5":"{GOOD_MD5}"}}
                ]}},
                {{"CaseNumber":"B","Media":[
                    {{"MediaID":3,"Category":2,"SHA1":"zz"}},
                    {{"MediaID":4,"Category":2,"sha1":"{GOOD_SHA1}"}},
                    7
                ]}}
            ]}}"#
        );
        let mut got = Vec::new();
        vics_rows(json.as_bytes(), &vics_default_categories(), |r| got.push(r)).unwrap();
        assert_eq!(got.len(), 5);
        let first = got[0].as_ref().unwrap();
        assert_eq!(
            (first.line, first.classification),
            (1, Classification::Baseline)
        );
        assert_eq!(first.series.as_deref(), Some("s1"));
        assert!(got[1]
            .as_ref()
            .unwrap_err()
            .reason
            .contains("category \"0\""));
        assert!(got[2].as_ref().unwrap_err().reason.starts_with("sha1:"));
        assert_eq!(
            got[3].as_ref().unwrap().classification,
            Classification::National
        );
        assert!(got[4].as_ref().unwrap_err().reason.contains("JSON object"));
        let broken = vics_rows(
            &b"{\"value\": [ {\"Media\": [ "[..],
            &vics_default_categories(),
            |_| {},
        );
        assert!(broken.unwrap_err().to_string().starts_with("VICS JSON:"));
    }

    #[test]
    fn a_header_without_hash_columns_is_refused_before_any_row() {
        let err = csv_rows("name,size\na,1\n".as_bytes(), &CsvMapping::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("none of the hash columns"), "{err}");
    }

    #[test]
    fn rows_stream_without_reading_everything_first() {
        struct Endless(u64);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let line = if self.0 == 0 {
                    "md5,category\n".to_string()
                } else {
                    format!("{GOOD_MD5},1\n")
                };
                self.0 += 1;
                let n = line.len().min(buf.len());
                buf[..n].copy_from_slice(&line.as_bytes()[..n]);
                Ok(n)
            }
        }
        let mapping = CsvMapping::default();
        let first: Vec<_> = csv_rows(Endless(0), &mapping).unwrap().take(1000).collect();
        assert_eq!(first.len(), 1000);
        assert!(first.iter().all(Result::is_ok));
    }
}
