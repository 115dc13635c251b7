//! The hub's ledger files (`meldnet-ledger`, opened as the hub's embedded
//! store opens them, with the hub's own indexes): the input is a manifest,
//! a run the manifest may name (`run-001-0000000001.run`) and the log
//! (`records.log`), each behind its length (4 bytes, little-endian; the
//! log takes the rest). Opening replays the log after the manifest's
//! checkpoint and reads the runs; then every index is walked and every body
//! read back and decoded as the hub decodes it. Damage must come back as an
//! error or a damage report, never as a panic or an unbounded allocation.

use afl::fuzz;
use meldnet_fuzz::{scratch_dir, write_file, MAX_INPUT};
use meldnet_hub::store::sled::ledger_indexes;
use meldnet_ledger::{Ledger, Options, Ptr};
use meldnet_proto::v1 as pb;
use prost::Message;

fn take<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let part = data.get(4..4 + len)?;
    *data = data.get(4 + len..)?;
    Some(part)
}

fn main() {
    let dir = scratch_dir();
    fuzz!(|data: &[u8]| {
        if data.len() > MAX_INPUT {
            return;
        }
        let mut rest = data;
        let (Some(manifest), Some(run)) = (take(&mut rest), take(&mut rest)) else {
            return;
        };
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        if !manifest.is_empty() {
            write_file(&dir, "MANIFEST", manifest);
        }
        if !run.is_empty() {
            write_file(&dir, "run-001-0000000001.run", run);
        }
        write_file(&dir, meldnet_ledger::LOG_FILE, rest);
        let options = Options {
            checkpoint_entries: 1 << 30,
            ..Default::default()
        };
        let Ok((ledger, _damage)) =
            Ledger::open(&dir, ledger_indexes(), rest.len() as u64, options)
        else {
            return;
        };
        for t in ledger_indexes() {
            let spec = t.spec();
            let from = vec![0u8; spec.key_len];
            let mut places = Vec::new();
            ledger.scan(spec.id, &from, None, &mut |k, v| {
                assert_eq!(k.len(), spec.key_len);
                assert_eq!(v.len(), spec.val_len);
                if spec.bodies {
                    places.push(Ptr::from_bytes(v).expect("a body's place is 12 bytes"));
                }
                places.len() < 10_000
            });
            for p in places {
                let _ = ledger.body_raw(spec.id, p);
                if let Ok(body) = ledger.body(spec.id, p) {
                    assert_eq!(body.len(), p.len as usize);
                    if let Ok(stored) = pb::StoredReport::decode(body.as_slice()) {
                        let _ = stored.encoded_len();
                    }
                }
            }
        }
        let _ = ledger.walk(&mut |_| Ok(()));
    });
}
