//! The pool against real sockets: kept, replaced, bounded, TLS checked.

use super::*;
use http_body_util::Empty;
use hyper::body::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type GetPool = Pool<Empty<Bytes>>;

fn pool() -> GetPool {
    Pool::new(Duration::from_secs(5), 8)
}

async fn get(pool: &GetPool, uri: &http::Uri, limit: usize) -> Result<Answer, Failure> {
    let headers = http::HeaderMap::new();
    pool.send(&http::Method::GET, uri, &headers, Empty::new(), limit)
        .await
}

fn idle_count(pool: &GetPool) -> usize {
    pool.idle.lock().unwrap().count
}

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
    let pool = pool();
    for round in 1..=3 {
        let answer = get(&pool, &uri, 64).await.unwrap();
        assert_eq!((answer.status, answer.body.as_slice()), (200, &b"{}"[..]));
        assert_eq!(accepted.load(Ordering::SeqCst), round);
        // The kept connection is closed while it idles in the pool.
        assert_eq!(idle_count(&pool), 1);
        close.notify_waiters();
    }
}

#[tokio::test]
async fn an_answer_over_the_limit_is_cut_and_its_connection_dropped() {
    let (uri, _, _) = one_answer_per_connection(vec![b' '; 1025]).await;
    let pool = pool();
    let got = get(&pool, &uri, 1024).await.unwrap();
    assert_eq!((got.status, got.complete), (200, false));
    assert!(got.body.len() <= 1024);
    assert_eq!(idle_count(&pool), 0);
}

#[tokio::test]
async fn at_most_max_idle_connections_wait_across_origins() {
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(one_answer_per_connection(b"{}".to_vec()).await.0);
    }
    let pool: GetPool = Pool::new(Duration::from_secs(5), 2);
    for uri in &servers {
        assert_eq!(get(&pool, uri, 64).await.unwrap().status, 200);
    }
    // The third origin found the pool full and had nothing to give up.
    assert_eq!(idle_count(&pool), 2);
    let origins = &pool.idle.lock().unwrap().by_origin;
    assert_eq!(origins.values().map(Vec::len).sum::<usize>(), 2);
}

/// A TLS server for `localhost` with a certificate of its own making,
/// answering every connection once; and that certificate.
pub(crate) async fn tls_server() -> (u16, rustls::pki_types::CertificateDer<'static>) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::try_from(key.key_pair.serialize_der()).unwrap();
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

/// A client that trusts `cert` alone.
pub(crate) fn trusting(cert: rustls::pki_types::CertificateDer<'static>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test]
async fn https_is_spoken_with_tls_and_checked_against_the_trusted_roots() {
    let (port, cert) = tls_server().await;
    let uri: http::Uri = format!("https://localhost:{port}/v1/room/r/status")
        .parse()
        .unwrap();
    let trusted: GetPool = Pool::with_tls(
        GaiResolver::new(),
        trusting(cert),
        Duration::from_secs(5),
        8,
    );
    let answer = get(&trusted, &uri, 64).await.unwrap();
    assert_eq!(
        (answer.status, answer.body.as_slice()),
        (200, &b"secure"[..])
    );
    // Mozilla's roots do not know this certificate: refused, never read.
    let got = get(&pool(), &uri, 64).await;
    match got {
        Err(Failure::Connect(e)) => assert!(e.contains("certificate"), "{e}"),
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
    let got = get(&pool(), &uri, 64).await;
    assert!(matches!(got, Err(Failure::Connect(_))), "{:?}", got.err());
}
