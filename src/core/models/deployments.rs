//! Deployments: a model to a list of devices, a group, a location or the
//! whole organization. Each device reached gets a target row and a
//! `deploy_model` command naming the deployment; a `model_swap` event with
//! the deployment's id marks it active there. A device's model is its
//! newest target's: a newer deployment supersedes older ones for the
//! devices it reaches. A group, location or organization deployment also
//! reaches devices that join it later ([`reach_device_in`]).

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
    sea_query::Expr,
};
use serde_json::json;
use std::collections::HashMap;
use uuid::Uuid;

use super::find as find_model;
use crate::{
    auth::{DevicePrincipal, OrgRead, OrgWrite},
    bus::Event,
    core::{
        Core, commands, new_id,
        page::{Cursor, PageRequest},
        places, validate,
    },
    error::{Error, Result},
    store::{
        OrgTx,
        entities::{command, deployment, deployment_target, device, model_artifact},
    },
};

pub const ACTIVE_DEPLOYMENT: &str = "active";
pub const SUPERSEDED_DEPLOYMENT: &str = "superseded";
/// The command each reached device gets.
pub const DEPLOY_MODEL: &str = "deploy_model";
/// Device ids per statement when a deployment reaches many devices.
const CHUNK: usize = 500;

pub struct NewDeployment {
    pub model_id: String,
    pub device_ids: Vec<String>,
    pub group_id: Option<String>,
    pub location_id: Option<String>,
    pub all_devices: bool,
}

/// Per-device states of a deployment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rollup {
    pub pending: u32,
    pub delivered: u32,
    pub active: u32,
    pub failed: u32,
    pub superseded: u32,
}

impl Rollup {
    fn add(&mut self, status: &str, n: u32) {
        let slot = match status {
            "pending" => &mut self.pending,
            "delivered" => &mut self.delivered,
            "active" => &mut self.active,
            "failed" => &mut self.failed,
            _ => &mut self.superseded,
        };
        *slot += n;
    }

    pub fn total(&self) -> u32 {
        self.pending + self.delivered + self.active + self.failed + self.superseded
    }
}

pub struct DeploymentView {
    pub row: deployment::Model,
    pub rollup: Rollup,
}

/// A device's state in a deployment, from its target row and command.
pub fn device_status(superseded: bool, active: bool, command_status: &str) -> &'static str {
    if superseded {
        "superseded"
    } else if active {
        "active"
    } else {
        match command_status {
            commands::QUEUED => "pending",
            commands::DELIVERED | commands::RECEIVED | commands::SUCCEEDED => "delivered",
            _ => "failed",
        }
    }
}

enum Target {
    Devices(Vec<Uuid>),
    Group(Uuid),
    Location(Uuid),
    All,
}

