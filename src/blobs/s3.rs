//! The S3 blob store (AWS S3, MinIO, any S3-compatible server) through the
//! `minio` crate. Small objects go up in one PUT; an object that outgrows
//! one part becomes a multipart upload, so memory per write stays at one
//! part whatever the object's size. Reads are S3 presigned GETs.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use minio::s3::{
    MinioClient,
    builders::{ObjectToDelete, PutObject, UploadPart},
    creds::StaticProvider,
    http::BaseUrl,
    response_traits::HasEtagFromHeaders,
    segmented_bytes::SegmentedBytes,
    types::{BucketName, ObjectKey, PartInfo, S3Api},
};
use std::sync::Arc;

use super::{BlobArgs, BlobStore, BlobWriter, BoxFuture, SignedUrl, unavailable};
use crate::error::{Error, Result};

/// Bytes buffered before they go up as one part (S3's minimum is 5 MiB).
const PART_BYTES: usize = 8 * 1024 * 1024;

pub struct S3Store {
    client: MinioClient,
    bucket: Arc<str>,
}

impl S3Store {
    pub async fn open(args: &BlobArgs) -> Result<Self> {
        let endpoint = args.s3_endpoint.as_deref().ok_or_else(|| {
            Error::invalid("--blob-store s3 needs --s3-endpoint (SWRM_S3_ENDPOINT)")
        })?;
        let mut base: BaseUrl = endpoint
            .parse()
            .map_err(|e| Error::invalid(format!("--s3-endpoint {endpoint:?}: {e}")))?;
        base.region = minio::s3::types::Region::new(args.s3_region.as_str())
            .map_err(|e| Error::invalid(format!("--s3-region: {e}")))?;
        let provider = match (&args.s3_access_key, &args.s3_secret_key) {
            (Some(a), Some(s)) => Some(StaticProvider::new(a, s, None)),
            (None, None) => None,
            _ => {
                return Err(Error::invalid(
                    "give both --s3-access-key and --s3-secret-key, or neither",
                ));
            }
        };
        let client = minio::s3::client::MinioClientBuilder::new(base)
            .provider(provider)
            .build()
            .map_err(|e| Error::invalid(format!("S3 client: {e}")))?;
        let store = Self {
            client,
            bucket: args.s3_bucket.as_str().into(),
        };
        store.ensure_bucket().await?;
        Ok(store)
    }

    async fn ensure_bucket(&self) -> Result<()> {
        let exists = self
            .client
            .bucket_exists(&*self.bucket)
            .map_err(invalid)?
            .build()
            .send()
            .await
            .map_err(|e| unavailable("bucket check", e))?
            .exists();
        if exists {
            return Ok(());
        }
        let created = self
            .client
            .create_bucket(&*self.bucket)
            .map_err(invalid)?
            .build()
            .send()
            .await;
        if let Err(e) = created {
            // Another replica may have made it meanwhile.
            let now_exists = self
                .client
                .bucket_exists(&*self.bucket)
                .map_err(invalid)?
                .build()
                .send()
                .await
                .map(|r| r.exists())
                .unwrap_or(false);
            if !now_exists {
                return Err(unavailable("bucket creation", e));
            }
        }
        Ok(())
    }
}

fn invalid(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("S3 request: {e}"))
}

impl BlobStore for S3Store {
    fn create<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Box<dyn BlobWriter>> {
        Box::pin(async move {
            Ok(Box::new(S3Writer {
                client: self.client.clone(),
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                buffer: SegmentedBytes::new(),
                multipart: None,
            }) as Box<dyn BlobWriter>)
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let object = ObjectToDelete::try_from(key).map_err(invalid)?;
            match self
                .client
                .delete_object(&*self.bucket, object)
                .map_err(invalid)?
                .build()
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(minio::s3::error::Error::S3Server(e))
                    if e.to_string().contains("NoSuchKey") =>
                {
                    Ok(())
                }
                Err(e) => Err(unavailable("delete", e)),
            }
        })
    }

    fn signed_url<'a>(
        &'a self,
        key: &'a str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, SignedUrl> {
        Box::pin(async move {
            let seconds = (expires_at - now).num_seconds().clamp(1, 604_800) as u32;
            let url = self
                .client
                .get_presigned_object_url(&*self.bucket, key, http::Method::GET)
                .map_err(invalid)?
                .expiry_seconds(seconds)
                .build()
                .send()
                .await
                .map_err(|e| unavailable("presign", e))?
                .url;
            Ok(SignedUrl::Absolute(url))
        })
    }

    fn sweep_partials(&self, _before: DateTime<Utc>) -> BoxFuture<'_, u64> {
        // An unfinished multipart upload is invisible; expire those with a
        // bucket lifecycle rule (AbortIncompleteMultipartUpload).
        Box::pin(async { Ok(0) })
    }

    fn kind(&self) -> &'static str {
        "s3"
    }
}

