//! The polls' GETs on kept HTTP/1.1 connections: written from bytes, read into a buffer each connection keeps, parsed with httparse.
//!
//! A poll is one small GET whose answer is almost always the very bytes of
//! the last one. hyper's client, even driven inside the poll's task, spent
//! about 10 µs of CPU a request on its dispatcher, channels, header maps and
//! buffers (`examples/bench_http_client.rs`: 24 to 29 µs against 15 to 18
//! µs with httparse alone, paced as the poller paces). Here a request is
//! its head written into the connection's own buffer, and the answer is
//! read into that buffer and handed to the caller in place, so an
//! unchanged poll allocates nothing. httparse is hyper's own parser; the
//! framing it leaves to us (RFC 9112, section 6) is Content-Length,
//! chunked, or the connection's end. The connector, TLS and its roots are
//! the keep-alive pool's (`crate::keepalive`), as for webhooks.

mod framing;

use crate::keepalive::{self, Failure};
use framing::{dechunk, parse_head, Framing, Step, MAX_HEADERS};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_service::Service;

/// A connection idle longer than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The longest answer head (status line and headers) read.
const MAX_HEAD: usize = 16 * 1024;

type Io = TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>;

struct Conn {
    io: Io,
    /// The request as written, then the answer as read: kept between polls.
    buf: Vec<u8>,
    /// A chunked answer's body, decoded (rare: kept once used).
    chunked: Vec<u8>,
    idle_since: Instant,
}

/// An answer as read: its head's bytes and its body's, borrowed from the
/// connection until the caller has looked.
pub struct Answer<'a> {
    pub status: u16,
    head: &'a [u8],
    pub body: &'a [u8],
}

impl Answer<'_> {
    /// A header's value (the first of that name), parsed from the head again.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        response.parse(self.head).ok()?;
        let value = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))?
            .value;
        std::str::from_utf8(value).ok()
    }
}

/// Kept connections to one origin, the upstream's.
pub struct Wire {
    connector: HttpsConnector<HttpConnector>,
    origin: http::Uri,
    /// `Host`, then every header of every request, built once.
    headers: Box<[u8]>,
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
}

