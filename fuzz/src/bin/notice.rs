//! The notice decoders: a node's signed notice as a provider verifies it
//! offline (`verify_notice`), the notice bytes alone, a provider's answer as
//! the node reads it (`NoticeAnswer::from_proto`), and the node's signed
//! answer record as a provider verifies it.

use afl::fuzz;
use meldnet_core::{verify_answer_record, verify_notice, AnswerRecord, Notice, NoticeAnswer};
use meldnet_fuzz::{federation, MAX_INPUT};
use meldnet_proto::v1 as pb;
use prost::Message;

fn main() {
    let fed = federation();
    fuzz!(|data: &[u8]| {
        if data.len() > MAX_INPUT {
            return;
        }
        if let Ok(n) = Notice::decode(data) {
            // The wire form of a valid notice is canonical and decodes to it.
            let bytes = n.to_proto().encode_to_vec();
            assert_eq!(Notice::decode(&bytes).as_ref(), Ok(&n), "notice round trip");
            let _ = n.render_text(&pb::SignedNotice::default());
        }
        if let Ok(signed) = pb::SignedNotice::decode(data) {
            let _ = verify_notice(&signed, &fed.keyring);
        }
        if let Ok(raw) = pb::NoticeAnswer::decode(data) {
            if let Ok(a) = NoticeAnswer::from_proto(&raw) {
                assert_eq!(
                    NoticeAnswer::from_proto(&a.to_proto()).as_ref(),
                    Ok(&a),
                    "answer round trip"
                );
            }
        }
        let _ = AnswerRecord::decode(data);
        if let Ok(signed) = pb::SignedAnswerRecord::decode(data) {
            let _ = verify_answer_record(&signed, &fed.keyring);
        }
    });
}
