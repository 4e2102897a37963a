//! Request decoding for the REST adapter: JSON bodies and query strings into
//! the generated protobuf messages, with the contract's limits and errors.

use crate::{
    auth::{Credential, SourceIp},
    error::Error,
    grpc::Origin,
};
use axum::{
    body::Body,
    extract::FromRequestParts,
    http::{HeaderMap, header, request::Parts},
    response::Response,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

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

/// JSON, or a type clients send JSON under by default (`curl -d` says
/// form-urlencoded); the body must still be JSON. No content type is fine.
/// Anything else is 415.
pub fn json_content_type(headers: &HeaderMap) -> Result<(), Error> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or_default().trim();
    let json = essence == "application/json"
        || essence.ends_with("+json")
        || essence == "text/plain"
        || essence == "application/x-www-form-urlencoded";
    if json {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(format!(
            "expected Content-Type: application/json, got {ct:?}"
        )))
    }
}

pub async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, Error> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| Error::PayloadTooLarge(format!("request body is larger than {limit} bytes")))
}

/// A JSON body decoded into message `T`, with the top-level keys that were
/// sent. An empty body is `T::default()` (all fields optional), `null`
/// values count as absent (as in proto3 JSON), unknown fields are ignored.
/// With `item_of`, a body without that key is taken as its one element
/// (`/events` takes a single event object).
pub fn decode_json<T: DeserializeOwned + Default>(
    bytes: &[u8],
    item_of: Option<&str>,
) -> Result<(T, Vec<String>), Error> {
    if bytes.is_empty() {
        return Ok((T::default(), Vec::new()));
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
    if let Some(field) = item_of
        && !map.contains_key(field)
    {
        value = serde_json::json!({ field: [value] });
    }
    normalize(&mut value);
    let keys = match &value {
        Value::Object(map) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    // serde_path_to_error names the offending field ("readings[1].value: ...").
    let message = serde_path_to_error::deserialize(value)
        .map_err(|e| Error::invalid(format!("{}: {}", e.path(), e.inner())))?;
    Ok((message, keys))
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// proto3 JSON: a `null` field means "absent" (the default value), and
/// JSON Schema counts `590.0` as an integer, so a float without a fraction
/// becomes one (double fields take integers as they are).
fn normalize(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(normalize);
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        Value::Number(n) => {
            if let Some(whole) = whole_number(n) {
                *n = whole;
            }
        }
        _ => {}
    }
}

fn whole_number(n: &serde_json::Number) -> Option<serde_json::Number> {
    if n.is_i64() || n.is_u64() {
        return None;
    }
    let f = n.as_f64()?;
    if f.fract() != 0.0 {
        return None;
    }
    // 2^64 and -2^63: the ends of u64 and i64 (casts would saturate).
    if f < 0.0 {
        (f >= -9_223_372_036_854_775_808.0).then(|| (f as i64).into())
    } else {
        (f < 18_446_744_073_709_551_616.0).then(|| (f as u64).into())
    }
}
