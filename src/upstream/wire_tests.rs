//! The wire against real sockets: framings, kept and replaced connections, garbage.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server that reads one request head at a time and writes each of
/// `answers` in turn on the same connection, closing it after the last;
/// every connection starts the list again. Returns the origin, the count
/// of connections, and the request heads it read.
async fn serve(answers: Vec<Vec<u8>>) -> (http::Uri, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (count, seen) = (accepted.clone(), heads.clone());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (answers, seen) = (answers.clone(), seen.clone());
            tokio::spawn(async move {
                for answer in answers {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8; 1];
                        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    seen.lock().unwrap().push(String::from_utf8(head).unwrap());
                    if socket.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (origin.parse().unwrap(), accepted, heads)
}

fn wire(origin: http::Uri) -> Wire {
    let mut headers = http::HeaderMap::new();
    headers.insert("vf-org-id", "org-1".parse().unwrap());
    Wire::new(origin, &headers, Duration::from_secs(5), 4)
}

/// (status, body, retry-after) of one GET.
async fn get(wire: &Wire, limit: usize) -> Result<(u16, Vec<u8>, Option<String>), Failure> {
    wire.get("/v1/room/r/status?x=1", limit, |a| {
        let retry = a.header("Retry-After").map(str::to_string);
        (a.status, a.body.to_vec(), retry)
    })
    .await
}

fn idle(wire: &Wire) -> usize {
    wire.idle.lock().unwrap().len()
}

#[tokio::test]
async fn a_kept_connection_carries_every_get_with_host_and_the_given_headers() {
    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_vec();
    let (origin, accepted, heads) = serve(vec![ok.clone(), ok.clone(), ok]).await;
    let wire = wire(origin.clone());
    for _ in 0..3 {
        assert_eq!(get(&wire, 64).await.unwrap().1, b"hello");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let head = heads.lock().unwrap()[0].clone();
    let host = origin.authority().unwrap().as_str();
    assert!(
        head.starts_with("GET /v1/room/r/status?x=1 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains(&format!("host: {host}\r\n")), "{head}");
    assert!(head.contains("vf-org-id: org-1\r\n"), "{head}");
}

#[tokio::test]
async fn a_connection_the_server_closed_is_replaced_and_the_get_sent_again() {
    // One answer per connection, then the server lets go unannounced.
    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
    let (origin, accepted, _) = serve(vec![ok]).await;
    let wire = wire(origin);
    assert_eq!(get(&wire, 64).await.unwrap().1, b"ok");
    assert_eq!(idle(&wire), 1);
    assert_eq!(get(&wire, 64).await.unwrap().1, b"ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn chunked_interim_and_close_delimited_answers_are_read_whole() {
    let chunked =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\ntrailer: t\r\n\r\n"
            .to_vec();
    let (origin, accepted, _) = serve(vec![chunked.clone(), chunked]).await;
    let wire = wire(origin);
    assert_eq!(get(&wire, 64).await.unwrap().1, b"abcde");
    assert_eq!(get(&wire, 64).await.unwrap().1, b"abcde");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "chunked keeps the connection"
    );

    // No length: the body runs to the connection's end, which is not kept.
    let (origin, _, _) = serve(vec![b"HTTP/1.0 200 OK\r\n\r\nuntil the end".to_vec()]).await;
    let wire = self::wire(origin);
    assert_eq!(get(&wire, 64).await.unwrap().1, b"until the end");
    assert_eq!(idle(&wire), 0);
}

#[tokio::test]
async fn statuses_and_their_headers_reach_the_caller_and_close_is_honoured() {
    let limited =
        b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
            .to_vec();
    let (origin, _, _) = serve(vec![limited]).await;
    let wire = wire(origin);
    let (status, body, retry) = get(&wire, 64).await.unwrap();
    assert_eq!((status, body.len(), retry.as_deref()), (429, 0, Some("7")));
    assert_eq!(idle(&wire), 0, "connection: close is not kept");
}

#[tokio::test]
async fn garbage_and_oversized_answers_are_errors_and_never_kept() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"<html>not http</html>\r\n\r\n".to_vec(),
            "not an HTTP answer",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n".to_vec(),
            "answer over 64",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n".to_vec(),
            "bad content-length",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab".to_vec(),
            "two different",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            "bad chunked",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n50\r\n".to_vec(),
            "answer over 64",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort".to_vec(),
            "before the answer was complete",
        ),
    ];
    for (answer, expected) in cases {
        let (origin, _, _) = serve(vec![answer]).await;
        let wire = wire(origin);
        let e = get(&wire, 64).await.unwrap_err().to_string();
        assert!(e.contains(expected), "{e:?} lacks {expected:?}");
        assert_eq!(idle(&wire), 0);
    }
}

#[tokio::test]
async fn bytes_past_the_answer_are_not_trusted_again() {
    let extra = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n".to_vec();
    let (origin, _, _) = serve(vec![extra]).await;
    let wire = wire(origin);
    assert_eq!(get(&wire, 64).await.unwrap().1, b"ok");
    assert_eq!(idle(&wire), 0);
}

#[tokio::test]
async fn no_server_is_a_connect_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let wire = wire(origin.parse().unwrap());
    assert!(matches!(get(&wire, 64).await, Err(Failure::Connect(_))));
}

#[tokio::test]
async fn at_most_max_idle_connections_are_kept() {
    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
    let (origin, accepted, _) = serve(vec![ok; 4]).await;
    let wire = Arc::new(wire(origin));
    // Ten GETs at once need ten connections; four are kept afterwards.
    let gets = (0..10).map(|_| {
        let wire = wire.clone();
        tokio::spawn(async move { get(&wire, 64).await.unwrap() })
    });
    for g in gets.collect::<Vec<_>>() {
        g.await.unwrap();
    }
    assert!(accepted.load(Ordering::SeqCst) >= 4);
    assert_eq!(idle(&wire), 4);
}

#[tokio::test]
async fn https_is_spoken_with_tls_and_checked_against_the_trusted_roots() {
    use crate::keepalive::tests::{tls_server, trusting};
    let (port, cert) = tls_server().await;
    let origin: http::Uri = format!("https://localhost:{port}").parse().unwrap();
    let mut trusted = wire(origin.clone());
    let resolver = hyper_util::client::legacy::connect::dns::GaiResolver::new();
    trusted.connector = keepalive::https(resolver, trusting(cert), Duration::from_secs(5));
    assert_eq!(get(&trusted, 64).await.unwrap().1, b"secure");
    // Mozilla's roots do not know this certificate: refused, never read.
    match get(&wire(origin), 64).await {
        Err(Failure::Connect(e)) => assert!(e.contains("certificate"), "{e}"),
        other => panic!("an untrusted certificate was accepted: {other:?}"),
    }
}
