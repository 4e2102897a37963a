//! Load generator for the hot paths, against an in-process server on
//! loopback. Figures are ratios against baselines measured in the same run
//! (the machine is noisy):
//!
//! - request rates against `GET /livez` (no auth, no database), measured
//!   just before and just after each scenario (see [`run::Bracket`]);
//! - reading rates against a raw insert of the same rows into the same
//!   database, without the server: `COPY` on PostgreSQL, multi-row
//!   `INSERT`s in one transaction on SQLite, batches of `concurrency × 50`;
//!   measured just before and just after each 50-reading scenario, a ratio
//!   over the mean of the two.
//!
//! Each device scenario uses one simulated device (its own key) per client.
//!
//!   cargo run --release --example loadgen -- [SECONDS] [CONCURRENCY]
//!   SWRM_DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench cargo run --release --example loadgen
//!
//! Rate limits are off for the run. `loadgen captures …` runs the capture
//! upload benchmark instead (see `captures.rs`), `loadgen waiters …` the
//! command-delivery one (see `waiters.rs`), `loadgen scale …` the fleet
//! at a million registered devices (see `scale.rs`).

mod captures;
mod fleet;
mod raw;
mod run;
mod scale;
mod waiters;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use run::run;
use serde_json::json;
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};
use swrm::proto;

struct Device {
    id: uuid::Uuid,
    org_id: uuid::Uuid,
    key: String,
    /// The next `seq` this device sends.
    seq: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<(), fleet::Error> {
    let mut args = std::env::args().skip(1).peekable();
    match args.peek().map(String::as_str) {
        Some("captures") => {
            args.next();
            return captures::main(args).await;
        }
        Some("waiters") => {
            args.next();
            return waiters::main(args).await;
        }
        Some("scale") => {
            args.next();
            return scale::main(args).await;
        }
        _ => {}
    }
    let seconds: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);

    let dir = tempfile::tempdir()?;
    let (app, base, owner) = fleet::serve_in_process(dir.path(), |_| {}).await?;

    let http = reqwest::Client::new();
    let mut devices = Vec::new();
    for i in 0..concurrency {
        let paired = fleet::pair(&http, &base, &owner, &format!("bench-{i}")).await?;
        devices.push(Arc::new(Device {
            id: paired.device_id.parse()?,
            org_id: paired.org_id.parse()?,
            key: paired.key,
            seq: AtomicU64::new(1),
        }));
    }
    let devices = Arc::new(devices);
    let postgres = std::env::var("SWRM_DATABASE_URL").is_ok();
    println!(
        "swrm loadgen: {seconds} s per scenario, {concurrency} clients, database {}",
        if postgres { "PostgreSQL" } else { "SQLite" }
    );
    println!(
        "{:<44} {:>10} {:>12} {:>9} {:>9}",
        "scenario", "req/s", "readings/s", "p50 ms", "p99 ms"
    );

    let rest = |path: &'static str, body: Option<fn(&Device) -> serde_json::Value>| {
        let (http, base, devices) = (http.clone(), base.clone(), devices.clone());
        move |client: usize| {
            let (http, base) = (http.clone(), base.clone());
            let device = devices[client].clone();
            async move {
                let url = format!("{base}{path}");
                let req = match body {
                    Some(body) => http.post(url).json(&body(&device)),
                    None => http.get(url),
                };
                req.bearer_auth(&device.key)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        }
    };

    let livez = || {
        run(
            "baseline: GET /livez (REST)",
            seconds,
            concurrency,
            0,
            rest("/livez", None),
        )
    };
    // Connections opened and caches filled before anything is measured.
    run::quietly(1, concurrency, rest("/livez", None)).await;
    let mut baseline = run::Bracket::new(livez().await.rate);
    let config = run(
        "GET /config (REST)",
        seconds,
        concurrency,
        0,
        rest("/api/public/v1/config", None),
    )
    .await;
    let config_ratio = baseline.ratio(&config, livez().await.rate);
    let hb_rest = run(
        "POST /heartbeat (REST)",
        seconds,
        concurrency,
        0,
        rest(
            "/api/public/v1/heartbeat",
            Some(|_| json!({"uptime_seconds": 1})),
        ),
    )
    .await;
    let hb_rest_ratio = baseline.ratio(&hb_rest, livez().await.rate);
    let one_rest = run(
        "POST /sensors, 1 reading (REST)",
        seconds,
        concurrency,
        1,
        rest("/api/public/v1/sensors", Some(|d| readings(d, 1))),
    )
    .await;
    let one_rest_ratio = baseline.ratio(&one_rest, livez().await.rate);
    // The row-rate baseline, just before and just after each 50-reading
    // scenario, as `/livez` is around the others.
    let org_id = devices[0].org_id;
    let ids: Vec<uuid::Uuid> = devices.iter().map(|d| d.id).collect();
    let raw_rows = || async {
        let rate =
            raw::insert_rows(&app.core.store, org_id, &ids, seconds, concurrency * 50).await?;
        println!(
            "{:<44} {:>10} {:>12.0}",
            "baseline: raw insert of the same rows", "", rate
        );
        Ok::<f64, fleet::Error>(rate)
    };
    let raw_before_rest = raw_rows().await?;
    let fifty_rest = run(
        "POST /sensors, 50 readings (REST)",
        seconds,
        concurrency,
        50,
        rest("/api/public/v1/sensors", Some(|d| readings(d, 50))),
    )
    .await;
    let fifty_rest_ratio = fifty_rest.rows / ((raw_before_rest + raw_rows().await?) / 2.0);

