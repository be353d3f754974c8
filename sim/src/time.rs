//! Simulated time: `i64` microseconds since the Unix epoch, and the textual
//! forms the simulator writes (Activity Log `time` with 7 fractional digits,
//! RFC 3339 with microseconds for lookups, hour stamps for file names).
//!
//! Formatting is hand-rolled because the generator prints millions of
//! timestamps and chrono's formatter is the slow part of that.

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

pub const MS: Micros = 1_000;
pub const SEC: Micros = 1_000_000;
pub const MIN: Micros = 60 * SEC;
pub const HOUR: Micros = 60 * MIN;
pub const DAY: Micros = 24 * HOUR;

/// Calendar fields of an instant (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
}

/// Splits an instant into calendar fields (proleptic Gregorian, UTC).
pub fn civil(t: Micros) -> Civil {
    let days = t.div_euclid(DAY);
    let rem = t.rem_euclid(DAY);
    // Days since 1970-01-01 to (y, m, d): the classic era-based algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let secs = rem / SEC;
    Civil {
        year,
        month,
        day,
        hour: (secs / 3600) as u32,
        minute: ((secs / 60) % 60) as u32,
        second: (secs % 60) as u32,
        micros: (rem % SEC) as u32,
    }
}

/// `2025-03-03T10:00:01.1234560Z`: the 7-digit form of Activity Log and flow
/// log record `time` fields.
pub fn fmt7(t: Micros) -> String {
    let c = civil(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}0Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.micros
    )
}

/// `2025-03-03T10:00:01.123456Z`: RFC 3339 with microseconds, exact for
/// every simulated instant.
pub fn fmt_us(t: Micros) -> String {
    let c = civil(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.micros
    )
}

/// `2025-03-03T10:00:01Z`: RFC 3339 without fractions (snapshot metadata).
pub fn fmt_s(t: Micros) -> String {
    let c = civil(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `20250303T10`: an hour stamp for file names.
pub fn hour_stamp(t: Micros) -> String {
    let c = civil(t);
    format!("{:04}{:02}{:02}T{:02}", c.year, c.month, c.day, c.hour)
}

/// Parses RFC 3339 (any number of fractional digits; digits past the
/// microsecond are truncated).
pub fn parse(s: &str) -> Option<Micros> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|d| d.timestamp_micros())
}

/// Serde helpers for `Micros` fields written as RFC 3339 strings.
pub mod serde_us {
    use super::Micros;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Micros, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::fmt_us(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Micros, D::Error> {
        let s = String::deserialize(d)?;
        super::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad time {s:?}")))
    }

    /// The same for `Option<Micros>` (`null` = unbounded).
    pub mod opt {
        use super::super::Micros;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(t: &Option<Micros>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&super::super::fmt_us(*t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Micros>, D::Error> {
            let s = Option::<String>::deserialize(d)?;
            match s {
                None => Ok(None),
                Some(s) => super::super::parse(&s)
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom(format!("bad time {s:?}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_chrono() {
        for t in [
            0i64,
            1_741_000_000_123_456,
            951_782_400_000_000, // 2000-02-29
            4_102_444_799_999_999,
            1_709_164_800_000_001, // 2024-02-29
        ] {
            let d = chrono::DateTime::from_timestamp_micros(t).unwrap();
            assert_eq!(
                fmt_us(t),
                d.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                "{t}"
            );
            assert_eq!(parse(&fmt_us(t)), Some(t));
            assert_eq!(parse(&fmt7(t)), Some(t));
            assert_eq!(fmt7(t).len(), "2025-03-03T10:00:01.1234560Z".len());
        }
        assert_eq!(hour_stamp(1_741_000_000_123_456), "20250303T11");
    }
}
