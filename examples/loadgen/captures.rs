//! The capture benchmark: `concurrency` devices upload JPEGs (REST
//! multipart, then the gRPC stream) for `seconds` each, against the same
//! bytes written straight into the same blob store by as many tasks (the
//! baseline: no HTTP, no hashing, no database). Then peak memory: the
//! process's peak RSS above its resident size before the run, with small
//! images and with images 20 times larger; uploads that were buffered
//! whole would grow with `concurrency × image size`.
//!
//!   cargo run --release --example loadgen -- captures [SECONDS] [CONCURRENCY] [IMAGE_KB]
//!
//! The store is the filesystem under a temporary folder, or S3 with
//! `SWRM_BLOB_STORE=s3 SWRM_S3_ENDPOINT=… SWRM_S3_ACCESS_KEY=… SWRM_S3_SECRET_KEY=…`
//! (`SWRM_S3_BUCKET`, default `swrm-bench`). The database is SQLite, or
//! `SWRM_DATABASE_URL`.

use bytes::Bytes;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use swrm::{blobs::BlobStore, proto};

use crate::{
    fleet,
    run::{Outcome, run},
};

/// Bytes per write in the baseline (what a multipart body arrives in).
const CHUNK: usize = 64 * 1024;
const DETECTIONS: &str =
    r#"{"detections":[{"label":"person","confidence":0.92,"bbox":[10,20,120,240]}]}"#;

pub async fn main(mut args: impl Iterator<Item = String>) -> Result<(), fleet::Error> {
    let seconds: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(16);
    let image_kb: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);

    let dir = tempfile::tempdir()?;
    let (app, base, owner) = fleet::serve_in_process(dir.path(), |config| {
        config.max_capture_bytes = 64 * 1024 * 1024;
        if std::env::var("SWRM_BLOB_STORE").as_deref() == Ok("s3") {
            let b = &mut config.blobs;
            b.backend = swrm::blobs::BlobBackend::S3;
            b.s3_endpoint = std::env::var("SWRM_S3_ENDPOINT").ok();
            b.s3_access_key = std::env::var("SWRM_S3_ACCESS_KEY").ok();
            b.s3_secret_key = std::env::var("SWRM_S3_SECRET_KEY").ok();
            b.s3_bucket = std::env::var("SWRM_S3_BUCKET").unwrap_or_else(|_| "swrm-bench".into());
        }
    })
    .await?;

    let http = reqwest::Client::new();
    let mut keys = Vec::new();
    for i in 0..concurrency {
        keys.push(
            fleet::pair(&http, &base, &owner, &format!("cam-{i}"))
                .await?
                .key,
        );
    }
    let keys = Arc::new(keys);
    let image = Bytes::from(jpeg(1280, 720, image_kb * 1024));
    let mb = image.len() as f64 / 1e6;
    println!(
        "swrm loadgen captures: {seconds} s per scenario, {concurrency} devices, {} KB JPEGs, store {}, database {}",
        image.len() / 1000,
        app.core.blobs.kind(),
        if std::env::var("SWRM_DATABASE_URL").is_ok() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    println!(
        "{:<44} {:>10} {:>12} {:>9} {:>9}",
        "scenario", "captures/s", "", "p50 ms", "p99 ms"
    );

    let direct = direct_writes(app.core.blobs.clone(), &image, seconds, concurrency).await;
    println!(
        "{:<44} {:>10.0} {:>12}",
        "baseline: the same bytes straight to the store", direct, ""
    );
    let rest = run(
        "POST /captures, multipart (REST)",
        seconds,
        concurrency,
        0,
        rest_upload(http.clone(), base.clone(), keys.clone(), image.clone()),
    )
    .await;
    let channel = tonic::transport::Channel::from_shared(base.clone())?
        .connect()
        .await?;
    let grpc = run(
        "UploadCapture, 256 KiB chunks (gRPC)",
        seconds,
        concurrency,
        0,
        grpc_upload(channel, keys.clone(), image.clone()),
    )
    .await;

    println!("\nthroughput (higher is better):");
    for (label, rate) in [
        ("direct store writes", direct),
        ("REST uploads", rest.rate),
        ("gRPC uploads", grpc.rate),
    ] {
        println!(
            "  {label:<22} {rate:>8.0} captures/s {:>8.1} MB/s",
            rate * mb
        );
    }
    let ratio = |o: &Outcome| o.rate / direct;
    println!("ratios against direct store writes:");
    println!("  REST uploads ÷ direct  {:.2}", ratio(&rest));
    println!("  gRPC uploads ÷ direct  {:.2}", ratio(&grpc));

    // Memory: small images, then images 20 times larger.
    let big = Bytes::from(jpeg(1280, 720, image_kb * 1024 * 20));
    println!(
        "\npeak RSS growth during {concurrency} concurrent REST uploads (streamed, not buffered):"
    );
    for img in [image, big] {
        let before = reset_peak_rss();
        let up = run(
            &format!("  POST /captures, {} KB", img.len() / 1000),
            seconds.min(3),
            concurrency,
            0,
            rest_upload(http.clone(), base.clone(), keys.clone(), img.clone()),
        )
        .await;
        let growth = peak_rss().saturating_sub(before);
        let buffered = (concurrency * 2 * img.len()) as f64 / 1e6;
        println!(
            "  peak growth {:>7.1} MB  (bound 16 × 2 × image = {buffered:.1} MB + fixed overhead; {:.0} uploads/s)",
            growth as f64 / 1e6,
            up.rate
        );
    }
    Ok(())
}

