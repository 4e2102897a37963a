//! The auth middleware: bearer secret → [`Credential`] in the request
//! extensions, rate limits, and the one log line per request (route, status,
//! latency, principal id, source IP; never the secret).

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use sha2::{Digest as _, Sha256};
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use super::{
    Credential, DevicePrincipal, OrgKeyPrincipal, Refusal, Role, SourceIp,
    cache::Digest,
    secret::{self, SecretKind},
};
use crate::{
    app::App,
    core::audit::Actor,
    error::{Error, HTTP_STATUS_HINT, Result},
    grpc::Origin,
    limits::Bucket,
    metrics::{RequestLabels, RouteLabels, Transport},
    store::entities::api_key,
};

pub async fn authenticate(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = crate::rest::route_label(
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
        &path,
    );
    let client_ip = client_ip(&req, peer.ip(), &app.config.trusted_proxies);
    let content_type = req.headers().get(http::header::CONTENT_TYPE);
    let is_grpc = content_type.is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let transport = match content_type {
        Some(v) if v.as_bytes().starts_with(b"application/grpc-web") => Transport::grpc_web,
        _ if is_grpc => Transport::grpc,
        _ => Transport::rest,
    };
    let measured = |response: &Response| record(&app, route, transport, response, started);
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(bearer_token);

    let credential = match bearer {
        None => Credential::None,
        // Boxed: a lookup's state is large and needed only while it runs;
        // inline, it would stay allocated as long as the request (a long
        // poll: as long as its device waits).
        Some(token) => match Box::pin(resolve(&app, token, client_ip)).await {
            Ok(credential) => credential,
            Err(limited @ Error::RateLimited { .. }) => {
                tracing::warn!(%method, route = %path, source_ip = %client_ip, "rate limited before credential lookup");
                app.core.metrics.rate_limited("failed_lookups");
                let response = reject(is_grpc, limited);
                measured(&response);
                return response;
            }
            Err(e) => {
                tracing::error!(error = %e, "credential lookup failed");
                Credential::Unverifiable
            }
        },
    };
    let principal = credential.log_id();
    let audited = Audited::of(&credential);

    let bucket = bucket_for(&path, &credential, client_ip);
    if let Err(retry_after_secs) = app.limits.check(bucket) {
        tracing::warn!(%method, route = %path, principal = principal.map(|p| p.to_string()), source_ip = %client_ip, "rate limited");
        app.core.metrics.rate_limited(bucket.name());
        let response = reject(
            is_grpc,
            Error::RateLimited {
                message: format!("rate limited, retry in {retry_after_secs} s"),
                retry_after_secs,
                policy: app.limits.policy(bucket.name()),
            },
        );
        measured(&response);
        return response;
    }

    let from_proxy = is_trusted(peer.ip(), &app.config.trusted_proxies);
    let origin = Origin(origin_of(&req, from_proxy));
    req.extensions_mut().insert(credential);
    req.extensions_mut().insert(SourceIp(client_ip));
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
        source_ip = %client_ip,
        "request"
    );
    measured(&response);
    audited.count(&app, &response, client_ip, || {
        if is_grpc {
            route.to_owned()
        } else {
            format!("{method} {route}")
        }
    });
    response
}

/// What a refusal of this request would be counted against in the audit
/// trail (`core::audit_tally`).
enum Audited {
    /// A valid key: a 403 is a role denial.
    Key(uuid::Uuid, Actor),
    /// A refused credential: a 401 is an authentication failure.
    Refused(Refusal),
    Nothing,
}

impl Audited {
    fn of(credential: &Credential) -> Self {
        match credential {
            Credential::OrgKey(k) => Audited::Key(k.org_id, Actor::ApiKey(k.key_id)),
            Credential::Device(d) => Audited::Key(d.org_id, Actor::DeviceKey(d.key_id)),
            Credential::Rejected(r) => Audited::Refused(*r),
            _ => Audited::Nothing,
        }
    }

