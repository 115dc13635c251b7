//! Importing a known-hash list file into a list: rows read one at a time
//! (`hash_import`), turned into list entries of the importing country, sent
//! on in batches to whoever stores them (the hub over its admin API, or a
//! node's national list), with a progress bar on a terminal and every
//! invalid row reported with its line and reason. Invalid rows never reach
//! the store.

use crate::import::{
    csv_rows, vics_default_categories, vics_rows, CsvMapping, ImportError, ImportedEntry, RowError,
};
use crate::list::{EntrySeries, ListEntry, MAX_ADD_BATCH};
use meldnet_core::CountryCode;
use meldnet_core::{AgeGroup, MediaType};
use meldnet_pdq::MIN_MATCH_QUALITY;
use std::io::Read;
use std::path::Path;

/// The file formats read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    /// CSV with a header; columns named by the mapping.
    Csv,
    /// Project VIC VICS JSON.
    Vics,
}

impl std::str::FromStr for ListFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "csv" => Ok(ListFormat::Csv),
            "vics" => Ok(ListFormat::Vics),
            other => Err(format!("{other:?}: the formats are csv and vics")),
        }
    }
}

/// Shows how far an import has read: a progress bar on a terminal is the
/// binaries' to draw, so this crate draws nothing. `()` shows nothing.
pub trait Progress {
    /// The import starts reading a file of `total` bytes.
    fn start(&self, _total: u64) {}
    /// `n` more bytes were read.
    fn advance(&self, _n: u64) {}
    /// The import ended.
    fn finish(&self) {}
}

impl Progress for () {}

/// A reader that tells a `Progress` how much it read.
struct Counted<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    /// Rows read (valid and invalid).
    pub rows: u64,
    /// Entries that joined the list.
    pub added: u64,
    /// Valid rows already listed.
    pub duplicate: u64,
    /// Rows refused, each reported.
    pub invalid: u64,
}

/// Why an import stopped before the end of the file.
#[derive(Debug, thiserror::Error)]
pub enum ImportFailed {
    /// The file could not be opened or read as a whole.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The cause.
        source: ImportError,
    },
    /// The store refused a batch; what came before it was stored.
    #[error("storing rows up to line {line}: {message} (stored before it: {so_far:?})")]
    Store {
        /// The last line of the batch.
        line: u64,
        /// What the store said.
        message: String,
        /// The counts before that batch.
        so_far: ImportSummary,
    },
}

/// A list entry from a valid row: the importing country is its source; a
/// PDQ without a stated quality counts as just good enough to match; the
/// media type is image when there is a PDQ, else other.
pub fn to_list_entry(e: ImportedEntry, source: CountryCode) -> Result<ListEntry, RowError> {
    let series = e
        .series
        .as_deref()
        .map(EntrySeries::parse)
        .transpose()
        .map_err(|r| RowError {
            line: e.line,
            reason: format!("series: {r}"),
        })?;
    Ok(ListEntry {
        sha256: e.sha256,
        md5: e.md5,
        sha1: e.sha1,
        pdq: e.pdq.map(|(h, q)| (h, q.unwrap_or(MIN_MATCH_QUALITY))),
        classification: e.classification,
        age_group: AgeGroup::Unknown,
        media_type: if e.pdq.is_some() {
            MediaType::Image
        } else {
            MediaType::Other
        },
        source,
        series,
    })
}

struct Batcher<'a, E> {
    source: CountryCode,
    batch: Vec<ListEntry>,
    last_line: u64,
    summary: ImportSummary,
    add: &'a mut dyn FnMut(Vec<ListEntry>) -> Result<Vec<bool>, E>,
    invalid: &'a mut dyn FnMut(&RowError),
    failed: Option<ImportFailed>,
}

