//! The codec every `meldnet.v1` service and client uses: prost's encoding,
//! with two checks before a message is decoded.
//!
//! Why: prost allocates a value for every entry of a repeated field, so a
//! 4 MiB message of two-byte empty entries became hundreds of megabytes
//! before any handler could look at it. Each message type declares the most
//! entries its repeated fields may hold ([`WireLimits`]); the encoded bytes
//! are scanned first and a message over a limit is refused, naming the
//! field, without decoding anything. And a message that does not decode is
//! the client's error (`INVALID_ARGUMENT`, naming the message), not the
//! server's (`INTERNAL`, which is what prost's codec says).

use crate::limits::*;
use crate::v1 as pb;
use prost::bytes::Buf;
use prost::Message;
use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;

/// A repeated field's limit: its field number, the most entries, and its
/// name as refusals give it.
#[derive(Debug, Clone, Copy)]
pub struct Repeated {
    /// The field number.
    pub field: u32,
    /// The most occurrences on the wire.
    pub max: usize,
    /// `message.field`, for the refusal.
    pub name: &'static str,
}

/// What a message type may hold, checked before decoding. Every message
/// sent or received through a service implements it, so a new message
/// cannot be added without saying its limits.
pub trait WireLimits {
    /// Its repeated fields of messages, strings or bytes, with their limits
    /// (repeated numbers are bounded by the message's size alone).
    const REPEATED: &'static [Repeated] = &[];
}

macro_rules! limits {
    ($($msg:ident $({ $($field:literal => $max:expr, $name:literal);* $(;)? })?),* $(,)?) => {
        $(impl WireLimits for pb::$msg {
            $(const REPEATED: &'static [Repeated] = &[
                $(Repeated { field: $field, max: $max, name: $name }),*
            ];)?
        })*
    };
}

limits! {
    SignedReport, Receipt,
    SubmitBatch { 1 => MAX_BATCH_REPORTS, "submit_batch.reports" },
    SubmitResults { 1 => MAX_BATCH_REPORTS, "submit_results.results" },
    DeliveryAck {
        1 => MAX_ACKS, "delivery_ack.seqs";
        2 => MAX_REJECTIONS, "delivery_ack.rejected";
    },
    DeliveryBatch {
        1 => MAX_DELIVERY_BATCH, "delivery_batch.deliveries";
        3 => MAX_ACKS, "delivery_batch.acked";
    },
    StateDigestRequest, StateDigestResponse, VerifyAuditRequest, VerifyAuditResponse,
    ListAddRequest { 1 => MAX_ADD_BATCH, "list_add_request.entries" },
    ListAddResponse {
        1 => MAX_ADD_BATCH, "list_add_response.versions";
        2 => MAX_ADD_BATCH, "list_add_response.duplicate";
    },
    ListWithdrawRequest, ListWithdrawResponse, ListStatusRequest, SignedListHead,
    AdvanceClockRequest, AdvanceClockResponse, GetRulesRequest, RoutingRules,
    ExplainRequest, Explanation, StatsRequest, StatsResponse,
    Registration { 2 => MAX_KEYS, "registration.signing_keys" },
    RevokeRequest, ListRegistryRequest, RegistryList, SplitRequest, SplitResponse,
    SignedCaseStep, CaseStepReceipt,
    SyncRequest,
    SyncBatch { 1 => SYNC_BATCH, "sync_batch.changes" },
    CheckRequest { 1 => MAX_CHECK_BATCH, "check_request.queries" },
    CheckResponse { 1 => MAX_CHECK_BATCH, "check_response.answers" },
    SeriesHashes { 2 => MAX_SERIES_HASHES, "series_hashes.hashes" },
    SeriesView, SeriesLink, ProceedingsMark, ProceedingsMarked, Preference,
    LinkedRequest, LinkedSeries,
    NoticeAck { 1 => MAX_NOTICE_ACKS, "notice_ack.stored" },
    NoticeBatch { 1 => MAX_NOTICE_BATCH, "notice_batch.notices" },
    NoticeAnswer, SignedAnswerRecord, SignedStatsExport,
}

