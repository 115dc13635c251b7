//! The manifest: which runs make each index, and up to where in the log
//! they hold its changes (the checkpoint). Replaced whole (written beside,
//! synced, renamed, the folder synced), so that after a crash it is the
//! old one or the new one, never a mixture. Text, so that an operator can
//! read it; its last line is a checksum of the lines before.

use std::path::Path;

/// The manifest's name in the ledger's folder.
pub const MANIFEST: &str = "MANIFEST";
const FIRST_LINE: &str = "meldnet-ledger manifest 1";

/// One run as the manifest names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunName {
    /// Its index.
    pub index: u8,
    /// Its number (unique in the folder).
    pub number: u64,
}

impl RunName {
    /// Its file's name.
    pub fn file(&self) -> String {
        format!("run-{:03}-{:010}.run", self.index, self.number)
    }

    /// The run a file name names, if it names one.
    pub fn parse(file: &str) -> Option<RunName> {
        let rest = file.strip_prefix("run-")?.strip_suffix(".run")?;
        let (index, number) = rest.split_once('-')?;
        Some(RunName {
            index: index.parse().ok()?,
            number: number.parse().ok()?,
        })
    }
}

/// What the manifest says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Every change before this place in the log is in the runs.
    pub checkpoint: u64,
    /// The next run's number.
    pub next: u64,
    /// The runs, each index's oldest first.
    pub runs: Vec<RunName>,
}

/// Why a manifest cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The manifest.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Its lines are not a manifest.
    #[error("{path}: damaged manifest (line {line}): {reason}")]
    Damaged {
        /// The manifest.
        path: String,
        /// The line.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Manifest {
    fn text(&self) -> String {
        let mut s = format!(
            "{FIRST_LINE}\ncheckpoint {}\nnext {}\n",
            self.checkpoint, self.next
        );
        for r in &self.runs {
            s.push_str(&format!("run {} {}\n", r.index, r.number));
        }
        s
    }

    /// Reads the manifest in `dir` (none there: an empty ledger).
    pub fn read(dir: &Path) -> Result<Option<Manifest>, ManifestError> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ManifestError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let damaged = |line: usize, reason| ManifestError::Damaged {
            path: path.display().to_string(),
            line,
            reason,
        };
        let text = String::from_utf8(text).map_err(|_| damaged(0, "not UTF-8"))?;
        let (body, last) = text
            .trim_end_matches('\n')
            .rsplit_once('\n')
            .ok_or_else(|| damaged(1, "too short"))?;
        let body = format!("{body}\n");
        let crc = last
            .strip_prefix("crc ")
            .and_then(|c| u32::from_str_radix(c, 16).ok())
            .ok_or_else(|| damaged(body.lines().count() + 1, "no checksum line"))?;
        if crc32fast::hash(body.as_bytes()) != crc {
            return Err(damaged(body.lines().count() + 1, "the checksum fails"));
        }
        let mut m = Manifest::default();
        for (i, line) in body.lines().enumerate() {
            let words: Vec<&str> = line.split(' ').collect();
            let num = |w: Option<&&str>| w.and_then(|w| w.parse::<u64>().ok());
            match words.as_slice() {
                _ if i == 0 => {
                    if line != FIRST_LINE {
                        return Err(damaged(1, "not a ledger manifest of this version"));
                    }
                }
                ["checkpoint", _] => {
                    m.checkpoint = num(words.get(1)).ok_or_else(|| damaged(i + 1, "checkpoint"))?
                }
                ["next", _] => m.next = num(words.get(1)).ok_or_else(|| damaged(i + 1, "next"))?,
                ["run", _, _] => m.runs.push(RunName {
                    index: words
                        .get(1)
                        .and_then(|w| w.parse().ok())
                        .ok_or_else(|| damaged(i + 1, "run index"))?,
                    number: num(words.get(2)).ok_or_else(|| damaged(i + 1, "run number"))?,
                }),
                _ => return Err(damaged(i + 1, "unknown line")),
            }
        }
        Ok(Some(m))
    }

    /// Replaces the manifest in `dir` with this one, durably.
    pub fn write(&self, dir: &Path) -> Result<(), ManifestError> {
        let path = dir.join(MANIFEST);
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        let io = |source| ManifestError::Io {
            path: path.display().to_string(),
            source,
        };
        let body = self.text();
        let text = format!("{body}crc {:08x}\n", crc32fast::hash(body.as_bytes()));
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        meldnet_core::append_file::sync_dir(dir).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), None);
        let m = Manifest {
            checkpoint: 12345,
            next: 9,
            runs: vec![
                RunName {
                    index: 1,
                    number: 3,
                },
                RunName {
                    index: 2,
                    number: 8,
                },
            ],
        };
        m.write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), Some(m.clone()));
        assert_eq!(RunName::parse(&m.runs[0].file()), Some(m.runs[0]));
        let path = dir.path().join(MANIFEST);
        let good = std::fs::read(&path).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x02;
            std::fs::write(&path, &bad).unwrap();
            assert!(Manifest::read(dir.path()).is_err(), "byte {at}");
        }
    }
}
