//! One webhook request: sign, POST, classify the answer.

use super::retry::AttemptOutcome;
use crate::outbox::Attempt;
use crate::signing::signature_header;
use crate::ssrf::{is_private, GuardedResolver};
use crate::subscription::Target;
use chrono::{DateTime, Utc};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much of a receiver's answer an attempt keeps.
const KEEP_RESPONSE: usize = 256;

#[derive(Clone)]
pub struct Sender {
    http: reqwest::Client,
    allow_private: bool,
    /// Through a proxy the proxy resolves the target, so each target is
    /// resolved and checked here before the request goes out.
    proxied: bool,
    /// How long one attempt may take, from connect to the answer's end.
    timeout: Duration,
}

impl Sender {
    /// `proxy` is `RELAY_WEBHOOK_PROXY`; the standard proxy variables
    /// (`HTTP_PROXY`, `ALL_PROXY`, ...) never apply to webhooks.
    pub fn new(timeout: Duration, allow_private: bool, proxy: Option<&url::Url>) -> Self {
        let mut builder = reqwest::Client::builder().no_proxy();
        if let Some(p) = proxy {
            builder =
                builder.proxy(reqwest::Proxy::all(p.as_str()).expect("a checked http(s) URL"));
        }
        let http = builder
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect is a failed attempt; its target is never requested.
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .user_agent(concat!("verriflo-relay/", env!("CARGO_PKG_VERSION")))
            // At least the delivery concurrency: a smaller pool closes and
            // reopens connections to a busy receiver on every round.
            .pool_max_idle_per_host(1024)
            .build()
            .expect("the HTTP client builds with static settings");
        Self {
            http,
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
        let result = match (refusal, &target.url) {
            (Some(refusal), _) => Err(refusal),
            (None, None) => Err("url is not a URL".to_string()),
            (None, Some(url)) => self
                .http
                .post(url.clone())
                .header("content-type", "application/json")
                .header("webhook-id", event_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body)
                .send()
                .await
                .map_err(describe),
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
            Ok(mut response) => {
                let status = response.status();
                attempt.status_code = Some(status.as_u16());
                let retry_after = crate::retry_after::parse(response.headers());
                let mut kept = Vec::new();
                while kept.len() < KEEP_RESPONSE {
                    match response.chunk().await {
                        Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
                kept.truncate(KEEP_RESPONSE);
                attempt.response = Some(String::from_utf8_lossy(&kept).into_owned());
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