impl<E: std::fmt::Display> Batcher<'_, E> {
    fn row(&mut self, row: Result<ImportedEntry, RowError>) {
        if self.failed.is_some() {
            return;
        }
        self.summary.rows += 1;
        match row.and_then(|e| {
            self.last_line = e.line;
            to_list_entry(e, self.source)
        }) {
            Ok(e) => {
                self.batch.push(e);
                if self.batch.len() == MAX_ADD_BATCH {
                    self.flush();
                }
            }
            Err(r) => {
                self.summary.invalid += 1;
                (self.invalid)(&r);
            }
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() || self.failed.is_some() {
            return;
        }
        match (self.add)(std::mem::take(&mut self.batch)) {
            Ok(dups) => {
                let d = dups.iter().filter(|d| **d).count() as u64;
                self.summary.duplicate += d;
                self.summary.added += dups.len() as u64 - d;
            }
            Err(e) => {
                self.failed = Some(ImportFailed::Store {
                    line: self.last_line,
                    message: e.to_string(),
                    so_far: self.summary,
                })
            }
        }
    }
}

/// Imports `path` in `format`. `add` stores a batch and says, per entry,
/// whether it was already listed; `invalid` is told of every refused row;
/// `progress` of how far the file was read.
pub fn import_file<E: std::fmt::Display>(
    path: &Path,
    format: ListFormat,
    mapping: &CsvMapping,
    source: CountryCode,
    mut add: impl FnMut(Vec<ListEntry>) -> Result<Vec<bool>, E>,
    mut invalid: impl FnMut(&RowError),
    progress: &dyn Progress,
) -> Result<ImportSummary, ImportFailed> {
    let file_error = |source: ImportError| ImportFailed::File {
        path: path.display().to_string(),
        source,
    };
    let file =
        std::fs::File::open(path).map_err(|e| file_error(ImportError::Read(e.to_string())))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    progress.start(len);
    let reader: Box<dyn Read + '_> = Box::new(Counted {
        inner: std::io::BufReader::with_capacity(1 << 20, file),
        progress,
    });
    let mut b = Batcher {
        source,
        batch: Vec::with_capacity(MAX_ADD_BATCH),
        last_line: 0,
        summary: ImportSummary::default(),
        add: &mut add,
        invalid: &mut invalid,
        failed: None,
    };
    match format {
        ListFormat::Csv => {
            for row in csv_rows(reader, mapping).map_err(file_error)? {
                b.row(row);
                if b.failed.is_some() {
                    break;
                }
            }
        }
        ListFormat::Vics => {
            let categories = if mapping.categories == CsvMapping::default().categories {
                vics_default_categories()
            } else {
                mapping.categories.clone()
            };
            vics_rows(reader, &categories, |row| b.row(row)).map_err(file_error)?;
        }
    }
    b.flush();
    progress.finish();
    match b.failed {
        Some(f) => Err(f),
        None => Ok(b.summary),
    }
}

/// `import_file` sending each batch as a `ListAddRequest` through `send`
/// (a gRPC call: the hub's admin `ListAdd`, or a node's `Contribute`) on
/// `rt`, with invalid rows printed to stderr. Returns the summary and the
/// list head the hub signed after the last batch.
#[allow(clippy::too_many_arguments)]
pub fn import_via<F, Fut>(
    rt: &tokio::runtime::Runtime,
    path: &Path,
    format: ListFormat,
    mapping: &CsvMapping,
    source: CountryCode,
    progress: &dyn Progress,
    mut send: F,
) -> Result<(ImportSummary, Option<meldnet_proto::v1::SignedListHead>), ImportFailed>
where
    F: FnMut(meldnet_proto::v1::ListAddRequest) -> Fut,
    Fut: std::future::Future<Output = Result<meldnet_proto::v1::ListAddResponse, tonic::Status>>,
{
    let mut head = None;
    let summary = import_file(
        path,
        format,
        mapping,
        source,
        |entries| {
            let req = meldnet_proto::v1::ListAddRequest {
                entries: entries.iter().map(ListEntry::to_proto).collect(),
            };
            let r = rt.block_on(send(req))?;
            head = r.head;
            Ok::<_, tonic::Status>(r.duplicate)
        },
        |row| eprintln!("invalid: {row}"),
        progress,
    )?;
    Ok((summary, head))
}
