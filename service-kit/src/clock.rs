//! Time as the services store it and as clients see it.
//!
//! Rows keep Unix milliseconds (an integer every database stores and compares the same way, and
//! that change-data sync can order by); the API shows RFC 3339 UTC at second precision
//! (`2026-11-22T03:09:21Z`), identical in every process so shadow comparison sees no noise from
//! formatting.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// `ms` as RFC 3339 UTC, second precision.
pub fn rfc3339(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .expect("a UTC timestamp formats")
}

/// Parses an RFC 3339 timestamp (any offset) into Unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let t = t.to_offset(UtcOffset::UTC);
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ms = 1_763_780_961_123;
        assert_eq!(rfc3339(ms), "2025-11-22T03:09:21Z");
        assert_eq!(
            parse_rfc3339("2025-11-22T03:09:21Z"),
            Some(1_763_780_961_000)
        );
        assert_eq!(
            parse_rfc3339("2025-11-22T04:09:21.5+01:00"),
            Some(1_763_780_961_500)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
