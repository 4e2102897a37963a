//! Models and deployments over gRPC (and, through the gateway, REST): the
//! admin routes and the device's `GetModel`.

use bytes::Bytes;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{captures::base_url, credential};
use crate::{
    app::App,
    auth::{Credential, require_device, require_read, require_write},
    core::{
        blobs, device_ops,
        models::{self, ModelMeta, ModelPart, deployments},
        page::PageRequest,
        rfc3339, rfc3339_ms,
    },
    error::Result,
    proto::{self, upload_model_chunk::Part},
    store::entities::model_artifact,
};

type Reply<T> = std::result::Result<Response<T>, Status>;

pub fn model_out(m: &model_artifact::Model) -> proto::Model {
    proto::Model {
        id: m.id.to_string(),
        name: m.name.clone(),
        version: m.version.clone(),
        format: m.format.clone(),
        sha256: m.sha256.clone(),
        size_bytes: u64::try_from(m.size_bytes).unwrap_or_default(),
        created_at: rfc3339_ms(m.created_ms),
    }
}

fn deployment_out(v: deployments::DeploymentView) -> proto::Deployment {
    let d = v.row;
    let r = v.rollup;
    proto::Deployment {
        id: d.id.to_string(),
        model_id: d.model_id.to_string(),
        status: d.status,
        device_ids: serde_json::from_str(&d.device_ids).unwrap_or_default(),
        group_id: d.group_id.map(|g| g.to_string()),
        all_devices: d.all_devices,
        commands_queued: r.total(),
        created_at: rfc3339_ms(d.created_ms),
        location_id: d.location_id.map(|l| l.to_string()),
        rollup: Some(proto::DeploymentRollup {
            pending: r.pending,
            delivered: r.delivered,
            active: r.active,
            failed: r.failed,
            superseded: r.superseded,
        }),
    }
}

/// Stores one model from upload chunks: `meta` (anywhere in the stream)
/// and `data`.
pub async fn upload<S>(app: &App, credential: &Credential, chunks: S) -> Result<proto::Model>
where
    S: Stream<Item = std::result::Result<proto::UploadModelChunk, Status>> + Unpin + Send,
{
    let access = require_write(credential)?;
    let parts = chunks.filter_map(|chunk| match chunk {
        Err(status) => Some(Err(super::captures::status_error(status))),
        Ok(proto::UploadModelChunk { part: None }) => None,
        Ok(proto::UploadModelChunk {
            part: Some(Part::Meta(m)),
        }) => {
            // An empty field is not given (REST sends one field per chunk).
            let given = |s: String| Some(s).filter(|s| !s.is_empty());
            Some(Ok(ModelPart::Meta(ModelMeta {
                name: given(m.name),
                version: given(m.version),
                format: given(m.format),
            })))
        }
        Ok(proto::UploadModelChunk {
            part: Some(Part::Data(data)),
        }) => Some(Ok(ModelPart::Data(Bytes::from(data)))),
    });
    let stored = models::upload(&app.core, &access, parts).await?;
    Ok(model_out(&stored))
}

pub async fn upload_stream(
    app: &App,
    req: Request<tonic::Streaming<proto::UploadModelChunk>>,
) -> Reply<proto::Model> {
    let credential = credential(&req).clone();
    Ok(Response::new(
        upload(app, &credential, req.into_inner()).await?,
    ))
}

pub async fn list(
    app: &App,
    req: Request<proto::ListModelsRequest>,
) -> Reply<proto::ListModelsResponse> {
    let access = require_read(credential(&req))?;
    let b = req.into_inner();
    let page = PageRequest::parse(b.page_size, b.page_token.as_deref())?;
    let (rows, next_page_token) = models::list(&app.core, &access, page).await?;
    Ok(Response::new(proto::ListModelsResponse {
        models: rows.iter().map(model_out).collect(),
        next_page_token,
    }))
}

pub async fn get(app: &App, req: Request<proto::GetModelArtifactRequest>) -> Reply<proto::Model> {
    let access = require_read(credential(&req))?;
    let m = models::get(&app.core, &access, &req.get_ref().id).await?;
    Ok(Response::new(model_out(&m)))
}

