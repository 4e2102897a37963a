//! Simulated devices: created with the owner key, then paired, as a fleet
//! would be.

use serde_json::{Value, json};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub struct Paired {
    pub device_id: String,
    pub org_id: String,
    pub key: String,
}

/// Creates the device `name` and pairs it.
pub async fn pair(
    http: &reqwest::Client,
    base: &str,
    owner: &str,
    name: &str,
) -> Result<Paired, Error> {
    let created: Value = http
        .post(format!("{base}/api/v1/devices"))
        .bearer_auth(owner)
        .json(&json!({"name": name}))
        .send()
        .await?
        .json()
        .await?;
    let paired: Value = http
        .post(format!("{base}/api/public/v1/pair"))
        .json(&json!({"provisioning_token": created["provisioning_token"]}))
        .send()
        .await?
        .json()
        .await?;
    let field = |name: &str| {
        paired[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("pairing answered no {name}: {paired}"))
    };
    Ok(Paired {
        device_id: field("device_id")?,
        org_id: field("org_id")?,
        key: field("api_key")?,
    })
}

/// The server in this process on loopback, on a fresh database (SQLite in
/// `dir`, or `SWRM_DATABASE_URL`), rate limits off; `tune` adjusts the
/// configuration. Answers the app, its base URL and the owner key.
pub async fn serve_in_process(
    dir: &std::path::Path,
    tune: impl FnOnce(&mut swrm::Config),
) -> Result<(std::sync::Arc<swrm::App>, String, String), Error> {
    let mut config = swrm::Config::for_data_dir(dir);
    config.storage.database_url = std::env::var("SWRM_DATABASE_URL").ok();
    config.rate_limits.device_rate_per_second = 0;
    config.rate_limits.org_key_rate_per_second = 0;
    config.rate_limits.pair_rate_per_minute = 0;
    tune(&mut config);
    let (app, created) = swrm::build(config).await?;
    let owner = created.ok_or("use an empty database")?.api_key;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(swrm::serve(app.clone(), listener, std::future::pending()));
    Ok((app, base, owner))
}
