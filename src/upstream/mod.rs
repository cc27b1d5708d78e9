//! The client of Verriflo's Room Status endpoint: one request, one typed outcome.

mod wire;

use crate::keepalive::{self, Answer};
use crate::room::{RoomId, RoomStatus};
use crate::secret::OrgId;
use std::time::Duration;
use url::Url;

/// The largest answer read; the documented one is a few hundred bytes.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Idle connections kept to the upstream, as reqwest's pool would.
const MAX_IDLE: usize = 256;

/// Why a poll did not yield a room state. None of these is ever a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    #[error("upstream answered 400 (room id rejected)")]
    BadRequest,
    #[error("upstream answered 401 (organization id rejected)")]
    Unauthorized,
    #[error("upstream answered 429 (rate limited)")]
    RateLimited { retry_after: Option<Duration> },
    #[error("upstream answered {0}")]
    Status(u16),
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream unreachable: {0}")]
    Connect(String),
    #[error("upstream answer is not the documented JSON: {0}")]
    InvalidBody(String),
}

impl PollError {
    /// A short, bounded label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::RateLimited { .. } => "rate_limited",
            Self::Status(_) => "status",
            Self::Timeout => "timeout",
            Self::Connect(_) => "connect",
            Self::InvalidBody(_) => "invalid_body",
        }
    }
}

const USER_AGENT: &str = concat!("verriflo-relay/", env!("CARGO_PKG_VERSION"));

#[derive(Clone)]
pub struct UpstreamClient {
    transport: std::sync::Arc<Transport>,
    base: Url,
    /// Every request's headers, built once; `VF-ORG-ID` is marked sensitive
    /// (never logged).
    headers: http::HeaderMap,
    timeout: Duration,
}

/// `{base}/v1/room/{roomId}/status`, as reqwest and as hyper take it.
pub struct StatusTarget {
    url: Url,
    uri: Result<http::Uri, String>,
}

/// How a request reaches the upstream: straight, on our own connections,
/// or through reqwest when a proxy is configured (reqwest reads the
/// `*_PROXY` variables and `NO_PROXY`, and tunnels TLS through `CONNECT`).
enum Transport {
    Direct(wire::Wire),
    Proxied(reqwest::Client),
}

impl UpstreamClient {
    pub fn new(base: Url, org: OrgId, timeout: Duration) -> Self {
        let mut org = http::HeaderValue::from_str(org.expose())
            .expect("the org id was checked to be a header value");
        org.set_sensitive(true);
        let mut headers = http::HeaderMap::new();
        if let Some(host) = host_header(&base) {
            headers.insert(http::header::HOST, host);
        }
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(USER_AGENT),
        );
        headers.insert("vf-org-id", org);
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        let transport = if proxy_configured(|k| std::env::var(k).ok()) {
            let http = reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(256)
                .user_agent(USER_AGENT)
                .build()
                .expect("the HTTP client builds with static settings");
            Transport::Proxied(http)
        } else {
            // An http(s) URL's origin is always a URI.
            let origin = base
                .origin()
                .ascii_serialization()
                .parse()
                .expect("the base URL's origin is a URI");
            Transport::Direct(wire::Wire::new(origin, &headers, timeout, MAX_IDLE))
        };
        Self {
            transport: std::sync::Arc::new(transport),
            base,
            headers,
            timeout,
        }
    }

    /// A room's status endpoint, built once per room by the poller.
    pub fn status_target(&self, room: &RoomId) -> StatusTarget {
        let url = status_url(&self.base, room);
        // A `url::Url` is always a valid URI; kept as an error, not a panic.
        let uri = url
            .as_str()
            .parse()
            .map_err(|e: http::uri::InvalidUri| e.to_string());
        StatusTarget { url, uri }
    }

    /// The body of a 200 answer, unparsed; None when it is, byte for byte,
    /// what `known` says was last parsed: a poller that holds that body
    /// settles an unchanged answer with one comparison, and on our own
    /// connections without copying it out of the connection's buffer.
    pub async fn fetch_changed(
        &self,
        target: &StatusTarget,
        known: impl FnOnce(&[u8]) -> bool,
    ) -> Result<Option<Vec<u8>>, PollError> {
        match self.transport.as_ref() {
            Transport::Direct(wire) => {
                let uri = target
                    .uri
                    .as_ref()
                    .map_err(|e| PollError::Connect(e.clone()))?;
                let path = uri.path_and_query().map_or("/", |p| p.as_str());
                let get = wire.get(path, MAX_BODY, |answer| match answer.status {
                    200 => Ok((!known(answer.body)).then(|| answer.body.to_vec())),
                    status => Err(status_error(status, answer.header("retry-after"))),
                });
                // Boxed: the exchange's state is about 2.6 KiB, and a poll
                // waiting for a commit slot would otherwise hold it: 10,000
                // rooms changing at once held 25 MiB more in the outage run.
                tokio::time::timeout(self.timeout, Box::pin(get))
                    .await
                    .map_err(|_| PollError::Timeout)?
                    .map_err(|e| match e {
                        keepalive::Failure::Connect(e) => PollError::Connect(e),
                        keepalive::Failure::Invalid(e) => PollError::InvalidBody(e),
                    })?
            }
            Transport::Proxied(http) => {
                let answer = Box::pin(self.fetch_proxied(http, &target.url)).await?;
                match answer.status {
                    200 => Ok((!known(&answer.body)).then_some(answer.body)),
                    status => {
                        let retry_after = answer.headers.get("retry-after");
                        Err(status_error(
                            status,
                            retry_after.and_then(|v| v.to_str().ok()),
                        ))
                    }
                }
            }
        }
    }

    async fn fetch_proxied(&self, http: &reqwest::Client, url: &Url) -> Result<Answer, PollError> {
        let mut headers = self.headers.clone();
        // reqwest writes the proxy's or the origin's Host itself.
        headers.remove(http::header::HOST);
        let response = http
            .get(url.clone())
            .headers(headers)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = if status == 200 {
            read_limited(response).await?
        } else {
            Vec::new()
        };
        Ok(Answer {
            status,
            headers,
            body,
            complete: true,
        })
    }
}

