//! gRPC handlers: take the principal, validate and convert, call `core`,
//! convert back. No SQL and no business rules here.

pub mod admin;
pub mod captures;
pub(crate) mod codec;
mod commands;
mod convert;
pub mod device;
mod enrollment;
mod ingest;
pub mod models;
mod shutdown;

use axum::Router;
use std::sync::Arc;
use tonic::{Request, server::NamedService};
use tonic_web::GrpcWebLayer;

use crate::{
    app::App,
    auth::{Credential, SourceIp},
    checks::{CheckedAdminService, CheckedDeviceService},
    proto::{admin_service_server::AdminServiceServer, device_service_server::DeviceServiceServer},
};

/// The encoded descriptor set of `proto/`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/swrm_descriptor.bin"));

/// The base URL the caller used to reach us (for `/config` endpoints).
#[derive(Clone, Debug)]
pub struct Origin(pub String);

pub(crate) fn credential<T>(req: &Request<T>) -> &Credential {
    const NONE: &Credential = &Credential::None;
    req.extensions().get::<Credential>().unwrap_or(NONE)
}

pub(crate) fn source_ip<T>(req: &Request<T>) -> std::net::IpAddr {
    req.extensions()
        .get::<SourceIp>()
        .map(|s| s.0)
        .unwrap_or(std::net::Ipv6Addr::UNSPECIFIED.into())
}

/// The one-time secret `pair` and `enroll` take: from the body field
/// `field`, else the bearer, if `bearer` finds the right kind there.
pub(crate) fn body_or_bearer(
    credential: &Credential,
    body: &str,
    bearer: impl Fn(&Credential) -> Option<&String>,
    field: &str,
) -> Result<String, crate::error::Error> {
    use crate::error::Error;
    if !body.trim().is_empty() {
        return Ok(body.trim().to_owned());
    }
    if let Some(secret) = bearer(credential) {
        return Ok(secret.clone());
    }
    Err(match credential {
        Credential::Unverifiable => {
            Error::Unavailable("cannot check credentials right now, retry shortly".into())
        }
        Credential::Rejected(r) => Error::Unauthenticated(r.why.into()),
        _ => Error::Unauthenticated(format!(
            "{field} is required (in the body or as the bearer token)"
        )),
    })
}

pub(crate) fn origin<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<Origin>()
        .map(|o| o.0.clone())
        .unwrap_or_default()
}

/// The gRPC services (device, admin, health, reflection) as axum routes, each
/// also answering gRPC-web.
pub fn router(app: Arc<App>) -> Router {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    // Serving status follows the process: if we answer, we serve.
    tokio::spawn(async move {
        health_reporter
            .set_serving::<DeviceServiceServer<CheckedDeviceService<device::DeviceApi>>>()
            .await;
        health_reporter
            .set_serving::<AdminServiceServer<CheckedAdminService<admin::AdminApi>>>()
            .await;
    });
    let reflection_v1 = reflection().build_v1().expect("descriptor set is valid");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("descriptor set is valid");

    let stop = app.core.shutdown.clone();
    let device =
        DeviceServiceServer::new(CheckedDeviceService(device::DeviceApi::new(app.clone())));
    let admin = AdminServiceServer::new(CheckedAdminService(admin::AdminApi::new(app)));
    Router::new()
        .route_service(&path_of(&device), device)
        .route_service(&path_of(&admin), admin)
        .route_service(&path_of(&health), health)
        .route_service(&path_of(&reflection_v1), reflection_v1)
        .route_service(&path_of(&reflection_v1alpha), reflection_v1alpha)
        .layer(axum::middleware::from_fn_with_state(
            stop,
            shutdown::end_streams_on_shutdown,
        ))
        .layer(GrpcWebLayer::new())
}

/// Reflection over our services and health (both protocol versions use it).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

fn path_of<S: NamedService>(_: &S) -> String {
    format!("/{}/{{*rest}}", S::NAME)
}
