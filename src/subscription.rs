//! Subscriptions: who receives which events, and their signing secrets.

use crate::event::{Event, EventType};
use crate::signing::Secret;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};

/// How long a replaced secret keeps signing beside the new one.
pub const ROTATION_OVERLAP: ChronoDuration = ChronoDuration::hours(24);
/// A subscription failing without a single success this long is disabled.
pub const DISABLE_AFTER: ChronoDuration = ChronoDuration::days(5);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretEntry {
    /// `whsec_...` as stored; parsed when signing.
    pub secret: String,
    /// None for the current secret; the end of the overlap for a replaced one.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A subscription as stored: what the API shows, plus the secrets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    #[serde(flatten)]
    pub info: SubscriptionView,
    /// Newest first.
    pub secrets: Vec<SecretEntry>,
}

/// The public fields read straight through: `sub.enabled`, `sub.url`, ….
impl std::ops::Deref for Subscription {
    type Target = SubscriptionView;
    fn deref(&self) -> &SubscriptionView {
        &self.info
    }
}

impl std::ops::DerefMut for Subscription {
    fn deref_mut(&mut self) -> &mut SubscriptionView {
        &mut self.info
    }
}

impl Subscription {
    pub fn new(
        id: String,
        url: String,
        events: Vec<String>,
        rooms: Vec<String>,
        description: Option<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            info: SubscriptionView {
                id,
                url,
                events,
                rooms,
                description,
                enabled: true,
                disabled_reason: None,
                disabled_at: None,
                created_at: now,
                updated_at: now,
                failing_since: None,
            },
            secrets: vec![SecretEntry {
                secret: Secret::generate().expose(),
                expires_at: None,
            }],
        }
    }

    /// Stamp a change of `enabled` made by `change` (from `was`): when it
    /// was disabled, or a clean slate when enabled again.
    pub fn note_enabled(&mut self, was: bool, now: DateTime<Utc>) {
        match (was, self.enabled) {
            (true, false) => self.disabled_at = Some(now),
            (false, true) => {
                self.disabled_at = None;
                self.disabled_reason = None;
                self.failing_since = None;
            }
            _ => {}
        }
    }

    /// Does this subscription want `event`? (Enabled-ness is checked apart.)
    pub fn wants(&self, event: &Event) -> bool {
        if event.kind == EventType::WebhookTest {
            return false; // sent only by the test route, to one subscription
        }
        let type_ok =
            self.events.is_empty() || self.events.iter().any(|p| pattern_matches(p, event.kind));
        let room_ok = self.rooms.is_empty()
            || event
                .room_id()
                .is_some_and(|r| self.rooms.iter().any(|x| x == r));
        type_ok && room_ok
    }

    /// The secrets that sign at `now`: the current one, and a replaced one
    /// still within its overlap.
    pub fn live_secrets(&self, now: DateTime<Utc>) -> Vec<Secret> {
        self.secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|t| t > now))
            .filter_map(|s| Secret::parse(&s.secret).ok())
            .collect()
    }

    pub fn current_secret(&self) -> &str {
        &self.secrets[0].secret
    }

    /// Replace the secret; the old one signs beside it until the overlap ends.
    pub fn rotate(&mut self, now: DateTime<Utc>) {
        let old = SecretEntry {
            secret: self.current_secret().to_string(),
            expires_at: Some(now + ROTATION_OVERLAP),
        };
        self.secrets = vec![
            SecretEntry {
                secret: Secret::generate().expose(),
                expires_at: None,
            },
            old,
        ];
        self.updated_at = now;
    }

    /// The public view: everything but the secret.
    pub fn view(&self) -> SubscriptionView {
        self.info.clone()
    }
}

/// A subscription ready to send to: its URL parsed and its secrets decoded
/// once, shared by every delivery rather than cloned into each.
#[derive(Debug)]
pub struct Target {
    pub sub: Subscription,
    pub url: Option<url::Url>,
    /// The same URL as hyper sends to it, parsed once.
    pub uri: Option<http::Uri>,
    secrets: Vec<(Secret, Option<DateTime<Utc>>)>,
}

impl Target {
    pub fn new(sub: Subscription) -> Self {
        let secrets = sub
            .secrets
            .iter()
            .filter_map(|s| Some((Secret::parse(&s.secret).ok()?, s.expires_at)))
            .collect();
        let url = url::Url::parse(&sub.url).ok();
        let uri = url.as_ref().and_then(|u| u.as_str().parse().ok());
        Self {
            url,
            uri,
            sub,
            secrets,
        }
    }

