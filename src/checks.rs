//! The runtime half of the field rules declared in `proto/` (`swrm.api.rules`).
//! build.rs generates, for every request message, a [`Check`] impl calling
//! the functions below, and per service a wrapper (`CheckedDeviceService`,
//! `CheckedAdminService`) that admits the caller and checks the request
//! before the handler runs, so gRPC and REST are held to the same rules.
//! The OpenAPI document states the same rules, generated from the same
//! declarations; each function here says what its schema keyword is.
//!
//! Rules apply to the value as sent; normalizing (trimming) happens after, in
//! `core`. Error messages name the field: `readings[1].value must be …`.

use std::fmt;

use crate::{
    auth::{self, Credential},
    error::{Error, Result},
    grpc::credential,
};

include!(concat!(env!("OUT_DIR"), "/swrm_checks.rs"));

/// A message's rules.
pub trait Check {
    fn check(&self, at: &At<'_>) -> Result<()>;
}

/// Where a value sits in the request, for error messages. Built on the stack
/// as the checks descend; rendered only when a check fails.
pub enum At<'a> {
    Root,
    Field(&'a At<'a>, &'static str),
    Item(&'a At<'a>, usize),
    Key(&'a At<'a>, &'a str),
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Root => f.write_str("body"),
            At::Field(At::Root, name) => f.write_str(name),
            At::Field(parent, name) => write!(f, "{parent}.{name}"),
            At::Item(parent, i) => write!(f, "{parent}[{i}]"),
            At::Key(parent, key) => write!(f, "{parent}[{key:?}]"),
        }
    }
}

fn invalid(at: &At<'_>, what: impl fmt::Display) -> Error {
    Error::InvalidArgument(format!("{at} {what}"))
}

pub fn missing(at: &At<'_>) -> Error {
    invalid(at, "is required")
}

/// Shapes a string may be required to have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Any,
    /// A hyphenated UUID; empty means "none" unless required (schema: pattern).
    Uuid,
    /// RFC 3339; empty means none unless required (schema: `format:
    /// date-time`, or `""`).
    Timestamp,
    /// A device's `ts`: RFC 3339 here (Unix milliseconds are numbers, not
    /// strings); never empty.
    DeviceTime,
    /// IPv4 or IPv6; empty means unknown (schema: `anyOf` ipv4, ipv6, "").
    Ip,
    /// An IANA time zone name (schema: `enum`).
    Timezone,
    /// Empty, or a token as a list answer issued it (schema: pattern).
    PageToken,
    /// `[a-z][a-z0-9_]*` (schema: pattern).
    Identifier,
    /// An absolute http(s) URL with a host (schema: pattern).
    HttpUrl,
}

/// String rules (schema: `minLength`, `maxLength`, `enum`, `pattern`).
pub struct Text {
    pub required: bool,
    pub min_len: usize,
    pub max_len: usize,
    pub not_blank: bool,
    pub allow_control: bool,
    pub one_of: &'static [&'static str],
    pub format: Format,
}

/// What `char::is_control` rejects, as a JSON Schema character class.
pub const CONTROL_CLASS: &str = r"\u0000-\u001f\u007f-\u009f";

pub fn text(v: &str, at: &At<'_>, r: &Text) -> Result<()> {
    if v.is_empty() {
        if r.required {
            return Err(missing(at));
        }
        if matches!(
            r.format,
            Format::Uuid | Format::Timestamp | Format::Ip | Format::PageToken | Format::Any
        ) && r.min_len == 0
            && !r.not_blank
            && r.one_of.is_empty()
        {
            return Ok(());
        }
    }
    let len = v.chars().count();
    if len > r.max_len {
        return Err(invalid(
            at,
            format!("must be at most {} characters", r.max_len),
        ));
    }
    if len < r.min_len {
        return Err(invalid(
            at,
            format!("must be at least {} characters", r.min_len),
        ));
    }
    if !r.one_of.is_empty() && !r.one_of.contains(&v) {
        return Err(invalid(
            at,
            format!("must be one of {}", r.one_of.join(", ")),
        ));
    }
    if !r.allow_control && v.chars().any(char::is_control) {
        return Err(invalid(at, "must not contain control characters"));
    }
    if r.not_blank && v.chars().all(char::is_whitespace) {
        return Err(invalid(at, "must not be blank"));
    }
    let ok = match r.format {
        Format::Any => true,
        Format::Uuid => is_uuid(v),
        Format::Timestamp | Format::DeviceTime => chrono::DateTime::parse_from_rfc3339(v).is_ok(),
        Format::Ip => v.parse::<std::net::IpAddr>().is_ok(),
        Format::Timezone => v.parse::<chrono_tz::Tz>().is_ok(),
        Format::PageToken => crate::core::page::Cursor::decode(v).is_some(),
        Format::Identifier => is_identifier(v),
        Format::HttpUrl => is_http_url(v),
    };
    if !ok {
        return Err(invalid(
            at,
            match r.format {
                Format::Uuid => "must be a UUID",
                Format::Timestamp | Format::DeviceTime => {
                    "must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z"
                }
                Format::Ip => "must be an IPv4 or IPv6 address",
                Format::Timezone => "must be an IANA time zone name, e.g. Europe/Berlin",
                Format::PageToken => "is not a page token this API issued",
                Format::Identifier => {
                    "must be lowercase letters, digits and underscores, starting with a letter"
                }
                Format::HttpUrl => "must be an http:// or https:// URL",
                Format::Any => unreachable!("any string has the Any format"),
            },
        ));
    }
    Ok(())
}