    let channel = tonic::transport::Channel::from_shared(base.clone())?
        .connect()
        .await?;
    let grpc = |batch: usize| {
        let (channel, devices) = (channel.clone(), devices.clone());
        move |client: usize| {
            let mut c = proto::device_service_client::DeviceServiceClient::new(channel.clone());
            let device = devices[client].clone();
            async move {
                let mut req = tonic::Request::new(proto::PushSensorsRequest {
                    readings: grpc_readings(&device, batch),
                });
                let bearer = format!("Bearer {}", device.key).parse().expect("ascii");
                req.metadata_mut().insert("authorization", bearer);
                c.push_sensors(req).await.is_ok()
            }
        }
    };
    baseline.restart(livez().await.rate);
    let hb_grpc = {
        let (channel, devices) = (channel.clone(), devices.clone());
        run(
            "Heartbeat (gRPC)",
            seconds,
            concurrency,
            0,
            move |client: usize| {
                let mut c = proto::device_service_client::DeviceServiceClient::new(channel.clone());
                let device = devices[client].clone();
                async move {
                    let mut req = tonic::Request::new(proto::HeartbeatRequest {
                        uptime_seconds: Some(1),
                        ..Default::default()
                    });
                    let bearer = format!("Bearer {}", device.key).parse().expect("ascii");
                    req.metadata_mut().insert("authorization", bearer);
                    c.heartbeat(req).await.is_ok()
                }
            },
        )
        .await
    };
    let hb_grpc_ratio = baseline.ratio(&hb_grpc, livez().await.rate);
    let one_grpc = run(
        "PushSensors, 1 reading (gRPC)",
        seconds,
        concurrency,
        1,
        grpc(1),
    )
    .await;
    let one_grpc_ratio = baseline.ratio(&one_grpc, livez().await.rate);
    let raw_before_grpc = raw_rows().await?;
    let fifty_grpc = run(
        "PushSensors, 50 readings (gRPC)",
        seconds,
        concurrency,
        50,
        grpc(50),
    )
    .await;
    let fifty_grpc_ratio = fifty_grpc.rows / ((raw_before_grpc + raw_rows().await?) / 2.0);

    println!("\nratios against the baselines (higher is better):");
    println!(
        "  config (REST) ÷ livez                 {:.2}",
        config_ratio
    );
    println!(
        "  heartbeat (REST) ÷ livez              {:.2}",
        hb_rest_ratio
    );
    println!(
        "  heartbeat (gRPC) ÷ livez              {:.2}",
        hb_grpc_ratio
    );
    println!(
        "  1-reading sensors (REST) ÷ livez      {:.2}",
        one_rest_ratio
    );
    println!(
        "  1-reading sensors (gRPC) ÷ livez      {:.2}",
        one_grpc_ratio
    );
    println!(
        "  50-reading sensors (REST) ÷ raw rows  {:.2}",
        fifty_rest_ratio
    );
    println!(
        "  50-reading sensors (gRPC) ÷ raw rows  {:.2}",
        fifty_grpc_ratio
    );
    println!(
        "credential lookups that reached the database: {}",
        app.auth_db_lookups()
    );
    Ok(())
}

fn next_seqs(d: &Device, n: usize) -> u64 {
    d.seq.fetch_add(n as u64, Ordering::Relaxed)
}

fn readings(d: &Device, n: usize) -> serde_json::Value {
    let first = next_seqs(d, n);
    let readings: Vec<_> = (0..n as u64)
        .map(|i| json!({"sensor_type": "temperature", "value": 21.5, "seq": first + i}))
        .collect();
    json!({ "readings": readings })
}

fn grpc_readings(d: &Device, n: usize) -> Vec<proto::SensorReading> {
    let first = next_seqs(d, n);
    (0..n as u64)
        .map(|i| proto::SensorReading {
            sensor_type: "temperature".into(),
            value: Some(21.5),
            seq: Some(first + i),
            ..Default::default()
        })
        .collect()
}
