//! One webhook request: sign, POST, classify the answer.

use super::retry::AttemptOutcome;
use crate::keepalive::{self, Pool};
use crate::outbox::Attempt;
use crate::signing::signature_header;
use crate::ssrf::{is_private, GuardedDns, GuardedResolver};
use crate::subscription::Target;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::Bytes;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much of a receiver's answer an attempt keeps.
const KEEP_RESPONSE: usize = 256;

/// An answer's body read past what is kept, so the connection can carry
/// the next webhook; a longer one closes it.
const READ_RESPONSE: usize = 64 * 1024;

#[derive(Clone)]
pub struct Sender {
    transport: Arc<Transport>,
    allow_private: bool,
    /// Through a proxy the proxy resolves the target, so each target is
    /// resolved and checked here before the request goes out.
    proxied: bool,
    /// How long one attempt may take, from connect to the answer's end.
    timeout: Duration,
}

/// Straight to receivers on our own connections, or through
/// `RELAY_WEBHOOK_PROXY` with reqwest (which speaks to proxies).
enum Transport {
    Direct(Pool<Full<Bytes>, GuardedDns>),
    Proxied(reqwest::Client),
}

const USER_AGENT: &str = concat!("verriflo-relay/", env!("CARGO_PKG_VERSION"));

impl Sender {
    /// `proxy` is `RELAY_WEBHOOK_PROXY`; the standard proxy variables
    /// (`HTTP_PROXY`, `ALL_PROXY`, ...) never apply to webhooks. At most
    /// `max_idle` connections wait between webhooks, over all receivers:
    /// at least the delivery concurrency, or a busy receiver's connections
    /// would close and reopen on every round.
    pub fn new(
        timeout: Duration,
        allow_private: bool,
        proxy: Option<&url::Url>,
        max_idle: usize,
    ) -> Self {
        let transport = match proxy {
            None => Transport::Direct(Pool::with_resolver(
                GuardedDns { allow_private },
                timeout,
                max_idle,
            )),
            Some(p) => Transport::Proxied(
                reqwest::Client::builder()
                    .no_proxy()
                    .proxy(reqwest::Proxy::all(p.as_str()).expect("a checked http(s) URL"))
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    // A redirect is a failed attempt; its target is never requested.
                    .redirect(reqwest::redirect::Policy::none())
                    .dns_resolver(Arc::new(GuardedResolver { allow_private }))
                    .user_agent(USER_AGENT)
                    .pool_max_idle_per_host(max_idle)
                    .build()
                    .expect("the HTTP client builds with static settings"),
            ),
        };
        Self {
            transport: Arc::new(transport),
            allow_private,
            proxied: proxy.is_some(),
            timeout,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Send the stored webhook `body` of event `event_id` to `target` once,
    /// signed as it is.
    pub async fn send(
        &self,
        target: &Target,
        event_id: &str,
        body: Vec<u8>,
        now: DateTime<Utc>,
    ) -> (Attempt, AttemptOutcome) {
        let started = Instant::now();
        let timestamp = now.timestamp();
        let signature = signature_header(target.live_secrets(now), event_id, timestamp, &body);
        let refusal = match &target.url {
            None => Some("url is not a URL".to_string()),
            Some(url) => match self.refuse_literal(url) {
                Some(r) => Some(r),
                None => self.refuse_through_proxy(url).await,
            },
        };
        let mut headers = http::HeaderMap::with_capacity(6);
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(USER_AGENT),
        );
        let result = match (refusal, &target.uri) {
            (Some(refusal), _) => Err(refusal),
            (None, None) => Err("url is not a URL".to_string()),
            (None, Some(uri)) => {
                match webhook_headers(&mut headers, event_id, timestamp, signature) {
                    Err(e) => Err(e),
                    Ok(()) => {
                        let exchange = self.exchange(uri, target, headers, body);
                        tokio::time::timeout(self.timeout, exchange)
                            .await
                            .unwrap_or_else(|_| Err("timeout".to_string()))
                    }
                }
            }
        };
        let mut attempt = Attempt {
            at: now,
            status_code: None,
            error: None,
            duration_ms: 0,
            response: None,
        };
        let outcome = match result {
            Err(e) => {
                attempt.error = Some(e);
                AttemptOutcome::Failure { retry_after: None }
            }
            Ok(answer) => {
                let status = http::StatusCode::from_u16(answer.status)
                    .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                attempt.status_code = Some(answer.status);
                let retry_after = crate::retry_after::parse(&answer.headers);
                let kept = &answer.body[..answer.body.len().min(KEEP_RESPONSE)];
                attempt.response = Some(String::from_utf8_lossy(kept).into_owned());
                if status.is_success() {
                    AttemptOutcome::Success
                } else if status.as_u16() == 410 {
                    AttemptOutcome::Gone
                } else {
                    if status.is_redirection() {
                        attempt.error = Some("redirect not followed".into());
                    }
                    AttemptOutcome::Failure { retry_after }
                }
            }
        };
        attempt.duration_ms = started.elapsed().as_millis() as u64;
        (attempt, outcome)
    }

    /// POST the webhook and read its answer, on our connections or reqwest's.
    async fn exchange(
        &self,
        uri: &http::Uri,
        target: &Target,
        headers: http::HeaderMap,
        body: Vec<u8>,
    ) -> Result<keepalive::Answer, String> {
        match self.transport.as_ref() {
            Transport::Direct(pool) => {
                let body = Full::new(Bytes::from(body));
                let post = pool.send(&http::Method::POST, uri, &headers, body, READ_RESPONSE);
                Box::pin(post).await.map_err(|e| e.to_string())
            }
            Transport::Proxied(http) => {
                let url = target.url.clone().ok_or("url is not a URL")?;
                let mut response = http
                    .post(url)
                    .headers(headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(describe)?;
                let mut kept = Vec::new();
                while kept.len() < KEEP_RESPONSE {
                    match response.chunk().await {
                        Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..]),
                        _ => break,
                    }
                }
                Ok(keepalive::Answer {
                    status: response.status().as_u16(),
                    headers: response.headers().clone(),
                    body: kept,
                    complete: false,
                })
            }
        }
    }

