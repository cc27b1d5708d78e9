//! Where settings come from: a TOML file's keys and the environment's names, the environment winning.

use super::{err, ConfigError};
use std::collections::HashMap;
use std::path::Path;

/// `(environment name, TOML key)` of every setting; the environment wins.
const SETTINGS: &[(&str, &str)] = &[
    ("VERRIFLO_ORG_ID", "org_id"),
    ("VERRIFLO_API_URL", "api_url"),
    ("RELAY_ADMIN_TOKEN", "admin_token"),
    ("RELAY_LISTEN", "listen"),
    ("RELAY_DATA_DIR", "data_dir"),
    ("RELAY_POLL_INTERVAL", "poll_interval"),
    ("RELAY_ROOMS", "rooms"),
    ("RELAY_MAX_RPS", "max_rps"),
    ("RELAY_POLL_BUDGET", "poll_budget"),
    ("RELAY_POLL_INTERVAL_MAX", "poll_interval_max"),
    ("RELAY_INITIAL_EVENTS", "initial_events"),
    ("RELAY_RETRY_SCHEDULE", "retry_schedule"),
    ("RELAY_DELIVERY_TIMEOUT", "delivery_timeout"),
    ("RELAY_ALLOW_PRIVATE_TARGETS", "allow_private_targets"),
    ("RELAY_LOG_FORMAT", "log_format"),
    ("RELAY_MAX_IN_FLIGHT", "max_in_flight"),
    ("RELAY_POLL_BACKOFF_MAX", "poll_backoff_max"),
    ("RELAY_DELIVERY_CONCURRENCY", "delivery_concurrency"),
    ("RELAY_CACHE_MB", "cache_mb"),
    ("RELAY_UPSTREAM_TIMEOUT", "upstream_timeout"),
    ("RELAY_SHUTDOWN_GRACE", "shutdown_grace"),
    ("RELAY_MAX_SUBSCRIPTIONS", "max_subscriptions"),
    ("RELAY_MAX_ROOMS", "max_rooms"),
    ("RELAY_MAX_BODY", "max_body"),
    ("RELAY_REQUEST_TIMEOUT", "request_timeout"),
    ("RELAY_RETENTION", "retention"),
    ("RELAY_READY_MAX_BACKLOG", "ready_max_backlog"),
    ("RELAY_WEBHOOK_PROXY", "webhook_proxy"),
    ("RELAY_HEADER_TIMEOUT", "header_timeout"),
    ("RELAY_MAX_CONNECTIONS", "max_connections"),
    ("RELAY_MAX_REQUESTS", "max_requests"),
    ("RELAY_PUBLIC_LISTEN", "public_listen"),
    ("RELAY_CORS_ORIGINS", "cors_origins"),
    ("RELAY_DATABASE_URL", "database_url"),
    ("RELAY_LEASE_TTL", "lease_ttl"),
    ("RELAY_INSTANCE_ID", "instance_id"),
    ("RELAY_ADMIN_TOKEN_FILE", "admin_token_file"),
    ("VERRIFLO_ORG_ID_FILE", "org_id_file"),
];

/// Raw values by environment name, each with where it came from.
#[derive(Default, Debug, Clone)]
pub struct Sources {
    values: HashMap<&'static str, String>,
}

impl Sources {
    /// The process environment over an optional TOML file.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut s = match file {
            Some(path) => Self::from_toml_file(path)?,
            None => Self::default(),
        };
        s.overlay(std::env::vars());
        Ok(s)
    }

    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("--config", format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| ConfigError {
            setting: format!("--config {}: {}", path.display(), e.setting),
            message: e.message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| err("syntax", e.message().to_string()))?;
        let mut values = HashMap::new();
        for (key, value) in table {
            let (env, _) = SETTINGS
                .iter()
                .find(|(_, k)| *k == key)
                .ok_or_else(|| err(&key, "unknown setting"))?;
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            values.insert(*env, text);
        }
        Ok(Self { values })
    }

    /// Later values win: this is how the environment overrides the file.
    pub fn overlay(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (k, v) in vars {
            if let Some((env, _)) = SETTINGS.iter().find(|(e, _)| *e == k) {
                self.values.insert(env, v);
            }
        }
    }

    pub fn set(&mut self, env: &'static str, value: impl Into<String>) {
        self.values.insert(env, value.into());
    }

    pub(super) fn get(&self, env: &str) -> Option<&str> {
        self.values
            .get(env)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }
}
