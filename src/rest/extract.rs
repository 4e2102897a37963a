//! Request decoding for the REST adapter: JSON bodies and query strings into
//! the generated protobuf messages, with the contract's limits and errors.

use axum::{
    body::Body,
    extract::{FromRequest, FromRequestParts, Request},
    http::{header, request::Parts},
    response::Response,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

use super::{RestState, error::error_response};
use crate::{
    auth::{Credential, SourceIp},
    error::Error,
    grpc::Origin,
};

/// Deepest JSON nesting we accept (objects and arrays).
pub const MAX_JSON_DEPTH: usize = 32;

/// What the auth layer learned about the caller, carried into the
/// `tonic::Request` so the gRPC handler sees exactly what a gRPC call would.
pub struct Caller {
    credential: Option<Credential>,
    source_ip: Option<SourceIp>,
    origin: Option<Origin>,
}

impl Caller {
    pub fn credential(&self) -> &Credential {
        self.credential.as_ref().unwrap_or(&Credential::None)
    }

    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        let ext = req.extensions_mut();
        if let Some(c) = &self.credential {
            ext.insert(c.clone());
        }
        if let Some(ip) = self.source_ip {
            ext.insert(ip);
        }
        if let Some(o) = &self.origin {
            ext.insert(o.clone());
        }
        req
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        Ok(Caller {
            credential: parts.extensions.get::<Credential>().cloned(),
            source_ip: parts.extensions.get::<SourceIp>().copied(),
            origin: parts.extensions.get::<Origin>().cloned(),
        })
    }
}

/// A JSON body decoded into message `T`. An empty body is `T::default()` (all
/// fields optional), `null` values count as absent (as in proto3 JSON), unknown
/// fields are ignored. `keys` lists the top-level keys that were sent.
pub struct JsonBody<T> {
    pub message: T,
    pub keys: Vec<String>,
}

impl<T: DeserializeOwned + Default> FromRequest<Arc<RestState>> for JsonBody<T> {
    type Rejection = Response;
    async fn from_request(req: Request, state: &Arc<RestState>) -> Result<Self, Response> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
            if !json_compatible(&ct) {
                return Err(error_response(Error::UnsupportedMediaType(format!(
                    "expected Content-Type: application/json, got {ct:?}"
                ))));
            }
        }
        let bytes = read_body(req.into_body(), state.max_json_bytes).await?;
        decode_json(&bytes).map_err(error_response)
    }
}

/// JSON, or a type clients send JSON under by default (`curl -d` says
/// form-urlencoded); the body must still be JSON. Anything else is 415.
fn json_compatible(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence == "application/json"
        || essence.ends_with("+json")
        || essence == "text/plain"
        || essence == "application/x-www-form-urlencoded"
}

pub async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        error_response(Error::PayloadTooLarge(format!(
            "request body is larger than {limit} bytes"
        )))
    })
}

pub fn decode_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<JsonBody<T>, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(JsonBody {
            message: T::default(),
            keys: Vec::new(),
        });
    }
    let mut value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid(format!("malformed JSON: {e}")))?;
    if depth(&value) > MAX_JSON_DEPTH {
        return Err(Error::invalid(format!(
            "JSON is nested deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    let Value::Object(map) = &value else {
        return Err(Error::invalid("the body must be a JSON object"));
    };
    let keys = map.keys().cloned().collect();
    strip_nulls(&mut value);
    // serde_path_to_error names the offending field ("readings[1].value: ...").
    let message = serde_path_to_error::deserialize(value)
        .map_err(|e| Error::invalid(format!("{}: {}", e.path(), e.inner())))?;
    Ok(JsonBody { message, keys })
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// proto3 JSON: a `null` field means "absent" (the default value).
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// The `{id}` of a path. One that cannot be decoded (bad percent-encoding)
/// names nothing: 404 in the envelope, like any id we do not know.
pub struct IdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| IdPath(id))
            .map_err(|_| error_response(Error::NotFound("no such resource".into())))
    }
}

/// A query string decoded into message `T` (list pagination, filters).
pub struct QueryMessage<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequestParts<S> for QueryMessage<T> {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(QueryMessage)
            .map_err(|e| error_response(Error::invalid(format!("query string: {e}"))))
    }
}