pub async fn delete(
    app: &App,
    req: Request<proto::DeleteModelRequest>,
) -> Reply<proto::DeleteModelResponse> {
    let access = require_write(credential(&req))?;
    models::delete(&app.core, &access, &req.get_ref().id).await?;
    Ok(Response::new(proto::DeleteModelResponse {}))
}

pub async fn create_deployment(
    app: &App,
    req: Request<proto::CreateDeploymentRequest>,
) -> Reply<proto::Deployment> {
    let access = require_write(credential(&req))?;
    let b = req.into_inner();
    let created = deployments::create(
        &app.core,
        &access,
        deployments::NewDeployment {
            model_id: b.model_id,
            device_ids: b.device_ids,
            group_id: b.group_id,
            location_id: b.location_id,
            all_devices: b.all_devices.unwrap_or(false),
        },
    )
    .await?;
    Ok(Response::new(deployment_out(created)))
}

pub async fn list_deployments(
    app: &App,
    req: Request<proto::ListDeploymentsRequest>,
) -> Reply<proto::ListDeploymentsResponse> {
    let access = require_read(credential(&req))?;
    let b = req.into_inner();
    let page = PageRequest::parse(b.page_size, b.page_token.as_deref())?;
    let (views, next_page_token) = deployments::list(&app.core, &access, page).await?;
    Ok(Response::new(proto::ListDeploymentsResponse {
        deployments: views.into_iter().map(deployment_out).collect(),
        next_page_token,
    }))
}

pub async fn get_deployment(
    app: &App,
    req: Request<proto::GetDeploymentRequest>,
) -> Reply<proto::Deployment> {
    let access = require_read(credential(&req))?;
    let v = deployments::get(&app.core, &access, &req.get_ref().id).await?;
    Ok(Response::new(deployment_out(v)))
}

pub async fn deployment_devices(
    app: &App,
    req: Request<proto::ListDeploymentDevicesRequest>,
) -> Reply<proto::ListDeploymentDevicesResponse> {
    let access = require_read(credential(&req))?;
    let b = req.into_inner();
    let page = PageRequest::parse(b.page_size, b.page_token.as_deref())?;
    let (targets, next_page_token) = deployments::devices(&app.core, &access, &b.id, page).await?;
    Ok(Response::new(proto::ListDeploymentDevicesResponse {
        devices: targets
            .into_iter()
            .map(|t| proto::DeploymentDevice {
                device_id: t.device_id.to_string(),
                status: t.status.into(),
                command_id: t.command_id.to_string(),
                active_at: t.active_ms.map(rfc3339_ms),
            })
            .collect(),
        next_page_token,
    }))
}

/// The device's model and a signed download URL; an empty answer (REST:
/// 204) when nothing is deployed to it.
pub async fn device_model(
    app: &App,
    req: Request<proto::GetModelRequest>,
) -> Reply<proto::GetModelResponse> {
    let who = require_device(credential(&req))?;
    let base = base_url(app, &req);
    // From the device's cached configuration, so `/model` and `/config`
    // agree and a fleet polling `/model` costs no queries.
    let config = device_ops::config(&app.core, &who).await?;
    let Some((deployment_id, model)) = &config.deployed else {
        return Ok(Response::new(proto::GetModelResponse::default()));
    };
    let (url, expires_at) = blobs::signed_url(&app.core, &model.blob_key).await?;
    Ok(Response::new(proto::GetModelResponse {
        deployment_id: deployment_id.to_string(),
        model: Some(model_out(model)),
        download_url: url.resolve(&base),
        expires_at: rfc3339(expires_at),
    }))
}

/// `/config`'s `active_model`: the same model `/model` answers.
pub fn active_model(
    deployed: Option<&(uuid::Uuid, model_artifact::Model)>,
) -> Option<proto::ActiveModel> {
    deployed.map(|(deployment_id, m)| proto::ActiveModel {
        deployment_id: deployment_id.to_string(),
        name: m.name.clone(),
        version: m.version.clone(),
        format: m.format.clone(),
        sha256: m.sha256.clone(),
    })
}
