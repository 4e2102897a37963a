//! `swrm.v1.DeviceService`. Methods not listed here answer UNIMPLEMENTED
//! (the generated default) until their issue lands.

use std::sync::Arc;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::{body_or_bearer, convert, credential, origin, source_ip};
use crate::{
    app::App,
    auth::{Credential, require_device},
    core::{self, device_ops, ingest, pairing, rfc3339, sensor_types},
    proto::{self, device_service_server::DeviceService},
};

pub struct DeviceApi {
    app: Arc<App>,
}

impl DeviceApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl DeviceService for DeviceApi {
    type StreamCommandsStream = BoxStream<proto::Command>;

    async fn pair(&self, req: Request<proto::PairRequest>) -> Reply<proto::PairResponse> {
        let token = body_or_bearer(
            credential(&req),
            &req.get_ref().provisioning_token,
            |c| match c {
                Credential::ProvisioningToken(t) => Some(t),
                _ => None,
            },
            "provisioning_token",
        )?;
        let ip = source_ip(&req);
        let body = req.into_inner();
        let paired = pairing::pair(
            &self.app.core,
            pairing::PairInput {
                token,
                hardware_model: body.hardware_model,
                serial_number: body.serial_number,
                firmware_version: body.firmware_version,
                source_ip: Some(ip),
            },
        )
        .await?;
        Ok(Response::new(proto::PairResponse {
            device_id: paired.device_id.to_string(),
            org_id: paired.org_id.to_string(),
            name: paired.name,
            api_key: paired.api_key,
        }))
    }

    async fn get_config(
        &self,
        req: Request<proto::GetConfigRequest>,
    ) -> Reply<proto::GetConfigResponse> {
        let who = require_device(credential(&req))?;
        let base = self
            .app
            .config
            .public_url
            .clone()
            .unwrap_or_else(|| origin(&req));
        let cfg = device_ops::config(&self.app.core, &who).await?;
        let d = &cfg.device;
        Ok(Response::new(proto::GetConfigResponse {
            device: Some(proto::ConfigDevice {
                id: d.id.to_string(),
                name: d.name.clone(),
                serial_number: d.serial_number.clone(),
                hardware_model: d.hardware_model.clone(),
                group: cfg.group.as_ref().map(|g| g.name.clone()),
                tags: core::validate::tags_from_json(&d.tags),
            }),
            org: Some(proto::ConfigOrg {
                id: cfg.org.id.to_string(),
                name: cfg.org.name.clone(),
            }),
            location: cfg.location.as_ref().map(convert::config_location),
            active_model: super::models::active_model(cfg.deployed.as_ref()),
            sensor_keys: cfg.sensor_keys.clone(),
            endpoints: Some(proto::Endpoints {
                rest: format!("{}/api/public/v1", base.trim_end_matches('/')),
                grpc: base,
            }),
            heartbeat_interval_seconds: self.app.config.heartbeat_interval_seconds,
        }))
    }