    /// The secrets that sign at `now`.
    pub fn live_secrets(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Secret> {
        self.secrets
            .iter()
            .filter(move |(_, exp)| exp.is_none_or(|t| t > now))
            .map(|(s, _)| s)
    }
}

/// A subscription as the API shows it: everything but its secrets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    pub id: String,
    pub url: String,
    /// Event types or `prefix.*` patterns; empty means all.
    pub events: Vec<String>,
    /// Room ids; empty means every watched room.
    pub rooms: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// Why it was disabled (410 Gone, 5 days of failure, or by hand).
    pub disabled_reason: Option<String>,
    /// When it was disabled: events from then until it is enabled again
    /// are not queued for it; replay from this time to send them.
    #[serde(default)]
    pub disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The first failure since the last success.
    pub failing_since: Option<DateTime<Utc>>,
}

/// `room.started` matches itself; `room.*` every `room.` type; `*` all.
pub fn pattern_matches(pattern: &str, kind: EventType) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.as_str().starts_with(prefix),
        None => pattern == kind.as_str(),
    }
}

/// Refuse a pattern that can match nothing, so a typo is an error, not silence.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    let valid = match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => {
            prefix.ends_with('.')
                && EventType::ALL
                    .iter()
                    .any(|k| k.as_str().starts_with(prefix))
        }
        None => EventType::parse(pattern).is_some(),
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{pattern:?} is not an event type or a pattern such as room.*"
        ))
    }
}

/// Is the subscription failing long enough without a success to be disabled?
pub fn should_disable(failing_since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    failing_since.is_some_and(|t| now - t >= DISABLE_AFTER)
}

/// Check a target URL's form: http(s), a host, no credentials, no fragment.
pub fn validate_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("url is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("url must be http or https".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("url has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not carry credentials".into());
    }
    if url.fragment().is_some() {
        return Err("url must not have a fragment".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: EventType, room: &str) -> Event {
        Event {
            id: "evt_x".into(),
            kind,
            timestamp: Utc::now(),
            data: json!({"roomId": room, "sequence": 1}).into(),
        }
    }

    fn sub(events: &[&str], rooms: &[&str]) -> Subscription {
        Subscription::new(
            "sub_1".into(),
            "https://example.com/hook".into(),
            events.iter().map(|s| s.to_string()).collect(),
            rooms.iter().map(|s| s.to_string()).collect(),
            None,
            Utc::now(),
        )
    }

    #[test]
    fn filters_by_type_pattern_and_room() {
        let all = sub(&[], &[]);
        assert!(all.wants(&event(EventType::RoomStarted, "a")));
        assert!(!all.wants(&event(EventType::WebhookTest, "a")));
        let rooms = sub(&["room.*"], &["a"]);
        assert!(rooms.wants(&event(EventType::RoomEnded, "a")));
        assert!(!rooms.wants(&event(EventType::RoomEnded, "b")));
        assert!(!rooms.wants(&event(EventType::TeacherJoined, "a")));
        let exact = sub(&["teacher.joined", "recording.*"], &[]);
        assert!(exact.wants(&event(EventType::TeacherJoined, "z")));
        assert!(exact.wants(&event(EventType::RecordingStopped, "z")));
        assert!(!exact.wants(&event(EventType::TeacherLeft, "z")));
    }

    #[test]
    fn patterns_are_validated() {
        for ok in [
            "room.started",
            "room.*",
            "*",
            "participants.*",
            "webhook.test",
        ] {
            assert!(validate_pattern(ok).is_ok(), "{ok}");
        }
        for bad in ["room.start", "rooms.*", "ro*", "", "room."] {
            assert!(validate_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rotation_keeps_the_old_secret_for_a_day() {
        let now = Utc::now();
        let mut s = sub(&[], &[]);
        let old = s.current_secret().to_string();
        s.rotate(now);
        assert_ne!(s.current_secret(), old);
        assert_eq!(s.live_secrets(now).len(), 2);
        assert_eq!(s.live_secrets(now + ChronoDuration::hours(25)).len(), 1);
    }

    #[test]
    fn five_days_of_failure_disable() {
        let now = Utc::now();
        assert!(!should_disable(None, now));
        assert!(!should_disable(Some(now - ChronoDuration::days(4)), now));
        assert!(should_disable(Some(now - ChronoDuration::days(5)), now));
    }

    #[test]
    fn urls_are_checked_for_form() {
        assert!(validate_url("https://hooks.example.com/v1?x=1").is_ok());
        for bad in [
            "ftp://x",
            "not a url",
            "https://user:pw@x.com/",
            "http://x.com/#frag",
            "mailto:a@b",
        ] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
    }
}
