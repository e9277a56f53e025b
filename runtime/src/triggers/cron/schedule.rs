//! Cron schedules as plain logic: parsing an expression in a timezone and computing fire times.
//!
//! Expressions have 6 fields, seconds first (`sec min hour day-of-month month day-of-week`), or
//! an optional 7th for the year; the classic 5-field form (`min hour dom month dow`) is accepted
//! and means second 0. Fire times are computed in the schedule's IANA timezone (default UTC)
//! and handled as UTC instants.
//!
//! Daylight saving: a local time that does not exist (skipped when clocks go forward) does not
//! fire that day; a local time that happens twice (clocks go back) fires once, at its first
//! occurrence. A schedule in UTC never meets either.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed schedule in its timezone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    cron: cron::Schedule,
    timezone: Tz,
}

/// Why an expression or timezone was refused; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Wrong number of fields.
    #[error(
        "{0:?} has {1} fields: expected 6 (sec min hour day-of-month month day-of-week), 7 \
         (with the year) or 5 (without seconds)"
    )]
    FieldCount(String, usize),
    /// A field the parser refused.
    #[error("{0:?} is not a valid cron expression: {1}")]
    Invalid(String, String),
    /// No fire time ahead.
    #[error("{0:?} never fires (no matching time from now on)")]
    NeverFires(String),
    /// Not an IANA timezone.
    #[error("{0:?} is not an IANA timezone name: expected e.g. \"UTC\" or \"Europe/Paris\"")]
    Timezone(String),
}

impl Schedule {
    /// Parses `expression` in `timezone` (an IANA name), refusing one that never fires.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let timezone: Tz = timezone
            .parse()
            .map_err(|_| ScheduleError::Timezone(timezone.to_owned()))?;
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let normalised = match fields.len() {
            5 => format!("0 {}", fields.join(" ")),
            6 | 7 => fields.join(" "),
            n => return Err(ScheduleError::FieldCount(expression.to_owned(), n)),
        };
        let cron = cron::Schedule::from_str(&normalised).map_err(|e| {
            // The parser's message repeats the expression and points at it with a caret on
            // lines of their own; keep only the explanation, on one line.
            let text = e.to_string();
            let reason: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && *l != normalised && !l.chars().all(|c| c == '^'))
                .collect();
            ScheduleError::Invalid(expression.to_owned(), reason.join("; "))
        })?;
        let schedule = Self {
            expression: expression.to_owned(),
            cron,
            timezone,
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(ScheduleError::NeverFires(expression.to_owned()));
        }
        Ok(schedule)
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The timezone's IANA name.
    pub fn timezone(&self) -> &str {
        self.timezone.name()
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.fire_times(after).next()
    }

    /// Fire times after `after`, as UTC instants, without the second occurrence of a local time
    /// that happens twice when clocks go back.
    fn fire_times(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let local = after.with_timezone(&self.timezone);
        self.cron
            .after_owned(local)
            .filter(|t| {
                !matches!(
                    self.timezone.from_local_datetime(&t.naive_local()),
                    chrono::LocalResult::Ambiguous(_, latest) if latest == *t
                )
            })
            .map(|t| t.with_timezone(&Utc))
    }

    /// Fire times in `(after, until]`, oldest first, at most `max` of the most recent ones.
    /// Looks back over growing windows (a minute, an hour, a day, …) so a per-second schedule
    /// missed for a month does not walk millions of ticks.
    pub fn between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        max: usize,
    ) -> Vec<DateTime<Utc>> {
        const WINDOWS: [i64; 6] = [60, 3600, 86_400, 30 * 86_400, 366 * 86_400, i64::MAX / 4];
        for window in WINDOWS {
            let start = chrono::Duration::try_seconds(window)
                .and_then(|span| until.checked_sub_signed(span))
                .map_or(after, |s| s.max(after));
            let mut ticks = std::collections::VecDeque::with_capacity(max.min(1024) + 1);
            for tick in self.fire_times(start).take_while(|t| *t <= until) {
                ticks.push_back(tick);
                if ticks.len() > max {
                    ticks.pop_front();
                }
            }
            if ticks.len() >= max || start == after {
                return ticks.into();
            }
        }
        Vec::new()
    }
}

