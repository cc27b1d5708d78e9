//! Keep-alive HTTP/1.1 connections, each driven by the request that uses it: webhooks (polls have `upstream::wire`).
//!
//! reqwest drives every connection in a task of its own and hands each
//! request over through its pool and a channel: two task wake-ups and a lock
//! per request, which at 2,000 polls a second cost more than the request
//! (BENCHMARKS.md, "Polling against nginx"), and a task, a channel and
//! buffers (about 30 KiB) for every connection it keeps, per host without a
//! total bound: 100 webhook receivers kept 3,000 of them in the outage run.
//! Here a request takes an idle connection to its origin, sends on it and
//! drives it in its own task until the answer is read, then puts it back;
//! at most `max_idle` wait in all. hyper-rustls gives the same TLS as
//! reqwest (rustls, Mozilla's roots); a proxy stays reqwest's job.

use http::uri::{Authority, Scheme};
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::dns::GaiResolver;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tower_service::Service;

/// As reqwest's pool: how long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

type Connection<B> = http1::Connection<Stream, B>;

/// Where a connection goes: requests to one origin share them.
type Origin = (Scheme, Authority);

struct Conn<B: Body + 'static> {
    sender: http1::SendRequest<B>,
    /// None once it ended: never polled again, never reused.
    conn: Option<Connection<B>>,
    idle_since: Instant,
}

/// An answer, its body read up to the caller's limit.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    /// False when the body went on past the limit (its connection is
    /// closed, since the rest was never read).
    pub complete: bool,
}

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Connecting, TLS, or the connection failing before an answer.
    #[error("{0}")]
    Connect(String),
    /// Something that is not HTTP came back.
    #[error("{0}")]
    Invalid(String),
}

/// A DNS resolver hyper's connector can use (the system's by default).
pub trait Resolve:
    Service<
        hyper_util::client::legacy::connect::dns::Name,
        Response = Self::Addrs,
        Error = Self::Err,
        Future = Self::Fut,
    > + Clone
    + Send
    + Sync
    + 'static
{
    type Addrs: Iterator<Item = std::net::SocketAddr> + Send;
    type Err: Into<Box<dyn std::error::Error + Send + Sync>>;
    type Fut: std::future::Future<Output = Result<Self::Addrs, Self::Err>> + Send;
}

impl<R, A, E, F> Resolve for R
where
    R: Service<hyper_util::client::legacy::connect::dns::Name, Response = A, Error = E, Future = F>
        + Clone
        + Send
        + Sync
        + 'static,
    A: Iterator<Item = std::net::SocketAddr> + Send,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: std::future::Future<Output = Result<A, E>> + Send,
{
    type Addrs = A;
    type Err = E;
    type Fut = F;
}

struct Idle<B: Body + 'static> {
    by_origin: HashMap<Origin, Vec<Conn<B>>>,
    count: usize,
}

pub struct Pool<B: Body + 'static, R = GaiResolver> {
    connector: HttpsConnector<HttpConnector<R>>,
    idle: Mutex<Idle<B>>,
    max_idle: usize,
}

impl<B> Pool<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// The system's resolver, trusting Mozilla's roots, as reqwest does.
    pub fn new(connect_timeout: Duration, max_idle: usize) -> Self {
        Self::with_resolver(GaiResolver::new(), connect_timeout, max_idle)
    }
}

/// Dials http and https origins (TLS trusting Mozilla's roots, as reqwest
/// does), with no delay on writes: the connector of every kept connection.
pub(crate) fn connector<R: Resolve>(
    resolver: R,
    connect_timeout: Duration,
) -> HttpsConnector<HttpConnector<R>> {
    https(resolver, mozilla_roots(), connect_timeout)
}

