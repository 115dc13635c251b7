//! How many entries a repeated field of each message may hold on the wire.
//! They are checked before a message is decoded (see `codec`), so a message
//! of millions of empty entries costs a scan, never the memory of millions
//! of decoded values. The crates that build or check these messages use the
//! same constants (re-exported by `meldnet_core::limits`).

/// Reports in one `SubmitBatch` (and results in one `SubmitResults`).
pub const MAX_BATCH_REPORTS: usize = 1024;
/// Deliveries the hub puts in one `DeliveryBatch`.
pub const MAX_DELIVERY_BATCH: usize = 256;
/// Sequence numbers in one `DeliveryAck` (and `DeliveryBatch.acked`).
pub const MAX_ACKS: usize = 4096;
/// Entries in one `ListAddRequest` (operators' `ListAdd`, nodes' `Contribute`).
pub const MAX_ADD_BATCH: usize = 4096;
/// Queries in one `CheckRequest` of a hosting provider.
pub const MAX_CHECK_BATCH: usize = 10_000;
/// Changes in one `SyncBatch`.
pub const SYNC_BATCH: usize = 4096;
/// Hashes in one `SeriesHashes` (`Register`/`AddHashes`).
pub const MAX_SERIES_HASHES: usize = 4096;
/// Signing keys of one registered node.
pub const MAX_KEYS: usize = 8;
/// Rejections in one `DeliveryAck`.
pub const MAX_REJECTIONS: usize = 256;
/// Bytes of one rejection's reason.
pub const MAX_REJECTION_REASON: usize = 512;
/// Notices the node puts in one `NoticeBatch`.
pub const MAX_NOTICE_BATCH: usize = 64;
/// Acknowledged notices in one `NoticeAck`.
pub const MAX_NOTICE_ACKS: usize = 1024;
