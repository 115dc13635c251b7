//! The case-step decoder: a node's signed notice-and-takedown step as the
//! hub's `Cases.RecordStep` reads it (`Envelope::from_signed_step`,
//! `CaseStep::decode`, the node's signature), and the step bytes alone.

use afl::fuzz;
use meldnet_core::CaseStep;
use meldnet_core::{lookup_key, Envelope};
use meldnet_core::Context;
use meldnet_fuzz::{federation, MAX_INPUT};
use meldnet_proto::v1 as pb;
use prost::Message;

fn main() {
    let fed = federation();
    let nl = fed.nl();
    fuzz!(|data: &[u8]| {
        if data.len() > MAX_INPUT {
            return;
        }
        if let Ok(step) = CaseStep::decode(data) {
            // The wire form of a valid step is canonical and decodes to it.
            let bytes = step.to_proto().encode_to_vec();
            assert_eq!(
                CaseStep::decode(&bytes).as_ref(),
                Ok(&step),
                "step round trip"
            );
            let _ = step.describe();
        }
        if let Ok(signed) = pb::SignedCaseStep::decode(data) {
            if let Ok(env) = Envelope::from_signed_step(signed) {
                if let Ok(step) = CaseStep::decode(&env.bytes) {
                    let _ = step.describe();
                }
                if let Ok(key) = lookup_key(&fed.keyring, &nl, env.key_id, "signed_step") {
                    let _ = env.verify(key, Context::CaseStep, "signed_step");
                }
                let _ = env.into_signed_step();
            }
        }
    });
}
