//! Multipart uploads (captures, models). They feed the same use case as the
//! gRPC client stream; until their issues land they check the caller, then
//! answer 501.

use axum::{body::Body, http::HeaderMap, response::Response};
use std::sync::Arc;

use super::{RestState, error::error_response, extract::Caller};
use crate::{auth, error::Error};

pub async fn upload_capture(
    caller: Caller,
    _state: Arc<RestState>,
    _headers: HeaderMap,
    _body: Body,
) -> Response {
    not_yet(
        auth::require_device(caller.credential()).map(|_| ()),
        "capture upload",
    )
}

pub async fn upload_model(
    caller: Caller,
    _state: Arc<RestState>,
    _headers: HeaderMap,
    _body: Body,
) -> Response {
    not_yet(
        auth::require_write(caller.credential()).map(|_| ()),
        "model upload",
    )
}

fn not_yet(allowed: crate::error::Result<()>, what: &str) -> Response {
    match allowed {
        Ok(()) => error_response(Error::Unimplemented(format!(
            "{what} is not implemented yet"
        ))),
        Err(e) => error_response(e),
    }
}
