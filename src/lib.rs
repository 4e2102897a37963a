//! swrm: a self-hostable backend for fleets of edge AI devices.
//!
//! One listener answers REST (`rest`), gRPC and gRPC-web (`grpc`); both reach
//! the same use cases (`core`) over one store (`store`). Rust integrators get
//! typed clients from [`proto`] (e.g. `proto::device_service_client`).

pub mod app;
pub mod auth;
pub mod blobs;
pub mod bus;
pub mod checks;
pub mod config;
pub mod core;
pub mod error;
pub mod failpoint;
pub mod grpc;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod rest;
pub mod server;
pub mod store;
pub mod tls;

/// The generated protobuf messages, gRPC clients and servers of `proto/swrm/v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("swrm.v1");
}

use std::{future::Future, sync::Arc};
use tokio::net::TcpListener;

pub use app::App;
pub use config::Config;

/// Connects the store (running migrations) and creates organization
/// `default` on an empty database. Returns the app and, on that first start
/// only, the default owner key to print once.
pub async fn build(config: Config) -> error::Result<(Arc<App>, Option<core::orgs::NewOrg>)> {
    build_with_clock(config, core::Clock::system()).await
}

/// [`build`] with a clock of the caller's (tests drive a manual one).
pub async fn build_with_clock(
    config: Config,
    clock: core::Clock,
) -> error::Result<(Arc<App>, Option<core::orgs::NewOrg>)> {
    let store = store::Store::connect(
        &config.storage.database_url(),
        config.storage.database_timeout(),
    )
    .await?;
    let created = core::orgs::ensure_default_org(&store).await?;
    let blobs = blobs::open(&config.blobs, &config.storage.data_dir).await?;
    Ok((Arc::new(App::new(config, store, clock, blobs)), created))
}

/// The whole HTTP surface: REST, gRPC, gRPC-web, health, reflection, behind
/// the auth layer.
pub fn router(app: Arc<App>) -> axum::Router {
    rest::router(app.clone())
        .merge(grpc::router(app.clone()))
        .layer(axum::middleware::from_fn_with_state(
            app,
            auth::layer::authenticate,
        ))
}

/// Serves until `shutdown` completes; then tells long-lived streams and
/// polls to end (`Core::shutdown`) and drains open requests.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let pruner = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every.tick().await;
                app.limits.prune();
                app.keys.prune();
            }
        })
    };
    // Background work: offline alert rules, webhook deliveries. Each ends
    // at shutdown.
    let background = [
        tokio::spawn(core::alerts::offline_loop(app.core.clone())),
        tokio::spawn(core::webhooks::delivery_loop(app.core.clone())),
        tokio::spawn(core::audit::retention_loop(app.core.clone())),
        tokio::spawn(core::audit_tally::flush_loop(app.core.clone())),
        tokio::spawn(app.core.store.clone().checkpoint_loop()),
        tokio::spawn(core::blobs::sweep_loop(
            app.core.clone(),
            std::time::Duration::from_secs(app.config.blobs.sweep_interval_seconds.into()),
        )),
    ];
    // Heartbeats reach the database through this loop; it is awaited, not
    // aborted, so a flush in progress at shutdown completes.
    let liveness = tokio::spawn(core::liveness::flush_loop(app.core.clone()));
    let stop_listening = tokio_util::sync::CancellationToken::new();
    if app.core.bus.is_shared() {
        bus::postgres::listen(
            app.core.bus.clone(),
            app.config.storage.database_url(),
            stop_listening.clone(),
        );
    }
    let header_read_timeout =
        std::time::Duration::from_secs(app.config.header_read_timeout_seconds.into());
    let streams_end = app.core.shutdown.clone();
    let shutdown = async move {
        shutdown.await;
        streams_end.cancel();
    };
    let tls = tls::Tls::from_args(&app.config.tls)?;
    if let Some(tls) = &tls {
        tls.clone().watch(stop_listening.clone());
    }
    let core = app.core.clone();
    let max_connections = app.config.max_connections;
    let served = server::run(
        router(app),
        listener,
        header_read_timeout,
        tls,
        max_connections,
        shutdown,
    )
    .await;
    // Every request has been answered: the last heartbeats go in now.
    core.shutdown.cancel();
    let _ = liveness.await;
    if let Err(e) = core.liveness.flush(&core).await {
        tracing::warn!(error = %e, "heartbeats of the last second not recorded");
    }
    if let Err(e) = core.audit_tally.flush(&core).await {
        tracing::warn!(error = %e, "the last minute's denials and failures not recorded");
    }
    pruner.abort();
    stop_listening.cancel();
    for task in background {
        task.abort();
    }
    served
}
