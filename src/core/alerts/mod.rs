//! Alert rules and alerts. A rule watches one sensor type (or
//! `offline_seconds`, which the server measures) on every device of the
//! organization, a group, a location or one device. Each (rule, device)
//! has persisted state, so a restart neither loses nor repeats an alert:
//!
//! - the condition (`value op threshold`) must hold for `for_seconds` of
//!   reading time before an alert opens;
//! - an open alert resolves once the value no longer passes
//!   `op clear_threshold` (hysteresis; default the threshold);
//! - after resolving, the rule waits `cooldown_seconds` before opening
//!   another for that device.
//!
//! Evaluation runs under a lock on the state row (PostgreSQL `FOR UPDATE`,
//! SQLite's single writer), and a unique index allows one unresolved alert
//! per (rule, device): with several replicas, an alert opens once. Changes
//! are announced on the bus and queued for the organization's webhooks in
//! the same transaction.

mod evaluate;
mod offline;
mod rules;

pub use evaluate::{AlertChange, Sample, evaluate_readings};
pub use offline::{offline_loop, sweep_offline};
pub use rules::{NewRule, RulesCache, create_rule, delete_rule, list_rules};

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use super::{Core, page::PageRequest, validate, webhooks};
use crate::{
    auth::{OrgRead, OrgWrite},
    bus::Event,
    error::{Error, Result},
    store::{OrgTx, entities::alert},
};

pub const OPEN: &str = "open";
pub const ACKNOWLEDGED: &str = "acknowledged";
pub const RESOLVED: &str = "resolved";

pub struct AlertFilter {
    pub state: Option<String>,
    pub device_id: Option<String>,
    pub rule_id: Option<String>,
}

pub async fn list_alerts(
    core: &Core,
    access: &OrgRead,
    filter: AlertFilter,
    page: PageRequest,
) -> Result<(Vec<alert::Model>, String)> {
    let tx = core.store.org_read(access.org_id()).await?;
    let mut select = alert::Entity::find().filter(alert::Column::OrgId.eq(tx.org_id()));
    if let Some(state) = filter.state.filter(|s| !s.is_empty()) {
        select = select.filter(alert::Column::State.eq(state));
    }
    if let Some(id) = validate::opt_uuid("device_id", filter.device_id.as_deref())? {
        select = select.filter(alert::Column::DeviceId.eq(id));
    }
    if let Some(id) = validate::opt_uuid("rule_id", filter.rule_id.as_deref())? {
        select = select.filter(alert::Column::RuleId.eq(id));
    }
    let out = page
        .fetch(select, alert::Column::Id, tx.conn(), |m| m.id)
        .await?;
    tx.commit().await?;
    Ok(out)
}

/// Open → acknowledged. Acknowledging again answers the same; a resolved
/// alert cannot be acknowledged (409).
pub async fn acknowledge(core: &Core, access: &OrgWrite, id: &str) -> Result<alert::Model> {
    let id = validate::path_id("alert", id)?;
    let mut tx = core.store.org_tx(access.org_id()).await?;
    let found = alert::Entity::find_by_id(id)
        .filter(alert::Column::OrgId.eq(tx.org_id()))
        .one(tx.conn())
        .await?
        .ok_or_else(|| Error::not_found("alert"))?;
    match found.state.as_str() {
        ACKNOWLEDGED => {
            tx.commit().await?;
            Ok(found)
        }
        RESOLVED => Err(Error::FailedPrecondition(
            "the alert is already resolved".into(),
        )),
        _ => {
            let mut active: alert::ActiveModel = found.into();
            active.state = Set(ACKNOWLEDGED.into());
            active.acknowledged_at = Set(Some(core.clock.now()));
            let updated = active.update(tx.conn()).await?;
            announce(core, &mut tx, &updated, "alert.acknowledged").await?;
            tx.commit().await?;
            Ok(updated)
        }
    }
}

/// Resolves an alert inside `tx` (a rule's condition cleared, or the rule
/// was deleted).
async fn resolve(
    core: &Core,
    tx: &mut OrgTx,
    open: alert::Model,
    value: Option<f64>,
) -> Result<alert::Model> {
    let mut active: alert::ActiveModel = open.into();
    active.state = Set(RESOLVED.into());
    active.resolved_at = Set(Some(core.clock.now()));
    active.resolved_value = Set(value);
    let resolved = active.update(tx.conn()).await?;
    announce(core, tx, &resolved, "alert.resolved").await?;
    Ok(resolved)
}

/// Tells the bus and the organization's webhooks, when `tx` commits.
async fn announce(core: &Core, tx: &mut OrgTx, alert: &alert::Model, event: &str) -> Result<()> {
    webhooks::enqueue(core, tx, event, alert_payload(alert)).await?;
    tx.publish(Event::AlertChanged {
        org_id: alert.org_id,
        alert_id: alert.id,
    })
    .await
}

/// The alert as webhooks receive it.
pub fn alert_payload(a: &alert::Model) -> serde_json::Value {
    let time = |t: Option<chrono::DateTime<Utc>>| t.map(super::rfc3339);
    serde_json::json!({
        "id": a.id,
        "rule_id": a.rule_id,
        "device_id": a.device_id,
        "sensor_type": a.sensor_type,
        "severity": a.severity,
        "state": a.state,
        "value": a.value,
        "opened_at": super::rfc3339(a.opened_at),
        "acknowledged_at": time(a.acknowledged_at),
        "resolved_at": time(a.resolved_at),
        "resolved_value": a.resolved_value,
    })
}

pub async fn get_alert(core: &Core, access: &OrgRead, id: uuid::Uuid) -> Result<alert::Model> {
    let tx = core.store.org_read(access.org_id()).await?;
    let found = alert::Entity::find_by_id(id)
        .filter(alert::Column::OrgId.eq(tx.org_id()))
        .one(tx.conn())
        .await?
        .ok_or_else(|| Error::not_found("alert"))?;
    tx.commit().await?;
    Ok(found)
}
