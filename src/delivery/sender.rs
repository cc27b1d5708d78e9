//! One webhook request: sign, POST, classify the answer.

use super::retry::AttemptOutcome;
use super::Attempt;
use crate::event::{webhook_body, Event};
use crate::signing::signature_header;
use crate::ssrf::{is_private, GuardedResolver};
use crate::subscription::Subscription;
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
}

impl Sender {
    pub fn new(timeout: Duration, allow_private: bool) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect is a failed attempt; its target is never requested.
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .user_agent(concat!("verriflo-relay/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(32)
            .build()
            .expect("the HTTP client builds with static settings");
        Self {
            http,
            allow_private,
        }
    }

    /// Send `event` to `sub` once.
    pub async fn send(
        &self,
        sub: &Subscription,
        event: &Event,
        now: DateTime<Utc>,
    ) -> (Attempt, AttemptOutcome) {
        let started = Instant::now();
        let body = webhook_body(event);
        let timestamp = now.timestamp();
        let secrets = sub.live_secrets(now);
        let signature = signature_header(&secrets, &event.id, timestamp, &body);
        let result = match self.refuse_literal(&sub.url) {
            Some(refusal) => Err(refusal),
            None => self
                .http
                .post(&sub.url)
                .header("content-type", "application/json")
                .header("webhook-id", &event.id)
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

    /// An IP-literal URL never reaches the resolver, so it is checked here.
    fn refuse_literal(&self, url: &str) -> Option<String> {
        if self.allow_private {
            return None;
        }
        let parsed = url::Url::parse(url).ok()?;
        let ip = match parsed.host()? {
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
