//! The command-delivery benchmark: `N` devices waiting at once on a server
//! process of their own (half REST long polls, half gRPC `StreamCommands`,
//! each device on its own connection), the server's resident memory per
//! waiting device (long polls and streams apart, then together), then
//! commands queued at `RATE` per second (after one unmeasured second at
//! that rate, to warm up) and the time from the enqueue
//! request leaving the operator to the command reaching its device (p50,
//! p99). With `replica` (PostgreSQL) devices wait on a
//! second server and commands are queued through the first, so delivery
//! crosses the bus. With `ack` each device acknowledges each command it
//! gets (`succeeded`) before it waits again, as the reference agent does.
//!
//!   cargo build --release && cargo run --release --example loadgen -- waiters [N] [RATE] [SECONDS] [replica] [ack]
//!   SWRM_DATABASE_URL=postgres://… cargo run --release --example loadgen -- waiters 10000 1000 5 replica
//!
//! The server is `target/release/swrm` (build it first).

use serde_json::{Value, json};
use std::{
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use swrm::proto;

use crate::fleet::{self, Paired};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tokio_stream::StreamExt;

type Latencies = Arc<Mutex<Vec<f64>>>;

/// What every simulated device shares: the clock its commands' payloads
/// are stamped against, and the counters it reports to.
#[derive(Clone)]
struct Tally {
    epoch: Instant,
    latencies: Latencies,
    connected: Arc<AtomicUsize>,
    /// Acks answered 200, when devices acknowledge.
    acked: Option<Arc<AtomicUsize>>,
}

pub async fn main(mut args: impl Iterator<Item = String>) -> Result<(), fleet::Error> {
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let rate: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let seconds: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let rest: Vec<String> = args.collect();
    let replica = rest.iter().any(|a| a == "replica");
    let ack = rest.iter().any(|a| a == "ack");
    raise_fd_limit();
    let database_url = std::env::var("SWRM_DATABASE_URL").ok();
    if replica && database_url.is_none() {
        return Err("replica needs SWRM_DATABASE_URL (PostgreSQL)".into());
    }
    let dir = tempfile::tempdir()?;
    let (mut primary, base, owner) = spawn_server(dir.path(), database_url.as_deref()).await?;
    let owner = owner.ok_or("use an empty database")?;
    let mut second = None;
    let wait_base = if replica {
        let (child, replica_base, _) = spawn_server(dir.path(), database_url.as_deref()).await?;
        second = Some(child);
        replica_base
    } else {
        base.clone()
    };
    let waiting_pid = second.as_ref().unwrap_or(&primary).id().ok_or("no pid")?;

    let devices = create_devices(&base, &owner, n).await?;
    println!(
        "swrm loadgen waiters: {n} devices ({} long poll, {} gRPC stream), {rate} commands/s for {seconds} s, database {}{}{}",
        n / 2,
        n - n / 2,
        if database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        if replica {
            ", devices on a second replica"
        } else {
            ""
        },
        if ack {
            ", each command acknowledged"
        } else {
            ""
        }
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(waiting_pid);

    let epoch = Instant::now();
    let latencies: Latencies = Arc::default();
    let connected = Arc::new(AtomicUsize::new(0));
    let tally = Tally {
        epoch,
        latencies: latencies.clone(),
        connected: connected.clone(),
        acked: ack.then(|| Arc::new(AtomicUsize::new(0))),
    };
    // Long polls first, then streams, so each kind's memory shows apart.
    let (polls, streams) = devices.split_at(n / 2);
    let mut rss = before;
    for (kind, group) in [("long poll", polls), ("gRPC stream", streams)] {
        let target = connected.load(Ordering::Relaxed) + group.len();
        for (i, device) in group.iter().enumerate() {
            let (base, key) = (wait_base.clone(), device.key.clone());
            if kind == "long poll" {
                tokio::spawn(long_poll(base, key, tally.clone()));
            } else {
                tokio::spawn(stream(base, key, tally.clone()));
            }
            if i % 500 == 499 {
                // Connection setup in waves, as a fleet reconnects.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let started = Instant::now();
        while connected.load(Ordering::Relaxed) < target
            && started.elapsed() < Duration::from_secs(120)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = rss_kib(waiting_pid);
        println!(
            "{kind}: {} devices, {:.1} KiB each",
            group.len(),
            now.saturating_sub(rss) as f64 / group.len().max(1) as f64
        );
        rss = now;
    }
    let after = rss;
    let per_device = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "waiting: {} of {n}; server RSS {} MiB → {} MiB: {per_device:.1} KiB per waiting device ({:.0} per GiB)",
        connected.load(Ordering::Relaxed),
        before / 1024,
        after / 1024,
        1024.0 * 1024.0 / per_device.max(0.001)
    );

    // Commands at `rate`, each to a device chosen round robin: one second
    // of them first, not measured (the enqueue client's connections, the
    // server's statement caches and the WAL's first growth), then
    // `seconds` of measured ones.
    let http = reqwest::Client::new();
    let pace = Pace {
        http: &http,
        base: &base,
        owner: &owner,
        devices: &devices,
        rate,
    };
    pace.send(rate, None).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let total = rate * seconds;
    let ticker_start = Instant::now();
    let (queued, mut answers, sending) = pace.send(total, Some(epoch)).await;
    let achieved = queued as f64 / ticker_start.elapsed().as_secs_f64();
    answers.sort_by(f64::total_cmp);
    println!(
        "enqueues sent over {:.2} s; enqueue answered p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        sending.as_secs_f64(),
        percentile(&answers, 0.5),
        percentile(&answers, 0.99),
        answers.last().copied().unwrap_or(0.0)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(f64::total_cmp);
    let pct = |p: f64| percentile(&l, p);
    println!(
        "queued {queued} of {total} ({achieved:.0}/s achieved); delivered {}; enqueue → device p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        l.len(),
        pct(0.5),
        pct(0.99),
        l.last().copied().unwrap_or(0.0)
    );
    if let Some(acked) = &tally.acked {
        println!(
            "acknowledged (200) {} of the {} commands delivered, warm-up included",
            acked.load(Ordering::Relaxed),
            rate * (seconds + 1)
        );
    }
    let _ = primary.start_kill();
    if let Some(mut s) = second {
        let _ = s.start_kill();
    }
    Ok(())
}

fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on this process.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `target/release/swrm serve` on a free port; answers the child, its base
/// URL and (on a fresh database) the owner key.
async fn spawn_server(
    dir: &std::path::Path,
    database_url: Option<&str>,
) -> Result<(Child, String, Option<String>), fleet::Error> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("swrm"))
        .filter(|p| p.exists())
        .ok_or("target/release/swrm is missing: run `cargo build --release` first")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .env("SWRM_LOG", "error")
        .env("SWRM_PAIR_RATE_PER_MINUTE", "0")
        .env("SWRM_DEVICE_RATE_PER_SECOND", "0")
        .env("SWRM_ORG_KEY_RATE_PER_SECOND", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(url) = database_url {
        cmd.arg("--database-url").arg(url);
    }
    let mut child = cmd.spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("stdout")?).lines();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http.get(format!("{base}/livez")).send().await.is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the server did not come up".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut owner = None;
    if let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_millis(300), stdout.next_line()).await
        && line.starts_with("Created")
        && let Ok(Some(key)) = stdout.next_line().await
    {
        owner = key.split_whitespace().last().map(str::to_owned);
    }
    Ok((child, base, owner))
}

async fn create_devices(base: &str, owner: &str, n: usize) -> Result<Vec<Paired>, fleet::Error> {
    let http = reqwest::Client::new();
    let mut out = Vec::with_capacity(n);
    let mut batch = tokio::task::JoinSet::new();
    for i in 0..n {
        let (http, base, owner) = (http.clone(), base.to_owned(), owner.to_owned());
        batch.spawn(async move { fleet::pair(&http, &base, &owner, &format!("waiter-{i}")).await });
        if batch.len() >= 64 {
            out.push(batch.join_next().await.ok_or("join")???);
        }
    }
    while let Some(done) = batch.join_next().await {
        out.push(done??);
    }
    Ok(out)
}

/// Commands queued through the admin API at a steady rate.
struct Pace<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    owner: &'a str,
    devices: &'a [Paired],
    rate: u64,
}