/// Reads a varint from the front of `b`, or `None` if it runs out.
fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Counts the top-level occurrences of each limited field of `M` in its
/// encoding and refuses a message over a limit. Malformed input is left for
/// the decoder to name.
pub fn check_counts<M: WireLimits>(mut b: &[u8]) -> Result<(), Status> {
    if M::REPEATED.is_empty() {
        return Ok(());
    }
    let mut counts = vec![0usize; M::REPEATED.len()];
    while !b.is_empty() {
        let Some(tag) = varint(&mut b) else {
            return Ok(());
        };
        let field = (tag >> 3) as u32;
        let skip = match tag & 7 {
            0 => {
                if varint(&mut b).is_none() {
                    return Ok(());
                }
                0
            }
            1 => 8,
            2 => match varint(&mut b).and_then(|n| usize::try_from(n).ok()) {
                Some(n) => n,
                None => return Ok(()),
            },
            5 => 4,
            // Groups are not proto3, and prost skips an unknown one whole:
            // counting would stop there while decoding went on.
            3 | 4 => {
                return Err(Status::invalid_argument(format!(
                    "{}: a group (wire type {}), which proto3 does not have",
                    message_name::<M>(),
                    tag & 7
                )))
            }
            _ => return Ok(()),
        };
        if let Some((limit, n)) = M::REPEATED
            .iter()
            .zip(counts.iter_mut())
            .find(|(r, _)| r.field == field)
        {
            *n += 1;
            if *n > limit.max {
                return Err(Status::invalid_argument(format!(
                    "{}: more than {} entries",
                    limit.name, limit.max
                )));
            }
        }
        match b.get(skip..) {
            Some(rest) => b = rest,
            None => return Ok(()),
        }
    }
    Ok(())
}

/// The name of message type `M`, for errors.
fn message_name<M>() -> &'static str {
    let full = std::any::type_name::<M>();
    full.rsplit("::").next().unwrap_or(full)
}

/// prost's codec with the checks above; used by the generated services and
/// clients (`codec_path` in `build.rs`).
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        BoundedCodec(PhantomData)
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + WireLimits + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder(PhantomData)
    }
}

/// Decodes `U` after [`check_counts`]; a decode failure is `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct BoundedDecoder<U>(PhantomData<U>);

impl<U: Message + Default + WireLimits> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let refused = |e: prost::DecodeError| {
            Status::invalid_argument(format!("{}: {e}", message_name::<U>()))
        };
        if buf.chunk().len() == buf.remaining() {
            check_counts::<U>(buf.chunk())?;
            U::decode(buf).map(Some).map_err(refused)
        } else {
            let bytes = buf.copy_to_bytes(buf.remaining());
            check_counts::<U>(&bytes)?;
            U::decode(bytes).map(Some).map_err(refused)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_of_empty_entries_is_refused_before_decoding() {
        let mut wire = Vec::new();
        for _ in 0..=MAX_ADD_BATCH {
            wire.extend_from_slice(&[0x0a, 0x00]);
        }
        let e = check_counts::<pb::ListAddRequest>(&wire).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            e.message(),
            "list_add_request.entries: more than 4096 entries"
        );
        wire.truncate(2 * MAX_ADD_BATCH);
        assert!(check_counts::<pb::ListAddRequest>(&wire).is_ok());
    }

    #[test]
    fn a_group_cannot_hide_the_entries_after_it() {
        let mut wire = vec![0x7b, 0x7c];
        wire.extend(std::iter::repeat_n([0x0a, 0x00], 10).flatten());
        let e = check_counts::<pb::ListAddRequest>(&wire).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("group"), "{e:?}");
    }

    #[test]
    fn counts_follow_the_fields_of_a_real_encoding() {
        let batch = pb::SubmitBatch {
            reports: vec![pb::SignedReport::default(); MAX_BATCH_REPORTS + 1],
        };
        let e = check_counts::<pb::SubmitBatch>(&batch.encode_to_vec()).unwrap_err();
        assert!(e.message().starts_with("submit_batch.reports"), "{e:?}");
        let ack = pb::DeliveryAck {
            seqs: vec![u64::MAX; 10_000],
            ..Default::default()
        };
        // Packed numbers are one field occurrence: bounded by size alone.
        assert!(check_counts::<pb::DeliveryAck>(&ack.encode_to_vec()).is_ok());
        assert!(check_counts::<pb::SignedReport>(&[0xff; 16]).is_ok());
    }
}
