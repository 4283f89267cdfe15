//! How long to wait before trying a transient failure again (a fetch that failed, a node
//! or server that did not answer, a git lock): doubling per failure up to a cap, drawn
//! at random from the upper half so that many that failed together do not retry
//! together. A refusal is not retried at all: it waits for a new commit (see
//! [`crate::edges::source::FailureKind`]). The agent's loop and the server's follower
//! share it.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The first wait of [`backoff_with_jitter`].
pub const BASE: Duration = Duration::from_secs(1);
/// The longest wait of [`backoff_with_jitter`].
pub const CAP: Duration = Duration::from_secs(300);

/// The wait after `attempt` failures in a row (1: the first failure): between half and
/// all of `min(CAP, BASE × 2^(attempt-1))`, at random. For the server's follower after a
/// failed fetch, in place of its fixed poll interval.
pub fn backoff_with_jitter(attempt: u32) -> Duration {
    backoff(BASE, CAP, attempt)
}

/// The pause after `failures` failed exchanges in a row: the interval (at most one
/// second) doubled per failure, capped at `max`, and drawn at random from its upper half
/// so that a fleet of agents that lost the server together does not come back together.
pub fn backoff(interval: Duration, max: Duration, failures: u32) -> Duration {
    let base = interval
        .min(Duration::from_secs(1))
        .max(Duration::from_millis(10));
    let exp = failures.saturating_sub(1).min(20);
    let ceiling = base.saturating_mul(1 << exp).min(max.max(base));
    let half = ceiling / 2;
    let span = (ceiling - half).as_micros() as u64;
    let jitter = if span == 0 {
        0
    } else {
        random_u64() % (span + 1)
    };
    half + Duration::from_micros(jitter)
}

/// A random number from the standard library's per-process random hash keys; enough for
/// jitter, without a dependency.
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fetch_backs_off_from_a_second_up_to_five_minutes() {
        for attempt in 1..40 {
            let ceiling = BASE.saturating_mul(1 << (attempt - 1).min(20)).min(CAP);
            let d = backoff_with_jitter(attempt);
            assert!(d <= ceiling && d >= ceiling / 2, "{attempt}: {d:?}");
        }
        assert!(backoff_with_jitter(1) <= Duration::from_secs(1));
        assert!(backoff_with_jitter(30) >= Duration::from_secs(150));
    }
}
