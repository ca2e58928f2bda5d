//! TIME arguments: RFC 3339 (`2026-12-01T10:00:00Z`), a local `YYYY-MM-DD HH:MM[:SS]`, or a
//! span ago (`90m`, `2h`, `3d`).

use anyhow::Context;
use chrono::{DateTime, Local, NaiveDateTime, TimeZone};

/// The moment `text` names, in milliseconds since the Unix epoch; a span counts back from
/// `now_ms`.
///
/// # Errors
/// When `text` is none of the three forms, or a local time that does not exist (a DST gap).
pub fn parse_time(text: &str, now_ms: i64) -> anyhow::Result<i64> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.timestamp_millis());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            let local = Local
                .from_local_datetime(&naive)
                .earliest()
                .with_context(|| format!("{text:?} does not exist in the local time zone"))?;
            return Ok(local.timestamp_millis());
        }
    }
    let span = humantime::parse_duration(text).with_context(|| {
        format!(
            "invalid TIME {text:?}: use RFC 3339 (2026-12-01T10:00:00Z), a local \
             \"2026-12-01 10:00[:SS]\", or a span ago (90m, 2h, 3d)"
        )
    })?;
    let span_ms = i64::try_from(span.as_millis()).context("span too long")?;
    Ok(now_ms.saturating_sub(span_ms))
}

/// The current time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_exact() {
        assert_eq!(
            parse_time("2026-12-01T10:00:00Z", 0).unwrap(),
            1_796_119_200_000
        );
        assert_eq!(
            parse_time("2026-12-01T11:00:00+01:00", 0).unwrap(),
            1_796_119_200_000
        );
    }

    #[test]
    fn spans_count_back_from_now() {
        let now = 1_000_000_000_000;
        assert_eq!(parse_time("90m", now).unwrap(), now - 90 * 60_000);
        assert_eq!(parse_time("2h", now).unwrap(), now - 2 * 3_600_000);
        assert_eq!(parse_time("3d", now).unwrap(), now - 3 * 86_400_000);
    }

    #[test]
    fn local_times_parse_with_and_without_seconds() {
        let minutes = parse_time("2026-12-01 10:00", 0).unwrap();
        let seconds = parse_time("2026-12-01 10:00:30", 0).unwrap();
        assert_eq!(seconds - minutes, 30_000);
    }

    #[test]
    fn nonsense_is_refused_with_the_forms() {
        let err = parse_time("yesterday-ish", 0).unwrap_err().to_string();
        assert!(err.contains("RFC 3339"), "{err}");
    }
}
