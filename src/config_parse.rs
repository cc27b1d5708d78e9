//! Parsing single settings: durations, booleans, origins, and secrets that
//! may come from files.

use super::{err, ConfigError, Sources};
use std::time::Duration;
use url::Url;

/// The longest duration any setting takes: beyond it, times would overflow
/// the calendar (a retry due in 10,000 years).
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|_| format!("{text:?} is not a duration (write e.g. 5s, 500ms, 2m)"))?;
    if d > MAX_DURATION {
        return Err(format!("{text:?} is longer than 10 years"));
    }
    Ok(d)
}

/// A browser origin: scheme, host and port only (`https://app.example.com`).
pub(super) fn parse_origin(text: &str) -> Result<String, String> {
    let url = Url::parse(text)
        .map_err(|_| format!("{text:?} is not an origin like https://app.example.com"))?;
    let origin = url.origin().ascii_serialization();
    if !matches!(url.scheme(), "http" | "https") || origin != text.trim_end_matches('/') {
        return Err(format!(
            "{text:?} is not an origin like https://app.example.com (no path)"
        ));
    }
    Ok(origin)
}

/// A secret from its setting, or from the file its `_FILE` setting names
/// (the Docker and Kubernetes secrets convention). Errors never show it.
pub(super) fn secret_value(
    s: &Sources,
    env: &'static str,
    file_env: &'static str,
) -> Result<Option<String>, ConfigError> {
    match (s.get(env), s.get(file_env)) {
        (Some(_), Some(_)) => Err(err(
            env,
            format!("is set twice: here and through {file_env}"),
        )),
        (Some(v), None) => Ok(Some(v.to_string())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| err(file_env, format!("cannot read {path}: {}", e.kind())))?;
            let value = text.trim_end_matches(['\n', '\r']).to_string();
            Ok(Some(value).filter(|v| !v.is_empty()))
        }
        (None, None) => Ok(None),
    }
}

pub(super) fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{text:?} is not true or false")),
    }
}
