//! Checking and salvaging a damaged record file (a delivery log, a node's
//! known-hash list): one implementation for `meldnet-agency log`,
//! `meldnet-node log` and `meldnet-node list`.
//!
//! Why a separate, explicit step: a writer never mends a damaged file by
//! cutting it (acknowledged deliveries are never sent again), so damage
//! stays until a person decides. `check` lists every damaged range and
//! counts the good records; `salvage` writes a new file with the good
//! records in order (to a temporary file, synced, then renamed into place,
//! the folder synced), keeps the original untouched beside it as
//! `<name>.damaged-<unix seconds>`, and says what was lost, so that the
//! recipient can ask the hub's operators for it. It takes the file's lock,
//! so it never runs under a live writer.

use crate::delivery_log::{encode_record, lock, Damage, Format, LogError, LogReader};
use meldnet_core::append_file::sync_dir;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a salvage keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Every good record, in order (a delivery log: nothing else holds them).
    EveryGoodRecord,
    /// The records before the first damage only: what comes after it cannot
    /// be applied without what was lost, and is fetched again from its
    /// source, which signs it (a node's known-hash list). `refetch` says how.
    UpToFirstDamage {
        /// The command that fetches the rest again.
        refetch: &'static str,
    },
}

/// What a file holds, read to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The file.
    pub path: PathBuf,
    /// Its length.
    pub len: u64,
    /// Good records (checksums verify).
    pub good: u64,
    /// Every damaged range, in file order.
    pub damage: Vec<Damage>,
    /// A torn tail (start, bytes): what a crash leaves, never acknowledged.
    pub torn_tail: Option<(u64, u64)>,
}

impl Scan {
    /// Whether nothing is damaged (a torn tail is not damage).
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }

    /// The bytes in damaged ranges.
    pub fn damaged_bytes(&self) -> u64 {
        self.damage.iter().map(Damage::len).sum()
    }

    /// The scan as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "log": self.path.display().to_string(),
            "status": if self.is_clean() { "ok" } else { "damaged" },
            "good_records": self.good,
            "damaged_ranges": self.damage.len(),
            "damaged_bytes": self.damaged_bytes(),
            "torn_tail_bytes": self.torn_tail.map_or(0, |(_, n)| n),
        })
    }
}

/// Reads the whole file, going on after damage: every good record goes to
/// `each`, every damaged range into the scan.
fn scan_with(
    path: &Path,
    format: &Format,
    mut each: impl FnMut(&crate::delivery_log::LogRecord, bool) -> Result<(), LogError>,
) -> Result<Scan, LogError> {
    let mut reader = LogReader::open_lenient(path, format)?;
    let (mut good, mut damage) = (0u64, Vec::new());
    for r in reader.by_ref() {
        match r {
            Ok(record) => {
                good += 1;
                each(&record, damage.is_empty())?;
            }
            Err(LogError::Damage(d)) => damage.push(*d),
            Err(e) => return Err(e),
        }
    }
    let scan = Scan {
        path: path.to_path_buf(),
        len: reader.file_len(),
        good,
        damage,
        torn_tail: reader.torn_tail(),
    };
    if scan.good == 0 && scan.damage.first().is_some_and(|d| d.start == 0) {
        // Nothing of the format anywhere: the wrong file, not a damaged one.
        return Err(LogError::Damaged {
            path: path.display().to_string(),
            reason: format!(
                "not {} (it does not start with {} and holds no record of the format)",
                format.what,
                String::from_utf8_lossy(format.magic)
            ),
        });
    }
    Ok(scan)
}

/// Reads the file at `path` to its end: every damaged range and the number
/// of good records. Changes nothing; needs no lock.
pub fn check(path: &Path, format: &Format) -> Result<Scan, LogError> {
    scan_with(path, format, |_, _| Ok(()))
}

/// What a salvage did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvaged {
    /// What the original held.
    pub scan: Scan,
    /// Records written to the new file.
    pub kept: u64,
    /// Good records left out ([`Keep::UpToFirstDamage`]: those after the
    /// first damage).
    pub left_out: u64,
    /// Where the original now is, untouched; None when it was not damaged
    /// and nothing was done.
    pub original: Option<PathBuf>,
}

