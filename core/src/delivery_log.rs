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
//! Record: `len: u32 LE | crc32: u32 LE | report id: 16 bytes | len bytes`,
//! the checksum over the id and the bytes. The file starts with [`MAGIC`].
//! A crash can only leave the last record cut short, and that record was
//! never acknowledged (acknowledgements follow the sync): the writer drops
//! it when it opens the log. A bad record anywhere else is damage, and
//! opening refuses to go on, naming the offset.

use crate::append_file::{cut_back, open_rw, sync_dir};
use crate::report::ReportId;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The log's file name inside a recipient's delivery folder.
pub const LOG_FILE: &str = "deliveries.log";
/// The first bytes of every delivery log: the format and its version.
pub const MAGIC: &[u8; 8] = b"MELDLOG1";
const HEADER: usize = 4 + 4 + 16;
/// The largest record the writer accepts (a delivery is far smaller).
const MAX_RECORD: usize = crate::limits::MAX_MESSAGE_BYTES;

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
    /// Not a delivery log, or damaged before its end.
    #[error("{path}: {reason}")]
    Damaged {
        /// The log file.
        path: String,
        /// What is wrong, with the offset.
        reason: String,
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

/// Reads the records of a log from the start. A record cut short at the very
/// end (a crash before the sync, or a writer appending right now) ends the
/// iteration quietly; anything else that is wrong is an error.
pub struct LogReader {
    path: PathBuf,
    input: BufReader<File>,
    offset: u64,
    len: u64,
    failed: bool,
}

impl LogReader {
    /// Opens the log at `path` (the file, or the folder holding [`LOG_FILE`]).
    pub fn open(path: &Path) -> Result<LogReader, LogError> {
        let path = if path.is_dir() {
            path.join(LOG_FILE)
        } else {
            path.to_path_buf()
        };
        Self::open_format(&path, MAGIC, "a delivery log")
    }

    /// Opens a file of the same record format that starts with `magic`
    /// (`what` names the kind of file in errors).
    pub fn open_format(path: &Path, magic: &[u8; 8], what: &str) -> Result<LogReader, LogError> {
        let path = path.to_path_buf();
        let io = |source| LogError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut found = [0u8; 8];
        if len < found.len() as u64 || input.read_exact(&mut found).is_err() || &found != magic {
            return Err(LogError::Damaged {
                path: path.display().to_string(),
                reason: format!(
                    "not {what} (the file does not start with {})",
                    String::from_utf8_lossy(magic)
                ),
            });
        }
        Ok(LogReader {
            path,
            input,
            offset: MAGIC.len() as u64,
            len,
            failed: false,
        })
    }

    /// Where the next record would start: after iterating to the end, the
    /// length of the complete part of the log.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn damaged(&mut self, reason: String) -> Option<Result<LogRecord, LogError>> {
        self.failed = true;
        Some(Err(LogError::Damaged {
            path: self.path.display().to_string(),
            reason,
        }))
    }
}

impl Iterator for LogReader {
    type Item = Result<LogRecord, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset + HEADER as u64 > self.len {
            return None;
        }
        let at = self.offset;
        let mut header = [0u8; HEADER];
        if self.input.read_exact(&mut header).is_err() {
            return None;
        }
        let (len, rest) = header.split_at(4);
        let (crc, id) = rest.split_at(4);
        let len = u32::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(crc.try_into().unwrap_or_default());
        let end = at + (HEADER + len) as u64;
        if end > self.len {
            // Cut short at the end of the file: never acknowledged.
            return None;
        }
        if len > MAX_RECORD {
            return self.damaged(format!(
                "record at offset {at}: length {len} exceeds {MAX_RECORD}"
            ));
        }
        let mut bytes = vec![0u8; len];
        if self.input.read_exact(&mut bytes).is_err() {
            return None;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(id);
        h.update(&bytes);
        if h.finalize() != crc {
            if end == self.len {
                // The last record, cut short by a crash mid-write.
                return None;
            }
            return self.damaged(format!("record at offset {at}: checksum mismatch"));
        }
        let mut tag = [0u8; 16];
        tag.copy_from_slice(id);
        self.offset = end;
        Some(Ok(LogRecord {
            offset: at,
            tag,
            bytes,
        }))
    }
}

