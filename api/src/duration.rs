//! Gateway API duration strings (GEP-2257): one to four `<number><unit>` parts, units `h`, `m`,
//! `s`, `ms`, numbers of at most five digits: `10s`, `1h30m`, `500ms`, `0s`. Skiff's own kinds
//! use the same format so that users learn one.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a duration: use one to four parts of a number (up to 5 digits) \
     and a unit h, m, s or ms, like \"10s\", \"1h30m\" or \"500ms\""
)]
pub struct DurationError(pub String);

/// Parses a Gateway API duration.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let error = || DurationError(text.to_string());
    let mut rest = text.as_bytes();
    let mut total = Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 5 {
            return Err(error());
        }
        let number: u64 = text_of(&rest[..digits]).parse().map_err(|_| error())?;
        rest = &rest[digits..];
        let (unit, length) = match rest {
            [b'm', b's', ..] => (Duration::from_millis(1), 2),
            [b'h', ..] => (Duration::from_secs(3600), 1),
            [b'm', ..] => (Duration::from_secs(60), 1),
            [b's', ..] => (Duration::from_secs(1), 1),
            _ => return Err(error()),
        };
        rest = &rest[length..];
        total += unit * u32::try_from(number).map_err(|_| error())?;
        parts += 1;
        if parts > 4 {
            return Err(error());
        }
    }
    if parts == 0 {
        return Err(error());
    }
    Ok(total)
}

/// The digits we just checked are ASCII, so this never fails.
fn text_of(digits: &[u8]) -> &str {
    std::str::from_utf8(digits).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gateway_durations() {
        let ok = [
            ("10s", Duration::from_secs(10)),
            ("1h30m", Duration::from_secs(5400)),
            ("500ms", Duration::from_millis(500)),
            ("0s", Duration::ZERO),
            ("1h1m1s1ms", Duration::from_millis(3_661_001)),
            ("99999h", Duration::from_secs(99_999 * 3600)),
        ];
        for (text, expected) in ok {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "10 s",
            "1d",
            "100000s",
            "1h1m1s1ms1s",
            "1S",
            " 1s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
