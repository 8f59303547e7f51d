//! Durations on the command line: `500ms`, `10s`, `2m`, `1h`, their sums (`1m30s`,
//! `1h 5m`), or plain seconds (`1.5`).

use std::time::Duration;

/// Parses a duration; the error says what is accepted.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let bad = || format!("invalid duration {s:?} (use e.g. 500ms, 10s, 1m30s, 2h, or seconds: 1.5)");
    let too_long = || format!("invalid duration {s:?} (longer than about 584 years)");
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| {
            if secs.is_finite() && secs > 0.0 {
                too_long()
            } else {
                bad()
            }
        });
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, after) = rest.split_at(digits);
        let units = after.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(after.len());
        let (unit, tail) = after.split_at(units);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let seconds = match unit {
            "ms" => n / 1e3,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(bad()),
        };
        total =
            total.checked_add(Duration::try_from_secs_f64(seconds).map_err(|_| too_long())?).ok_or_else(too_long)?;
        rest = tail;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_sums_and_plain_seconds() {
        let d = |s| parse_duration(s).unwrap();
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("10s"), Duration::from_secs(10));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("1h 5m"), Duration::from_secs(3900));
        assert_eq!(d("2h"), Duration::from_secs(7200));
        assert_eq!(d("1.5"), Duration::from_millis(1500));
        assert_eq!(d("0.25s"), Duration::from_millis(250));
        for bad in ["", "x", "10x", "s", "1m-2s", "-1", "NaN", "inf", "99999999999999999999s", "1e30"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
