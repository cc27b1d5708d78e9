//! Dashboard sessions and one-time login links, in memory: random tokens
//! kept only as SHA-256 hashes, each with an expiry, capped in number.
//!
//! A restart logs everyone out; the admin token logs them in again. That is
//! the price of keeping no credential on disk beside the webhook secrets.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lasts from login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a one-time login link stays usable.
pub const LINK_TTL: Duration = Duration::from_secs(10 * 60);
/// At most this many sessions (and as many links): a login past it ends
/// the session closest to expiry, so memory stays bounded.
const CAP: usize = 1024;

#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Tokens>,
}

#[derive(Default)]
struct Tokens {
    sessions: HashMap<[u8; 32], Instant>,
    links: HashMap<[u8; 32], Instant>,
}

impl Sessions {
    /// A new session: the token for its cookie.
    pub fn open(&self, now: Instant) -> String {
        let token = random_token();
        let mut t = self.lock();
        insert(&mut t.sessions, hash(&token), now + SESSION_TTL, now);
        token
    }

    pub fn is_valid(&self, token: &str, now: Instant) -> bool {
        let mut t = self.lock();
        let key = hash(token);
        match t.sessions.get(&key) {
            Some(&until) if until > now => true,
            Some(_) => {
                t.sessions.remove(&key);
                false
            }
            None => false,
        }
    }

    pub fn close(&self, token: &str) {
        self.lock().sessions.remove(&hash(token));
    }

    /// A one-time login code, for a link printed in a terminal.
    pub fn mint_link(&self, now: Instant) -> String {
        let code = random_token();
        let mut t = self.lock();
        insert(&mut t.links, hash(&code), now + LINK_TTL, now);
        code
    }

    /// Spend a one-time code: true once, if it is known and not expired.
    pub fn redeem_link(&self, code: &str, now: Instant) -> bool {
        self.lock()
            .links
            .remove(&hash(code))
            .is_some_and(|until| until > now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tokens> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn insert(map: &mut HashMap<[u8; 32], Instant>, key: [u8; 32], until: Instant, now: Instant) {
    if map.len() >= CAP {
        map.retain(|_, t| *t > now);
    }
    if map.len() >= CAP {
        if let Some(soonest) = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
            map.remove(&soonest);
        }
    }
    map.insert(key, until);
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// 256 random bits, URL-safe.
fn random_token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lasts_until_it_expires_or_is_closed() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let token = s.open(t0);
        assert!(s.is_valid(&token, t0 + SESSION_TTL - Duration::from_secs(1)));
        assert!(!s.is_valid(&token, t0 + SESSION_TTL));
        let other = s.open(t0);
        s.close(&other);
        assert!(!s.is_valid(&other, t0));
        assert!(!s.is_valid("forged", t0));
    }

    #[test]
    fn a_link_works_once_and_not_after_it_expires() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let code = s.mint_link(t0);
        assert!(s.redeem_link(&code, t0));
        assert!(!s.redeem_link(&code, t0), "a second use");
        let late = s.mint_link(t0);
        assert!(!s.redeem_link(&late, t0 + LINK_TTL));
    }

    #[test]
    fn sessions_are_capped() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let first = s.open(t0);
        for i in 0..CAP {
            s.open(t0 + Duration::from_millis(i as u64 + 1));
        }
        assert_eq!(s.lock().sessions.len(), CAP);
        assert!(!s.is_valid(&first, t0), "the one closest to expiry went");
    }
}
