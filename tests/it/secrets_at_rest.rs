//! Secrets never leak: a full run of the real `swrm serve` binary at the most
//! verbose log level issues every kind of secret (provisioning tokens, device
//! keys, enrollment codes, API keys, a webhook signing secret, signed-URL
//! signatures under a configured signing key), uses them right and wrong, and
//! then every one of them is looked for, whole or in part, in the server's
//! output (logs, panics), in every answer that did not issue it (error
//! bodies above all, gRPC statuses too) and in the database (the SQLite file
//! and its WAL, or `pg_dump`) and data folder after a clean shutdown. The
//! hashed kinds must be found there as their SHA-256 instead.
//!
//! The one exception is the owner key's single line on stdout at first start,
//! its one intended display.

use crate::common::{self, Bearer, images::jpeg};

use axum::{
    Router, extract::State, http::HeaderMap, http::StatusCode as AxumStatus, routing::post,
};
use rand::{Rng, distr::Alphanumeric};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use swrm::{
    auth::secret::{self, SecretKind},
    proto,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    task::JoinHandle,
};

/// Shortest run of a secret's random part that counts as a leak: longer than
/// the 4 random characters of the listed display prefix (`swrm_ak_XXXX`).
const WINDOW: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ProvisioningToken,
    DeviceKey,
    EnrollmentCode,
    ApiKey,
    WebhookSecret,
    WebhookSignature,
    UrlSigningKey,
    UrlSignature,
    /// Well-formed (valid checksum) but never issued.
    Forged,
    /// Not well-formed: a typo or truncation of a real secret, or garbage.
    Malformed,
}

impl Kind {
    /// Stored only as SHA-256 (so the hash must be in the database).
    fn hashed(self) -> bool {
        matches!(
            self,
            Kind::ProvisioningToken | Kind::DeviceKey | Kind::EnrollmentCode | Kind::ApiKey
        )
    }

    /// May be in the database in clear. The webhook signing secret is kept
    /// to sign each delivery (HMAC needs the key itself), as
    /// `core::webhooks::create` says; see the report in the test output.
    fn clear_at_rest_by_design(self) -> bool {
        self == Kind::WebhookSecret
    }

    /// Shown in exactly one answer, the one that issued it.
    fn shown_once(self) -> bool {
        self.hashed() || self == Kind::WebhookSecret
    }
}

struct Secret {
    kind: Kind,
    value: String,
    /// The exchange that handed it out, if one did.
    issued_in: Option<usize>,
}

impl Secret {
    /// The random part, without the kind's prefix.
    fn random_part(&self) -> &str {
        ["swrm_pt_", "swrm_dk_", "swrm_ec_", "swrm_ak_", "whsec_"]
            .iter()
            .find_map(|p| self.value.strip_prefix(p))
            .unwrap_or(&self.value)
    }
}

/// One request and its answer.
struct Exchange {
    what: String,
    status: u16,
    /// gRPC error or HTTP status >= 400.
    error: bool,
    body: String,
}

/// Every run of [`WINDOW`] characters of the chosen secrets' random parts
/// (so a whole secret, with or without its prefix, or a long enough piece
/// of one), found in one pass over a haystack.
struct Scanner {
    windows: HashMap<Vec<u8>, Vec<usize>>,
}

impl Scanner {
    fn new(secrets: &[Secret], include: impl Fn(&Secret) -> bool) -> Self {
        let mut windows: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
        for (i, s) in secrets.iter().enumerate().filter(|(_, s)| include(s)) {
            let part = s.random_part().as_bytes();
            assert!(
                part.len() >= WINDOW,
                "secret too short to scan: {}",
                s.value
            );
            for w in part.windows(WINDOW) {
                let owners = windows.entry(w.to_vec()).or_default();
                if !owners.contains(&i) {
                    owners.push(i);
                }
            }
        }
        Self { windows }
    }

    /// Secret index → first offset where part of it occurs.
    fn scan(&self, hay: &[u8]) -> BTreeMap<usize, usize> {
        let mut found = BTreeMap::new();
        if hay.len() < WINDOW {
            return found;
        }
        for (at, w) in hay.windows(WINDOW).enumerate() {
            if !w[0].is_ascii_alphanumeric() {
                continue;
            }
            if let Some(owners) = self.windows.get(w) {
                for &i in owners {
                    found.entry(i).or_insert(at);
                }
            }
        }
        found
    }
}

fn excerpt(hay: &[u8], at: usize) -> String {
    let from = at.saturating_sub(160);
    let to = (at + 200).min(hay.len());
    String::from_utf8_lossy(&hay[from..to]).into_owned()
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The server's output so far, line by line (stdout and stderr).
type Lines = Arc<Mutex<Vec<String>>>;

fn collect<R: AsyncRead + Unpin + Send + 'static>(pipe: R, into: Lines) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => into
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&line).trim_end().to_owned()),
            }
        }
    })
}

