//! Wall-clock conversions. The public API takes [`SystemTime`] and
//! [`Duration`] (`std`), as every crate of the workspace does; rcgen and
//! x509-parser work in `time::OffsetDateTime`, so the conversions live
//! here, each fallible (a time before the Unix epoch or beyond what a
//! certificate can carry gives `None`, never a panic).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

/// `t` as an `OffsetDateTime`; `None` before the Unix epoch or out of range.
pub(crate) fn offset(t: SystemTime) -> Option<OffsetDateTime> {
    let since = time::Duration::try_from(t.duration_since(UNIX_EPOCH).ok()?).ok()?;
    OffsetDateTime::UNIX_EPOCH.checked_add(since)
}

/// `t` as a `SystemTime`; `None` if the platform cannot hold it.
pub(crate) fn system(t: OffsetDateTime) -> Option<SystemTime> {
    let secs = t.unix_timestamp();
    let whole = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }?;
    whole.checked_add(Duration::from_nanos(u64::from(t.nanosecond())))
}

/// Whole seconds since the Unix epoch (how the CA's index records times);
/// `None` before the epoch.
pub(crate) fn unix_secs(t: SystemTime) -> Option<i64> {
    i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()
}

/// Whole seconds since the Unix epoch, negative before it, saturating at
/// the ends of `i64` (for comparisons with the index's times only).
pub(crate) fn unix_secs_signed(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => secs(d),
        Err(e) => secs(e.duration()).saturating_neg(),
    }
}

/// `t + d`, `None` on overflow.
pub(crate) fn add(t: OffsetDateTime, d: Duration) -> Option<OffsetDateTime> {
    t.checked_add(time::Duration::try_from(d).ok()?)
}

/// `t - d`, `None` on overflow.
pub(crate) fn sub(t: OffsetDateTime, d: Duration) -> Option<OffsetDateTime> {
    t.checked_sub(time::Duration::try_from(d).ok()?)
}

/// Seconds of `d` as the index records them (saturating).
pub(crate) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn round_trips_and_refuses_before_the_epoch() {
        let t = UNIX_EPOCH + Duration::new(1_800_000_000, 123_456_789);
        let o = offset(t).unwrap();
        assert_eq!(o.unix_timestamp(), 1_800_000_000);
        assert_eq!(system(o), Some(t));
        assert_eq!(unix_secs(t), Some(1_800_000_000));
        assert_eq!(offset(UNIX_EPOCH - Duration::from_secs(1)), None);
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(1)), None);
        assert_eq!(offset(UNIX_EPOCH + Duration::from_secs(1 << 40)), None);
        let before = OffsetDateTime::from_unix_timestamp(-86_400).unwrap();
        assert_eq!(
            system(before),
            UNIX_EPOCH.checked_sub(Duration::from_secs(86_400))
        );
    }
}
