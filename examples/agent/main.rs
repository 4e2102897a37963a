//! The reference device agent (see `agent.rs`).
//!
//!   SWRM_API=https://your-swrm-host SWRM_PROV_TOKEN=swrm_pt_... \
//!     cargo run --release --example agent
//!
//! `SWRM_TOKEN_FILE` (default `/etc/swrm/token`) keeps the device key after
//! pairing; `SWRM_MODEL_DIR` (default `./swrm-models`) receives models.

mod agent;

#[tokio::main]
async fn main() -> Result<(), agent::Error> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    agent::run(agent::AgentConfig {
        api: var("SWRM_API").ok_or("set SWRM_API to the server's base URL")?,
        token_file: var("SWRM_TOKEN_FILE")
            .unwrap_or_else(|| "/etc/swrm/token".into())
            .into(),
        provisioning_token: var("SWRM_PROV_TOKEN"),
        model_dir: var("SWRM_MODEL_DIR")
            .unwrap_or_else(|| "./swrm-models".into())
            .into(),
    })
    .await
}
