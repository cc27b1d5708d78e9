//! Logging set-up: human-readable or one JSON object per line.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Log at `default` level unless `RELAY_LOG` (an env-filter) says otherwise.
pub fn init(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_env("RELAY_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.compact().init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
