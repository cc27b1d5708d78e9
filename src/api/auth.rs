//! Authentication of the admin API: the bearer token (compared in constant
//! time), or the dashboard's session cookie, whose writes must come from
//! the relay's own origin.

use super::error::ApiError;
use super::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "relay_session";

/// `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 7235).
pub fn bearer_ok(state: &AppState, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, t)| state.admin_token.matches(t.trim()))
}

/// The session token in the request's cookies, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

pub fn session_ok(state: &AppState, headers: &HeaderMap) -> bool {
    session_cookie(headers).is_some_and(|t| state.ui.is_valid(t, Instant::now()))
}

/// A browser write from the relay's own pages: `Origin` names the host the
/// request was sent to, and `Sec-Fetch-Site`, when sent, agrees. SameSite
/// alone lets another port of the same host through; this does not.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|s| s != "same-origin") {
        return false;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .and_then(|o| url::Url::parse(o).ok());
    match (host, origin) {
        (Some(host), Some(origin)) => {
            let port = origin.port().map(|p| format!(":{p}")).unwrap_or_default();
            let authority = format!("{}{port}", origin.host_str().unwrap_or(""));
            !authority.is_empty() && authority.eq_ignore_ascii_case(host)
        }
        _ => false,
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub async fn require_auth(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    if bearer_ok(&state, headers) {
        return Ok(next.run(request).await);
    }
    if !session_ok(&state, headers) {
        return Err(ApiError::Unauthorized);
    }
    if !is_safe(request.method()) && !same_origin(headers) {
        return Err(ApiError::Forbidden(
            "cross-origin request refused: a dashboard session may only write from the dashboard's own origin".into(),
        ));
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; relay_session=abc; b=2")]);
        assert_eq!(session_cookie(&h), Some("abc"));
        let h = headers(&[("cookie", "x_relay_session=no")]);
        assert_eq!(session_cookie(&h), None);
    }

    #[test]
    fn only_the_relays_own_origin_may_write() {
        let own = [
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ];
        assert!(same_origin(&headers(&own)));
        let other_port = [
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:9999"),
        ];
        assert!(!same_origin(&headers(&other_port)));
        assert!(
            !same_origin(&headers(&[("host", "127.0.0.1:8080")])),
            "no Origin"
        );
        let cross = [
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-site"),
        ];
        assert!(!same_origin(&headers(&cross)));
        assert!(!same_origin(&headers(&[("host", "h"), ("origin", "null")])));
    }
}