/// Waits until a line satisfies `pick`, answering what it picked.
async fn wait_for<T>(lines: &Lines, what: &str, pick: impl Fn(&str) -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = lines.lock().unwrap().iter().find_map(|l| pick(l)) {
            return found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no {what} in the server output: {:?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A webhook receiver on port 0 keeping each POST's signature header.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let signatures = Arc::new(Mutex::new(Vec::new()));
    async fn hook(State(s): State<Arc<Mutex<Vec<String>>>>, headers: HeaderMap) -> AxumStatus {
        let signature = headers
            .get("x-swrm-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        s.lock().unwrap().push(signature);
        AxumStatus::OK
    }
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(signatures.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, signatures)
}

/// The secret with one character of its random part changed (so its
/// checksum no longer matches).
fn typo(value: &str) -> String {
    let mut bytes = value.as_bytes().to_vec();
    let i = 8 + 5;
    bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
    String::from_utf8(bytes).unwrap()
}

fn random_alnum(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// The `signature` query parameter of a signed URL.
fn signature_of(url: &str) -> String {
    let url = reqwest::Url::parse(url).expect("an absolute signed URL");
    url.query_pairs()
        .find(|(k, _)| k == "signature")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no signature in {url}"))
}

struct Flow {
    base: String,
    http: reqwest::Client,
    secrets: Vec<Secret>,
    exchanges: Vec<Exchange>,
}

impl Flow {
    fn secret(&mut self, kind: Kind, value: &str, issued_in: Option<usize>) -> String {
        self.secrets.push(Secret {
            kind,
            value: value.to_owned(),
            issued_in,
        });
        value.to_owned()
    }

    /// A secret at `pointer` in the last answer's JSON.
    fn issued(&mut self, kind: Kind, body: &Value, pointer: &str) -> String {
        let value = body
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no {pointer} in {body}"))
            .to_owned();
        let at = self.exchanges.len() - 1;
        self.secret(kind, &value, Some(at))
    }

    fn request(&self, method: Method, path: &str, key: Option<&str>) -> RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let req = self.http.request(method, url);
        match key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    async fn send(&mut self, what: &str, req: RequestBuilder) -> (StatusCode, Value) {
        let res = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = res.status();
        let bytes = res.bytes().await.expect("body");
        let body = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        self.exchanges.push(Exchange {
            what: what.to_owned(),
            status: status.as_u16(),
            error: status.as_u16() >= 400,
            body,
        });
        (status, json)
    }

    async fn call(
        &mut self,
        what: &str,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        // 0: any 4xx.
        expect: u16,
    ) -> Value {
        let mut req = self.request(method, path, key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let (status, json) = self.send(what, req).await;
        if expect == 0 {
            // Any refusal.
            assert!(status.is_client_error(), "{what}: {status} {json}");
        } else {
            assert_eq!(status.as_u16(), expect, "{what}: {json}");
        }
        if status.as_u16() == 401 {
            assert_eq!(json["error"]["code"], "unauthenticated", "{what}: {json}");
        }
        json
    }

    async fn get(&mut self, what: &str, path: &str, key: Option<&str>, expect: u16) -> Value {
        self.call(what, Method::GET, path, key, None, expect).await
    }

    async fn post(
        &mut self,
        what: &str,
        path: &str,
        key: Option<&str>,
        body: Value,
        expect: u16,
    ) -> Value {
        self.call(what, Method::POST, path, key, Some(body), expect)
            .await
    }

    /// A raw (not JSON-encoded) body.
    async fn post_raw(&mut self, what: &str, path: &str, key: Option<&str>, body: &str) -> u16 {
        let req = self
            .request(Method::POST, path, key)
            .header("content-type", "application/json")
            .body(body.to_owned());
        self.send(what, req).await.0.as_u16()
    }

    async fn heartbeat(&mut self, what: &str, key: &str, expect: u16) {
        self.post(
            what,
            "/api/public/v1/heartbeat",
            Some(key),
            json!({"firmware_version": "1.0.0", "uptime_seconds": 42}),
            expect,
        )
        .await;
    }

    fn grpc(&mut self, what: &str, result: Result<(), tonic::Status>, expect: tonic::Code) {
        let status = result.expect_err(what);
        assert_eq!(status.code(), expect, "{what}: {status:?}");
        self.exchanges.push(Exchange {
            what: what.to_owned(),
            status: status.code() as u16,
            error: true,
            body: format!("{status:?}"),
        });
    }
}

/// The server's database and data folder, as bytes to search: (name, bytes).
async fn dump_at_rest(data_dir: &Path, database_url: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push((
                    path.display().to_string(),
                    std::fs::read(&path).unwrap_or_default(),
                ));
            }
        }
    }
    walk(data_dir, &mut out);
    match database_url {
        None => {
            let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
            assert!(
                names.iter().any(|n| n.ends_with("swrm.db")),
                "the SQLite file is in the data folder: {names:?}"
            );
        }
        Some(url) => {
            let url = reqwest::Url::parse(url).expect("a PostgreSQL URL");
            let db = url.path().trim_start_matches('/').to_owned();
            let mut cmd = Command::new("/usr/bin/pg_dump");
            cmd.arg("-h")
                .arg(url.host_str().unwrap_or("127.0.0.1"))
                .arg("-p")
                .arg(url.port().unwrap_or(5432).to_string())
                .arg("-U")
                .arg(if url.username().is_empty() {
                    "postgres"
                } else {
                    url.username()
                })
                .arg(&db);
            if let Some(password) = url.password() {
                cmd.env("PGPASSWORD", password);
            }
            let dumped = cmd.output().await.expect("pg_dump runs");
            assert!(
                dumped.status.success(),
                "pg_dump {db}: {}",
                String::from_utf8_lossy(&dumped.stderr)
            );
            assert!(
                String::from_utf8_lossy(&dumped.stdout).contains("CREATE TABLE"),
                "a real dump"
            );
            out.push((format!("pg_dump {db}"), dumped.stdout));
        }
    }
    out
}

#[tokio::test]
async fn secrets_never_appear_in_logs_errors_or_the_database_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = common::fresh_postgres_url().await;
    let signing_key = random_alnum(48);

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_swrm"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("SWRM_LOG", "debug")
        .env("SWRM_PAIR_RATE_PER_MINUTE", "0")
        .env("SWRM_DEVICE_RATE_PER_SECOND", "0")
        .env("SWRM_ORG_KEY_RATE_PER_SECOND", "0")
        .env("SWRM_URL_SIGNING_KEY", &signing_key)
        .env_remove("SWRM_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(url) = &database_url {
        cmd.arg("--database-url").arg(url);
    }
    let mut child: Child = cmd.spawn().expect("swrm starts");
    let stdout: Lines = Arc::default();
    let stderr: Lines = Arc::default();
    let readers = [
        collect(child.stdout.take().unwrap(), stdout.clone()),
        collect(child.stderr.take().unwrap(), stderr.clone()),
    ];
    let address = wait_for(&stderr, "listening line", |l| {
        let v: Value = serde_json::from_str(l).ok()?;
        v["fields"]["address"].as_str().map(str::to_owned)
    })
    .await;
    let owner_key = wait_for(&stdout, "owner key", |l| {
        l.split_whitespace()
            .find(|w| w.starts_with("swrm_ak_"))
            .map(str::to_owned)
    })
    .await;

    let mut f = Flow {
        base: format!("http://{address}"),
        http: reqwest::Client::new(),
        secrets: Vec::new(),
        exchanges: Vec::new(),
    };
    f.secret(Kind::ApiKey, &owner_key, None);
    f.secret(Kind::UrlSigningKey, &signing_key, None);
    let owner = Some(owner_key.as_str());

    // API keys: one of each role, and one deleted.
    let mut keys = HashMap::new();
    for role in ["admin", "viewer", "owner"] {
        let b = f
            .post(
                &format!("create {role} key"),
                "/api/v1/api-keys",
                owner,
                json!({"name": format!("{role} key"), "role": role}),
                201,
            )
            .await;
        keys.insert(role, f.issued(Kind::ApiKey, &b, "/api_key"));
    }
    let (admin, viewer, owner2) = (&keys["admin"], &keys["viewer"], &keys["owner"]);
    let (admin, viewer) = (Some(admin.as_str()), Some(viewer.as_str()));
    let b = f
        .post(
            "create a key to delete",
            "/api/v1/api-keys",
            Some(owner2),
            json!({"name": "temp", "role": "viewer"}),
            201,
        )
        .await;
    let deleted_key = f.issued(Kind::ApiKey, &b, "/api_key");
    let deleted_id = b["id"].as_str().unwrap().to_owned();
    f.get(
        "viewer lists devices (before delete)",
        "/api/v1/devices",
        Some(&deleted_key),
        200,
    )
    .await;
    f.call(
        "delete api key",
        Method::DELETE,
        &format!("/api/v1/api-keys/{deleted_id}"),
        owner,
        None,
        204,
    )
    .await;
    f.get("list api keys", "/api/v1/api-keys", admin, 200).await;

    // Devices: one alone, three in a batch.
    let b = f
        .post(
            "create device",
            "/api/v1/devices",
            admin,
            json!({"name": "cam-a"}),
            201,
        )
        .await;
    let id_a = b["device"]["id"].as_str().unwrap().to_owned();
    let pt_a = f.issued(Kind::ProvisioningToken, &b, "/provisioning_token");
    let b = f
        .post(
            "batch create devices",
            "/api/v1/devices:batchCreate",
            admin,
            json!({"requests": [
                {"name": "cam-b", "serial_number": "SN-B"},
                {"name": "cam-c", "serial_number": "SN-C"},
                {"name": "cam-d"},
            ]}),
            201,
        )
        .await;
    let id_b = b["devices"][0]["device"]["id"].as_str().unwrap().to_owned();
    let id_d = b["devices"][2]["device"]["id"].as_str().unwrap().to_owned();
    let pt_b = f.issued(Kind::ProvisioningToken, &b, "/devices/0/provisioning_token");
    let pt_c = f.issued(Kind::ProvisioningToken, &b, "/devices/1/provisioning_token");
    let pt_d = f.issued(Kind::ProvisioningToken, &b, "/devices/2/provisioning_token");

    // Pairing: the token in the body, and as the bearer.
    const PAIR: &str = "/api/public/v1/pair";
    let b = f
        .post(
            "pair (body)",
            PAIR,
            None,
            json!({"provisioning_token": pt_a}),
            200,
        )
        .await;
    let dk_a = f.issued(Kind::DeviceKey, &b, "/api_key");
    let b = f
        .post(
            "pair (bearer)",
            PAIR,
            Some(&pt_b),
            json!({"serial_number": "SN-B"}),
            200,
        )
        .await;
    let dk_b = f.issued(Kind::DeviceKey, &b, "/api_key");
    let b = f
        .post(
            "pair (body, with details)",
            PAIR,
            None,
            json!({"provisioning_token": pt_c, "hardware_model": "jetson", "firmware_version": "1.0.0"}),
            200,
        )
        .await;
    let dk_c = f.issued(Kind::DeviceKey, &b, "/api_key");
    // cam-d: a new token replaces the first; the new one stays unused.
    let b = f
        .post(
            "new provisioning token",
            &format!("/api/v1/devices/{id_d}/provisioning-token"),
            admin,
            json!({}),
            201,
        )
        .await;
    let pt_d2 = f.issued(Kind::ProvisioningToken, &b, "/provisioning_token");

    // Used, replaced and wrong-kind tokens.
    f.post(
        "pair with a used token",
        PAIR,
        None,
        json!({"provisioning_token": pt_a}),
        401,
    )
    .await;
    f.post(
        "pair with a used token (bearer)",
        PAIR,
        Some(&pt_b),
        json!({}),
        401,
    )
    .await;
    f.post(
        "pair with a replaced token",
        PAIR,
        None,
        json!({"provisioning_token": pt_d}),
        401,
    )
    .await;
    f.post(
        "pair with a device key as token",
        PAIR,
        None,
        json!({"provisioning_token": dk_a}),
        0,
    )
    .await;

    // Device traffic.
    for (what, key) in [("a", &dk_a), ("b", &dk_b), ("c", &dk_c)] {
        f.heartbeat(&format!("heartbeat {what}"), key, 200).await;
        f.post(
            &format!("sensors {what}"),
            "/api/public/v1/sensors",
            Some(key),
            json!({"readings": [{"sensor_type": "temperature", "value": 21.5, "unit": "C"}]}),
            200,
        )
        .await;
    }
    f.get("config", "/api/public/v1/config", Some(&dk_a), 200)
        .await;

    // Rotation (no grace) and revocation.
    let b = f
        .post(
            "rotate key",
            &format!("/api/v1/devices/{id_a}/rotate-key"),
            admin,
            json!({}),
            200,
        )
        .await;
    let dk_a2 = f.issued(Kind::DeviceKey, &b, "/api_key");
    f.heartbeat("heartbeat with the rotated-away key", &dk_a, 401)
        .await;
    f.heartbeat("heartbeat with the new key", &dk_a2, 200).await;
    f.post(
        "revoke key",
        &format!("/api/v1/devices/{id_b}/revoke-key"),
        admin,
        json!({}),
        200,
    )
    .await;
    f.heartbeat("heartbeat with a revoked key", &dk_b, 401)
        .await;
    f.post(
        "sensors with a revoked key",
        "/api/public/v1/sensors",
        Some(&dk_b),
        json!({"readings": [{"sensor_type": "temperature", "value": 1}]}),
        401,
    )
    .await;
    let b = f
        .post(
            "re-provision a revoked device",
            &format!("/api/v1/devices/{id_b}/provisioning-token"),
            owner,
            json!({}),
            201,
        )
        .await;
    let pt_b2 = f.issued(Kind::ProvisioningToken, &b, "/provisioning_token");
    let b = f
        .post(
            "pair again",
            PAIR,
            None,
            json!({"provisioning_token": pt_b2}),
            200,
        )
        .await;
    let dk_b2 = f.issued(Kind::DeviceKey, &b, "/api_key");
    f.heartbeat("heartbeat after re-pairing", &dk_b2, 200).await;

    // A webhook, and an alert that makes it sign a delivery.
    let (hook_url, signatures) = receiver().await;
    let b = f
        .post(
            "create webhook",
            "/api/v1/webhooks",
            admin,
            json!({"url": hook_url, "description": "ops"}),
            201,
        )
        .await;
    let webhook_secret = f.issued(Kind::WebhookSecret, &b, "/secret");
    f.get("list webhooks", "/api/v1/webhooks", viewer, 200)
        .await;
    f.post(
        "create alert rule",
        "/api/v1/alert-rules",
        admin,
        json!({"name": "hot", "sensor_type": "temperature", "op": ">", "threshold": 50}),
        201,
    )
    .await;
    f.post(
        "sensors that open an alert",
        "/api/public/v1/sensors",
        Some(&dk_c),
        json!({"readings": [{"sensor_type": "temperature", "value": 60}]}),
        200,
    )
    .await;

    // Enrollment: body and bearer, a duplicate serial, a deleted code.
    const ENROLL: &str = "/api/public/v1/enroll";
    let b = f
        .post(
            "create enrollment code",
            "/api/v1/enrollment-codes",
            admin,
            json!({"name": "factory", "max_devices": 10}),
            201,
        )
        .await;
    let ec = f.issued(Kind::EnrollmentCode, &b, "/code");
    let ec_id = b["id"].as_str().unwrap().to_owned();
    let b = f
        .post(
            "enroll (body)",
            ENROLL,
            None,
            json!({"enrollment_code": ec, "serial_number": "SN-E1"}),
            201,
        )
        .await;
    let dk_e1 = f.issued(Kind::DeviceKey, &b, "/api_key");
    let b = f
        .post(
            "enroll (bearer)",
            ENROLL,
            Some(&ec),
            json!({"serial_number": "SN-E2"}),
            201,
        )
        .await;
    let dk_e2 = f.issued(Kind::DeviceKey, &b, "/api_key");
    f.post(
        "enroll a serial twice",
        ENROLL,
        None,
        json!({"enrollment_code": ec, "serial_number": "SN-E1"}),
        409,
    )
    .await;
    f.heartbeat("heartbeat enrolled 1", &dk_e1, 200).await;
    f.heartbeat("heartbeat enrolled 2", &dk_e2, 200).await;
    f.get(
        "list enrollment codes",
        "/api/v1/enrollment-codes",
        viewer,
        200,
    )
    .await;
    let b = f
        .post(
            "create a second enrollment code",
            "/api/v1/enrollment-codes",
            owner,
            json!({"name": "line-2", "max_devices": 1}),
            201,
        )
        .await;
    let ec2 = f.issued(Kind::EnrollmentCode, &b, "/code");
    f.call(
        "revoke enrollment code",
        Method::POST,
        &format!("/api/v1/enrollment-codes/{ec_id}/revoke"),
        admin,
        Some(json!({})),
        204,
    )
    .await;
    f.post(
        "enroll with a deleted code",
        ENROLL,
        None,
        json!({"enrollment_code": ec, "serial_number": "SN-E3"}),
        401,
    )
    .await;
    f.post(
        "enroll with a deleted code (bearer)",
        ENROLL,
        Some(&ec),
        json!({"serial_number": "SN-E4"}),
        401,
    )
    .await;

    // A capture and its signed image URL.
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(jpeg(64, 48, 2000, 7))
                .file_name("frame.jpg")
                .mime_str("image/jpeg")
                .unwrap(),
        )
        .text(
            "meta",
            r#"{"detections":[{"label":"person","confidence":0.9,"bbox":[1,2,30,40]}]}"#,
        );
    let req = f
        .request(Method::POST, "/api/public/v1/captures", Some(&dk_c))
        .multipart(form);
    let (status, b) = f.send("upload capture", req).await;
    assert_eq!(status, 201, "{b}");
    let capture_id = b["capture_id"].as_str().unwrap().to_owned();
    let b = f
        .get(
            "get capture",
            &format!("/api/v1/captures/{capture_id}"),
            viewer,
            200,
        )
        .await;
    let image_url = b["image_url"].as_str().unwrap().to_owned();
    let at = f.exchanges.len() - 1;
    f.secret(Kind::UrlSignature, &signature_of(&image_url), Some(at));
    f.get("download the image", &image_url, None, 200).await;
    let signature = signature_of(&image_url);
    let flipped = if signature.starts_with('0') { "1" } else { "0" };
    let tampered = image_url.replace(&signature, &format!("{flipped}{}", &signature[1..]));
    assert_ne!(tampered, image_url);
    f.get("download with a tampered signature", &tampered, None, 403)
        .await;

    // A model deployed to cam-a: its signed download URL.
    let form = reqwest::multipart::Form::new()
        .text("name", "detector")
        .text("version", "1")
        .text("format", "onnx")
        .part(
            "file",
            reqwest::multipart::Part::bytes(vec![7u8; 4096]).file_name("model.onnx"),
        );
    let req = f
        .request(Method::POST, "/api/v1/models", owner)
        .multipart(form);
    let (status, b) = f.send("upload model", req).await;
    assert_eq!(status, 201, "{b}");
    let model_id = b["id"].as_str().unwrap().to_owned();
    f.post(
        "deploy model",
        "/api/v1/deployments",
        admin,
        json!({"model_id": model_id, "device_ids": [id_a]}),
        201,
    )
    .await;
    let b = f
        .get(
            "poll commands",
            "/api/public/v1/commands?wait=0",
            Some(&dk_a2),
            200,
        )
        .await;
    let command_id = b["commands"][0]["id"].as_str().unwrap().to_owned();
    let b = f
        .get("get model", "/api/public/v1/model", Some(&dk_a2), 200)
        .await;
    let download_url = b["download_url"].as_str().unwrap().to_owned();
    let at = f.exchanges.len() - 1;
    f.secret(Kind::UrlSignature, &signature_of(&download_url), Some(at));
    f.get("download the model", &download_url, None, 200).await;
    f.post(
        "ack command",
        &format!("/api/public/v1/commands/{command_id}/ack"),
        Some(&dk_a2),
        json!({"status": "succeeded"}),
        200,
    )
    .await;

    // Well-formed secrets that were never issued.
    let forged: Vec<String> = SecretKind::ALL
        .into_iter()
        .map(|k| {
            let value = secret::generate(k).plaintext;
            f.secret(Kind::Forged, &value, None)
        })
        .collect();
    let [fpt, fdk, fec, fak] = [&forged[0], &forged[1], &forged[2], &forged[3]];
    f.heartbeat("heartbeat with a forged device key", fdk, 401)
        .await;
    f.get(
        "list devices with a forged api key",
        "/api/v1/devices",
        Some(fak),
        401,
    )
    .await;
    f.post(
        "pair with a forged token",
        PAIR,
        None,
        json!({"provisioning_token": fpt}),
        401,
    )
    .await;
    f.post(
        "pair with a forged token (bearer)",
        PAIR,
        Some(fpt),
        json!({}),
        401,
    )
    .await;
    f.post(
        "enroll with a forged code",
        ENROLL,
        None,
        json!({"enrollment_code": fec, "serial_number": "SN-F"}),
        401,
    )
    .await;
    f.get(
        "list devices with a deleted api key",
        "/api/v1/devices",
        Some(&deleted_key),
        401,
    )
    .await;

    // Malformed: typos and truncations of real secrets, garbage. One made
    // from a real secret may show where that one was issued.
    let garbage = format!("swrm_dk_{}", random_alnum(40));
    let malformed = [
        (typo(&dk_a2), Some(&dk_a2)),
        (dk_c[..dk_c.len() - 1].to_owned(), Some(&dk_c)),
        (typo(admin.unwrap()), Some(&keys["admin"])),
        (typo(&pt_d2), Some(&pt_d2)),
        (typo(&ec2), Some(&ec2)),
        (garbage, None),
        (format!("{dk_e1}{}", random_alnum(3)), Some(&dk_e1)),
    ];
    let malformed: Vec<String> = malformed
        .into_iter()
        .map(|(m, from)| {
            let issued_in = from.and_then(|from| {
                f.secrets
                    .iter()
                    .find(|s| &s.value == from)
                    .and_then(|s| s.issued_in)
            });
            f.secret(Kind::Malformed, &m, issued_in)
        })
        .collect();
    f.heartbeat("heartbeat with a typo", &malformed[0], 401)
        .await;
    f.heartbeat("heartbeat with a truncated key", &malformed[1], 401)
        .await;
    f.get(
        "list devices with a typo",
        "/api/v1/devices",
        Some(&malformed[2]),
        401,
    )
    .await;
    f.post(
        "pair with a typo",
        PAIR,
        None,
        json!({"provisioning_token": malformed[3]}),
        401,
    )
    .await;
    f.post(
        "enroll with a typo",
        ENROLL,
        Some(&malformed[4]),
        json!({"serial_number": "SN-T"}),
        401,
    )
    .await;
    f.heartbeat("heartbeat with garbage", &malformed[5], 401)
        .await;
    f.heartbeat("heartbeat with a key and a tail", &malformed[6], 401)
        .await;
    for (what, value) in [
        ("heartbeat, another auth scheme", format!("Token {dk_b}")),
        ("heartbeat, basic auth", format!("Basic {dk_a2}")),
        ("heartbeat, bare revoked key", dk_b.clone()),
    ] {
        let req = f
            .request(Method::POST, "/api/public/v1/heartbeat", None)
            .header("authorization", value)
            .json(&json!({}));
        let (status, body) = f.send(what, req).await;
        assert_eq!(status, 401, "{what}: {body}");
    }

    // Right secrets in the wrong places.
    f.heartbeat("heartbeat with an api key", admin.unwrap(), 0)
        .await;
    f.get(
        "admin route with a device key",
        "/api/v1/devices",
        Some(&dk_a2),
        0,
    )
    .await;
    f.heartbeat("heartbeat with a provisioning token", &pt_d2, 0)
        .await;
    f.get(
        "admin route with an enrollment code",
        "/api/v1/devices",
        Some(&ec2),
        0,
    )
    .await;
    f.post(
        "enroll with a provisioning token",
        ENROLL,
        None,
        json!({"enrollment_code": pt_d2, "serial_number": "SN-W"}),
        0,
    )
    .await;

    // Bad input with good keys: 400, 403, 404.
    let status = f
        .post_raw(
            "sensors, malformed JSON",
            "/api/public/v1/sensors",
            Some(&dk_a2),
            r#"{"readings": ["#,
        )
        .await;
    assert_eq!(status, 400);
    f.post(
        "sensors, unknown type",
        "/api/public/v1/sensors",
        Some(&dk_a2),
        json!({"readings": [{"sensor_type": "no_such_sensor", "value": 1}]}),
        400,
    )
    .await;
    f.post(
        "pair, wrong type",
        PAIR,
        None,
        json!({"provisioning_token": 12345}),
        0,
    )
    .await;
    let status = f
        .post_raw(
            "pair, the token as a bare JSON string",
            PAIR,
            None,
            &serde_json::to_string(&pt_d2).unwrap(),
        )
        .await;
    assert!((400..500).contains(&status), "{status}");
    f.post(
        "enroll without a serial",
        ENROLL,
        Some(&ec2),
        json!({"enrollment_code": ec2}),
        400,
    )
    .await;
    f.post(
        "viewer creates a device",
        "/api/v1/devices",
        viewer,
        json!({"name": "x"}),
        403,
    )
    .await;
    f.post(
        "viewer rotates a key",
        &format!("/api/v1/devices/{id_a}/rotate-key"),
        viewer,
        json!({}),
        403,
    )
    .await;
    f.post(
        "viewer creates an api key",
        "/api/v1/api-keys",
        viewer,
        json!({"name": "y", "role": "owner"}),
        403,
    )
    .await;
    let nobody = uuid::Uuid::now_v7();
    f.get(
        "unknown device",
        &format!("/api/v1/devices/{nobody}"),
        admin,
        404,
    )
    .await;
    f.post(
        "rotate an unknown device's key",
        &format!("/api/v1/devices/{nobody}/rotate-key"),
        admin,
        json!({}),
        404,
    )
    .await;
    f.post(
        "labels for an unknown capture",
        "/api/public/v1/labels",
        Some(&dk_a2),
        json!({"capture_id": nobody, "detections": []}),
        404,
    )
    .await;
    f.get("unknown route", "/api/v1/no-such-thing", admin, 404)
        .await;

    // gRPC: the same refusals, as statuses.
    let channel = tonic::transport::Channel::from_shared(f.base.clone())
        .unwrap()
        .connect()
        .await
        .expect("gRPC connects");
    let device = |key: &str| {
        proto::device_service_client::DeviceServiceClient::with_interceptor(
            channel.clone(),
            Bearer::new(Some(key)),
        )
    };
    let r = device(&dk_b)
        .heartbeat(proto::HeartbeatRequest::default())
        .await
        .map(drop);
    f.grpc(
        "gRPC heartbeat with a revoked key",
        r,
        tonic::Code::Unauthenticated,
    );
    let r = device(&malformed[0])
        .heartbeat(proto::HeartbeatRequest::default())
        .await
        .map(drop);
    f.grpc(
        "gRPC heartbeat with a typo",
        r,
        tonic::Code::Unauthenticated,
    );
    let r = proto::device_service_client::DeviceServiceClient::new(channel.clone())
        .pair(proto::PairRequest {
            provisioning_token: pt_a.clone(),
            ..Default::default()
        })
        .await
        .map(drop);
    f.grpc(
        "gRPC pair with a used token",
        r,
        tonic::Code::Unauthenticated,
    );
    let r = proto::admin_service_client::AdminServiceClient::with_interceptor(
        channel.clone(),
        Bearer::new(viewer),
    )
    .create_api_key(proto::CreateApiKeyRequest {
        name: "z".into(),
        role: "owner".into(),
    })
    .await
    .map(drop);
    f.grpc(
        "gRPC viewer creates an api key",
        r,
        tonic::Code::PermissionDenied,
    );
    let r = proto::admin_service_client::AdminServiceClient::with_interceptor(
        channel.clone(),
        Bearer::new(Some(&deleted_key)),
    )
    .list_devices(proto::ListDevicesRequest::default())
    .await
    .map(drop);
    f.grpc(
        "gRPC with a deleted api key",
        r,
        tonic::Code::Unauthenticated,
    );

    // The webhook delivery, signed with the secret.
    let started = Instant::now();
    let webhook_signature = loop {
        if let Some(s) = signatures.lock().unwrap().first().cloned() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no webhook delivery"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let v1 = webhook_signature
        .split_once(",v1=")
        .map(|(_, v)| v.to_owned())
        .unwrap_or_else(|| panic!("a signature header: {webhook_signature}"));
    f.secret(Kind::WebhookSignature, &v1, None);
    f.get("metrics", "/metrics", None, 200).await;

    // Clean shutdown; all output read to the end.
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("stops within 15 s of SIGTERM")
        .unwrap();
    for r in readers {
        tokio::time::timeout(Duration::from_secs(5), r)
            .await
            .expect("output closed")
            .unwrap();
    }
    assert!(status.success(), "clean exit on SIGTERM: {status}");

    let Flow {
        secrets, exchanges, ..
    } = f;
    let owner = owner_key.as_str();
    let mut leaks = Vec::new();
    let describe = |i: usize| {
        let s = &secrets[i];
        format!("{:?} {}", s.kind, s.value)
    };

    // (1) The output: the owner key's line once on stdout, nothing else.
    let stdout = stdout.lock().unwrap().clone();
    let stderr = stderr.lock().unwrap().clone();
    let shown: Vec<&String> = stdout.iter().filter(|l| l.contains(owner)).collect();
    assert_eq!(shown.len(), 1, "the owner key printed once: {stdout:?}");
    assert!(shown[0].starts_with("Owner API key"), "{}", shown[0]);
    let log_lines: Vec<(&str, &String)> = stdout
        .iter()
        .filter(|l| !l.contains(owner))
        .map(|l| ("stdout", l))
        .chain(stderr.iter().map(|l| ("stderr", l)))
        .collect();
    assert!(
        log_lines.len() > exchanges.len(),
        "debug logs: {} lines",
        log_lines.len()
    );
    assert!(
        !stderr.iter().any(|l| l.contains("panicked")),
        "no panic in the server"
    );
    let everything = Scanner::new(&secrets, |_| true);
    for (pipe, line) in &log_lines {
        for (i, at) in everything.scan(line.as_bytes()) {
            leaks.push(format!(
                "LOG ({pipe}) has {}: {}",
                describe(i),
                excerpt(line.as_bytes(), at)
            ));
        }
    }

    // (2) Answers: a secret only in the answer that issued it; never in an
    // error.
    for (n, e) in exchanges.iter().enumerate() {
        for (i, at) in everything.scan(e.body.as_bytes()) {
            let s = &secrets[i];
            let allowed = !e.error
                && (s.issued_in == Some(n)
                    || (s.kind == Kind::UrlSignature && s.issued_in.is_some()));
            if !allowed {
                leaks.push(format!(
                    "ANSWER #{n} `{}` ({}) has {}: {}",
                    e.what,
                    e.status,
                    describe(i),
                    excerpt(e.body.as_bytes(), at)
                ));
            }
        }
    }
    for (i, s) in secrets.iter().enumerate() {
        if let Some(n) = s.issued_in.filter(|_| s.kind.shown_once()) {
            let issued = &exchanges[n];
            assert!(issued.body.contains(&s.value), "{} issued", describe(i));
        }
    }

    // (3) At rest: database and data folder, after shutdown.
    let at_rest = dump_at_rest(dir.path(), database_url.as_deref()).await;
    let in_clear = Scanner::new(&secrets, |s| !s.kind.clear_at_rest_by_design());
    let mut clear_by_design = Vec::new();
    for (name, bytes) in &at_rest {
        for (i, at) in in_clear.scan(bytes) {
            leaks.push(format!(
                "AT REST ({name}) has {}: {}",
                describe(i),
                excerpt(bytes, at)
            ));
        }
        if bytes
            .windows(webhook_secret.len())
            .any(|w| w == webhook_secret.as_bytes())
        {
            clear_by_design.push(name.clone());
        }
    }
    if !clear_by_design.is_empty() {
        eprintln!(
            "note: the webhook signing secret is stored in clear (it signs each delivery) in {clear_by_design:?}"
        );
    }

    // (4) The dump is meaningful: the hashed kinds are there as SHA-256.
    let dump: Vec<u8> = at_rest
        .iter()
        .flat_map(|(_, b)| b.iter().copied())
        .collect();
    let dump = String::from_utf8_lossy(&dump);
    for kind in [
        Kind::ProvisioningToken,
        Kind::DeviceKey,
        Kind::EnrollmentCode,
        Kind::ApiKey,
    ] {
        let hashes: Vec<&Secret> = secrets
            .iter()
            .filter(|s| s.kind == kind && s.issued_in.is_some())
            .collect();
        assert!(
            hashes.iter().any(|s| dump.contains(&sha256_hex(&s.value))),
            "no {kind:?} stored as its SHA-256 in the dump ({} issued)",
            hashes.len()
        );
    }
    assert!(
        dump.contains(&sha256_hex(owner)),
        "the owner key's hash is stored"
    );

    assert!(
        leaks.is_empty(),
        "{} leak(s) of {} secrets over {} exchanges and {} log lines:\n{}",
        leaks.len(),
        secrets.len(),
        exchanges.len(),
        log_lines.len(),
        leaks.join("\n")
    );
}
