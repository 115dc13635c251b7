//! The hub's report bodies: one append-only file, `reports.blobs`, next to
//! the sled store, which keeps only a 12-byte pointer per report.
//!
//! Why: with the signed report and decision (about 1.5 KB) as sled values,
//! sled rewrote them again and again as its pages were consolidated: about
//! 8 KB written to disk per report and a fifth of the hub's CPU. Written once
//! here, sequentially, they cost one `write` and share one `fdatasync` per
//! group commit.
//!
//! Record: `len: u32 LE | crc32 of the bytes: u32 LE | bytes`. Crash safety
//! comes from the order in the sled backend: a group's bodies are written and synced
//! before the sled batch that points to them is applied, and the sled batch
//! records the new end ([`BlobFile::open`] cuts the file back to the end the
//! store last made durable, dropping bodies of a group that never committed).

use meldnet_core::append_file::{cut_back, open_rw, sync_dir};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The file's name inside the store's folder.
pub const BLOB_FILE: &str = "reports.blobs";
const HEADER: u64 = 8;

/// Where a body lives: what sled stores for a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRef {
    /// Offset of the record's header.
    pub offset: u64,
    /// Length of the body.
    pub len: u32,
}

impl BlobRef {
    /// The 12 bytes kept in sled: offset (8, BE) and length (4, BE).
    pub fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&self.offset.to_be_bytes());
        b[8..].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    /// Parses the 12 stored bytes.
    pub fn from_bytes(b: &[u8]) -> Option<BlobRef> {
        let offset = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let len = u32::from_be_bytes(b.get(8..12)?.try_into().ok()?);
        (b.len() == 12).then_some(BlobRef { offset, len })
    }
}

