//! Normalizing input for the use cases. The wire rules (lengths, formats,
//! ranges) are declared in `proto/` and checked before a request reaches
//! `core` (see `checks`); what is left here is what a use case needs of any
//! caller, the command line included: trimmed text, no control characters,
//! ids that parse. Every message names the field.

use uuid::Uuid;

use crate::error::{Error, Result};

/// Control characters (NUL above all: PostgreSQL text cannot hold it) have
/// no place in names, versions or tags.
fn printable(field: &str, value: &str) -> Result<()> {
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

pub fn name(field: &str, value: &str) -> Result<String> {
    let v = value.trim();
    printable(field, v)?;
    if v.is_empty() {
        return Err(Error::invalid(format!("{field} must not be empty")));
    }
    Ok(v.to_owned())
}

/// An optional free text (firmware version, hostname, serial...): trimmed,
/// and blank means absent.
pub fn short_text(field: &str, value: Option<&str>) -> Result<Option<String>> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => printable(field, v).map(|()| Some(v.to_owned())),
    }
}

/// Trimmed, without duplicates, in the order given.
pub fn tags(values: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for (i, t) in values.iter().enumerate() {
        let t = t.trim();
        if t.is_empty() {
            return Err(Error::invalid(format!("tags[{i}] must not be blank")));
        }
        printable(&format!("tags[{i}]"), t)?;
        if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    Ok(out)
}

pub fn uuid(field: &str, value: &str) -> Result<Uuid> {
    Uuid::parse_str(value.trim()).map_err(|_| Error::invalid(format!("{field} must be a UUID")))
}

/// A path id: anything that is not a UUID cannot name a row, so it is 404.
pub fn path_id(what: &str, value: &str) -> Result<Uuid> {
    Uuid::parse_str(value).map_err(|_| Error::not_found(what))
}

/// An optional id; `None` and "" both mean "not given".
pub fn opt_uuid(field: &str, value: Option<&str>) -> Result<Option<Uuid>> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => uuid(field, v).map(Some),
    }
}

pub fn tags_to_json(tags: &[String]) -> String {
    serde_json::to_string(tags).expect("strings serialize")
}

pub fn tags_from_json(stored: &str) -> Vec<String> {
    serde_json::from_str(stored).unwrap_or_default()
}
