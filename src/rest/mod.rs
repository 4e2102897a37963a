//! The REST adapter: JSON → the generated request message → the same tonic
//! handler a gRPC call reaches → JSON. Parity with gRPC holds by construction.

mod error;
mod extract;

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tonic::Status;

pub use error::{code_name, error_response, status_response};
use extract::{Caller, IdPath, JsonBody, QueryMessage};

use crate::{
    app::App,
    auth,
    error::Error,
    grpc::{admin::AdminApi, device::DeviceApi},
    proto::{self, admin_service_server::AdminService, device_service_server::DeviceService},
};

/// The OpenAPI 3 document of every route below (kept in step by a test).
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

pub struct RestState {
    app: Arc<App>,
    device: DeviceApi,
    admin: AdminApi,
    max_json_bytes: usize,
}

type St = State<Arc<RestState>>;

/// Encodes a handler's answer: the message as JSON with `ok`, or the envelope.
fn reply<T: Serialize>(ok: StatusCode, result: Result<tonic::Response<T>, Status>) -> Response {
    match result {
        Ok(response) => (ok, Json(response.into_inner())).into_response(),
        Err(status) => status_response(status),
    }
}

/// A route whose request message is the JSON body.
macro_rules! body {
    ($svc:ident . $method:ident, $msg:ty, $ok:expr) => {
        |caller: Caller, State(s): St, body: JsonBody<$msg>| async move {
            reply($ok, s.$svc.$method(caller.request(body.message)).await)
        }
    };
    ($svc:ident . $method:ident, $msg:ty, $ok:expr, id) => {
        |caller: Caller, State(s): St, IdPath(id): IdPath, body: JsonBody<$msg>| async move {
            let mut message = body.message;
            message.id = id;
            reply($ok, s.$svc.$method(caller.request(message)).await)
        }
    };
}

/// A route whose request message is the query string.
macro_rules! query {
    ($svc:ident . $method:ident, $msg:ty) => {
        |caller: Caller, State(s): St, QueryMessage(message): QueryMessage<$msg>| async move {
            reply(
                StatusCode::OK,
                s.$svc.$method(caller.request(message)).await,
            )
        }
    };
    ($svc:ident . $method:ident, $msg:ty, id) => {
        |caller: Caller,
         State(s): St,
         IdPath(id): IdPath,
         QueryMessage(mut message): QueryMessage<$msg>| async move {
            message.id = id;
            reply(
                StatusCode::OK,
                s.$svc.$method(caller.request(message)).await,
            )
        }
    };
}

const OK: StatusCode = StatusCode::OK;
const CREATED: StatusCode = StatusCode::CREATED;

