//! Timestamps as Azure writes them, parsed into UTC instants truncated to whole
//! microseconds.
//!
//! Activity Log `time` fields arrive in many shapes: RFC 3339 with 0 to 9
//! fractional digits and a `Z` or a numeric offset, ISO 8601 without a zone
//! (taken as UTC), US dates from portal and Log Analytics exports
//! (`1/9/2007 9:41:00 AM`, `8/25/2025 8:11:21.937 PM`, optionally followed by
//! an offset), and epoch seconds or milliseconds as numbers or digit strings.
//!
//! Every result is truncated to whole microseconds, the precision Postgres
//! keeps, so that an instant compares equal to itself after a database round
//! trip. Slash dates are always month/day/year: `25/08/2025` is an error, not
//! a guess.

use chrono::{DateTime, NaiveDate, NaiveTime, SubsecRound, TimeDelta, Utc};
use serde_json::Value;

/// Epoch values at or above this are milliseconds, below it seconds
/// (10^11 seconds is the year 5138; 10^11 milliseconds is 1973).
const EPOCH_MILLIS_THRESHOLD: u64 = 100_000_000_000;

/// Why a value is not a usable time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("empty time value")]
    Empty,
    #[error("expected a time as a string or a number, got {0}")]
    NotStringOrNumber(&'static str),
    #[error("unrecognised time format: {0:?}")]
    Unrecognised(String),
    #[error("invalid time {value:?}: {reason}")]
    Invalid { value: String, reason: &'static str },
    #[error("time out of range: {0:?}")]
    OutOfRange(String),
}

/// How far ahead of this server's clock evidence may be dated. Clocks drift
/// a little; evidence from further ahead was stamped by a wrong clock or in
/// a wrong zone, and taken as it is it would make claims certain until a
/// time nothing has seen yet (a snapshot dated next year "confirms" every
/// NIC it lists until then).
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Why evidence dated `t` cannot be taken: it is later than this server's
/// clock plus [`MAX_CLOCK_SKEW_SECS`]. `None` when it can.
pub fn from_the_future(t: DateTime<Utc>) -> Option<String> {
    let now = Utc::now();
    (t > now + TimeDelta::seconds(MAX_CLOCK_SKEW_SECS)).then(|| {
        format!(
            "{} is in the future (this server's clock reads {}): evidence cannot be \
             dated after it was observed; check the clock or the time zone that stamped it",
            t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    })
}

/// Parses one time string (see the module docs for the accepted shapes).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, TimeError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(TimeError::Empty);
    }
    let b = t.as_bytes();
    if let Some((int, frac)) = split_epoch(t) {
        return epoch(t, int, frac);
    }
    let lead = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let parsed = match b.get(lead) {
        Some(b'-') if lead == 4 => parse_iso(t)?,
        Some(b'/') if (1..=2).contains(&lead) => parse_us(t)?,
        _ => match DateTime::parse_from_rfc2822(t) {
            Ok(dt) => dt.with_timezone(&Utc),
            Err(_) => return Err(TimeError::Unrecognised(t.to_string())),
        },
    };
    Ok(parsed.trunc_subsecs(6))
}

/// Parses a JSON time: a string (any shape [`parse_time`] accepts) or a
/// number of epoch seconds or milliseconds.
pub fn parse_time_value(v: &Value) -> Result<DateTime<Utc>, TimeError> {
    match v {
        Value::String(s) => parse_time(s),
        Value::Number(n) => {
            let text = n.to_string();
            match split_epoch(&text) {
                Some((int, frac)) => epoch(&text, int, frac),
                None if text.starts_with('-') => Err(TimeError::Invalid {
                    value: text,
                    reason: "negative epoch time",
                }),
                None => Err(TimeError::Invalid {
                    value: text,
                    reason: "epoch time in exponent notation",
                }),
            }
        }
        Value::Null => Err(TimeError::NotStringOrNumber("null")),
        Value::Bool(_) => Err(TimeError::NotStringOrNumber("a boolean")),
        Value::Array(_) => Err(TimeError::NotStringOrNumber("an array")),
        Value::Object(_) => Err(TimeError::NotStringOrNumber("an object")),
    }
}

