//! `loadgen scale [REGISTERED] [PAIRED] [SECONDS] [CONCURRENCY]`: the fleet
//! at size (defaults 1,000,000 registered, 200,000 paired, 10 s, 64
//! clients), against one in-process server and one database, in one run:
//!
//! 1. 1,000 devices registered through `devices:batchCreate` and paired
//!    (pairs/s at 1,000); heartbeats and single-reading ingest with keys
//!    drawn at random from those 1,000 (the baseline);
//! 2. the fleet grown to REGISTERED through the bulk route (the time it
//!    takes), PAIRED of them paired in all (pairs/s at REGISTERED);
//! 3. every paired key used once (the cache warm-up), the process's RSS
//!    growth divided by the keys cached (memory per cached key);
//! 4. heartbeats and single-reading ingest with keys drawn at random from
//!    every paired device, reported as ratios against step 1.
//!
//!   cargo run --release --example loadgen -- scale
//!   SWRM_DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench cargo run --release --example loadgen -- scale

use serde_json::{Value, json};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{fleet, run::run};

/// Clients pairing at once (a factory line, or a fleet back from an outage).
const PAIRING_CLIENTS: usize = 16;
/// Bulk requests in flight while the fleet grows.
const CREATE_CLIENTS: usize = 2;
const BATCH: usize = 1000;
const BASELINE: usize = 1000;

pub async fn main(mut args: impl Iterator<Item = String>) -> Result<(), fleet::Error> {
    let mut next = |default: usize| -> Result<usize, fleet::Error> {
        Ok(args
            .next()
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let registered = next(1_000_000)?.max(BASELINE);
    let paired = next(200_000)?.clamp(BASELINE, registered);
    let seconds = next(10)? as u64;
    let concurrency = next(64)?;

    let dir = tempfile::tempdir()?;
    let (app, base, owner) = fleet::serve_in_process(dir.path(), |_| {}).await?;
    let http = reqwest::Client::new();
    println!(
        "swrm loadgen scale: {registered} registered, {paired} paired, {seconds} s per scenario, {concurrency} clients, database {}",
        if std::env::var("SWRM_DATABASE_URL").is_ok() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );

    // 1. The baseline fleet.
    let (tokens, _) = create(&http, &base, &owner, BASELINE, BASELINE).await?;
    let (mut keys, small_pairs) = pair_all(&http, &base, tokens).await?;
    println!("pairs at {BASELINE} registered: {small_pairs:.0}/s");
    let small = drive(&app, &http, &base, &keys, seconds, concurrency, BASELINE).await;

    // 2. The fleet at size.
    let (tokens, took) = create(
        &http,
        &base,
        &owner,
        registered - BASELINE,
        paired - BASELINE,
    )
    .await?;
    println!(
        "created {} devices through devices:batchCreate in {:.1} s ({:.0}/s)",
        registered - BASELINE,
        took.as_secs_f64(),
        (registered - BASELINE) as f64 / took.as_secs_f64()
    );
    let (more, big_pairs) = pair_all(&http, &base, tokens).await?;
    keys.extend(more);
    println!(
        "pairs at {registered} registered: {big_pairs:.0}/s ({} devices)",
        paired - BASELINE
    );

    // 3. Every key cached once (RSS read once its heartbeats are flushed,
    // so the liveness backlog is not counted).
    let before = rss_bytes();
    let started = Instant::now();
    warm_up(&http, &base, &keys).await;
    drain(&app).await;
    let after = rss_bytes();
    println!(
        "cache warm-up: {} keys in {:.1} s; RSS {} MiB → {} MiB: {:.0} bytes per cached key",
        keys.len(),
        started.elapsed().as_secs_f64(),
        before >> 20,
        after >> 20,
        after.saturating_sub(before) as f64 / (keys.len() - BASELINE) as f64
    );

    // 4. The same load, drawn from the whole paired fleet.
    let big = drive(&app, &http, &base, &keys, seconds, concurrency, registered).await;
    println!(
        "\nwith {registered} registered ({paired} paired) against {BASELINE}: heartbeats {:.2}, \
         1-reading ingest {:.2}, pairs/s {:.2}",
        big.0 / small.0,
        big.1 / small.1,
        big_pairs / small_pairs
    );
    Ok(())
}

/// Creates `n` devices, `BATCH` per request; answers the provisioning
/// tokens of the first `keep` and the time it took.
async fn create(
    http: &reqwest::Client,
    base: &str,
    owner: &str,
    n: usize,
    keep: usize,
) -> Result<(Vec<String>, Duration), fleet::Error> {
    let started = Instant::now();
    let next_batch = Arc::new(AtomicUsize::new(0));
    let batches = n.div_ceil(BATCH);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CREATE_CLIENTS {
        let (http, base, owner, next_batch) = (
            http.clone(),
            base.to_owned(),
            owner.to_owned(),
            next_batch.clone(),
        );
        clients.spawn(async move {
            let mut tokens: Vec<(usize, String)> = Vec::new();
            loop {
                let b = next_batch.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return Ok::<_, fleet::Error>(tokens);
                }
                let size = BATCH.min(n - b * BATCH);
                let requests: Vec<Value> = (0..size)
                    .map(|i| json!({"name": format!("scale-{}", b * BATCH + i)}))
                    .collect();
                let answer = http
                    .post(format!("{base}/api/v1/devices:batchCreate"))
                    .bearer_auth(&owner)
                    .json(&json!({ "requests": requests }))
                    .send()
                    .await?;
                if !answer.status().is_success() {
                    return Err(format!("batchCreate answered {}", answer.status()).into());
                }
                let body: Value = answer.json().await?;
                for (i, d) in body["devices"]
                    .as_array()
                    .ok_or("no devices")?
                    .iter()
                    .enumerate()
                {
                    if b * BATCH + i < keep {
                        let token = d["provisioning_token"].as_str().ok_or("no token")?;
                        tokens.push((b * BATCH + i, token.to_owned()));
                    }
                }
            }
        });
    }
    let mut tokens = Vec::with_capacity(keep);
    while let Some(done) = clients.join_next().await {
        tokens.extend(done??);
    }
    tokens.sort_unstable();
    Ok((
        tokens.into_iter().map(|(_, t)| t).collect(),
        started.elapsed(),
    ))
}

/// Pairs every token, `PAIRING_CLIENTS` at a time; answers the device keys
/// and the pairs per second.
async fn pair_all(
    http: &reqwest::Client,
    base: &str,
    tokens: Vec<String>,
) -> Result<(Vec<String>, f64), fleet::Error> {
    let started = Instant::now();
    let n = tokens.len();
    let tokens = Arc::new(tokens);
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..PAIRING_CLIENTS {
        let (http, base, tokens, next) =
            (http.clone(), base.to_owned(), tokens.clone(), next.clone());
        clients.spawn(async move {
            let mut keys = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(token) = tokens.get(i) else {
                    return Ok::<_, fleet::Error>(keys);
                };
                let answer: Value = http
                    .post(format!("{base}/api/public/v1/pair"))
                    .json(&json!({ "provisioning_token": token }))
                    .send()
                    .await?
                    .json()
                    .await?;
                let key = answer["api_key"]
                    .as_str()
                    .ok_or_else(|| format!("pairing answered {answer}"))?;
                keys.push(key.to_owned());
            }
        });
    }
    let mut keys = Vec::with_capacity(n);
    while let Some(done) = clients.join_next().await {
        keys.extend(done??);
    }
    Ok((keys, n as f64 / started.elapsed().as_secs_f64()))
}

