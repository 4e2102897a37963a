//! The auth middleware: bearer secret → [`Credential`] in the request
//! extensions, plus the one log line per request (route, status, latency,
//! principal id, source IP; never the secret).

use axum::{
    extract::{ConnectInfo, Request, State},
    middleware::Next,
    response::Response,
};
use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use std::{net::SocketAddr, sync::Arc, sync::atomic::Ordering, time::Instant};

use super::{
    Credential, DevicePrincipal, OrgKeyPrincipal, Role, SourceIp,
    secret::{self, SecretKind},
};
use crate::{
    app::App,
    error::{Error, HTTP_STATUS_HINT, Result},
    grpc::Origin,
    limits::Bucket,
    store::entities::{api_key, device_key},
};

pub async fn authenticate(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim())
        .map(|v| {
            v.strip_prefix("Bearer ")
                .or(v.strip_prefix("bearer "))
                .unwrap_or(v)
                .trim()
                .to_owned()
        });
    let credential = match bearer {
        None => Credential::None,
        Some(token) => resolve(&app, &token).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "credential lookup failed");
            Credential::Unverifiable
        }),
    };
    let principal = credential.log_id();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let is_grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));

    let bucket = bucket_for(&path, &credential, peer.ip());
    if let Err(retry_after_secs) = app.limits.check(bucket) {
        let limited = Error::RateLimited {
            message: format!("rate limited, retry in {retry_after_secs} s"),
            retry_after_secs,
        };
        let response = if is_grpc {
            let mut r = tonic::Status::from(limited).into_http::<axum::body::Body>();
            r.headers_mut().remove(HTTP_STATUS_HINT);
            r
        } else {
            crate::rest::error_response(limited)
        };
        tracing::warn!(%method, route = %path, principal = principal.map(|p| p.to_string()), source_ip = %peer.ip(), "rate limited");
        return response;
    }
    let origin = Origin(origin_of(&req));
    req.extensions_mut().insert(credential);
    req.extensions_mut().insert(SourceIp(peer.ip()));
    req.extensions_mut().insert(origin);

    let mut response = next.run(req).await;
    response.headers_mut().remove(HTTP_STATUS_HINT);

    let grpc_status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    tracing::info!(
        %method,
        route = %path,
        status = response.status().as_u16(),
        grpc_status,
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        principal = principal.map(|p| p.to_string()),
        source_ip = %peer.ip(),
        "request"
    );
    response
}

/// Pairing and enrollment are limited per source IP whatever the credential;
/// everything else per key, or per IP without a valid key.
fn bucket_for(path: &str, credential: &Credential, ip: std::net::IpAddr) -> Bucket {
    const PAIRING: [&str; 4] = [
        "/api/public/v1/pair",
        "/api/public/v1/enroll",
        "/swrm.v1.DeviceService/Pair",
        "/swrm.v1.DeviceService/Enroll",
    ];
    if PAIRING.contains(&path.trim_end_matches('/')) {
        return Bucket::Pairing(ip);
    }
    match credential {
        Credential::Device(d) => Bucket::Device(d.device_id),
        Credential::OrgKey(k) => Bucket::OrgKey(k.key_id),
        _ => Bucket::Anonymous(ip),
    }
}

/// `scheme://host[:port]` as the caller addressed us.
fn origin_of(req: &Request) -> String {
    let headers = req.headers();
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "localhost".into());
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|v| *v == "https" || *v == "http")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

/// Resolves a bearer secret. A malformed one is rejected here, before any
/// database query; device and API keys are served from the cache when fresh.
pub async fn resolve(app: &App, token: &str) -> Result<Credential> {
    let Some(kind) = secret::parse(token) else {
        return Ok(Credential::Rejected("malformed credential"));
    };
    match kind {
        SecretKind::ProvisioningToken => {
            return Ok(Credential::ProvisioningToken(token.to_owned()));
        }
        SecretKind::EnrollmentCode => return Ok(Credential::EnrollmentCode(token.to_owned())),
        SecretKind::DeviceKey | SecretKind::ApiKey => {}
    }
    let hash = secret::hash(token);
    if let Some(hit) = app.keys.get(&hash) {
        return Ok(hit);
    }
    app.auth_db_lookups.fetch_add(1, Ordering::Relaxed);
    let now = Utc::now();
    if kind == SecretKind::DeviceKey {
        let found = device_key::Entity::find()
            .filter(device_key::Column::SecretHash.eq(&hash))
            .one(app.store.unscoped())
            .await?;
        return Ok(match found {
            Some(k) if k.revoked_at.is_none() && k.expires_at.is_none_or(|end| now < end) => {
                let credential = Credential::Device(DevicePrincipal {
                    org_id: k.org_id,
                    device_id: k.device_id,
                    key_id: k.id,
                });
                app.keys.put(hash, credential.clone(), k.expires_at);
                credential
            }
            Some(_) => Credential::Rejected("device key revoked or expired"),
            None => Credential::Rejected("unknown device key"),
        });
    }
    let found = api_key::Entity::find()
        .filter(api_key::Column::SecretHash.eq(&hash))
        .one(app.store.unscoped())
        .await?;
    Ok(match found {
        Some(k) if k.revoked_at.is_none() => match Role::parse(&k.role) {
            Some(role) => {
                let credential = Credential::OrgKey(OrgKeyPrincipal {
                    org_id: k.org_id,
                    key_id: k.id,
                    role,
                });
                app.keys.put(hash, credential.clone(), None);
                credential
            }
            None => Credential::Rejected("API key has an unknown role"),
        },
        Some(_) => Credential::Rejected("API key revoked"),
        None => Credential::Rejected("unknown API key"),
    })
}
