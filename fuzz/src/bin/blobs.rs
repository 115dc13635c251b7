//! The hub's blob reader (`hub::blobs`): the input is a 12-byte pointer as
//! sled keeps it, then the content of `reports.blobs`. The pointer is read
//! as the store reads it (`BlobRef::from_bytes`, `BlobFile::read` and
//! `read_raw`, then the body decoded as a `pb::StoredReport`), and so is
//! every record found by walking the file from its start.

use afl::fuzz;
use meldnet_fuzz::{scratch_dir, write_file, MAX_INPUT};
use meldnet_hub::blobs::{BlobFile, BlobRef, BLOB_FILE};
use meldnet_proto::v1 as pb;
use prost::Message;

fn read(blobs: &BlobFile, r: BlobRef) {
    let _ = blobs.read_raw(r);
    if let Ok(body) = blobs.read(r) {
        assert_eq!(body.len(), r.len as usize);
        if let Ok(stored) = pb::StoredReport::decode(body.as_slice()) {
            let _ = stored.encoded_len();
        }
    }
}

fn main() {
    let dir = scratch_dir();
    fuzz!(|data: &[u8]| {
        if data.len() > MAX_INPUT || data.len() < 12 {
            return;
        }
        let (pointer, file) = data.split_at(12);
        write_file(&dir, BLOB_FILE, file);
        let Ok(blobs) = BlobFile::open(&dir, file.len() as u64) else {
            return;
        };
        if let Some(r) = BlobRef::from_bytes(pointer) {
            assert_eq!(BlobRef::from_bytes(&r.to_bytes()), Some(r));
            read(&blobs, r);
        }
        let mut at = 0u64;
        while at + 8 <= file.len() as u64 {
            let h = &file[at as usize..at as usize + 4];
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            if at + 8 + u64::from(len) > file.len() as u64 {
                break;
            }
            read(&blobs, BlobRef { offset: at, len });
            at += 8 + u64::from(len);
        }
    });
}