    fn count(
        &self,
        app: &App,
        response: &Response,
        ip: IpAddr,
        operation: impl FnOnce() -> String,
    ) {
        let grpc_code = grpc_code(response);
        let status = response.status();
        let denied = status == http::StatusCode::FORBIDDEN
            || grpc_code == Some(tonic::Code::PermissionDenied);
        let unauthenticated = status == http::StatusCode::UNAUTHORIZED
            || grpc_code == Some(tonic::Code::Unauthenticated);
        let tally = &app.core.audit_tally;
        match self {
            Audited::Key(org, actor) if denied => tally.role_denied(*org, *actor, ip, operation()),
            Audited::Refused(r) if unauthenticated => tally.auth_failed(r.owner, ip, r.why),
            _ => {}
        }
    }
}

/// The gRPC status in the answer's head (a call that failed before its
/// first message), if any.
fn grpc_code(response: &Response) -> Option<tonic::Code> {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
}

/// Counts the answer and its latency under bounded labels.
fn record(
    app: &App,
    route: &'static str,
    transport: Transport,
    response: &Response,
    started: Instant,
) {
    let status = match transport {
        Transport::rest => status_label(response.status().as_u16()),
        Transport::grpc | Transport::grpc_web => {
            grpc_code(response).map_or("ok", crate::rest::code_name)
        }
    };
    let metrics = &app.core.metrics;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            transport,
            status,
        })
        .inc();
    metrics
        .request_seconds
        .get_or_create(&RouteLabels { route, transport })
        .observe(started.elapsed().as_secs_f64());
}

/// An HTTP status as a static label.
fn status_label(code: u16) -> &'static str {
    static LABELS: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| (0..600).map(|c| c.to_string()).collect());
    LABELS
        .get(usize::from(code))
        .map_or("other", String::as_str)
}

/// `Authorization: Bearer <secret>` (the scheme is case-insensitive; a bare
/// secret is accepted too).
fn bearer_token(value: &str) -> &str {
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    }
}

/// The client's address: the TCP peer, or, when the peer is a trusted proxy,
/// the nearest untrusted address in `X-Forwarded-For`.
fn is_trusted(ip: IpAddr, trusted: &[IpAddr]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|t| t.to_canonical() == ip)
}

