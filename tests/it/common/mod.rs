//! Test harness: the real server on port 0, against real SQLite (a temporary
//! folder) or, when `SWRM_TEST_DATABASE_URL` names a PostgreSQL server, a fresh
//! database created on it for each test server.

#![allow(dead_code)]

pub mod images;

use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use std::{net::SocketAddr, sync::Arc};
use swrm::{App, Config, core::Clock, proto};
use tokio::sync::oneshot;
use tonic::{metadata::MetadataValue, service::Interceptor, transport::Channel};

pub struct TestServer {
    pub app: Arc<App>,
    /// The server's clock: manual when started with [`start_with_clock`].
    pub clock: Clock,
    pub addr: SocketAddr,
    pub base: String,
    /// Owner key of organization `default`.
    pub owner_key: String,
    pub http: reqwest::Client,
    /// `Some(url)` when running against PostgreSQL.
    pub database_url: Option<String>,
    dir: Option<tempfile::TempDir>,
    config: Config,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A fresh PostgreSQL database on the server `SWRM_TEST_DATABASE_URL` names.
pub async fn fresh_postgres_url() -> Option<String> {
    let base = std::env::var("SWRM_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    let name = format!("swrm_t_{}", uuid::Uuid::now_v7().simple());
    let admin = Database::connect(&base)
        .await
        .expect("connect to SWRM_TEST_DATABASE_URL");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    admin.close().await.ok();
    let (server, _db) = base.rsplit_once('/').expect("URL ends in /DATABASE");
    Some(format!("{server}/{name}"))
}

/// With `SWRM_TEST_LOG` set (an env filter, e.g. `warn`), the servers'
/// logs go to the test output.
fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("SWRM_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

pub async fn start_with(tune: impl FnOnce(&mut Config)) -> TestServer {
    let database_url = fresh_postgres_url().await;
    launch(database_url, None, Clock::system(), tune).await
}

/// A server on a manual clock that stands still until `s.clock.advance(..)`.
pub async fn start_with_clock(tune: impl FnOnce(&mut Config)) -> TestServer {
    let database_url = fresh_postgres_url().await;
    launch(database_url, None, Clock::manual(chrono::Utc::now()), tune).await
}

/// A second server on the same PostgreSQL database, as a scale-out replica.
/// `None` on SQLite, which is one process by design.
pub async fn start_replica(of: &TestServer) -> Option<TestServer> {
    let url = of.database_url.clone()?;
    Some(
        launch(
            Some(url),
            Some(of.owner_key.clone()),
            Clock::system(),
            |_| {},
        )
        .await,
    )
}

async fn launch(
    database_url: Option<String>,
    owner_key: Option<String>,
    clock: Clock,
    tune: impl FnOnce(&mut Config),
) -> TestServer {
    init_logs();
    let dir = tempfile::tempdir().expect("temp dir");
    launch_in(dir, database_url, owner_key, clock, tune).await
}

/// With `SWRM_TEST_S3_ENDPOINT` set (and `SWRM_TEST_S3_ACCESS_KEY`,
/// `SWRM_TEST_S3_SECRET_KEY`), blobs go to that S3 server, in a fresh bucket
/// per test server; otherwise to the filesystem store in the data folder.
fn use_test_s3(config: &mut Config) {
    let Some(endpoint) = std::env::var("SWRM_TEST_S3_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
    else {
        return;
    };
    let blobs = &mut config.blobs;
    blobs.backend = swrm::blobs::BlobBackend::S3;
    blobs.s3_endpoint = Some(endpoint);
    blobs.s3_access_key = std::env::var("SWRM_TEST_S3_ACCESS_KEY").ok();
    blobs.s3_secret_key = std::env::var("SWRM_TEST_S3_SECRET_KEY").ok();
    blobs.s3_bucket = test_bucket();
}

/// A fresh bucket name (short: see the capture key's comment).
pub fn test_bucket() -> String {
    // The last 16 hex digits of a v7 UUID are random.
    format!(
        "swrm-t-{}",
        &uuid::Uuid::now_v7().simple().to_string()[16..]
    )
}

/// Whether blobs go to S3 in this run (see [`use_test_s3`]).
pub fn on_s3() -> bool {
    std::env::var("SWRM_TEST_S3_ENDPOINT").is_ok_and(|e| !e.is_empty())
}

async fn launch_in(
    dir: tempfile::TempDir,
    database_url: Option<String>,
    owner_key: Option<String>,
    clock: Clock,
    tune: impl FnOnce(&mut Config),
) -> TestServer {
    let mut config = Config::for_data_dir(dir.path());
    config.storage.database_url = database_url.clone();
    use_test_s3(&mut config);
    tune(&mut config);
    let config_kept = config.clone();
    let (app, created) = swrm::build_with_clock(config, clock.clone())
        .await
        .expect("server builds");
    let owner_key = owner_key.unwrap_or_else(|| {
        created
            .expect("a fresh database creates org default")
            .api_key
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(swrm::serve(app.clone(), listener, async move {
        let _ = stopped.await;
    }));
    // On PostgreSQL, replicas hear each other from here on (and the
    // listener's first resync has already emptied the key cache).
    app.core.bus.until_listening().await;
    TestServer {
        app,
        clock,
        addr,
        base: format!("http://{addr}"),
        owner_key,
        http: reqwest::Client::new(),
        database_url,
        dir: Some(dir),
        config: config_kept,
        stop: Some(stop),
        served: Some(served),
    }
}

/// A REST answer: status, headers and the JSON body (`Value::Null` if empty).
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The envelope's `error.code`, asserting the envelope's shape.
    pub fn error_code(&self) -> String {
        let error = &self.body["error"];
        assert!(
            error["message"].is_string(),
            "no error envelope in {}",
            self.body
        );
        error["code"].as_str().expect("error.code").to_owned()
    }
}

impl TestServer {
    /// The server's data folder (SQLite file, filesystem blob store).
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.as_ref().expect("a data folder").path()
    }

    /// Uploads a capture as the public docs' Python snippet does: multipart
    /// part `image` (a file) and optional text part `meta`.
    pub async fn upload_capture(&self, key: &str, image: Vec<u8>, meta: Option<&str>) -> Answer {
        let part = reqwest::multipart::Part::bytes(image)
            .file_name("frame.jpg")
            .mime_str("image/jpeg")
            .unwrap();
        let mut form = reqwest::multipart::Form::new().part("image", part);
        if let Some(meta) = meta {
            form = form.text("meta", meta.to_owned());
        }
        let res = self
            .http
            .post(format!("{}/api/public/v1/captures", self.base))
            .bearer_auth(key)
            .multipart(form)
            .send()
            .await
            .expect("request sent");
        answer(res).await
    }

    /// Stops this server and starts a new one on the same database and data
    /// folder (as a restart would), with the same configuration and clock.
    pub async fn restart(mut self) -> TestServer {
        self.shut_down().await.unwrap().unwrap();
        let dir = self.dir.take().expect("a data folder");
        let config = self.config.clone();
        launch_in(
            dir,
            self.database_url.clone(),
            Some(self.owner_key.clone()),
            self.clock.clone(),
            move |c| *c = config,
        )
        .await
    }

    /// Starts shutting the server down (as SIGTERM does); the handle ends
    /// when `serve` has returned.
    pub fn shut_down(&mut self) -> tokio::task::JoinHandle<std::io::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.served.take().expect("shut down once")
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        answer(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> Answer {
        self.call(Method::GET, path, key, None).await
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: Value) -> Answer {
        self.call(Method::POST, path, key, Some(body)).await
    }

    /// An empty heartbeat with this device key.
    pub async fn heartbeat(&self, key: &str) -> Answer {
        self.post("/api/public/v1/heartbeat", Some(key), json!({}))
            .await
    }

    /// Creates a device with the owner key; returns (device id, provisioning token).
    pub async fn create_device(&self, name: &str) -> (String, String) {
        self.create_device_as(&self.owner_key, name).await
    }

    /// Creates a device with this organization key; returns (device id, provisioning token).
    pub async fn create_device_as(&self, org_key: &str, name: &str) -> (String, String) {
        let a = self
            .post("/api/v1/devices", Some(org_key), json!({"name": name}))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        (
            a.body["device"]["id"].as_str().unwrap().to_owned(),
            a.body["provisioning_token"].as_str().unwrap().to_owned(),
        )
    }

    /// Creates and pairs a device; returns (device id, device key).
    pub async fn paired_device(&self, name: &str) -> (String, String) {
        self.paired_device_as(&self.owner_key, name).await
    }

    /// Creates (with this organization key) and pairs a device; returns
    /// (device id, device key).
    pub async fn paired_device_as(&self, org_key: &str, name: &str) -> (String, String) {
        let (id, token) = self.create_device_as(org_key, name).await;
        let a = self
            .post(
                "/api/public/v1/pair",
                None,
                json!({"provisioning_token": token}),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        (id, a.body["api_key"].as_str().unwrap().to_owned())
    }

    /// Organization `default`'s id (the first organization created).
    pub async fn org_id(&self) -> uuid::Uuid {
        self.app
            .core
            .store
            .organization_ids(1)
            .await
            .expect("organizations")[0]
    }

    /// A second organization with its own owner key.
    pub async fn other_org(&self, name: &str) -> String {
        swrm::core::orgs::create_org(&self.app.core.store, name)
            .await
            .expect("create org")
            .api_key
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.base.clone())
            .unwrap()
            .connect()
            .await
            .expect("gRPC connects")
    }

    pub async fn device_client(&self, key: Option<&str>) -> DeviceClient {
        proto::device_service_client::DeviceServiceClient::with_interceptor(
            self.channel().await,
            Bearer::new(key),
        )
    }

    pub async fn admin_client(&self, key: Option<&str>) -> AdminClient {
        proto::admin_service_client::AdminServiceClient::with_interceptor(
            self.channel().await,
            Bearer::new(key),
        )
    }
}

pub async fn answer(res: reqwest::Response) -> Answer {
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON ({status}): {}", String::from_utf8_lossy(&bytes)))
    };
    Answer {
        status,
        headers,
        body,
    }
}

pub type DeviceClient = proto::device_service_client::DeviceServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, Bearer>,
>;
pub type AdminClient = proto::admin_service_client::AdminServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, Bearer>,
>;

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    pub fn new(key: Option<&str>) -> Self {
        Self(key.map(|k| format!("Bearer {k}").parse().expect("ascii key")))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}
