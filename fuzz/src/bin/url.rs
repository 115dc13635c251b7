//! The URL normaliser of deconfliction: a reported URL parsed as a report
//! carries it (`ReportUrl::parse`), then its one normal spelling
//! (`url_norm::normalize`). The input is the URL's text (not UTF-8: no
//! URL).
//!
//! Checked: the normal spelling is a fixed point. A report that gives the
//! normal spelling itself must land on the same case as one that gave
//! any other spelling of the location.

use afl::fuzz;
use meldnet_core::ReportUrl;
use meldnet_core::normalize;
use meldnet_fuzz::MAX_INPUT;

fn main() {
    fuzz!(|data: &[u8]| {
        if data.len() > MAX_INPUT {
            return;
        }
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Ok(url) = ReportUrl::parse(text) else {
            return;
        };
        let Ok(normal) = normalize(&url) else {
            return;
        };
        if let Ok(again) = ReportUrl::parse(normal.as_str()) {
            let twice = normalize(&again);
            assert_eq!(
                twice.as_ref(),
                Ok(&normal),
                "normalising {text:?} gave {normal}, which normalises otherwise"
            );
        }
    });
}
