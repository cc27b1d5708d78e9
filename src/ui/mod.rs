//! The dashboard at `/ui/`: static pages embedded in the binary, a cookie
//! login with the admin token, and one-time login links. The pages call the
//! admin API themselves, authenticated by the session cookie.

pub mod session;

use crate::api::auth::{same_origin, session_cookie, session_ok, SESSION_COOKIE};
use crate::api::error::{ok, ApiError, ApiJson, ApiPath};
use crate::api::schema::{Envelope, ErrorEnvelope};
use crate::api::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
pub use session::Sessions;
use std::time::Instant;

const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const LOGIN_JS: &str = include_str!("assets/login.js");
const CSS: &str = include_str!("assets/app.css");

/// Only our own files, no inline script, never framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The dashboard's routes (the admin listener only).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(page))
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript") }),
        )
        .route(
            "/ui/login.js",
            get(|| async { asset(LOGIN_JS, "text/javascript") }),
        )
        .route("/ui/app.css", get(|| async { asset(CSS, "text/css") }))
        .route("/ui/login", post(login))
        .route("/ui/login/{code}", get(redeem))
        .route("/ui/logout", post(logout))
}

/// Headers every dashboard answer carries.
fn guarded(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    let content_type = format!("{kind}; charset=utf-8");
    guarded(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// The app for a session, the login form for anyone else.
async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if session_ok(&state, &headers) {
        asset(INDEX, "text/html")
    } else {
        asset(LOGIN, "text/html")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    token: String,
}

fn session_set_cookie(token: &str) -> HeaderValue {
    let ttl = session::SESSION_TTL.as_secs();
    let cookie =
        format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={ttl}");
    HeaderValue::from_str(&cookie).expect("a token is URL-safe base64")
}

fn cross_origin() -> ApiError {
    ApiError::Forbidden("cross-origin request refused".into())
}

/// `POST /ui/login` `{"token"}`: the admin token opens a session. A wrong
/// token gets the API's own 401.
async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    if !same_origin(&headers) {
        return Err(cross_origin());
    }
    if !state.admin_token.matches(body.token.trim()) {
        return Err(ApiError::Unauthorized);
    }
    let token = state.ui.open(Instant::now());
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_set_cookie(&token));
    Ok(guarded(response))
}

/// `GET /ui/login/{code}`: a one-time link opens a session. The page then
/// moves on by itself: a SameSite=Strict cookie set by a link followed from
/// a terminal is only sent once the browser navigates from our own page.
async fn redeem(State(state): State<AppState>, ApiPath(code): ApiPath<String>) -> Response {
    if !state.ui.redeem_link(&code, Instant::now()) {
        let page = "<!doctype html><meta charset=utf-8><title>Link expired</title><link rel=stylesheet href=/ui/app.css><main class=narrow><h1>This login link was used or has expired</h1><p><a href=/ui/>Log in with the admin token</a></p></main>";
        let response = (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page,
        );
        return guarded(response.into_response());
    }
    let token = state.ui.open(Instant::now());
    let page = "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0;url=/ui/\"><title>Logged in</title><link rel=stylesheet href=/ui/app.css><main class=narrow><p>Logged in. <a href=/ui/>Open the dashboard</a></p></main>";
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_set_cookie(&token));
    guarded(response)
}

/// `POST /ui/logout`: the session ends here and in the browser.
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !same_origin(&headers) {
        return Err(cross_origin());
    }
    if let Some(token) = session_cookie(&headers) {
        state.ui.close(token);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let gone = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&gone).expect("ascii"),
    );
    Ok(guarded(response))
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginLink {
    /// Open it in a browser within 10 minutes; it works once.
    pub path: String,
    pub expires_at: DateTime<Utc>,
}

/// `POST /v1/dashboard/login-link`: a one-time link into the dashboard, for
/// an operator holding the token in a terminal (and for `demo`).
#[utoipa::path(post, path = "/v1/dashboard/login-link", tag = "dashboard",
    responses((status = 201, body = Envelope<LoginLink>), (status = 401, body = ErrorEnvelope)))]
pub async fn login_link(State(state): State<AppState>) -> Result<Response, ApiError> {
    let code = state.ui.mint_link(Instant::now());
    let expires_at = Utc::now() + session::LINK_TTL;
    let link = LoginLink {
        path: format!("/ui/login/{code}"),
        expires_at,
    };
    Ok(ok(
        StatusCode::CREATED,
        "A one-time dashboard login link",
        link,
    ))
}
