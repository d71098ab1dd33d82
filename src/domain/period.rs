//! Half-open UTC periods `[start, end)` and their calendar pieces.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Why two instants do not make a period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("start {start} is not before end {end}")]
    Empty {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
}

/// A non-empty half-open interval `[start, end)` in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Period {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl Period {
    /// The instants costd answers for: every upstream's dates have four-digit years, none predates
    /// the Unix epoch, and Atlas asks in whole months, so the last month must end by 9999-12-31.
    pub fn supported() -> Period {
        Period {
            start: DateTime::UNIX_EPOCH,
            end: first_of_month(9999, 12),
        }
    }

    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, PeriodError> {
        if start < end {
            Ok(Period { start, end })
        } else {
            Err(PeriodError::Empty { start, end })
        }
    }

    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }

    pub fn duration(&self) -> Duration {
        self.end - self.start
    }

    pub fn contains(&self, instant: DateTime<Utc>) -> bool {
        self.start <= instant && instant < self.end
    }

    pub fn contains_period(&self, other: &Period) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// The part of `self` inside `other`, if any.
    pub fn intersection(&self, other: &Period) -> Option<Period> {
        Period::new(self.start.max(other.start), self.end.min(other.end)).ok()
    }

    /// The UTC calendar month that holds `instant`.
    pub fn month_of(instant: DateTime<Utc>) -> Period {
        let first = first_of_month(instant.year(), instant.month());
        let next = if instant.month() == 12 {
            first_of_month(instant.year() + 1, 1)
        } else {
            first_of_month(instant.year(), instant.month() + 1)
        };
        Period {
            start: first,
            end: next,
        }
    }

    /// The UTC day that holds `instant`.
    pub fn day_of(instant: DateTime<Utc>) -> Period {
        let start = Utc.from_utc_datetime(&instant.date_naive().and_time(NaiveTime::MIN));
        Period {
            start,
            end: start + Duration::days(1),
        }
    }

    /// The calendar months covering `self`, each clipped to `self`.
    pub fn months(&self) -> Vec<Period> {
        self.pieces(Period::month_of)
    }

    /// The UTC days covering `self`, each clipped to `self`.
    pub fn days(&self) -> Vec<Period> {
        self.pieces(Period::day_of)
    }

    /// How many UTC days `self` touches, without building them.
    pub fn day_count(&self) -> i64 {
        let first = Period::day_of(self.start).start;
        let last = Period::day_of(self.end - Duration::nanoseconds(1)).start;
        (last - first).num_days() + 1
    }

    fn pieces(&self, unit_of: fn(DateTime<Utc>) -> Period) -> Vec<Period> {
        let mut pieces = Vec::new();
        let mut cursor = self.start;
        while cursor < self.end {
            let unit = unit_of(cursor);
            let piece = Period {
                start: cursor,
                end: unit.end.min(self.end),
            };
            pieces.push(piece);
            cursor = piece.end;
        }
        pieces
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}, {})",
            self.start.to_rfc3339(),
            self.end.to_rfc3339()
        )
    }
}

fn first_of_month(year: i32, month: u32) -> DateTime<Utc> {
    // Day 1 exists in every month of every representable year.
    let date = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(NaiveDate::MIN);
    Utc.from_utc_datetime(&date.and_time(NaiveTime::MIN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn empty_and_reversed_periods_are_refused() {
        let t = at("2026-01-01T00:00:00Z");
        assert!(Period::new(t, t).is_err());
        assert!(Period::new(t + Duration::days(1), t).is_err());
    }

    #[test]
    fn months_are_calendar_months_clipped_to_the_period() {
        let period = Period::new(at("2026-01-15T00:00:00Z"), at("2026-03-02T00:00:00Z")).unwrap();
        let months = period.months();
        assert_eq!(months.len(), 3);
        assert_eq!(months[0].start(), at("2026-01-15T00:00:00Z"));
        assert_eq!(months[0].end(), at("2026-02-01T00:00:00Z"));
        assert_eq!(months[2].end(), at("2026-03-02T00:00:00Z"));
    }

    #[test]
    fn december_rolls_into_the_next_year() {
        let month = Period::month_of(at("2025-12-31T23:59:59Z"));
        assert_eq!(month.end(), at("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn days_count_partial_days() {
        let period = Period::new(at("2026-01-01T12:00:00Z"), at("2026-01-03T00:00:01Z")).unwrap();
        assert_eq!(period.days().len(), 3);
        assert_eq!(period.day_count(), 3);
    }

    proptest! {
        #[test]
        fn pieces_tile_the_period(start in 0i64..2_000_000_000, len in 1i64..100_000_000) {
            let start = DateTime::from_timestamp(start, 0).unwrap();
            let period = Period::new(start, start + Duration::seconds(len)).unwrap();
            for pieces in [period.months(), period.days()] {
                prop_assert_eq!(pieces.first().unwrap().start(), period.start());
                prop_assert_eq!(pieces.last().unwrap().end(), period.end());
                for pair in pieces.windows(2) {
                    prop_assert_eq!(pair[0].end(), pair[1].start());
                }
            }
            prop_assert_eq!(period.days().len() as i64, period.day_count());
        }
    }
}
