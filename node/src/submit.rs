//! Sending signed reports to the hub as a stream of batches.
//!
//! `stream_batches` is the one sender: the outbox submit below and the
//! ingest benchmark's node workers both use it. A report leaves the outbox
//! only when its receipt has come back and its decision signature verified;
//! a report the hub could not store (UNAVAILABLE) stays for the next run.
//! Re-sending is always safe: the hub is idempotent by report id.

use crate::outbox::{Outbox, OutboxError};
use meldnet_core::limits::{MAX_MESSAGE_BYTES, MAX_SUBMIT_BATCH_BYTES};
use meldnet_core::verify_receipt;
use meldnet_core::Keyring;
use meldnet_core::ReportId;
use meldnet_core::Sha256;
use meldnet_proto::v1 as pb;
use meldnet_proto::v1::submission_client::SubmissionClient;
use std::time::Instant;
use tonic::transport::Channel;

/// Reports per `SubmitBatch`, at most (and `MAX_SUBMIT_BATCH_BYTES`).
pub const BATCH: usize = 256;

/// Cuts signed reports into batches of at most `BATCH` reports and
/// `MAX_SUBMIT_BATCH_BYTES` of report bytes, so that no batch can exceed what
/// the hub decodes. `size` says how large an item is.
pub fn cut_batches<T>(items: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0;
    for it in items {
        let n = size(&it);
        if !cur.is_empty() && (cur.len() == BATCH || bytes + n > MAX_SUBMIT_BATCH_BYTES) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += n;
        cur.push(it);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Whether a refusal is final: the report itself is wrong, and sending it
/// again cannot help. Anything else (the hub could not store, a key not yet
/// registered, a limit) leaves the report in the outbox.
pub fn is_final(refusal: &pb::Refusal) -> bool {
    use tonic::Code;
    [
        Code::InvalidArgument,
        Code::AlreadyExists,
        Code::PermissionDenied,
    ]
    .iter()
    .any(|c| *c as i32 == refusal.code)
}
/// Batches sent ahead of their answers.
pub const IN_FLIGHT: usize = 8;

/// Streams `batches` to the hub in order, as fast as the hub answers, and
/// calls `on_answer(batch index, answer, when the batch was sent)` for each
/// answer, in order. Returns how many batches were answered.
pub async fn stream_batches<F>(
    channel: Channel,
    batches: impl IntoIterator<Item = pb::SubmitBatch> + Send + 'static,
    on_answer: F,
) -> Result<usize, tonic::Status>
where
    F: FnMut(usize, pb::SubmitResults, Instant),
{
    stream_batches_every(channel, batches, None, on_answer).await
}

/// As [`stream_batches`], but with `every` set, batch `i` is due `i * every`
/// after the start (an offered load) and its time is when it was due, not
/// when the window let it go: a hub that falls behind shows as latency.
pub async fn stream_batches_every<F>(
    channel: Channel,
    batches: impl IntoIterator<Item = pb::SubmitBatch> + Send + 'static,
    every: Option<std::time::Duration>,
    mut on_answer: F,
) -> Result<usize, tonic::Status>
where
    F: FnMut(usize, pb::SubmitResults, Instant),
{
    let mut client = SubmissionClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let (tx, rx) = tokio::sync::mpsc::channel(IN_FLIGHT);
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel();
    let batches: Vec<pb::SubmitBatch> = batches.into_iter().collect();
    tokio::spawn(async move {
        let start = Instant::now();
        for (i, b) in batches.into_iter().enumerate() {
            let due = every.map(|d| start + d.saturating_mul(i as u32));
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
            }
            if tx.send(b).await.is_err() {
                return;
            }
            if sent_tx.send(due.unwrap_or_else(Instant::now)).is_err() {
                return;
            }
        }
    });
    let mut results = client
        .submit_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut answered = 0;
    while let Some(res) = results.message().await? {
        let sent_at = sent_rx.recv().await.unwrap_or_else(Instant::now);
        on_answer(answered, res, sent_at);
        answered += 1;
    }
    Ok(answered)
}

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
    let total = pending.len();
    let mut summary = SubmitSummary::default();
    // What each batch held: ids and the digests the receipts must match.
    let mut sent: Vec<Vec<(ReportId, Sha256)>> = Vec::new();
    let mut batches = Vec::new();
    for chunk in cut_batches(pending, |(_, sr)| sr.report.len()) {
        sent.push(
            chunk
                .iter()
                .map(|(id, sr)| (*id, Sha256::of(&sr.report)))
                .collect(),
        );
        batches.push(pb::SubmitBatch {
            reports: chunk.into_iter().map(|(_, sr)| sr).collect(),
        });
    }
    let mut settle_error = None;
    let mut settled = 0;
    let stream = stream_batches(channel, batches, |i, res, _| {
        let mut receipts = Vec::new();
        let mut refused = Vec::new();
        for r in res.results {
            let Some((id, digest)) = sent.get(i).and_then(|b| b.get(r.index as usize)) else {
                continue;
            };
            match r.outcome {
                Some(pb::submit_result::Outcome::Receipt(receipt)) => {
                    match verify_receipt(&receipt, digest, keyring) {
                        Ok(decision) => {
                            summary.accepted.push((*id, decision));
                            receipts.push((*id, receipt));
                        }
                        Err(e) => {
                            tracing::error!(report = %id, error = %e, "receipt does not verify; report stays in the outbox");
                        }
                    }
                }
                Some(pb::submit_result::Outcome::Refusal(refusal)) if is_final(&refusal) => {
                    summary.refused.push((*id, refusal.clone()));
                    refused.push((*id, refusal));
                }
                // Not final: the report stays in the outbox.
                Some(pb::submit_result::Outcome::Refusal(_)) | None => {}
            }
        }
        settled += receipts.len() + refused.len();
        if settle_error.is_none() {
            if let Err(e) = outbox.settle(receipts, refused) {
                settle_error = Some(e);
            }
        }
    })
    .await;
    if let Some(e) = settle_error {
        return Err(e.into());
    }
    stream?;
    summary.retry = total - settled;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_by_count_and_bytes() {
        let small: Vec<usize> = vec![10; 600];
        let b = cut_batches(small, |n| *n);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [256, 256, 88]);
        let big: Vec<usize> = vec![3 * 1024 * 1024; 5];
        let b = cut_batches(big, |n| *n);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        assert!(b
            .iter()
            .all(|c| c.iter().sum::<usize>() <= MAX_SUBMIT_BATCH_BYTES));
        // One item larger than the budget still travels, alone.
        let b = cut_batches(vec![MAX_SUBMIT_BATCH_BYTES + 1, 1], |n| *n);
        assert_eq!(b.len(), 2);
    }
}
