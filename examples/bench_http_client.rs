//! What one status request costs the client, paced as the poller paces
//! them: reqwest shared by one task per room (the poller today) against
//! hyper's connection-level client, each connection driven inside the task
//! that uses it (no connection task, no pool, a prebuilt URI).
//!
//!     cargo run --release --example bench_http_client -- URL [rate=10000] [seconds=10] [hyper_conns=32]
//!
//! URL is a static status file on a server no one here wrote (nginx).
//! Prints client CPU per request for both, measured in the same run. With
//! `H2_URL` (the same file on an nginx `listen ... http2` port), also
//! reqwest over HTTP/2 with prior knowledge, and hyper's HTTP/2 client
//! sending each tick's requests at once on one connection.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// This process's CPU time so far (user + system), from /proc.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15; `after` starts at field 3.
    Duration::from_millis((f[11] + f[12]) * 10)
}

/// `BATCH_MS`: wake-ups are rounded up to a shared tick, so the requests
/// due within it fire (and are answered) together.
fn batch() -> Duration {
    Duration::from_millis(
        std::env::var("BATCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}

fn round_up(
    at: tokio::time::Instant,
    origin: tokio::time::Instant,
    tick: Duration,
) -> tokio::time::Instant {
    if tick.is_zero() {
        return at;
    }
    let since = at.saturating_duration_since(origin).as_nanos();
    let t = tick.as_nanos();
    origin + Duration::from_nanos((since.div_ceil(t) * t) as u64)
}

/// Wait for every task: (requests done, client CPU spent since `start_cpu`).
async fn joined(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    done: &AtomicU64,
    start_cpu: Duration,
) -> (u64, Duration) {
    for t in tasks {
        t.await.unwrap();
    }
    (done.load(Ordering::Relaxed), cpu() - start_cpu)
}

async fn reqwest_tasks(url: String, rate: u64, secs: u64, h2: bool) -> (u64, Duration) {
    // One task per "room", each polling once a second, as the poller does.
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(5));
    if h2 {
        builder = builder.http2_prior_knowledge();
    }
    let client = builder.build().unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let start_cpu = cpu();
    let mut tasks = Vec::new();
    for i in 0..rate {
        let (client, url, done) = (client.clone(), url.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut next =
                tokio::time::Instant::now() + Duration::from_micros(i * 1_000_000 / rate);
            let tick = batch();
            let origin = tokio::time::Instant::now();
            loop {
                tokio::time::sleep_until(round_up(next, origin, tick)).await;
                if Instant::now() >= stop {
                    return;
                }
                let res = client.get(&url).header("vf-org-id", "bench").send().await;
                if let Ok(r) = res {
                    if r.bytes().await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                next += Duration::from_secs(1);
            }
        }));
    }
    joined(tasks, &done, start_cpu).await
}

async fn hyper_tasks(url: String, rate: u64, secs: u64, conns: u64) -> (u64, Duration) {
    let uri: hyper::Uri = url.parse().unwrap();
    let authority = uri.authority().unwrap().clone();
    let path: hyper::Uri = uri.path().parse().unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let start_cpu = cpu();
    let mut tasks = Vec::new();
    for i in 0..conns {
        let (authority, path, done) = (authority.clone(), path.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(authority.as_str()).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, mut conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
            let period = Duration::from_nanos(1_000_000_000 * conns / rate);
            let mut next = tokio::time::Instant::now() + period * i as u32 / conns as u32;
            let host = hyper::header::HeaderValue::from_str(authority.as_str()).unwrap();
            let tick = batch();
            let origin = tokio::time::Instant::now();
            loop {
                tokio::time::sleep_until(round_up(next, origin, tick)).await;
                if Instant::now() >= stop {
                    return;
                }
                let req = Request::get(path.clone())
                    .header(hyper::header::HOST, host.clone())
                    .header("vf-org-id", "bench")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                // The connection is driven here, beside the request: one task.
                let send = sender.send_request(req);
                tokio::pin!(send);
                let res = tokio::select! {
                    r = &mut send => r.unwrap(),
                    c = &mut conn => panic!("connection ended: {c:?}"),
                };
                let collect = res.into_body().collect();
                tokio::pin!(collect);
                let ok = tokio::select! {
                    b = &mut collect => b.is_ok(),
                    c = &mut conn => panic!("connection ended: {c:?}"),
                };
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                next += period;
            }
        }));
    }
    joined(tasks, &done, start_cpu).await
}