/// `digits` or `digits.digits`: the integer and fractional parts.
fn split_epoch(t: &str) -> Option<(&str, &str)> {
    let (int, frac) = match t.split_once('.') {
        Some((i, f)) => (i, f),
        None => (t, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    (!int.is_empty() && all_digits(int) && all_digits(frac)).then_some((int, frac))
}

fn epoch(value: &str, int: &str, frac: &str) -> Result<DateTime<Utc>, TimeError> {
    let out_of_range = || TimeError::OutOfRange(value.to_string());
    let whole: u64 = int.parse().map_err(|_| out_of_range())?;
    let unit_nanos: i128 = if whole >= EPOCH_MILLIS_THRESHOLD {
        1_000_000
    } else {
        1_000_000_000
    };
    // Fraction of one unit, in billionths.
    let frac_billionths = i128::from(fraction_nanos(frac));
    let total = i128::from(whole) * unit_nanos + frac_billionths * unit_nanos / 1_000_000_000;
    let secs = i64::try_from(total.div_euclid(1_000_000_000)).map_err(|_| out_of_range())?;
    let nanos = total.rem_euclid(1_000_000_000) as u32;
    DateTime::from_timestamp(secs, nanos)
        .map(|dt| dt.trunc_subsecs(6))
        .ok_or_else(out_of_range)
}

/// The first nine fractional digits as nanoseconds (right-padded); further
/// digits are dropped.
fn fraction_nanos(frac: &str) -> u32 {
    let mut n = 0u32;
    for i in 0..9 {
        let d = frac.as_bytes().get(i).map_or(0, |c| u32::from(c - b'0'));
        n = n * 10 + d;
    }
    n
}

/// A byte cursor over an ASCII time string.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Self {
            s: s.as_bytes(),
            i: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) -> bool {
        let start = self.i;
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
        self.i > start
    }

    /// Between `min` and `max` decimal digits.
    fn number(&mut self, min: usize, max: usize) -> Option<u32> {
        let start = self.i;
        let mut n = 0u32;
        while self.i - start < max {
            match self.peek() {
                Some(c @ b'0'..=b'9') => {
                    n = n * 10 + u32::from(c - b'0');
                    self.i += 1;
                }
                _ => break,
            }
        }
        (self.i - start >= min).then_some(n)
    }

    /// One or more fractional digits after the separator has been consumed.
    fn fraction(&mut self) -> Option<u32> {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        if self.i == start {
            return None;
        }
        let digits = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        Some(fraction_nanos(digits))
    }

    /// Case-insensitive keyword.
    fn keyword(&mut self, word: &str) -> bool {
        let end = self.i + word.len();
        if end <= self.s.len() && self.s[self.i..end].eq_ignore_ascii_case(word.as_bytes()) {
            self.i = end;
            true
        } else {
            false
        }
    }
}

/// A parsed wall-clock time: hours, minutes, seconds, nanoseconds.
struct Clock {
    h: u32,
    m: u32,
    s: u32,
    nanos: u32,
}

fn invalid(value: &str, reason: &'static str) -> TimeError {
    TimeError::Invalid {
        value: value.to_string(),
        reason,
    }
}

/// `HH:MM[:SS[.fff]]` with 1 or 2 digit hours.
fn clock(c: &mut Cursor<'_>, value: &str) -> Result<Clock, TimeError> {
    let h = c
        .number(1, 2)
        .ok_or_else(|| invalid(value, "expected hours"))?;
    if !c.eat(b':') {
        return Err(invalid(value, "expected ':' after hours"));
    }
    let m = c
        .number(2, 2)
        .ok_or_else(|| invalid(value, "expected two-digit minutes"))?;
    let mut s = 0;
    let mut nanos = 0;
    if c.eat(b':') {
        s = c
            .number(2, 2)
            .ok_or_else(|| invalid(value, "expected two-digit seconds"))?;
        if c.eat(b'.') || c.eat(b',') {
            nanos = c
                .fraction()
                .ok_or_else(|| invalid(value, "expected digits after the decimal point"))?;
        }
    }
    Ok(Clock { h, m, s, nanos })
}

