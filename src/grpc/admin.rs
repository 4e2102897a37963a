//! `swrm.v1.AdminService`. Methods not listed here answer UNIMPLEMENTED
//! (the generated default) until their issue lands.

use std::sync::Arc;
use tonic::{Request, Response, Status, codegen::BoxStream};

use super::{convert, credential};
use crate::{
    app::App,
    auth::{require_read, require_write},
    core::{api_keys, audit, device_batch, devices, page::PageRequest, places, rfc3339},
    proto::{self, admin_service_server::AdminService},
};

pub struct AdminApi {
    app: Arc<App>,
}

impl AdminApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    /// The device with this replica's unflushed heartbeats (see
    /// `core::liveness`).
    fn device(&self, m: &crate::store::entities::device::Model) -> proto::Device {
        let core = &self.app.core;
        let m = core.liveness.overlay(m);
        convert::device(&m, core.settings.heartbeat_interval, core.clock.now())
    }

    fn created(
        &self,
        device: &crate::store::entities::device::Model,
        token: devices::ProvisioningToken,
    ) -> proto::CreateDeviceResponse {
        proto::CreateDeviceResponse {
            device: Some(self.device(device)),
            provisioning_token: token.token,
            provisioning_token_expires_at: rfc3339(token.expires_at),
        }
    }
}

