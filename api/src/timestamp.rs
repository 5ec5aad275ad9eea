//! `metadata.creationTimestamp` (RFC 3339, as the API server writes it: `2024-05-01T12:00:00Z`).
//! Only compared: the Gateway API gives the older of two conflicting routes precedence.

use std::fmt;

/// A point in time, ordered; seconds and nanoseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub seconds: i64,
    /// The fraction of the second, in nanoseconds.
    pub nanos: u32,
}

/// Why a timestamp was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an RFC 3339 time; write it like \"2024-05-01T12:00:00Z\"")]
pub struct TimestampError(pub String);

impl Timestamp {
    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
    pub fn parse(text: &str) -> Result<Timestamp, TimestampError> {
        let error = || TimestampError(text.to_string());
        let bytes = text.as_bytes();
        let number = |range: std::ops::Range<usize>| -> Result<i64, TimestampError> {
            let part = text.get(range).ok_or_else(error)?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(error());
            }
            part.parse().map_err(|_| error())
        };
        let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
        if bytes.len() < 20
            || separators.iter().any(|&(at, c)| bytes[at] != c)
            || !matches!(bytes[10], b'T' | b't' | b' ')
        {
            return Err(error());
        }
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
        if !(1..=12).contains(&month)
            || !(1..=days_in_month(year, month)).contains(&day)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return Err(error());
        }
        let mut rest = 19;
        let mut nanos = 0u32;
        if bytes[rest] == b'.' {
            let digits = bytes[rest + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits == 0 || digits > 9 {
                return Err(error());
            }
            let fraction = number(rest + 1..rest + 1 + digits)?;
            nanos = (fraction * 10i64.pow(9 - digits as u32)) as u32;
            rest += 1 + digits;
        }
        let offset = match &bytes[rest..] {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
                let (h, m) = (number(rest + 1..rest + 3)?, number(rest + 4..rest + 6)?);
                if h > 23 || m > 59 {
                    return Err(error());
                }
                let minutes = h * 60 + m;
                if *sign == b'+' {
                    minutes * 60
                } else {
                    -minutes * 60
                }
            }
            _ => return Err(error()),
        };
        let days = days_from_civil(year, month, day);
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
        Ok(Timestamp { seconds, nanos })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.seconds)
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders_api_server_timestamps() {
        let parse = |t| Timestamp::parse(t).unwrap();
        assert_eq!(parse("1970-01-01T00:00:00Z").seconds, 0);
        assert_eq!(parse("2024-05-01T12:00:00Z").seconds, 1_714_564_800);
        assert_eq!(
            parse("2024-05-01T14:00:00+02:00"),
            parse("2024-05-01T12:00:00Z")
        );
        assert!(parse("2024-05-01T12:00:00.5Z") > parse("2024-05-01T12:00:00Z"));
        assert!(parse("2023-12-31T23:59:59Z") < parse("2024-01-01T00:00:00Z"));
        for bad in [
            "",
            "2024-05-01",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-05-01T12:00:00",
            "2024-05-01T25:00:00Z",
            "yesterday at noon!!",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad:?}");
        }
    }
}
