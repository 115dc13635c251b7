//! A recipient's durable store of deliveries: one append-only file,
//! `deliveries.log`, that holds every delivery exactly as the hub sent it
//! (the `Delivery` protobuf bytes), one record after another.
//!
//! Why a log and not a file per delivery: a police agency receives millions
//! of reports; creating two files per report spent most of the receiver's
//! time in the file system, and a sync of the whole file system waited on
//! everyone else's writes. Appending a batch and syncing this one file makes
//! the batch durable at the cost of one write and one `fdatasync`.
//! People read the log through `show` and `export` (see `inbox`), which
//! verify each record again from these stored bytes.
//!
//! Record (format 2, [`MAGIC`] `MELDLOG2`):
//! `len: u32 LE | tag: 16 bytes | body crc32: u32 LE | header crc32: u32 LE | len bytes`.
//! The body checksum covers the tag and the bytes; the header checksum
//! covers the 24 header bytes before it (length, tag, body checksum), so a
//! reader can tell a genuine header from garbage before it trusts the
//! length. In a delivery log the tag is the report id.
//!
//! Why the header has its own checksum: acknowledged deliveries are never
//! sent again, so a reader must never take damage for the torn tail a crash
//! leaves. With format 1 one flipped bit in a length made the record seem to
//! run past the end of the file, and everything after it was cut off as
//! "torn". Now:
//!
//! - **Torn tail** (what a crash leaves: the batch after the last
//!   `fdatasync`, never acknowledged): fewer bytes left than a header, a
//!   genuine header whose record runs past the end of the file, or nothing
//!   but zero bytes from here to the end (a file extended but never
//!   written). Readers stop quietly before it; the writer cuts it on open.
//! - **Damage**: anything else: a header whose checksum fails, a length over
//!   the maximum, a body whose checksum fails (the last record's too). It is
//!   reported with the file, the offset and, where the header is genuine, the
//!   tag; the reader then resynchronises on the next offset that holds a
//!   genuine header with a body that verifies, so every good record after
//!   the damage is still read. The writer refuses to open a damaged file and
//!   never cuts anything but a torn tail: `log_repair` checks and salvages.

use meldnet_core::append_file::{cut_back, open_rw, sync_dir};
use meldnet_core::ReportId;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The log's file name inside a recipient's delivery folder.
pub const LOG_FILE: &str = "deliveries.log";
/// The first bytes of every delivery log: the format and its version.
pub const MAGIC: &[u8; 8] = b"MELDLOG2";
/// Length, tag, body checksum, header checksum.
pub(crate) const HEADER: usize = 4 + 16 + 4 + 4;
/// The part of the header its checksum covers.
const HEADER_SIGNED: usize = HEADER - 4;
/// The largest record the writer accepts (a delivery is far smaller).
const MAX_RECORD: usize = meldnet_core::limits::MAX_MESSAGE_BYTES;
/// How much a reader reads at once.
const CHUNK: usize = 1 << 20;

/// What a file of records is: how it starts, what it is called, what a
/// record's tag means and how to mend it. The delivery log is
/// [`DELIVERY_LOG`]; the node's known-hash list has its own.
#[derive(Debug, Clone, Copy)]
pub struct Format {
    /// The file's first 8 bytes: kind and version.
    pub magic: &'static [u8; 8],
    /// The kind of file, for errors ("a delivery log").
    pub what: &'static str,
    /// What a record's tag is, as a JSON key ("report_id").
    pub tag_name: &'static str,
    /// A record's tag as people read it.
    pub describe_tag: fn(&[u8; 16]) -> String,
    /// What to run when the file is damaged, for errors.
    pub repair_hint: &'static str,
}

fn report_tag(tag: &[u8; 16]) -> String {
    ReportId::from_bytes(*tag).to_string()
}

/// The delivery log's format: tags are report ids.
pub const DELIVERY_LOG: Format = Format {
    magic: MAGIC,
    what: "a delivery log",
    tag_name: "report_id",
    describe_tag: report_tag,
    repair_hint: "`meldnet-agency log check` lists the damage and `meldnet-agency log salvage` \
                  keeps every good record (for a node's inbox: `meldnet-node log check`, \
                  `meldnet-node log salvage`)",
};

/// A damaged stretch of a record file: where it starts and where the next
/// good record (or the end of the file) begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The file.
    pub path: String,
    /// The first damaged byte: where a record should have started.
    pub start: u64,
    /// Where the next good record starts, or the file's length.
    pub end: u64,
    /// What is wrong with the record at `start`.
    pub reason: String,
    /// The tag of the record at `start`, when its header could be read.
    pub tag: Option<DamagedTag>,
}

