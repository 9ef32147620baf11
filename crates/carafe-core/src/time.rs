//! One notion of "now" for every store: UTC with millisecond precision, which both backends keep
//! exactly, so a value written and read back compares equal.

use time::OffsetDateTime;

pub use time::Duration;
pub use time::OffsetDateTime as Timestamp;

/// The current time, truncated to whole milliseconds.
pub fn now() -> OffsetDateTime {
    truncate_ms(OffsetDateTime::now_utc())
}

pub fn truncate_ms(t: OffsetDateTime) -> OffsetDateTime {
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    from_unix_ms(ms as i64)
}

pub fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Milliseconds since the epoch, rounded up: for a stored whole-millisecond time `a`,
/// `a >= t` exactly when `unix_ms(a) >= ceil_unix_ms(t)` (used for time-range filters).
pub fn ceil_unix_ms(t: OffsetDateTime) -> i64 {
    let nanos = t.unix_timestamp_nanos();
    let ms = nanos.div_euclid(1_000_000) + i128::from(nanos.rem_euclid(1_000_000) != 0);
    ms as i64
}

pub fn from_unix_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
