//! Load generator for the hot paths, against an in-process server on
//! loopback. Figures are ratios against a baseline measured in the same run
//! (the machine is noisy): the baseline is `GET /api/public/v1/sensor-types`,
//! which touches neither auth nor the database.
//!
//!   cargo run --release --example loadgen -- [SECONDS] [CONCURRENCY]
//!   SWRM_DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench cargo run --release --example loadgen
//!
//! Rate limits are off for the run. Each request loop is bounded in time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use swrm::proto;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

async fn run<F, Fut>(label: &str, seconds: u64, concurrency: usize, make: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let make = make.clone();
        let tally = tally.clone();
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let counter = if make().await {
                    &tally.ok
                } else {
                    &tally.failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let rps = tally.ok.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!(
        "{label:<40} {rps:>10.0} req/s  ({} failed)",
        tally.failed.load(Ordering::Relaxed)
    );
    rps
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(32);

    let dir = tempfile::tempdir()?;
    let mut config = swrm::Config::for_data_dir(dir.path());
    config.storage.database_url = std::env::var("SWRM_DATABASE_URL").ok();
    config.rate_limits.device_rate_per_second = 0;
    config.rate_limits.org_key_rate_per_second = 0;
    config.rate_limits.pair_rate_per_minute = 0;
    let (app, created) = swrm::build(config).await?;
    let owner = created.ok_or("use an empty database")?.api_key;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(swrm::serve(app.clone(), listener, std::future::pending()));

    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("{base}/api/v1/devices"))
        .bearer_auth(&owner)
        .json(&serde_json::json!({"name": "bench"}))
        .send()
        .await?
        .json()
        .await?;
    let token = created["provisioning_token"].as_str().ok_or("no token")?;
    let paired: serde_json::Value = http
        .post(format!("{base}/api/public/v1/pair"))
        .json(&serde_json::json!({"provisioning_token": token}))
        .send()
        .await?
        .json()
        .await?;
    let key = paired["api_key"].as_str().ok_or("no key")?.to_owned();

    println!(
        "swrm loadgen: {seconds} s per scenario, {concurrency} concurrent, database {}",
        if std::env::var("SWRM_DATABASE_URL").is_ok() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let baseline = {
        let (http, base) = (http.clone(), base.clone());
        run(
            "baseline: GET sensor-types (REST)",
            seconds,
            concurrency,
            move || {
                let (http, base) = (http.clone(), base.clone());
                async move {
                    http.get(format!("{base}/api/public/v1/sensor-types"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            },
        )
        .await
    };
    let config = {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        run(
            "GET config (REST, auth + reads)",
            seconds,
            concurrency,
            move || {
                let (http, base, key) = (http.clone(), base.clone(), key.clone());
                async move {
                    http.get(format!("{base}/api/public/v1/config"))
                        .bearer_auth(key)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            },
        )
        .await
    };
    let heartbeat_rest = {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        run(
            "POST heartbeat (REST, auth + write)",
            seconds,
            concurrency,
            move || {
                let (http, base, key) = (http.clone(), base.clone(), key.clone());
                async move {
                    http.post(format!("{base}/api/public/v1/heartbeat"))
                        .bearer_auth(key)
                        .json(&serde_json::json!({"uptime_seconds": 1}))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            },
        )
        .await
    };
    let channel = tonic::transport::Channel::from_shared(base.clone())?
        .connect()
        .await?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {key}").parse()?;
    let heartbeat_grpc = run(
        "Heartbeat (gRPC, auth + write)",
        seconds,
        concurrency,
        move || {
            let mut client =
                proto::device_service_client::DeviceServiceClient::new(channel.clone());
            let bearer = bearer.clone();
            async move {
                let mut req = tonic::Request::new(proto::HeartbeatRequest {
                    uptime_seconds: Some(1),
                    ..Default::default()
                });
                req.metadata_mut().insert("authorization", bearer);
                client.heartbeat(req).await.is_ok()
            }
        },
    )
    .await;

    println!(
        "\nratios against the baseline (higher is better, 1.00 = as fast as no auth, no database):"
    );
    println!("  config (REST)          {:.2}", config / baseline);
    println!("  heartbeat (REST)       {:.2}", heartbeat_rest / baseline);
    println!("  heartbeat (gRPC)       {:.2}", heartbeat_grpc / baseline);
    println!(
        "credential lookups that reached the database: {}",
        app.auth_db_lookups()
    );
    Ok(())
}