    /// Through a proxy our resolver is not asked, so the target's name is
    /// resolved and checked here first (every address must be allowed).
    async fn refuse_through_proxy(&self, url: &url::Url) -> Option<String> {
        if !self.proxied || self.allow_private {
            return None;
        }
        let host = url.host_str()?;
        let port = url.port_or_known_default().unwrap_or(443);
        crate::ssrf::resolve_allowed(host, port, false)
            .await
            .err()
            .map(|e| format!("refused: {e}"))
    }

    /// An IP-literal URL never reaches the resolver, so it is checked here.
    fn refuse_literal(&self, url: &url::Url) -> Option<String> {
        if self.allow_private {
            return None;
        }
        let ip = match url.host()? {
            url::Host::Ipv4(v4) => IpAddr::V4(v4),
            url::Host::Ipv6(v6) => IpAddr::V6(v6),
            url::Host::Domain(_) => return None,
        };
        is_private(ip).then(|| format!("refused: {ip} is a private address"))
    }
}

/// The Standard Webhooks headers; an id or signature that is no header
/// value (never, for ids and signatures made here) fails the attempt.
fn webhook_headers(
    headers: &mut http::HeaderMap,
    event_id: &str,
    timestamp: i64,
    signature: String,
) -> Result<(), String> {
    let value = |v: &str| http::HeaderValue::from_str(v).map_err(|e| e.to_string());
    headers.insert("webhook-id", value(event_id)?);
    headers.insert("webhook-timestamp", value(&timestamp.to_string())?);
    headers.insert("webhook-signature", value(&signature)?);
    Ok(())
}

fn describe(e: reqwest::Error) -> String {
    use std::error::Error;
    let timeout = e.is_timeout();
    let e = e.without_url();
    let mut text = if timeout {
        "timeout".to_string()
    } else {
        e.to_string()
    };
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::{verify, Secret};
    use crate::subscription::Subscription;
    use http_body_util::BodyExt;
    use hyper::server::conn::http1 as server;
    use hyper_util::rt::TokioIo;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    type Seen = Arc<Mutex<Vec<(http::HeaderMap, Vec<u8>)>>>;

    /// A keep-alive receiver: counts its connections, keeps every request.
    async fn receiver() -> (String, Arc<AtomicUsize>, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (connections, seen) = (Arc::new(AtomicUsize::new(0)), Seen::default());
        let (count, keep) = (connections.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let keep = keep.clone();
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let keep = keep.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await?.to_bytes().to_vec();
                            keep.lock().unwrap().push((parts.headers, body));
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(
                                "ok",
                            ))))
                        }
                    },
                );
                tokio::spawn(
                    server::Builder::new().serve_connection(TokioIo::new(socket), service),
                );
            }
        });
        (url, connections, seen)
    }

    #[tokio::test]
    async fn webhooks_are_signed_as_stored_and_share_a_kept_connection() {
        let (url, connections, seen) = receiver().await;
        let sub = Subscription::new("sub_1".into(), url, vec![], vec![], None, Utc::now());
        let secret = Secret::parse(&sub.secrets[0].secret).unwrap();
        let target = Target::new(sub);
        let sender = Sender::new(Duration::from_secs(5), true, None, 4);
        for n in 0..3 {
            let body = format!(r#"{{"n":{n}}}"#).into_bytes();
            let (attempt, outcome) = sender.send(&target, "evt_1", body, Utc::now()).await;
            assert!(matches!(outcome, AttemptOutcome::Success), "{attempt:?}");
            assert_eq!(attempt.response.as_deref(), Some("ok"));
        }
        assert_eq!(
            connections.load(Ordering::SeqCst),
            1,
            "one connection, kept"
        );
        for (n, (headers, body)) in seen.lock().unwrap().iter().enumerate() {
            assert_eq!(body, format!(r#"{{"n":{n}}}"#).as_bytes());
            assert_eq!(headers["content-type"], "application/json");
            assert!(headers["host"].to_str().unwrap().starts_with("127.0.0.1:"));
            let now = Utc::now().timestamp();
            assert!(verify(&secret, headers, body, now, Duration::from_secs(60)).is_ok());
        }
    }
}