/// The tag of a damaged record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedTag {
    /// What a tag is in this file ("report_id").
    pub name: &'static str,
    /// The tag as people read it.
    pub value: String,
    /// Whether the header checksum verified: if not, the tag is what the
    /// damaged header says, which may itself be damaged.
    pub verified: bool,
}

impl Damage {
    /// How many bytes are damaged.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range is empty (never, for damage a reader reports).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The damage as one JSON object, for `log check` and `log salvage`.
    #[allow(
        clippy::indexing_slicing,
        reason = "serde_json indexing: a read of a missing key is Null, a write goes to an object made here"
    )]
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "start": self.start,
            "end": self.end,
            "bytes": self.len(),
            "reason": self.reason,
        });
        if let Some(t) = &self.tag {
            v[t.name] = t.value.clone().into();
            v["tag_verified"] = t.verified.into();
        }
        v
    }
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: record at offset {}: {}",
            self.path, self.start, self.reason
        )?;
        match &self.tag {
            Some(t) if t.verified => write!(f, " ({} {})", t.name, t.value)?,
            Some(t) => write!(
                f,
                " ({} {} as the damaged header reads, unverified)",
                t.name, t.value
            )?,
            None => {}
        }
        write!(
            f,
            "; damaged bytes [{}, {}) ({} bytes)",
            self.start,
            self.end,
            self.len()
        )
    }
}

/// The offsets of these damaged ranges, for one line of text (the first
/// ten: `log check` lists them all).
fn ranges(damage: &[Damage]) -> String {
    let mut text = damage
        .iter()
        .take(10)
        .map(|d| format!("offset {}: {} ({} bytes)", d.start, d.reason, d.len()))
        .collect::<Vec<_>>()
        .join(", ");
    if damage.len() > 10 {
        text.push_str(&format!(" and {} more ranges", damage.len() - 10));
    }
    text
}

/// Why the log could not be opened, read or appended to.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The log file or folder.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a file of this kind.
    #[error("{path}: {reason}")]
    Damaged {
        /// The log file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A damaged range met while reading: readers that go on read the next
    /// good record after it.
    #[error("{0}")]
    Damage(Box<Damage>),
    /// A writer found damage and refused to open the file: nothing in it
    /// was changed.
    #[error(
        "{path}: damaged at {}; the file was left exactly as it is: {hint}",
        ranges(.damage)
    )]
    Refused {
        /// The file.
        path: String,
        /// Every damaged range.
        damage: Vec<Damage>,
        /// What to run.
        hint: &'static str,
    },
    /// A record too large to append.
    #[error("{path}: a record of {len} bytes exceeds {MAX_RECORD}")]
    TooLarge {
        /// The file.
        path: String,
        /// The record's length.
        len: usize,
    },
    /// Another process is writing to this log.
    #[error("{path}: another process is writing to it")]
    Locked {
        /// The log file.
        path: String,
    },
}

/// One stored delivery, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Where the record starts in the file.
    pub offset: u64,
    /// The record's 16-byte tag: in a delivery log, the report id.
    pub tag: [u8; 16],
    /// The stored bytes (in a delivery log, the `Delivery` protobuf bytes
    /// exactly as received).
    pub bytes: Vec<u8>,
}

impl LogRecord {
    /// The report a delivery log's record carries.
    pub fn report_id(&self) -> ReportId {
        ReportId::from_bytes(self.tag)
    }

    /// Where the next record starts.
    pub fn end(&self) -> u64 {
        self.offset + (HEADER + self.bytes.len()) as u64
    }
}

