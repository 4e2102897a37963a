//! Running a rule over a device's new values, one (rule, device) state at
//! a time, under a lock on its state row.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QuerySelect,
    sea_query::OnConflict,
};
use uuid::Uuid;

use super::{OPEN, RESOLVED, announce, resolve};
use crate::{
    auth::DevicePrincipal,
    core::{Core, devices, new_id, sensor_types::OFFLINE_SECONDS},
    error::{Error, Result},
    store::entities::{alert, alert_rule, alert_state, device},
};

/// One value of a series at a device time.
#[derive(Clone, Debug)]
pub struct Sample {
    pub sensor_type: String,
    pub value: f64,
    pub ts_ms: i64,
}

/// An alert this batch opened or resolved (the `/sensors` answer).
#[derive(Clone, Debug, PartialEq)]
pub struct AlertChange {
    pub alert_id: Uuid,
    pub rule_id: Uuid,
    /// "open" or "resolved".
    pub state: &'static str,
}

/// Runs the rules that watch these samples' types on the device.
pub async fn evaluate_readings(
    core: &Core,
    who: &DevicePrincipal,
    samples: Vec<Sample>,
) -> Result<Vec<AlertChange>> {
    let rules = core.alert_rules.for_org(&core.store, who.org_id).await?;
    let watched: Vec<&alert_rule::Model> = rules
        .iter()
        .filter(|r| r.sensor_type != OFFLINE_SECONDS)
        .filter(|r| samples.iter().any(|s| s.sensor_type == r.sensor_type))
        .collect();
    if watched.is_empty() {
        return Ok(Vec::new());
    }
    let device = {
        let tx = core.store.org_read(who.org_id).await?;
        let d = devices::find_by_id(&tx, who.device_id).await?;
        tx.commit().await?;
        d
    };
    let mut changes = Vec::new();
    for rule in watched.into_iter().filter(|r| in_scope(r, &device)) {
        let mut series: Vec<(f64, i64)> = samples
            .iter()
            .filter(|s| s.sensor_type == rule.sensor_type)
            .map(|s| (s.value, s.ts_ms))
            .collect();
        series.sort_by_key(|(_, ts)| *ts);
        changes.extend(evaluate_rule(core, rule, device.id, &series).await?);
    }
    Ok(changes)
}

/// Whether the rule watches this device.
pub fn in_scope(rule: &alert_rule::Model, device: &device::Model) -> bool {
    match (rule.device_id, rule.group_id, rule.location_id) {
        (Some(d), _, _) => d == device.id,
        (_, Some(g), _) => device.group_id == Some(g),
        (_, _, Some(l)) => device.location_id == Some(l),
        _ => true,
    }
}

fn passes(op: &str, value: f64, bound: f64) -> bool {
    match op {
        ">" => value > bound,
        ">=" => value >= bound,
        "<" => value < bound,
        "<=" => value <= bound,
        _ => false,
    }
}

/// Applies `series` (value, device time in ms; in time order) to the
/// (rule, device) state; returns the alerts opened or resolved.
pub async fn evaluate_rule(
    core: &Core,
    rule: &alert_rule::Model,
    device_id: Uuid,
    series: &[(f64, i64)],
) -> Result<Vec<AlertChange>> {
    let mut tx = core.store.org_tx(rule.org_id).await?;
    alert_state::Entity::insert(alert_state::ActiveModel {
        rule_id: Set(rule.id),
        device_id: Set(device_id),
        org_id: Set(rule.org_id),
        pending_since_ms: Set(None),
        cooldown_until_ms: Set(None),
        last_ts_ms: Set(None),
    })
    .on_conflict(
        OnConflict::columns([alert_state::Column::RuleId, alert_state::Column::DeviceId])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(tx.conn())
    .await?;
    let state = alert_state::Entity::find_by_id((rule.id, device_id))
        .lock_exclusive()
        .one(tx.conn())
        .await?
        .ok_or_else(|| Error::Internal("alert state row vanished".into()))?;
    let mut open = alert::Entity::find()
        .filter(alert::Column::RuleId.eq(rule.id))
        .filter(alert::Column::DeviceId.eq(device_id))
        .filter(alert::Column::ResolvedAt.is_null())
        .one(tx.conn())
        .await?;
    let clear = rule.clear_threshold.unwrap_or(rule.threshold);
    let (mut pending, mut cooldown, mut last) = (
        state.pending_since_ms,
        state.cooldown_until_ms,
        state.last_ts_ms,
    );
    let mut changes = Vec::new();
    for &(value, ts) in series {
        if last.is_some_and(|l| ts < l) {
            continue; // older than what was evaluated: history, not news
        }
        last = Some(ts);
        if let Some(current) = open.take() {
            if passes(&rule.op, value, clear) {
                open = Some(current);
                continue;
            }
            let resolved = resolve(core, &mut tx, current, Some(value)).await?;
            changes.push(AlertChange {
                alert_id: resolved.id,
                rule_id: rule.id,
                state: RESOLVED,
            });
            cooldown = Some(ts + i64::from(rule.cooldown_seconds) * 1000);
            pending = None;
            continue;
        }
        if !passes(&rule.op, value, rule.threshold) {
            pending = None;
            continue;
        }
        if cooldown.is_some_and(|c| ts < c) {
            continue;
        }
        let since = *pending.get_or_insert(ts);
        if ts - since < i64::from(rule.for_seconds) * 1000 {
            continue;
        }
        pending = None;
        let opened = alert::Entity::insert(alert::ActiveModel {
            id: Set(new_id()),
            org_id: Set(rule.org_id),
            rule_id: Set(rule.id),
            device_id: Set(device_id),
            sensor_type: Set(rule.sensor_type.clone()),
            severity: Set(rule.severity.clone()),
            state: Set(OPEN.into()),
            value: Set(value),
            opened_at: Set(core.clock.now()),
            acknowledged_at: Set(None),
            resolved_at: Set(None),
            resolved_value: Set(None),
        })
        .exec_with_returning(tx.conn())
        .await?;
        announce(core, &mut tx, &opened, "alert.opened").await?;
        changes.push(AlertChange {
            alert_id: opened.id,
            rule_id: rule.id,
            state: OPEN,
        });
        open = Some(opened);
    }
    let mut active: alert_state::ActiveModel = state.into();
    active.pending_since_ms = Set(pending);
    active.cooldown_until_ms = Set(cooldown);
    active.last_ts_ms = Set(last);
    active.update(tx.conn()).await?;
    tx.commit().await?;
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::passes;

    #[test]
    fn operators() {
        assert!(passes(">", 2.0, 1.0) && !passes(">", 1.0, 1.0));
        assert!(passes(">=", 1.0, 1.0) && !passes(">=", 0.5, 1.0));
        assert!(passes("<", 0.0, 1.0) && !passes("<", 1.0, 1.0));
        assert!(passes("<=", 1.0, 1.0) && !passes("<=", 1.5, 1.0));
    }
}
