//! The connection loop: HTTP/1.1 and HTTP/2 (h2c, or over TLS with ALPN:
//! see `tls`) on one listener, with the
//! timeouts `axum::serve` does not set: a client must send its request
//! headers within `header_read_timeout` (slow-loris, idle keep-alive), and
//! HTTP/2 peers that stop answering pings are dropped. Shutdown stops
//! accepting, lets open requests finish for up to [`DRAIN_TIMEOUT`], then
//! returns.

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::{GracefulConnection, GracefulShutdown, Watcher},
    service::TowerToHyperService,
};
use std::{
    future::Future,
    net::SocketAddr,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinSet,
};
use tokio_util::either::Either;
use tower::ServiceExt;

use crate::tls::Tls;

pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
pub const HTTP2_MAX_STREAMS: u32 = 256;
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections over the cap answered 429 at once; more are closed unanswered.
const TURNING_AWAY: usize = 1024;

pub async fn run(
    router: Router,
    listener: TcpListener,
    header_read_timeout: Duration,
    tls: Option<Arc<Tls>>,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let open = Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS)));
    let turning_away = Arc::new(Semaphore::new(TURNING_AWAY));
    let protocols = Arc::new(Protocols::new(header_read_timeout));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Over the cap, the connection is told so and closed: a short task
        // (a second at most) with a 1 KiB buffer, and past [`TURNING_AWAY`]
        // of those it is closed unanswered, so a flood stays bounded.
        let Ok(permit) = open.clone().try_acquire_owned() else {
            if let Ok(turning) = turning_away.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    turn_away(stream).await;
                    drop(turning);
                });
            }
            continue;
        };
        // Set by the first request (see `Watched`).
        let served_one = Arc::new(AtomicBool::new(false));
        let seen = served_one.clone();
        let service = router
            .clone()
            .map_request(move |req: hyper::Request<Incoming>| {
                seen.store(true, Ordering::Relaxed);
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let (protocols, watcher, tls) = (protocols.clone(), graceful.watcher(), tls.clone());
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let _permit = permit;
            // The handshake and the first bytes count against the header
            // timeout too.
            let ready = tokio::time::timeout(header_read_timeout, async {
                match tls {
                    None => {
                        let protocol = sniff(&stream).await?;
                        Some((Either::Right(stream), protocol))
                    }
                    Some(tls) => {
                        let stream = tls
                            .acceptor()
                            .accept(stream)
                            .await
                            .inspect_err(
                                |e| tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                            )
                            .ok()?;
                        // HTTP/2 over TLS is always negotiated (RFC 9113,
                        // 3.2); without ALPN a client speaks HTTP/1.1.
                        let protocol = match stream.get_ref().1.alpn_protocol() {
                            Some(b"h2") => Protocol::H2,
                            _ => Protocol::H1,
                        };
                        // Boxed: a plain connection need not carry the
                        // size of a TLS session inline.
                        Some((Either::Left(Box::new(stream)), protocol))
                    }
                }
            });
            let (io, protocol) = match ready.await {
                Ok(Some(ready)) => ready,
                Ok(None) => return,
                Err(_) => {
                    tracing::debug!(%peer, "nothing received within the header timeout; closing");
                    return;
                }
            };
            let io = TokioIo::new(io);
            let service = TowerToHyperService::new(service);
            let watched = Watched {
                watcher,
                served_one,
                header_read_timeout,
                peer,
            };
            match protocol {
                Protocol::H1 => {
                    watched
                        .drive(protocols.http1.serve_connection(io, service))
                        .await
                }
                Protocol::H2 => {
                    watched
                        .drive(protocols.http2.serve_connection(io, service))
                        .await
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
        }
    }
    connections.shutdown().await;
    Ok(())
}

/// What a connection over `--max-connections` gets: a 429 in HTTP/1.1
/// (an HTTP/2 or TLS client sees the connection close), then the end.
async fn turn_away(mut stream: TcpStream) {
    const BODY: &str = r#"{"error":{"code":"resource_exhausted","message":"too many open connections; retry shortly"}}"#;
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        // Answered once the client has spoken: a client sees an answer that
        // comes before its request as a broken connection.
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request).await;
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Each protocol's connection settings. A connection is served by its
/// protocol's builder, the protocol told by TLS ALPN or by the first bytes
/// of a plain connection, left unread (`sniff`). hyper_util's auto builder
/// would read those bytes itself and hand them back through a rewind
/// buffer, which makes hyper grow an HTTP/1.1 connection's read buffer from
/// 8 to 16 KiB, kept for the connection's life (a waiting device's largest
/// cost).
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(header_read_timeout: Duration) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
            .max_concurrent_streams(HTTP2_MAX_STREAMS);
        Self { http1, http2 }
    }
}

enum Protocol {
    H1,
    H2,
}

/// Every HTTP/2 connection without TLS starts with this.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long to wait for the rest of an HTTP/2 preface cut short.
const PREFACE_RETRY: Duration = Duration::from_millis(5);

/// The protocol of a plain connection, from its first bytes, left unread
/// for hyper. `None` when the peer closed (or the socket failed) first.
/// A preface that has arrived only in part is peeked at again until it is
/// whole or departs from the preface (the caller bounds the wait).
async fn sniff(stream: &TcpStream) -> Option<Protocol> {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut first).await.ok()?;
        if n == 0 {
            return None;
        } else if first[..n] != H2_PREFACE[..n] {
            return Some(Protocol::H1);
        } else if n == H2_PREFACE.len() {
            return Some(Protocol::H2);
        }
        // A peek returns at once while any byte is queued: pause instead.
        tokio::time::sleep(PREFACE_RETRY).await;
    }
}

/// A connection under the graceful shutdown and the first-request timeout.
struct Watched {
    watcher: Watcher,
    /// Set by the first request. A client that sends nothing is cut off
    /// by `sniff`'s timeout; one that sends an HTTP/2 preface and then no
    /// request, here (hyper's header timeout is HTTP/1.1's only).
    served_one: Arc<AtomicBool>,
    header_read_timeout: Duration,
    peer: SocketAddr,
}

impl Watched {
    async fn drive<C>(self, connection: C)
    where
        C: GracefulConnection,
        C::Error: std::fmt::Display,
    {
        let peer = self.peer;
        let mut connection = pin!(self.watcher.watch(connection));
        let result = tokio::select! {
            result = &mut connection => result,
            () = tokio::time::sleep(self.header_read_timeout) => {
                if !self.served_one.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "no request within the header timeout; closing");
                    return;
                }
                connection.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, %peer, "connection ended with an error");
        }
    }
}
