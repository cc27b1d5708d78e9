//! Settings: read from an optional TOML file and the environment, typed and
//! validated before anything starts.

use crate::secret::{AdminToken, OrgId};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// A setting that could not be used. Its display is the one line printed at exit.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    pub setting: String,
    pub message: String,
}

fn err(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.to_string(),
        message: message.into(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Every setting of the relay, typed.
#[derive(Clone, Debug)]
pub struct Config {
    pub org_id: Option<OrgId>,
    pub api_url: Url,
    pub admin_token: Option<AdminToken>,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub poll_interval: Duration,
    pub rooms: Vec<String>,
    pub max_rps: u32,
    /// Upstream requests per second to spend where changes are likely; 0
    /// polls every room at the fixed interval.
    pub poll_budget: u32,
    pub poll_interval_max: Duration,
    pub initial_events: bool,
    pub retry_schedule: Vec<Duration>,
    pub delivery_timeout: Duration,
    pub allow_private_targets: bool,
    pub log_format: LogFormat,
    /// Requests to the upstream in flight at once.
    pub max_in_flight: usize,
    /// Longest wait between polls of a failing room.
    pub poll_backoff_max: Duration,
    /// Deliveries in flight at once.
    pub delivery_concurrency: usize,
    /// sled's page cache, in bytes.
    pub cache_capacity: u64,
    /// How long one upstream request may take.
    pub upstream_timeout: Duration,
    /// How long shutdown waits for work in flight.
    pub shutdown_grace: Duration,
    pub max_subscriptions: usize,
    pub max_rooms: usize,
    /// Largest admin request body, in bytes.
    pub max_body: usize,
    /// How long one admin request may take.
    pub request_timeout: Duration,
    /// Events and finished deliveries older than this are pruned.
    pub retention: Duration,
    /// Pending deliveries past which `/readyz` fails.
    pub ready_max_backlog: u64,
    /// An HTTP proxy for webhooks, only when set here: the standard proxy
    /// variables never apply to webhooks (they would bypass the SSRF guard).
    pub webhook_proxy: Option<Url>,
    /// How long a client may take to send a request's headers (and to stay
    /// idle between keep-alive requests).
    pub header_timeout: Duration,
    /// Open HTTP connections at most, on each listener.
    pub max_connections: usize,
    /// Admin requests in flight at once.
    pub max_requests: usize,
    /// A second listener serving only the drop-in route and health checks.
    pub public_listen: Option<SocketAddr>,
    /// Origins allowed to call the drop-in route from a browser.
    pub cors_origins: Vec<String>,
    /// Cluster mode: all state in this PostgreSQL instead of sled.
    pub database_url: Option<DatabaseUrl>,
    /// Cluster mode: how long a room's lease outlives its last renewal.
    pub lease_ttl: Duration,
    /// Cluster mode: this instance's name in leases (default: host and pid).
    pub instance_id: Option<String>,
}

/// `RELAY_DATABASE_URL`, which may carry a password: never printed.
#[derive(Clone)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(..)")
    }
}

pub const DEFAULT_RETRY_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,14h,20h,24h";

#[path = "config_sources.rs"]
mod sources;
pub use sources::Sources;

#[path = "config_parse.rs"]
mod parse;
pub use parse::parse_duration;
use parse::{parse_bool, parse_origin, secret_value};

