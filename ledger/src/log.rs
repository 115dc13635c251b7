//! The log: one append-only file of records (`records.log`). A group of
//! records is written at the end and synced (`fdatasync`) in one call
//! before anything is acknowledged; the end the owner last made durable is
//! where opening cuts the file back to (a group that never committed).
//! Records are read by their place ([`Ptr`]) from any thread.

use crate::record::{decode_header, Header, FIXED, MAX_KEY};
use meldnet_core::append_file::{cut_back, open_rw, sync_dir};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The log's name inside the ledger's folder.
pub const LOG_FILE: &str = "records.log";

/// Where a record lies: its header's offset and its payload's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ptr {
    /// Offset of the record's header in the log.
    pub offset: u64,
    /// Length of the record's payload.
    pub len: u32,
}

impl Ptr {
    /// Its 12 bytes as indexes keep them: offset (8, BE), length (4, BE).
    pub fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        let (o, l) = b.split_at_mut(8);
        o.copy_from_slice(&self.offset.to_be_bytes());
        l.copy_from_slice(&self.len.to_be_bytes());
        b
    }

    /// Reads 12 stored bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Ptr> {
        if b.len() != 12 {
            return None;
        }
        Some(Ptr {
            offset: u64::from_be_bytes(b.get(..8)?.try_into().ok()?),
            len: u32::from_be_bytes(b.get(8..12)?.try_into().ok()?),
        })
    }
}

