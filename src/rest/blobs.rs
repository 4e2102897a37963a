//! `GET /blobs/<key>?expires=..&signature=..`: the filesystem store's signed
//! download URLs, served here (S3 serves its own presigned URLs). Refused
//! with 403 once expired or altered. Supports a single HTTP Range, `ETag`
//! and `If-None-Match`.

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use std::{io::SeekFrom, sync::Arc};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{RestState, error::error_response};
use crate::{
    blobs::{fs::content_type_of, signing::Refusal},
    error::Error,
};

#[derive(Deserialize)]
pub struct Signature {
    expires: Option<String>,
    signature: Option<String>,
}

pub async fn download(
    State(s): State<Arc<RestState>>,
    Path(key): Path<String>,
    Query(q): Query<Signature>,
    headers: HeaderMap,
) -> Response {
    let core = &s.app.core;
    let Some(store) = core.blobs.as_fs() else {
        return error_response(Error::NotFound("no such route".into()));
    };
    let expires = q.expires.as_deref().and_then(|e| e.parse::<i64>().ok());
    let (Some(expires), Some(signature)) = (expires, q.signature.as_deref()) else {
        return forbidden("this URL is not signed (expires and signature are required)");
    };
    match store
        .signer()
        .verify(&key, expires, signature, core.clock.now().timestamp())
    {
        Ok(()) => {}
        Err(Refusal::Expired) => return forbidden("this signed URL has expired"),
        Err(Refusal::BadSignature) => return forbidden("this URL's signature does not match"),
    }
    let Some(path) = store.path_of(&key) else {
        return error_response(Error::not_found("blob"));
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return error_response(Error::not_found("blob"));
        }
        Err(e) => return error_response(Error::Internal(format!("blob {key}: {e}"))),
    };
    let meta = match file.metadata().await {
        Ok(m) => m,
        Err(e) => return error_response(Error::Internal(format!("blob {key}: {e}"))),
    };
    let len = meta.len();
    // Objects never change under a key: length and mtime name the version.
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let etag = format!("\"{len:x}-{mtime:x}\"");
    let etag_value = HeaderValue::from_str(&etag).expect("hex is a valid header");
    if if_none_match(&headers, &etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response();
    }
    let range = match range_of(&headers, &etag, len) {
        Ok(r) => r,
        Err(()) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{len}")).expect("digits"),
                )],
            )
                .into_response();
        }
    };
    let (status, start, count) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        None => (StatusCode::OK, 0, len),
    };
    if start > 0
        && let Err(e) = file.seek(SeekFrom::Start(start)).await
    {
        return error_response(Error::Internal(format!("blob {key}: {e}")));
    }
    let body = Body::from_stream(ReaderStream::new(file.take(count)));
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type_of(&key)),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, etag_value);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300, immutable"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {start}-{}/{len}", start + count - 1);
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&value).expect("digits"),
        );
    }
    response
}

fn forbidden(why: &str) -> Response {
    error_response(Error::PermissionDenied(why.into()))
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// The one byte range asked for, inclusive, within `len`. `None`: the
/// whole object (no Range, several ranges, a Range we do not read, or an
/// `If-Range` for another version). `Err`: unsatisfiable (416).
fn range_of(headers: &HeaderMap, etag: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
        && if_range.trim() != etag
    {
        return Ok(None);
    }
    let Some(set) = spec.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if set.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |v: &str| v.parse::<u64>().map_err(|_| ());
    let range = match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => {
            let n = parse(last)?;
            if n == 0 || len == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len - 1)
        }
        // bytes=A-
        (false, true) => {
            let a = parse(first)?;
            if a >= len {
                return Err(());
            }
            (a, len - 1)
        }
        (false, false) => {
            let (a, b) = (parse(first)?, parse(last)?);
            if a > b {
                return Ok(None);
            }
            if a >= len {
                return Err(());
            }
            (a, b.min(len - 1))
        }
        (true, true) => return Ok(None),
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranged(spec: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(spec).unwrap());
        h
    }

    #[test]
    fn ranges_resolve_within_the_object() {
        let e = "\"x\"";
        assert_eq!(range_of(&HeaderMap::new(), e, 100), Ok(None));
        assert_eq!(range_of(&ranged("bytes=0-9"), e, 100), Ok(Some((0, 9))));
        assert_eq!(range_of(&ranged("bytes=90-"), e, 100), Ok(Some((90, 99))));
        assert_eq!(range_of(&ranged("bytes=-10"), e, 100), Ok(Some((90, 99))));
        assert_eq!(range_of(&ranged("bytes=-1000"), e, 100), Ok(Some((0, 99))));
        assert_eq!(
            range_of(&ranged("bytes=50-1000"), e, 100),
            Ok(Some((50, 99)))
        );
        assert_eq!(range_of(&ranged("bytes=100-"), e, 100), Err(()));
        assert_eq!(range_of(&ranged("bytes=0-1,5-6"), e, 100), Ok(None));
        assert_eq!(range_of(&ranged("items=0-1"), e, 100), Ok(None));
        assert_eq!(range_of(&ranged("bytes=x-1"), e, 100), Err(()));
    }
}
