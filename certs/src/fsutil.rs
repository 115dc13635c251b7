//! File writing with the two properties the tool needs: a reader (the hub
//! re-reading `crl.pem`, a second run reading `issued.toml`) never sees a
//! half-written file, and private keys are never readable by others, not
//! even for a moment.

use crate::error::{CertsError, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Who may read a written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Certificates, configs, the ledger: readable as the umask allows.
    Public,
    /// Private keys: owner only (0600).
    Private,
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder,
/// fsync, rename over `path`, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Mode) -> Result<()> {
    let tmp = tmp_path(path);
    let result = write_then_rename(&tmp, path, bytes, mode);
    if result.is_err() {
        // Best effort: the temporary file is useless once the write failed.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_then_rename(tmp: &Path, path: &Path, bytes: &[u8], mode: Mode) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if mode == Mode::Private {
        opts.mode(0o600);
    }
    let mut f = opts.open(tmp).map_err(|e| CertsError::io(tmp, e))?;
    if mode == Mode::Private {
        // A left-over temporary file keeps its old mode; force it.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| CertsError::io(tmp, e))?;
    }
    f.write_all(bytes).map_err(|e| CertsError::io(tmp, e))?;
    f.sync_all().map_err(|e| CertsError::io(tmp, e))?;
    drop(f);
    std::fs::rename(tmp, path).map_err(|e| CertsError::io(path, e))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| CertsError::io(parent, e))?;
    }
    Ok(())
}

/// Creates `dir` and its parents.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| CertsError::io(dir, e))
}

/// Reads a text file, naming it in the error.
pub fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| CertsError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_owner_only_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        write_atomic(&p, b"one", Mode::Private).unwrap();
        write_atomic(&p, b"two", Mode::Private).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
    }
}
