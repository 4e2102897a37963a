//! The reference device agent, what a firmware author copies: pairs (or
//! reads its key), fetches its config, heartbeats on the configured
//! interval, streams commands and acknowledges each (de-duplicated by id),
//! and on `deploy_model` downloads the model with resume, checks its
//! SHA-256 and reports `model_swap`. It reconnects with exponential backoff
//! and jitter. All over the generated gRPC client, but the download, which
//! is a plain HTTPS GET with `Range`.

use sha2::{Digest, Sha256};
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::Duration,
};
use swrm::proto::{self, device_service_client::DeviceServiceClient};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;
use tonic::{Request, transport::Channel};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub struct AgentConfig {
    /// The server's base URL (REST and gRPC share it).
    pub api: String,
    /// Where the device key is kept (written once, mode 600).
    pub token_file: PathBuf,
    /// A one-time provisioning token, used when there is no key yet.
    pub provisioning_token: Option<String>,
    /// Where models are downloaded.
    pub model_dir: PathBuf,
}

/// Runs until the process ends: a session, then backoff, again.
pub async fn run(config: AgentConfig) -> Result<(), Error> {
    let key = device_key(&config).await?;
    let mut seen = HashSet::new();
    let mut failures = 0u32;
    loop {
        match session(&config, &key, &mut seen).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                eprintln!("agent: session ended: {e}");
            }
        }
        tokio::time::sleep(backoff(failures)).await;
    }
}

/// 0.5 s doubling to 30 s, with up to half of it as random jitter, so a
/// fleet that lost the server does not come back all at once.
fn backoff(failures: u32) -> Duration {
    let base = (500u64 << failures.min(6)).min(30_000);
    Duration::from_millis(base / 2 + rand::random_range(0..=base / 2))
}

fn authed<T>(message: T, key: &str) -> Request<T> {
    let mut req = Request::new(message);
    let bearer = format!("Bearer {key}").parse().expect("a key is ASCII");
    req.metadata_mut().insert("authorization", bearer);
    req
}

async fn client(api: &str) -> Result<DeviceServiceClient<Channel>, Error> {
    let channel = Channel::from_shared(api.to_owned())?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    Ok(DeviceServiceClient::new(channel))
}

/// The key from the token file, else from pairing (then kept in the file).
async fn device_key(config: &AgentConfig) -> Result<String, Error> {
    if let Ok(key) = std::fs::read_to_string(&config.token_file) {
        return Ok(key.trim().to_owned());
    }
    let token = config
        .provisioning_token
        .clone()
        .ok_or("no device key yet and no provisioning token (SWRM_PROV_TOKEN)")?;
    let mut failures = 0;
    let paired = loop {
        let attempt = async {
            let mut c = client(&config.api).await?;
            let req = proto::PairRequest {
                provisioning_token: token.clone(),
                ..Default::default()
            };
            Ok::<_, Error>(c.pair(req).await?.into_inner())
        };
        match attempt.await {
            Ok(p) => break p,
            Err(e) if failures < 5 => {
                failures += 1;
                eprintln!("agent: pairing failed ({e}); retrying");
                tokio::time::sleep(backoff(failures)).await;
            }
            Err(e) => return Err(e),
        }
    };
    write_private(&config.token_file, paired.api_key.as_bytes())?;
    eprintln!("agent: paired as {} ({})", paired.name, paired.device_id);
    Ok(paired.api_key)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut file, bytes)?;
    Ok(())
}

/// One connection: config, heartbeats, the command stream.
async fn session(config: &AgentConfig, key: &str, seen: &mut HashSet<String>) -> Result<(), Error> {
    let mut c = client(&config.api).await?;
    let cfg = c
        .get_config(authed(proto::GetConfigRequest {}, key))
        .await?
        .into_inner();
    let interval = Duration::from_secs(cfg.heartbeat_interval_seconds.max(1).into());
    let started = std::time::Instant::now();
    let mut beat = c.clone();
    let beat_key = key.to_owned();
    let heartbeats = tokio::spawn(async move {
        loop {
            let req = proto::HeartbeatRequest {
                firmware_version: Some(env!("CARGO_PKG_VERSION").into()),
                uptime_seconds: Some(started.elapsed().as_secs()),
                ..Default::default()
            };
            if let Err(e) = beat.heartbeat(authed(req, &beat_key)).await {
                eprintln!("agent: heartbeat failed: {}", e.message());
            }
            tokio::time::sleep(interval).await;
        }
    });
    let outcome = commands(config, &mut c, key, seen).await;
    heartbeats.abort();
    outcome
}

