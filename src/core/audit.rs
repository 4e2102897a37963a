//! The audit trail: who paired, enrolled, issued, rotated or revoked what,
//! and from where. Each event is written in the transaction of the change
//! it records, so the trail holds exactly what was committed. Old events
//! are removed after the retention period (`--audit-retention-days`).

use chrono::Duration;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use std::{net::IpAddr, sync::Arc};
use uuid::Uuid;

use super::{Core, new_id, page::PageRequest, validate};
use crate::{
    auth::OrgWrite,
    error::Result,
    store::{OrgTx, entities::audit_event},
};

/// What happened. The strings are the `action` values of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    DevicesCreated,
    ProvisioningTokenIssued,
    DevicePaired,
    DeviceEnrolled,
    DeviceReenrolled,
    DeviceKeyRotated,
    DeviceKeyRevoked,
    ApiKeyCreated,
    ApiKeyDeleted,
    EnrollmentCodeCreated,
    EnrollmentCodeRevoked,
    /// A valid key was refused an operation (403); counted, see `audit_tally`.
    RoleDenied,
    /// A known credential that no longer works was presented (401); counted.
    AuthFailed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::DevicesCreated => "devices.created",
            Action::ProvisioningTokenIssued => "device.provisioning_token_issued",
            Action::DevicePaired => "device.paired",
            Action::DeviceEnrolled => "device.enrolled",
            Action::DeviceReenrolled => "device.reenrolled",
            Action::DeviceKeyRotated => "device.key_rotated",
            Action::DeviceKeyRevoked => "device.key_revoked",
            Action::ApiKeyCreated => "api_key.created",
            Action::ApiKeyDeleted => "api_key.deleted",
            Action::EnrollmentCodeCreated => "enrollment_code.created",
            Action::EnrollmentCodeRevoked => "enrollment_code.revoked",
            Action::RoleDenied => "auth.role_denied",
            Action::AuthFailed => "auth.failed",
        }
    }
}

/// Who acted: a credential, named by kind and id (never its secret).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Actor {
    ApiKey(Uuid),
    DeviceKey(Uuid),
    ProvisioningToken(Uuid),
    EnrollmentCode(Uuid),
}

impl Actor {
    /// The API key behind `access`, or the operator at the command line.
    pub fn of(access: &OrgWrite) -> Self {
        Actor::ApiKey(access.key_id())
    }

    pub(crate) fn label(&self) -> String {
        match self {
            Actor::ApiKey(id) if id.is_nil() => "operator".into(),
            Actor::ApiKey(id) => format!("api_key:{id}"),
            Actor::DeviceKey(id) => format!("device_key:{id}"),
            Actor::ProvisioningToken(id) => format!("provisioning_token:{id}"),
            Actor::EnrollmentCode(id) => format!("enrollment_code:{id}"),
        }
    }
}

pub struct Entry {
    pub action: Action,
    pub actor: Actor,
    /// (`device`, `api_key`, `enrollment_code`) and its id.
    pub target: Option<(&'static str, Uuid)>,
    pub source_ip: Option<IpAddr>,
    pub count: i32,
    pub detail: Option<String>,
}

impl Entry {
    pub fn new(action: Action, actor: Actor, target: Option<(&'static str, Uuid)>) -> Self {
        Self {
            action,
            actor,
            target,
            source_ip: None,
            count: 1,
            detail: None,
        }
    }

    pub fn from_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.source_ip = ip;
        self
    }
}

/// Records what the API key behind `access` did to `target`, in `tx`.
pub async fn by_key(
    core: &Core,
    tx: &OrgTx,
    access: &OrgWrite,
    action: Action,
    target: (&'static str, Uuid),
) -> Result<()> {
    record(
        core,
        tx,
        Entry::new(action, Actor::of(access), Some(target)),
    )
    .await
}

/// Writes `entry` in `tx`: it is kept if, and only if, the change commits.
pub async fn record(core: &Core, tx: &OrgTx, entry: Entry) -> Result<()> {
    write(tx, core.clock.now(), entry).await
}

pub(crate) async fn write(
    tx: &OrgTx,
    at: chrono::DateTime<chrono::Utc>,
    entry: Entry,
) -> Result<()> {
    audit_event::Entity::insert(audit_event::ActiveModel {
        id: Set(new_id()),
        org_id: Set(tx.org_id()),
        action: Set(entry.action.as_str().into()),
        actor: Set(Some(entry.actor.label())),
        target_type: Set(entry.target.map(|(kind, _)| kind.to_owned())),
        target_id: Set(entry.target.map(|(_, id)| id)),
        source_ip: Set(entry.source_ip.map(|ip| ip.to_canonical().to_string())),
        count: Set(entry.count),
        at: Set(at),
        detail: Set(entry.detail),
    })
    .exec(tx.conn())
    .await?;
    Ok(())
}

#[derive(Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub target_id: Option<String>,
}

/// The organization's events, oldest first.
pub async fn list(
    core: &Core,
    access: &OrgWrite,
    page: PageRequest,
    filter: AuditFilter,
) -> Result<(Vec<audit_event::Model>, String)> {
    let mut select =
        audit_event::Entity::find().filter(audit_event::Column::OrgId.eq(access.org_id()));
    if let Some(action) = filter
        .action
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        select = select.filter(audit_event::Column::Action.eq(action));
    }
    if let Some(id) = validate::opt_uuid("target_id", filter.target_id.as_deref())? {
        select = select.filter(audit_event::Column::TargetId.eq(id));
    }
    let tx = core.store.org_read(access.org_id()).await?;
    let out = page
        .fetch(select, audit_event::Column::Id, tx.conn(), |m| m.id)
        .await?;
    tx.commit().await?;
    Ok(out)
}

/// Removes events older than the retention period; answers how many.
pub async fn purge(core: &Core) -> Result<u64> {
    let cutoff = core.clock.now()
        - Duration::from_std(core.settings.audit_retention).unwrap_or(Duration::MAX);
    core.store.purge_audit_events(cutoff).await
}

/// Purges once an hour until shutdown.
pub async fn retention_loop(core: Arc<Core>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = core.shutdown.cancelled() => return,
        }
        match purge(&core).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "audit events past their retention removed"),
            Err(e) => tracing::warn!(error = %e, "audit retention sweep failed"),
        }
    }
}
