//! Crontab expressions as people write them, on top of the `cron` crate.
//!
//! The `cron` crate reads Quartz-style expressions: a seconds field first, days of the
//! week numbered 1 (Sunday) to 7, and day-of-month AND day-of-week. The crontab people
//! know has 5 fields, numbers Sunday 0 (or 7), and matches a day when day-of-month OR
//! day-of-week matches if both are restricted. [`Crontab::parse`] takes the crontab form
//! (5 fields, or 6 with seconds first where a caller allows it, or `@daily` and the
//! other macros), rewrites the day-of-week field into names the `cron` crate cannot
//! misread, and keeps two schedules when both day fields are restricted, so
//! `0 13 * * 5` fires on Fridays, as `crontab(5)` says.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, TimeZone};

/// A parsed crontab expression.
#[derive(Debug, Clone)]
pub struct Crontab {
    source: String,
    /// One schedule, or two whose union is the expression (day-of-month OR day-of-week).
    schedules: Vec<cron::Schedule>,
}

/// A crontab expression that cannot be used, naming it.
#[derive(Debug, thiserror::Error)]
pub enum CrontabError {
    #[error("`{0}` is not a crontab macro (@yearly, @monthly, @weekly, @daily, @hourly)")]
    NotAMacro(String),
    /// `want` lists the counts accepted (`5 or 6`); `plural` and `seconds` finish the
    /// sentence.
    #[error("`{expr}` has {found} field{plural}; a crontab expression here has {want} (minute hour day-of-month month day-of-week{seconds}), or @hourly, @daily, ...")]
    FieldCount {
        expr: String,
        found: usize,
        plural: &'static str,
        want: String,
        seconds: &'static str,
    },
    #[error("`{expr}`: day-of-week `{field}`: {problem}")]
    DayOfWeek {
        expr: String,
        field: String,
        #[source]
        problem: DayError,
    },
    #[error("`{expr}`: {cause}")]
    Cron {
        expr: String,
        #[source]
        cause: cron::error::Error,
    },
    #[error("`{0}` never fires")]
    NeverFires(String),
}

/// A day-of-week field the crontab form does not allow.
#[derive(Debug, thiserror::Error)]
pub enum DayError {
    #[error("`{0}` is not a step (a number from 1)")]
    NotAStep(String),
    #[error("`{0}` runs backwards")]
    Backwards(String),
    #[error("`{0}` is not a day (0-7, Sunday is 0 or 7)")]
    NotADayNumber(String),
    #[error("`{0}` is not a day (0-7 or sun..sat)")]
    NotADay(String),
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Crontab {
    /// `fields` lists the field counts accepted here: `&[5]` for windows, `&[5, 6]` where a
    /// leading seconds field is allowed.
    pub fn parse(expr: &str, fields: &[usize]) -> Result<Crontab, CrontabError> {
        let source = expr.trim().to_owned();
        let expanded = match source.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_owned(),
            "@monthly" => "0 0 1 * *".to_owned(),
            "@weekly" => "0 0 * * 0".to_owned(),
            "@daily" | "@midnight" => "0 0 * * *".to_owned(),
            "@hourly" => "0 * * * *".to_owned(),
            s if s.starts_with('@') => return Err(CrontabError::NotAMacro(source)),
            _ => source.clone(),
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if !fields.contains(&parts.len()) {
            let want = fields
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(" or ");
            return Err(CrontabError::FieldCount {
                expr: source,
                found: parts.len(),
                plural: if parts.len() == 1 { "" } else { "s" },
                want,
                seconds: if fields.contains(&6) {
                    ", with seconds first for 6"
                } else {
                    ""
                },
            });
        }
        let (seconds, rest) = if parts.len() == 6 {
            (parts[0], &parts[1..])
        } else {
            ("0", &parts[..])
        };
        let [minute, hour, dom, month, dow] = [rest[0], rest[1], rest[2], rest[3], rest[4]];
        let dow_any = dow == "*" || dow == "?";
        let dom_any = dom == "*" || dom == "?";
        let days = if dow_any {
            "*".to_owned()
        } else {
            days_of_week(dow).map_err(|problem| CrontabError::DayOfWeek {
                expr: source.clone(),
                field: dow.to_owned(),
                problem,
            })?
        };
        let build = |dom: &str, dow: &str| {
            let quartz = format!("{seconds} {minute} {hour} {dom} {month} {dow}");
            cron::Schedule::from_str(&quartz).map_err(|cause| CrontabError::Cron {
                expr: source.clone(),
                cause,
            })
        };
        let schedules = if !dom_any && !dow_any {
            vec![build(dom, "*")?, build("*", &days)?]
        } else {
            vec![build(dom, &days)?]
        };
        // An expression that can never fire (`0 0 31 2 *`) is a mistake, not a schedule.
        // 2000-01-01T00:00:00Z.
        let probe = DateTime::from_timestamp(946_684_800, 0).unwrap_or_default();
        let c = Crontab { source, schedules };
        if c.next_after(&probe).is_none() {
            return Err(CrontabError::NeverFires(c.source));
        }
        Ok(c)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first firing strictly after `t`, in `t`'s time zone.
    pub fn next_after<Z: TimeZone>(&self, t: &DateTime<Z>) -> Option<DateTime<Z>> {
        self.schedules
            .iter()
            .filter_map(|s| s.after(t).next())
            .min()
    }
}

/// A crontab day-of-week field (0-7, Sunday 0 or 7, names, ranges, lists, steps) as a
/// list of day names, which the `cron` crate reads unambiguously.
fn days_of_week(field: &str) -> Result<String, DayError> {
    let mut days = BTreeSet::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: usize = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| DayError::NotAStep(s.to_owned()))?;
                (r, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                // `5/2` means from 5 to the end, as in crontab.
                None if step > 1 => (day(r)?, 6),
                None => (day(r)?, day(r)?),
            },
        };
        // `7` is Sunday at the end of a range (`5-7`): count it as 7, then fold.
        let hi = if hi < lo && hi == 0 { 7 } else { hi };
        if hi < lo {
            return Err(DayError::Backwards(range.to_owned()));
        }
        for d in (lo..=hi).step_by(step) {
            days.insert(d % 7);
        }
    }
    Ok(days
        .into_iter()
        .map(|d| DAY_NAMES[d])
        .collect::<Vec<_>>()
        .join(","))
}

