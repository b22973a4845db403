//! Operating hours of a workstream: the weekdays and the daily opening time in the business's
//! own time zone (a fixed UTC offset). Outside them, a customer who writes is told so (the
//! `outside_hours` automated message) and still waits in the queue.

/// When agents are there. `close` before `open` spans midnight (e.g. 22:00–06:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatingHours {
    /// Minutes east of UTC (Japan: 540).
    pub utc_offset_minutes: i32,
    /// Monday first.
    pub days: [bool; 7],
    /// Minutes after local midnight.
    pub open: u16,
    pub close: u16,
}

const MINUTE_MS: i64 = 60_000;
const DAY_MINUTES: i64 = 24 * 60;

impl OperatingHours {
    /// Whether `at_ms` (ms since the epoch) falls within the hours. A span past midnight
    /// belongs to the day it opened.
    pub fn is_open(&self, at_ms: i64) -> bool {
        let local = at_ms.div_euclid(MINUTE_MS) + i64::from(self.utc_offset_minutes);
        let day = local.div_euclid(DAY_MINUTES);
        let minute = local.rem_euclid(DAY_MINUTES) as u16;
        // 1970-01-01 was a Thursday (index 3, Monday first).
        let weekday = |day: i64| (day + 3).rem_euclid(7) as usize;
        if self.open <= self.close {
            self.days[weekday(day)] && (self.open..self.close).contains(&minute)
        } else {
            (self.days[weekday(day)] && minute >= self.open)
                || (self.days[weekday(day - 1)] && minute < self.close)
        }
    }

    /// Parses "HH:MM".
    pub fn parse_time(value: &str) -> Option<u16> {
        let (h, m) = value.split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && m.to_string().len() <= 2).then_some(h * 60 + m)
    }

    /// Parses day names (`mon` … `sun`).
    pub fn parse_day(value: &str) -> Option<usize> {
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .iter()
            .position(|d| d.eq_ignore_ascii_case(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEEKDAYS: [bool; 7] = [true, true, true, true, true, false, false];

    /// 2026-11-25 (a Wednesday) at `hh:mm` Japan time, in ms since the epoch.
    fn wednesday_jst(hh: i64, mm: i64) -> i64 {
        // 2026-11-25T00:00:00Z
        let midnight_utc = 1_795_564_800_000;
        midnight_utc + ((hh - 9) * 60 + mm) * MINUTE_MS
    }

    #[test]
    fn weekday_office_hours_in_japan() {
        let hours = OperatingHours {
            utc_offset_minutes: 540,
            days: WEEKDAYS,
            open: 9 * 60,
            close: 18 * 60,
        };
        assert!(!hours.is_open(wednesday_jst(8, 59)));
        assert!(hours.is_open(wednesday_jst(9, 0)));
        assert!(hours.is_open(wednesday_jst(17, 59)));
        assert!(!hours.is_open(wednesday_jst(18, 0)));
        // Saturday at noon: three days later.
        assert!(!hours.is_open(wednesday_jst(12, 0) + 3 * DAY_MINUTES * MINUTE_MS));
    }

    #[test]
    fn a_night_shift_belongs_to_the_day_it_opened() {
        let hours = OperatingHours {
            utc_offset_minutes: 540,
            days: WEEKDAYS,
            open: 22 * 60,
            close: 6 * 60,
        };
        assert!(hours.is_open(wednesday_jst(23, 0)));
        assert!(hours.is_open(wednesday_jst(5, 0)), "Tuesday's shift");
        assert!(!hours.is_open(wednesday_jst(12, 0)));
        // Saturday 05:00 is the end of Friday's shift; Sunday 05:00 is nobody's.
        let day = DAY_MINUTES * MINUTE_MS;
        assert!(hours.is_open(wednesday_jst(5, 0) + 3 * day));
        assert!(!hours.is_open(wednesday_jst(5, 0) + 4 * day));
    }

    #[test]
    fn times_and_days_parse_strictly() {
        assert_eq!(OperatingHours::parse_time("09:30"), Some(570));
        assert_eq!(OperatingHours::parse_time("24:00"), None);
        assert_eq!(OperatingHours::parse_time("9"), None);
        assert_eq!(OperatingHours::parse_day("Sat"), Some(5));
        assert_eq!(OperatingHours::parse_day("someday"), None);
    }
}
