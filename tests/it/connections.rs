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
async fn a_request_is_served_whatever_its_first_bytes_arrive_in() {
    // The protocol is told from the first bytes; a lone "P" could still be
    // an HTTP/2 preface, and "PRI * HTTP/2.0" cut short even more so.
    let s = common::start().await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    for piece in [
        &b"P"[..],
        b"OST /livez HTTP/1.1\r\nHost: x\r\n",
        b"Connection: close\r\n\r\n",
    ] {
        tcp.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut buf = Vec::new();
    tcp.read_to_end(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");

    // HTTP/2 with prior knowledge, its preface in two writes: the server
    // answers with its SETTINGS frame (type 4).
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tcp.write_all(b"\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut head))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(head[3], 4, "a SETTINGS frame: {head:?}");
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

#[tokio::test]
async fn shutdown_ends_server_streams_at_once() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut s = common::start().await;
    let mut health = HealthClient::new(s.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch starts")
        .into_inner();
    watch
        .message()
        .await
        .expect("first status")
        .expect("a status");
    let started = std::time::Instant::now();
    let served = s.shut_down();
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), watch.message())
        .await
        .expect("the stream ends at shutdown, not after the 30 s drain");
    let status = end.expect_err("ended by the server");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    tokio::time::timeout(std::time::Duration::from_secs(5), served)
        .await
        .expect("serve returns once the streams are gone")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn connections_over_the_cap_get_429_and_a_freed_place_is_taken_again() {
    let s = common::start_with(|c| c.max_connections = 2).await;
    // Two clients hold every place (half a request each).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = reqwest::Client::new()
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.headers()["retry-after"], "1");
    let body: serde_json::Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "resource_exhausted");

    // A client leaves: its place is free again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let a = reqwest::Client::new()
            .get(format!("{}/healthz", s.base))
            .send()
            .await
            .unwrap();
        if a.status() == reqwest::StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the freed place was not reused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
