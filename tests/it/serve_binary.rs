//! `swrm serve` as a user runs it: first start prints the default owner key
//! once, logs one JSON line per request without secrets, stops cleanly on
//! SIGTERM, and a restart keeps the data and prints no key.

use crate::common;

use serde_json::Value;
use std::process::Stdio;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader, Lines},
    process::{Child, Command},
};

struct Running {
    child: Child,
    stdout: Lines<BufReader<tokio::process::ChildStdout>>,
    stderr: Lines<BufReader<tokio::process::ChildStderr>>,
    base: String,
}

async fn next_line<R: AsyncRead + Unpin>(lines: &mut Lines<BufReader<R>>) -> Option<String> {
    tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .expect("server output in time")
        .expect("read output")
}

async fn launch(data_dir: &std::path::Path, database_url: Option<&str>) -> Running {
    launch_with(data_dir, database_url, &[]).await
}

async fn launch_with(
    data_dir: &std::path::Path,
    database_url: Option<&str>,
    extra: &[&std::ffi::OsStr],
) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_swrm"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(extra)
        .arg("--data-dir")
        .arg(data_dir)
        .env("SWRM_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(url) = database_url {
        cmd.arg("--database-url").arg(url);
    }
    let mut child = cmd.spawn().expect("swrm starts");
    let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = next_line(&mut stderr).await.expect("a listening log line");
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("JSON log line: {line}"));
        if let Some(addr) = v["fields"]["address"].as_str() {
            break addr.to_owned();
        }
    };
    Running {
        child,
        stdout,
        stderr,
        base: format!("http://{address}"),
    }
}

async fn terminate(mut r: Running) -> Vec<String> {
    let pid = r.child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(15), r.child.wait())
        .await
        .expect("stops within 15 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let mut logs = Vec::new();
    while let Some(line) = next_line(&mut r.stderr).await {
        logs.push(line);
    }
    logs
}

#[tokio::test]
async fn first_start_prints_the_owner_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let pg = common::fresh_postgres_url().await;
    let mut first = launch(dir.path(), pg.as_deref()).await;
    let mut printed = String::new();
    while let Some(line) = next_line(&mut first.stdout).await {
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("swrm_ak_") {
            break;
        }
    }
    let key = printed
        .split_whitespace()
        .find(|w| w.starts_with("swrm_ak_"))
        .expect("owner key printed")
        .to_owned();
    assert!(printed.contains("default"));

    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/healthz", first.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let devices = http
        .get(format!("{}/api/v1/devices", first.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(devices.status(), 200);

    let logs = terminate(first).await;
    let request_line = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["route"] == "/api/v1/devices")
        .expect("a request log line");
    assert_eq!(request_line["fields"]["status"], 200);
    assert_eq!(request_line["fields"]["source_ip"], "127.0.0.1");
    assert!(request_line["fields"]["principal"].is_string());
    assert!(request_line["fields"]["latency_ms"].is_number());
    assert!(
        logs.iter().all(|l| !l.contains(&key)),
        "the key is never logged"
    );

    // Restart on the same data: no new organization, no key printed.
    let mut second = launch(dir.path(), pg.as_deref()).await;
    let devices = http
        .get(format!("{}/api/v1/devices", second.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(devices.status(), 200, "the key still works after a restart");
    let pid = second.child.id().unwrap().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    let mut rest = String::new();
    while let Some(line) = next_line(&mut second.stdout).await {
        rest.push_str(&line);
    }
    assert!(
        !rest.contains("swrm_ak_"),
        "no key on a second start: {rest}"
    );
    assert!(second.child.wait().await.unwrap().success());
}

/// Sends `signal` (`-HUP`, `-TERM`) to the server.
async fn signal(r: &Running, signal: &str) {
    let pid = r.child.id().unwrap().to_string();
    let sent = Command::new("kill")
        .args([signal, &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
}

/// Reads the server's log until a line contains `message`.
async fn log_until(r: &mut Running, message: &str) {
    while let Some(line) = next_line(&mut r.stderr).await {
        if line.contains(message) {
            return;
        }
    }
    panic!("the server stopped before logging {message:?}");
}

#[tokio::test]
async fn sighup_reloads_the_tls_certificate_and_the_server_keeps_running() {
    use crate::tls::{certificate, write_pair};
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (old, new) = (certificate(), certificate());
    write_pair(certs.path(), &old);
    let pg = common::fresh_postgres_url().await;
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let mut r = launch_with(
        dir.path(),
        pg.as_deref(),
        &[
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ],
    )
    .await;
    let port = r.base.rsplit(':').next().unwrap().to_owned();
    let get = |pem: &str| {
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
            .tls_built_in_root_certs(false)
            .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
            .build()
            .unwrap();
        let url = format!("https://localhost:{port}/livez");
        async move { client.get(url).send().await.map(|r| r.status()) }
    };
    assert_eq!(get(&old.0).await.unwrap(), 200);

    // SIGHUP with the files unchanged: noted, and the server lives on
    // (SIGHUP's default action would have ended it).
    signal(&r, "-HUP").await;
    log_until(&mut r, "SIGHUP: the TLS certificate files are unchanged").await;
    assert_eq!(get(&old.0).await.unwrap(), 200);

    write_pair(certs.path(), &new);
    signal(&r, "-HUP").await;
    log_until(&mut r, "TLS certificate reloaded").await;
    assert_eq!(get(&new.0).await.unwrap(), 200);
    assert!(get(&old.0).await.is_err(), "the old certificate is gone");
    let logs = terminate(r).await;
    assert!(logs.iter().all(|l| !l.contains("PRIVATE KEY")));
}