impl Config {
    /// Parse every setting; `serve` additionally needs the org id and token.
    pub fn from_sources(s: &Sources) -> Result<Self, ConfigError> {
        fn typed<T>(
            s: &Sources,
            env: &str,
            default: &str,
            parse: impl Fn(&str) -> Result<T, String>,
        ) -> Result<T, ConfigError> {
            parse(s.get(env).unwrap_or(default)).map_err(|m| err(env, m))
        }
        let positive = |env: &str, d: Duration| {
            if d.is_zero() {
                Err(err(env, "must be greater than zero"))
            } else {
                Ok(d)
            }
        };
        let count = |t: &str| {
            t.parse::<usize>()
                .map_err(|_| format!("{t:?} is not a whole number"))
        };

        let org_id = secret_value(s, "VERRIFLO_ORG_ID", "VERRIFLO_ORG_ID_FILE")?
            .map(|v| OrgId::parse(&v).map_err(|m| err("VERRIFLO_ORG_ID", m)))
            .transpose()?;
        let admin_token = secret_value(s, "RELAY_ADMIN_TOKEN", "RELAY_ADMIN_TOKEN_FILE")?
            .map(|v| AdminToken::parse(&v).map_err(|m| err("RELAY_ADMIN_TOKEN", m)))
            .transpose()?;
        // URLs are logged, so one with credentials in it is refused (and
        // never echoed: the message names the parts, not the value).
        let http_url = |t: &str| {
            let url = Url::parse(t).map_err(|e| format!("is not a URL: {e}"))?;
            if !url.username().is_empty() || url.password().is_some() {
                return Err("must not carry credentials (user:password@)".to_string());
            }
            match url.scheme() {
                "http" | "https" if url.host().is_some() => Ok(url),
                _ => Err(format!("{t:?} is not an http(s) URL")),
            }
        };
        let api_url = typed(s, "VERRIFLO_API_URL", "https://api.verriflo.com", http_url)?;
        let webhook_proxy = s
            .get("RELAY_WEBHOOK_PROXY")
            .map(|t| http_url(t).map_err(|m| err("RELAY_WEBHOOK_PROXY", m)))
            .transpose()?;
        let listen = typed(s, "RELAY_LISTEN", "127.0.0.1:8080", |t| {
            t.parse::<SocketAddr>()
                .map_err(|_| format!("{t:?} is not an address like 127.0.0.1:8080"))
        })?;
        let data_dir = PathBuf::from(s.get("RELAY_DATA_DIR").unwrap_or("./data"));
        let poll_interval = positive(
            "RELAY_POLL_INTERVAL",
            typed(s, "RELAY_POLL_INTERVAL", "5s", parse_duration)?,
        )?;
        let rooms = s
            .get("RELAY_ROOMS")
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(|r| {
                        crate::room::RoomId::parse(r)
                            .map(|_| r.to_string())
                            .map_err(|e| err("RELAY_ROOMS", format!("{r:?}: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let max_rps = typed(s, "RELAY_MAX_RPS", "0", |t| {
            t.parse::<u32>()
                .map_err(|_| format!("{t:?} is not a whole number"))
        })?;
        let poll_budget = typed(s, "RELAY_POLL_BUDGET", "0", |t| {
            t.parse::<u32>()
                .map_err(|_| format!("{t:?} is not a whole number of requests per second"))
        })?;
        let poll_interval_max = positive(
            "RELAY_POLL_INTERVAL_MAX",
            typed(s, "RELAY_POLL_INTERVAL_MAX", "60s", parse_duration)?,
        )?;
        if poll_interval_max < poll_interval {
            return Err(err(
                "RELAY_POLL_INTERVAL_MAX",
                "is shorter than RELAY_POLL_INTERVAL".to_string(),
            ));
        }
        let initial_events = typed(s, "RELAY_INITIAL_EVENTS", "false", parse_bool)?;
        let retry_schedule = typed(s, "RELAY_RETRY_SCHEDULE", DEFAULT_RETRY_SCHEDULE, |t| {
            t.split(',')
                .map(parse_duration)
                .collect::<Result<Vec<_>, _>>()
        })?;
        let delivery_timeout = positive(
            "RELAY_DELIVERY_TIMEOUT",
            typed(s, "RELAY_DELIVERY_TIMEOUT", "15s", parse_duration)?,
        )?;
        let allow_private_targets = typed(s, "RELAY_ALLOW_PRIVATE_TARGETS", "false", parse_bool)?;
        let log_format = typed(s, "RELAY_LOG_FORMAT", "pretty", |t| match t {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("{t:?} is neither pretty nor json")),
        })?;
        let max_in_flight = typed(s, "RELAY_MAX_IN_FLIGHT", "64", count)?.max(1);
        let poll_backoff_max = positive(
            "RELAY_POLL_BACKOFF_MAX",
            typed(s, "RELAY_POLL_BACKOFF_MAX", "2m", parse_duration)?,
        )?;
        let delivery_concurrency = typed(s, "RELAY_DELIVERY_CONCURRENCY", "64", count)?.max(1);
        let cache_mb = typed(s, "RELAY_CACHE_MB", "8", count)?;
        let upstream_timeout = positive(
            "RELAY_UPSTREAM_TIMEOUT",
            typed(s, "RELAY_UPSTREAM_TIMEOUT", "10s", parse_duration)?,
        )?;
        let shutdown_grace = typed(s, "RELAY_SHUTDOWN_GRACE", "10s", parse_duration)?;
        let max_subscriptions = typed(s, "RELAY_MAX_SUBSCRIPTIONS", "1000", count)?;
        let max_rooms = typed(s, "RELAY_MAX_ROOMS", "50000", count)?;
        let max_body = typed(s, "RELAY_MAX_BODY", "65536", count)?.max(1024);
        let request_timeout = positive(
            "RELAY_REQUEST_TIMEOUT",
            typed(s, "RELAY_REQUEST_TIMEOUT", "30s", parse_duration)?,
        )?;
        let retention = positive(
            "RELAY_RETENTION",
            typed(s, "RELAY_RETENTION", "30days", parse_duration)?,
        )?;
        let ready_max_backlog = typed(s, "RELAY_READY_MAX_BACKLOG", "100000", count)? as u64;
        let header_timeout = positive(
            "RELAY_HEADER_TIMEOUT",
            typed(s, "RELAY_HEADER_TIMEOUT", "10s", parse_duration)?,
        )?;
        let max_connections = typed(s, "RELAY_MAX_CONNECTIONS", "1024", count)?.max(1);
        let max_requests = typed(s, "RELAY_MAX_REQUESTS", "256", count)?.max(1);
        let public_listen = s
            .get("RELAY_PUBLIC_LISTEN")
            .map(|t| {
                t.parse::<SocketAddr>().map_err(|_| {
                    err(
                        "RELAY_PUBLIC_LISTEN",
                        format!("{t:?} is not an address like 0.0.0.0:8081"),
                    )
                })
            })
            .transpose()?;
        let cors_origins = s
            .get("RELAY_CORS_ORIGINS")
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|o| !o.is_empty())
                    .map(|o| parse_origin(o).map_err(|m| err("RELAY_CORS_ORIGINS", m)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let database_url = s
            .get("RELAY_DATABASE_URL")
            .filter(|t| !t.trim().is_empty())
            .map(|t| match t.split_once("://") {
                Some(("postgres" | "postgresql", _)) => Ok(DatabaseUrl(t.to_string())),
                _ => Err(err(
                    "RELAY_DATABASE_URL",
                    "must be a postgres:// or postgresql:// URL".to_string(),
                )),
            })
            .transpose()?;
        let lease_ttl = positive(
            "RELAY_LEASE_TTL",
            typed(s, "RELAY_LEASE_TTL", "10s", parse_duration)?,
        )?;
        let instance_id = s
            .get("RELAY_INSTANCE_ID")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if rooms.len() > max_rooms {
            return Err(err(
                "RELAY_ROOMS",
                format!(
                    "lists {} rooms, more than RELAY_MAX_ROOMS ({max_rooms})",
                    rooms.len()
                ),
            ));
        }
        Ok(Config {
            org_id,
            api_url,
            admin_token,
            listen,
            data_dir,
            poll_interval,
            rooms,
            max_rps,
            poll_budget,
            poll_interval_max,
            initial_events,
            retry_schedule,
            delivery_timeout,
            allow_private_targets,
            log_format,
            max_in_flight,
            poll_backoff_max,
            delivery_concurrency,
            cache_capacity: cache_mb as u64 * 1024 * 1024,
            upstream_timeout,
            shutdown_grace,
            max_subscriptions,
            max_rooms,
            max_body,
            request_timeout,
            retention,
            ready_max_backlog,
            webhook_proxy,
            header_timeout,
            max_connections,
            max_requests,
            public_listen,
            cors_origins,
            database_url,
            lease_ttl,
            instance_id,
        })
    }

    /// What `serve` needs beyond the defaults.
    pub fn require_serve(&self) -> Result<(&OrgId, &AdminToken), ConfigError> {
        let org = self
            .org_id
            .as_ref()
            .ok_or_else(|| err("VERRIFLO_ORG_ID", "is required by serve"))?;
        let token = self
            .admin_token
            .as_ref()
            .ok_or_else(|| err("RELAY_ADMIN_TOKEN", "is required by serve"))?;
        Ok((org, token))
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
