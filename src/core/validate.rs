//! Input checks shared by the use cases. Every message names the field.

use uuid::Uuid;

use crate::error::{Error, Result};

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG_LEN: usize = 64;
pub const MAX_SHORT_TEXT: usize = 256;

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
    if v.chars().count() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "{field} must be at most {MAX_NAME_LEN} characters"
        )));
    }
    Ok(v.to_owned())
}

/// An optional short free text (firmware version, hostname, serial...).
pub fn short_text(field: &str, value: Option<&str>) -> Result<Option<String>> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) if v.chars().count() > MAX_SHORT_TEXT => Err(Error::invalid(format!(
            "{field} must be at most {MAX_SHORT_TEXT} characters"
        ))),
        Some(v) => printable(field, v).map(|()| Some(v.to_owned())),
    }
}

pub fn tags(values: &[String]) -> Result<Vec<String>> {
    if values.len() > MAX_TAGS {
        return Err(Error::invalid(format!("tags: at most {MAX_TAGS} tags")));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for (i, t) in values.iter().enumerate() {
        let t = t.trim();
        if t.is_empty() || t.chars().count() > MAX_TAG_LEN {
            return Err(Error::invalid(format!(
                "tags[{i}] must be 1 to {MAX_TAG_LEN} characters"
            )));
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
