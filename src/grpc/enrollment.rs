//! Enrollment handlers: the admin side (create, list, get and revoke
//! codes) and the device's `Enroll`. The service impls call these.

use tonic::{Request, Response, Status};

use super::credential;
use crate::{
    app::App,
    auth::{Credential, require_read, require_write},
    core::{enrollment, page::PageRequest, rfc3339, validate},
    proto,
    store::entities::enrollment_code,
};

type Reply<T> = Result<Response<T>, Status>;

/// A code as listed: never its secret (`code` is only in the create answer).
fn code(m: &enrollment_code::Model) -> proto::EnrollmentCode {
    proto::EnrollmentCode {
        id: m.id.to_string(),
        code: None,
        name: m.name.clone(),
        max_devices: m.max_devices.map(|n| n.max(0) as u32),
        enrolled_devices: m.enrolled_devices.max(0) as u32,
        expires_at: m.expires_at.map(rfc3339),
        group_id: m.group_id.map(|id| id.to_string()),
        location_id: m.location_id.map(|id| id.to_string()),
        tags: validate::tags_from_json(&m.tags),
        allow_reenroll: m.allow_reenroll,
        revoked_at: m.revoked_at.map(rfc3339),
        created_at: rfc3339(m.created_at),
        serial_pattern: m.serial_pattern.clone(),
        prefix: m.prefix.clone(),
    }
}

pub async fn create_code(
    app: &App,
    req: Request<proto::CreateEnrollmentCodeRequest>,
) -> Reply<proto::EnrollmentCode> {
    let access = require_write(credential(&req))?;
    let b = req.into_inner();
    let created = enrollment::create(
        &app.core,
        &access,
        enrollment::NewCode {
            name: b.name,
            max_devices: b.max_devices,
            expires_at: b.expires_at,
            group_id: b.group_id,
            location_id: b.location_id,
            tags: b.tags,
            allow_reenroll: b.allow_reenroll.unwrap_or(false),
            serial_pattern: b.serial_pattern,
        },
    )
    .await?;
    let mut out = code(&created.code);
    out.code = Some(created.plaintext);
    Ok(Response::new(out))
}

pub async fn list_codes(
    app: &App,
    req: Request<proto::ListEnrollmentCodesRequest>,
) -> Reply<proto::ListEnrollmentCodesResponse> {
    let access = require_read(credential(&req))?;
    let b = req.get_ref();
    let page = PageRequest::parse(b.page_size, b.page_token.as_deref())?;
    let (rows, next_page_token) = enrollment::list(&app.core, &access, page).await?;
    Ok(Response::new(proto::ListEnrollmentCodesResponse {
        enrollment_codes: rows.iter().map(code).collect(),
        next_page_token,
    }))
}

pub async fn get_code(
    app: &App,
    req: Request<proto::GetEnrollmentCodeRequest>,
) -> Reply<proto::EnrollmentCode> {
    let access = require_read(credential(&req))?;
    let found = enrollment::get(&app.core, &access, &req.get_ref().id).await?;
    Ok(Response::new(code(&found)))
}

pub async fn revoke_code(
    app: &App,
    req: Request<proto::DeleteEnrollmentCodeRequest>,
) -> Reply<proto::DeleteEnrollmentCodeResponse> {
    let access = require_write(credential(&req))?;
    enrollment::revoke(&app.core, &access, &req.get_ref().id).await?;
    Ok(Response::new(proto::DeleteEnrollmentCodeResponse {}))
}

/// `POST /enroll`: the code from the body, else the bearer.
pub async fn enroll(app: &App, req: Request<proto::EnrollRequest>) -> Reply<proto::PairResponse> {
    let code = super::body_or_bearer(
        credential(&req),
        &req.get_ref().enrollment_code,
        |c| match c {
            Credential::EnrollmentCode(code) => Some(code),
            _ => None,
        },
        "enrollment_code",
    )?;
    let ip = super::source_ip(&req);
    let b = req.into_inner();
    let enrolled = enrollment::enroll(
        &app.core,
        enrollment::EnrollInput {
            code,
            serial_number: b.serial_number,
            hardware_model: b.hardware_model,
            name: b.name,
            firmware_version: b.firmware_version,
            source_ip: Some(ip),
        },
    )
    .await?;
    Ok(Response::new(proto::PairResponse {
        device_id: enrolled.device_id.to_string(),
        org_id: enrolled.org_id.to_string(),
        name: enrolled.name,
        api_key: enrolled.api_key,
    }))
}
