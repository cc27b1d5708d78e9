//! `Retry-After` as a duration: delta-seconds or an HTTP date.

use axum::http::HeaderMap;
use std::time::Duration;

/// The longest wait honoured, so a hostile header cannot park us for years.
const MAX: Duration = Duration::from_secs(24 * 3600);

pub fn parse(headers: &HeaderMap) -> Option<Duration> {
    parse_value(headers.get("retry-after")?.to_str().ok()?)
}

/// A `Retry-After` header's value as a duration.
pub fn parse_value(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when
        .signed_duration_since(chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    Some(wait.min(MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_dates_and_junk() {
        let mut h = HeaderMap::new();
        assert_eq!(parse(&h), None);
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(parse(&h), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(parse(&h), Some(Duration::ZERO));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(parse(&h), None);
        h.insert("retry-after", "99999999999".parse().unwrap());
        assert_eq!(parse(&h), Some(MAX));
    }
}
