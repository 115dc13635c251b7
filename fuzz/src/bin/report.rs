//! The report decoder: the exact bytes a node signs (`Report::decode`, as
//! the hub's ingest and every recipient run it), and the same bytes read as
//! a `SignedReport`, through the envelope, the decoder and the signature
//! check the hub makes (`Envelope::from_signed_report`, `lookup_key`,
//! `Envelope::verify`).

use afl::fuzz;
use meldnet_list::Query;
use meldnet_core::{lookup_key, Envelope};
use meldnet_core::Report;
use meldnet_core::Context;
use meldnet_core::normalize;
use meldnet_fuzz::{federation, MAX_INPUT, NOW_MS};
use meldnet_proto::v1 as pb;
use prost::Message;

fn main() {
    let fed = federation();
    let nl = fed.nl();
    fuzz!(|data: &[u8]| {
        if data.len() > MAX_INPUT {
            return;
        }
        if let Ok(report) = Report::decode(data) {
            // What validated once validates again from its own wire form.
            let again = Report::from_proto(&report.to_proto());
            assert_eq!(
                again.as_ref(),
                Ok(&report),
                "re-validating a decoded report"
            );
            let _ = report.check_times(NOW_MS);
            let _ = normalize(&report.url);
            for item in &report.items {
                let _ = Query::of_item(item);
            }
        }
        if let Ok(sr) = pb::SignedReport::decode(data) {
            if let Ok(env) = Envelope::from_signed_report(sr) {
                if let Ok(r) = Report::decode(&env.bytes) {
                    let _ = r.check_times(NOW_MS);
                }
                if let Ok(key) = lookup_key(&fed.keyring, &nl, env.key_id, "signed_report") {
                    let _ = env.verify(key, Context::Report, "signed_report");
                }
                let _ = env.digest();
                let _ = env.into_signed_report();
            }
        }
    });
}
