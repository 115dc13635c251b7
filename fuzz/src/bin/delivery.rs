//! The delivery decoder: what a recipient (a node's inbox, a police
//! agency's `pull`) decodes from each `pb::Delivery` the hub streams:
//! `inbox::Stored::of`, then `inbox::Checked::verify` (the hub's signature
//! on the decision tree, the binding to the report bytes, `Report::decode`,
//! the node's signature; or the hub's signature on a notification).
//!
//! Forged input never gets past a signature, so the decoders behind them
//! are also run on the unverified parts: the decision and the report
//! (`Report::decode`, `pb::Decision`), the notification, and the JSON a
//! recipient renders of each (`inbox::describe`,
//! `series::describe_notification`): a hub's signed bytes must not be able
//! to crash a recipient either.

use afl::fuzz;
use meldnet_recipient::{describe, Checked, Stored};
use meldnet_core::{verify_decision, Envelope, Verified};
use meldnet_core::Report;
use meldnet_core::{describe_notification, verify_notification, VerifiedNotification};
use meldnet_fuzz::{federation, MAX_INPUT};
use meldnet_proto::v1 as pb;
use prost::Message;

fn main() {
    let fed = federation();
    let hub_key = fed.hub.public().id();
    fuzz!(|data: &[u8]| {
        if data.len() > MAX_INPUT {
            return;
        }
        let Ok(delivery) = pb::Delivery::decode(data) else {
            return;
        };
        let seq = delivery.seq;
        let Ok(stored) = Stored::of(delivery) else {
            return;
        };
        if let Ok(checked) = Checked::verify(&stored, &fed.keyring) {
            let _ = checked.line();
        }
        match &stored {
            Stored::Routed(sr, sd) => {
                let _ = verify_decision(sd, &fed.keyring);
                let Ok(env) = Envelope::from_signed_report(sr.clone()) else {
                    return;
                };
                let Ok(decision) = pb::Decision::decode(sd.decision.as_slice()) else {
                    return;
                };
                let Ok(report) = Report::decode(&env.bytes) else {
                    return;
                };
                let v = Verified {
                    report,
                    decision,
                    report_digest: env.digest(),
                    report_key: env.key_id,
                    decision_key: hub_key,
                };
                let _ = describe(&v, sr, sd, seq).to_string();
            }
            Stored::Notification(sn) => {
                let _ = verify_notification(sn, &fed.keyring);
                let Ok(notification) = pb::Notification::decode(sn.notification.as_slice()) else {
                    return;
                };
                let v = VerifiedNotification {
                    notification,
                    key_id: hub_key,
                };
                let _ = v.id();
                let _ = describe_notification(&v, sn, seq).to_string();
            }
        }
    });
}