/// An append-only file of checksummed records, open for writing: holds an
/// exclusive lock, appends batches and makes each durable before returning.
/// The delivery log and a node's copy of the known-hash list are built on it.
pub struct RecordFile {
    path: PathBuf,
    file: File,
    end: u64,
}

impl RecordFile {
    /// Opens (or creates, starting with `magic`) the file at `path` for
    /// appending and takes the lock. The caller reads it (`LogReader`) and
    /// then says where the kept part ends (`keep`).
    pub fn open(path: &Path, magic: &[u8; 8]) -> Result<RecordFile, LogError> {
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
            file.write_all_at(magic, 0).map_err(io)?;
            file.sync_all().map_err(io)?;
            // The new file's name must survive a crash too.
            sync_dir(dir).map_err(io)?;
        }
        Ok(RecordFile {
            path: path.to_path_buf(),
            file,
            end: magic.len() as u64,
        })
    }

    /// Keeps the first `end` bytes (what was read back as complete) and
    /// drops anything after it: `what` says in the log what that was.
    pub fn keep(&mut self, end: u64, what: &str) -> Result<(), LogError> {
        cut_back(&self.file, &self.path, end, what).map_err(|source| LogError::Io {
            path: self.path.display().to_string(),
            source,
        })?;
        self.end = end;
        Ok(())
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
                return Err(LogError::Damaged {
                    path: self.path.display().to_string(),
                    reason: format!("a record of {} bytes exceeds {MAX_RECORD}", bytes.len()),
                });
            }
            let mut h = crc32fast::Hasher::new();
            h.update(tag);
            h.update(bytes);
            placed.push(self.end + buf.len() as u64);
            buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            buf.extend_from_slice(&h.finalize().to_le_bytes());
            buf.extend_from_slice(tag);
            buf.extend_from_slice(bytes);
        }
        if buf.is_empty() {
            return Ok(placed);
        }
        self.file.write_all_at(&buf, self.end).map_err(io)?;
        // The durability point: data and the new length.
        self.file.sync_data().map_err(io)?;
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
    /// reads the index and drops a record cut short by a crash.
    pub fn open(dir: &Path) -> Result<DeliveryLog, LogError> {
        let path = dir.join(LOG_FILE);
        let mut file = RecordFile::open(&path, MAGIC)?;
        let mut index = HashMap::new();
        let mut reader = LogReader::open(&path)?;
        for record in reader.by_ref() {
            let r = record?;
            index
                .entry(r.report_id())
                .or_insert_with(Vec::new)
                .push((r.offset, r.bytes.len() as u32));
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
fn lock(file: &File) -> std::io::Result<()> {
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
mod tests {
    use super::*;

    fn id(n: u8) -> ReportId {
        ReportId::from_bytes([n; 16])
    }

    fn all(dir: &Path) -> Vec<LogRecord> {
        LogReader::open(dir)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
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
        let dir = tempfile::tempdir().unwrap();
        let mut log = DeliveryLog::open(dir.path()).unwrap();
        log.append(&[(id(1), b"kept")]).unwrap();
        log.append(&[(id(2), b"torn record")]).unwrap();
        let path = log.path().to_path_buf();
        drop(log);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        drop(f);
        // Readers stop quietly before the torn record.
        assert_eq!(all(dir.path()).len(), 1);
        let mut log = DeliveryLog::open(dir.path()).unwrap();
        assert_eq!(log.len(), 1);
        log.append(&[(id(3), b"after")]).unwrap();
        let ids: Vec<_> = all(dir.path()).into_iter().map(|r| r.report_id()).collect();
        assert_eq!(ids, [id(1), id(3)]);
    }

    #[test]
    fn damage_before_the_end_is_refused_with_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = DeliveryLog::open(dir.path()).unwrap();
        log.append(&[(id(1), b"first"), (id(2), b"second")])
            .unwrap();
        let path = log.path().to_path_buf();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[MAGIC.len() + HEADER] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let err = DeliveryLog::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("offset 8: checksum mismatch"), "{err}");
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
