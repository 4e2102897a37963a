//! Multipart uploads. A capture's parts (`image`, `meta`) and a model's
//! (`file`, `name`, `version`, `format`) become the same chunk streams a
//! gRPC client sends, fed to the same handlers, so the two transports
//! cannot drift. Parts stream: the image or artifact is never held whole.

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
use tokio_stream::StreamExt;
use tonic::Status;

use super::{RestState, error::error_response, extract::Caller, extract::decode_json};
use crate::{
    auth,
    error::Error,
    grpc::{captures, models},
    proto,
};

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
    state: Arc<RestState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(e) = auth::require_write(caller.credential()) {
        return error_response(e);
    }
    let app = state.app.clone();
    let max_text = state.max_json_bytes as u64;
    let max_file = app.config.max_model_bytes;
    let multipart = match multipart(&headers, body, max_text, max_file, "file") {
        Ok(m) => m,
        Err(e) => return error_response(e),
    };
    let chunks = Box::pin(model_chunks(multipart));
    match models::upload(&app, caller.credential(), chunks).await {
        Ok(model) => (StatusCode::CREATED, Json(model)).into_response(),
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

/// One piece of a multipart body: a chunk of the file part, or a whole
/// text part (name, bytes).
enum Piece {
    File(Bytes),
    Text(String, Bytes),
}

struct Parts {
    multipart: Multipart<'static>,
    file_part: &'static str,
    /// The file part being streamed.
    file: Option<Field<'static>>,
    seen_file: bool,
    done: bool,
}

/// The parts in the order they arrive: the file part as chunks (never
/// whole), other parts whole (each within the per-part limit).
fn pieces(
    multipart: Multipart<'static>,
    file_part: &'static str,
) -> impl tokio_stream::Stream<Item = Result<Piece, Status>> + Send {
    let state = Parts {
        multipart,
        file_part,
        file: None,
        seen_file: false,
        done: false,
    };
    stream::unfold(state, move |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(field) = st.file.as_mut() {
                match field.chunk().await {
                    Ok(Some(bytes)) => return Some((Ok(Piece::File(bytes)), st)),
                    Ok(None) => {
                        st.file = None;
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
            let name = field.name().unwrap_or_default().to_owned();
            if name == st.file_part {
                if st.seen_file {
                    st.done = true;
                    let e = Status::invalid_argument(format!("{name} was given twice"));
                    return Some((Err(e), st));
                }
                st.seen_file = true;
                st.file = Some(field);
                continue;
            }
            let text = field.bytes().await.map_err(multipart_error);
            if text.is_err() {
                st.done = true;
            }
            return Some((text.map(|t| Piece::Text(name, t)), st));
        }
    })
}

/// The capture's parts as upload chunks: `meta` (a JSON string) as one
/// chunk, `image` as data chunks. Other parts are skipped (newer clients
/// may send more).
fn capture_chunks(
    multipart: Multipart<'static>,
) -> impl tokio_stream::Stream<Item = Result<proto::UploadCaptureChunk, Status>> + Send {
    use proto::upload_capture_chunk::Part;
    let chunk = |part| proto::UploadCaptureChunk { part: Some(part) };
    pieces(multipart, "image").filter_map(move |piece| match piece {
        Err(e) => Some(Err(e)),
        Ok(Piece::File(bytes)) => Some(Ok(chunk(Part::Data(bytes_vec(bytes))))),
        Ok(Piece::Text(name, text)) if name == "meta" => Some(
            decode_json::<proto::CaptureMeta>(&text, None)
                .map(|(meta, _)| chunk(Part::Meta(meta)))
                .map_err(|e| Status::invalid_argument(format!("meta: {e}"))),
        ),
        Ok(Piece::Text(..)) => None,
    })
}

/// The model's parts as upload chunks: `name`, `version` and `format`
/// (text) each as a meta chunk of its own, `file` as data chunks.
fn model_chunks(
    multipart: Multipart<'static>,
) -> impl tokio_stream::Stream<Item = Result<proto::UploadModelChunk, Status>> + Send {
    use proto::upload_model_chunk::Part;
    let chunk = |part| proto::UploadModelChunk { part: Some(part) };
    pieces(multipart, "file").filter_map(move |piece| match piece {
        Err(e) => Some(Err(e)),
        Ok(Piece::File(bytes)) => Some(Ok(chunk(Part::Data(bytes_vec(bytes))))),
        Ok(Piece::Text(name, text)) => {
            let Ok(text) = String::from_utf8(text.to_vec()) else {
                return Some(Err(Status::invalid_argument(format!(
                    "{name} must be UTF-8 text"
                ))));
            };
            let mut meta = proto::ModelUploadMeta::default();
            match name.as_str() {
                "name" => meta.name = text,
                "version" => meta.version = text,
                "format" => meta.format = text,
                _ => return None,
            }
            Some(Ok(chunk(Part::Meta(meta))))
        }
    })
}

fn bytes_vec(bytes: Bytes) -> Vec<u8> {
    // `Bytes` → `Vec` is free when the buffer is not shared (the common
    // case for a freshly read chunk), a copy otherwise.
    Vec::from(bytes)
}
