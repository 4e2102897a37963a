//! Durability: 50 devices push readings at over 1,000 a second while the
//! server (the real binary) is SIGKILLed and restarted five times. Devices
//! retry every batch that was not acknowledged, with the same `seq`s.
//! Afterwards every acknowledged reading is stored, and stored exactly once.

use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::json;
use std::{
    collections::HashSet,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::common;

const DEVICES: usize = 50;
const BATCH: u64 = 5;
const KILLS: usize = 5;

pub struct Server {
    pub child: Child,
}

async fn start(
    dir: &std::path::Path,
    port: u16,
    database_url: Option<&str>,
) -> (Server, Option<String>) {
    start_binary(dir, port, database_url, &[]).await
}

/// The real binary on `port`, rate limits off, with `env` besides; answers
/// the owner key on the first start (`None` on a restart).
pub async fn start_binary(
    dir: &std::path::Path,
    port: u16,
    database_url: Option<&str>,
    env: &[(&str, String)],
) -> (Server, Option<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_swrm"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .env("SWRM_LOG", "error")
        .env("SWRM_PAIR_RATE_PER_MINUTE", "0")
        .env("SWRM_DEVICE_RATE_PER_SECOND", "0")
        .env("SWRM_ORG_KEY_RATE_PER_SECOND", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true);
    if let Some(url) = database_url {
        cmd.arg("--database-url").arg(url);
    }
    let mut child = cmd.spawn().expect("swrm starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut owner = None;
    loop {
        if http.get(format!("{base}/livez")).send().await.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first start prints the owner key; a restart prints nothing.
    if let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_millis(200), stdout.next_line()).await
        && line.starts_with("Created")
    {
        let key = stdout.next_line().await.unwrap().unwrap();
        owner = key.split_whitespace().last().map(str::to_owned);
    }
    (Server { child }, owner)
}

/// Pushes batches with fresh `seq`s, retrying each until acknowledged.
async fn device(
    base: String,
    (id, key): (uuid::Uuid, String),
    acked: Arc<Mutex<HashSet<(uuid::Uuid, i64)>>>,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut next: u64 = 1;
    while !stop.load(Ordering::Relaxed) {
        let seqs: Vec<u64> = (next..next + BATCH).collect();
        let readings: Vec<_> = seqs
            .iter()
            .map(|s| json!({"sensor_type": "temperature", "value": *s as f64 / 10.0, "seq": s}))
            .collect();
        let answer = http
            .post(format!("{base}/api/public/v1/sensors"))
            .bearer_auth(&key)
            .json(&json!({"readings": readings}))
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => {
                let mut acked = acked.lock().unwrap();
                for s in &seqs {
                    acked.insert((id, *s as i64));
                }
                sent.fetch_add(BATCH, Ordering::Relaxed);
                next += BATCH;
            }
            // Not acknowledged: the same batch again, as firmware would.
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn every_acknowledged_reading_survives_kills_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = common::fresh_postgres_url().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let (mut server, owner) = start(dir.path(), port, database_url.as_deref()).await;
    let owner = owner.expect("first start prints the owner key");
    let http = reqwest::Client::new();
    let mut keys = Vec::new();
    for i in 0..DEVICES {
        let created: serde_json::Value = http
            .post(format!("{base}/api/v1/devices"))
            .bearer_auth(&owner)
            .json(&json!({"name": format!("dev-{i}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let paired: serde_json::Value = http
            .post(format!("{base}/api/public/v1/pair"))
            .json(&json!({"provisioning_token": created["provisioning_token"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        keys.push((
            paired["device_id"]
                .as_str()
                .unwrap()
                .parse::<uuid::Uuid>()
                .unwrap(),
            paired["api_key"].as_str().unwrap().to_owned(),
        ));
    }

    let acked = Arc::new(Mutex::new(HashSet::new()));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let devices: Vec<_> = keys
        .iter()
        .map(|k| {
            tokio::spawn(device(
                base.clone(),
                k.clone(),
                acked.clone(),
                sent.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let started = Instant::now();
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server.child.start_kill().unwrap();
        server.child.wait().await.unwrap();
        server = start(dir.path(), port, database_url.as_deref()).await.0;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for d in devices {
        d.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = sent.load(Ordering::Relaxed) as f64 / elapsed;
    eprintln!(
        "acknowledged {:.0} readings/s over {elapsed:.1} s with {KILLS} SIGKILLs",
        rate
    );
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();

    let url = database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("swrm.db").display()));
    let db = Database::connect(&url).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT device_id, seq FROM readings",
        ))
        .await
        .unwrap();
    let stored: Vec<(uuid::Uuid, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "device_id").unwrap(),
                r.try_get("", "seq").unwrap(),
            )
        })
        .collect();
    let distinct: HashSet<(uuid::Uuid, i64)> = stored.iter().copied().collect();
    assert_eq!(stored.len(), distinct.len(), "a reading was stored twice");
    let acked = acked.lock().unwrap();
    let lost: Vec<_> = acked.difference(&distinct).take(5).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    // Stored beyond the acknowledged: at most each device's last batch,
    // committed when a kill lost its answer (and then stopped before retry).
    assert!(distinct.len() <= acked.len() + DEVICES * BATCH as usize);
    assert!(
        acked.len() > 1000,
        "the load was too light: {}",
        acked.len()
    );
}
