//! The upstream's keep-alive HTTP/1.1 connections, each driven by the poll that uses it.
//!
//! reqwest drives every connection in a task of its own and hands each
//! request over through its pool and a channel: two task wake-ups and a lock
//! per poll, which at 2,000 polls a second cost more than the request
//! (BENCHMARKS.md, "Polling against nginx"). Here a poll takes an idle
//! connection, sends on it and drives it in its own task until the body is
//! read, then puts it back: no connection task, no channel. hyper-rustls
//! gives the same TLS as reqwest (rustls, Mozilla's roots); a proxy is
//! reqwest's job (see [`super::proxy_configured`]).

use super::{PollError, MAX_BODY};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tower_service::Service;

/// As reqwest's pool: idle connections kept, and for how long.
const MAX_IDLE: usize = 256;
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

type Connection = http1::Connection<Stream, Empty<Bytes>>;

struct Conn {
    sender: http1::SendRequest<Empty<Bytes>>,
    /// None once it ended: never polled again, never reused.
    conn: Option<Connection>,
    idle_since: Instant,
}

/// One 200-or-not answer: what the poller needs of it.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    /// Trusting Mozilla's roots, as reqwest does.
    pub fn new(connect_timeout: Duration) -> Self {
        use hyper_rustls::ConfigBuilderExt;
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .with_webpki_roots()
        .with_no_client_auth();
        Self::with_tls(tls, connect_timeout)
    }

    fn with_tls(tls: rustls::ClientConfig, connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self {
            connector,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// GET `uri` (absolute; its origin is dialled when no idle connection
    /// is left). A reused connection the server closed meanwhile fails
    /// before any answer; the GET is then sent once more on a fresh one.
    pub async fn get(
        &self,
        uri: &http::Uri,
        headers: &http::HeaderMap,
    ) -> Result<Answer, PollError> {
        if let Some(conn) = self.take_idle() {
            match self.exchange(conn, uri, headers).await {
                Err(PollError::Connect(_)) => {}
                answered => return answered,
            }
        }
        let fresh = self.dial(uri).await?;
        self.exchange(fresh, uri, headers).await
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().expect("pool lock");
        while let Some(mut c) = idle.pop() {
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

    fn put_back(&self, mut conn: Conn) {
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() >= MAX_IDLE {
            // The oldest is the likeliest to be closed by the server.
            idle.remove(0);
        }
        idle.push(conn);
    }

    async fn dial(&self, uri: &http::Uri) -> Result<Conn, PollError> {
        let stream = self
            .connector
            .clone()
            .call(uri.clone())
            .await
            .map_err(|e| PollError::Connect(e.to_string()))?;
        let (sender, conn) = http1::handshake(stream)
            .await
            .map_err(|e| PollError::Connect(e.to_string()))?;
        Ok(Conn {
            sender,
            conn: Some(conn),
            idle_since: Instant::now(),
        })
    }

    /// Send the request and read the whole answer, driving the connection
    /// meanwhile; the connection goes back to the pool only when it can
    /// carry another request.
    async fn exchange(
        &self,
        mut c: Conn,
        uri: &http::Uri,
        headers: &http::HeaderMap,
    ) -> Result<Answer, PollError> {
        let mut request = hyper::Request::get(origin_form(uri))
            .body(Empty::new())
            .expect("a GET with a parsed URI builds");
        *request.headers_mut() = headers.clone();
        let sent = c.sender.send_request(request);
        let response = drive(sent, &mut c.conn)
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        let body = drive(Limited::new(body, MAX_BODY).collect(), &mut c.conn)
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    PollError::InvalidBody("answer over 64 KiB".into())
                } else {
                    PollError::InvalidBody(e.to_string())
                }
            })?
            .to_bytes();
        if c.conn.is_some() && !c.sender.is_closed() {
            self.put_back(c);
        }
        Ok(Answer {
            status,
            headers: parts.headers,
            body: body.to_vec(),
        })
    }
}

/// Await `work` while driving the connection it runs on. A connection
/// that ends (the server closed it after answering, say) is taken out of
/// `conn`, and `work` finishes with whatever it already received: hyper
/// fails it if that was not enough.
async fn drive<T>(work: impl std::future::Future<Output = T>, conn: &mut Option<Connection>) -> T {
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

fn transport_error(e: &hyper::Error) -> PollError {
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        PollError::InvalidBody(e.to_string())
    } else {
        PollError::Connect(e.to_string())
    }
}

