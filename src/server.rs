//! The connection loop: HTTP/1.1 and HTTP/2 (h2c, or over TLS with ALPN:
//! see `tls`) on one listener, with the
//! timeouts `axum::serve` does not set: a client must send its request
//! headers within `header_read_timeout` (slow-loris, idle keep-alive), and
//! HTTP/2 peers that stop answering pings are dropped. Shutdown stops
//! accepting, lets open requests finish for up to [`DRAIN_TIMEOUT`], then
//! returns.

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use std::{
    future::Future,
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
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
        .max_concurrent_streams(HTTP2_MAX_STREAMS);

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
        // Set by the first request. hyper's header timeout starts only once
        // the protocol is known; a client that sends nothing at all is cut
        // off by the check below instead.
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
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let _permit = permit;
            let io = match tls {
                None => Either::Right(stream),
                // The handshake counts against the header timeout too.
                Some(tls) => {
                    match tokio::time::timeout(header_read_timeout, tls.acceptor().accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => Either::Left(stream),
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "no TLS handshake within the header timeout");
                            return;
                        }
                    }
                }
            };
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(io),
                TowerToHyperService::new(service),
            );
            let mut connection = pin!(watcher.watch(connection));
            let result = tokio::select! {
                result = &mut connection => result,
                () = tokio::time::sleep(header_read_timeout) => {
                    if !served_one.load(Ordering::Relaxed) {
                        tracing::debug!(%peer, "no request within the header timeout; closing");
                        return;
                    }
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
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
