//! Secrets as newtypes whose `Debug` never shows them.

use std::fmt;
use subtle::ConstantTimeEq;

/// The organization id sent upstream as `VF-ORG-ID`. It authenticates, so it
/// is kept out of logs like a password.
#[derive(Clone, PartialEq, Eq)]
pub struct OrgId(String);

impl OrgId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.chars().any(|c| c.is_control()) || s.len() > 512 {
            return Err("must be printable and at most 512 characters".into());
        }
        // It travels as a header on every poll: one that is not a valid
        // header value would fail them all, so it is refused here.
        if !s.bytes().all(|b| (0x20..0x7f).contains(&b)) || http::HeaderValue::from_str(s).is_err()
        {
            return Err("must be visible ASCII (it is sent as the VF-ORG-ID header)".into());
        }
        Ok(Self(s.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a presented value.
    pub fn matches(&self, presented: &str) -> bool {
        ct_eq(&self.0, presented)
    }
}

impl fmt::Debug for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OrgId(***)")
    }
}

/// The admin API's bearer token (16 characters or more).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.chars().count() < 16 {
            return Err("must be 16 characters or more".into());
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("must not contain spaces or control characters".into());
        }
        Ok(Self(s.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, presented: &str) -> bool {
        ct_eq(&self.0, presented)
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

/// Equal strings, compared without leaking where they first differ.
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}