/// The request target for HTTP/1.1: path and query, never the origin.
fn origin_form(uri: &http::Uri) -> http::Uri {
    uri.path_and_query()
        .map(|p| http::Uri::from(p.clone()))
        .unwrap_or_else(|| http::Uri::from_static("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers `body` once per connection, then, when told,
    /// closes it without saying so (as a server dropping an idle
    /// keep-alive does), and reports that it did.
    async fn one_answer_per_connection(
        body: Vec<u8>,
    ) -> (http::Uri, Arc<AtomicUsize>, Arc<tokio::sync::Notify>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}/v1/room/r/status", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let close = Arc::new(tokio::sync::Notify::new());
        let (count, closing) = (accepted.clone(), close.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (body, closing) = (body.clone(), closing.clone());
                tokio::spawn(async move {
                    // Registered before answering: a close sent once the
                    // answer is read is never missed.
                    let closed = closing.notified();
                    tokio::pin!(closed);
                    closed.as_mut().enable();
                    let mut buf = vec![0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(&body).await;
                    closed.await;
                });
            }
        });
        (uri.parse().unwrap(), accepted, close)
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced_and_the_get_sent_again() {
        let (uri, accepted, close) = one_answer_per_connection(b"{}".to_vec()).await;
        let pool = Pool::new(Duration::from_secs(5));
        let headers = http::HeaderMap::new();
        for round in 1..=3 {
            let answer = pool.get(&uri, &headers).await.unwrap();
            assert_eq!((answer.status, answer.body.as_slice()), (200, &b"{}"[..]));
            assert_eq!(accepted.load(Ordering::SeqCst), round);
            // The kept connection is closed while it idles in the pool.
            assert_eq!(pool.idle.lock().unwrap().len(), 1);
            close.notify_waiters();
        }
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_invalid_and_its_connection_dropped() {
        let (uri, _, _) = one_answer_per_connection(vec![b' '; MAX_BODY + 1]).await;
        let pool = Pool::new(Duration::from_secs(5));
        let got = pool.get(&uri, &http::HeaderMap::new()).await;
        assert!(
            matches!(got, Err(PollError::InvalidBody(_))),
            "{:?}",
            got.err()
        );
        assert!(pool.idle.lock().unwrap().is_empty());
    }

    /// A TLS server for `localhost` with a certificate of its own making,
    /// answering every connection once; and that certificate.
    async fn tls_server() -> (u16, rustls::pki_types::CertificateDer<'static>) {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = key.cert.der().clone();
        let private =
            rustls::pki_types::PrivateKeyDer::try_from(key.key_pair.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], private)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecure";
                    let _ = tls.write_all(answer).await;
                    let _ = tls.flush().await;
                });
            }
        });
        (port, cert)
    }

    #[tokio::test]
    async fn https_is_spoken_with_tls_and_checked_against_the_trusted_roots() {
        let (port, cert) = tls_server().await;
        let uri: http::Uri = format!("https://localhost:{port}/v1/room/r/status")
            .parse()
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let trusting = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let pool = Pool::with_tls(trusting, Duration::from_secs(5));
        let answer = pool.get(&uri, &http::HeaderMap::new()).await.unwrap();
        assert_eq!(
            (answer.status, answer.body.as_slice()),
            (200, &b"secure"[..])
        );
        // Mozilla's roots do not know this certificate: refused, never read.
        let got = Pool::new(Duration::from_secs(5))
            .get(&uri, &http::HeaderMap::new())
            .await;
        match got {
            Err(PollError::Connect(e)) => assert!(e.contains("certificate"), "{e}"),
            other => panic!("an untrusted certificate was accepted: {:?}", other.err()),
        }
    }

    #[tokio::test]
    async fn nobody_listening_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let uri: http::Uri = format!("http://{}/x", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        drop(listener);
        let got = Pool::new(Duration::from_secs(5))
            .get(&uri, &http::HeaderMap::new())
            .await;
        assert!(matches!(got, Err(PollError::Connect(_))), "{:?}", got.err());
    }
}
