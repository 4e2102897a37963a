//! A blob arriving in chunks (a capture image, a model artifact): counted
//! against its limit and hashed (SHA-256) on the way into the store, never
//! held whole; recorded as pending from its first bytes (see
//! [`blobs::begin`]), and removed again if the upload is abandoned.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Core, blobs};
use crate::{
    blobs::BlobWriter,
    error::{Error, Result},
};

pub struct BlobUpload {
    org_id: Uuid,
    key: String,
    /// The part it comes in (`image`, `file`), for error messages.
    what: &'static str,
    limit: u64,
    size: u64,
    hasher: Sha256,
    writer: Option<Box<dyn BlobWriter>>,
    /// Finished: durable under its key.
    stored: bool,
}

/// The 413 of a part over its limit.
pub fn too_large(what: &str, limit: u64) -> Error {
    Error::PayloadTooLarge(format!("{what} is larger than the {limit}-byte limit"))
}

impl BlobUpload {
    pub fn new(org_id: Uuid, key: String, what: &'static str, limit: u64) -> Self {
        Self {
            org_id,
            key,
            what,
            limit,
            size: 0,
            hasher: Sha256::new(),
            writer: None,
            stored: false,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Counts, hashes and writes `bytes`; the blob opens at the first ones.
    pub async fn push(&mut self, core: &Core, bytes: Bytes) -> Result<()> {
        self.size += bytes.len() as u64;
        if self.size > self.limit {
            return Err(too_large(self.what, self.limit));
        }
        self.hasher.update(&bytes);
        if self.writer.is_none() {
            self.writer = Some(blobs::begin(core, self.org_id, &self.key).await?);
        }
        self.writer
            .as_mut()
            .expect("opened above")
            .write(bytes)
            .await
    }

    /// Makes the blob durable under its key: its size and SHA-256 (hex).
    pub async fn finish(&mut self) -> Result<(u64, String)> {
        let what = self.what;
        let writer = self.writer.take().ok_or_else(|| {
            Error::invalid(format!(
                "{what} is required (the {what} part, or data chunks)"
            ))
        })?;
        writer.finish().await?;
        self.stored = true;
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        Ok((self.size, sha256))
    }

    /// Removes whatever was stored of it (and its pending record).
    pub async fn abandon(&mut self, core: &Core) {
        match self.writer.take() {
            Some(w) => blobs::abandon(core, &self.key, w).await,
            None if self.stored => blobs::discard(core, &self.key).await,
            None => {}
        }
    }
}