/// Replaces a damaged file at `path` by one holding its good records (as
/// `keep` says), keeping the original beside it untouched. Takes the file's
/// lock: refused while a writer has it open. An undamaged file is left
/// alone (a torn tail is the writer's to drop).
pub fn salvage(path: &Path, format: &Format, keep: Keep) -> Result<Salvaged, LogError> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| LogError::Io { path: p, source }
    };
    let held = File::open(path).map_err(io(path))?;
    lock(&held).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => LogError::Locked {
            path: path.display().to_string(),
        },
        _ => io(path)(e),
    })?;
    let scan = check(path, format)?;
    if scan.is_clean() {
        return Ok(Salvaged {
            kept: scan.good,
            scan,
            left_out: 0,
            original: None,
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "log".into());
    let tmp = dir.join(format!(".{name}.salvage"));
    let copied = write_copy(path, &tmp, format, keep)
        .and_then(|c| keep_original(path, dir, &name).map(|original| (c, original)));
    let ((scan, kept, left_out), original) = match copied {
        Ok(done) => done,
        Err(e) => {
            // Nothing of ours may stay behind; the original was not touched.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(path)(e));
    }
    sync_dir(dir).map_err(io(dir))?;
    drop(held);
    Ok(Salvaged {
        scan,
        kept,
        left_out,
        original: Some(original),
    })
}

/// Writes the records `keep` says to `tmp`, synced, and reads it back:
/// what the original held, records kept, records left out.
fn write_copy(
    path: &Path,
    tmp: &Path,
    format: &Format,
    keep: Keep,
) -> Result<(Scan, u64, u64), LogError> {
    let io = |source| LogError::Io {
        path: tmp.display().to_string(),
        source,
    };
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
    w.write_all(format.magic).map_err(io)?;
    let (mut kept, mut left_out) = (0u64, 0u64);
    let mut buf = Vec::new();
    let scan = scan_with(path, format, |r, before_damage| {
        if keep == Keep::EveryGoodRecord || before_damage {
            buf.clear();
            encode_record(&r.tag, &r.bytes, &mut buf);
            w.write_all(&buf).map_err(io)?;
            kept += 1;
        } else {
            left_out += 1;
        }
        Ok(())
    })?;
    let out = w.into_inner().map_err(|e| io(e.into_error()))?;
    out.sync_all().map_err(io)?;
    drop(out);
    // The new file must read back clean, with every record written.
    let again = check(tmp, format)?;
    if !again.is_clean() || again.good != kept || again.torn_tail.is_some() {
        return Err(LogError::Damaged {
            path: tmp.display().to_string(),
            reason: format!(
                "the salvaged copy does not read back ({} of {kept} records); the original was not touched",
                again.good
            ),
        });
    }
    Ok((scan, kept, left_out))
}

/// Gives the original a second name, `<name>.damaged-<unix seconds>`, so
/// that it stays untouched once the copy takes its place (a link: the log's
/// own name never goes missing meanwhile).
fn keep_original(path: &Path, dir: &Path, name: &str) -> Result<PathBuf, LogError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut original = dir.join(format!("{name}.damaged-{secs}"));
    let mut n = 1;
    loop {
        match std::fs::hard_link(path, &original) {
            Ok(()) => return Ok(original),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                n += 1;
                original = dir.join(format!("{name}.damaged-{secs}-{n}"));
            }
            Err(source) => {
                return Err(LogError::Io {
                    path: original.display().to_string(),
                    source,
                })
            }
        }
    }
}

