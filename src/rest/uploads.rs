//! Multipart uploads. A capture's parts (`image`, `meta`) become the same
//! `UploadCaptureChunk` stream a gRPC client sends, fed to the same
//! handler, so the two transports cannot drift. Parts stream: the image is
//! never held whole.

use axum::{
    Json,
    body::Body,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_util::stream;
use multer::{Constraints, Field, Multipart, SizeLimit};
use std::sync::Arc;
use tonic::Status;

use super::{RestState, error::error_response, extract::Caller, extract::decode_json};
use crate::{auth, error::Error, grpc::captures, proto};

/// Room for part headers and boundaries beyond the parts' own limits.
const FRAMING_BYTES: u64 = 64 * 1024;

pub async fn upload_capture(
    caller: Caller,
    state: Arc<RestState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(e) = auth::require_device(caller.credential()) {
        return error_response(e);
    }
    let app = state.app.clone();
    let max_meta = state.max_json_bytes as u64;
    let max_image = app.config.max_capture_bytes;
    let multipart = match multipart(&headers, body, max_meta, max_image, "image") {
        Ok(m) => m,
        Err(e) => return error_response(e),
    };
    let chunks = Box::pin(capture_chunks(multipart));
    match captures::upload(&app, caller.credential(), chunks).await {
        Ok((capture, created)) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(capture)).into_response()
        }
        Err(e) => error_response(e),
    }
}

pub async fn upload_model(
    caller: Caller,
    _state: Arc<RestState>,
    _headers: HeaderMap,
    _body: Body,
) -> Response {
    match auth::require_write(caller.credential()) {
        Ok(_) => error_response(Error::Unimplemented(
            "model upload is not implemented yet".into(),
        )),
        Err(e) => error_response(e),
    }
}

/// A multipart/form-data reader over `body`; anything else is 415.
fn multipart(
    headers: &HeaderMap,
    body: Body,
    max_text: u64,
    max_file: u64,
    file_part: &'static str,
) -> Result<Multipart<'static>, Error> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        Error::UnsupportedMediaType(format!(
            "expected Content-Type: multipart/form-data with a boundary, got {content_type:?}"
        ))
    })?;
    // The file part is limited by the use case, which counts its bytes and
    // names its own limit; here only by the stream as a whole, so a body
    // cannot run on forever.
    let whole = max_file + 8 * max_text + FRAMING_BYTES;
    let limits = SizeLimit::new()
        .whole_stream(whole)
        .per_field(max_text)
        .for_field(file_part, whole);
    Ok(Multipart::with_constraints(
        body.into_data_stream(),
        boundary,
        Constraints::new().size_limit(limits),
    ))
}

fn multipart_error(e: multer::Error) -> Status {
    match e {
        multer::Error::FieldSizeExceeded { field_name, limit } => {
            Status::resource_exhausted(format!(
                "part {:?} is larger than {limit} bytes",
                field_name.unwrap_or_default()
            ))
        }
        multer::Error::StreamSizeExceeded { limit } => {
            Status::resource_exhausted(format!("request body is larger than {limit} bytes"))
        }
        other => Status::invalid_argument(format!("malformed multipart body: {other}")),
    }
}

struct Parts {
    multipart: Multipart<'static>,
    /// The image part being streamed.
    image: Option<Field<'static>>,
    seen_image: bool,
    done: bool,
}

/// The capture's parts as upload chunks, in the order they arrive: `meta`
/// (a JSON string) as one chunk, `image` as data chunks. Other parts are
/// skipped (newer clients may send more).
fn capture_chunks(
    multipart: Multipart<'static>,
) -> impl tokio_stream::Stream<Item = Result<proto::UploadCaptureChunk, Status>> + Send {
    use proto::upload_capture_chunk::Part;
    let state = Parts {
        multipart,
        image: None,
        seen_image: false,
        done: false,
    };
    let chunk = |part| proto::UploadCaptureChunk { part: Some(part) };
    stream::unfold(state, move |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(field) = st.image.as_mut() {
                match field.chunk().await {
                    Ok(Some(bytes)) => return Some((Ok(chunk(Part::Data(bytes_vec(bytes)))), st)),
                    Ok(None) => {
                        st.image = None;
                        continue;
                    }
                    Err(e) => {
                        st.done = true;
                        return Some((Err(multipart_error(e)), st));
                    }
                }
            }
            let field = match st.multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => return None,
                Err(e) => {
                    st.done = true;
                    return Some((Err(multipart_error(e)), st));
                }
            };
            match field.name() {
                Some("image") => {
                    if st.seen_image {
                        st.done = true;
                        return Some((Err(Status::invalid_argument("image was given twice")), st));
                    }
                    st.seen_image = true;
                    st.image = Some(field);
                }
                Some("meta") => {
                    let meta = match field.bytes().await {
                        Ok(text) => decode_json::<proto::CaptureMeta>(&text, None)
                            .map(|(meta, _)| chunk(Part::Meta(meta)))
                            .map_err(|e| Status::invalid_argument(format!("meta: {e}"))),
                        Err(e) => Err(multipart_error(e)),
                    };
                    if meta.is_err() {
                        st.done = true;
                    }
                    return Some((meta, st));
                }
                _ => {}
            }
        }
    })
}

fn bytes_vec(bytes: Bytes) -> Vec<u8> {
    // `Bytes` → `Vec` is free when the buffer is not shared (the common
    // case for a freshly read chunk), a copy otherwise.
    Vec::from(bytes)
}
