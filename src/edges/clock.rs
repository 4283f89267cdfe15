//! The wall clock, read in one place: the pure core takes the time from its caller.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, RFC 3339 UTC to the second.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    crate::pure::render::rfc3339_utc(secs)
}

/// Now, seconds since the epoch (for a Prometheus timestamp gauge).
pub fn now_secs_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Now, milliseconds since the epoch (the time the reconciler is given).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
