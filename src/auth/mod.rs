//! Authentication and privileges.
//!
//! The auth layer ([`layer::authenticate`]) turns the bearer secret into a
//! [`Credential`] in the request extensions. Handlers never read headers: they
//! ask for the privilege they need ([`require_device`], [`require_read`],
//! [`require_write`]), and `core` functions take those typed privileges, so an
//! admin operation cannot be called without an admin principal.

pub mod cache;
pub mod last_use;
pub mod layer;
pub mod secret;

use std::net::IpAddr;
use uuid::Uuid;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Owner,
    Admin,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// A paired device, authenticated by its `swrm_dk_` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicePrincipal {
    pub org_id: Uuid,
    pub device_id: Uuid,
    pub key_id: Uuid,
}

/// An organization API key (`swrm_ak_`) and its role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrgKeyPrincipal {
    pub org_id: Uuid,
    pub key_id: Uuid,
    pub role: Role,
}

/// Why a credential was refused, and whose it was when it named a key
/// that exists (revoked or expired): the audit trail counts those against
/// the organization (`core::audit_tally`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub why: &'static str,
    pub owner: Option<(Uuid, crate::core::audit::Actor)>,
}

impl Refusal {
    /// A secret that matches no key.
    pub const fn unknown(why: &'static str) -> Self {
        Self { why, owner: None }
    }

    pub const fn of(why: &'static str, org_id: Uuid, actor: crate::core::audit::Actor) -> Self {
        Self {
            why,
            owner: Some((org_id, actor)),
        }
    }
}

/// What the auth layer found on a request. Its `Debug` never shows a secret.
#[derive(Clone)]
pub enum Credential {
    None,
    Device(DevicePrincipal),
    OrgKey(OrgKeyPrincipal),
    /// Well-formed `swrm_pt_` bearer; checked by `pair` itself.
    ProvisioningToken(String),
    /// Well-formed `swrm_ec_` bearer; checked by `enroll` itself.
    EnrollmentCode(String),
    /// Malformed, unknown, expired or revoked: the reason for the 401.
    Rejected(Refusal),
    /// The credential could not be checked (database down): 503, never 401,
    /// so a device does not throw away a key that may still be good.
    Unverifiable,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::None => f.write_str("None"),
            Credential::Device(d) => f.debug_tuple("Device").field(d).finish(),
            Credential::OrgKey(k) => f.debug_tuple("OrgKey").field(k).finish(),
            Credential::ProvisioningToken(_) => f.write_str("ProvisioningToken(<redacted>)"),
            Credential::EnrollmentCode(_) => f.write_str("EnrollmentCode(<redacted>)"),
            Credential::Rejected(r) => f.debug_tuple("Rejected").field(&r.why).finish(),
            Credential::Unverifiable => f.write_str("Unverifiable"),
        }
    }
}

impl Credential {
    /// The id logged for the request: a device id or an API key id.
    pub fn log_id(&self) -> Option<Uuid> {
        match self {
            Credential::Device(d) => Some(d.device_id),
            Credential::OrgKey(k) => Some(k.key_id),
            _ => None,
        }
    }
}

/// The source IP the server saw (set by the auth layer for every request).
#[derive(Clone, Copy, Debug)]
pub struct SourceIp(pub IpAddr);

/// Read access to one organization's data. Only [`require_read`] makes one.
#[derive(Clone, Copy, Debug)]
pub struct OrgRead {
    org_id: Uuid,
}

/// Write access to one organization's data. Only [`require_write`] makes one.
#[derive(Clone, Copy, Debug)]
pub struct OrgWrite {
    org_id: Uuid,
    role: Role,
    key_id: Uuid,
}

impl OrgRead {
    pub fn org_id(&self) -> Uuid {
        self.org_id
    }
}

impl OrgWrite {
    /// Whoever runs `swrm admin` on the server's database acts as an owner
    /// of any organization (they could edit the database anyway).
    pub fn operator(org_id: Uuid) -> Self {
        Self {
            org_id,
            role: Role::Owner,
            key_id: Uuid::nil(),
        }
    }
    pub fn org_id(&self) -> Uuid {
        self.org_id
    }
    /// `Owner` or `Admin`: what the caller may grant or take away.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The API key making the call.
    pub fn key_id(&self) -> Uuid {
        self.key_id
    }
    pub fn read(&self) -> OrgRead {
        OrgRead {
            org_id: self.org_id,
        }
    }
}

fn unauthenticated(credential: &Credential) -> Error {
    if let Credential::Unverifiable = credential {
        return Error::Unavailable("cannot check credentials right now, retry shortly".into());
    }
    Error::Unauthenticated(
        match credential {
            Credential::None => "missing bearer token (Authorization: Bearer <key>)",
            Credential::Rejected(r) => r.why,
            Credential::ProvisioningToken(_) | Credential::EnrollmentCode(_) => {
                "this route takes a device key or an organization API key, not a provisioning token or enrollment code"
            }
            Credential::Device(_) | Credential::OrgKey(_) | Credential::Unverifiable => {
                "unauthenticated"
            }
        }
        .to_owned(),
    )
}

pub fn require_device(credential: &Credential) -> Result<DevicePrincipal> {
    match credential {
        Credential::Device(d) => Ok(*d),
        Credential::OrgKey(_) => Err(Error::PermissionDenied(
            "device routes take a device key (swrm_dk_), not an organization API key".into(),
        )),
        other => Err(unauthenticated(other)),
    }
}

pub fn require_read(credential: &Credential) -> Result<OrgRead> {
    match credential {
        Credential::OrgKey(k) => Ok(OrgRead { org_id: k.org_id }),
        Credential::Device(_) => Err(Error::PermissionDenied(
            "admin routes take an organization API key (swrm_ak_), not a device key".into(),
        )),
        other => Err(unauthenticated(other)),
    }
}

pub fn require_write(credential: &Credential) -> Result<OrgWrite> {
    require_read(credential)?;
    match credential {
        Credential::OrgKey(k) if k.role == Role::Viewer => {
            Err(Error::PermissionDenied("a viewer key may only read".into()))
        }
        Credential::OrgKey(k) => Ok(OrgWrite {
            org_id: k.org_id,
            role: k.role,
            key_id: k.key_id,
        }),
        other => Err(unauthenticated(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_secret() {
        let token = secret::generate(secret::SecretKind::ProvisioningToken).plaintext;
        let shown = format!("{:?}", Credential::ProvisioningToken(token.clone()));
        assert!(!shown.contains(&token));
        let code = secret::generate(secret::SecretKind::EnrollmentCode).plaintext;
        assert!(!format!("{:?}", Credential::EnrollmentCode(code.clone())).contains(&code));
    }
}