pub(crate) fn https<R: Resolve>(
    resolver: R,
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
) -> HttpsConnector<HttpConnector<R>> {
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// Mozilla's roots, as reqwest trusts them.
fn mozilla_roots() -> rustls::ClientConfig {
    use hyper_rustls::ConfigBuilderExt;
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports rustls' default protocol versions")
    .with_webpki_roots()
    .with_no_client_auth()
}

impl<B, R> Pool<B, R>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    R: Resolve,
{
    /// Names resolved by `resolver` (the SSRF guard's, for webhooks).
    pub fn with_resolver(resolver: R, connect_timeout: Duration, max_idle: usize) -> Self {
        Self::with_tls(resolver, mozilla_roots(), connect_timeout, max_idle)
    }

    fn with_tls(
        resolver: R,
        tls: rustls::ClientConfig,
        connect_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        Self {
            connector: https(resolver, tls, connect_timeout),
            idle: Mutex::new(Idle {
                by_origin: HashMap::new(),
                count: 0,
            }),
            max_idle,
        }
    }

    /// Send a request to `uri` (absolute; its origin is dialled when no
    /// idle connection to it is left) and read up to `limit` bytes of the
    /// answer. A reused connection the server closed meanwhile fails before
    /// any answer; the request is then sent once more on a fresh one, so
    /// only idempotent requests, or ones whose receivers dedupe (webhooks
    /// carry an id), belong here. `Host` is set from the URI when missing.
    pub async fn send(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        body: B,
        limit: usize,
    ) -> Result<Answer, Failure>
    where
        B: Clone,
    {
        let origin = origin(uri)?;
        let request = || request(method, uri, &origin, headers, body.clone());
        if let Some(conn) = self.take_idle(&origin) {
            match self.exchange(conn, &origin, request()?, limit).await {
                Err(Failure::Connect(_)) => {}
                answered => return answered,
            }
        }
        let fresh = self.dial(uri).await?;
        self.exchange(fresh, &origin, request()?, limit).await
    }

    fn take_idle(&self, origin: &Origin) -> Option<Conn<B>> {
        let mut idle = self.idle.lock().expect("pool lock");
        let Idle { by_origin, count } = &mut *idle;
        let waiting = by_origin.get_mut(origin)?;
        while let Some(mut c) = waiting.pop() {
            *count -= 1;
            // Nobody drives an idle connection: poll it once to learn
            // whether the server closed it meanwhile.
            let ended = c
                .conn
                .as_mut()
                .is_none_or(|conn| futures_util::FutureExt::now_or_never(conn).is_some());
            if !ended && !c.sender.is_closed() && c.idle_since.elapsed() < IDLE_TIMEOUT {
                return Some(c);
            }
        }
        None
    }

    fn put_back(&self, origin: &Origin, mut conn: Conn<B>) {
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().expect("pool lock");
        let Idle { by_origin, count } = &mut *idle;
        let waiting = by_origin.entry(origin.clone()).or_default();
        if *count >= self.max_idle {
            // Full: this origin's oldest makes room (likeliest to be closed
            // by the server), or, when it has none, this one is closed.
            if waiting.is_empty() {
                return;
            }
            waiting.remove(0);
            *count -= 1;
        }
        waiting.push(conn);
        *count += 1;
    }

    async fn dial(&self, uri: &http::Uri) -> Result<Conn<B>, Failure> {
        let stream = self
            .connector
            .clone()
            .call(uri.clone())
            .await
            .map_err(|e| Failure::Connect(chain(e.as_ref())))?;
        let (sender, conn) = http1::handshake(stream)
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        Ok(Conn {
            sender,
            conn: Some(conn),
            idle_since: Instant::now(),
        })
    }

    /// Send the request and read the answer, driving the connection
    /// meanwhile; the connection goes back to the pool only when it can
    /// carry another request.
    async fn exchange(
        &self,
        mut c: Conn<B>,
        origin: &Origin,
        request: hyper::Request<B>,
        limit: usize,
    ) -> Result<Answer, Failure> {
        let sent = c.sender.send_request(request);
        let response = drive(sent, &mut c.conn)
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status().as_u16();
        let (parts, mut body) = response.into_parts();
        // Sized by Content-Length: grown by doubling, an answer kept
        // until its commit took twice its size.
        let hinted = body.size_hint().exact().unwrap_or(0);
        let mut kept = Vec::with_capacity((hinted as usize).min(limit));
        let mut complete = true;
        while let Some(frame) = drive(body.frame(), &mut c.conn).await {
            let frame = frame.map_err(|e| Failure::Invalid(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if kept.len() + data.len() > limit {
                    complete = false;
                    break;
                }
                kept.extend_from_slice(&data);
            }
        }
        if complete && c.conn.is_some() && !c.sender.is_closed() {
            self.put_back(origin, c);
        }
        Ok(Answer {
            status,
            headers: parts.headers,
            body: kept,
            complete,
        })
    }
}

/// An HTTP/1.1 request: the path as its target, `Host` from the origin
/// unless `headers` name one.
fn request<B>(
    method: &http::Method,
    uri: &http::Uri,
    origin: &Origin,
    headers: &http::HeaderMap,
    body: B,
) -> Result<hyper::Request<B>, Failure> {
    let mut request = hyper::Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = origin_form(uri);
    *request.headers_mut() = headers.clone();
    if !headers.contains_key(http::header::HOST) {
        let host = http::HeaderValue::from_str(origin.1.as_str())
            .map_err(|e| Failure::Invalid(e.to_string()))?;
        request.headers_mut().insert(http::header::HOST, host);
    }
    Ok(request)
}

fn origin(uri: &http::Uri) -> Result<Origin, Failure> {
    match (uri.scheme(), uri.authority()) {
        (Some(s), Some(a)) => Ok((s.clone(), a.clone())),
        _ => Err(Failure::Invalid(format!("{uri} is not an absolute URL"))),
    }
}

/// Await `work` while driving the connection it runs on. A connection
/// that ends (the server closed it after answering, say) is taken out of
/// `conn`, and `work` finishes with whatever it already received: hyper
/// fails it if that was not enough.
async fn drive<T, B>(
    work: impl std::future::Future<Output = T>,
    conn: &mut Option<Connection<B>>,
) -> T
where
    B: Body + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    Connection<B>: std::future::Future + Unpin,
{
    tokio::pin!(work);
    if let Some(c) = conn.as_mut() {
        tokio::select! {
            biased;
            done = &mut work => return done,
            _ = c => *conn = None,
        }
    }
    work.await
}

fn transport_error(e: &hyper::Error) -> Failure {
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        Failure::Invalid(e.to_string())
    } else {
        Failure::Connect(chain(e))
    }
}

/// An error and its causes, as one line ("connection refused" sits in a source).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The request target for HTTP/1.1: path and query, never the origin.
fn origin_form(uri: &http::Uri) -> http::Uri {
    uri.path_and_query()
        .map(|p| http::Uri::from(p.clone()))
        .unwrap_or_else(|| http::Uri::from_static("/"))
}

#[cfg(test)]
pub(crate) mod tests;
