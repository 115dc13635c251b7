//! The CSV importer of known-hash lists (`hash_import::csv_rows`), as
//! `meldnet-hub list import` reads an operator's file: with the default
//! column mapping, every row validated or refused with its line.

use afl::fuzz;
use meldnet_list::{csv_rows, CsvMapping};
use meldnet_fuzz::{check_entry, MAX_INPUT};

fn main() {
    let mapping = CsvMapping::default();
    fuzz!(|data: &[u8]| {
        if data.len() > MAX_INPUT {
            return;
        }
        let Ok(rows) = csv_rows(data, &mapping) else {
            return;
        };
        let mut last_line = 0;
        for row in rows {
            match row {
                Ok(entry) => {
                    assert!(
                        entry.md5.is_some()
                            || entry.sha1.is_some()
                            || entry.sha256.is_some()
                            || entry.pdq.is_some(),
                        "a row without a hash was accepted"
                    );
                    assert!(entry.line >= last_line, "rows out of order");
                    last_line = entry.line;
                    check_entry(entry);
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    });
}