/// One HTTP/2 connection, driven in one task: each tick's requests go out
/// together as streams, so they share writes and reads.
async fn hyper_h2(url: String, rate: u64, secs: u64) -> (u64, Duration) {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let uri: hyper::Uri = url.parse().unwrap();
    let authority = uri.authority().unwrap().clone();
    let stop = Instant::now() + Duration::from_secs(secs);
    let start_cpu = cpu();
    let stream = TcpStream::connect(authority.as_str()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let tick = batch().max(Duration::from_millis(1));
    let per_tick = (rate as u128 * tick.as_nanos() / 1_000_000_000) as usize;
    let mut done = 0u64;
    let mut at = tokio::time::Instant::now();
    while Instant::now() < stop {
        at += tick;
        tokio::time::sleep_until(at).await;
        let mut batch: FuturesUnordered<_> = (0..per_tick)
            .map(|_| {
                let mut sender = sender.clone();
                let req = Request::get(uri.clone())
                    .header("vf-org-id", "bench")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                async move {
                    let res = sender.send_request(req).await.ok()?;
                    res.into_body().collect().await.ok()
                }
            })
            .collect();
        while let Some(r) = batch.next().await {
            done += r.is_some() as u64;
        }
    }
    (done, cpu() - start_cpu)
}

/// The same paced requests on kept connections with no HTTP library in
/// between: a request written from bytes built once, the answer read into
/// a buffer kept per connection and parsed with httparse (hyper's own
/// parser). What a poll could cost with nothing but the parse.
async fn raw_tasks(url: String, rate: u64, secs: u64, conns: u64) -> (u64, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let uri: hyper::Uri = url.parse().unwrap();
    let authority = uri.authority().unwrap().clone();
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\nvf-org-id: bench\r\n\r\n",
        uri.path(),
        authority
    )
    .into_bytes();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let start_cpu = cpu();
    let mut tasks = Vec::new();
    for i in 0..conns {
        let (authority, request, done) = (authority.clone(), request.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(authority.as_str()).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let period = Duration::from_nanos(1_000_000_000 * conns / rate);
            let mut next = tokio::time::Instant::now() + period * i as u32 / conns as u32;
            let tick = batch();
            let origin = tokio::time::Instant::now();
            let mut buf: Vec<u8> = Vec::with_capacity(8192);
            loop {
                tokio::time::sleep_until(round_up(next, origin, tick)).await;
                if Instant::now() >= stop {
                    return;
                }
                stream.write_all(&request).await.unwrap();
                buf.clear();
                let ok = loop {
                    if stream.read_buf(&mut buf).await.unwrap() == 0 {
                        panic!("connection ended");
                    }
                    let mut headers = [httparse::EMPTY_HEADER; 32];
                    let mut res = httparse::Response::new(&mut headers);
                    let parsed = match res.parse(&buf).unwrap() {
                        httparse::Status::Complete(head) => {
                            let len: usize = res
                                .headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                                .unwrap();
                            Some((head + len, res.code == Some(200)))
                        }
                        httparse::Status::Partial => None,
                    };
                    if let Some((end, ok)) = parsed {
                        while buf.len() < end {
                            stream.read_buf(&mut buf).await.unwrap();
                        }
                        break ok;
                    }
                };
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                next += period;
            }
        }));
    }
    joined(tasks, &done, start_cpu).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args.first().expect("URL of a status file").clone();
    let rate: u64 = args.get(1).map_or(10_000, |a| a.parse().unwrap());
    let secs: u64 = args.get(2).map_or(10, |a| a.parse().unwrap());
    let conns: u64 = args.get(3).map_or(32, |a| a.parse().unwrap());
    let (n, c) = if std::env::var("SKIP_REQWEST").is_ok() {
        (1, Duration::ZERO)
    } else {
        reqwest_tasks(url.clone(), rate, secs, false).await
    };
    println!(
        "reqwest, {rate} tasks at 1/s: {n} requests, {:.1} µs client CPU each",
        c.as_secs_f64() * 1e6 / n.max(1) as f64
    );
    if let Ok(h2) = std::env::var("H2_URL") {
        let (n, c) = hyper_h2(h2.clone(), rate, secs).await;
        println!(
            "hyper HTTP/2, one connection, a tick's requests at once: {n} requests, {:.1} µs client CPU each",
            c.as_secs_f64() * 1e6 / n.max(1) as f64
        );
        let (n, c) = reqwest_tasks(h2, rate, secs, true).await;
        println!(
            "reqwest over HTTP/2 (prior knowledge), {rate} tasks at 1/s: {n} requests, {:.1} µs client CPU each",
            c.as_secs_f64() * 1e6 / n.max(1) as f64
        );
    }
    let (n, c) = raw_tasks(url.clone(), rate, secs, conns).await;
    println!(
        "httparse on kept connections, {conns} connections: {n} requests, {:.1} µs client CPU each",
        c.as_secs_f64() * 1e6 / n.max(1) as f64
    );
    let (n, c) = hyper_tasks(url, rate, secs, conns).await;
    println!(
        "hyper conn-level, {conns} connections, driven in-task: {n} requests, {:.1} µs client CPU each",
        c.as_secs_f64() * 1e6 / n.max(1) as f64
    );
}