/// An optional zone at the end: `Z`, `UTC`, `GMT`, `+HH:MM`, `+HHMM` or `+HH`.
/// Returns the offset east of UTC in seconds (0 when there is none).
fn zone(c: &mut Cursor<'_>, value: &str) -> Result<i32, TimeError> {
    c.skip_spaces();
    if c.done() {
        return Ok(0);
    }
    if c.keyword("UTC") || c.keyword("GMT") || c.eat(b'Z') || c.eat(b'z') {
        if c.done() {
            return Ok(0);
        }
        if !matches!(c.peek(), Some(b'+' | b'-')) {
            return Err(invalid(value, "unexpected text after the zone"));
        }
    }
    let sign = match c.peek() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(invalid(value, "unexpected text after the time")),
    };
    c.i += 1;
    let h = c
        .number(2, 2)
        .ok_or_else(|| invalid(value, "expected a two-digit offset hour"))?;
    let colon = c.eat(b':');
    let m = match c.number(2, 2) {
        Some(m) => m,
        None if !colon => 0,
        None => return Err(invalid(value, "expected two-digit offset minutes")),
    };
    if !c.done() {
        return Err(invalid(value, "unexpected text after the offset"));
    }
    if h > 23 || m > 59 {
        return Err(invalid(value, "offset out of range"));
    }
    Ok(sign * (h as i32 * 3600 + m as i32 * 60))
}

fn assemble(
    value: &str,
    date: Option<NaiveDate>,
    clock: Clock,
    offset_secs: i32,
) -> Result<DateTime<Utc>, TimeError> {
    let date = date.ok_or_else(|| invalid(value, "no such date"))?;
    if clock.h > 23 || clock.m > 59 || clock.s > 59 {
        return Err(invalid(value, "time of day out of range"));
    }
    let time = NaiveTime::from_hms_nano_opt(clock.h, clock.m, clock.s, clock.nanos)
        .ok_or_else(|| invalid(value, "time of day out of range"))?;
    date.and_time(time)
        .checked_sub_signed(TimeDelta::seconds(i64::from(offset_secs)))
        .map(|ndt| ndt.and_utc())
        .ok_or_else(|| TimeError::OutOfRange(value.to_string()))
}

/// `YYYY-MM-DD[(T| )HH:MM[:SS[.f]]][zone]`; no zone means UTC.
fn parse_iso(t: &str) -> Result<DateTime<Utc>, TimeError> {
    let mut c = Cursor::new(t);
    let y = c
        .number(4, 4)
        .ok_or_else(|| invalid(t, "expected a four-digit year"))?;
    let mo = (c.eat(b'-').then(|| c.number(2, 2)).flatten())
        .ok_or_else(|| invalid(t, "expected '-MM' after the year"))?;
    let d = (c.eat(b'-').then(|| c.number(2, 2)).flatten())
        .ok_or_else(|| invalid(t, "expected '-DD' after the month"))?;
    let date = NaiveDate::from_ymd_opt(y as i32, mo, d);
    if c.done() {
        let midnight = Clock {
            h: 0,
            m: 0,
            s: 0,
            nanos: 0,
        };
        return assemble(t, date, midnight, 0);
    }
    if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
        return Err(invalid(t, "expected 'T' between date and time"));
    }
    let clk = clock(&mut c, t)?;
    let off = zone(&mut c, t)?;
    assemble(t, date, clk, off)
}