/// A UTC instant from Unix seconds (for keys and ids).
pub fn from_unix(seconds: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(seconds, 0).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn six_fields_have_seconds_and_five_mean_second_zero() {
        let every_second = Schedule::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(
            every_second.next_after(at("2026-01-01T00:00:00.500Z")),
            Some(at("2026-01-01T00:00:01Z"))
        );
        let five = Schedule::parse("30 9 * * *", "UTC").unwrap();
        assert_eq!(
            five.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T09:30:00Z"))
        );
        let midnight = Schedule::parse("0 0 0 * * *", "UTC").unwrap();
        assert_eq!(
            midnight.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-02T00:00:00Z")),
            "strictly after"
        );
    }

    #[test]
    fn timezones_shift_the_instant() {
        let paris = Schedule::parse("0 0 9 * * *", "Europe/Paris").unwrap();
        // Winter: UTC+1.
        assert_eq!(
            paris.next_after(at("2026-01-10T00:00:00Z")),
            Some(at("2026-01-10T08:00:00Z"))
        );
        // Summer: UTC+2.
        assert_eq!(
            paris.next_after(at("2026-07-10T00:00:00Z")),
            Some(at("2026-07-10T07:00:00Z"))
        );
    }

    #[test]
    fn daylight_saving_skips_missing_times_and_fires_repeated_ones_once() {
        // Europe/Paris, 2026-03-29: 02:00 local jumps to 03:00; 02:30 does not exist that day.
        let spring = Schedule::parse("0 30 2 * * *", "Europe/Paris").unwrap();
        let next = spring.next_after(at("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(
            next,
            at("2026-03-30T00:30:00Z"),
            "the missing 02:30 is skipped"
        );
        // 2026-10-25: 03:00 local goes back to 02:00; 02:30 happens twice.
        let autumn = Schedule::parse("0 30 2 * * *", "Europe/Paris").unwrap();
        let ticks = autumn.between(at("2026-10-24T12:00:00Z"), at("2026-10-26T12:00:00Z"), 10);
        assert_eq!(
            ticks,
            vec![at("2026-10-25T00:30:00Z"), at("2026-10-26T01:30:00Z")],
            "the repeated 02:30 fires once, at its first occurrence"
        );
    }

    #[test]
    fn between_keeps_the_most_recent_up_to_max() {
        let s = Schedule::parse("* * * * * *", "UTC").unwrap();
        let ticks = s.between(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:10Z"), 3);
        assert_eq!(
            ticks,
            vec![
                at("2026-01-01T00:00:08Z"),
                at("2026-01-01T00:00:09Z"),
                at("2026-01-01T00:00:10Z")
            ]
        );
    }

    #[test]
    fn a_long_outage_is_looked_back_over_quickly() {
        let s = Schedule::parse("* * * * * *", "UTC").unwrap();
        let started = std::time::Instant::now();
        let ticks = s.between(at("2025-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"), 100);
        assert_eq!(ticks.len(), 100);
        assert_eq!(ticks[99], at("2026-01-01T00:00:00Z"));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let daily = Schedule::parse("0 0 0 * * *", "UTC").unwrap();
        let days = daily.between(at("2025-12-01T12:00:00Z"), at("2026-01-01T12:00:00Z"), 100);
        assert_eq!(days.len(), 31);
    }

    #[test]
    fn bad_input_is_named() {
        assert!(matches!(
            Schedule::parse("* * *", "UTC"),
            Err(ScheduleError::FieldCount(_, 3))
        ));
        assert!(matches!(
            Schedule::parse("99 * * * * *", "UTC"),
            Err(ScheduleError::Invalid(..))
        ));
        assert!(matches!(
            Schedule::parse("* * * * * *", "Mars/Olympus"),
            Err(ScheduleError::Timezone(_))
        ));
        assert!(matches!(
            Schedule::parse("0 0 0 30 2 * 2027", "UTC"),
            Err(ScheduleError::NeverFires(_))
        ));
    }
}

/// Property tests: any text is a schedule or a named error; every expression written within
/// the fields' ranges parses and fires after any moment.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_text_is_a_schedule_or_a_named_error(
            expression in "[0-9*/,\\- A-Za-z?#L]{0,40}",
            timezone in prop_oneof![Just("UTC".to_owned()), Just("Europe/Paris".to_owned()), ".{0,12}"],
        ) {
            match Schedule::parse(&expression, &timezone) {
                Ok(schedule) => prop_assert!(schedule.next_after(Utc::now()).is_some()),
                Err(error) => prop_assert!(!error.to_string().is_empty()),
            }
        }

        #[test]
        fn expressions_within_range_fire_after_any_moment(
            second in 0u32..60, minute in 0u32..60, hour in 0u32..24,
            step in 1u32..30, weekday in 1u32..8,
            after in 0i64..4_000_000_000,
        ) {
            let expression = format!("{second} {minute}/{step} {hour} * * {weekday}");
            let schedule = Schedule::parse(&expression, "UTC").unwrap();
            let after = from_unix(after).unwrap();
            let next = schedule.next_after(after).unwrap();
            prop_assert!(next > after);
        }
    }
}