fn rest_upload(
    http: reqwest::Client,
    base: String,
    keys: Arc<Vec<String>>,
    image: Bytes,
) -> impl Fn(usize) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + Clone + Send + 'static
{
    move |client| {
        let (http, base, image) = (http.clone(), base.clone(), image.clone());
        let key = keys[client].clone();
        Box::pin(async move {
            // The image is shared, not copied, by every request.
            let part = reqwest::multipart::Part::stream_with_length(
                reqwest::Body::from(image.clone()),
                image.len() as u64,
            )
            .file_name("frame.jpg")
            .mime_str("image/jpeg")
            .expect("a MIME type");
            let form = reqwest::multipart::Form::new()
                .part("image", part)
                .text("meta", DETECTIONS);
            http.post(format!("{base}/api/public/v1/captures"))
                .bearer_auth(&key)
                .multipart(form)
                .send()
                .await
                .is_ok_and(|r| r.status() == reqwest::StatusCode::CREATED)
        })
    }
}

fn grpc_upload(
    channel: tonic::transport::Channel,
    keys: Arc<Vec<String>>,
    image: Bytes,
) -> impl Fn(usize) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + Clone + Send + 'static
{
    move |client| {
        let mut c = proto::device_service_client::DeviceServiceClient::new(channel.clone());
        let key = keys[client].clone();
        let image = image.clone();
        Box::pin(async move {
            let meta = proto::UploadCaptureChunk {
                part: Some(proto::upload_capture_chunk::Part::Meta(
                    proto::CaptureMeta::default(),
                )),
            };
            let chunks = image.chunks(256 * 1024).map(|c| proto::UploadCaptureChunk {
                part: Some(proto::upload_capture_chunk::Part::Data(c.to_vec())),
            });
            let stream =
                tokio_stream::iter(std::iter::once(meta).chain(chunks).collect::<Vec<_>>());
            let mut req = tonic::Request::new(stream);
            let bearer = format!("Bearer {key}").parse().expect("ascii");
            req.metadata_mut().insert("authorization", bearer);
            c.upload_capture(req).await.is_ok()
        })
    }
}

/// Objects per second written by `concurrency` tasks straight to `store`.
async fn direct_writes(
    store: Arc<dyn BlobStore>,
    image: &Bytes,
    seconds: u64,
    concurrency: usize,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (store, image) = (store.clone(), image.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let key = format!("bench/{}.jpg", uuid::Uuid::now_v7().simple());
                let mut w = store.create(&key).await.expect("create");
                let mut at = 0;
                while at < image.len() {
                    let end = (at + CHUNK).min(image.len());
                    w.write(image.slice(at..end)).await.expect("write");
                    at = end;
                }
                w.finish().await.expect("finish");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("a task");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// Resets the kernel's peak-RSS mark; answers the resident size now.
fn reset_peak_rss() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kb("VmRSS:") * 1024
}

fn peak_rss() -> u64 {
    status_kb("VmHWM:") * 1024
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A JPEG of `width` × `height`, `len` bytes long: a real header (what
/// swrm reads) around bytes that never form a marker.
fn jpeg(width: u16, height: u16, len: usize) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
    out.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    out.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08]);
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&width.to_be_bytes());
    out.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    out.extend_from_slice(&[
        0xFF, 0xDA, 0x00, 0x0C, 3, 1, 0, 2, 0x11, 3, 0x11, 0, 0x3F, 0,
    ]);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    while out.len() + 2 < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push((state as u8).min(0xFE));
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}
