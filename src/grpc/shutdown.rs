//! Server streams end when the server starts shutting down: their bodies
//! are cut with `UNAVAILABLE` trailers (a client reconnects elsewhere)
//! instead of holding the drain for its full 30 s. Unary answers are whole
//! before they are sent, so they are never cut.

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderValue},
    middleware::Next,
    response::Response,
};
use http_body::Frame;
use std::{
    pin::Pin,
    task::{Context, Poll},
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Middleware: wraps each gRPC answer's body so it ends at shutdown.
pub async fn end_streams_on_shutdown(
    State(shutdown): State<CancellationToken>,
    req: Request,
    next: Next,
) -> Response {
    next.run(req)
        .await
        .map(|body| Body::new(EndOnShutdown::new(body, shutdown)))
}

struct EndOnShutdown {
    inner: Body,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    ended: bool,
}

impl EndOnShutdown {
    fn new(inner: Body, shutdown: CancellationToken) -> Self {
        Self {
            inner,
            shutdown: Box::pin(shutdown.cancelled_owned()),
            ended: false,
        }
    }
}

impl http_body::Body for EndOnShutdown {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.shutdown.as_mut().poll(cx).is_ready() {
            this.ended = true;
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("14"));
            trailers.insert(
                "grpc-message",
                HeaderValue::from_static("server%20shutting%20down"),
            );
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
