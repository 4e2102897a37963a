//! Commands under faults: 1,000 commands to 50 devices while the server
//! (the real binary) is SIGKILLed and restarted four times, every device's
//! connection dropping each time. The operator retries each enqueue with
//! its idempotency key; devices long-poll, de-duplicate by command id (as
//! the reference agent does) and acknowledge, retrying acks. Afterwards
//! every command is `succeeded` (or `expired`), each was queued once and
//! reached its device (none lost), and no delivery attempt was handed out
//! twice (a redelivery after a lost answer comes as attempt + 1, which the
//! device's de-duplication then absorbs).

use serde_json::{Value, json};
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{common, crash::start_binary};

const DEVICES: usize = 50;
const PER_DEVICE: usize = 20;
const KILLS: usize = 4;

/// Every delivery a device received: command id → the attempts it came as.
type Deliveries = Arc<Mutex<HashMap<String, Vec<u64>>>>;

/// A device: long polls, runs each new command once, acknowledges.
async fn device(base: String, key: String, deliveries: Deliveries, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut seen = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        let polled = http
            .get(format!("{base}/api/public/v1/commands?wait=2"))
            .bearer_auth(&key)
            .send()
            .await;
        let commands = match polled {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
            _ => None,
        };
        let Some(commands) = commands else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        for c in commands["commands"].as_array().cloned().unwrap_or_default() {
            let id = c["id"].as_str().unwrap().to_owned();
            deliveries
                .lock()
                .unwrap()
                .entry(id.clone())
                .or_default()
                .push(c["attempt"].as_u64().unwrap());
            // Carried out once: a redelivered id is only acknowledged again.
            seen.insert(id.clone());
            // Acknowledge until the server has it (an ack is idempotent).
            loop {
                let acked = http
                    .post(format!("{base}/api/public/v1/commands/{id}/ack"))
                    .bearer_auth(&key)
                    .json(&json!({"status": "succeeded"}))
                    .send()
                    .await;
                match acked {
                    Ok(r) if r.status().is_success() || r.status().as_u16() == 409 => break,
                    _ if stop.load(Ordering::Relaxed) => return,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    }
}

/// Queues a command, retrying with the same idempotency key until the
/// server answers; returns its id.
async fn enqueue(
    http: &reqwest::Client,
    base: &str,
    owner: &str,
    device: &str,
    n: usize,
) -> String {
    loop {
        let res = http
            .post(format!("{base}/api/v1/devices/{device}/commands"))
            .bearer_auth(owner)
            .json(&json!({"type": "blink", "payload": {"n": n}, "idempotency_key": format!("op-{n}")}))
            .send()
            .await;
        if let Ok(r) = res
            && r.status().is_success()
        {
            let body: Value = r.json().await.unwrap();
            return body["id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_survive_kills_and_dropped_connections_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = common::fresh_postgres_url().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let (mut server, owner) = start_binary(dir.path(), port, database_url.as_deref(), &[]).await;
    let owner = owner.expect("first start prints the owner key");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let created: Value = http
            .post(format!("{base}/api/v1/devices"))
            .bearer_auth(&owner)
            .json(&json!({"name": format!("dev-{i}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let paired: Value = http
            .post(format!("{base}/api/public/v1/pair"))
            .json(&json!({"provisioning_token": created["provisioning_token"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        devices.push((
            paired["device_id"].as_str().unwrap().to_owned(),
            paired["api_key"].as_str().unwrap().to_owned(),
        ));
    }

    let deliveries: Deliveries = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let runners: Vec<_> = devices
        .iter()
        .map(|(_, key)| {
            tokio::spawn(device(
                base.clone(),
                key.clone(),
                deliveries.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // The operator queues 1,000 commands, round robin, while the server dies.
    let queued = {
        let (http, base, owner) = (http.clone(), base.clone(), owner.clone());
        let ids: Vec<String> = devices.iter().map(|(id, _)| id.clone()).collect();
        tokio::spawn(async move {
            let mut queued = Vec::new();
            for n in 0..DEVICES * PER_DEVICE {
                queued.push(enqueue(&http, &base, &owner, &ids[n % DEVICES], n).await);
            }
            queued
        })
    };
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        server.child.start_kill().unwrap();
        server.child.wait().await.unwrap();
        server = start_binary(dir.path(), port, database_url.as_deref(), &[])
            .await
            .0;
    }
    let queued = queued.await.unwrap();

    // Every command reaches an end state.
    let started = Instant::now();
    let mut open: Vec<String> = queued.clone();
    while !open.is_empty() {
        let mut still = Vec::new();
        for id in open {
            let res = http
                .get(format!("{base}/api/v1/commands/{id}"))
                .bearer_auth(&owner)
                .send()
                .await
                .unwrap();
            let c: Value = res.json().await.unwrap();
            let status = c["status"].as_str().unwrap_or_default().to_owned();
            if status != "succeeded" && status != "expired" {
                assert_ne!(status, "failed", "{c}");
                still.push(id);
            }
        }
        open = still;
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{} commands still open",
            open.len()
        );
        if !open.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in runners {
        r.await.unwrap();
    }
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();

    // Queued once each (retried enqueues reused their key), every one
    // delivered, and no attempt handed out twice.
    let distinct: HashSet<&String> = queued.iter().collect();
    assert_eq!(distinct.len(), DEVICES * PER_DEVICE);
    let deliveries = deliveries.lock().unwrap();
    let missing: Vec<_> = queued
        .iter()
        .filter(|id| !deliveries.contains_key(*id))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
    assert_eq!(deliveries.len(), DEVICES * PER_DEVICE, "a foreign command");
    for (id, attempts) in deliveries.iter() {
        let once: HashSet<&u64> = attempts.iter().collect();
        assert_eq!(once.len(), attempts.len(), "{id} came as {attempts:?}");
    }
    let twice = deliveries.values().filter(|a| a.len() > 1).count();
    let late = deliveries
        .values()
        .filter(|a| a.iter().min() > Some(&1))
        .count();
    eprintln!(
        "{twice} commands reached their device twice; {late} first came as a later \
         attempt (a delivery whose answer a kill cut off, redelivered after its lease)"
    );
}
