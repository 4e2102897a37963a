//! `offline_seconds` rules: the seconds since a device's last heartbeat,
//! measured by the server every few seconds for the devices that could
//! open or resolve an alert (never the whole fleet).

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, sea_query::Query};
use std::{collections::BTreeSet, sync::Arc, time::Duration};
use uuid::Uuid;

use super::{AlertChange, evaluate::evaluate_rule};
use crate::{
    core::{Core, sensor_types::OFFLINE_SECONDS},
    error::Result,
    store::entities::{alert, alert_rule, alert_state, device, device_liveness},
};

/// How often offline rules are measured.
pub const TICK: Duration = Duration::from_secs(5);

/// Measures offline rules every [`TICK`] until shutdown.
pub async fn offline_loop(core: Arc<Core>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = core.shutdown.cancelled() => return,
        }
        if let Err(e) = sweep_offline(&core).await {
            tracing::warn!(error = %e, "offline rules sweep failed");
        }
    }
}

/// One measurement of every offline rule; returns the changes.
pub async fn sweep_offline(core: &Core) -> Result<Vec<AlertChange>> {
    // This replica's heartbeats first, so a device it just heard from is
    // not found offline (other replicas flush within `FLUSH_EVERY`).
    core.liveness.flush(core).await?;
    // Rules of every organization: a server-side job, not a caller's read.
    let rules = core.store.live_alert_rules(OFFLINE_SECONDS).await?;
    let mut changes = Vec::new();
    for rule in rules {
        changes.extend(sweep_rule(core, &rule).await?);
    }
    Ok(changes)
}

async fn sweep_rule(core: &Core, rule: &alert_rule::Model) -> Result<Vec<AlertChange>> {
    let now = core.clock.now();
    // Devices past the lower of the two thresholds may open (or stay
    // open); devices with an open alert or a pending condition may change.
    let bound = rule
        .threshold
        .min(rule.clear_threshold.unwrap_or(rule.threshold));
    let cutoff = now - chrono::Duration::milliseconds((bound.max(0.0) * 1000.0) as i64);
    let tx = core.store.org_read(rule.org_id).await?;
    // Devices last heard before the cutoff, on the (organization, last
    // seen) index; narrowed to the rule's device, group or location.
    let mut select = device_liveness::Entity::find()
        .filter(device_liveness::Column::OrgId.eq(rule.org_id))
        .filter(device_liveness::Column::LastSeenAt.lte(cutoff));
    if let Some(d) = rule.device_id {
        select = select.filter(device_liveness::Column::DeviceId.eq(d));
    }
    if rule.group_id.is_some() || rule.location_id.is_some() {
        let mut placed = Query::select();
        placed
            .column(device::Column::Id)
            .from(device::Entity)
            .and_where(device::Column::OrgId.eq(rule.org_id));
        if let Some(g) = rule.group_id {
            placed.and_where(device::Column::GroupId.eq(g));
        }
        if let Some(l) = rule.location_id {
            placed.and_where(device::Column::LocationId.eq(l));
        }
        select = select.filter(device_liveness::Column::DeviceId.in_subquery(placed));
    }
    let mut ids: BTreeSet<Uuid> = select
        .select_only()
        .column(device_liveness::Column::DeviceId)
        .into_tuple::<Uuid>()
        .all(tx.conn())
        .await?
        .into_iter()
        .collect();
    ids.extend(
        alert::Entity::find()
            .filter(alert::Column::RuleId.eq(rule.id))
            // Open alerts: the partial index `uq_alerts_open` holds them.
            .filter(alert::Column::ResolvedAt.is_null())
            .select_only()
            .column(alert::Column::DeviceId)
            .into_tuple::<Uuid>()
            .all(tx.conn())
            .await?,
    );
    ids.extend(
        alert_state::Entity::find()
            .filter(alert_state::Column::RuleId.eq(rule.id))
            .filter(alert_state::Column::PendingSinceMs.is_not_null())
            .select_only()
            .column(alert_state::Column::DeviceId)
            .into_tuple::<Uuid>()
            .all(tx.conn())
            .await?,
    );
    let seen: Vec<(Uuid, chrono::DateTime<chrono::Utc>)> = device_liveness::Entity::find()
        .filter(device_liveness::Column::DeviceId.is_in(ids))
        .select_only()
        .column(device_liveness::Column::DeviceId)
        .column(device_liveness::Column::LastSeenAt)
        .into_tuple()
        .all(tx.conn())
        .await?;
    tx.commit().await?;
    let mut changes = Vec::new();
    for (id, last_seen) in seen {
        let offline = (now - last_seen).num_milliseconds().max(0) as f64 / 1000.0;
        changes.extend(evaluate_rule(core, rule, id, &[(offline, now.timestamp_millis())]).await?);
    }
    Ok(changes)
}