fn client_ip(req: &Request, peer: IpAddr, trusted: &[IpAddr]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| is_trusted(*ip, trusted);
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    // From the nearest hop outwards: the first address a trusted proxy did
    // not add is the client. An entry we cannot read ends the walk there,
    // since anything left of it may be the client's own invention.
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !is_trusted(&client) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

fn reject(is_grpc: bool, error: Error) -> Response {
    if is_grpc {
        let mut response = tonic::Status::from(error).into_http::<axum::body::Body>();
        response.headers_mut().remove(HTTP_STATUS_HINT);
        response
    } else {
        crate::rest::error_response(error)
    }
}

/// Pairing and enrollment are limited per source IP whatever the credential;
/// everything else per key, or per IP without a valid key.
fn bucket_for(path: &str, credential: &Credential, ip: IpAddr) -> Bucket {
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

/// `scheme://host[:port]` as the caller addressed us. The scheme a proxy
/// reports (`X-Forwarded-Proto`) counts only when the peer is a trusted
/// proxy; anyone else could send it.
fn origin_of(req: &Request, from_trusted_proxy: bool) -> String {
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
        .filter(|_| from_trusted_proxy)
        .and_then(|v| v.to_str().ok())
        .filter(|v| *v == "https" || *v == "http")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

/// Resolves a bearer secret. A malformed one is rejected here, before any
/// database query; device and API keys are served from the cache when fresh.
/// Lookups that find no valid key draw on the caller's per-IP failure
/// bucket; once it is empty, even cache misses are refused before the query,
/// so forged well-formed keys cannot flood the database. Valid keys never
/// draw on it.
pub async fn resolve(app: &App, token: &str, ip: IpAddr) -> Result<Credential> {
    let Some(kind) = secret::parse(token) else {
        return Ok(Credential::Rejected(Refusal::unknown(
            "malformed credential",
        )));
    };
    match kind {
        SecretKind::ProvisioningToken => {
            return Ok(Credential::ProvisioningToken(token.to_owned()));
        }
        SecretKind::EnrollmentCode => return Ok(Credential::EnrollmentCode(token.to_owned())),
        SecretKind::DeviceKey | SecretKind::ApiKey => {}
    }
    let digest: Digest = Sha256::digest(token.as_bytes()).into();
    let now = app.core.clock.now();
    if let Some(hit) = app.keys.get(&digest, now) {
        return Ok(hit);
    }
    let hash = hex::encode(digest);
    if let Some(retry_after_secs) = app.limits.lookups_blocked(ip) {
        return Err(too_many_failures(
            retry_after_secs,
            app.limits.policy("failed_lookups"),
        ));
    }
    let generation = app.keys.generation();
    app.core.count_auth_lookup();
    let (credential, expires_at) = if kind == SecretKind::DeviceKey {
        let found = app.core.store.device_key_by_hash(&hash).await?;
        match found {
            Some(k) if k.revoked_at.is_none() && k.expires_at.is_none_or(|end| now < end) => (
                Credential::Device(DevicePrincipal {
                    org_id: k.org_id,
                    device_id: k.device_id,
                    key_id: k.id,
                }),
                k.expires_at,
            ),
            Some(k) => (
                Credential::Rejected(Refusal::of(
                    "device key revoked or expired",
                    k.org_id,
                    Actor::DeviceKey(k.id),
                )),
                None,
            ),
            None => (
                Credential::Rejected(Refusal::unknown("unknown device key")),
                None,
            ),
        }
    } else {
        let found = app.core.store.api_key_by_hash(&hash).await?;
        match found {
            Some(k) if k.revoked_at.is_none() => match Role::parse(&k.role) {
                Some(role) => {
                    // "Last used" costs a write on a cache miss, by one of
                    // the requests that missed together, at most once a
                    // minute per key (`last_use`), never on the hot path.
                    // Best effort: a busy database must not fail a valid key.
                    if app.last_use.due(k.id, now) {
                        app.core.metrics.api_key_last_use_writes.inc();
                        if let Err(e) = record_last_use(&app.core.store, &k, now).await {
                            tracing::warn!(error = %e, key_id = %k.id, "could not record last use");
                        }
                    }
                    (
                        Credential::OrgKey(OrgKeyPrincipal {
                            org_id: k.org_id,
                            key_id: k.id,
                            role,
                        }),
                        None,
                    )
                }
                None => (
                    Credential::Rejected(Refusal::of(
                        "API key has an unknown role",
                        k.org_id,
                        Actor::ApiKey(k.id),
                    )),
                    None,
                ),
            },
            Some(k) => (
                Credential::Rejected(Refusal::of(
                    "API key revoked",
                    k.org_id,
                    Actor::ApiKey(k.id),
                )),
                None,
            ),
            None => (
                Credential::Rejected(Refusal::unknown("unknown API key")),
                None,
            ),
        }
    };
    app.keys
        .put(generation, digest, credential.clone(), expires_at);
    if matches!(credential, Credential::Rejected(_)) {
        app.limits.failed_lookup(ip).map_err(|retry_after_secs| {
            too_many_failures(retry_after_secs, app.limits.policy("failed_lookups"))
        })?;
    }
    Ok(credential)
}

/// Stamps the key's `last_used_at`, in its organization's scope.
async fn record_last_use(
    store: &crate::store::Store,
    key: &api_key::Model,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let tx = store.org_tx(key.org_id).await?;
    api_key::Entity::update_many()
        .col_expr(api_key::Column::LastUsedAt, Some(now).into())
        .filter(api_key::Column::Id.eq(key.id))
        .exec(tx.conn())
        .await?;
    tx.commit().await
}

fn too_many_failures(retry_after_secs: u64, policy: Option<crate::limits::Policy>) -> Error {
    Error::RateLimited {
        message: format!("too many unknown credentials, retry in {retry_after_secs} s"),
        retry_after_secs,
        policy,
    }
}
