//! Standard cron schedules, as CronJobs use them: five fields (minute, hour, day of month,
//! month, day of week) with `*`, lists, ranges, steps and names, plus the `@hourly`-style
//! macros. Day of month and day of week, when both are restricted, match either, as in
//! Vixie cron and upstream's `robfig/cron`. Pure: times are civil times in the CronJob's zone.

use k8s_openapi::jiff::civil::DateTime;
use k8s_openapi::jiff::{ToSpan, Unit};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Whether each day field was given as `*` (then the other alone decides).
    any_day: bool,
    any_weekday: bool,
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl std::str::FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Schedule, String> {
        let expanded = match s.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!("expected exactly 5 fields, found {}: {s:?}", fields.len()));
        };
        Ok(Schedule {
            minutes: field(minute, 0, 59, &[])?,
            hours: field(hour, 0, 23, &[])?,
            days: field(day, 1, 31, &[])?,
            months: field(month, 1, 12, &MONTHS)?,
            // 7 is Sunday too.
            weekdays: {
                let bits = field(weekday, 0, 7, &WEEKDAYS)?;
                (bits | (bits >> 7)) & 0x7f
            },
            any_day: day == "*" || day == "?",
            any_weekday: weekday == "*" || weekday == "?",
        })
    }
}

/// One field as a bit set of the values it allows.
fn field(spec: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + min);
        }
        let n: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
        if n < min || n > max {
            return Err(format!("{n} is out of range {min}-{max}"));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                (r, s.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(|| format!("bad step in {part:?}"))?)
            }
            None => (part, 1),
        };
        let (lo, hi) = match range {
            "*" | "?" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // `5/15` means from 5 to the end, stepping.
                None if step > 1 => (value(r)?, max),
                None => (value(r)?, value(r)?),
            },
        };
        if lo > hi {
            return Err(format!("range {range:?} runs backwards"));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Schedule {
    fn matches(&self, t: DateTime) -> bool {
        let bit = |set: u64, v: i8| set & (1 << v as u32) != 0;
        let day = bit(self.days, t.day());
        let weekday = bit(self.weekdays, t.weekday().to_sunday_zero_offset());
        let day_ok = match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => weekday,
            (false, true) => day,
            (false, false) => day || weekday,
        };
        bit(self.minutes, t.minute()) && bit(self.hours, t.hour()) && bit(self.months, t.month()) && day_ok
    }

    /// The first scheduled minute strictly after `after`, searching up to five years ahead.
    pub fn next_after(&self, after: DateTime) -> Option<DateTime> {
        let mut t = after.round(Unit::Minute).ok()?;
        if t <= after {
            t = t.checked_add(1.minute()).ok()?;
        }
        let limit = after.checked_add(5.years()).ok()?;
        while t <= limit {
            if !self.months_allow(t) {
                // Skip to the first minute of the next month.
                t = t.first_of_month().checked_add(1.month()).ok()?.with().hour(0).minute(0).build().ok()?;
                continue;
            }
            if self.matches(t) {
                return Some(t);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }

    fn months_allow(&self, t: DateTime) -> bool {
        self.months & (1 << t.month() as u32) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime {
        s.parse().unwrap()
    }

    fn next(schedule: &str, after: &str) -> String {
        schedule.parse::<Schedule>().unwrap().next_after(at(after)).unwrap().to_string()
    }

    #[test]
    fn next_times() {
        assert_eq!(next("*/15 * * * *", "2026-01-01T00:07:30"), "2026-01-01T00:15:00");
        assert_eq!(next("* * * * *", "2026-01-01T00:07:00"), "2026-01-01T00:08:00");
        assert_eq!(next("30 9 * * mon-fri", "2026-01-02T10:00:00"), "2026-01-05T09:30:00"); // Friday → Monday
        assert_eq!(next("@monthly", "2026-01-15T00:00:00"), "2026-02-01T00:00:00");
        assert_eq!(next("0 0 29 2 *", "2026-03-01T00:00:00"), "2028-02-29T00:00:00");
        assert_eq!(next("0 12 1 * 0", "2026-02-02T00:00:00"), "2026-02-08T12:00:00"); // Sunday, or the 1st
        assert_eq!(next("5/20 * * * *", "2026-01-01T00:06:00"), "2026-01-01T00:25:00");
        assert_eq!(next("0 0 * JAN,jul 7", "2026-02-01T00:00:00"), "2026-07-05T00:00:00");
    }

    #[test]
    fn bad_schedules_are_named() {
        for bad in ["* * * *", "61 * * * *", "*/0 * * * *", "5-1 * * * *", "x * * * *", "* * * * * *"] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
    }
}
