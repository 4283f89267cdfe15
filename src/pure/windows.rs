//! Rollout windows: when a batch may start.
//!
//! A window opens at each firing of its crontab expression (in its time zone) and stays
//! open for its duration. With no window, rollouts run at any time. With `allow` windows,
//! a batch starts only inside one of them; inside a `deny` window no batch starts. A
//! rollout outside its windows waits (the batch in flight finishes; the next one waits)
//! and goes on by itself when they open; a person can override with a reason.
//!
//! Everything here is a function of the time it is given, so the reconciler and its
//! tests decide what "now" is.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

pub use crate::pure::schedule::{parse_zone, ZoneError};
use crate::pure::schedule::{Crontab, CrontabError};
use crate::pure::spec::model::{Window, WindowAction};

/// How far ahead [`Windows::status`] looks for the next opening.
const HORIZON_MS: u64 = 366 * 24 * 3600 * 1000;

#[derive(Debug, Clone)]
struct Compiled {
    name: String,
    action: WindowAction,
    crontab: Crontab,
    duration_ms: u64,
    tz: Tz,
}

impl Compiled {
    fn new(w: &Window) -> Result<Compiled, WindowProblem> {
        Ok(Compiled {
            name: w.name.clone(),
            action: w.action,
            crontab: Crontab::parse(&w.schedule, &[5])?,
            duration_ms: crate::pure::catalog::parse_duration_micros(&w.duration)
                .map(|us| us / 1000)
                .filter(|ms| *ms > 0)
                .ok_or_else(|| WindowProblem::Duration(w.duration.clone()))?,
            tz: parse_zone(w.timezone.as_deref())?,
        })
    }
}

/// The windows of a revision, ready to be asked.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    windows: Vec<Compiled>,
}

/// May a batch start now?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Open,
    Closed {
        /// Why, naming the windows: journaled and shown.
        reason: String,
        /// When the windows next let a batch start (ms since the epoch), if found within a
        /// year (or 10,000 window edges, for windows that open every minute).
        opens_at_ms: Option<u64>,
    },
}

/// A window that does not compile, naming it.
#[derive(Debug, thiserror::Error)]
#[error("window `{window}`: {problem}")]
pub struct WindowError {
    pub window: String,
    #[source]
    pub problem: WindowProblem,
}

