//! A webhook receiver on port 0 that keeps every request it gets and answers
//! as the test tells it to.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook bodies are JSON")
    }
    pub fn id(&self) -> String {
        self.headers["webhook-id"].to_str().unwrap().to_string()
    }
}

/// Decides the answer to the `n`-th request (0-based) given its body.
pub type Behaviour = Arc<dyn Fn(usize, &Received) -> Response + Send + Sync>;

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl Receiver {
    pub async fn spawn() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let ok: Behaviour = Arc::new(|_, _| StatusCode::OK.into_response());
        let r = Self {
            url,
            got: Arc::default(),
            behaviour: Arc::new(Mutex::new(ok)),
        };
        let app = Router::new().fallback(handle).with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    pub fn answer(&self, b: impl Fn(usize, &Received) -> Response + Send + Sync + 'static) {
        *self.behaviour.lock().unwrap() = Arc::new(b);
    }

    pub fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Requests that reached `/hook` (not counting other paths).
    pub fn hooks(&self) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| r.path == "/hook")
            .collect()
    }
}

async fn handle(State(r): State<Receiver>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let received = Received {
        path: uri.path().to_string(),
        headers,
        body: body.to_vec(),
    };
    let n = {
        let mut got = r.got.lock().unwrap();
        got.push(received.clone());
        got.len() - 1
    };
    let behaviour = r.behaviour.lock().unwrap().clone();
    behaviour(n, &received)
}