/// One heartbeat from every key.
async fn warm_up(http: &reqwest::Client, base: &str, keys: &[String]) {
    let keys = Arc::new(keys.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (http, base, keys, next) = (http.clone(), base.to_owned(), keys.clone(), next.clone());
        clients.spawn(async move {
            while let Some(key) = keys.get(next.fetch_add(1, Ordering::Relaxed)) {
                let _ = http
                    .post(format!("{base}/api/public/v1/heartbeat"))
                    .bearer_auth(key)
                    .json(&json!({}))
                    .send()
                    .await;
            }
        });
    }
    while clients.join_next().await.is_some() {}
}

/// Writes every heartbeat recorded to the database now (after the flush
/// under way, if any), as `core::liveness` does each second; answers the
/// time it took and the rows that were waiting.
async fn drain(app: &swrm::App) -> (Duration, usize) {
    let started = Instant::now();
    let waiting = app.core.liveness.backlog();
    while app.core.liveness.backlog() > 0 {
        if let Err(e) = app.core.liveness.flush(&app.core).await {
            eprintln!("heartbeat flush failed: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (started.elapsed(), waiting)
}

/// Heartbeats, then single readings, each request from a key drawn at
/// random; answers both rates. Between the two, the heartbeats' flush
/// backlog is drained (and reported), so ingest is not charged for it.
async fn drive(
    app: &swrm::App,
    http: &reqwest::Client,
    base: &str,
    keys: &[String],
    seconds: u64,
    concurrency: usize,
    registered: usize,
) -> (f64, f64) {
    let keys = Arc::new(keys.to_vec());
    let post = |path: &'static str, body: Value| {
        let (http, base, keys) = (http.clone(), base.to_owned(), keys.clone());
        move |_client: usize| {
            let (http, base, keys, body) = (http.clone(), base.clone(), keys.clone(), body.clone());
            async move {
                let key = &keys[rand::random_range(0..keys.len())];
                http.post(format!("{base}{path}"))
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        }
    };
    println!(
        "\n{:<44} {:>10} {:>12} {:>9} {:>9}",
        format!("{registered} registered, {} keys drawn", keys.len()),
        "req/s",
        "readings/s",
        "p50 ms",
        "p99 ms"
    );
    let heartbeats = run(
        "POST /heartbeat (REST), random key",
        seconds,
        concurrency,
        0,
        post("/api/public/v1/heartbeat", json!({"uptime_seconds": 1})),
    )
    .await;
    let (took, waiting) = drain(app).await;
    println!(
        "  heartbeats flushed after the run: {waiting} waiting, written in {:.2} s",
        took.as_secs_f64()
    );
    let ingest = run(
        "POST /sensors, 1 reading (REST), random key",
        seconds,
        concurrency,
        1,
        post(
            "/api/public/v1/sensors",
            json!({"readings": [{"sensor_type": "temperature", "value": 21.5}]}),
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    (heartbeats.rate, ingest.rate)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}