/// Appends one record, in the file's encoding, to `out`.
pub(crate) fn encode_record(tag: &[u8; 16], bytes: &[u8], out: &mut Vec<u8>) {
    let mut body = crc32fast::Hasher::new();
    body.update(tag);
    body.update(bytes);
    let at = out.len();
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(tag);
    out.extend_from_slice(&body.finalize().to_le_bytes());
    let head = crc32fast::hash(out.get(at..at + HEADER_SIGNED).unwrap_or_default());
    out.extend_from_slice(&head.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A header as read: genuine (its checksum verifies) or not.
struct Header {
    len: usize,
    tag: [u8; 16],
    body_crc: u32,
    genuine: bool,
}

fn parse_header(h: &[u8]) -> Header {
    let word = |at: usize| {
        h.get(at..at + 4)
            .and_then(|w| w.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    };
    let tag = h
        .get(4..20)
        .and_then(|t| t.try_into().ok())
        .unwrap_or([0u8; 16]);
    Header {
        len: word(0) as usize,
        tag,
        body_crc: word(20),
        genuine: crc32fast::hash(h.get(..HEADER_SIGNED).unwrap_or_default()) == word(HEADER_SIGNED),
    }
}

fn body_ok(tag: &[u8; 16], bytes: &[u8], crc: u32) -> bool {
    let mut h = crc32fast::Hasher::new();
    h.update(tag);
    h.update(bytes);
    h.finalize() == crc
}

/// Whether `path` is a delivery log (or a folder holding one's name): it
/// starts with [`MAGIC`].
pub fn is_delivery_log(path: &Path) -> bool {
    let mut head = [0u8; 8];
    path.is_dir()
        || File::open(path)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok_and(|()| &head == MAGIC)
}

/// Reads the records of a log from the start. A torn tail (see the module)
/// ends the iteration quietly. Damage is an error ([`LogError::Damage`],
/// with the range); iterating further goes on with the next good record
/// after it, so a caller that stops at the first error stops, and one that
/// goes on sees every good record.
pub struct LogReader {
    path: PathBuf,
    format: Format,
    file: File,
    len: u64,
    /// Bytes of the file from `buf_at`.
    buf: Vec<u8>,
    buf_at: u64,
    offset: u64,
    torn: Option<u64>,
    done: bool,
    /// A bad start of file still to report (lenient readers only).
    bad_start: bool,
}

impl LogReader {
    /// Opens the log at `path` (the file, or the folder holding [`LOG_FILE`]).
    pub fn open(path: &Path) -> Result<LogReader, LogError> {
        Self::open_format(&log_path(path), &DELIVERY_LOG)
    }

    /// Reads the delivery log in `path` from `offset`, the start of a record
    /// as [`LogReader::offset`] gave it: a follower resumes where it stopped.
    pub fn open_from(path: &Path, offset: u64) -> Result<LogReader, LogError> {
        Self::open_at(&log_path(path), &DELIVERY_LOG, Some(offset), false)
    }

    /// Opens a file of the same record format (`format` says which).
    pub fn open_format(path: &Path, format: &Format) -> Result<LogReader, LogError> {
        Self::open_at(path, format, None, false)
    }

    /// As [`open_format`](Self::open_format), for checking and salvaging: a
    /// file whose first bytes are not the format's is read as damaged from
    /// offset 0 (a bad sector at the start), so its good records are still
    /// found.
    pub fn open_lenient(path: &Path, format: &Format) -> Result<LogReader, LogError> {
        Self::open_at(path, format, None, true)
    }

    /// Opens the file and reads from `from` (a record's start) when given.
    fn open_at(
        path: &Path,
        format: &Format,
        from: Option<u64>,
        lenient: bool,
    ) -> Result<LogReader, LogError> {
        let path = path.to_path_buf();
        let io = |source| LogError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut found = [0u8; 8];
        let magic_ok = len >= found.len() as u64
            && file.read_exact_at(&mut found, 0).is_ok()
            && &found == format.magic;
        if !magic_ok && !lenient {
            return Err(LogError::Damaged {
                path: path.display().to_string(),
                reason: format!(
                    "not {} (the file does not start with {})",
                    format.what,
                    String::from_utf8_lossy(format.magic)
                ),
            });
        }
        Ok(LogReader {
            path,
            format: *format,
            file,
            len,
            buf: Vec::new(),
            buf_at: 0,
            offset: from.unwrap_or(format.magic.len() as u64).min(len),
            torn: None,
            done: false,
            bad_start: !magic_ok,
        })
    }

    /// Where the next record would start: after iterating to the end, the
    /// length of the file without its torn tail.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// After iterating to the end: where a torn tail starts and how many
    /// bytes it holds, if there is one.
    pub fn torn_tail(&self) -> Option<(u64, u64)> {
        self.torn.map(|at| (at, self.len - at))
    }

    /// The file's length when it was opened.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// `n` bytes at `at` (which the caller keeps inside the file).
    fn bytes(&mut self, at: u64, n: usize) -> std::io::Result<&[u8]> {
        let have = at >= self.buf_at && at + n as u64 <= self.buf_at + self.buf.len() as u64;
        if !have {
            let want = (n.max(CHUNK) as u64).min(self.len - at) as usize;
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, at)?;
            self.buf_at = at;
        }
        let from = (at - self.buf_at) as usize;
        self.buf.get(from..from + n).ok_or_else(|| {
            std::io::Error::other(format!("{n} bytes at {at} lie outside the read buffer"))
        })
    }

    fn header(&mut self, at: u64) -> std::io::Result<Header> {
        Ok(parse_header(self.bytes(at, HEADER)?))
    }

    /// Whether every byte from `at` to the end is zero.
    fn zeros_from(&mut self, mut at: u64) -> std::io::Result<bool> {
        while at < self.len {
            let n = ((self.len - at) as usize).min(CHUNK);
            if self.bytes(at, n)?.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
        Ok(true)
    }

    /// The first offset from `from` holding a genuine header whose record
    /// fits in the file and whose body verifies, or the file's length. A
    /// header checksum alone is not enough here: scanning damaged bytes, one
    /// offset in 2^32 passes it by chance.
    fn resync(&mut self, from: u64) -> std::io::Result<u64> {
        let mut p = from;
        while p + HEADER as u64 <= self.len {
            let h = self.header(p)?;
            if h.genuine && h.len <= MAX_RECORD {
                let end = p + (HEADER + h.len) as u64;
                if end <= self.len {
                    let body = self.bytes(p + HEADER as u64, h.len)?;
                    if body_ok(&h.tag, body, h.body_crc) {
                        return Ok(p);
                    }
                }
            }
            p += 1;
        }
        Ok(self.len)
    }

    /// Reports damage at `at` and moves on to the next good record.
    fn damage(&mut self, at: u64, reason: String, tag: Option<(&[u8; 16], bool)>) -> LogError {
        let end = match self.resync(at + 1) {
            Ok(end) => end,
            Err(e) => return self.io(e),
        };
        self.offset = end;
        if end >= self.len {
            self.done = true;
        }
        LogError::Damage(Box::new(Damage {
            path: self.path.display().to_string(),
            start: at,
            end,
            reason,
            tag: tag.map(|(t, verified)| DamagedTag {
                name: self.format.tag_name,
                value: (self.format.describe_tag)(t),
                verified,
            }),
        }))
    }

    fn io(&mut self, source: std::io::Error) -> LogError {
        self.done = true;
        LogError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn torn_at(&mut self, at: u64) -> Option<Result<LogRecord, LogError>> {
        self.torn = Some(at);
        self.done = true;
        None
    }

    fn read_next(&mut self) -> Option<Result<LogRecord, LogError>> {
        if self.bad_start {
            self.bad_start = false;
            let reason = format!(
                "the file does not start with {} (not {}, or its start is damaged)",
                String::from_utf8_lossy(self.format.magic),
                self.format.what
            );
            return Some(Err(self.damage(0, reason, None)));
        }
        let at = self.offset;
        if at >= self.len {
            self.done = true;
            return None;
        }
        if self.len - at < HEADER as u64 {
            return self.torn_at(at);
        }
        let h = match self.header(at) {
            Ok(h) => h,
            Err(e) => return Some(Err(self.io(e))),
        };
        if !h.genuine {
            return match self.zeros_from(at) {
                Ok(true) => self.torn_at(at),
                Ok(false) => Some(Err(self.damage(
                    at,
                    "header checksum mismatch".into(),
                    Some((&h.tag, false)),
                ))),
                Err(e) => Some(Err(self.io(e))),
            };
        }
        if h.len > MAX_RECORD {
            let reason = format!("length {} exceeds {MAX_RECORD}", h.len);
            return Some(Err(self.damage(at, reason, Some((&h.tag, true)))));
        }
        let end = at + (HEADER + h.len) as u64;
        if end > self.len {
            // A genuine header whose record was cut short: a crash before
            // the sync, or a writer appending right now. Never acknowledged.
            return self.torn_at(at);
        }
        let bytes = match self.bytes(at + HEADER as u64, h.len) {
            Ok(b) => b.to_vec(),
            Err(e) => return Some(Err(self.io(e))),
        };
        if !body_ok(&h.tag, &bytes, h.body_crc) {
            return Some(Err(self.damage(
                at,
                "checksum mismatch".into(),
                Some((&h.tag, true)),
            )));
        }
        self.offset = end;
        Some(Ok(LogRecord {
            offset: at,
            tag: h.tag,
            bytes,
        }))
    }
}

impl Iterator for LogReader {
    type Item = Result<LogRecord, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.read_next()
    }
}

/// The log file itself when `path` is the folder holding it.
pub fn log_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(LOG_FILE)
    } else {
        path.to_path_buf()
    }
}

/// An append-only file of checksummed records, open for writing: holds an
/// exclusive lock, appends batches and makes each durable before returning.
/// The delivery log and a node's copy of the known-hash list are built on it.
pub struct RecordFile {
    path: PathBuf,
    format: Format,
    file: File,
    end: u64,
}

impl RecordFile {
    /// Opens (or creates, starting with the format's magic) the file at
    /// `path` for appending and takes the lock. The caller reads it
    /// (`LogReader`), refuses damage, and then says where the kept part
    /// ends (`keep`).
    pub fn open(path: &Path, format: &Format) -> Result<RecordFile, LogError> {
        let io = |source| LogError::Io {
            path: path.display().to_string(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = open_rw(path).map_err(io)?;
        lock(&file).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => LogError::Locked {
                path: path.display().to_string(),
            },
            _ => io(e),
        })?;
        if file.metadata().map_err(io)?.len() == 0 {
            file.write_all_at(format.magic, 0).map_err(io)?;
            file.sync_all().map_err(io)?;
            // The new file's name must survive a crash too.
            sync_dir(dir).map_err(io)?;
        }
        Ok(RecordFile {
            path: path.to_path_buf(),
            format: *format,
            file,
            end: format.magic.len() as u64,
        })
    }

    /// Keeps the first `end` bytes (what the caller read back as complete)
    /// and drops anything after it: `what` says in the log what that was.
    /// Refuses, changing nothing, when anything after `end` is damage: only
    /// a torn tail, or complete records the caller never applied, may go.
    pub fn keep(&mut self, end: u64, what: &str) -> Result<(), LogError> {
        let damage: Vec<Damage> = LogReader::open_at(&self.path, &self.format, Some(end), false)?
            .filter_map(|r| match r {
                Err(LogError::Damage(d)) => Some(Ok(*d)),
                Err(e) => Some(Err(e)),
                Ok(_) => None,
            })
            .collect::<Result<_, _>>()?;
        if !damage.is_empty() {
            return Err(self.refused(damage));
        }
        cut_back(&self.file, &self.path, end, what).map_err(|source| LogError::Io {
            path: self.path.display().to_string(),
            source,
        })?;
        self.end = end;
        Ok(())
    }

    /// The writer's refusal of a damaged file.
    pub fn refused(&self, damage: Vec<Damage>) -> LogError {
        LogError::Refused {
            path: self.path.display().to_string(),
            damage,
            hint: self.format.repair_hint,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads `len` stored bytes of the record at `offset`.
    pub fn read_record(&self, offset: u64, len: usize) -> Result<Vec<u8>, LogError> {
        let mut stored = vec![0u8; len];
        self.file
            .read_exact_at(&mut stored, offset + HEADER as u64)
            .map_err(|source| LogError::Io {
                path: self.path.display().to_string(),
                source,
            })?;
        Ok(stored)
    }

    /// Appends these records and makes them durable (`fdatasync`) before
    /// returning. Returns where each record starts.
    pub fn append(&mut self, records: &[([u8; 16], &[u8])]) -> Result<Vec<u64>, LogError> {
        let io = |source| LogError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let total: usize = records.iter().map(|(_, b)| HEADER + b.len()).sum();
        let mut buf = Vec::with_capacity(total);
        let mut placed = Vec::with_capacity(records.len());
        for (tag, bytes) in records {
            if bytes.len() > MAX_RECORD {
                return Err(LogError::TooLarge {
                    path: self.path.display().to_string(),
                    len: bytes.len(),
                });
            }
            placed.push(self.end + buf.len() as u64);
            encode_record(tag, bytes, &mut buf);
        }
        if buf.is_empty() {
            return Ok(placed);
        }
        // The durability point: data and the new length.
        let written = self
            .file
            .write_all_at(&buf, self.end)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Part may be in the file and even be read back, without being
            // on disk (a failed sync may have dropped it): it must not be
            // taken for stored on the next start. Nothing of it was
            // acknowledged; the hub sends it again.
            let _ = cut_back(
                &self.file,
                &self.path,
                self.end,
                "records whose write or sync failed (never acknowledged)",
            );
            return Err(io(e));
        }
        self.end += buf.len() as u64;
        Ok(placed)
    }
}

/// The writer's handle: holds the lock, knows every stored report id.
pub struct DeliveryLog {
    file: RecordFile,
    /// Report id → (offset, length of the delivery bytes) of each of its
    /// records (a report, then perhaps its escalation).
    index: HashMap<ReportId, Vec<(u64, u32)>>,
}

impl DeliveryLog {
    /// Opens (or creates) the log in `dir` for appending, takes the lock,
    /// reads the index and drops a torn tail. A damaged log is refused with
    /// every damaged range and left exactly as it is: appending after
    /// damage, or cutting it away, would lose acknowledged deliveries that
    /// the hub never sends again.
    pub fn open(dir: &Path) -> Result<DeliveryLog, LogError> {
        let path = dir.join(LOG_FILE);
        let mut file = RecordFile::open(&path, &DELIVERY_LOG)?;
        let mut index = HashMap::new();
        let mut damage = Vec::new();
        let mut reader = LogReader::open(&path)?;
        for record in reader.by_ref() {
            match record {
                Ok(r) => index
                    .entry(r.report_id())
                    .or_insert_with(Vec::new)
                    .push((r.offset, r.bytes.len() as u32)),
                Err(LogError::Damage(d)) => damage.push(*d),
                Err(e) => return Err(e),
            }
        }
        if !damage.is_empty() {
            return Err(file.refused(damage));
        }
        file.keep(
            reader.offset(),
            "a record cut short by a crash (it was never acknowledged)",
        )?;
        Ok(DeliveryLog { file, index })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Reports stored (each counted once, however often it was updated).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether exactly these delivery bytes are already stored for `id`
    /// (a redelivery after the hub missed our acknowledgement).
    pub fn holds(&self, id: &ReportId, bytes: &[u8]) -> Result<bool, LogError> {
        for &(offset, len) in self.index.get(id).map(Vec::as_slice).unwrap_or_default() {
            if len as usize == bytes.len() && self.file.read_record(offset, len as usize)? == bytes
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Appends these records and makes them durable (`fdatasync` of the log)
    /// before returning: the caller acknowledges only after this.
    pub fn append(&mut self, records: &[(ReportId, &[u8])]) -> Result<(), LogError> {
        let tagged: Vec<([u8; 16], &[u8])> =
            records.iter().map(|(id, b)| (*id.as_bytes(), *b)).collect();
        let placed = self.file.append(&tagged)?;
        for ((id, bytes), offset) in records.iter().zip(placed) {
            self.index
                .entry(*id)
                .or_default()
                .push((offset, bytes.len() as u32));
        }
        Ok(())
    }
}

/// An exclusive, non-blocking lock on the log, released when the file closes.
pub(crate) fn lock(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only uses the descriptor, which `file` keeps open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn id(n: u8) -> ReportId {
        ReportId::from_bytes([n; 16])
    }

    fn all(dir: &Path) -> Vec<LogRecord> {
        LogReader::open(dir)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    /// Every record and every damaged range, reading on after damage.
    fn everything(path: &Path) -> (Vec<LogRecord>, Vec<Damage>) {
        let (mut records, mut damage) = (Vec::new(), Vec::new());
        for r in LogReader::open(path).unwrap() {
            match r {
                Ok(r) => records.push(r),
                Err(LogError::Damage(d)) => damage.push(*d),
                Err(e) => panic!("{e}"),
            }
        }
        (records, damage)
    }

    /// A log of `n` records of 10 bytes each (record i tagged id(i)); its
    /// path and where each record starts (also for `log_repair`'s tests).
    pub(crate) fn log_of(dir: &Path, n: u8) -> (PathBuf, Vec<u64>) {
        let mut log = DeliveryLog::open(dir).unwrap();
        let bodies: Vec<Vec<u8>> = (0..n).map(|i| vec![i; 10]).collect();
        let records: Vec<(ReportId, &[u8])> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| (id(i as u8), b.as_slice()))
            .collect();
        log.append(&records).unwrap();
        let path = log.path().to_path_buf();
        let starts = (0..n as u64)
            .map(|i| MAGIC.len() as u64 + i * (HEADER as u64 + 10))
            .collect();
        (path, starts)
    }

    fn alter(path: &Path, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut bytes = std::fs::read(path).unwrap();
        f(&mut bytes);
        std::fs::write(path, &bytes).unwrap();
        bytes
    }

    fn ids(records: &[LogRecord]) -> Vec<ReportId> {
        records.iter().map(LogRecord::report_id).collect()
    }

    #[test]
    fn appended_records_read_back_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DeliveryLog::open(dir.path()).unwrap();
        log.append(&[(id(1), b"one"), (id(2), b"two")]).unwrap();
        assert!(log.holds(&id(1), b"one").unwrap());
        assert!(!log.holds(&id(1), b"uno").unwrap());
        assert!(!log.holds(&id(3), b"one").unwrap());
        drop(log);
        let log = DeliveryLog::open(dir.path()).unwrap();
        assert_eq!(log.len(), 2);
        assert!(log.holds(&id(2), b"two").unwrap());
        let got = all(dir.path());
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].report_id(), id(2));
        assert_eq!(got[1].bytes, b"two");
    }

    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = DeliveryLog::open(dir.path()).unwrap();
        assert!(matches!(
            DeliveryLog::open(dir.path()),
            Err(LogError::Locked { .. })
        ));
    }

    #[test]
    fn a_record_cut_short_at_the_end_is_dropped_on_open() {
        // Cut in the body, and cut in the header (fewer bytes than a header).
        for cut in [3, 10 + 5] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = DeliveryLog::open(dir.path()).unwrap();
            log.append(&[(id(1), b"kept")]).unwrap();
            log.append(&[(id(2), b"torn recor")]).unwrap();
            let path = log.path().to_path_buf();
            drop(log);
            let len = std::fs::metadata(&path).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(len - cut).unwrap();
            drop(f);
            // Readers stop quietly before the torn record.
            assert_eq!(all(dir.path()).len(), 1);
            let mut log = DeliveryLog::open(dir.path()).unwrap();
            assert_eq!(log.len(), 1);
            log.append(&[(id(3), b"after")]).unwrap();
            assert_eq!(ids(&all(dir.path())), [id(1), id(3)]);
        }
    }

    #[test]
    fn an_all_zero_tail_is_a_file_extended_but_never_written_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = log_of(dir.path(), 3);
        let len = std::fs::metadata(&path).unwrap().len();
        alter(&path, |b| b.extend_from_slice(&[0u8; 5000]));
        assert_eq!(all(dir.path()).len(), 3);
        let mut r = LogReader::open(&path).unwrap();
        assert_eq!(r.by_ref().count(), 3);
        assert_eq!(r.torn_tail(), Some((len, 5000)));
        let mut log = DeliveryLog::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        log.append(&[(id(9), b"after")]).unwrap();
        assert_eq!(all(dir.path()).len(), 4);
    }

    #[test]
    fn a_flipped_bit_in_a_length_in_the_middle_is_damage_and_the_writer_refuses() {
        // A higher length (the record seems to run past the end: format 1
        // took that for a torn tail and cut 7 records) and a lower one.
        for (byte, bit) in [(2, 0x10), (0, 0x01), (3, 0x80)] {
            let dir = tempfile::tempdir().unwrap();
            let (path, starts) = log_of(dir.path(), 10);
            let at = starts[3];
            let before = alter(&path, |b| b[at as usize + byte] ^= bit);
            // A reader that stops at the first error names it and its offset.
            let err = LogReader::open(&path)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("record at offset {at}: header checksum mismatch")),
                "{err}"
            );
            assert!(err.contains(&id(3).to_string()), "{err}");
            // One that reads on gets every other record.
            let (records, damage) = everything(&path);
            assert_eq!(records.len(), 9);
            assert!(!ids(&records).contains(&id(3)));
            assert_eq!((damage[0].start, damage[0].end), (at, starts[4]));
            let tag = damage[0].tag.clone().unwrap();
            assert_eq!((tag.value, tag.verified), (id(3).to_string(), false));
            // The writer refuses, names the offset, and changes nothing.
            let err = DeliveryLog::open(dir.path()).err().unwrap();
            assert!(matches!(err, LogError::Refused { .. }), "{err}");
            let text = err.to_string();
            assert!(
                text.contains(&format!("offset {at}: header checksum")),
                "{text}"
            );
            assert!(text.contains("log salvage"), "{text}");
            assert_eq!(std::fs::read(&path).unwrap(), before);
        }
    }

    #[test]
    fn a_damaged_checksum_of_the_last_record_is_damage_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (path, starts) = log_of(dir.path(), 4);
        let at = starts[3];
        // The body checksum, then the header checksum.
        for field in [20, 24] {
            let before = alter(&path, |b| b[at as usize + field] ^= 0x04);
            let (records, damage) = everything(&path);
            assert_eq!(records.len(), 3);
            assert_eq!(damage.len(), 1, "{damage:?}");
            assert_eq!((damage[0].start, damage[0].end), (at, before.len() as u64));
            let err = DeliveryLog::open(dir.path()).err().unwrap().to_string();
            assert!(err.contains(&format!("offset {at}")), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), before);
            alter(&path, |b| b[at as usize + field] ^= 0x04);
        }
        assert_eq!(DeliveryLog::open(dir.path()).unwrap().len(), 4);
    }

    #[test]
    fn a_damaged_body_of_the_last_record_is_damage_with_its_report_id() {
        let dir = tempfile::tempdir().unwrap();
        let (path, starts) = log_of(dir.path(), 4);
        let before = alter(&path, |b| {
            let last = b.len() - 1;
            b[last] ^= 0x20;
        });
        let (records, damage) = everything(&path);
        assert_eq!(records.len(), 3);
        let d = &damage[0];
        assert_eq!((d.start, d.end), (starts[3], before.len() as u64));
        assert_eq!(d.reason, "checksum mismatch");
        let tag = d.tag.clone().unwrap();
        assert_eq!((tag.value, tag.verified), (id(3).to_string(), true));
        assert!(
            d.to_string().contains(&format!("report_id {}", id(3))),
            "{d}"
        );
        let err = DeliveryLog::open(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains(&format!("offset {}: checksum mismatch", starts[3])),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn reading_on_after_damage_finds_every_good_record() {
        let dir = tempfile::tempdir().unwrap();
        let (path, starts) = log_of(dir.path(), 20);
        let size = (HEADER + 10) as u64;
        alter(&path, |b| {
            // Garbage over the header of record 2.
            for x in &mut b[starts[2] as usize..starts[2] as usize + 6] {
                *x = 0xA5;
            }
            // A body byte of record 7.
            b[starts[7] as usize + HEADER + 4] ^= 0xFF;
            // A stray write across records 11 and 12 (from the middle of 11
            // into 12's body).
            let from = starts[11] as usize + 9;
            for x in &mut b[from..from + 40] {
                *x = 0x5A;
            }
            // Zeros over record 16 (a sector lost in the middle).
            for x in &mut b[starts[16] as usize..(starts[16] + size) as usize] {
                *x = 0;
            }
        });
        let (records, damage) = everything(&path);
        let want: Vec<ReportId> = (0..20)
            .filter(|i| ![2, 7, 11, 12, 16].contains(i))
            .map(id)
            .collect();
        assert_eq!(ids(&records), want);
        let ranges: Vec<(u64, u64)> = damage.iter().map(|d| (d.start, d.end)).collect();
        assert_eq!(
            ranges,
            [
                (starts[2], starts[3]),
                (starts[7], starts[8]),
                (starts[11], starts[13]),
                (starts[16], starts[17])
            ]
        );
        for r in &records {
            assert_eq!(r.bytes, vec![r.tag[0]; 10]);
        }
        let err = DeliveryLog::open(dir.path()).err().unwrap().to_string();
        for s in [2, 7, 11, 16] {
            assert!(err.contains(&format!("offset {}", starts[s])), "{err}");
        }
    }

    #[test]
    fn a_genuine_header_with_a_length_over_the_maximum_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (path, starts) = log_of(dir.path(), 3);
        alter(&path, |b| {
            let at = starts[1] as usize;
            b[at..at + 4].copy_from_slice(&(MAX_RECORD as u32 + 1).to_le_bytes());
            let crc = crc32fast::hash(&b[at..at + HEADER_SIGNED]);
            b[at + HEADER_SIGNED..at + HEADER].copy_from_slice(&crc.to_le_bytes());
        });
        let (records, damage) = everything(&path);
        assert_eq!(ids(&records), [id(0), id(2)]);
        assert!(damage[0].reason.contains("exceeds"), "{damage:?}");
        assert!(DeliveryLog::open(dir.path()).is_err());
    }

    #[test]
    fn keep_cuts_only_a_torn_tail_or_complete_records_never_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (path, starts) = log_of(dir.path(), 4);
        // Complete records after the kept end may go (the list drops a batch
        // that never got its head).
        let mut f = RecordFile::open(&path, &DELIVERY_LOG).unwrap();
        f.keep(starts[3], "test").unwrap();
        drop(f);
        assert_eq!(all(dir.path()).len(), 3);
        // Damage after it may not.
        let before = alter(&path, |b| b[starts[2] as usize + HEADER] ^= 1);
        let mut f = RecordFile::open(&path, &DELIVERY_LOG).unwrap();
        let err = f.keep(starts[1], "test").err().unwrap().to_string();
        assert!(err.contains(&format!("offset {}", starts[2])), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_lenient_reader_reads_past_a_damaged_start() {
        let dir = tempfile::tempdir().unwrap();
        let (path, starts) = log_of(dir.path(), 3);
        alter(&path, |b| b[1] ^= 0x40);
        assert!(LogReader::open(&path).is_err());
        let mut records = Vec::new();
        let mut damage = Vec::new();
        for r in LogReader::open_lenient(&path, &DELIVERY_LOG).unwrap() {
            match r {
                Ok(r) => records.push(r),
                Err(LogError::Damage(d)) => damage.push(*d),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(records.len(), 3);
        assert_eq!((damage[0].start, damage[0].end), (0, starts[0]));
    }

    #[test]
    fn a_file_that_is_not_a_log_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        std::fs::write(&p, b"hello world, not a log").unwrap();
        let err = LogReader::open(&p).err().unwrap().to_string();
        assert!(err.contains("not a delivery log"), "{err}");
    }
}
