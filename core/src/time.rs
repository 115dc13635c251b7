//! Wall-clock time in the one unit the protocol uses.

/// Milliseconds since the Unix epoch, as stored in reports and decisions.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