fn new_device(body: proto::CreateDeviceRequest) -> devices::NewDevice {
    devices::NewDevice {
        name: body.name,
        serial_number: body.serial_number,
        location_id: body.location_id,
        group_id: body.group_id,
        tags: body.tags,
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_device(
        &self,
        req: Request<proto::CreateDeviceRequest>,
    ) -> Reply<proto::CreateDeviceResponse> {
        let access = require_write(credential(&req))?;
        let (device, token) =
            devices::create_device(&self.app.core, &access, new_device(req.into_inner())).await?;
        Ok(Response::new(self.created(&device, token)))
    }

    async fn batch_create_devices(
        &self,
        req: Request<proto::BatchCreateDevicesRequest>,
    ) -> Reply<proto::BatchCreateDevicesResponse> {
        let access = require_write(credential(&req))?;
        let inputs = req.into_inner().requests.into_iter().map(new_device);
        let created =
            device_batch::create_devices(&self.app.core, &access, inputs.collect(), &|i| {
                format!("requests[{i}].")
            })
            .await?;
        Ok(Response::new(proto::BatchCreateDevicesResponse {
            devices: created
                .into_iter()
                .map(|(device, token)| self.created(&device, token))
                .collect(),
        }))
    }

    async fn list_devices(
        &self,
        req: Request<proto::ListDevicesRequest>,
    ) -> Reply<proto::ListDevicesResponse> {
        let access = require_read(credential(&req))?;
        let body = req.get_ref();
        let page = PageRequest::parse(body.page_size, body.page_token.as_deref())?;
        let filter = devices::DeviceFilter {
            group_id: body.group_id.clone(),
            location_id: body.location_id.clone(),
            status: body.status.clone(),
            name_prefix: body.name_prefix.clone(),
            tag: body.tag.clone(),
        };
        let (rows, next_page_token) =
            devices::list_devices(&self.app.core, &access, page, filter).await?;
        Ok(Response::new(proto::ListDevicesResponse {
            devices: rows.iter().map(|d| self.device(d)).collect(),
            next_page_token,
        }))
    }

    async fn get_device(&self, req: Request<proto::GetDeviceRequest>) -> Reply<proto::Device> {
        let access = require_read(credential(&req))?;
        let device = devices::get_device(&self.app.core, &access, &req.get_ref().id).await?;
        Ok(Response::new(self.device(&device)))
    }

    async fn update_device(
        &self,
        req: Request<proto::UpdateDeviceRequest>,
    ) -> Reply<proto::Device> {
        let access = require_write(credential(&req))?;
        let body = req.into_inner();
        let device = devices::update_device(
            &self.app.core,
            &access,
            &body.id,
            devices::DeviceUpdate {
                name: body.name,
                location_id: body.location_id,
                group_id: body.group_id,
                tags: masked(&body.update_mask, "tags").then_some(body.tags),
                sensor_keys: masked(&body.update_mask, "sensor_keys").then_some(body.sensor_keys),
            },
        )
        .await?;
        Ok(Response::new(self.device(&device)))
    }

    async fn create_provisioning_token(
        &self,
        req: Request<proto::CreateProvisioningTokenRequest>,
    ) -> Reply<proto::ProvisioningToken> {
        let access = require_write(credential(&req))?;
        let token =
            devices::new_provisioning_token(&self.app.core, &access, &req.get_ref().id).await?;
        Ok(Response::new(proto::ProvisioningToken {
            provisioning_token: token.token,
            provisioning_token_expires_at: rfc3339(token.expires_at),
        }))
    }

    async fn rotate_device_key(
        &self,
        req: Request<proto::RotateDeviceKeyRequest>,
    ) -> Reply<proto::RotateDeviceKeyResponse> {
        let access = require_write(credential(&req))?;
        let body = req.get_ref();
        let api_key = devices::rotate_key(
            &self.app.core,
            &access,
            &body.id,
            body.grace_seconds.unwrap_or(0),
        )
        .await?;
        Ok(Response::new(proto::RotateDeviceKeyResponse { api_key }))
    }

    async fn revoke_device_key(
        &self,
        req: Request<proto::RevokeDeviceKeyRequest>,
    ) -> Reply<proto::RevokeDeviceKeyResponse> {
        let access = require_write(credential(&req))?;
        let (device_id, revoked) =
            devices::revoke_keys(&self.app.core, &access, &req.get_ref().id).await?;
        Ok(Response::new(proto::RevokeDeviceKeyResponse {
            device_id: device_id.to_string(),
            revoked: revoked.try_into().unwrap_or(u32::MAX),
        }))
    }

    async fn create_location(
        &self,
        req: Request<proto::CreateLocationRequest>,
    ) -> Reply<proto::Location> {
        let access = require_write(credential(&req))?;
        let body = req.into_inner();
        let location = places::create_location(
            &self.app.core,
            &access,
            places::NewLocation {
                name: body.name,
                latitude: body.latitude,
                longitude: body.longitude,
                timezone: body.timezone,
            },
        )
        .await?;
        Ok(Response::new(convert::location(&location)))
    }

    async fn list_locations(
        &self,
        req: Request<proto::ListLocationsRequest>,
    ) -> Reply<proto::ListLocationsResponse> {
        let access = require_read(credential(&req))?;
        let body = req.get_ref();
        let page = PageRequest::parse(body.page_size, body.page_token.as_deref())?;
        let (rows, next_page_token) = places::list_locations(&self.app.core, &access, page).await?;
        Ok(Response::new(proto::ListLocationsResponse {
            locations: rows.iter().map(convert::location).collect(),
            next_page_token,
        }))
    }

    async fn create_group(&self, req: Request<proto::CreateGroupRequest>) -> Reply<proto::Group> {
        let access = require_write(credential(&req))?;
        let body = req.get_ref();
        let group = places::create_group(
            &self.app.core,
            &access,
            &body.name,
            body.description.as_deref(),
        )
        .await?;
        Ok(Response::new(convert::group(&group)))
    }

    async fn list_groups(
        &self,
        req: Request<proto::ListGroupsRequest>,
    ) -> Reply<proto::ListGroupsResponse> {
        let access = require_read(credential(&req))?;
        let body = req.get_ref();
        let page = PageRequest::parse(body.page_size, body.page_token.as_deref())?;
        let (rows, next_page_token) = places::list_groups(&self.app.core, &access, page).await?;
        Ok(Response::new(proto::ListGroupsResponse {
            groups: rows.iter().map(convert::group).collect(),
            next_page_token,
        }))
    }

    async fn create_api_key(
        &self,
        req: Request<proto::CreateApiKeyRequest>,
    ) -> Reply<proto::ApiKey> {
        let access = require_write(credential(&req))?;
        let body = req.get_ref();
        let created = api_keys::create(&self.app.core, &access, &body.name, &body.role).await?;
        let mut key = convert::api_key(&created.key);
        key.api_key = Some(created.plaintext);
        Ok(Response::new(key))
    }

    async fn list_api_keys(
        &self,
        req: Request<proto::ListApiKeysRequest>,
    ) -> Reply<proto::ListApiKeysResponse> {
        let access = require_read(credential(&req))?;
        let body = req.get_ref();
        let page = PageRequest::parse(body.page_size, body.page_token.as_deref())?;
        let (rows, next_page_token) = api_keys::list(&self.app.core, &access, page).await?;
        Ok(Response::new(proto::ListApiKeysResponse {
            api_keys: rows.iter().map(convert::api_key).collect(),
            next_page_token,
        }))
    }

    async fn delete_api_key(
        &self,
        req: Request<proto::DeleteApiKeyRequest>,
    ) -> Reply<proto::DeleteApiKeyResponse> {
        let access = require_write(credential(&req))?;
        api_keys::delete(&self.app.core, &access, &req.get_ref().id).await?;
        Ok(Response::new(proto::DeleteApiKeyResponse {}))
    }

    async fn delete_alert_rule(
        &self,
        req: Request<proto::DeleteAlertRuleRequest>,
    ) -> Reply<proto::DeleteAlertRuleResponse> {
        super::ingest::delete_alert_rule(&self.app, req).await
    }

    async fn acknowledge_alert(
        &self,
        req: Request<proto::AcknowledgeAlertRequest>,
    ) -> Reply<proto::Alert> {
        super::ingest::acknowledge_alert(&self.app, req).await
    }

    async fn get_latest_readings(
        &self,
        req: Request<proto::GetLatestReadingsRequest>,
    ) -> Reply<proto::GetLatestReadingsResponse> {
        super::ingest::get_latest_readings(&self.app, req).await
    }

    async fn get_telemetry(
        &self,
        req: Request<proto::GetTelemetryRequest>,
    ) -> Reply<proto::GetTelemetryResponse> {
        super::ingest::get_telemetry(&self.app, req).await
    }

    async fn get_latest_telemetry(
        &self,
        req: Request<proto::GetLatestTelemetryRequest>,
    ) -> Reply<proto::GetTelemetryResponse> {
        super::ingest::get_latest_telemetry(&self.app, req).await
    }

    async fn create_sensor_type(
        &self,
        req: Request<proto::CreateSensorTypeRequest>,
    ) -> Reply<proto::OrgSensorType> {
        super::ingest::create_sensor_type(&self.app, req).await
    }

    async fn list_org_sensor_types(
        &self,
        req: Request<proto::ListOrgSensorTypesRequest>,
    ) -> Reply<proto::ListOrgSensorTypesResponse> {
        super::ingest::list_org_sensor_types(&self.app, req).await
    }

    async fn delete_sensor_type(
        &self,
        req: Request<proto::DeleteSensorTypeRequest>,
    ) -> Reply<proto::DeleteSensorTypeResponse> {
        super::ingest::delete_sensor_type(&self.app, req).await
    }

    async fn create_webhook(
        &self,
        req: Request<proto::CreateWebhookRequest>,
    ) -> Reply<proto::Webhook> {
        super::ingest::create_webhook(&self.app, req).await
    }

    async fn list_webhooks(
        &self,
        req: Request<proto::ListWebhooksRequest>,
    ) -> Reply<proto::ListWebhooksResponse> {
        super::ingest::list_webhooks(&self.app, req).await
    }

    async fn delete_webhook(
        &self,
        req: Request<proto::DeleteWebhookRequest>,
    ) -> Reply<proto::DeleteWebhookResponse> {
        super::ingest::delete_webhook(&self.app, req).await
    }

    async fn list_webhook_deliveries(
        &self,
        req: Request<proto::ListWebhookDeliveriesRequest>,
    ) -> Reply<proto::ListWebhookDeliveriesResponse> {
        super::ingest::list_webhook_deliveries(&self.app, req).await
    }

    type WatchAlertsStream = BoxStream<proto::AlertEvent>;

    async fn watch_alerts(
        &self,
        req: Request<proto::WatchAlertsRequest>,
    ) -> Reply<Self::WatchAlertsStream> {
        super::ingest::watch_alerts(self.app.clone(), req).await
    }

    async fn update_group(&self, req: Request<proto::UpdateGroupRequest>) -> Reply<proto::Group> {
        let access = require_write(credential(&req))?;
        let body = req.into_inner();
        let group = places::update_group(
            &self.app.core,
            &access,
            &body.id,
            places::GroupUpdate {
                name: body.name,
                description: body.description,
                sensor_keys: masked(&body.update_mask, "sensor_keys").then_some(body.sensor_keys),
            },
        )
        .await?;
        Ok(Response::new(convert::group(&group)))
    }

    // Until their issues land: authenticate and authorize, then say so.
    async fn create_command(
        &self,
        req: Request<proto::CreateCommandRequest>,
    ) -> Reply<proto::CommandStatus> {
        super::commands::create(&self.app, req).await
    }

    async fn list_commands(
        &self,
        req: Request<proto::ListCommandsRequest>,
    ) -> Reply<proto::ListCommandsResponse> {
        super::commands::list(&self.app, req).await
    }

    async fn get_command(
        &self,
        req: Request<proto::GetCommandRequest>,
    ) -> Reply<proto::CommandStatus> {
        super::commands::get(&self.app, req).await
    }

    async fn cancel_command(
        &self,
        req: Request<proto::CancelCommandRequest>,
    ) -> Reply<proto::CommandStatus> {
        super::commands::cancel(&self.app, req).await
    }

    type WatchCommandsStream = BoxStream<proto::CommandStatus>;

    async fn watch_commands(
        &self,
        req: Request<proto::WatchCommandsRequest>,
    ) -> Reply<Self::WatchCommandsStream> {
        super::commands::watch(self.app.clone(), req).await
    }

    async fn get_readings(
        &self,
        req: Request<proto::GetReadingsRequest>,
    ) -> Reply<proto::GetReadingsResponse> {
        super::ingest::get_readings(&self.app, req).await
    }

    async fn create_enrollment_code(
        &self,
        req: Request<proto::CreateEnrollmentCodeRequest>,
    ) -> Reply<proto::EnrollmentCode> {
        super::enrollment::create_code(&self.app, req).await
    }

    async fn list_enrollment_codes(
        &self,
        req: Request<proto::ListEnrollmentCodesRequest>,
    ) -> Reply<proto::ListEnrollmentCodesResponse> {
        super::enrollment::list_codes(&self.app, req).await
    }

    async fn list_audit_events(
        &self,
        req: Request<proto::ListAuditEventsRequest>,
    ) -> Reply<proto::ListAuditEventsResponse> {
        let access = require_write(credential(&req))?;
        let b = req.get_ref();
        let page = PageRequest::parse(b.page_size, b.page_token.as_deref())?;
        let filter = audit::AuditFilter {
            action: b.action.clone(),
            target_id: b.target_id.clone(),
        };
        let (rows, next_page_token) = audit::list(&self.app.core, &access, page, filter).await?;
        Ok(Response::new(proto::ListAuditEventsResponse {
            audit_events: rows.iter().map(convert::audit_event).collect(),
            next_page_token,
        }))
    }

    async fn get_enrollment_code(
        &self,
        req: Request<proto::GetEnrollmentCodeRequest>,
    ) -> Reply<proto::EnrollmentCode> {
        super::enrollment::get_code(&self.app, req).await
    }

    async fn delete_enrollment_code(
        &self,
        req: Request<proto::DeleteEnrollmentCodeRequest>,
    ) -> Reply<proto::DeleteEnrollmentCodeResponse> {
        super::enrollment::revoke_code(&self.app, req).await
    }

    async fn create_alert_rule(
        &self,
        req: Request<proto::CreateAlertRuleRequest>,
    ) -> Reply<proto::AlertRule> {
        super::ingest::create_alert_rule(&self.app, req).await
    }

    async fn list_alert_rules(
        &self,
        req: Request<proto::ListAlertRulesRequest>,
    ) -> Reply<proto::ListAlertRulesResponse> {
        super::ingest::list_alert_rules(&self.app, req).await
    }

    async fn list_alerts(
        &self,
        req: Request<proto::ListAlertsRequest>,
    ) -> Reply<proto::ListAlertsResponse> {
        super::ingest::list_alerts(&self.app, req).await
    }

    async fn list_events(
        &self,
        req: Request<proto::ListEventsRequest>,
    ) -> Reply<proto::ListEventsResponse> {
        super::ingest::list_events(&self.app, req).await
    }

    async fn list_captures(
        &self,
        req: Request<proto::ListCapturesRequest>,
    ) -> Reply<proto::ListCapturesResponse> {
        super::captures::list(&self.app, req).await
    }

    async fn get_capture(&self, req: Request<proto::GetCaptureRequest>) -> Reply<proto::Capture> {
        super::captures::get(&self.app, req).await
    }

    async fn delete_capture(
        &self,
        req: Request<proto::DeleteCaptureRequest>,
    ) -> Reply<proto::DeleteCaptureResponse> {
        super::captures::delete(&self.app, req).await
    }

    async fn export_coco(
        &self,
        req: Request<proto::ExportCocoRequest>,
    ) -> Reply<proto::CocoDataset> {
        super::captures::export_coco(&self.app, req).await
    }

    async fn upload_model(
        &self,
        req: Request<tonic::Streaming<proto::UploadModelChunk>>,
    ) -> Reply<proto::Model> {
        super::models::upload_stream(&self.app, req).await
    }

    async fn list_models(
        &self,
        req: Request<proto::ListModelsRequest>,
    ) -> Reply<proto::ListModelsResponse> {
        super::models::list(&self.app, req).await
    }

    async fn get_model_artifact(
        &self,
        req: Request<proto::GetModelArtifactRequest>,
    ) -> Reply<proto::Model> {
        super::models::get(&self.app, req).await
    }

    async fn delete_model(
        &self,
        req: Request<proto::DeleteModelRequest>,
    ) -> Reply<proto::DeleteModelResponse> {
        super::models::delete(&self.app, req).await
    }

    async fn create_deployment(
        &self,
        req: Request<proto::CreateDeploymentRequest>,
    ) -> Reply<proto::Deployment> {
        super::models::create_deployment(&self.app, req).await
    }

    async fn list_deployments(
        &self,
        req: Request<proto::ListDeploymentsRequest>,
    ) -> Reply<proto::ListDeploymentsResponse> {
        super::models::list_deployments(&self.app, req).await
    }

    async fn get_deployment(
        &self,
        req: Request<proto::GetDeploymentRequest>,
    ) -> Reply<proto::Deployment> {
        super::models::get_deployment(&self.app, req).await
    }

    async fn list_deployment_devices(
        &self,
        req: Request<proto::ListDeploymentDevicesRequest>,
    ) -> Reply<proto::ListDeploymentDevicesResponse> {
        super::models::deployment_devices(&self.app, req).await
    }
}

/// Whether the update mask names `field`.
pub(super) fn masked(mask: &Option<pbjson_types::FieldMask>, field: &str) -> bool {
    mask.as_ref()
        .is_some_and(|m| m.paths.iter().any(|p| p == field))
}
