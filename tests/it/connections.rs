//! Connection limits: a client that does not finish its request headers in
//! time is disconnected, so slow or idle clients cannot hold connections.

use crate::common;

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let s = common::start_with(|c| c.header_read_timeout_seconds = 1).await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    // Half a request, then silence.
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server closed the connection");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "not before the timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "soon after it: {took:?}");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));

    // A complete request on a fresh connection is served.
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tcp.read_to_end(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn silent_connections_are_cut_off() {
    let s = common::start_with(|c| c.header_read_timeout_seconds = 1).await;
    for opening in [&b""[..], b"PRI"] {
        let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(opening).await.unwrap();
        let started = Instant::now();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "closed after {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