/// Why the log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The log.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes at a place are not the record that was written there.
    #[error("{path}: record at offset {offset}: {reason}")]
    Damaged {
        /// The log.
        path: String,
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

impl LogError {
    /// Whether the disk (or the quota) is full.
    pub fn is_full(&self) -> bool {
        matches!(self, LogError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
    }
}

/// A record read back: its header, its place and its payload.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its header.
    pub header: Header,
    /// Where it lies.
    pub ptr: Ptr,
    /// Its payload, checked.
    pub payload: Vec<u8>,
}

/// What a walk over the log meets: a record, or a damaged range.
#[derive(Debug)]
pub enum Walked {
    /// A record whose header is sound; the payload's check result beside it.
    Record(Record, Result<(), String>),
    /// Bytes from `offset` (for `len`) that hold no genuine record.
    Damage {
        /// Where the damage starts.
        offset: u64,
        /// How many bytes up to the next genuine record (or the end).
        len: u64,
        /// What was found there.
        reason: String,
    },
}

/// The open log. Reads (`pread`) are safe from any thread; appends come from
/// one writer.
#[derive(Debug)]
pub struct Log {
    path: PathBuf,
    file: File,
    /// The end of what has been written and synced through this handle:
    /// no sound place leads past it (checked before a read allocates).
    end: AtomicU64,
}

impl Log {
    /// Opens (or creates) the log in `dir`, cut back to `durable_end`.
    pub fn open(dir: &Path, durable_end: u64) -> Result<Log, LogError> {
        let path = dir.join(LOG_FILE);
        let io = |source| LogError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = open_rw(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < durable_end {
            return Err(LogError::Damaged {
                path: path.display().to_string(),
                offset: len,
                reason: format!(
                    "the log ends at {len}, before the {durable_end} bytes the store made durable (records lost)"
                ),
            });
        }
        cut_back(
            &file,
            &path,
            durable_end,
            "records of a commit that never completed",
        )
        .map_err(io)?;
        if durable_end == 0 {
            sync_dir(dir).map_err(io)?;
        }
        Ok(Log {
            path,
            file,
            end: AtomicU64::new(durable_end),
        })
    }

    /// Where the log ends.
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> LogError {
        LogError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn damaged(&self, offset: u64, reason: impl Into<String>) -> LogError {
        LogError::Damaged {
            path: self.path.display().to_string(),
            offset,
            reason: reason.into(),
        }
    }

    /// Writes `buf` at `at` (the end) and syncs it: after this the records
    /// survive a crash. A failure leaves the end where it was: the next
    /// write goes to the same place.
    pub fn write_durable(&self, at: u64, buf: &[u8]) -> Result<u64, LogError> {
        self.file.write_all_at(buf, at).map_err(|e| self.io(e))?;
        self.file.sync_data().map_err(|e| self.io(e))?;
        let end = at + buf.len() as u64;
        self.end.fetch_max(end, Ordering::AcqRel);
        Ok(end)
    }

    /// The bytes of the record at `p`, header and payload, as they lie
    /// (unchecked but for lying inside the log: nothing is allocated for a
    /// place that leads past its end).
    pub fn read_raw(&self, p: Ptr, key_len: usize) -> Result<Vec<u8>, LogError> {
        let size = (FIXED + key_len) as u64 + u64::from(p.len);
        let end = p.offset.checked_add(size);
        if key_len > MAX_KEY || end.is_none_or(|e| e > self.end()) {
            return Err(self.damaged(p.offset, "the place leads past the end of the log"));
        }
        let mut buf = vec![0u8; size as usize];
        self.file
            .read_exact_at(&mut buf, p.offset)
            .map_err(|e| self.io(e))?;
        Ok(buf)
    }

    /// The payload of the record at `p`, whose index keys are `key_len`
    /// bytes, as stored, with its codec: its header and payload checked,
    /// and its length the place's.
    pub fn read(&self, p: Ptr, key_len: usize) -> Result<(u8, Vec<u8>), LogError> {
        let mut buf = self.read_raw(p, key_len)?;
        let h = decode_header(&buf).map_err(|e| self.damaged(p.offset, e.to_string()))?;
        if h.key.len() != key_len || h.len != p.len {
            return Err(self.damaged(p.offset, "the record is not the one its place names"));
        }
        let payload = buf.get(h.size()..).unwrap_or_default();
        if crc32fast::hash(payload) != h.payload_crc {
            return Err(self.damaged(p.offset, "the payload's checksum fails"));
        }
        buf.drain(..h.size());
        Ok((h.codec, buf))
    }

    /// Walks the records from `from` to `to`, in order, saying each to `f`
    /// with its payload (checked), and each damaged range with where it
    /// lies. After damage it goes on from the next genuine header, so every
    /// sound record is met. Reads in large pieces.
    pub fn walk(
        &self,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(Walked) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let to = to.min(self.end());
        let mut window = Window {
            log: self,
            to,
            at: from,
            buf: Vec::new(),
        };
        let mut at = from;
        let mut damage_from: Option<(u64, String)> = None;
        while at < to {
            let here = window.bytes(at, FIXED + MAX_KEY)?;
            let sound = match decode_header(here) {
                Ok(h) if (h.size() as u64 + u64::from(h.len)) <= to - at => Ok(h),
                Ok(_) => Err("a record runs past the end".to_string()),
                Err(e) => Err(e.to_string()),
            };
            let h = match sound {
                Ok(h) => h,
                Err(reason) => {
                    damage_from.get_or_insert((at, reason));
                    at += 1;
                    continue;
                }
            };
            if let Some((from, reason)) = damage_from.take() {
                f(Walked::Damage {
                    offset: from,
                    len: at - from,
                    reason,
                })?;
            }
            let total = h.size() + h.len as usize;
            let record = window.bytes(at, total)?;
            let payload = record.get(h.size()..total).unwrap_or_default().to_vec();
            let check = if crc32fast::hash(&payload) == h.payload_crc {
                Ok(())
            } else {
                Err("the payload's checksum fails".to_string())
            };
            let ptr = Ptr {
                offset: at,
                len: h.len,
            };
            at += total as u64;
            f(Walked::Record(
                Record {
                    header: h,
                    ptr,
                    payload,
                },
                check,
            ))?;
        }
        if let Some((from, reason)) = damage_from {
            f(Walked::Damage {
                offset: from,
                len: to - from,
                reason,
            })?;
        }
        Ok(())
    }
}

/// A window of the log read in large pieces, for walking it.
struct Window<'a> {
    log: &'a Log,
    to: u64,
    /// Where `buf` starts in the log.
    at: u64,
    buf: Vec<u8>,
}

impl Window<'_> {
    /// Up to `n` bytes from `at` (fewer only at the walk's end).
    fn bytes(&mut self, at: u64, n: usize) -> Result<&[u8], LogError> {
        const PIECE: usize = 8 << 20;
        let want_end = (at + n as u64).min(self.to);
        let have_end = self.at + self.buf.len() as u64;
        if at < self.at || want_end > have_end {
            // Keep nothing before `at`; read a piece (or the record) from it.
            let keep_from = at.saturating_sub(self.at) as usize;
            if at >= self.at && keep_from <= self.buf.len() {
                self.buf.drain(..keep_from);
            } else {
                self.buf.clear();
            }
            self.at = at;
            let have = self.buf.len();
            let read_end = (at + n.max(PIECE) as u64).min(self.to);
            let more = (read_end - at) as usize - have.min((read_end - at) as usize);
            if more > 0 {
                self.buf.resize(have + more, 0);
                self.log
                    .file
                    .read_exact_at(
                        self.buf.get_mut(have..).unwrap_or_default(),
                        at + have as u64,
                    )
                    .map_err(|e| self.log.io(e))?;
            }
        }
        let from = (at - self.at) as usize;
        let to = (want_end - self.at) as usize;
        Ok(self.buf.get(from..to).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{encode, Op};

    fn records(n: usize) -> (Vec<u8>, Vec<Ptr>) {
        let mut buf = Vec::new();
        let mut ptrs = Vec::new();
        for i in 0..n {
            let at = buf.len() as u64;
            let (_, len) = encode(&mut buf, 1, Op::Put, &(i as u64).to_be_bytes(), |b| {
                b.extend(std::iter::repeat_n(i as u8, 10 + i % 50))
            });
            ptrs.push(Ptr { offset: at, len });
        }
        (buf, ptrs)
    }

    #[test]
    fn records_read_back_by_place_and_by_walking() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), 0).unwrap();
        let (buf, ptrs) = records(100);
        assert_eq!(log.write_durable(0, &buf).unwrap(), buf.len() as u64);
        for (i, p) in ptrs.iter().enumerate() {
            assert_eq!(log.read(*p, 8).unwrap(), (0, vec![i as u8; 10 + i % 50]));
        }
        let mut n = 0;
        log.walk(0, log.end(), &mut |w| {
            match w {
                Walked::Record(r, ok) => {
                    assert!(ok.is_ok());
                    assert_eq!(r.ptr, ptrs[n]);
                    n += 1;
                }
                Walked::Damage { .. } => panic!("no damage"),
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 100);
        assert_eq!(
            Ptr::from_bytes(&ptrs[7].to_bytes()),
            Some(ptrs[7]),
            "12 bytes each way"
        );
    }

    #[test]
    fn damage_is_named_with_its_offset_and_every_sound_record_is_still_met() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), 0).unwrap();
        let (mut buf, ptrs) = records(50);
        // A payload bit, a header bit, and garbage over a whole record.
        buf[ptrs[3].offset as usize + FIXED + 8 + 2] ^= 4;
        buf[ptrs[10].offset as usize + 5] ^= 1;
        for b in &mut buf[ptrs[20].offset as usize..ptrs[21].offset as usize] {
            *b = 0xAB;
        }
        log.write_durable(0, &buf).unwrap();
        let e = log.read(ptrs[3], 8).unwrap_err().to_string();
        assert!(e.contains(&format!("offset {}", ptrs[3].offset)), "{e}");
        assert!(e.contains("checksum"), "{e}");
        assert!(log.read(ptrs[10], 8).is_err());
        assert!(log.read(ptrs[11], 8).is_ok());
        let (mut sound, mut bad_payload, mut damage) = (0, 0, Vec::new());
        log.walk(0, log.end(), &mut |w| {
            match w {
                Walked::Record(_, Ok(())) => sound += 1,
                Walked::Record(_, Err(_)) => bad_payload += 1,
                Walked::Damage { offset, len, .. } => damage.push((offset, len)),
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(bad_payload, 1);
        assert_eq!(sound, 47);
        assert_eq!(
            damage,
            vec![
                (ptrs[10].offset, ptrs[11].offset - ptrs[10].offset),
                (ptrs[20].offset, ptrs[21].offset - ptrs[20].offset)
            ]
        );
        // A place past the end allocates nothing.
        let far = Ptr {
            offset: ptrs[1].offset,
            len: u32::MAX,
        };
        assert!(log
            .read(far, 8)
            .unwrap_err()
            .to_string()
            .contains("past the end"));
    }

    #[test]
    fn open_cuts_off_what_no_commit_made_durable_and_refuses_a_short_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), 0).unwrap();
        let (buf, _) = records(5);
        let end = log.write_durable(0, &buf).unwrap();
        let (more, _) = records(3);
        log.write_durable(end, &more).unwrap();
        drop(log);
        let log = Log::open(dir.path(), end).unwrap();
        assert_eq!(log.end(), end);
        assert_eq!(std::fs::metadata(log.path()).unwrap().len(), end);
        drop(log);
        assert!(Log::open(dir.path(), end + 1).is_err());
    }
}
