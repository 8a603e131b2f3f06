//! Celery's timestamps: ISO 8601 `eta`/`expires` (naive means UTC) and
//! `date_done` with microseconds and `+00:00`.

use chrono::{DateTime, Utc};

pub fn parse_iso(text: &str) -> Option<DateTime<Utc>> {
    let _ = text;
    None
}

/// `2026-11-23T23:33:59.145310+00:00`
pub fn format_iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}
