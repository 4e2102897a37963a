//! The blob store: capture images and model artifacts, behind one small
//! trait with two implementations, the filesystem ([`fs`], the default) and
//! S3 ([`s3`], through the `minio` crate).
//!
//! Writes stream: a [`BlobWriter`] takes the bytes as they arrive and makes
//! the object visible under its key only on `finish`, never half-written.
//! Reads go through short-lived signed URLs: an S3 presigned GET, or for
//! the filesystem an HMAC-signed URL that swrm serves itself
//! (`rest::blobs`).

pub mod config;
pub mod fs;
pub mod s3;
pub mod signing;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::{future::Future, pin::Pin, sync::Arc};

pub use config::{BlobArgs, BlobBackend};

use crate::error::{Error, Result};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Where blobs are kept.
pub trait BlobStore: Send + Sync {
    /// Starts writing the object `key`; nothing is readable under `key`
    /// until the writer's `finish` returns.
    fn create<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Box<dyn BlobWriter>>;
    /// Removes `key`; a missing object is not an error.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, ()>;
    /// A URL that downloads `key` (with HTTP Range) until `expires_at`.
    fn signed_url<'a>(
        &'a self,
        key: &'a str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, SignedUrl>;
    /// Removes partial writes older than `before` that a crash left behind
    /// (finished objects are swept through the database's pending list).
    fn sweep_partials(&self, before: DateTime<Utc>) -> BoxFuture<'_, u64>;
    /// `fs` or `s3`, for logs and metrics.
    fn kind(&self) -> &'static str;
    /// The filesystem store, whose signed URLs swrm serves itself.
    fn as_fs(&self) -> Option<&fs::FsStore> {
        None
    }
}

/// One object being written.
pub trait BlobWriter: Send {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, ()>;
    /// Makes the object durable and visible under its key.
    fn finish(self: Box<Self>) -> BoxFuture<'static, ()>;
    /// Drops what was written; the key stays as it was (absent).
    fn abort(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// A signed download URL: served by swrm (a path on this server, joined to
/// the caller's base URL) or by the object store (absolute).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignedUrl {
    Path(String),
    Absolute(String),
}

impl SignedUrl {
    /// The URL a client can fetch, given the base URL it reached us at.
    pub fn resolve(&self, origin: &str) -> String {
        match self {
            SignedUrl::Path(p) => format!("{}{p}", origin.trim_end_matches('/')),
            SignedUrl::Absolute(u) => u.clone(),
        }
    }
}

/// Opens the store the configuration names (creating the bucket or folder
/// if missing).
pub async fn open(args: &BlobArgs, data_dir: &std::path::Path) -> Result<Arc<dyn BlobStore>> {
    match args.backend {
        BlobBackend::Fs => {
            let root = args
                .blob_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("blobs"));
            Ok(Arc::new(
                fs::FsStore::open(root, args.url_signing_key.as_deref()).await?,
            ))
        }
        BlobBackend::S3 => Ok(Arc::new(s3::S3Store::open(args).await?)),
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    tracing::warn!(error = %e, "blob store: {what}");
    Error::Unavailable(format!(
        "the blob store is not answering ({what}); retry shortly"
    ))
}
