//! Celery's timestamps: ISO 8601 `eta`/`expires` (naive means UTC) and
//! `date_done` with microseconds and `+00:00`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Parses what Python's `datetime.isoformat()` (or another producer) writes:
/// with an offset (`+00:00`, `+0000`, `Z`) or naive, which Celery takes as
/// UTC. `T` or a space may separate date and time; a bare date is midnight.
pub fn parse_iso(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for sep in ['T', ' '] {
        let with_offset = [
            format!("%Y-%m-%d{sep}%H:%M:%S%.f%:z"),
            format!("%Y-%m-%d{sep}%H:%M:%S%.f%z"),
            format!("%Y-%m-%d{sep}%H:%M%:z"),
        ];
        for fmt in &with_offset {
            if let Ok(t) = DateTime::parse_from_str(text, fmt) {
                return Some(t.with_timezone(&Utc));
            }
        }
        let naive = [
            format!("%Y-%m-%d{sep}%H:%M:%S%.f"),
            format!("%Y-%m-%d{sep}%H:%M"),
        ];
        let body = text.strip_suffix('Z').unwrap_or(text);
        for fmt in &naive {
            if let Ok(t) = NaiveDateTime::parse_from_str(body, fmt) {
                return Some(t.and_utc());
            }
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// `2026-11-23T23:33:59.145310+00:00`
pub fn format_iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// Python's `datetime.isoformat()` of an aware UTC datetime, as Celery's
/// client writes `eta`/`expires`: microseconds only when non-zero
/// (`2030-01-01T12:00:00+00:00`, `2026-11-23T23:33:22.982474+00:00`).
pub fn format_isoformat(t: DateTime<Utc>) -> String {
    if t.timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    } else {
        format_iso(t)
    }
}

/// A number of seconds from a message, a flag or a setting as a `Duration`,
/// or `None` when it is not a usable limit (not finite, 0 or less). Capped
/// at ten years, so adding it to an `Instant` cannot overflow.
pub fn duration_secs(secs: f64) -> Option<std::time::Duration> {
    const MAX: f64 = 10.0 * 365.0 * 86400.0;
    if !secs.is_finite() || secs <= 0.0 {
        return None;
    }
    std::time::Duration::try_from_secs_f64(secs.min(MAX)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn parses_python_isoformat() {
        let want = Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap();
        for s in [
            "2030-01-01T12:00:00+00:00",
            "2030-01-01T12:00:00Z",
            "2030-01-01T12:00:00",
            "2030-01-01 12:00:00",
            "2030-01-01T14:00:00+02:00",
            "2030-01-01T07:00:00-0500",
            "2030-01-01T12:00",
        ] {
            assert_eq!(parse_iso(s), Some(want), "{s}");
        }
        let t = parse_iso("2026-11-23T23:33:22.982474+00:00").unwrap();
        assert_eq!(t.timestamp_subsec_micros(), 982474);
        assert_eq!(format_iso(t), "2026-11-23T23:33:22.982474+00:00");
        assert_eq!(parse_iso("2026-11-23T23:33:22.982474").unwrap(), t);
        assert_eq!(
            parse_iso("2030-01-01"),
            Some(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap())
        );
        assert_eq!(parse_iso("not a date"), None);
        assert_eq!(parse_iso(""), None);
    }

    #[test]
    fn formats() {
        let t = Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap();
        assert_eq!(format_iso(t), "2030-01-01T12:00:00.000000+00:00");
        assert_eq!(format_isoformat(t), "2030-01-01T12:00:00+00:00");
    }
}