pub fn router(app: Arc<App>) -> Router {
    let state = Arc::new(RestState {
        device: DeviceApi::new(app.clone()),
        admin: AdminApi::new(app.clone()),
        max_json_bytes: app.config.max_json_bytes,
        app,
    });
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/openapi.json", get(openapi))
        .merge(device_routes())
        .merge(admin_routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

fn device_routes() -> Router<Arc<RestState>> {
    Router::new()
        .route(
            "/api/public/v1/pair",
            post(body!(device.pair, proto::PairRequest, OK)),
        )
        .route(
            "/api/public/v1/enroll",
            post(body!(device.enroll, proto::EnrollRequest, CREATED)),
        )
        .route("/api/public/v1/config", get(config))
        .route(
            "/api/public/v1/sensor-types",
            get(query!(
                device.list_sensor_types,
                proto::ListSensorTypesRequest
            )),
        )
        .route(
            "/api/public/v1/heartbeat",
            post(body!(device.heartbeat, proto::HeartbeatRequest, OK)),
        )
        .route(
            "/api/public/v1/telemetry",
            post(body!(
                device.push_telemetry,
                proto::PushTelemetryRequest,
                OK
            )),
        )
        .route(
            "/api/public/v1/sensors",
            post(body!(device.push_sensors, proto::PushSensorsRequest, OK)),
        )
        .route(
            "/api/public/v1/events",
            post(body!(device.push_events, proto::PushEventsRequest, OK)),
        )
        .route("/api/public/v1/captures", post(upload_capture))
        .route(
            "/api/public/v1/labels",
            post(body!(device.set_labels, proto::SetLabelsRequest, OK)),
        )
        .route("/api/public/v1/model", get(model))
        .route(
            "/api/public/v1/commands",
            get(query!(device.poll_commands, proto::PollCommandsRequest)),
        )
        .route(
            "/api/public/v1/commands/{id}/ack",
            post(body!(device.ack_command, proto::AckCommandRequest, OK, id)),
        )
}

fn admin_routes() -> Router<Arc<RestState>> {
    Router::new()
        .route(
            "/api/v1/devices",
            post(body!(
                admin.create_device,
                proto::CreateDeviceRequest,
                CREATED
            ))
            .get(query!(admin.list_devices, proto::ListDevicesRequest)),
        )
        .route(
            "/api/v1/devices/{id}",
            get(query!(admin.get_device, proto::GetDeviceRequest, id)).patch(update_device),
        )
        .route(
            "/api/v1/devices/{id}/provisioning-token",
            post(body!(
                admin.create_provisioning_token,
                proto::CreateProvisioningTokenRequest,
                CREATED,
                id
            )),
        )
        .route(
            "/api/v1/devices/{id}/rotate-key",
            post(body!(
                admin.rotate_device_key,
                proto::RotateDeviceKeyRequest,
                OK,
                id
            )),
        )
        .route(
            "/api/v1/devices/{id}/revoke-key",
            post(body!(
                admin.revoke_device_key,
                proto::RevokeDeviceKeyRequest,
                OK,
                id
            )),
        )
        .route(
            "/api/v1/devices/{id}/commands",
            post(body!(
                admin.create_command,
                proto::CreateCommandRequest,
                CREATED,
                id
            ))
            .get(query!(admin.list_commands, proto::ListCommandsRequest, id)),
        )
        .route(
            "/api/v1/devices/{id}/readings",
            get(query!(admin.get_readings, proto::GetReadingsRequest, id)),
        )
        .route(
            "/api/v1/commands/{id}",
            get(query!(admin.get_command, proto::GetCommandRequest, id)),
        )
        .route(
            "/api/v1/locations",
            post(body!(
                admin.create_location,
                proto::CreateLocationRequest,
                CREATED
            ))
            .get(query!(admin.list_locations, proto::ListLocationsRequest)),
        )
        .route(
            "/api/v1/groups",
            post(body!(
                admin.create_group,
                proto::CreateGroupRequest,
                CREATED
            ))
            .get(query!(admin.list_groups, proto::ListGroupsRequest)),
        )
        .route(
            "/api/v1/enrollment-codes",
            post(body!(
                admin.create_enrollment_code,
                proto::CreateEnrollmentCodeRequest,
                CREATED
            ))
            .get(query!(
                admin.list_enrollment_codes,
                proto::ListEnrollmentCodesRequest
            )),
        )
        .route(
            "/api/v1/api-keys",
            post(body!(
                admin.create_api_key,
                proto::CreateApiKeyRequest,
                CREATED
            ))
            .get(query!(admin.list_api_keys, proto::ListApiKeysRequest)),
        )
        .route("/api/v1/api-keys/{id}", delete(delete_api_key))
        .route(
            "/api/v1/alert-rules",
            post(body!(
                admin.create_alert_rule,
                proto::CreateAlertRuleRequest,
                CREATED
            ))
            .get(query!(admin.list_alert_rules, proto::ListAlertRulesRequest)),
        )
        .route(
            "/api/v1/alerts",
            get(query!(admin.list_alerts, proto::ListAlertsRequest)),
        )
        .route(
            "/api/v1/events",
            get(query!(admin.list_events, proto::ListEventsRequest)),
        )
        .route(
            "/api/v1/captures",
            get(query!(admin.list_captures, proto::ListCapturesRequest)),
        )
        .route(
            "/api/v1/captures/{id}",
            get(query!(admin.get_capture, proto::GetCaptureRequest, id)),
        )
        .route(
            "/api/v1/models",
            post(upload_model).get(query!(admin.list_models, proto::ListModelsRequest)),
        )
        .route(
            "/api/v1/deployments",
            post(body!(
                admin.create_deployment,
                proto::CreateDeploymentRequest,
                CREATED
            ))
            .get(query!(
                admin.list_deployments,
                proto::ListDeploymentsRequest
            )),
        )
}

/// GET /config: the message plus an `ETag`; `If-None-Match` → 304.
async fn config(caller: Caller, State(s): St, headers: HeaderMap) -> Response {
    let response = match s
        .device
        .get_config(caller.request(proto::GetConfigRequest {}))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return status_response(status),
    };
    let body = serde_json::to_vec(&response).expect("messages serialize");
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&body))[..32]);
    let etag_value = HeaderValue::from_str(&etag).expect("hex is a valid header");
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response();
    }
    (
        StatusCode::OK,
        [
            (header::ETAG, etag_value),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        body,
    )
        .into_response()
}

/// GET /model: 204 when no model is deployed to this device.
async fn model(caller: Caller, State(s): St) -> Response {
    match s
        .device
        .get_model(caller.request(proto::GetModelRequest {}))
        .await
    {
        Ok(r) if r.get_ref().deployment_id.is_empty() => StatusCode::NO_CONTENT.into_response(),
        other => reply(OK, other),
    }
}

/// PATCH /devices/{id}: sending `tags` (even `[]`) replaces them.
async fn update_device(
    caller: Caller,
    State(s): St,
    IdPath(id): IdPath,
    body: JsonBody<proto::UpdateDeviceRequest>,
) -> Response {
    let mut message = body.message;
    message.id = id;
    message.set_tags = body.keys.iter().any(|k| k == "tags");
    reply(OK, s.admin.update_device(caller.request(message)).await)
}

/// DELETE /api-keys/{id}: 204.
async fn delete_api_key(caller: Caller, State(s): St, IdPath(id): IdPath) -> Response {
    match s
        .admin
        .delete_api_key(caller.request(proto::DeleteApiKeyRequest { id }))
        .await
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(status) => status_response(status),
    }
}

/// Multipart uploads land with their issues; until then, after checking the
/// caller, they say so.
async fn upload_capture(caller: Caller) -> Response {
    not_yet(
        auth::require_device(caller.credential()).map(|_| ()),
        "capture upload",
    )
}

async fn upload_model(caller: Caller) -> Response {
    not_yet(
        auth::require_write(caller.credential()).map(|_| ()),
        "model upload",
    )
}

fn not_yet(allowed: crate::error::Result<()>, what: &str) -> Response {
    match allowed {
        Ok(()) => error_response(Error::Unimplemented(format!(
            "{what} is not implemented yet"
        ))),
        Err(e) => error_response(e),
    }
}

async fn healthz(State(s): St) -> Response {
    if s.app.store.ping().await {
        (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))).into_response()
    } else {
        error_response(Error::Unavailable("database is not answering".into()))
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn not_found() -> Response {
    error_response(Error::NotFound("no such route".into()))
}

async fn method_not_allowed() -> Response {
    let mut r = status_response(Status::unimplemented("method not allowed on this route"));
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}
