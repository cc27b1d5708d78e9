//! The API's one error type and the envelope every answer uses.

use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

/// Everything a route can answer instead of success. Internal details are
/// logged, never shown.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    InvalidJson(String),
    #[error("expected content-type: application/json")]
    UnsupportedMediaType,
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    LimitReached(String),
    #[error("the request took too long")]
    Timeout,
    #[error("too many requests in flight (RELAY_MAX_REQUESTS); try again")]
    Busy,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Unexpected(e.into())
    }
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Validation(_) => (StatusCode::BAD_REQUEST, "validation_failed"),
            Self::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::LimitReached(_) => (StatusCode::CONFLICT, "limit_reached"),
            Self::Timeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::Busy => (StatusCode::TOO_MANY_REQUESTS, "busy"),
            Self::Unexpected(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            Self::Unexpected(e) => {
                tracing::error!(error = %e, "request failed");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let body = json!({"success": false, "message": message, "error": {"code": code}});
        (status, Json(body)).into_response()
    }
}

/// A success in the envelope, serialized straight to bytes: a `json!`
/// tree of 10,000 rooms first cost 21 MiB per `GET /v1/rooms`.
pub fn ok(status: StatusCode, message: &str, data: impl Serialize) -> Response {
    #[derive(Serialize)]
    struct Envelope<'a, T> {
        success: bool,
        message: &'a str,
        data: T,
    }
    let body = Envelope {
        success: true,
        message,
        data,
    };
    (status, Json(body)).into_response()
}

pub fn ok_value(message: &str, data: impl Serialize) -> Response {
    ok(StatusCode::OK, message, data)
}

/// A success whose `data` is a long list, written a slice of items at a
/// time as the connection takes them: built whole, 10,000 rooms were an
/// 8 MiB buffer (and its doublings) at the peak of every `GET /v1/rooms`.
pub fn ok_list<T, V, F>(message: &str, items: Vec<T>, mut view: F) -> Response
where
    T: Send + 'static,
    V: Serialize,
    F: FnMut(T) -> V + Send + 'static,
{
    const SLICE: usize = 64;
    let head = format!(
        r#"{{"success":true,"message":{},"data":["#,
        serde_json::Value::from(message)
    );
    let mut items = items.into_iter().peekable();
    let mut first = true;
    let slices = std::iter::from_fn(move || {
        items.peek()?;
        let mut out = Vec::with_capacity(SLICE * 1024);
        for item in items.by_ref().take(SLICE) {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &view(item)).expect("views serialize");
        }
        Some(Bytes::from(out))
    });
    let chunks = std::iter::once(Bytes::from(head))
        .chain(slices)
        .chain(std::iter::once(Bytes::from_static(b"]}")))
        .map(Ok::<_, std::convert::Infallible>);
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(futures_util::stream::iter(chunks)),
    )
        .into_response()
}

/// `Json<T>` whose rejections answer in the envelope with an honest status.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::Validation(e.body_text())),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::InvalidJson(e.body_text())),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::PayloadTooLarge),
            Err(e) => Err(ApiError::Validation(e.body_text())),
        }
    }
}

/// `Path<T>` whose rejections answer in the envelope.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e: PathRejection| ApiError::Validation(e.body_text()))
    }
}

/// `Query<T>` whose rejections answer in the envelope.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| ApiError::Validation(e.body_text()))
    }
}
