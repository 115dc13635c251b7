//! The Project VIC VICS JSON importer (`hash_import::vics_rows`), as
//! `meldnet-hub list import --format vics` streams an export: with the
//! default category mapping, every media item validated or refused.

use afl::fuzz;
use meldnet_list::{vics_default_categories, vics_rows};
use meldnet_fuzz::{check_entry, MAX_INPUT};

fn main() {
    let categories = vics_default_categories();
    fuzz!(|data: &[u8]| {
        if data.len() > MAX_INPUT {
            return;
        }
        let mut n = 0u64;
        let result = vics_rows(data, &categories, |row| {
            n += 1;
            match row {
                Ok(entry) => {
                    assert!(
                        entry.md5.is_some()
                            || entry.sha1.is_some()
                            || entry.sha256.is_some()
                            || entry.pdq.is_some(),
                        "an item without a hash was accepted"
                    );
                    check_entry(entry);
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        });
        if let Err(e) = result {
            let _ = e.to_string();
        }
    });
}
