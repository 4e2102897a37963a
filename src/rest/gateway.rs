//! What the generated route table (`swrm_rest.rs`, from the proto's HTTP
//! bindings) calls: decode the request message from the JSON body or the
//! query string, and encode the handler's answer with the route's status.

use axum::{
    Json,
    body::Body,
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header, request::Parts},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use std::{collections::HashMap, sync::LazyLock};
use tonic::Status;

use super::{
    RestState,
    error::{error_response, status_response},
    extract::{Caller, decode_json, json_content_type, read_body},
};
use crate::{checks::Access, error::Error};

include!(concat!(env!("OUT_DIR"), "/swrm_rest.rs"));

/// One REST operation of the generated table.
#[derive(Clone, Copy, Debug)]
pub struct Operation {
    /// `GET`, `POST`, ...
    pub method: &'static str,
    /// The axum path template, e.g. `/api/v1/devices/{id}`.
    pub path: &'static str,
    /// The gRPC method it reaches, e.g. `/swrm.v1.AdminService/GetDevice`.
    pub rpc: &'static str,
    pub access: Access,
}

/// Paths outside the proto that the server answers.
pub const SYSTEM_PATHS: &[&str] = &[
    "/healthz",
    "/livez",
    "/readyz",
    "/metrics",
    "/api/openapi.json",
    "/blobs/{*key}",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// A bounded label for a request: the route template it matched (REST),
/// the gRPC method, or `unmatched`. Never the raw path, which carries ids.
pub fn route_label(matched: Option<&str>, path: &str) -> &'static str {
    static KNOWN: LazyLock<HashMap<&'static str, &'static str>> = LazyLock::new(|| {
        OPERATIONS
            .iter()
            .map(|op| op.path)
            .chain(RPCS.iter().copied())
            .chain(SYSTEM_PATHS.iter().copied())
            .map(|p| (p, p))
            .collect()
    });
    matched
        .and_then(|m| KNOWN.get(m))
        .or_else(|| KNOWN.get(path))
        .copied()
        .unwrap_or("unmatched")
}

/// The path variables of the matched route. One that cannot be decoded
/// (bad percent-encoding) names nothing: 404, like an id we do not know.
pub struct PathParams(Vec<(String, String)>);

impl PathParams {
    pub fn get(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PathParams {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        axum::extract::Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(params)| PathParams(params))
            .map_err(|_| error_response(Error::NotFound("no such resource".into())))
    }
}

/// The JSON body as message `T`, with the top-level keys that were sent.
/// `item_of`: the body may instead be one element of that repeated field.
pub async fn json_body<T: DeserializeOwned + Default>(
    state: &RestState,
    headers: &HeaderMap,
    body: Body,
    item_of: Option<&str>,
) -> Result<(T, Vec<String>), Error> {
    json_content_type(headers)?;
    let bytes = read_body(body, state.max_json_bytes).await?;
    decode_json(&bytes, item_of)
}

/// The query string as message `T` (lists, filters, long-poll waits).
/// `integers` names the integer parameters, where `5.0` means 5 (JSON
/// Schema counts it as an integer).
pub fn query<T: DeserializeOwned>(uri: &Uri, integers: &[&str]) -> Result<T, Error> {
    let query = uri.query().unwrap_or_default();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| {
            let v = match v.split_once('.') {
                Some((whole, fraction))
                    if integers.contains(&k.as_ref())
                        && !fraction.is_empty()
                        && fraction.bytes().all(|b| b == b'0') =>
                {
                    whole.to_owned().into()
                }
                _ => v,
            };
            (k.into_owned(), v.into_owned())
        })
        .collect();
    let encoded = serde_urlencoded::to_string(&pairs).expect("pairs encode");
    let pairs = serde_urlencoded::Deserializer::new(form_urlencoded::parse(encoded.as_bytes()));
    serde_path_to_error::deserialize(pairs)
        .map_err(|e| Error::invalid(format!("query parameter {}: {}", e.path(), e.inner())))
}

/// The message as JSON with `status`, or the error envelope.
pub fn reply<T: Serialize>(
    status: StatusCode,
    answer: Result<tonic::Response<T>, Status>,
) -> Response {
    match answer {
        Ok(response) => (status, Json(response.into_inner())).into_response(),
        Err(e) => status_response(e),
    }
}

/// 204 with no body on success.
pub fn reply_no_content<T>(answer: Result<tonic::Response<T>, Status>) -> Response {
    match answer {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => status_response(e),
    }
}

/// 204 when `empty` says there is nothing to answer, else 200 with the message.
pub fn reply_or_no_content<T: Serialize>(
    answer: Result<tonic::Response<T>, Status>,
    empty: impl FnOnce(&T) -> bool,
) -> Response {
    match answer {
        Ok(r) if empty(r.get_ref()) => StatusCode::NO_CONTENT.into_response(),
        other => reply(StatusCode::OK, other),
    }
}

/// 200 with an `ETag` (a hash of the body); a matching `If-None-Match` is 304.
pub fn reply_with_etag<T: Serialize>(
    headers: &HeaderMap,
    answer: Result<tonic::Response<T>, Status>,
) -> Response {
    let message = match answer {
        Ok(r) => r.into_inner(),
        Err(e) => return status_response(e),
    };
    let body = serde_json::to_vec(&message).expect("messages serialize");
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&body))[..32]);
    let etag_value = HeaderValue::from_str(&etag).expect("hex is a valid header");
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*");
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response();
    }
    (
        StatusCode::OK,
        [
            (header::ETAG, etag_value),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        body,
    )
        .into_response()
}