fn target_of(input: &NewDeployment) -> Result<Target> {
    let group = validate::opt_uuid("group_id", input.group_id.as_deref())?;
    let location = validate::opt_uuid("location_id", input.location_id.as_deref())?;
    let given = usize::from(!input.device_ids.is_empty())
        + usize::from(group.is_some())
        + usize::from(location.is_some())
        + usize::from(input.all_devices);
    if given != 1 {
        return Err(Error::invalid(
            "give exactly one target: device_ids, group_id, location_id or all_devices",
        ));
    }
    if let Some(g) = group {
        return Ok(Target::Group(g));
    }
    if let Some(l) = location {
        return Ok(Target::Location(l));
    }
    if input.all_devices {
        return Ok(Target::All);
    }
    let mut ids = Vec::with_capacity(input.device_ids.len());
    for (i, id) in input.device_ids.iter().enumerate() {
        let id = validate::uuid(&format!("device_ids[{i}]"), id)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(Target::Devices(ids))
}

/// Creates the deployment and queues its commands, in one transaction.
pub async fn create(
    core: &Core,
    access: &OrgWrite,
    input: NewDeployment,
) -> Result<DeploymentView> {
    let model_id = validate::uuid("model_id", &input.model_id)?;
    let target = target_of(&input)?;
    let mut tx = core.store.org_tx(access.org_id()).await?;
    let model = find_model(&tx, model_id).await?;
    let reached = match &target {
        Target::Devices(ids) => {
            // One query for the list; the first id not found is named (the
            // list is deduplicated, so by value rather than position).
            let found: std::collections::HashSet<Uuid> =
                device_ids(&tx, device::Column::Id.is_in(ids.iter().copied()))
                    .await?
                    .into_iter()
                    .collect();
            if let Some(missing) = ids.iter().find(|id| !found.contains(id)) {
                return Err(Error::NotFound(format!("device_ids: no device {missing}")));
            }
            ids.clone()
        }
        Target::Group(g) => {
            places::find_group(&tx, *g).await?;
            device_ids(&tx, device::Column::GroupId.eq(*g)).await?
        }
        Target::Location(l) => {
            places::find_location(&tx, *l).await?;
            device_ids(&tx, device::Column::LocationId.eq(*l)).await?
        }
        Target::All => device_ids(&tx, Expr::value(true)).await?,
    };
    let now_ms = core.clock.now().timestamp_millis();
    let (group_id, location_id) = match target {
        Target::Group(g) => (Some(g), None),
        Target::Location(l) => (None, Some(l)),
        _ => (None, None),
    };
    let row = deployment::Model {
        org_id: tx.org_id(),
        id: new_id(),
        model_id,
        device_ids: match &target {
            Target::Devices(ids) => json!(ids).to_string(),
            _ => "[]".into(),
        },
        group_id,
        location_id,
        all_devices: matches!(target, Target::All),
        status: ACTIVE_DEPLOYMENT.into(),
        created_ms: now_ms,
    };
    deployment::Entity::insert(deployment::ActiveModel::from(row.clone()))
        .exec_without_returning(tx.conn())
        .await?;
    for chunk in reached.chunks(CHUNK) {
        supersede_targets(&tx, chunk).await?;
    }
    for device_id in &reached {
        reach(core, &mut tx, &row, &model, *device_id).await?;
    }
    retire_older(&tx, &row).await?;
    tx.publish(Event::DeploymentChanged {
        org_id: tx.org_id(),
    })
    .await?;
    let rollup = Rollup {
        pending: u32::try_from(reached.len()).unwrap_or(u32::MAX),
        ..Rollup::default()
    };
    tx.commit().await?;
    Ok(DeploymentView { row, rollup })
}

async fn device_ids(
    tx: &OrgTx,
    filter: impl sea_orm::sea_query::IntoCondition,
) -> Result<Vec<Uuid>> {
    Ok(device::Entity::find()
        .select_only()
        .column(device::Column::Id)
        .filter(device::Column::OrgId.eq(tx.org_id()))
        .filter(filter)
        .order_by_asc(device::Column::Id)
        .into_tuple::<Uuid>()
        .all(tx.conn())
        .await?)
}

/// Marks the current targets of these devices superseded.
async fn supersede_targets(tx: &OrgTx, device_ids: &[Uuid]) -> Result<()> {
    deployment_target::Entity::update_many()
        .col_expr(deployment_target::Column::Superseded, Expr::value(true))
        .filter(deployment_target::Column::OrgId.eq(tx.org_id()))
        .filter(deployment_target::Column::DeviceId.is_in(device_ids.iter().copied()))
        .filter(deployment_target::Column::Superseded.eq(false))
        .exec(tx.conn())
        .await?;
    Ok(())
}

/// Queues the deployment's command for one device and records the target.
async fn reach(
    core: &Core,
    tx: &mut OrgTx,
    row: &deployment::Model,
    model: &model_artifact::Model,
    device_id: Uuid,
) -> Result<()> {
    let queued = commands::enqueue_in(
        core,
        tx,
        device_id,
        commands::NewCommand {
            kind: DEPLOY_MODEL.into(),
            payload: Some(json!({
                "deployment_id": row.id,
                "model_id": model.id,
                "name": model.name,
                "version": model.version,
                "format": model.format,
                "sha256": model.sha256,
                "size_bytes": model.size_bytes,
            })),
            ttl_seconds: None,
            max_attempts: None,
            idempotency_key: Some(format!("deployment:{}", row.id)),
            deployment_id: Some(row.id),
        },
    )
    .await?;
    deployment_target::Entity::insert(deployment_target::ActiveModel::from(
        deployment_target::Model {
            org_id: tx.org_id(),
            deployment_id: row.id,
            device_id,
            command_id: queued.id,
            created_ms: row.created_ms,
            active_ms: None,
            superseded: false,
        },
    ))
    .exec_without_returning(tx.conn())
    .await?;
    Ok(())
}

/// Older deployments the new one replaces entirely: same group, same
/// location, anything under an organization-wide one; and device-list
/// deployments with no device left.
async fn retire_older(tx: &OrgTx, new: &deployment::Model) -> Result<()> {
    let older = deployment::Entity::find()
        .filter(deployment::Column::OrgId.eq(tx.org_id()))
        .filter(deployment::Column::Status.eq(ACTIVE_DEPLOYMENT))
        .filter(deployment::Column::Id.ne(new.id))
        .all(tx.conn())
        .await?;
    for d in older {
        let covered = new.all_devices
            || (new.group_id.is_some() && d.group_id == new.group_id)
            || (new.location_id.is_some() && d.location_id == new.location_id);
        let open_ended = d.all_devices || d.group_id.is_some() || d.location_id.is_some();
        let retire = covered || (!open_ended && live_targets(tx, d.id).await? == 0);
        if retire {
            deployment::Entity::update_many()
                .col_expr(
                    deployment::Column::Status,
                    Expr::value(SUPERSEDED_DEPLOYMENT),
                )
                .filter(deployment::Column::OrgId.eq(tx.org_id()))
                .filter(deployment::Column::Id.eq(d.id))
                .exec(tx.conn())
                .await?;
        }
    }
    Ok(())
}

async fn live_targets(tx: &OrgTx, deployment_id: Uuid) -> Result<u64> {
    use sea_orm::PaginatorTrait;
    Ok(deployment_target::Entity::find()
        .filter(deployment_target::Column::OrgId.eq(tx.org_id()))
        .filter(deployment_target::Column::DeploymentId.eq(deployment_id))
        .filter(deployment_target::Column::Superseded.eq(false))
        .count(tx.conn())
        .await?)
}

/// In the transaction that creates a device or moves it to another group
/// or location: the newest active deployment that now covers it (its
/// group's, its location's or the organization's) reaches it, unless the
/// device already has that one or a newer one.
/// Whether any active deployment of the organization reaches devices by
/// group, location or "all": if none, a new device needs no command.
pub async fn any_active(tx: &OrgTx) -> Result<bool> {
    let by_target = sea_orm::Condition::any()
        .add(deployment::Column::AllDevices.eq(true))
        .add(deployment::Column::GroupId.is_not_null())
        .add(deployment::Column::LocationId.is_not_null());
    Ok(deployment::Entity::find()
        .filter(deployment::Column::OrgId.eq(tx.org_id()))
        .filter(deployment::Column::Status.eq(ACTIVE_DEPLOYMENT))
        .filter(by_target)
        .one(tx.conn())
        .await?
        .is_some())
}

pub async fn reach_device_in(core: &Core, tx: &mut OrgTx, dev: &device::Model) -> Result<()> {
    let mut covers = sea_orm::Condition::any().add(deployment::Column::AllDevices.eq(true));
    if let Some(g) = dev.group_id {
        covers = covers.add(deployment::Column::GroupId.eq(g));
    }
    if let Some(l) = dev.location_id {
        covers = covers.add(deployment::Column::LocationId.eq(l));
    }
    let Some(newest) = deployment::Entity::find()
        .filter(deployment::Column::OrgId.eq(tx.org_id()))
        .filter(deployment::Column::Status.eq(ACTIVE_DEPLOYMENT))
        .filter(covers)
        .order_by_desc(deployment::Column::CreatedMs)
        .order_by_desc(deployment::Column::Id)
        .one(tx.conn())
        .await?
    else {
        return Ok(());
    };
    if let Some(current) = current_target(tx, dev.id).await?
        && current.created_ms >= newest.created_ms
    {
        return Ok(());
    }
    let model = find_model(tx, newest.model_id).await?;
    supersede_targets(tx, &[dev.id]).await?;
    reach(core, tx, &newest, &model, dev.id).await?;
    tx.publish(Event::DeploymentChanged {
        org_id: tx.org_id(),
    })
    .await?;
    Ok(())
}

/// The device's newest target: the deployment its model comes from.
async fn current_target(tx: &OrgTx, device_id: Uuid) -> Result<Option<deployment_target::Model>> {
    Ok(deployment_target::Entity::find()
        .filter(deployment_target::Column::OrgId.eq(tx.org_id()))
        .filter(deployment_target::Column::DeviceId.eq(device_id))
        .order_by_desc(deployment_target::Column::CreatedMs)
        .order_by_desc(deployment_target::Column::DeploymentId)
        .one(tx.conn())
        .await?)
}

/// The deployment and model this device should run, if any. Read with
/// the device's `/config` (and cached with it: `/model` answers from there).
pub async fn for_device_in(
    tx: &OrgTx,
    device_id: Uuid,
) -> Result<Option<(Uuid, model_artifact::Model)>> {
    let Some(target) = current_target(tx, device_id).await? else {
        return Ok(None);
    };
    let Some(d) = deployment::Entity::find_by_id((tx.org_id(), target.deployment_id))
        .one(tx.conn())
        .await?
    else {
        return Ok(None);
    };
    Ok(Some((d.id, find_model(tx, d.model_id).await?)))
}

/// A `model_swap` event: the device runs this deployment's model now.
/// Unknown deployments (or another device's) are ignored: the event is
/// stored either way.
pub async fn mark_active(
    core: &Core,
    who: &DevicePrincipal,
    deployment_ids: &[Uuid],
) -> Result<()> {
    if deployment_ids.is_empty() {
        return Ok(());
    }
    let tx = core.store.org_tx(who.org_id).await?;
    deployment_target::Entity::update_many()
        .col_expr(
            deployment_target::Column::ActiveMs,
            Expr::value(core.clock.now().timestamp_millis()),
        )
        .filter(deployment_target::Column::OrgId.eq(who.org_id))
        .filter(deployment_target::Column::DeviceId.eq(who.device_id))
        .filter(deployment_target::Column::DeploymentId.is_in(deployment_ids.iter().copied()))
        .filter(deployment_target::Column::ActiveMs.is_null())
        .exec(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn list(
    core: &Core,
    access: &OrgRead,
    page: PageRequest,
) -> Result<(Vec<DeploymentView>, String)> {
    let tx = core.store.org_read(access.org_id()).await?;
    let select = deployment::Entity::find().filter(deployment::Column::OrgId.eq(tx.org_id()));
    let (rows, next) = page
        .fetch(select, deployment::Column::Id, tx.conn(), |d| d.id)
        .await?;
    let mut rollups = rollups(&tx, &rows.iter().map(|d| d.id).collect::<Vec<_>>()).await?;
    tx.commit().await?;
    let views = rows
        .into_iter()
        .map(|row| DeploymentView {
            rollup: rollups.remove(&row.id).unwrap_or_default(),
            row,
        })
        .collect();
    Ok((views, next))
}

pub async fn get(core: &Core, access: &OrgRead, id: &str) -> Result<DeploymentView> {
    let id = validate::path_id("deployment", id)?;
    let tx = core.store.org_read(access.org_id()).await?;
    let row = find(&tx, id).await?;
    let rollup = rollups(&tx, &[id]).await?.remove(&id).unwrap_or_default();
    tx.commit().await?;
    Ok(DeploymentView { row, rollup })
}

async fn find(tx: &OrgTx, id: Uuid) -> Result<deployment::Model> {
    deployment::Entity::find_by_id((tx.org_id(), id))
        .one(tx.conn())
        .await?
        .ok_or_else(|| Error::not_found("deployment"))
}

/// One device of a deployment.
pub struct TargetView {
    pub device_id: Uuid,
    pub command_id: Uuid,
    pub status: &'static str,
    pub active_ms: Option<i64>,
}

/// The deployment's devices, in device id order.
pub async fn devices(
    core: &Core,
    access: &OrgRead,
    id: &str,
    page: PageRequest,
) -> Result<(Vec<TargetView>, String)> {
    let id = validate::path_id("deployment", id)?;
    let tx = core.store.org_read(access.org_id()).await?;
    find(&tx, id).await?;
    let mut select = deployment_target::Entity::find()
        .filter(deployment_target::Column::OrgId.eq(tx.org_id()))
        .filter(deployment_target::Column::DeploymentId.eq(id));
    if let Some(after) = page.after {
        select = select.filter(deployment_target::Column::DeviceId.gt(after));
    }
    let mut rows = select
        .order_by_asc(deployment_target::Column::DeviceId)
        .limit(page.size + 1)
        .all(tx.conn())
        .await?;
    let next = if rows.len() as u64 > page.size {
        rows.truncate(page.size as usize);
        rows.last().map_or(String::new(), |r| {
            Cursor {
                key: 0,
                id: r.device_id,
            }
            .encode()
        })
    } else {
        String::new()
    };
    let statuses: HashMap<Uuid, String> = command::Entity::find()
        .filter(command::Column::OrgId.eq(tx.org_id()))
        .filter(command::Column::Id.is_in(rows.iter().map(|r| r.command_id)))
        .all(tx.conn())
        .await?
        .into_iter()
        .map(|c| (c.id, c.status))
        .collect();
    tx.commit().await?;
    let views = rows
        .into_iter()
        .map(|r| TargetView {
            device_id: r.device_id,
            command_id: r.command_id,
            status: device_status(
                r.superseded,
                r.active_ms.is_some(),
                statuses.get(&r.command_id).map_or("", String::as_str),
            ),
            active_ms: r.active_ms,
        })
        .collect();
    Ok((views, next))
}

/// Per-device states of these deployments, counted in the database.
async fn rollups(tx: &OrgTx, ids: &[Uuid]) -> Result<HashMap<Uuid, Rollup>> {
    let mut out: HashMap<Uuid, Rollup> = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let backend = tx.conn().get_database_backend();
    let placeholders: Vec<String> = (0..ids.len())
        .map(|i| match backend {
            sea_orm::DatabaseBackend::Postgres => format!("${}", i + 2),
            _ => "?".to_owned(),
        })
        .collect();
    let first = match backend {
        sea_orm::DatabaseBackend::Postgres => "$1",
        _ => "?",
    };
    let sql = format!(
        "SELECT t.deployment_id, t.superseded, t.active_ms IS NOT NULL, c.status, COUNT(*) \
         FROM deployment_targets t JOIN commands c ON c.id = t.command_id \
         WHERE t.org_id = {first} AND t.deployment_id IN ({}) \
         GROUP BY t.deployment_id, t.superseded, t.active_ms IS NOT NULL, c.status",
        placeholders.join(", ")
    );
    let mut values: Vec<sea_orm::Value> = vec![tx.org_id().into()];
    values.extend(ids.iter().map(|id| sea_orm::Value::from(*id)));
    let rows = tx
        .conn()
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    for r in rows {
        let id: Uuid = r.try_get_by_index(0)?;
        let superseded: bool = r.try_get_by_index(1)?;
        let active: bool = r.try_get_by_index(2)?;
        let status: String = r.try_get_by_index(3)?;
        let n: i64 = r.try_get_by_index(4)?;
        out.entry(id).or_default().add(
            device_status(superseded, active, &status),
            u32::try_from(n).unwrap_or(u32::MAX),
        );
    }
    Ok(out)
}