    async fn list_sensor_types(
        &self,
        req: Request<proto::ListSensorTypesRequest>,
    ) -> Reply<proto::ListSensorTypesResponse> {
        // Public: the built-in types; with a device key, its organization's
        // own types too.
        let sensor_types = match credential(&req) {
            Credential::Device(d) => sensor_types::list(&self.app.core, d.org_id)
                .await?
                .into_iter()
                .map(|t| proto::SensorType {
                    key: t.key,
                    unit: t.unit,
                    description: t.description,
                })
                .collect(),
            _ => sensor_types::BUILT_IN
                .iter()
                .map(|t| proto::SensorType {
                    key: t.key.into(),
                    unit: t.unit.into(),
                    description: t.description.into(),
                })
                .collect(),
        };
        Ok(Response::new(proto::ListSensorTypesResponse {
            sensor_types,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<proto::HeartbeatRequest>,
    ) -> Reply<proto::HeartbeatResponse> {
        let who = require_device(credential(&req))?;
        let ip = source_ip(&req);
        let body = req.into_inner();
        let now = device_ops::heartbeat(
            &self.app.core,
            &who,
            device_ops::Heartbeat {
                firmware_version: body.firmware_version,
                uptime_seconds: body.uptime_seconds,
                ip_address: body.ip_address,
                hostname: body.hostname,
            },
            ip,
        )
        .await?;
        Ok(Response::new(proto::HeartbeatResponse {
            server_time: rfc3339(now),
            heartbeat_interval_seconds: self.app.config.heartbeat_interval_seconds,
        }))
    }

    async fn enroll(&self, req: Request<proto::EnrollRequest>) -> Reply<proto::PairResponse> {
        super::enrollment::enroll(&self.app, req).await
    }

    async fn push_telemetry(
        &self,
        req: Request<proto::PushTelemetryRequest>,
    ) -> Reply<proto::PushTelemetryResponse> {
        let who = require_device(credential(&req))?;
        let body = req.into_inner();
        let values = body
            .values
            .into_iter()
            .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or_default()))
            .collect();
        let accepted = ingest::push_telemetry(&self.app.core, &who, values, body.ts).await?;
        Ok(Response::new(proto::PushTelemetryResponse { accepted }))
    }

    async fn push_sensors(
        &self,
        req: Request<proto::PushSensorsRequest>,
    ) -> Reply<proto::PushSensorsResponse> {
        let who = require_device(credential(&req))?;
        let readings = req
            .into_inner()
            .readings
            .into_iter()
            .map(|r| ingest::ReadingInput {
                sensor_type: r.sensor_type,
                value: r.value.unwrap_or(f64::NAN),
                unit: r.unit.filter(|u| !u.trim().is_empty()),
                ts: r.ts,
                seq: r.seq,
            })
            .collect();
        let out = ingest::push_sensors(&self.app.core, &who, readings).await?;
        Ok(Response::new(proto::PushSensorsResponse {
            accepted: out.accepted,
            duplicates: out.duplicates,
            alerts: out
                .alerts
                .into_iter()
                .map(|a| proto::AlertChange {
                    alert_id: a.alert_id.to_string(),
                    rule_id: a.rule_id.to_string(),
                    state: a.state.to_owned(),
                })
                .collect(),
        }))
    }

    async fn push_events(
        &self,
        req: Request<proto::PushEventsRequest>,
    ) -> Reply<proto::PushEventsResponse> {
        let who = require_device(credential(&req))?;
        let events = req
            .into_inner()
            .events
            .into_iter()
            .map(|e| ingest::EventInput {
                kind: e.r#type,
                severity: e.severity,
                message: e.message,
                data: e.data.map(|d| serde_json::to_value(d).unwrap_or_default()),
                ts: e.ts,
            })
            .collect();
        let accepted = ingest::push_events(&self.app.core, &who, events).await?;
        Ok(Response::new(proto::PushEventsResponse { accepted }))
    }

    async fn upload_capture(
        &self,
        req: Request<tonic::Streaming<proto::UploadCaptureChunk>>,
    ) -> Reply<proto::Capture> {
        super::captures::upload_stream(&self.app, req).await
    }

    async fn set_labels(
        &self,
        req: Request<proto::SetLabelsRequest>,
    ) -> Reply<proto::SetLabelsResponse> {
        super::captures::set_labels(&self.app, req).await
    }

    async fn get_model(
        &self,
        req: Request<proto::GetModelRequest>,
    ) -> Reply<proto::GetModelResponse> {
        super::models::device_model(&self.app, req).await
    }

    async fn poll_commands(
        &self,
        req: Request<proto::PollCommandsRequest>,
    ) -> Reply<proto::PollCommandsResponse> {
        super::commands::poll(&self.app, req).await
    }

    async fn stream_commands(
        &self,
        req: Request<proto::StreamCommandsRequest>,
    ) -> Reply<Self::StreamCommandsStream> {
        super::commands::stream(self.app.clone(), req).await
    }

    async fn ack_command(
        &self,
        req: Request<proto::AckCommandRequest>,
    ) -> Reply<proto::AckCommandResponse> {
        super::commands::ack(&self.app, req).await
    }
}