/// `M/D/YYYY[ H:MM[:SS[.f]][ AM|PM]][ zone]`: the US form of portal and Log
/// Analytics exports.
fn parse_us(t: &str) -> Result<DateTime<Utc>, TimeError> {
    let mut c = Cursor::new(t);
    let mo = c
        .number(1, 2)
        .ok_or_else(|| invalid(t, "expected a month"))?;
    let d = (c.eat(b'/').then(|| c.number(1, 2)).flatten())
        .ok_or_else(|| invalid(t, "expected '/D' after the month"))?;
    let y = (c.eat(b'/').then(|| c.number(4, 4)).flatten())
        .ok_or_else(|| invalid(t, "expected '/YYYY' after the day"))?;
    if mo == 0 || mo > 12 {
        return Err(invalid(t, "month out of range (dates are month/day/year)"));
    }
    let date = NaiveDate::from_ymd_opt(y as i32, mo, d);
    let mut clk = Clock {
        h: 0,
        m: 0,
        s: 0,
        nanos: 0,
    };
    if c.skip_spaces() && matches!(c.peek(), Some(b'0'..=b'9')) {
        clk = clock(&mut c, t)?;
        let mark = c.i;
        c.skip_spaces();
        let pm = if c.keyword("AM") {
            Some(false)
        } else if c.keyword("PM") {
            Some(true)
        } else {
            c.i = mark;
            None
        };
        if let Some(pm) = pm {
            if clk.h == 0 || clk.h > 12 {
                return Err(invalid(t, "hour out of range for AM/PM"));
            }
            clk.h = match (clk.h, pm) {
                (12, false) => 0,
                (12, true) => 12,
                (h, false) => h,
                (h, true) => h + 12,
            };
        }
    }
    let off = zone(&mut c, t)?;
    assemble(t, date, clk, off)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const CORNER_CASES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/samples/azure/elastic-integrations__azure_activitylogs__test-time-formats-corner-cases.log"
    );

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, micros: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap() + TimeDelta::microseconds(micros.into())
    }

    /// Every `time` in the Elastic corner-case file, with the instant it means.
    /// All of them denote 2007-01-09 09:41 UTC (plus a fraction).
    const CORNER_TABLE: [(&str, u32); 11] = [
        ("01/09/2007 09:41:00", 0),
        ("1/9/2007 09:41:00", 0),
        ("01/09/2007 09:41:00 AM", 0),
        ("1/9/2007 9:41:00 AM", 0),
        ("1/9/2007 10:41:00 AM +01:00", 0),
        ("2007-01-09T09:41:00", 0),
        ("2007-01-09T09:41:00.22Z", 220_000),
        ("2007-01-09T09:41:00.6816663Z", 681_666),
        ("2007-01-09T09:41:00.535404056Z", 535_404),
        ("2007-01-09T09:41:00.992099+00:00", 992_099),
        ("2007-01-09T11:41:00+02:00", 0),
    ];

    macro_rules! corner_line {
        ($name:ident, $line:expr) => {
            #[test]
            fn $name() {
                let (input, micros) = CORNER_TABLE[$line];
                assert_eq!(
                    parse_time(input).unwrap(),
                    utc(2007, 1, 9, 9, 41, 0, micros),
                    "{input}"
                );
            }
        };
    }
    corner_line!(corner_us_date_zero_padded, 0);
    corner_line!(corner_us_date_unpadded, 1);
    corner_line!(corner_us_date_am, 2);
    corner_line!(corner_us_date_unpadded_hour_am, 3);
    corner_line!(corner_us_date_am_with_offset, 4);
    corner_line!(corner_iso_without_zone_is_utc, 5);
    corner_line!(corner_iso_two_fraction_digits, 6);
    corner_line!(corner_iso_seven_fraction_digits_truncated, 7);
    corner_line!(corner_iso_nine_fraction_digits_truncated, 8);
    corner_line!(corner_iso_zero_offset, 9);
    corner_line!(corner_iso_plus_two_hours, 10);

    #[test]
    #[cfg_attr(
        not(feature = "samples"),
        ignore = "reads ../shared/samples: --features samples"
    )]
    fn every_line_of_the_corner_case_file_is_in_the_table_and_parses() {
        let text = std::fs::read_to_string(CORNER_CASES).unwrap();
        let mut seen = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let rec: Value = serde_json::from_str(line).unwrap();
            let time = rec["time"].as_str().unwrap();
            let (_, micros) = CORNER_TABLE
                .iter()
                .find(|(s, _)| *s == time)
                .unwrap_or_else(|| panic!("time {time:?} has no expected instant"));
            assert_eq!(
                parse_time_value(&rec["time"]).unwrap(),
                utc(2007, 1, 9, 9, 41, 0, *micros),
                "{time}"
            );
            seen += 1;
        }
        assert_eq!(seen, CORNER_TABLE.len());
    }

    #[test]
    fn log_analytics_export_locale_form() {
        assert_eq!(
            parse_time("8/25/2025 8:11:21.937 PM").unwrap(),
            utc(2025, 8, 25, 20, 11, 21, 937_000)
        );
        assert_eq!(
            parse_time("8/25/2025 12:00:00 AM").unwrap(),
            utc(2025, 8, 25, 0, 0, 0, 0)
        );
        assert_eq!(
            parse_time("8/25/2025 12:30:00 PM").unwrap(),
            utc(2025, 8, 25, 12, 30, 0, 0)
        );
    }

    #[test]
    fn rfc3339_variants() {
        let cases = [
            (
                "2019-01-21T22:14:26.9792776Z",
                utc(2019, 1, 21, 22, 14, 26, 979_277),
            ),
            ("2019-01-21t22:14:26z", utc(2019, 1, 21, 22, 14, 26, 0)),
            (
                "2019-01-21 22:14:26.5",
                utc(2019, 1, 21, 22, 14, 26, 500_000),
            ),
            (
                "2019-01-21T22:14:26.9-05:30",
                utc(2019, 1, 22, 3, 44, 26, 900_000),
            ),
            ("2019-01-21T22:14:26+0100", utc(2019, 1, 21, 21, 14, 26, 0)),
            ("2019-01-21T22:14:26+01", utc(2019, 1, 21, 21, 14, 26, 0)),
            ("2019-01-21T22:14Z", utc(2019, 1, 21, 22, 14, 0, 0)),
            (
                "2019-01-21T22:14:26.123456789123Z",
                utc(2019, 1, 21, 22, 14, 26, 123_456),
            ),
            ("2019-01-21T22:14:26 UTC", utc(2019, 1, 21, 22, 14, 26, 0)),
            ("2019-01-21", utc(2019, 1, 21, 0, 0, 0, 0)),
            ("  2019-01-21T22:14:26Z  ", utc(2019, 1, 21, 22, 14, 26, 0)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_time(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn epoch_seconds_and_milliseconds_by_magnitude() {
        let secs = utc(2019, 10, 24, 0, 13, 46, 0);
        assert_eq!(parse_time("1571876026").unwrap(), secs);
        assert_eq!(
            parse_time("1571876026123").unwrap(),
            secs + TimeDelta::milliseconds(123)
        );
        assert_eq!(
            parse_time("1571876026.1234567").unwrap(),
            secs + TimeDelta::microseconds(123_456)
        );
        assert_eq!(
            parse_time_value(&serde_json::json!(1571876026)).unwrap(),
            secs
        );
        assert_eq!(
            parse_time_value(&serde_json::json!(1571876026123u64)).unwrap(),
            secs + TimeDelta::milliseconds(123)
        );
        // Floats go through their decimal text, so no binary rounding leaks in.
        assert_eq!(
            parse_time_value(&serde_json::json!(1571876026.123)).unwrap(),
            secs + TimeDelta::milliseconds(123)
        );
        // The threshold: 10^11 - 1 is seconds (year 5138), 10^11 is milliseconds.
        assert_eq!(
            parse_time("100000000000").unwrap(),
            DateTime::from_timestamp(100_000_000, 0).unwrap()
        );
        assert_eq!(
            parse_time("99999999999").unwrap(),
            DateTime::from_timestamp(99_999_999_999, 0).unwrap()
        );
        assert_eq!(parse_time("0").unwrap(), DateTime::UNIX_EPOCH);
    }

    #[test]
    fn results_are_whole_microseconds() {
        for input in [
            "2007-01-09T09:41:00.535404056Z",
            "1571876026.123456789",
            "1/9/2007 9:41:00.9999999 PM",
        ] {
            let t = parse_time(input).unwrap();
            assert_eq!(t.timestamp_subsec_nanos() % 1000, 0, "{input}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(parse_time("   "), Err(TimeError::Empty));
        assert!(matches!(
            parse_time("yesterday"),
            Err(TimeError::Unrecognised(_))
        ));
        assert!(matches!(
            parse_time("25/08/2025 10:00:00"),
            Err(TimeError::Invalid { .. })
        ));
        assert!(matches!(
            parse_time("2019-02-30T00:00:00Z"),
            Err(TimeError::Invalid { .. })
        ));
        assert!(matches!(
            parse_time("2019-01-21T24:00:00Z"),
            Err(TimeError::Invalid { .. })
        ));
        assert!(matches!(
            parse_time("2019-01-21T10:00:00+25:00"),
            Err(TimeError::Invalid { .. })
        ));
        assert!(matches!(
            parse_time("2019-01-21T10:00:00Zjunk"),
            Err(TimeError::Invalid { .. })
        ));
        assert!(matches!(
            parse_time("1/9/2007 13:41:00 PM"),
            Err(TimeError::Invalid { .. })
        ));
        assert!(matches!(
            parse_time("99999999999999999999999"),
            Err(TimeError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_time_value(&serde_json::json!(-5)),
            Err(TimeError::Invalid { .. })
        ));
        assert_eq!(
            parse_time_value(&serde_json::json!(true)),
            Err(TimeError::NotStringOrNumber("a boolean"))
        );
        assert_eq!(
            parse_time_value(&Value::Null),
            Err(TimeError::NotStringOrNumber("null"))
        );
        let msg = parse_time("25/08/2025 10:00:00").unwrap_err().to_string();
        assert!(msg.contains("25/08/2025") && msg.contains("month"), "{msg}");
    }

    #[test]
    fn rfc2822_is_accepted_as_a_fallback() {
        assert_eq!(
            parse_time("Tue, 1 Jul 2003 10:52:37 +0200").unwrap(),
            utc(2003, 7, 1, 8, 52, 37, 0)
        );
    }
}