struct Multipart {
    upload_id: String,
    parts: Vec<PartInfo>,
}

struct S3Writer {
    client: MinioClient,
    bucket: Arc<str>,
    key: String,
    buffer: SegmentedBytes,
    multipart: Option<Multipart>,
}

impl S3Writer {
    /// Served with the object, so a browser shows the image.
    fn content_type(&self) -> &'static str {
        super::fs::content_type_of(&self.key)
    }

    async fn flush_part(&mut self) -> Result<()> {
        if self.multipart.is_none() {
            let upload_id = self
                .client
                .create_multipart_upload(&*self.bucket, self.key.as_str())
                .map_err(invalid)?
                .content_type(Some(self.content_type().to_owned()))
                .build()
                .send()
                .await
                .map_err(|e| unavailable("multipart upload", e))?
                .upload_id()
                .await
                .map_err(invalid)?;
            self.multipart = Some(Multipart {
                upload_id: upload_id.to_string(),
                parts: Vec::new(),
            });
        }
        let multipart = self.multipart.as_mut().expect("started above");
        let number = u16::try_from(multipart.parts.len() + 1)
            .map_err(|_| Error::PayloadTooLarge("object has too many parts".into()))?;
        let data = std::mem::take(&mut self.buffer);
        let size = data.len() as u64;
        let etag = self
            .client
            .upload_part(
                &*self.bucket,
                self.key.as_str(),
                multipart.upload_id.as_str(),
                number,
                data,
            )
            .map_err(invalid)?
            .build()
            .send()
            .await
            .map_err(|e| unavailable("upload part", e))?
            .etag()
            .map_err(invalid)?;
        multipart
            .parts
            .push(PartInfo::new(number, etag, size, None));
        Ok(())
    }

    async fn complete(mut self) -> Result<()> {
        if self.multipart.is_none() {
            let data = std::mem::take(&mut self.buffer);
            // `put_object` sets no Content-Type; its inner request does.
            let request = UploadPart::builder()
                .client(self.client.clone())
                .bucket(BucketName::try_from(self.bucket.to_string()).map_err(invalid)?)
                .object(ObjectKey::try_from(self.key.clone()).map_err(invalid)?)
                .data(Arc::new(data))
                .content_type(Some(self.content_type().to_owned()))
                .build();
            PutObject::builder()
                .inner(request)
                .build()
                .send()
                .await
                .map_err(|e| unavailable("put", e))?;
            return Ok(());
        }
        if !self.buffer.is_empty() {
            self.flush_part().await?;
        }
        let multipart = self.multipart.take().expect("multipart");
        let done = self
            .client
            .complete_multipart_upload(
                &*self.bucket,
                self.key.as_str(),
                multipart.upload_id.as_str(),
                multipart.parts,
            )
            .map_err(invalid)?
            .build()
            .send()
            .await;
        if let Err(e) = done {
            self.abort_upload(&multipart.upload_id).await;
            return Err(unavailable("complete multipart upload", e));
        }
        Ok(())
    }

    async fn abort_upload(&self, upload_id: &str) {
        let aborted =
            match self
                .client
                .abort_multipart_upload(&*self.bucket, self.key.as_str(), upload_id)
            {
                Ok(b) => b.build().send().await.map(|_| ()),
                Err(e) => Err(e.into()),
            };
        if let Err(e) = aborted {
            tracing::warn!(error = %e, "could not abort a multipart upload");
        }
    }
}

impl BlobWriter for S3Writer {
    fn write(&mut self, chunk: Bytes) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.buffer.append(chunk);
            if self.buffer.len() >= PART_BYTES
                && let Err(e) = self.flush_part().await
            {
                if let Some(m) = self.multipart.take() {
                    self.abort_upload(&m.upload_id).await;
                }
                return Err(e);
            }
            Ok(())
        })
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.complete().await })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some(m) = self.multipart.take() {
                self.abort_upload(&m.upload_id).await;
            }
            Ok(())
        })
    }
}
