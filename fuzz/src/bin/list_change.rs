//! The list-change decoder: one change of the known-hash list as a node
//! receives it from the hub (`hash_list::Change::decode`), and the chained
//! digest it is folded into.

use afl::fuzz;
use meldnet_list::{chain, Change, ChangeKind, KnownSet, Query, Tip};
use meldnet_fuzz::MAX_INPUT;

fn main() {
    fuzz!(|data: &[u8]| {
        if data.len() > MAX_INPUT {
            return;
        }
        let Ok(change) = Change::decode(data) else {
            return;
        };
        // The one encoding that is stored, hashed and sent decodes to the
        // same change.
        let bytes = change.encode();
        assert_eq!(
            Change::decode(&bytes).as_ref(),
            Ok(&change),
            "change round trip"
        );
        let _ = chain(&[0; 32], &bytes);
        // The first change of a list (version 1, what `check_batch` lets
        // through first) applied to an empty set: an entry added is known.
        if let (ChangeKind::Add(entry), 1) = (&change.kind, change.version) {
            let mut set = KnownSet::default();
            let next = Tip::default().after(&change, &bytes).expect("one entry");
            set.apply(std::slice::from_ref(&change), next);
            if entry.sha256.is_some() || entry.md5.is_some() || entry.sha1.is_some() {
                assert_eq!(set.duplicate_of(entry), Some(1), "an added entry is listed");
                let q = Query {
                    sha256: entry.sha256,
                    md5: entry.md5,
                    sha1: entry.sha1,
                    pdq: None,
                };
                assert!(set.check(&q).is_some(), "an added entry is known");
            }
            let _ = set.check(&Query {
                pdq: entry.pdq,
                ..Query::default()
            });
        }
    });
}
