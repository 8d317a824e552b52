//! UTC calendar time for recording names, sidecars and event times, without a date
//! crate: the civil-from-days conversion is a dozen lines (H. Hinnant's
//! algorithm) and siprelay needs nothing else of calendars.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A UTC instant broken into calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
}

impl Utc {
    pub fn from_system(t: SystemTime) -> Utc {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let secs = since.as_secs() as i64;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        Utc {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
            millis: since.subsec_millis(),
        }
    }

    /// `2026-11-22T15:15:00.123Z`
    pub fn rfc3339(&self) -> String {
        format!(
            "{}T{:02}:{:02}:{:02}.{:03}Z",
            self.date(),
            self.hour,
            self.minute,
            self.second,
            self.millis
        )
    }

    /// `2026-11-22`
    pub fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `20261122T151500Z`: sorts by time as text.
    pub fn compact(&self) -> String {
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Parses `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS[.fff]Z` into the compact
/// form (`YYYYMMDDTHHMMSS`), which compares with recording ids as text.
pub fn compact_from_text(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .filter(|d| d.iter().all(u8::is_ascii_digit))
            .map(|_| &text[r])
    };
    let date = format!("{}{}{}", digits(0..4)?, digits(5..7)?, digits(8..10)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if b.len() == 10 {
        return Some(format!("{date}T000000"));
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return None;
    }
    if b.get(16) != Some(&b':') {
        return None;
    }
    let time = format!("{}{}{}", digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let rest = &text[19..];
    let rest = rest
        .strip_prefix('.')
        .map(|r| r.trim_start_matches(|c: char| c.is_ascii_digit()))
        .unwrap_or(rest);
    matches!(rest, "Z" | "z" | "").then(|| format!("{date}T{time}"))
}

/// The instant an [`Utc::rfc3339`] text (`YYYY-MM-DDTHH:MM:SS[.fff]Z`) names.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(r)?;
        part.bytes()
            .all(|d| d.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let millis = match (b.get(19), b.last()) {
        (Some(b'Z'), _) if b.len() == 20 => 0,
        (Some(b'.'), Some(b'Z')) if b.len() == 24 => num(20..23)?,
        _ => return None,
    };
    let days = days_from_civil(year, month as u32, day as u32);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis as u64))
}

/// Days since 1970-01-01 of a civil date (the inverse of `civil_from_days`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_text_reads_back_as_the_same_instant() {
        for millis in [0, 951_782_400_000, 1_795_360_500_123, 4_107_542_399_999] {
            let t = UNIX_EPOCH + Duration::from_millis(millis);
            let text = Utc::from_system(t).rfc3339();
            assert_eq!(parse_rfc3339(&text), Some(t), "{text}");
        }
        assert_eq!(
            parse_rfc3339("2026-11-22T15:15:00Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_795_360_500))
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-11-22 15:15:00Z",
            "2026-11-22T15:15:00.1Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_known_instants() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_360_500_123);
        let utc = Utc::from_system(t);
        assert_eq!(utc.rfc3339(), "2026-11-22T15:15:00.123Z");
        assert_eq!(utc.compact(), "20261122T151500Z");
        assert_eq!(
            Utc::from_system(UNIX_EPOCH).rfc3339(),
            "1970-01-01T00:00:00.000Z"
        );
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(Utc::from_system(leap).date(), "2000-02-29");
    }

    #[test]
    fn parses_filter_times() {
        assert_eq!(compact_from_text("2026-11-22").unwrap(), "20261122T000000");
        assert_eq!(
            compact_from_text("2026-11-22T15:15:07.5Z").unwrap(),
            "20261122T151507"
        );
        for bad in [
            "",
            "2026",
            "2026-1-22",
            "2026-11-22T15",
            "20261122",
            "2026-11-22T15:15:07+02:00",
            "２０２６-11-22",
        ] {
            assert_eq!(compact_from_text(bad), None, "{bad}");
        }
    }
}
