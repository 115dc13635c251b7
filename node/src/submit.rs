//! Sending the outbox to the hub as a stream of batches. A report leaves the
//! outbox only when its receipt has come back and its decision signature
//! verified; a report the hub could not store (UNAVAILABLE) stays for the
//! next run. Re-sending is always safe: the hub is idempotent by report id.

use crate::outbox::{Outbox, OutboxError};
use meldnet_core::keyring::Keyring;
use meldnet_core::limits::MAX_MESSAGE_BYTES;
use meldnet_core::provenance::verify_receipt;
use meldnet_core::report::ReportId;
use meldnet_proto::v1 as pb;
use meldnet_proto::v1::submission_client::SubmissionClient;
use std::collections::VecDeque;
use tonic::transport::Channel;

/// Reports per `SubmitBatch`.
pub const BATCH: usize = 256;

/// What a submit run did.
#[derive(Debug, Default)]
pub struct SubmitSummary {
    /// Receipted now, with the hub's decision.
    pub accepted: Vec<(ReportId, pb::Decision)>,
    /// Refused for good, with the reason.
    pub refused: Vec<(ReportId, pb::Refusal)>,
    /// Left in the outbox to try again.
    pub retry: usize,
}

/// Why a submit run stopped.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The node's store failed.
    #[error(transparent)]
    Store(#[from] OutboxError),
    /// The hub refused the stream or it broke.
    #[error("submission stream: {0}")]
    Stream(#[from] tonic::Status),
}

/// Sends every outbox entry and settles the answers.
pub async fn submit_outbox(
    outbox: &Outbox,
    channel: Channel,
    keyring: &Keyring,
) -> Result<SubmitSummary, SubmitError> {
    let pending = outbox.outbox()?;
    let mut summary = SubmitSummary::default();
    if pending.is_empty() {
        return Ok(summary);
    }
    let mut client = SubmissionClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let batches: Vec<Vec<(ReportId, pb::SignedReport)>> =
        pending.chunks(BATCH).map(|c| c.to_vec()).collect();
    let mut in_flight: VecDeque<Vec<(ReportId, pb::SignedReport)>> =
        batches.iter().cloned().collect();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        for b in batches {
            let msg = pb::SubmitBatch {
                reports: b.into_iter().map(|(_, sr)| sr).collect(),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    });
    let mut results = client
        .submit_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    while let Some(res) = results.message().await? {
        let Some(sent) = in_flight.pop_front() else {
            break;
        };
        let mut receipts = Vec::new();
        let mut refused = Vec::new();
        for r in res.results {
            let Some((id, sr)) = sent.get(r.index as usize) else {
                continue;
            };
            match r.outcome {
                Some(pb::submit_result::Outcome::Receipt(receipt)) => {
                    match verify_receipt(&receipt, sr, keyring) {
                        Ok(decision) => {
                            summary.accepted.push((*id, decision));
                            receipts.push((*id, receipt));
                        }
                        Err(e) => {
                            tracing::error!(report = %id, error = %e, "receipt does not verify; report stays in the outbox");
                            summary.retry += 1;
                        }
                    }
                }
                Some(pb::submit_result::Outcome::Refusal(refusal)) => {
                    if refusal.code == tonic::Code::Unavailable as i32 {
                        summary.retry += 1;
                    } else {
                        summary.refused.push((*id, refusal.clone()));
                        refused.push((*id, refusal));
                    }
                }
                None => summary.retry += 1,
            }
        }
        outbox.settle(receipts, refused)?;
        if in_flight.is_empty() {
            break;
        }
    }
    summary.retry += in_flight.iter().map(Vec::len).sum::<usize>();
    Ok(summary)
}
