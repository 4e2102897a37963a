//! Alert rules: create, list, delete, and an in-memory copy per
//! organization for the ingest path (dropped when the rules change, on
//! every replica, through the bus).

use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};
use uuid::Uuid;

use super::resolve;
use crate::{
    auth::{OrgRead, OrgWrite},
    bus::Event,
    core::{Core, new_id, page::PageRequest, places, sensor_types::OFFLINE_SECONDS, validate},
    error::{Error, Result},
    store::{
        Store,
        entities::{alert, alert_rule},
    },
};

/// Each organization's live rules, loaded on first use.
#[derive(Default)]
pub struct RulesCache {
    by_org: RwLock<HashMap<Uuid, Arc<Vec<alert_rule::Model>>>>,
}

impl RulesCache {
    pub fn forget(&self, org: Option<Uuid>) {
        let mut by_org = self.by_org.write().expect("rules cache");
        match org {
            Some(org) => {
                by_org.remove(&org);
            }
            None => by_org.clear(),
        }
    }

    pub async fn for_org(
        &self,
        store: &Store,
        org_id: Uuid,
    ) -> Result<Arc<Vec<alert_rule::Model>>> {
        if let Some(rules) = self.by_org.read().expect("rules cache").get(&org_id) {
            return Ok(rules.clone());
        }
        let tx = store.org_read(org_id).await?;
        let rules = alert_rule::Entity::find()
            .filter(alert_rule::Column::OrgId.eq(org_id))
            .filter(alert_rule::Column::DeletedAt.is_null())
            .order_by_asc(alert_rule::Column::Id)
            .all(tx.conn())
            .await?;
        tx.commit().await?;
        let rules = Arc::new(rules);
        self.by_org
            .write()
            .expect("rules cache")
            .insert(org_id, rules.clone());
        Ok(rules)
    }
}

pub struct NewRule {
    pub name: String,
    pub sensor_type: String,
    pub op: String,
    pub threshold: f64,
    pub clear_threshold: Option<f64>,
    pub for_seconds: u32,
    pub cooldown_seconds: u32,
    pub severity: Option<String>,
    pub device_id: Option<String>,
    pub group_id: Option<String>,
    pub location_id: Option<String>,
}

pub async fn create_rule(
    core: &Core,
    access: &OrgWrite,
    input: NewRule,
) -> Result<alert_rule::Model> {
    let name = validate::name("name", &input.name)?;
    if input.sensor_type == OFFLINE_SECONDS && !input.op.starts_with('>') {
        return Err(Error::invalid(format!(
            "{OFFLINE_SECONDS} rules take op \">\" or \">=\" (offline longer than)"
        )));
    }
    if input.sensor_type != OFFLINE_SECONDS {
        let types = core
            .sensor_types
            .for_org(&core.store, access.org_id())
            .await?;
        if !types.contains_key(&input.sensor_type) {
            return Err(Error::invalid(format!(
                "sensor_type {:?} is not a registered sensor type (nor {OFFLINE_SECONDS:?})",
                input.sensor_type
            )));
        }
    }
    if let Some(clear) = input.clear_threshold {
        let above = input.op.starts_with('>');
        if (above && clear > input.threshold) || (!above && clear < input.threshold) {
            return Err(Error::invalid(format!(
                "clear_threshold must be on the other side of threshold: {} {} for op {:?}",
                if above { "at most" } else { "at least" },
                input.threshold,
                input.op
            )));
        }
    }
    let device_id = validate::opt_uuid("device_id", input.device_id.as_deref())?;
    let group_id = validate::opt_uuid("group_id", input.group_id.as_deref())?;
    let location_id = validate::opt_uuid("location_id", input.location_id.as_deref())?;
    let scopes = [device_id, group_id, location_id].iter().flatten().count();
    if scopes > 1 {
        return Err(Error::invalid(
            "at most one of device_id, group_id and location_id",
        ));
    }
    let mut tx = core.store.org_tx(access.org_id()).await?;
    if let Some(id) = device_id {
        crate::core::devices::find_by_id(&tx, id).await?;
    }
    if let Some(id) = group_id {
        places::find_group(&tx, id).await?;
    }
    if let Some(id) = location_id {
        places::find_location(&tx, id).await?;
    }
    let rule = alert_rule::Entity::insert(alert_rule::ActiveModel {
        id: Set(new_id()),
        org_id: Set(tx.org_id()),
        name: Set(name),
        sensor_type: Set(input.sensor_type),
        op: Set(input.op),
        threshold: Set(input.threshold),
        clear_threshold: Set(input.clear_threshold),
        for_seconds: Set(i32::try_from(input.for_seconds).unwrap_or(i32::MAX)),
        cooldown_seconds: Set(i32::try_from(input.cooldown_seconds).unwrap_or(i32::MAX)),
        severity: Set(input.severity.unwrap_or_else(|| "warning".into())),
        device_id: Set(device_id),
        group_id: Set(group_id),
        location_id: Set(location_id),
        created_at: Set(core.clock.now()),
        deleted_at: Set(None),
    })
    .exec_with_returning(tx.conn())
    .await?;
    tx.publish(Event::AlertRulesChanged {
        org_id: tx.org_id(),
    })
    .await?;
    tx.commit().await?;
    Ok(rule)
}

pub async fn list_rules(
    core: &Core,
    access: &OrgRead,
    page: PageRequest,
) -> Result<(Vec<alert_rule::Model>, String)> {
    let tx = core.store.org_read(access.org_id()).await?;
    let select = alert_rule::Entity::find()
        .filter(alert_rule::Column::OrgId.eq(tx.org_id()))
        .filter(alert_rule::Column::DeletedAt.is_null());
    let out = page
        .fetch(select, alert_rule::Column::Id, tx.conn(), |m| m.id)
        .await?;
    tx.commit().await?;
    Ok(out)
}

/// Deletes the rule (kept for the history of its alerts) and resolves its
/// open alerts.
pub async fn delete_rule(core: &Core, access: &OrgWrite, id: &str) -> Result<()> {
    let id = validate::path_id("alert rule", id)?;
    let mut tx = core.store.org_tx(access.org_id()).await?;
    let done = alert_rule::Entity::update_many()
        .col_expr(alert_rule::Column::DeletedAt, Some(core.clock.now()).into())
        .filter(alert_rule::Column::Id.eq(id))
        .filter(alert_rule::Column::OrgId.eq(tx.org_id()))
        .filter(alert_rule::Column::DeletedAt.is_null())
        .exec(tx.conn())
        .await?;
    if done.rows_affected == 0 {
        return Err(Error::not_found("alert rule"));
    }
    let open = alert::Entity::find()
        .filter(alert::Column::OrgId.eq(tx.org_id()))
        .filter(alert::Column::RuleId.eq(id))
        .filter(alert::Column::ResolvedAt.is_null())
        .all(tx.conn())
        .await?;
    for a in open {
        resolve(core, &mut tx, a, None).await?;
    }
    tx.publish(Event::AlertRulesChanged {
        org_id: tx.org_id(),
    })
    .await?;
    tx.commit().await?;
    Ok(())
}