/// Whether a `*_PROXY` variable is set: then reqwest carries the polls, as
/// the README promises for enterprise egress.
fn proxy_configured(var: impl Fn(&str) -> Option<String>) -> bool {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|k| var(k).is_some_and(|v| !v.trim().is_empty()))
}

/// `host[:port]` as HTTP/1.1's Host header wants it (the port only when
/// it is not the scheme's default).
fn host_header(base: &Url) -> Option<http::HeaderValue> {
    let host = base.host_str()?;
    let value = match base.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    http::HeaderValue::from_str(&value).ok()
}

pub fn status_url(base: &Url, room: &RoomId) -> Url {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("the base URL is http(s)")
        .pop_if_empty()
        .extend(["v1", "room", room.as_str(), "status"]);
    url
}

/// What an answer other than 200 means.
fn status_error(status: u16, retry_after: Option<&str>) -> PollError {
    match status {
        400 => PollError::BadRequest,
        401 => PollError::Unauthorized,
        429 => PollError::RateLimited {
            retry_after: retry_after.and_then(crate::retry_after::parse_value),
        },
        status => PollError::Status(status),
    }
}

fn transport_error(e: reqwest::Error) -> PollError {
    if e.is_timeout() {
        PollError::Timeout
    } else if e.is_body() || e.is_decode() {
        PollError::InvalidBody(e.without_url().to_string())
    } else {
        PollError::Connect(e.without_url().to_string())
    }
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, PollError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(PollError::InvalidBody("answer over 64 KiB".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parse a 200 answer strictly: the documented envelope, `success: true`, the
/// documented types, and the room that was asked for. Anything else is a lie
/// or garbage, never a state.
pub fn parse_body(room: &RoomId, body: &[u8]) -> Result<RoomStatus, PollError> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        success: bool,
        data: Option<RoomStatus>,
    }
    let bad = |m: String| PollError::InvalidBody(m);
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    if !envelope.success {
        return Err(bad("success is false".into()));
    }
    let data = envelope.data.ok_or_else(|| bad("no data".into()))?;
    if data.room_id != room.as_str() {
        return Err(bad("data is about another room".into()));
    }
    if !data.exists && data.is_active {
        return Err(bad("a room that does not exist cannot be active".into()));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> RoomId {
        RoomId::parse(s).unwrap()
    }

    #[test]
    fn a_proxy_variable_hands_polls_to_reqwest() {
        let env = |set: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                set.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(!proxy_configured(env(&[])));
        assert!(!proxy_configured(env(&[("HTTPS_PROXY", " ")])));
        assert!(proxy_configured(env(&[("https_proxy", "http://p:3128")])));
        assert!(proxy_configured(env(&[("ALL_PROXY", "socks5://p")])));
    }

    #[test]
    fn the_host_header_names_a_port_only_when_it_is_not_the_default() {
        let h = |u: &str| host_header(&Url::parse(u).unwrap()).unwrap();
        assert_eq!(h("https://api.verriflo.com/"), "api.verriflo.com");
        assert_eq!(h("http://127.0.0.1:8080/x"), "127.0.0.1:8080");
        assert_eq!(h("http://[::1]:81"), "[::1]:81");
    }

    #[test]
    fn room_ids_are_one_encoded_segment() {
        let base = Url::parse("https://api.verriflo.com").unwrap();
        let url = status_url(&base, &room("a/b c%ü"));
        assert_eq!(url.path(), "/v1/room/a%2Fb%20c%25%C3%BC/status");
        let prefixed = Url::parse("http://h/proxy/").unwrap();
        assert_eq!(
            status_url(&prefixed, &room("x")).path(),
            "/proxy/v1/room/x/status"
        );
    }

    #[test]
    fn both_documented_shapes_parse() {
        let full = br#"{"success":true,"message":"Room status retrieved","data":{"exists":true,"isActive":true,"roomId":"math-101","title":"Calculus I","participantCount":12,"hasTeacher":true,"isRecording":true,"createdAt":"2024-01-15T09:00:00.000Z","startedAt":"2024-01-15T09:02:30.000Z"}}"#;
        let s = parse_body(&room("math-101"), full).unwrap();
        assert_eq!(s.participant_count, Some(12));
        let missing = br#"{"success":true,"message":"Room not found","data":{"exists":false,"isActive":false,"roomId":"math-101"}}"#;
        let s = parse_body(&room("math-101"), missing).unwrap();
        assert!(!s.exists && s.title.is_none());
    }

    #[test]
    fn garbage_and_lies_are_errors() {
        let r = room("math-101");
        for body in [
            &b"<html>oops</html>"[..],
            b"",
            b"{}",
            br#"{"success":false,"message":"x"}"#,
            br#"{"success":true,"data":{"exists":true,"isActive":true,"roomId":"other"}}"#,
            br#"{"success":true,"data":{"exists":false,"isActive":true,"roomId":"math-101"}}"#,
            br#"{"success":true,"data":{"exists":true,"isActive":true,"roomId":"math-101","participantCount":-3}}"#,
            br#"{"success":true,"data":{"exists":"yes","isActive":true,"roomId":"math-101"}}"#,
        ] {
            assert!(matches!(parse_body(&r, body), Err(PollError::InvalidBody(_))), "{body:?}");
        }
    }
}