impl Pace<'_> {
    /// Queues `count` commands at the rate; with `epoch`, each payload
    /// carries its send time for the device to measure. Returns how many
    /// were queued, each enqueue's answer time (ms), and when the last
    /// left (behind schedule when this process could not keep the pace:
    /// it shares the machine with the server).
    async fn send(&self, count: u64, epoch: Option<Instant>) -> (usize, Vec<f64>, Duration) {
        let interval = Duration::from_secs_f64(1.0 / self.rate as f64);
        let start = Instant::now();
        let mut sends = tokio::task::JoinSet::new();
        for k in 0..count {
            tokio::time::sleep_until((start + interval * k as u32).into()).await;
            let device = &self.devices[(k as usize * 7919) % self.devices.len()].device_id;
            let payload = match epoch {
                Some(epoch) => json!({"sent_us": epoch.elapsed().as_micros() as u64}),
                None => json!({"warm_up": true}),
            };
            let request = self
                .http
                .post(format!("{}/api/v1/devices/{device}/commands", self.base))
                .bearer_auth(self.owner)
                .json(&json!({"type": "ping", "payload": payload}));
            sends.spawn(async move {
                let sent = Instant::now();
                let ok = request.send().await.is_ok_and(|r| r.status().is_success());
                (ok, sent.elapsed().as_secs_f64() * 1000.0)
            });
        }
        let sending = start.elapsed();
        let (mut queued, mut answers) = (0, Vec::new());
        while let Some(Ok((ok, ms))) = sends.join_next().await {
            queued += usize::from(ok);
            answers.push(ms);
        }
        (queued, answers, sending)
    }
}