impl Wire {
    /// `origin` is dialled (scheme and authority); `headers` are sent with
    /// every request, after `Host`.
    pub fn new(
        origin: http::Uri,
        headers: &http::HeaderMap,
        connect_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        let mut head = Vec::new();
        if !headers.contains_key(http::header::HOST) {
            if let Some(a) = origin.authority() {
                head.extend_from_slice(b"host: ");
                head.extend_from_slice(a.as_str().as_bytes());
                head.extend_from_slice(b"\r\n");
            }
        }
        for (name, value) in headers {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let resolver = hyper_util::client::legacy::connect::dns::GaiResolver::new();
        Self {
            connector: keepalive::connector(resolver, connect_timeout),
            origin,
            headers: head.into(),
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// GET `target` (a path and query) and hand the answer, with at most
    /// `limit` bytes of body, to `look`. A reused connection that ends
    /// before any byte of the answer (the server closed it while it idled)
    /// is replaced and the GET sent once more.
    pub async fn get<T>(
        &self,
        target: &str,
        limit: usize,
        look: impl FnOnce(Answer<'_>) -> T,
    ) -> Result<T, Failure> {
        if let Some(mut conn) = self.take_idle() {
            match exchange(&mut conn, target, &self.headers, limit).await {
                Ok(ended) => return Ok(self.finish(conn, ended, look)),
                Err(Exchange::Stale) => {}
                Err(Exchange::Failed(f)) => return Err(f),
            }
        }
        let mut conn = self.dial().await?;
        match exchange(&mut conn, target, &self.headers, limit).await {
            Ok(ended) => Ok(self.finish(conn, ended, look)),
            Err(Exchange::Stale) => Err(Failure::Connect(
                "connection closed before an answer".into(),
            )),
            Err(Exchange::Failed(f)) => Err(f),
        }
    }

    /// Let the caller look, then keep the connection when it can carry
    /// another request.
    fn finish<T>(&self, conn: Conn, read: Read, look: impl FnOnce(Answer<'_>) -> T) -> T {
        let body = match read.body {
            Body::InBuf(range) => &conn.buf[range],
            Body::Chunked => &conn.chunked[..],
        };
        let seen = look(Answer {
            status: read.status,
            head: &conn.buf[read.head],
            body,
        });
        if read.reusable {
            self.put_back(conn);
        }
        seen
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().expect("wire lock");
        while let Some(conn) = idle.pop() {
            if conn.idle_since.elapsed() < IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    fn put_back(&self, mut conn: Conn) {
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().expect("wire lock");
        if idle.len() >= self.max_idle {
            // The oldest is the likeliest to have been closed by the server.
            idle.remove(0);
        }
        idle.push(conn);
    }

    async fn dial(&self) -> Result<Conn, Failure> {
        let stream = self
            .connector
            .clone()
            .call(self.origin.clone())
            .await
            .map_err(|e| Failure::Connect(keepalive::chain(e.as_ref())))?;
        Ok(Conn {
            io: TokioIo::new(stream),
            buf: Vec::with_capacity(1024),
            chunked: Vec::new(),
            idle_since: Instant::now(),
        })
    }
}

enum Exchange {
    /// A reused connection ended before any byte of the answer.
    Stale,
    Failed(Failure),
}

/// Where the body was left.
enum Body {
    InBuf(std::ops::Range<usize>),
    Chunked,
}

/// An answer read whole: where its parts are in the connection's buffers.
struct Read {
    status: u16,
    head: std::ops::Range<usize>,
    body: Body,
    reusable: bool,
}

/// Write the GET and read its answer whole into the connection's buffer.
async fn exchange(
    conn: &mut Conn,
    target: &str,
    headers: &[u8],
    limit: usize,
) -> Result<Read, Exchange> {
    let Conn {
        io, buf, chunked, ..
    } = conn;
    buf.clear();
    buf.extend_from_slice(b"GET ");
    buf.extend_from_slice(target.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    buf.extend_from_slice(headers);
    let sent = async {
        io.write_all(buf).await?;
        io.flush().await
    };
    if let Err(e) = sent.await {
        // Nothing of an answer yet: a dead kept connection, or a dead server.
        return Err(if is_reset(&e) {
            Exchange::Stale
        } else {
            Exchange::Failed(Failure::Connect(e.to_string()))
        });
    }
    buf.clear();
    // The head, skipping interim (1xx) answers.
    let mut start = 0;
    let (status, head_end, framing, keep) = loop {
        if let Some(parsed) = parse_head(&buf[start..]).map_err(Exchange::Failed)? {
            let (status, len, framing, keep) = parsed;
            if (100..200).contains(&status) && status != 101 {
                start += len;
                continue;
            }
            break (status, start + len, framing, keep);
        }
        if buf.len() - start > MAX_HEAD {
            return Err(Exchange::Failed(Failure::Invalid(
                "answer head over 16 KiB".into(),
            )));
        }
        match fill(io, buf).await {
            Ok(0) | Err(Exchange::Stale) if buf.is_empty() => return Err(Exchange::Stale),
            Ok(0) => return Err(closed_early()),
            Ok(_) => {}
            Err(e) => return Err(late(e)),
        }
    };
    if status == 101 {
        return Err(Exchange::Failed(Failure::Invalid(
            "upstream switched protocols".into(),
        )));
    }
    let over = || Exchange::Failed(Failure::Invalid(format!("answer over {limit} bytes")));
    let framing = if status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        framing
    };
    let (body, reusable) = match framing {
        Framing::Length(n) => {
            if n > limit {
                return Err(over());
            }
            while buf.len() < head_end + n {
                if fill(io, buf).await.map_err(late)? == 0 {
                    return Err(closed_early());
                }
            }
            // Bytes past the answer were never asked for: not HTTP we trust again.
            let tidy = buf.len() == head_end + n;
            (Body::InBuf(head_end..head_end + n), keep && tidy)
        }
        Framing::Close => {
            while fill(io, buf).await.map_err(late)? > 0 {
                if buf.len() - head_end > limit {
                    return Err(over());
                }
            }
            (Body::InBuf(head_end..buf.len()), false)
        }
        Framing::Chunked => {
            chunked.clear();
            let mut at = head_end;
            let tidy = loop {
                match dechunk(&buf[at..], chunked, limit).map_err(Exchange::Failed)? {
                    Step::Took(n) => at += n,
                    Step::Done(n) => break at + n == buf.len(),
                    Step::More => {
                        if fill(io, buf).await.map_err(late)? == 0 {
                            return Err(closed_early());
                        }
                    }
                }
            };
            (Body::Chunked, keep && tidy)
        }
    };
    Ok(Read {
        status,
        head: start..head_end,
        body,
        reusable,
    })
}

/// Read what the connection has into the buffer's end; 0 when it ended.
async fn fill(io: &mut Io, buf: &mut Vec<u8>) -> Result<usize, Exchange> {
    buf.reserve(4096);
    io.read_buf(buf).await.map_err(|e| {
        if is_reset(&e) {
            // Stale when nothing of the answer came yet; the caller decides.
            Exchange::Stale
        } else {
            Exchange::Failed(Failure::Connect(e.to_string()))
        }
    })
}

/// Once part of the answer came, a reset is a failure, not a stale connection.
fn late(e: Exchange) -> Exchange {
    match e {
        Exchange::Stale => Exchange::Failed(Failure::Connect(
            "connection reset during the answer".into(),
        )),
        failed => failed,
    }
}

fn closed_early() -> Exchange {
    Exchange::Failed(Failure::Connect(
        "connection closed before the answer was complete".into(),
    ))
}

/// A write that failed because the server had already let go.
fn is_reset(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), BrokenPipe | ConnectionReset | ConnectionAborted)
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