/// The tags of the damaged records, where their headers could be read.
pub fn lost_tags(damage: &[Damage]) -> Vec<String> {
    damage
        .iter()
        .filter_map(|d| d.tag.as_ref())
        .map(|t| {
            if t.verified {
                t.value.clone()
            } else {
                format!("{} (as the damaged header reads)", t.value)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery_log::{DeliveryLog, DELIVERY_LOG, HEADER};
    use meldnet_core::ReportId;

    use crate::delivery_log::tests::{id, log_of};

    fn flip(path: &Path, at: u64, bit: u8) -> Vec<u8> {
        let mut b = std::fs::read(path).unwrap();
        b[at as usize] ^= bit;
        std::fs::write(path, &b).unwrap();
        b
    }

    #[test]
    fn check_lists_every_damaged_range_and_counts_the_good_records() {
        let dir = tempfile::tempdir().unwrap();
        let (path, starts) = log_of(dir.path(), 10);
        assert!(check(&path, &DELIVERY_LOG).unwrap().is_clean());
        flip(&path, starts[2] + 2, 0x10);
        let before = flip(&path, starts[9] + HEADER as u64, 0x01);
        let s = check(&path, &DELIVERY_LOG).unwrap();
        assert_eq!(s.good, 8);
        let ranges: Vec<(u64, u64)> = s.damage.iter().map(|d| (d.start, d.end)).collect();
        assert_eq!(
            ranges,
            [(starts[2], starts[3]), (starts[9], before.len() as u64)]
        );
        assert_eq!(
            lost_tags(&s.damage),
            [
                format!("{} (as the damaged header reads)", id(2)),
                id(9).to_string()
            ]
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn salvage_keeps_every_good_record_and_the_original_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let (path, starts) = log_of(dir.path(), 10);
        flip(&path, starts[4] + 1, 0x02);
        // A torn tail after the damage is not kept (never acknowledged).
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[7u8; 5]);
        std::fs::write(&path, &bytes).unwrap();
        // Not under a live writer.
        let held = RecordFileGuard::hold(&path);
        assert!(matches!(
            salvage(&path, &DELIVERY_LOG, Keep::EveryGoodRecord),
            Err(LogError::Locked { .. })
        ));
        drop(held);
        let s = salvage(&path, &DELIVERY_LOG, Keep::EveryGoodRecord).unwrap();
        assert_eq!((s.kept, s.left_out), (9, 0));
        assert_eq!(s.scan.damage.len(), 1);
        assert_eq!(s.scan.torn_tail, Some((bytes.len() as u64 - 5, 5)));
        let original = s.original.unwrap();
        assert!(original
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("deliveries.log.damaged-"));
        assert_eq!(std::fs::read(&original).unwrap(), bytes);
        // The new log opens for writing and holds every good record, in order.
        let log = DeliveryLog::open(dir.path()).unwrap();
        assert_eq!(log.len(), 9);
        drop(log);
        let got: Vec<ReportId> = LogReader::open(&path)
            .unwrap()
            .map(|r| r.unwrap().report_id())
            .collect();
        let want: Vec<ReportId> = (0..10).filter(|&i| i != 4).map(id).collect();
        assert_eq!(got, want);
        // No temporary file is left; salvaging a clean log does nothing.
        assert!(!dir.path().join(".deliveries.log.salvage").exists());
        let s = salvage(&path, &DELIVERY_LOG, Keep::EveryGoodRecord).unwrap();
        assert_eq!(s.original, None);
    }

    #[test]
    fn salvage_up_to_the_first_damage_leaves_out_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let (path, starts) = log_of(dir.path(), 6);
        flip(&path, starts[3] + HEADER as u64 + 2, 0x08);
        let s = salvage(
            &path,
            &DELIVERY_LOG,
            Keep::UpToFirstDamage {
                refetch: "fetch it",
            },
        )
        .unwrap();
        assert_eq!((s.kept, s.left_out), (3, 2));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), starts[3]);
    }

    #[test]
    fn a_file_of_another_kind_is_not_salvaged() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("deliveries.log");
        std::fs::write(&p, vec![0x33u8; 4000]).unwrap();
        let err = salvage(&p, &DELIVERY_LOG, Keep::EveryGoodRecord)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a delivery log"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// Holds a log's lock as a writer does.
    struct RecordFileGuard {
        _file: File,
    }

    impl RecordFileGuard {
        fn hold(path: &Path) -> RecordFileGuard {
            let f = File::open(path).unwrap();
            lock(&f).unwrap();
            RecordFileGuard { _file: f }
        }
    }
}
