//! Where blobs (capture images, model artifacts) live, and how their signed
//! URLs are made. Every flag is also an environment variable.

use std::path::PathBuf;

const DEFAULT_SIGNED_URL_SECONDS: u32 = 300;
const DEFAULT_ORPHAN_GRACE_SECONDS: u32 = 6 * 3600;
const DEFAULT_SWEEP_INTERVAL_SECONDS: u32 = 600;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobBackend {
    /// Files under `--blob-dir` (default `<data-dir>/blobs`).
    Fs,
    /// An S3-compatible object store (AWS S3, MinIO, ...).
    S3,
}

#[derive(clap::Args, Clone, Debug)]
pub struct BlobArgs {
    /// Where capture images and model artifacts are stored.
    #[arg(
        long = "blob-store",
        env = "SWRM_BLOB_STORE",
        value_enum,
        default_value = "fs"
    )]
    pub backend: BlobBackend,
    /// Folder of the filesystem store. Default: `<data-dir>/blobs`.
    #[arg(long, env = "SWRM_BLOB_DIR")]
    pub blob_dir: Option<PathBuf>,
    /// S3 endpoint, e.g. `https://s3.eu-west-1.amazonaws.com` or
    /// `http://127.0.0.1:9000`.
    #[arg(long, env = "SWRM_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Bucket (created if missing).
    #[arg(long, env = "SWRM_S3_BUCKET", default_value = "swrm")]
    pub s3_bucket: String,
    #[arg(long, env = "SWRM_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    #[arg(long, env = "SWRM_S3_ACCESS_KEY", hide_env_values = true)]
    pub s3_access_key: Option<String>,
    #[arg(long, env = "SWRM_S3_SECRET_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<String>,
    /// Lifetime of every signed download URL swrm hands out.
    #[arg(long, env = "SWRM_SIGNED_URL_SECONDS", default_value_t = DEFAULT_SIGNED_URL_SECONDS,
          value_parser = clap::value_parser!(u32).range(1..=604_800))]
    pub signed_url_seconds: u32,
    /// Key (at least 32 characters) signing the filesystem store's download
    /// URLs. Default: a random key kept in the blob folder, which every
    /// replica sharing that folder reads.
    #[arg(long, env = "SWRM_URL_SIGNING_KEY", hide_env_values = true)]
    pub url_signing_key: Option<String>,
    /// How long a blob may exist without the row that names it (an upload
    /// in progress, or one cut off by a crash) before the sweep removes it.
    /// Must exceed the longest upload.
    #[arg(long, env = "SWRM_ORPHAN_GRACE_SECONDS", default_value_t = DEFAULT_ORPHAN_GRACE_SECONDS)]
    pub orphan_grace_seconds: u32,
    /// How often the orphan sweep runs.
    #[arg(long, env = "SWRM_SWEEP_INTERVAL_SECONDS", default_value_t = DEFAULT_SWEEP_INTERVAL_SECONDS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub sweep_interval_seconds: u32,
}

impl Default for BlobArgs {
    fn default() -> Self {
        Self {
            backend: BlobBackend::Fs,
            blob_dir: None,
            s3_endpoint: None,
            s3_bucket: "swrm".into(),
            s3_region: "us-east-1".into(),
            s3_access_key: None,
            s3_secret_key: None,
            signed_url_seconds: DEFAULT_SIGNED_URL_SECONDS,
            url_signing_key: None,
            orphan_grace_seconds: DEFAULT_ORPHAN_GRACE_SECONDS,
            sweep_interval_seconds: DEFAULT_SWEEP_INTERVAL_SECONDS,
        }
    }
}
