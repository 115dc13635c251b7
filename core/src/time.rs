//! Wall-clock time in the one unit the protocol uses.

/// Milliseconds since the Unix epoch, as stored in reports and decisions.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Why the clock was not moved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// This clock follows the system clock only.
    #[error("clock.adjustable is false: this clock follows the system clock only")]
    NotAdjustable,
    /// Only forward, by a positive amount.
    #[error("by_ms: {0} is not a positive number of milliseconds")]
    NotForward(i64),
}

/// The time a server acts on: the system clock, plus an offset that only
/// moves forward and only on a clock made adjustable. Deadlines (hours,
/// days) are tested by moving it instead of waiting; production clocks are
/// never adjustable.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: std::sync::atomic::AtomicI64,
    adjustable: bool,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that `advance` may move forward (for tests of deadlines).
    pub fn adjustable() -> Clock {
        Clock {
            adjustable: true,
            ..Clock::default()
        }
    }

    /// Now, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        now_ms().saturating_add(self.offset_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Moves the clock forward by `by_ms`; returns the new now.
    pub fn advance(&self, by_ms: i64) -> Result<i64, ClockError> {
        if !self.adjustable {
            return Err(ClockError::NotAdjustable);
        }
        if by_ms <= 0 {
            return Err(ClockError::NotForward(by_ms));
        }
        self.offset_ms
            .fetch_add(by_ms, std::sync::atomic::Ordering::Relaxed);
        Ok(self.now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_adjustable_clock_moves_and_only_forward() {
        let system = Clock::system();
        assert_eq!(system.advance(1000), Err(ClockError::NotAdjustable));
        let c = Clock::adjustable();
        let before = c.now_ms();
        let day = 24 * 3600 * 1000;
        let after = c.advance(day).unwrap();
        assert!(after >= before + day && after < before + day + 60_000);
        assert_eq!(c.advance(-1), Err(ClockError::NotForward(-1)));
        assert_eq!(c.advance(0), Err(ClockError::NotForward(0)));
    }
}

/// A Unix time in milliseconds as RFC 3339 UTC text (seconds), for
/// decisions and printouts people read; the number itself is what is signed.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| ms.to_string())
}

#[cfg(test)]
mod rfc3339_tests {
    #[test]
    fn formats_utc_seconds() {
        assert_eq!(super::rfc3339(1_700_000_000_123), "2023-11-14T22:13:20Z");
    }
}
