//! The file operations that the append-only stores share (the recipients'
//! delivery log, the hub's blob file): open for appending without losing
//! what is there, cut back a tail that no durable state points to, and make
//! a new file's name itself durable.

use std::fs::{File, OpenOptions};
use std::path::Path;

/// Opens `path` for reading and writing, creating it, never truncating.
pub fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Cuts `file` back to `keep` bytes when it is longer (a tail written by a
/// commit or batch that never completed, so never acknowledged), and syncs.
/// `what` says in the log what is dropped. Returns the bytes dropped.
pub fn cut_back(file: &File, path: &Path, keep: u64, what: &str) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    if len <= keep {
        return Ok(0);
    }
    tracing::warn!(file = %path.display(), dropped = len - keep, "dropping {what}");
    file.set_len(keep)?;
    file.sync_all()?;
    Ok(len - keep)
}

/// Syncs a folder, so that a file created in it survives a crash by name.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes a whole small file durably: a temporary file beside it, synced,
/// renamed over `path`, the folder synced. A crash leaves the old file or
/// the new one, never half of one.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_back_only_shortens() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = open_rw(&p).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"0123456789", 0).unwrap();
        assert_eq!(cut_back(&f, &p, 20, "nothing").unwrap(), 0);
        assert_eq!(cut_back(&f, &p, 4, "a test tail").unwrap(), 6);
        drop(f);
        assert_eq!(std::fs::read(&p).unwrap(), b"0123");
        assert_eq!(
            open_rw(&p).unwrap().metadata().unwrap().len(),
            4,
            "reopening keeps the content"
        );
        sync_dir(dir.path()).unwrap();
    }
}