/// Why a body could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The blob file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes at a pointer are not the body it points to.
    #[error("{path}: body at offset {offset}: {reason}")]
    Damaged {
        /// The blob file.
        path: String,
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The open blob file. Reads (`pread`) are safe from any thread; appends
/// come only from the store's writer thread.
#[derive(Debug)]
pub struct BlobFile {
    path: PathBuf,
    file: File,
    /// The end of what this handle has made durable: no sound pointer
    /// leads past it. Checked before a read allocates the length a pointer
    /// claims, which a flipped bit in a damaged pointer makes gigabytes.
    end: AtomicU64,
}

impl BlobFile {
    /// Opens (or creates) the file in `dir` and cuts it back to `durable_end`,
    /// the end the store recorded with its last durable commit.
    pub fn open(dir: &Path, durable_end: u64) -> Result<BlobFile, BlobError> {
        let path = dir.join(BLOB_FILE);
        let io = |source| BlobError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = open_rw(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < durable_end {
            return Err(BlobError::Damaged {
                path: path.display().to_string(),
                offset: len,
                reason: "the file is shorter than the store says (bodies lost)",
            });
        }
        cut_back(
            &file,
            &path,
            durable_end,
            "report bodies of a commit that never completed",
        )
        .map_err(io)?;
        if durable_end == 0 {
            sync_dir(dir).map_err(io)?;
        }
        Ok(BlobFile {
            path,
            file,
            end: AtomicU64::new(durable_end),
        })
    }

    /// Adds one body to `buf`, which will be written at `end`; returns its pointer.
    pub fn stage(buf: &mut Vec<u8>, end: u64, body: &[u8]) -> BlobRef {
        Self::stage_with(buf, end, |b| b.extend_from_slice(body))
    }

    /// Adds the encoding of `msg` to `buf` without an intermediate copy.
    pub fn stage_message(buf: &mut Vec<u8>, end: u64, msg: &impl prost::Message) -> BlobRef {
        Self::stage_with(buf, end, |b| {
            b.reserve(msg.encoded_len());
            // Encoding into a Vec cannot run out of room.
            let _ = msg.encode(b);
        })
    }

    fn stage_with(buf: &mut Vec<u8>, end: u64, write: impl FnOnce(&mut Vec<u8>)) -> BlobRef {
        let at = buf.len();
        let start = at + HEADER as usize;
        buf.extend_from_slice(&[0u8; HEADER as usize]);
        write(buf);
        let body = buf.get(start..).unwrap_or_default();
        let len = body.len() as u32;
        let crc = crc32fast::hash(body);
        if let Some(header) = buf.get_mut(at..start) {
            let words = len.to_le_bytes().into_iter().chain(crc.to_le_bytes());
            header.iter_mut().zip(words).for_each(|(d, s)| *d = s);
        }
        BlobRef {
            offset: end + at as u64,
            len,
        }
    }

    /// The body at `r` in a buffer of staged bodies that will be written
    /// at `start` (a group reading what it staged itself).
    pub fn staged_body(buf: &[u8], start: u64, r: BlobRef) -> Option<&[u8]> {
        let at = usize::try_from(r.offset.checked_sub(start)?.checked_add(HEADER)?).ok()?;
        buf.get(at..at.checked_add(r.len as usize)?)
    }

    /// Writes staged bodies at `end` and syncs them (`fdatasync`): after
    /// this they survive a crash, before anything points to them.
    pub fn write_durable(&self, end: u64, buf: &[u8]) -> Result<(), BlobError> {
        let io = |source| BlobError::Io {
            path: self.path.display().to_string(),
            source,
        };
        self.file.write_all_at(buf, end).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.end
            .fetch_max(end + buf.len() as u64, Ordering::Release);
        Ok(())
    }

    /// The bytes at `r`, header and body, as they are on disk (unchecked
    /// but for lying inside the file: a pointer that leads past its end is
    /// damaged, and nothing is allocated for it).
    pub fn read_raw(&self, r: BlobRef) -> Result<Vec<u8>, BlobError> {
        let end = r.offset.checked_add(HEADER + u64::from(r.len));
        if end.is_none_or(|e| e > self.end.load(Ordering::Acquire)) {
            return Err(BlobError::Damaged {
                path: self.path.display().to_string(),
                offset: r.offset,
                reason: "the pointer leads past the end of the file",
            });
        }
        let mut buf = vec![0u8; HEADER as usize + r.len as usize];
        self.file
            .read_exact_at(&mut buf, r.offset)
            .map_err(|source| BlobError::Io {
                path: self.path.display().to_string(),
                source,
            })?;
        Ok(buf)
    }

    /// Reads the body at `r`, checking its length and checksum.
    pub fn read(&self, r: BlobRef) -> Result<Vec<u8>, BlobError> {
        let damaged = |reason| BlobError::Damaged {
            path: self.path.display().to_string(),
            offset: r.offset,
            reason,
        };
        let mut buf = self.read_raw(r)?;
        let (header, body) = buf.split_at(HEADER as usize);
        let word = |at: usize| {
            header
                .get(at..at + 4)
                .and_then(|w| w.try_into().ok())
                .map(u32::from_le_bytes)
        };
        let (Some(len), Some(crc)) = (word(0), word(4)) else {
            return Err(damaged("the header is short"));
        };
        if len != r.len {
            return Err(damaged("length differs from the pointer"));
        }
        if crc32fast::hash(body) != crc {
            return Err(damaged("checksum mismatch"));
        }
        buf.drain(..HEADER as usize);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_read_back_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = BlobFile::open(dir.path(), 0).unwrap();
        let mut buf = Vec::new();
        let a = BlobFile::stage(&mut buf, 0, b"first body");
        let b = BlobFile::stage(&mut buf, 0, b"second");
        f.write_durable(0, &buf).unwrap();
        assert_eq!(f.read(a).unwrap(), b"first body");
        assert_eq!(f.read(b).unwrap(), b"second");
        assert_eq!(BlobRef::from_bytes(&b.to_bytes()), Some(b));
        let wrong = BlobRef {
            offset: b.offset,
            len: 3,
        };
        assert!(f.read(wrong).unwrap_err().to_string().contains("length"));
        f.file.write_all_at(b"X", b.offset + HEADER).unwrap();
        assert!(f.read(b).unwrap_err().to_string().contains("checksum"));
    }

    #[test]
    fn a_pointer_past_the_end_is_damage_and_allocates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = BlobFile::open(dir.path(), 0).unwrap();
        let mut buf = Vec::new();
        let a = BlobFile::stage(&mut buf, 0, b"body");
        f.write_durable(0, &buf).unwrap();
        // A flipped bit in a length asks for gigabytes: refused before any
        // allocation (the fuzz target's memory limit made this an abort).
        for r in [
            BlobRef {
                offset: a.offset,
                len: u32::MAX,
            },
            BlobRef {
                offset: a.offset,
                len: a.len + 1,
            },
            BlobRef {
                offset: u64::MAX - 3,
                len: 4,
            },
        ] {
            let e = f.read_raw(r).unwrap_err().to_string();
            assert!(e.contains("past the end"), "{e}");
            assert!(f.read(r).is_err());
        }
        assert_eq!(f.read(a).unwrap(), b"body");
        // Reopened at its durable end, the file knows where it ends.
        drop(f);
        let f = BlobFile::open(dir.path(), buf.len() as u64).unwrap();
        assert_eq!(f.read(a).unwrap(), b"body");
    }

    #[test]
    fn open_cuts_off_bodies_no_commit_points_to() {
        let dir = tempfile::tempdir().unwrap();
        let f = BlobFile::open(dir.path(), 0).unwrap();
        let mut buf = Vec::new();
        let a = BlobFile::stage(&mut buf, 0, b"committed");
        f.write_durable(0, &buf).unwrap();
        let end = buf.len() as u64;
        let mut more = Vec::new();
        BlobFile::stage(&mut more, end, b"never committed");
        f.write_durable(end, &more).unwrap();
        drop(f);
        let f = BlobFile::open(dir.path(), end).unwrap();
        assert_eq!(f.read(a).unwrap(), b"committed");
        assert_eq!(f.file.metadata().unwrap().len(), end);
        // A store that says more than the file holds is refused.
        drop(f);
        assert!(BlobFile::open(dir.path(), end + 1).is_err());
    }
}
