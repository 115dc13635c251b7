//! Bounds on everything that crosses the wire. They make sure no message can
//! carry media bytes and no client can make the hub allocate without limit.

pub use meldnet_proto::limits::*;

/// Largest encoded `Report` the hub accepts.
pub const MAX_REPORT_BYTES: usize = 256 * 1024;
/// Largest number of items in one report.
pub const MAX_ITEMS: usize = 1000;
/// Largest URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Largest gRPC message a server or client decodes (tonic's
/// `max_decoding_message_size`); a larger frame is refused by the transport.
/// Senders keep below it by size, not only by count: nodes cut submission
/// batches at `MAX_SUBMIT_BATCH_BYTES`, the hub cuts delivery batches at
/// `MAX_DELIVERY_BATCH_BYTES` (one report plus its decision always fits).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Encoded reports a node puts in one `SubmitBatch`, at most.
pub const MAX_SUBMIT_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Stored records the hub puts in one `DeliveryBatch`, at most (past the first).
pub const MAX_DELIVERY_BATCH_BYTES: usize = 4 * 1024 * 1024;
