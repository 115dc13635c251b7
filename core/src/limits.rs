//! Bounds on everything that crosses the wire. They make sure no message can
//! carry media bytes and no client can make the hub allocate without limit.

/// Largest encoded `Report` the hub accepts.
pub const MAX_REPORT_BYTES: usize = 256 * 1024;
/// Largest number of items in one report.
pub const MAX_ITEMS: usize = 1000;
/// Largest URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Largest number of reports in one `SubmitBatch`.
pub const MAX_BATCH_REPORTS: usize = 1024;
/// Largest gRPC message a server or client decodes (tonic's
/// `max_decoding_message_size`). A full batch of large reports is refused by
/// `MAX_BATCH_REPORTS`/`MAX_REPORT_BYTES` long before it could be this large
/// in practice; this stops a malformed or hostile frame at the transport.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Largest number of deliveries the hub puts in one `DeliveryBatch`.
pub const MAX_DELIVERY_BATCH: usize = 256;