fn day(s: &str) -> Result<usize, DayError> {
    if let Ok(n) = s.parse::<usize>() {
        return match n {
            0..=6 => Ok(n),
            // Sunday as 7: kept as 7 so that `5-7` is a forward range.
            7 => Ok(7),
            _ => Err(DayError::NotADayNumber(s.to_owned())),
        };
    }
    let lower = s.to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(&lower) || full_name(n).eq_ignore_ascii_case(&lower))
        .ok_or_else(|| DayError::NotADay(s.to_owned()))
}

fn full_name(short: &str) -> &'static str {
    match short {
        "SUN" => "sunday",
        "MON" => "monday",
        "TUE" => "tuesday",
        "WED" => "wednesday",
        "THU" => "thursday",
        "FRI" => "friday",
        _ => "saturday",
    }
}

/// An IANA zone name (`Europe/Berlin`); UTC when none is given.
/// A time zone name that is not in the IANA database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IANA time zone (such as Europe/Berlin or UTC)")]
pub struct ZoneError(pub String);

pub fn parse_zone(name: Option<&str>) -> Result<chrono_tz::Tz, ZoneError> {
    match name {
        None => Ok(chrono_tz::Tz::UTC),
        Some(n) => n
            .parse::<chrono_tz::Tz>()
            .map_err(|_| ZoneError(n.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike, Utc, Weekday};

    fn next(expr: &str, from: &str) -> String {
        let c = Crontab::parse(expr, &[5, 6]).unwrap();
        let t: DateTime<Utc> = from.parse().unwrap();
        c.next_after(&t).unwrap().to_rfc3339()
    }

    #[test]
    fn day_of_week_numbers_mean_what_crontab_says() {
        // 2026-11-21 is a Saturday.
        assert_eq!(
            next("0 13 * * 5", "2026-11-21T00:00:00Z"),
            "2026-11-27T13:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * 0", "2026-11-21T00:00:00Z"),
            "2026-11-22T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * 7", "2026-11-21T00:00:00Z"),
            "2026-11-22T00:00:00+00:00"
        );
        assert_eq!(
            next("30 9 * * 1-5", "2026-11-21T00:00:00Z"),
            "2026-11-23T09:30:00+00:00"
        );
        assert_eq!(
            next("0 0 * * 5-7", "2026-11-22T01:00:00Z"),
            "2026-11-27T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * sat,SUN", "2026-11-22T01:00:00Z"),
            "2026-11-28T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * */2", "2026-11-22T01:00:00Z"),
            "2026-11-24T00:00:00+00:00"
        );
    }

    #[test]
    fn both_day_fields_restricted_match_either() {
        // The 1st of the month or any Monday.
        let c = Crontab::parse("0 0 1 * mon", &[5]).unwrap();
        let mut t: DateTime<Utc> = "2026-11-25T00:00:00Z".parse().unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            t = c.next_after(&t).unwrap();
            seen.push((t.day(), t.weekday()));
        }
        assert_eq!(
            seen,
            vec![(30, Weekday::Mon), (1, Weekday::Tue), (7, Weekday::Mon)]
        );
    }

    #[test]
    fn seconds_macros_and_zones() {
        assert_eq!(
            next("*/20 * * * * *", "2026-11-21T00:00:01Z"),
            "2026-11-21T00:00:20+00:00"
        );
        assert_eq!(
            next("@daily", "2026-11-21T10:00:00Z"),
            "2026-11-22T00:00:00+00:00"
        );
        let c = Crontab::parse("0 13 * * 5", &[5]).unwrap();
        let t = "2026-11-21T00:00:00Z"
            .parse::<DateTime<Utc>>()
            .unwrap()
            .with_timezone(&chrono_tz::Europe::Berlin);
        let n = c.next_after(&t).unwrap();
        assert_eq!((n.hour(), n.weekday()), (13, Weekday::Fri));
        assert_eq!(
            n.with_timezone(&Utc).to_rfc3339(),
            "2026-11-27T12:00:00+00:00"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err = |e: &str, f: &[usize]| Crontab::parse(e, f).unwrap_err().to_string();
        assert!(err("0 13 * *", &[5]).contains("has 4 fields; a crontab expression here has 5"));
        assert!(err("0 0 13 * * 5", &[5]).contains("has 6 fields"));
        assert!(err("0 13 * * 8", &[5]).contains("`8` is not a day"));
        assert!(err("0 13 * * fry", &[5]).contains("`fry` is not a day"));
        assert!(err("0 25 * * *", &[5]).starts_with("`0 25 * * *`: "));
        assert!(err("0 0 31 2 *", &[5]).contains("never fires"));
        assert!(err("@often", &[5]).contains("not a crontab macro"));
    }
}