/// The `p` quantile of sorted values (0 when there are none).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

fn record(latencies: &Latencies, epoch: Instant, payload: &Value) {
    // Payload numbers are JSON numbers (doubles in a protobuf Struct).
    if let Some(sent) = payload["sent_us"].as_f64() {
        let now = epoch.elapsed().as_micros() as f64;
        latencies
            .lock()
            .unwrap()
            .push((now - sent).max(0.0) / 1000.0);
    }
}

/// A device holding REST long polls, each on its own connection.
async fn long_poll(base: String, key: String, tally: Tally) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("a client");
    let mut first = true;
    loop {
        let req = http
            .get(format!("{base}/api/public/v1/commands?wait=60"))
            .bearer_auth(&key)
            .send();
        if first {
            tally.connected.fetch_add(1, Ordering::Relaxed);
            first = false;
        }
        let Ok(res) = req.await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let Ok(body) = res.json::<Value>().await else {
            continue;
        };
        for c in body["commands"].as_array().into_iter().flatten() {
            record(&tally.latencies, tally.epoch, &c["payload"]);
            if let (Some(acked), Some(id)) = (&tally.acked, c["id"].as_str()) {
                let answer = http
                    .post(format!("{base}/api/public/v1/commands/{id}/ack"))
                    .bearer_auth(&key)
                    .json(&json!({"status": "succeeded"}))
                    .send()
                    .await;
                if answer.is_ok_and(|a| a.status().is_success()) {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A device holding a `StreamCommands` stream on its own HTTP/2 connection.
async fn stream(base: String, key: String, tally: Tally) {
    let Ok(channel) = tonic::transport::Channel::from_shared(base)
        .expect("a URL")
        .connect()
        .await
    else {
        return;
    };
    let mut client = proto::device_service_client::DeviceServiceClient::new(channel);
    let mut req = tonic::Request::new(proto::StreamCommandsRequest {});
    let bearer: tonic::metadata::AsciiMetadataValue =
        format!("Bearer {key}").parse().expect("ascii");
    req.metadata_mut().insert("authorization", bearer.clone());
    let Ok(res) = client.stream_commands(req).await else {
        return;
    };
    tally.connected.fetch_add(1, Ordering::Relaxed);
    let mut commands = res.into_inner();
    while let Some(Ok(c)) = commands.next().await {
        if let Some(payload) = c.payload {
            let payload = serde_json::to_value(payload).unwrap_or_default();
            record(&tally.latencies, tally.epoch, &payload);
        }
        if let Some(acked) = &tally.acked {
            let mut req = tonic::Request::new(proto::AckCommandRequest {
                id: c.id.clone(),
                status: Some("succeeded".into()),
                ..Default::default()
            });
            req.metadata_mut().insert("authorization", bearer.clone());
            if client.ack_command(req).await.is_ok() {
                acked.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