fn is_identifier(v: &str) -> bool {
    let mut bytes = v.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// What the schema's pattern says: the scheme, an authority of characters
/// that are neither space, `/`, `?`, `#` nor `@` (no userinfo), then
/// an optional path without spaces.
fn is_http_url(v: &str) -> bool {
    let Some(rest) = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"))
    else {
        return false;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let bad = |c: char| c.is_whitespace() || c.is_control();
    !authority.is_empty()
        && !authority
            .chars()
            .any(|c| bad(c) || matches!(c, '?' | '#' | '@'))
        && !path.chars().any(bad)
}

/// The hyphenated form only (`Uuid::parse_str` also takes other forms the
/// schema's pattern does not).
pub fn is_uuid(v: &str) -> bool {
    v.len() == 36
        && v.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Floating-point numbers: finite (gRPC can carry NaN; JSON cannot), and
/// within bounds (schema: `minimum`, `maximum`).
pub fn float(v: f64, at: &At<'_>, min: Option<f64>, max: Option<f64>) -> Result<()> {
    if !v.is_finite() {
        return Err(invalid(at, "must be a finite number"));
    }
    if let Some(min) = min
        && v < min
    {
        return Err(invalid(at, format!("must be at least {min}")));
    }
    if let Some(max) = max
        && v > max
    {
        return Err(invalid(at, format!("must be at most {max}")));
    }
    Ok(())
}

/// Integers within bounds (schema: `minimum`, `maximum`).
pub fn int(v: i128, at: &At<'_>, min: Option<i128>, max: Option<i128>) -> Result<()> {
    if let Some(min) = min
        && v < min
    {
        return Err(invalid(at, format!("must be at least {min}")));
    }
    if let Some(max) = max
        && v > max
    {
        return Err(invalid(at, format!("must be at most {max}")));
    }
    Ok(())
}

/// List and map sizes (schema: `minItems`/`maxItems`, `min`/`maxProperties`).
pub fn items(len: usize, at: &At<'_>, min: usize, max: usize) -> Result<()> {
    if len < min {
        return Err(if min == 1 {
            invalid(at, "must not be empty")
        } else {
            invalid(at, format!("must have at least {min} elements"))
        });
    }
    if len > max {
        return Err(invalid(at, format!("must have at most {max} elements")));
    }
    Ok(())
}

/// A number, a string or a boolean (schema: `anyOf` of the three).
pub fn scalar_value(v: &pbjson_types::Value, at: &At<'_>) -> Result<()> {
    use pbjson_types::value::Kind;
    match &v.kind {
        Some(Kind::NumberValue(n)) => float(*n, at, None, None),
        Some(Kind::StringValue(_) | Kind::BoolValue(_)) => Ok(()),
        _ => Err(invalid(at, "must be a number, a string or a boolean")),
    }
}

/// Who may call a method (`swrm.api.Access` in the proto).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Public,
    ProvisioningToken,
    EnrollmentCode,
    Device,
    OrgRead,
    OrgWrite,
}

/// Lets the call through if its credential has the method's access. Pairing
/// and enrollment check their own secret (it may be in the body).
pub fn admit<T>(access: Access, request: &tonic::Request<T>) -> Result<()> {
    let credential: &Credential = credential(request);
    match access {
        Access::Public | Access::ProvisioningToken | Access::EnrollmentCode => Ok(()),
        Access::Device => auth::require_device(credential).map(|_| ()),
        Access::OrgRead => auth::require_read(credential).map(|_| ()),
        Access::OrgWrite => auth::require_write(credential).map(|_| ()),
    }
}

/// Stands in for a secret in `Debug` output.
pub struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