#[derive(Debug, thiserror::Error)]
pub enum WindowProblem {
    #[error(transparent)]
    Schedule(#[from] CrontabError),
    #[error("`{0}` is not a duration")]
    Duration(String),
    #[error(transparent)]
    Zone(#[from] ZoneError),
}

impl Windows {
    /// Compile validated windows. Validation (`spec::load`) already checked the
    /// expressions, durations and zones; an error here names the window anyway.
    pub fn new(windows: &[Window]) -> Result<Windows, WindowError> {
        let windows = windows
            .iter()
            .map(|w| {
                Compiled::new(w).map_err(|problem| WindowError {
                    window: w.name.clone(),
                    problem,
                })
            })
            .collect::<Result<_, WindowError>>()?;
        Ok(Windows { windows })
    }

    /// Whether a batch may start at `now_ms`, and if not, why and until when.
    pub fn status(&self, now_ms: u64) -> Status {
        let Some(reason) = self.closed_reason(now_ms) else {
            return Status::Open;
        };
        // The status can only change where a window opens or closes: walk those instants
        // in order until the first one at which the windows are open.
        let mut at = now_ms;
        let mut opens_at_ms = None;
        for _ in 0..10_000 {
            let Some(next) = self.next_edge(at) else {
                at = now_ms + HORIZON_MS;
                break;
            };
            if next > now_ms + HORIZON_MS {
                at = now_ms + HORIZON_MS;
                break;
            }
            if self.closed_reason(next).is_none() {
                opens_at_ms = Some(next);
                break;
            }
            at = next;
        }
        let reason = match opens_at_ms {
            Some(ms) => format!("{reason}; opens at {}", rfc3339(ms)),
            // Not a time it opens: the search stopped there without finding one.
            None => format!(
                "{reason}; no opening found before {}, as far ahead as cacheflow looks",
                rfc3339(at)
            ),
        };
        Status::Closed {
            reason,
            opens_at_ms,
        }
    }

    /// Why the windows are closed at `t`, or `None` when a batch may start.
    fn closed_reason(&self, t: u64) -> Option<String> {
        let active: Vec<&Compiled> = self.windows.iter().filter(|w| w.active(t)).collect();
        if let Some(deny) = active.iter().find(|w| w.action == WindowAction::Deny) {
            return Some(format!("inside deny window `{}`", deny.name));
        }
        let allows: Vec<&str> = self
            .windows
            .iter()
            .filter(|w| w.action == WindowAction::Allow)
            .map(|w| w.name.as_str())
            .collect();
        if !allows.is_empty() && !active.iter().any(|w| w.action == WindowAction::Allow) {
            let names = allows
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Some(format!("outside allow window(s) {names}"));
        }
        None
    }

    /// The first instant after `t` at which some window opens or closes.
    fn next_edge(&self, t: u64) -> Option<u64> {
        self.windows
            .iter()
            .flat_map(|w| {
                let opens = w.next_fire_after(t);
                // The window active at `t` (if any) closes at its last firing + duration;
                // firings between t - duration and t each close one duration later.
                let closes = w
                    .next_fire_after(t.saturating_sub(w.duration_ms))
                    .map(|s| s + w.duration_ms)
                    .filter(|c| *c > t);
                [opens, closes]
            })
            .flatten()
            .min()
    }
}

impl Compiled {
    /// Open at `t`: some firing `s` with `s <= t < s + duration`, i.e. the first firing
    /// after `t - duration` is not after `t`.
    fn active(&self, t: u64) -> bool {
        self.next_fire_after(t.saturating_sub(self.duration_ms))
            .is_some_and(|s| s <= t)
    }

    fn next_fire_after(&self, t: u64) -> Option<u64> {
        let at = self.tz.from_utc_datetime(&utc(t).naive_utc());
        self.crontab
            .next_after(&at)
            .map(|d| d.timestamp_millis().max(0) as u64)
    }
}

fn utc(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms as i64).unwrap_or_default()
}

fn rfc3339(ms: u64) -> String {
    utc(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(
        name: &str,
        action: WindowAction,
        schedule: &str,
        duration: &str,
        tz: Option<&str>,
    ) -> Window {
        Window {
            name: name.into(),
            action,
            schedule: schedule.into(),
            duration: duration.into(),
            timezone: tz.map(Into::into),
        }
    }

    fn ms(s: &str) -> u64 {
        s.parse::<DateTime<Utc>>().unwrap().timestamp_millis() as u64
    }

    #[test]
    fn no_windows_means_always_open() {
        assert_eq!(
            Windows::new(&[])
                .unwrap()
                .status(ms("2026-11-21T12:00:00Z")),
            Status::Open
        );
    }

    #[test]
    fn a_deny_window_crossing_midnight_in_berlin() {
        // Fridays 22:00 Berlin for 4h: until Saturday 02:00 Berlin (21:00-01:00 UTC in
        // November, CET = UTC+1).
        let w = Windows::new(&[window(
            "friday-night",
            WindowAction::Deny,
            "0 22 * * 5",
            "4h",
            Some("Europe/Berlin"),
        )])
        .unwrap();
        assert_eq!(w.status(ms("2026-11-27T20:59:59Z")), Status::Open);
        assert_eq!(
            w.status(ms("2026-11-27T21:00:00Z")),
            Status::Closed {
                reason: "inside deny window `friday-night`; opens at 2026-11-28T01:00:00Z".into(),
                opens_at_ms: Some(ms("2026-11-28T01:00:00Z")),
            }
        );
        // After midnight Berlin time, on Saturday: still inside.
        assert!(matches!(
            w.status(ms("2026-11-28T00:30:00Z")),
            Status::Closed { .. }
        ));
        assert_eq!(w.status(ms("2026-11-28T01:00:00Z")), Status::Open);
    }

    #[test]
    fn allow_windows_wait_for_the_next_opening() {
        // Weekdays 09:00-17:00 New York time.
        let w = Windows::new(&[window(
            "office-hours",
            WindowAction::Allow,
            "0 9 * * 1-5",
            "8h",
            Some("America/New_York"),
        )])
        .unwrap();
        // Saturday: closed until Monday 09:00 EST = 14:00 UTC.
        assert_eq!(
            w.status(ms("2026-11-21T15:00:00Z")),
            Status::Closed {
                reason: "outside allow window(s) `office-hours`; opens at 2026-11-23T14:00:00Z"
                    .into(),
                opens_at_ms: Some(ms("2026-11-23T14:00:00Z")),
            }
        );
        assert_eq!(w.status(ms("2026-11-23T14:00:00Z")), Status::Open);
        assert_eq!(w.status(ms("2026-11-23T21:59:59Z")), Status::Open);
        assert!(matches!(
            w.status(ms("2026-11-23T22:00:00Z")),
            Status::Closed { .. }
        ));
    }

    #[test]
    fn deny_wins_over_allow_and_the_opening_skips_it() {
        // Allowed every day 08:00-20:00 UTC, denied Fridays from 13:00 for 11h.
        let w = Windows::new(&[
            window("daytime", WindowAction::Allow, "0 8 * * *", "12h", None),
            window(
                "no-friday-afternoon",
                WindowAction::Deny,
                "0 13 * * 5",
                "11h",
                None,
            ),
        ])
        .unwrap();
        assert_eq!(w.status(ms("2026-11-27T12:59:00Z")), Status::Open);
        assert_eq!(
            w.status(ms("2026-11-27T14:00:00Z")),
            Status::Closed {
                reason: "inside deny window `no-friday-afternoon`; opens at 2026-11-28T08:00:00Z"
                    .into(),
                opens_at_ms: Some(ms("2026-11-28T08:00:00Z")),
            }
        );
    }

    #[test]
    fn a_window_that_never_opens_says_how_far_it_looked_not_an_opening_time() {
        // Denied every minute for two hours: closed at every edge the search walks.
        let w = Windows::new(&[window(
            "change-freeze",
            WindowAction::Deny,
            "* * * * *",
            "2h",
            None,
        )])
        .unwrap();
        let Status::Closed {
            reason,
            opens_at_ms,
        } = w.status(ms("2026-11-21T12:00:00Z"))
        else {
            panic!("the freeze is closed");
        };
        assert_eq!(opens_at_ms, None);
        // 10,000 edges (a minute apart) later, the search stopped: not an opening.
        assert_eq!(
            reason,
            "inside deny window `change-freeze`; no opening found before 2026-11-28T10:40:00Z, as far ahead as cacheflow looks"
        );
    }

    #[test]
    fn a_bad_zone_is_named() {
        let err = Windows::new(&[window(
            "w",
            WindowAction::Deny,
            "0 1 * * *",
            "1h",
            Some("Mars/Olympus"),
        )])
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "window `w`: `Mars/Olympus` is not an IANA time zone (such as Europe/Berlin or UTC)"
        );
    }
}
