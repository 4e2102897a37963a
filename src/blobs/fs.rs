//! The filesystem blob store: one file per object under the root folder.
//! A write goes to `.tmp/` first, is fsynced, then renamed into place, so an
//! object is never visible half-written; the folder is fsynced too, so a
//! finished object survives a power cut.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{BlobStore, BlobWriter, BoxFuture, SignedUrl, signing::UrlSigner};
use crate::error::{Error, Result};

const TMP: &str = ".tmp";

pub struct FsStore {
    root: PathBuf,
    signer: UrlSigner,
}

impl FsStore {
    pub async fn open(root: PathBuf, signing_key: Option<&str>) -> Result<Self> {
        tokio::fs::create_dir_all(root.join(TMP))
            .await
            .map_err(|e| Error::Internal(format!("blob folder {}: {e}", root.display())))?;
        let signer = UrlSigner::load(&root, signing_key)?;
        Ok(Self { root, signer })
    }

    pub fn signer(&self) -> &UrlSigner {
        &self.signer
    }

    /// The file of `key`, if the key is one this store could have made.
    pub fn path_of(&self, key: &str) -> Option<PathBuf> {
        valid_key(key).then(|| self.root.join(key))
    }
}

/// Keys are relative paths of `[A-Za-z0-9._-]` segments, none hidden and
/// none `..`: nothing outside the root (or in `.tmp`) can be named.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('.')
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

/// The content type a key's extension stands for.
pub fn content_type_of(key: &str) -> &'static str {
    match key.rsplit_once('.').map(|(_, ext)| ext) {
        Some("jpg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        _ => "application/octet-stream",
    }
}

impl BlobStore for FsStore {
    fn create<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Box<dyn BlobWriter>> {
        Box::pin(async move {
            let dest = self
                .path_of(key)
                .ok_or_else(|| Error::Internal(format!("not a blob key: {key:?}")))?;
            let tmp = self.root.join(TMP).join(uuid::Uuid::now_v7().to_string());
            Ok(Box::new(FsWriter {
                file: None,
                buf: Vec::new(),
                tmp,
                dest,
                done: false,
            }) as Box<dyn BlobWriter>)
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(path) = self.path_of(key) else {
                return Ok(());
            };
            match tokio::fs::remove_file(&path).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io(e)),
            }
        })
    }

    fn signed_url<'a>(
        &'a self,
        key: &'a str,
        expires_at: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> BoxFuture<'a, SignedUrl> {
        let path = self.signer.sign(key, expires_at.timestamp());
        Box::pin(async move { Ok(SignedUrl::Path(path)) })
    }

    fn sweep_partials(&self, before: DateTime<Utc>) -> BoxFuture<'_, u64> {
        Box::pin(async move {
            let dir = self.root.join(TMP);
            let mut removed = 0;
            let mut entries = tokio::fs::read_dir(&dir).await.map_err(io)?;
            while let Some(entry) = entries.next_entry().await.map_err(io)? {
                let Ok(meta) = entry.metadata().await else {
                    continue;
                };
                let modified: DateTime<Utc> = match meta.modified() {
                    Ok(t) => t.into(),
                    Err(_) => continue,
                };
                if modified < before && tokio::fs::remove_file(entry.path()).await.is_ok() {
                    removed += 1;
                }
            }
            Ok(removed)
        })
    }

    fn kind(&self) -> &'static str {
        "fs"
    }

    fn as_fs(&self) -> Option<&FsStore> {
        Some(self)
    }
}

/// Bytes gathered before one blocking write: few thread hand-offs per
/// object (uploads arrive in chunks of a few KiB), and never more than this
/// held per write.
const WRITE_BUFFER: usize = 128 * 1024;

struct FsWriter {
    /// The temporary file, opened at the first write to disk.
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    tmp: PathBuf,
    dest: PathBuf,
    /// Finished or aborted: nothing left to clean up.
    done: bool,
}

/// File work off the async threads, as one hand-off.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(io)
}

fn open_or_create(file: Option<std::fs::File>, tmp: &Path) -> std::io::Result<std::fs::File> {
    match file {
        Some(f) => Ok(f),
        None => std::fs::File::create(tmp),
    }
}

impl FsWriter {
    async fn write_out(&mut self) -> Result<()> {
        let (file, tmp) = (self.file.take(), self.tmp.clone());
        let mut buf = std::mem::take(&mut self.buf);
        let (file, buf) = blocking(move || {
            let mut file = open_or_create(file, &tmp)?;
            file.write_all(&buf)?;
            buf.clear();
            Ok((file, buf))
        })
        .await?;
        self.file = Some(file);
        self.buf = buf;
        Ok(())
    }
}

impl BlobWriter for FsWriter {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.done {
                return Err(Error::Internal("write after finish".into()));
            }
            self.buf.extend_from_slice(&chunk);
            if self.buf.len() >= WRITE_BUFFER {
                self.write_out().await?;
            }
            Ok(())
        })
    }

    fn finish(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if self.done {
                return Err(Error::Internal("finished twice".into()));
            }
            let (file, buf) = (self.file.take(), std::mem::take(&mut self.buf));
            let (tmp, dest) = (self.tmp.clone(), self.dest.clone());
            blocking(move || {
                let mut file = open_or_create(file, &tmp)?;
                file.write_all(&buf)?;
                file.sync_all()?;
                drop(file);
                let parent = dest.parent().map(Path::to_path_buf);
                if let Some(parent) = &parent {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::rename(&tmp, &dest)?;
                if let Some(parent) = parent {
                    // The rename is durable once the folder is.
                    std::fs::File::open(parent)?.sync_all()?;
                }
                Ok(())
            })
            .await?;
            self.done = true;
            Ok(())
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            self.done = true;
            self.file = None;
            let tmp = self.tmp.clone();
            let _ = blocking(move || std::fs::remove_file(tmp)).await;
            Ok(())
        })
    }
}

impl Drop for FsWriter {
    /// A writer dropped mid-way (the client went away) leaves no file.
    fn drop(&mut self) {
        if !self.done {
            self.file = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn io(e: std::io::Error) -> Error {
    super::unavailable("filesystem", e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_root() {
        assert!(valid_key("captures/0190/abc-def.jpg"));
        for bad in [
            "",
            "../x",
            "a/../b",
            "/abs",
            "a//b",
            ".tmp/x",
            "a/.hidden",
            "a b",
            "a\\b",
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn an_object_appears_only_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path().to_path_buf(), None).await.unwrap();
        let mut w = store.create("a/b.png").await.unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        assert!(!dir.path().join("a/b.png").exists());
        w.write(Bytes::from_static(b"world")).await.unwrap();
        w.finish().await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("a/b.png")).unwrap(),
            b"hello world"
        );

        let mut w = store.create("a/c.png").await.unwrap();
        w.write(Bytes::from_static(b"partial")).await.unwrap();
        w.abort().await.unwrap();
        assert!(!dir.path().join("a/c.png").exists());
        assert_eq!(std::fs::read_dir(dir.path().join(TMP)).unwrap().count(), 0);

        store.delete("a/b.png").await.unwrap();
        store.delete("a/b.png").await.unwrap();
        assert!(!dir.path().join("a/b.png").exists());
    }
}
