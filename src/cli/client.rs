//! The admin CLI's HTTP client: one call, the envelope unwrapped.

use reqwest::Method;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the relay at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{message} ({status}{code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the relay answered something that is not its JSON envelope ({0})")]
    Garbled(u16),
    #[error("{0}")]
    Usage(String),
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    /// Call the API; the `data` of a success, or the API's own error message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.map_err(|e| CliError::Unreachable {
            url: self.base.clone(),
            reason: e.without_url().to_string(),
        })?;
        let status = res.status().as_u16();
        let envelope: Value = res.json().await.map_err(|_| CliError::Garbled(status))?;
        if envelope["success"] == true {
            return Ok(envelope["data"].clone());
        }
        Err(CliError::Api {
            status,
            code: envelope["error"]["code"]
                .as_str()
                .map(|c| format!(", {c}"))
                .unwrap_or_default(),
            message: envelope["message"]
                .as_str()
                .unwrap_or("request failed")
                .to_string(),
        })
    }
}

/// A path segment, percent-encoded (room ids may hold slashes and spaces).
pub fn seg(s: &str) -> String {
    let mut url = url::Url::parse("http://x/").expect("static URL");
    url.path_segments_mut()
        .expect("http URL")
        .pop_if_empty()
        .push(s);
    url.path().trim_start_matches('/').to_string()
}

/// A query value, form-encoded.
pub fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
