//! Standard Webhooks (v1) signatures: a pure signer, and a verifier that Rust
//! receivers can use.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::fmt;
use std::time::Duration;

const PREFIX: &str = "whsec_";

/// A signing secret: `whsec_` + base64 of 24 to 64 random bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("secret must start with whsec_")]
    Prefix,
    #[error("secret is not base64")]
    Base64,
    #[error("secret must hold 24 to 64 bytes")]
    Length,
}

impl Secret {
    /// A fresh secret of 32 random bytes.
    pub fn generate() -> Self {
        let mut key = vec![0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self { key }
    }

    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let b64 = text.strip_prefix(PREFIX).ok_or(SecretError::Prefix)?;
        let key = B64.decode(b64).map_err(|_| SecretError::Base64)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::Length);
        }
        Ok(Self { key })
    }

    /// The secret as users see it: `whsec_...`.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", B64.encode(&self.key))
    }

    /// `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", B64.encode(self.mac(msg_id, timestamp, body)))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The `webhook-signature` header: one signature per live secret, space-separated.
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .into_iter()
        .map(|s| s.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a number")]
    BadTimestamp,
    #[error("webhook-timestamp is outside the tolerance")]
    TimestampOutOfTolerance,
    #[error("no signature matches")]
    NoMatch,
}

/// How far a timestamp may be from now, as the Standard Webhooks libraries allow.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Verify a received webhook: its timestamp is within `tolerance` of `now`
/// (Unix seconds) and one of its `v1` signatures is the secret's, compared in
/// constant time.
pub fn verify(
    secret: &Secret,
    headers: &http::HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(VerifyError::MissingHeader(name))
    };
    let id = header("webhook-id")?;
    let timestamp: i64 = header("webhook-timestamp")?
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return Err(VerifyError::TimestampOutOfTolerance);
    }
    let expected = secret.mac(id, timestamp, body);
    let matched = header("webhook-signature")?
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| B64.decode(s).ok())
        .any(|sig| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                sig.as_slice(),
                expected.as_slice(),
            ))
        });
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example published in the Standard Webhooks specification.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers(id: &str, ts: i64, sig: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    }

    #[test]
    fn signs_the_specification_example() {
        let s = Secret::parse(SPEC_SECRET).unwrap();
        assert_eq!(s.sign(SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
        assert_eq!(s.expose(), SPEC_SECRET);
    }

    #[test]
    fn verifies_the_specification_example() {
        let s = Secret::parse(SPEC_SECRET).unwrap();
        let h = headers(SPEC_ID, SPEC_TS, SPEC_SIG);
        assert_eq!(
            verify(&s, &h, SPEC_BODY, SPEC_TS + 10, DEFAULT_TOLERANCE),
            Ok(())
        );
        assert_eq!(
            verify(&s, &h, br#"{"test": 1}"#, SPEC_TS, DEFAULT_TOLERANCE),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&s, &h, SPEC_BODY, SPEC_TS + 301, DEFAULT_TOLERANCE),
            Err(VerifyError::TimestampOutOfTolerance)
        );
        let other = Secret::generate();
        assert_eq!(
            verify(&other, &h, SPEC_BODY, SPEC_TS, DEFAULT_TOLERANCE),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn any_of_several_signatures_verifies() {
        let (old, new) = (Secret::generate(), Secret::generate());
        let sig = signature_header([&new, &old], "msg_1", 100, b"{}");
        assert_eq!(sig.split(' ').count(), 2);
        for s in [&old, &new] {
            assert_eq!(
                verify(
                    s,
                    &headers("msg_1", 100, &sig),
                    b"{}",
                    100,
                    DEFAULT_TOLERANCE
                ),
                Ok(())
            );
        }
    }

    #[test]
    fn generated_secrets_round_trip_and_hide() {
        let s = Secret::generate();
        let text = s.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(Secret::parse(&text).unwrap(), s);
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(Secret::parse("nope"), Err(SecretError::Prefix));
        assert_eq!(Secret::parse("whsec_!!"), Err(SecretError::Base64));
        assert_eq!(Secret::parse("whsec_AAAA"), Err(SecretError::Length));
    }
}
