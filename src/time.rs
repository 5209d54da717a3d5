//! Time as runledger sees it: UTC instants in microseconds, calendar-aligned buckets, and the one
//! parser and formatters for the date-time spellings the APIs accept and write.
//!
//! Bucket arithmetic works on whole seconds since the Unix epoch with Howard Hinnant's civil-date
//! algorithms, so it is exact for every date between the years 1 and 9999 and costs a few integer
//! operations (no time-zone database, no allocation).

use std::fmt;

use crate::error::quote;

/// Microseconds in a second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// The first second runledger accepts: 0001-01-01 00:00:00 UTC.
pub const MIN_SECOND: i64 = -62_135_596_800;
/// The last second runledger accepts: 9999-12-31 23:59:59 UTC.
pub const MAX_SECOND: i64 = 253_402_300_799;

/// An instant in UTC, with microsecond precision, between the years 1 and 9999.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `micros` microseconds after the Unix epoch, if it lies in the years 1 to 9999.
    pub fn from_micros(micros: i64) -> Option<Self> {
        let second = micros.div_euclid(MICROS_PER_SECOND);
        (MIN_SECOND..=MAX_SECOND)
            .contains(&second)
            .then_some(Self(micros))
    }

    /// The start of a whole second, if it lies in the years 1 to 9999.
    pub fn from_second(second: i64) -> Option<Self> {
        (MIN_SECOND..=MAX_SECOND)
            .contains(&second)
            .then_some(Self(second * MICROS_PER_SECOND))
    }

    /// The instant from protobuf-style seconds and nanoseconds (nanoseconds below a microsecond
    /// are dropped).
    pub fn from_seconds_nanos(seconds: i64, nanos: i32) -> Option<Self> {
        if !(0..1_000_000_000).contains(&nanos) {
            return None;
        }
        let micros = seconds.checked_mul(MICROS_PER_SECOND)? + i64::from(nanos / 1_000);
        Self::from_micros(micros)
    }

    /// The current time.
    pub fn now() -> Self {
        let micros = chrono::Utc::now().timestamp_micros();
        Self::from_micros(micros).expect("the system clock is between the years 1 and 9999")
    }

    /// Microseconds since the Unix epoch.
    pub fn micros(self) -> i64 {
        self.0
    }

    /// The whole second containing this instant.
    pub fn second(self) -> i64 {
        self.0.div_euclid(MICROS_PER_SECOND)
    }

    /// The microseconds past the whole second.
    pub fn subsec_micros(self) -> u32 {
        self.0.rem_euclid(MICROS_PER_SECOND) as u32
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 with a `Z`, fractional seconds only when non-zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_rfc3339(*self))
    }
}

/// A calendar bucket size that stats can be aggregated by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Period {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl Period {
    pub const ALL: [Period; 5] = [
        Period::Day,
        Period::Week,
        Period::Month,
        Period::Quarter,
        Period::Year,
    ];

    /// The rollup level that stores this period's buckets.
    pub fn level(self) -> Level {
        match self {
            Period::Day => Level::Day,
            Period::Week => Level::Week,
            Period::Month => Level::Month,
            Period::Quarter => Level::Quarter,
            Period::Year => Level::Year,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Quarter => "quarter",
            Period::Year => "year",
        }
    }
}

impl std::str::FromStr for Period {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Period::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| "must be one of day, week, month, quarter, year".to_string())
    }
}

