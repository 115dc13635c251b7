//! Hashing files where they are: SHA-256 and MD5 in one streaming pass
//! (constant memory, whatever the file size). Only hashes leave the node.

use meldnet_core::MediaType;
use meldnet_core::{Md5, Sha256};
use sha2::Digest;
use std::io::Read;
use std::path::Path;

/// The exact hashes of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHashes {
    /// SHA-256.
    pub sha256: Sha256,
    /// MD5.
    pub md5: Md5,
    /// Bytes read.
    pub size: u64,
}

/// Reads `path` once, feeding both digests.
pub fn hash_file(path: &Path) -> std::io::Result<FileHashes> {
    let mut f = std::fs::File::open(path)?;
    let mut sha = sha2::Sha256::new();
    let mut md5 = md5::Md5::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let read = buf.get(..n).unwrap_or_default();
        sha.update(read);
        md5.update(read);
        size += n as u64;
    }
    Ok(FileHashes {
        sha256: Sha256(sha.finalize().into()),
        md5: Md5(md5.finalize().into()),
        size,
    })
}

/// The media type guessed from the file name, for when the analyst gives none.
pub fn media_type_of(path: &Path) -> MediaType {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" | "png" | "gif" | "bmp" | "webp" | "tif" | "tiff" | "heic" => {
            MediaType::Image
        }
        "mp4" | "mov" | "avi" | "mkv" | "webm" | "wmv" | "flv" | "m4v" | "mpg" | "mpeg" => {
            MediaType::Video
        }
        _ => MediaType::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc.jpg");
        std::fs::write(&p, b"abc").unwrap();
        let h = hash_file(&p).unwrap();
        assert_eq!(
            h.sha256.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.md5.to_hex(), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(h.size, 3);
        assert_eq!(media_type_of(&p), MediaType::Image);
        assert_eq!(media_type_of(Path::new("a.MP4")), MediaType::Video);
    }
}