async fn commands(
    config: &AgentConfig,
    c: &mut DeviceServiceClient<Channel>,
    key: &str,
    seen: &mut HashSet<String>,
) -> Result<(), Error> {
    let mut stream = c
        .stream_commands(authed(proto::StreamCommandsRequest {}, key))
        .await?
        .into_inner();
    while let Some(command) = stream.next().await {
        let command = command?;
        // A redelivery of a command already carried out: acknowledge it
        // again, never run it twice.
        let (status, message) = if seen.contains(&command.id) {
            ("succeeded", None)
        } else {
            match execute(config, c, key, &command).await {
                Ok(()) => ("succeeded", None),
                Err(e) => ("failed", Some(e.to_string())),
            }
        };
        seen.insert(command.id.clone());
        let ack = proto::AckCommandRequest {
            id: command.id.clone(),
            status: Some(status.into()),
            message,
            result: None,
        };
        c.ack_command(authed(ack, key)).await?;
    }
    Ok(())
}

async fn execute(
    config: &AgentConfig,
    c: &mut DeviceServiceClient<Channel>,
    key: &str,
    command: &proto::Command,
) -> Result<(), Error> {
    match command.r#type.as_str() {
        "deploy_model" => install_model(config, c, key).await,
        // A real device reboots here, after acknowledging.
        "reboot" => Ok(()),
        other => Err(format!("unknown command type {other:?}").into()),
    }
}

/// Downloads this device's model (resuming what is already on disk, and
/// asking `/model` for a fresh URL when one expires), checks its SHA-256,
/// puts it in place and reports `model_swap`.
pub async fn install_model(
    config: &AgentConfig,
    c: &mut DeviceServiceClient<Channel>,
    key: &str,
) -> Result<(), Error> {
    let http = reqwest::Client::new();
    let mut fresh_urls = 0;
    loop {
        let answer = c
            .get_model(authed(proto::GetModelRequest {}, key))
            .await?
            .into_inner();
        let model = answer.model.ok_or("nothing is deployed to this device")?;
        std::fs::create_dir_all(&config.model_dir)?;
        let part = config.model_dir.join(format!("{}.part", model.id));
        match download(&http, &answer.download_url, &part, model.size_bytes).await? {
            Download::Complete => {}
            Download::Expired if fresh_urls < 5 => {
                fresh_urls += 1;
                continue;
            }
            Download::Expired => return Err("the download URL keeps expiring".into()),
        }
        let bytes = tokio::fs::read(&part).await?;
        if hex::encode(Sha256::digest(&bytes)) != model.sha256 {
            tokio::fs::remove_file(&part).await?;
            return Err("the model's sha256 does not match; discarded".into());
        }
        let dest = config
            .model_dir
            .join(format!("{}.{}", model.id, model.format));
        tokio::fs::rename(&part, &dest).await?;
        let swap = proto::DeviceEvent {
            r#type: "model_swap".into(),
            data: Some(pbjson_struct(&answer.deployment_id)),
            ..Default::default()
        };
        let req = proto::PushEventsRequest { events: vec![swap] };
        c.push_events(authed(req, key)).await?;
        return Ok(());
    }
}

/// `{"deployment_id": …}` as a `google.protobuf.Struct`.
fn pbjson_struct(deployment_id: &str) -> pbjson_types::Struct {
    [(
        "deployment_id".to_owned(),
        pbjson_types::Value::from(deployment_id.to_owned()),
    )]
    .into_iter()
    .collect()
}

enum Download {
    Complete,
    /// The URL was refused (expired): ask for a new one and resume.
    Expired,
}

/// Appends to `part` from the bytes it already has until `size`.
async fn download(
    http: &reqwest::Client,
    url: &str,
    part: &Path,
    size: u64,
) -> Result<Download, Error> {
    let have = tokio::fs::metadata(part).await.map_or(0, |m| m.len());
    if have >= size {
        return Ok(Download::Complete);
    }
    let res = http
        .get(url)
        .header(reqwest::header::RANGE, format!("bytes={have}-"))
        .send()
        .await?;
    let append = match res.status() {
        reqwest::StatusCode::PARTIAL_CONTENT => true,
        // The server sent the whole object: start over.
        reqwest::StatusCode::OK => false,
        reqwest::StatusCode::FORBIDDEN => return Ok(Download::Expired),
        other => return Err(format!("download answered {other}").into()),
    };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .await?;
    let mut body = res.bytes_stream();
    while let Some(chunk) = body.next().await {
        file.write_all(&chunk?).await?;
    }
    file.flush().await?;
    let now = tokio::fs::metadata(part).await?.len();
    if now < size {
        return Err(format!("download stopped at {now} of {size} bytes; resuming").into());
    }
    Ok(Download::Complete)
}
