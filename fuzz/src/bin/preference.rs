//! The victim-preference decoder: a representative's choice for a series
//! as the hub's `Victims.SetPreference` validates it
//! (`Preference::from_proto`), and the series hashes an agency sends
//! (`SeriesHashes::from_proto`, as `AddHashes` reads `pb::SeriesHashes`).

use afl::fuzz;
use meldnet_core::{DigestCalendar, Preference, SeriesHashes, SeriesId};
use meldnet_fuzz::{MAX_INPUT, NOW_MS};
use meldnet_proto::v1 as pb;
use prost::Message;

fn main() {
    fuzz!(|data: &[u8]| {
        if data.len() > MAX_INPUT {
            return;
        }
        if let Ok(p) = pb::Preference::decode(data) {
            if let Ok((series, pref)) = Preference::from_proto(&p) {
                // What validated once validates again from its wire form.
                let wire = pref.to_proto(&series);
                let again = Preference::from_proto(&wire).expect("a valid preference's wire form");
                assert_eq!(again, (series, pref), "preference round trip");
                let _ = pref.describe();
                if let Preference::Digest { period, cap } = pref {
                    let cal = DigestCalendar { period, cap };
                    let b = cal.last_boundary(NOW_MS);
                    assert!(b <= NOW_MS, "a boundary after now");
                    let _ = cal.period_of(b);
                }
            }
        }
        if let Ok(req) = pb::SeriesHashes::decode(data) {
            let _ = SeriesId::parse_field(&req.series_id, "series_id");
            if let Ok(h) = SeriesHashes::from_proto(&req.hashes) {
                assert!(
                    !h.sha256.is_empty() || !h.pdq.is_empty(),
                    "hashes without a hash"
                );
                assert!(h.pdq.iter().all(|(_, q)| *q <= 100), "a quality over 100");
            }
        }
    });
}