/// A rollup level: the periods users ask for, plus the hour. A record of the hour, day, month
/// or year level also holds its *parts*: the tallies of the seconds of the hour, the hours of the
/// day, the days of the month, the months of the year. A second-precision range is then answered
/// by descending from years to the seconds of an hour, one record per level at each edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl Level {
    /// Every level, finest first.
    pub const ALL: [Level; 6] = [
        Level::Hour,
        Level::Day,
        Level::Week,
        Level::Month,
        Level::Quarter,
        Level::Year,
    ];

    /// The level's tag in storage keys. Part of the file format: never renumber.
    pub fn tag(self) -> u8 {
        match self {
            Level::Hour => 2,
            Level::Day => 3,
            Level::Week => 4,
            Level::Month => 5,
            Level::Quarter => 6,
            Level::Year => 7,
        }
    }

    /// The start (in seconds since the epoch) of the bucket containing `second`.
    pub fn bucket_start(self, second: i64) -> i64 {
        match self {
            Level::Hour => second - second.rem_euclid(3_600),
            Level::Day => second - second.rem_euclid(SECONDS_PER_DAY),
            Level::Week => {
                let day = second.div_euclid(SECONDS_PER_DAY);
                // 1970-01-01 was a Thursday: with Monday as 0 it is weekday 3.
                (day - (day + 3).rem_euclid(7)) * SECONDS_PER_DAY
            }
            Level::Month | Level::Quarter | Level::Year => {
                let (year, month, _) = civil_from_days(second.div_euclid(SECONDS_PER_DAY));
                let first_month = match self {
                    Level::Month => month,
                    Level::Quarter => (month - 1) / 3 * 3 + 1,
                    _ => 1,
                };
                days_from_civil(year, first_month, 1) * SECONDS_PER_DAY
            }
        }
    }

    /// The start of the bucket after the one starting at `start` (which must be a bucket start).
    pub fn next_bucket(self, start: i64) -> i64 {
        match self {
            Level::Hour => start + 3_600,
            Level::Day => start + SECONDS_PER_DAY,
            Level::Week => start + 7 * SECONDS_PER_DAY,
            Level::Month | Level::Quarter | Level::Year => {
                let (year, month, _) = civil_from_days(start.div_euclid(SECONDS_PER_DAY));
                let months = match self {
                    Level::Month => 1,
                    Level::Quarter => 3,
                    _ => 12,
                };
                let index = i64::from(month - 1) + months;
                let (year, month) = (year + index.div_euclid(12), index.rem_euclid(12) + 1);
                days_from_civil(year, month as u32, 1) * SECONDS_PER_DAY
            }
        }
    }

    /// The bucket containing `second` at every level, in [`Level::ALL`] order, with one
    /// calendar conversion for all of them (the hot path of every write).
    pub fn bucket_starts(second: i64) -> [i64; 6] {
        let day = second.div_euclid(SECONDS_PER_DAY);
        let (year, month, _) = civil_from_days(day);
        let month_start = |month: u32| days_from_civil(year, month, 1) * SECONDS_PER_DAY;
        [
            second - second.rem_euclid(3_600),
            day * SECONDS_PER_DAY,
            (day - (day + 3).rem_euclid(7)) * SECONDS_PER_DAY,
            month_start(month),
            month_start((month - 1) / 3 * 3 + 1),
            month_start(1),
        ]
    }

    /// Whether records of this level hold parts.
    pub fn has_parts(self) -> bool {
        !matches!(self, Level::Week | Level::Quarter)
    }

    /// The level of a record's parts: an hour's parts are single seconds (`None`).
    pub fn part_level(self) -> Option<Level> {
        match self {
            Level::Day => Some(Level::Hour),
            Level::Month => Some(Level::Day),
            Level::Year => Some(Level::Month),
            Level::Hour | Level::Week | Level::Quarter => None,
        }
    }

    /// Which part of the bucket starting at `start` holds `second`, if the level has parts.
    pub fn part_index(self, start: i64, second: i64) -> Option<u16> {
        let index = match self {
            Level::Hour => second - start,
            Level::Day => (second - start) / 3_600,
            Level::Month => (second - start) / SECONDS_PER_DAY,
            Level::Year => {
                let (_, month, _) = civil_from_days(second.div_euclid(SECONDS_PER_DAY));
                i64::from(month - 1)
            }
            Level::Week | Level::Quarter => return None,
        };
        Some(index as u16)
    }

    /// The seconds `[first, end)` of part `index` of the bucket starting at `start`.
    pub fn part_span(self, start: i64, index: u16) -> (i64, i64) {
        let index = i64::from(index);
        match self {
            Level::Hour => (start + index, start + index + 1),
            Level::Day => (start + index * 3_600, start + (index + 1) * 3_600),
            Level::Month => (
                start + index * SECONDS_PER_DAY,
                start + (index + 1) * SECONDS_PER_DAY,
            ),
            Level::Year => {
                let (year, _, _) = civil_from_days(start.div_euclid(SECONDS_PER_DAY));
                let first = days_from_civil(year, index as u32 + 1, 1) * SECONDS_PER_DAY;
                (first, Level::Month.next_bucket(first))
            }
            Level::Week | Level::Quarter => (start, self.next_bucket(start)),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date (year, month, day) of a day number since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Writes a whole second as `Y-m-d H:i:s`, the stats bodies' format.
pub fn format_datetime(second: i64) -> String {
    let mut out = String::with_capacity(19);
    push_datetime(&mut out, second, ' ');
    out
}

/// Writes an instant as RFC 3339 with a `Z`: `2024-03-22T12:57:49Z`, with milliseconds or
/// microseconds only when the instant is not a whole second.
pub fn format_rfc3339(at: Timestamp) -> String {
    let mut out = String::with_capacity(27);
    push_datetime(&mut out, at.second(), 'T');
    let micros = at.subsec_micros();
    if micros != 0 {
        if micros % 1_000 == 0 {
            push_digits(&mut out, micros / 1_000, 3, '.');
        } else {
            push_digits(&mut out, micros, 6, '.');
        }
    }
    out.push('Z');
    out
}

fn push_datetime(out: &mut String, second: i64, separator: char) {
    let (year, month, day) = civil_from_days(second.div_euclid(SECONDS_PER_DAY));
    let in_day = second.rem_euclid(SECONDS_PER_DAY) as u32;
    if (0..10_000).contains(&year) {
        push_digits(out, year as u32, 4, '\0');
    } else {
        out.push_str(&year.to_string());
    }
    push_digits(out, month, 2, '-');
    push_digits(out, day, 2, '-');
    push_digits(out, in_day / 3_600, 2, separator);
    push_digits(out, in_day / 60 % 60, 2, ':');
    push_digits(out, in_day % 60, 2, ':');
}

/// Appends `prefix` (unless NUL) and `value` zero-padded to `width` digits.
fn push_digits(out: &mut String, value: u32, width: u32, prefix: char) {
    if prefix != '\0' {
        out.push(prefix);
    }
    for place in (0..width).rev() {
        let digit = value / 10u32.pow(place) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// Which end of an inclusive range a path date-time stands for; it decides what a date alone
/// means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeEnd {
    /// A date alone means 00:00:00 of that day.
    Start,
    /// A date alone means the day's last second, 23:59:59 (inclusive, so up to 23:59:59.999999).
    End,
}

/// Parses a date-time from a URL path: `Y-m-d H:i:s` (the space may be written `T`), or `Y-m-d`
/// alone, read according to `end`. Returns the whole second; a fraction or a `Z` is tolerated and
/// the fraction ignored, since ranges are at second precision.
pub fn parse_path_datetime(text: &str, end: RangeEnd) -> Result<i64, String> {
    if text.len() == 10 {
        let (year, month, day) = parse_date(text.as_bytes(), text)?;
        let start = days_from_civil(year, month, day) * SECONDS_PER_DAY;
        return Ok(match end {
            RangeEnd::Start => start,
            RangeEnd::End => start + SECONDS_PER_DAY - 1,
        });
    }
    parse_instant(text).map(Timestamp::second)
}

/// Parses an instant written as RFC 3339 (`2024-03-22T12:57:49.5+01:00`) or as `Y-m-d H:i:s`
/// with an optional fraction, which is read as UTC. This is the one date-time parser: every
/// spelling runledger accepts goes through it.
pub fn parse_instant(text: &str) -> Result<Timestamp, String> {
    let bytes = text.as_bytes();
    let invalid = || {
        format!(
            "{} is not a date-time (expected `Y-m-d H:i:s` or RFC 3339, in UTC)",
            quote(text)
        )
    };
    if bytes.len() < 19 || !matches!(bytes[10], b' ' | b'T' | b't') {
        return Err(invalid());
    }
    let (year, month, day) = parse_date(&bytes[..10], text)?;
    if bytes[13] != b':' || bytes[16] != b':' {
        return Err(invalid());
    }
    let hour = two_digits(&bytes[11..13]).ok_or_else(invalid)?;
    let minute = two_digits(&bytes[14..16]).ok_or_else(invalid)?;
    let second = two_digits(&bytes[17..19]).ok_or_else(invalid)?;
    if hour > 23 || minute > 59 || second > 59 {
        return Err(format!("{} has a time of day out of range", quote(text)));
    }
    let mut rest = &bytes[19..];
    let mut micros = 0i64;
    if let Some((b'.', fraction)) = rest.split_first() {
        let digits = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return Err(invalid());
        }
        for (place, digit) in fraction[..digits].iter().enumerate().take(6) {
            micros += i64::from(digit - b'0') * 10i64.pow(5 - place as u32);
        }
        rest = &fraction[digits..];
    }
    let offset_seconds = match rest {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = two_digits(&[*h1, *h2]).ok_or_else(invalid)?;
            let minutes = two_digits(&[*m1, *m2]).ok_or_else(invalid)?;
            if hours > 23 || minutes > 59 {
                return Err(format!("{} has a UTC offset out of range", quote(text)));
            }
            let offset = i64::from(hours * 3_600 + minutes * 60);
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return Err(invalid()),
    };
    let seconds = days_from_civil(year, month, day) * SECONDS_PER_DAY
        + i64::from(hour * 3_600 + minute * 60 + second)
        - offset_seconds;
    Timestamp::from_micros(seconds * MICROS_PER_SECOND + micros)
        .ok_or_else(|| format!("{} is outside the years 1 to 9999", quote(text)))
}

/// Parses `Y-m-d` (exactly ten bytes) and checks that the day exists.
fn parse_date(bytes: &[u8], text: &str) -> Result<(i64, u32, u32), String> {
    let invalid = || format!("{} is not a date (expected `Y-m-d`)", quote(text));
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return Err(invalid());
    }
    let year = two_digits(&bytes[0..2]).ok_or_else(invalid)? * 100
        + two_digits(&bytes[2..4]).ok_or_else(invalid)?;
    let month = two_digits(&bytes[5..7]).ok_or_else(invalid)?;
    let day = two_digits(&bytes[8..10]).ok_or_else(invalid)?;
    let year = i64::from(year);
    if year == 0 {
        return Err(format!("{} is outside the years 1 to 9999", quote(text)));
    }
    if !(1..=12).contains(&month) {
        return Err(format!(
            "{} is not a valid date: there is no month {month}",
            quote(text)
        ));
    }
    let last_day = days_in_month(year, month);
    if day == 0 || day > last_day {
        return Err(format!(
            "{} is not a valid date: {year:04}-{month:02} has {last_day} days",
            quote(text)
        ));
    }
    Ok((year, month, day))
}

fn two_digits(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            Some(u32::from(a - b'0') * 10 + u32::from(b - b'0'))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn second_of(text: &str) -> i64 {
        parse_instant(text).unwrap().second()
    }

    #[test]
    fn civil_round_trip_over_the_whole_supported_range() {
        let first = MIN_SECOND.div_euclid(SECONDS_PER_DAY);
        let last = MAX_SECOND.div_euclid(SECONDS_PER_DAY);
        let mut expected = (1i64, 1u32, 1u32);
        for day in first..=last {
            assert_eq!(civil_from_days(day), expected, "day {day}");
            let (y, m, d) = expected;
            assert_eq!(days_from_civil(y, m, d), day);
            expected = if d < days_in_month(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn known_bucket_starts() {
        let at = second_of("2024-02-29 13:45:07");
        let cases = [
            (Level::Hour, "2024-02-29 13:00:00"),
            (Level::Day, "2024-02-29 00:00:00"),
            (Level::Week, "2024-02-26 00:00:00"),
            (Level::Month, "2024-02-01 00:00:00"),
            (Level::Quarter, "2024-01-01 00:00:00"),
            (Level::Year, "2024-01-01 00:00:00"),
        ];
        for (level, start) in cases {
            assert_eq!(format_datetime(level.bucket_start(at)), start, "{level:?}");
        }
        // 2024-12-30 is a Monday whose week runs into 2025.
        let monday = second_of("2024-12-30 00:00:00");
        assert_eq!(
            Level::Week.bucket_start(second_of("2025-01-05 23:59:59")),
            monday
        );
        assert_eq!(
            format_datetime(Level::Quarter.next_bucket(second_of("2024-10-01 00:00:00")) - 1),
            "2024-12-31 23:59:59"
        );
        assert_eq!(
            format_datetime(Level::Month.next_bucket(second_of("2020-01-01 00:00:00")) - 1),
            "2020-01-31 23:59:59"
        );
    }

    #[test]
    fn parses_the_accepted_spellings() {
        let expected = second_of("2024-01-01 14:23:01");
        for text in [
            "2024-01-01T14:23:01",
            "2024-01-01t14:23:01z",
            "2024-01-01T14:23:01Z",
            "2024-01-01T15:23:01+01:00",
            "2024-01-01T13:23:01-01:00",
            "2024-01-01 14:23:01.999",
        ] {
            assert_eq!(parse_instant(text).unwrap().second(), expected, "{text}");
        }
        let precise = parse_instant("2024-01-01T14:23:01.1234567Z").unwrap();
        assert_eq!(precise.subsec_micros(), 123_456);
        assert_eq!(
            parse_path_datetime("2024-01-01", RangeEnd::Start).unwrap(),
            second_of("2024-01-01 00:00:00")
        );
        assert_eq!(
            parse_path_datetime("2024-01-01", RangeEnd::End).unwrap(),
            second_of("2024-01-01 23:59:59")
        );
    }

    #[test]
    fn rejects_what_is_not_a_date_time_with_a_reason() {
        let cases = [
            ("2024-02-30", "2024-02 has 29 days"),
            ("2023-02-29 00:00:00", "2023-02 has 28 days"),
            ("2024-13-01", "no month 13"),
            ("0000-01-01", "outside the years"),
            ("2024-01-01 24:00:00", "out of range"),
            ("2024-01-01 23:59:60", "out of range"),
            ("2024-1-01", "not a date"),
            ("yesterday", "not a date"),
            ("2024-01-01 12:00", "not a date-time"),
            ("2024-01-01T12:00:00+25:00", "offset out of range"),
            ("2024-01-01T12:00:00.Z", "not a date-time"),
            ("", "not a date"),
        ];
        for (text, reason) in cases {
            let error = parse_path_datetime(text, RangeEnd::Start).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn formats_rfc3339_with_fractions_only_when_needed() {
        let whole = parse_instant("2024-03-22T12:57:49Z").unwrap();
        assert_eq!(format_rfc3339(whole), "2024-03-22T12:57:49Z");
        let millis = parse_instant("2024-03-22T12:57:49.250Z").unwrap();
        assert_eq!(format_rfc3339(millis), "2024-03-22T12:57:49.250Z");
        let micros = parse_instant("2024-03-22T12:57:49.000001Z").unwrap();
        assert_eq!(format_rfc3339(micros), "2024-03-22T12:57:49.000001Z");
        let early = parse_instant("0001-01-01T00:00:00Z").unwrap();
        assert_eq!(format_rfc3339(early), "0001-01-01T00:00:00Z");
    }

    proptest! {
        #[test]
        fn bucket_starts_agree_with_each_level(second in MIN_SECOND..=MAX_SECOND) {
            let starts = Level::bucket_starts(second);
            for (level, start) in Level::ALL.into_iter().zip(starts) {
                prop_assert_eq!(start, level.bucket_start(second), "{:?}", level);
            }
        }

        #[test]
        fn every_instant_falls_in_exactly_one_bucket_per_level(second in MIN_SECOND..=MAX_SECOND - 400 * 86_400) {
            for level in Level::ALL {
                let start = level.bucket_start(second);
                let next = level.next_bucket(start);
                prop_assert!(start <= second && second < next, "{:?}", level);
                prop_assert_eq!(level.bucket_start(start), start);
                prop_assert_eq!(level.bucket_start(next), next);
                prop_assert_eq!(level.bucket_start(next - 1), start);
            }
        }

        #[test]
        fn parts_tile_their_bucket_and_are_buckets_of_the_finer_level(second in MIN_SECOND..=MAX_SECOND - 400 * 86_400) {
            for level in Level::ALL.into_iter().filter(|l| l.has_parts()) {
                let start = level.bucket_start(second);
                let index = level.part_index(start, second).unwrap();
                let (first, end) = level.part_span(start, index);
                prop_assert!(first <= second && second < end, "{:?}", level);
                if let Some(finer) = level.part_level() {
                    prop_assert_eq!(finer.bucket_start(second), first);
                    prop_assert_eq!(finer.next_bucket(first), end);
                } else {
                    prop_assert_eq!(end - first, 1);
                }
                // The first and last parts meet the bucket's edges.
                prop_assert_eq!(level.part_span(start, 0).0, start);
                let last = level.part_index(start, level.next_bucket(start) - 1).unwrap();
                prop_assert_eq!(level.part_span(start, last).1, level.next_bucket(start));
            }
        }

        #[test]
        fn formatting_round_trips(micros in MIN_SECOND * MICROS_PER_SECOND..=MAX_SECOND * MICROS_PER_SECOND) {
            let at = Timestamp::from_micros(micros).unwrap();
            prop_assert_eq!(parse_instant(&format_rfc3339(at)).unwrap(), at);
            prop_assert_eq!(second_of(&format_datetime(at.second())), at.second());
        }
    }
}
