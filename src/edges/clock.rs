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
