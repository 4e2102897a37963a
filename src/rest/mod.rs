//! The REST adapter: JSON → the generated request message → the same checked
//! tonic handler a gRPC call reaches → JSON. Parity with gRPC holds by
//! construction. The route table and the OpenAPI document are generated
//! from the proto's `google.api.http` bindings (see build.rs); this module
//! adds the routes outside the proto (probes, the document) and the answers
//! for unknown routes and methods.

mod blobs;
mod error;
mod extract;
pub mod gateway;
mod uploads;

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use std::sync::Arc;
use tonic::Status;

pub use error::{code_name, error_response, status_response};
pub use gateway::{OPERATIONS, Operation, RPCS, route_label};

use crate::{
    app::App,
    checks::{CheckedAdminService, CheckedDeviceService},
    error::Error,
    grpc::{admin::AdminApi, device::DeviceApi},
};

/// The OpenAPI 3.1 document of every route, generated from `proto/`.
pub const OPENAPI_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/swrm_openapi.json"));

pub struct RestState {
    app: Arc<App>,
    device: CheckedDeviceService<DeviceApi>,
    admin: CheckedAdminService<AdminApi>,
    max_json_bytes: usize,
}

type St = State<Arc<RestState>>;

pub fn router(app: Arc<App>) -> Router {
    let state = Arc::new(RestState {
        device: CheckedDeviceService(DeviceApi::new(app.clone())),
        admin: CheckedAdminService(AdminApi::new(app.clone())),
        max_json_bytes: app.config.max_json_bytes,
        app,
    });
    gateway::routes()
        .route("/healthz", get(ready))
        .route("/readyz", get(ready))
        .route("/livez", get(live))
        .route("/api/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/blobs/{*key}", get(blobs::download))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// 200 while the database answers, else 503.
async fn ready(State(s): St) -> Response {
    if s.app.core.store.ping().await {
        (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))).into_response()
    } else {
        error_response(Error::Unavailable("database is not answering".into()))
    }
}

/// 200 while the process answers; touches nothing.
async fn live() -> Response {
    (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))).into_response()
}

/// Prometheus metrics (OpenMetrics text). Open, unless the server was
/// started with `--metrics-require-key`: then an owner API key.
async fn metrics(caller: extract::Caller, State(s): St) -> Response {
    if s.app.config.metrics_require_key {
        match crate::auth::require_write(caller.credential()) {
            Ok(access) if access.role() == crate::auth::Role::Owner => {}
            Ok(_) => {
                return error_response(Error::PermissionDenied(
                    "metrics take an owner API key".into(),
                ));
            }
            Err(e) => return error_response(e),
        }
    }
    let m = &s.app.core.metrics;
    let (open, idle) = s.app.core.store.pool_connections();
    let idle = i64::try_from(idle).unwrap_or(i64::MAX);
    let labels = |state| crate::metrics::PoolLabels { state };
    m.db_connections.get_or_create(&labels("idle")).set(idle);
    m.db_connections
        .get_or_create(&labels("in_use"))
        .set(i64::from(open) - idle);
    m.key_cache_entries
        .set(i64::try_from(s.app.keys.len()).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        m.encode(),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON,
    )
        .into_response()
}

async fn not_found() -> Response {
    error_response(Error::NotFound("no such route".into()))
}

async fn method_not_allowed() -> Response {
    let mut r = status_response(Status::unimplemented("method not allowed on this route"));
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}
