//! Devices as operators manage them: create, list, assign, and their secrets
//! (provisioning tokens, device keys).

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, EntityTrait, ExprTrait, JoinType, QueryFilter, QuerySelect,
    sea_query::{Expr, Query, SimpleExpr},
};
use std::collections::HashMap;
use uuid::Uuid;

use super::{
    Core,
    audit::{self, Action},
    new_id,
    page::PageRequest,
    places, validate,
    writer::Liveness,
};
use crate::{
    auth::{OrgRead, OrgWrite, secret},
    bus::Event,
    error::{Error, Result},
    store::{
        OrgTx,
        entities::{device, device_key, device_liveness, device_tag, provisioning_token},
    },
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceStatus {
    Online,
    Offline,
    NeverSeen,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Online => "online",
            DeviceStatus::Offline => "offline",
            DeviceStatus::NeverSeen => "never_seen",
        }
    }
}

/// Online while the last heartbeat is within three heartbeat intervals.
pub fn status(
    device: &device::Model,
    interval: std::time::Duration,
    now: DateTime<Utc>,
) -> DeviceStatus {
    match device.last_seen_at {
        None => DeviceStatus::NeverSeen,
        Some(seen) if now - seen <= Duration::from_std(interval * 3).unwrap_or(Duration::MAX) => {
            DeviceStatus::Online
        }
        Some(_) => DeviceStatus::Offline,
    }
}

pub use super::device_batch::NewDevice;

pub struct ProvisioningToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

pub async fn create_device(
    core: &Core,
    access: &OrgWrite,
    input: NewDevice,
) -> Result<(device::Model, ProvisioningToken)> {
    let mut created =
        super::device_batch::create_devices(core, access, vec![input], &|_| String::new()).await?;
    Ok(created.remove(0))
}

/// Issues a fresh one-time token for the device; earlier unused ones stop working.
async fn issue_provisioning_token(
    core: &Core,
    tx: &OrgTx,
    device_id: Uuid,
) -> Result<ProvisioningToken> {
    let now = core.clock.now();
    provisioning_token::Entity::update_many()
        .col_expr(provisioning_token::Column::RevokedAt, now.into())
        .filter(provisioning_token::Column::OrgId.eq(tx.org_id()))
        .filter(provisioning_token::Column::DeviceId.eq(device_id))
        .filter(provisioning_token::Column::UsedAt.is_null())
        .filter(provisioning_token::Column::RevokedAt.is_null())
        .exec(tx.conn())
        .await?;
    let ttl = Duration::from_std(core.settings.provisioning_token_ttl).unwrap_or(Duration::MAX);
    let expires_at = now + ttl;
    let (row, token) = provisioning_token_row(tx.org_id(), device_id, now, expires_at);
    provisioning_token::Entity::insert(row)
        .exec(tx.conn())
        .await?;
    Ok(ProvisioningToken { token, expires_at })
}

/// A new one-time provisioning token for the device: its row (the secret
/// as its hash) and the plaintext, to be shown once.
pub fn provisioning_token_row(
    org_id: Uuid,
    device_id: Uuid,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> (provisioning_token::ActiveModel, String) {
    let secret = secret::generate(secret::SecretKind::ProvisioningToken);
    let row = provisioning_token::ActiveModel {
        id: Set(new_id()),
        org_id: Set(org_id),
        device_id: Set(device_id),
        secret_hash: Set(secret.hash),
        created_at: Set(now),
        expires_at: Set(expires_at),
        used_at: Set(None),
        revoked_at: Set(None),
    };
    (row, secret.plaintext)
}

pub async fn new_provisioning_token(
    core: &Core,
    access: &OrgWrite,
    id: &str,
) -> Result<ProvisioningToken> {
    let tx = core.store.org_tx(access.org_id()).await?;
    let device = lock(&tx, id).await?;
    let token = issue_provisioning_token(core, &tx, device.id).await?;
    audit::by_key(
        core,
        &tx,
        access,
        Action::ProvisioningTokenIssued,
        ("device", device.id),
    )
    .await?;
    tx.commit().await?;
    Ok(token)
}

/// The device with this id in the transaction's organization, or 404.
pub async fn find(tx: &OrgTx, id: &str) -> Result<device::Model> {
    let id = validate::path_id("device", id)?;
    find_by_id(tx, id).await
}

pub async fn find_by_id(tx: &OrgTx, id: Uuid) -> Result<device::Model> {
    select(tx, id, false).await
}

/// The device, locked until the transaction ends, so concurrent key changes
/// (rotate, revoke, pair) on one device run one after the other and never
/// leave two live keys. (SQLite's IMMEDIATE transactions already serialize.)
pub async fn lock_by_id(tx: &OrgTx, id: Uuid) -> Result<device::Model> {
    select(tx, id, true).await
}

async fn select(tx: &OrgTx, id: Uuid, lock: bool) -> Result<device::Model> {
    let mut query = device::Entity::find_by_id(id).filter(device::Column::OrgId.eq(tx.org_id()));
    if lock {
        query = query.lock_exclusive();
    }
    query
        .one(tx.conn())
        .await?
        .ok_or_else(|| Error::not_found("device"))
}

async fn lock(tx: &OrgTx, id: &str) -> Result<device::Model> {
    lock_by_id(tx, validate::path_id("device", id)?).await
}

pub async fn get_device(core: &Core, access: &OrgRead, id: &str) -> Result<device::Model> {
    let tx = core.store.org_read(access.org_id()).await?;
    let mut device = find(&tx, id).await?;
    with_liveness(&tx, std::slice::from_mut(&mut device)).await?;
    tx.commit().await?;
    Ok(device)
}

/// Overlays the stored heartbeat of each device (`device_liveness`, which
/// the heartbeat flush writes instead of `devices`).
pub async fn with_liveness(tx: &OrgTx, devices: &mut [device::Model]) -> Result<()> {
    if devices.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = devices.iter().map(|d| d.id).collect();
    let mut stored: HashMap<Uuid, device_liveness::Model> = device_liveness::Entity::find()
        .filter(device_liveness::Column::DeviceId.is_in(ids))
        .all(tx.conn())
        .await?
        .into_iter()
        .map(|l| (l.device_id, l))
        .collect();
    for device in devices {
        if let Some(l) = stored.remove(&device.id) {
            let heard = Liveness {
                org_id: l.org_id,
                device_id: l.device_id,
                at: l.last_seen_at,
                // Written with every heartbeat, so never empty in practice.
                source_ip: l.source_ip.unwrap_or_default(),
                firmware_version: l.firmware_version,
                uptime_seconds: l.uptime_seconds,
                reported_ip: l.reported_ip,
                hostname: l.hostname,
            };
            super::liveness::lay_over(device, heard);
        }
    }
    Ok(())
}

/// The device now reports `firmware_version` itself (pairing, enrollment):
/// the firmware an earlier heartbeat stored no longer overrides it.
pub async fn firmware_reported(tx: &OrgTx, device_id: Uuid) -> Result<()> {
    device_liveness::Entity::update_many()
        .col_expr(
            device_liveness::Column::FirmwareVersion,
            Option::<String>::None.into(),
        )
        .filter(device_liveness::Column::DeviceId.eq(device_id))
        .exec(tx.conn())
        .await?;
    Ok(())
}

/// Devices seen (`Some(true)`: since `since`; `Some(false)`: not since) or
/// never seen (`None`), as a condition on `devices`: a key lookup per
/// device, so a page of a list stops at its size.
fn seen_since(since: DateTime<Utc>, seen: Option<bool>) -> SimpleExpr {
    let mut heard = Query::select();
    heard
        .expr(Expr::val(1))
        .from(device_liveness::Entity)
        .and_where(
            Expr::col((device_liveness::Entity, device_liveness::Column::DeviceId))
                .equals((device::Entity, device::Column::Id)),
        );
    match seen {
        Some(true) => {
            heard.and_where(device_liveness::Column::LastSeenAt.gte(since));
        }
        Some(false) => {
            heard.and_where(device_liveness::Column::LastSeenAt.lt(since));
        }
        None => return Expr::exists(heard).not(),
    }
    Expr::exists(heard)
}

/// What a device list may be narrowed to (each on an index).
#[derive(Default)]
pub struct DeviceFilter {
    pub group_id: Option<String>,
    pub location_id: Option<String>,
    /// `online`, `offline` or `never_seen`.
    pub status: Option<String>,
    /// Names starting with this, compared byte by byte.
    pub name_prefix: Option<String>,
    pub tag: Option<String>,
}

pub async fn list_devices(
    core: &Core,
    access: &OrgRead,
    page: PageRequest,
    filter: DeviceFilter,
) -> Result<(Vec<device::Model>, String)> {
    let mut select = device::Entity::find().filter(device::Column::OrgId.eq(access.org_id()));
    if let Some(id) = validate::opt_uuid("group_id", filter.group_id.as_deref())? {
        select = select.filter(device::Column::GroupId.eq(id));
    }
    if let Some(id) = validate::opt_uuid("location_id", filter.location_id.as_deref())? {
        select = select.filter(device::Column::LocationId.eq(id));
    }
    if let Some(prefix) = filter.name_prefix.as_deref().filter(|p| !p.is_empty()) {
        select = select.filter(name_starts_with(core, prefix));
    }
    let tag = filter
        .tag
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    // The same rule as `status`: online while seen within three intervals.
    let online_since = core.clock.now()
        - Duration::from_std(core.settings.heartbeat_interval * 3).unwrap_or(Duration::MAX);
    if filter
        .status
        .as_deref()
        .is_some_and(|s| !s.trim().is_empty())
    {
        // The filter reads `last_seen_at` in the database: this replica's
        // heartbeats go in first (see `core::liveness`).
        core.liveness.flush(core).await?;
    }
    select = match filter.status.as_deref().map(str::trim) {
        None | Some("") => select,
        Some("online") => select.filter(seen_since(online_since, Some(true))),
        Some("offline") => select.filter(seen_since(online_since, Some(false))),
        Some("never_seen") => select.filter(seen_since(online_since, None)),
        Some(other) => {
            return Err(Error::invalid(format!(
                "status must be online, offline or never_seen, not {other:?}"
            )));
        }
    };
    let tx = core.store.org_read(access.org_id()).await?;
    let mut out = match tag {
        // Driven by the tag's rows, which are in device id order already:
        // a page reads the page, however large the fleet.
        Some(tag) => {
            let tagged = device_tag::Entity::belongs_to(device::Entity)
                .from(device_tag::Column::DeviceId)
                .to(device::Column::Id)
                .into();
            let select = select
                .join_rev(JoinType::InnerJoin, tagged)
                .filter(device_tag::Column::OrgId.eq(access.org_id()))
                .filter(device_tag::Column::Tag.eq(tag))
                // Always a range on the tag's device ids, on the first page
                // too: without it SQLite walks the organization's devices
                // and sorts, instead of the tag's rows in order.
                .filter(device_tag::Column::DeviceId.gt(Uuid::nil()));
            page.fetch(select, device_tag::Column::DeviceId, tx.conn(), |m| m.id)
                .await?
        }
        None => {
            page.fetch(select, device::Column::Id, tx.conn(), |m| m.id)
                .await?
        }
    };
    with_liveness(&tx, &mut out.0).await?;
    tx.commit().await?;
    Ok(out)
}

/// `name` starts with `prefix`, as a range of the name index: names in
/// byte order (PostgreSQL: the "C" collation, as the index is built;
/// SQLite: its default), from the prefix up to its successor.
fn name_starts_with(core: &Core, prefix: &str) -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::sea_query::Expr;
    let name = if core.store.is_postgres() {
        Expr::cust("(\"devices\".\"name\" COLLATE \"C\")")
    } else {
        Expr::col((device::Entity, device::Column::Name))
    };
    let from = name.clone().gte(prefix);
    match successor(prefix) {
        Some(to) => from.and(name.lt(to)),
        None => from,
    }
}

/// The first string after every string that starts with `prefix`, in byte
/// (code point) order: the prefix with its last character that can grow
/// grown by one. `None` when there is none (every character is U+10FFFF).
fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

pub struct DeviceUpdate {
    pub name: Option<String>,
    /// `Some("")` unassigns.
    pub location_id: Option<String>,
    /// `Some("")` unassigns.
    pub group_id: Option<String>,
    pub tags: Option<Vec<String>>,
    /// `Some(vec![])` goes back to the group's list (or every type).
    pub sensor_keys: Option<Vec<String>>,
}

pub async fn update_device(
    core: &Core,
    access: &OrgWrite,
    id: &str,
    update: DeviceUpdate,
) -> Result<device::Model> {
    // Checked before the write transaction: the sensor type registry may
    // need a connection of its own.
    let sensor_list = match &update.sensor_keys {
        Some(keys) => Some(sensor_keys(core, access.org_id(), keys).await?),
        None => None,
    };
    let mut tx = core.store.org_tx(access.org_id()).await?;
    let device = find(&tx, id).await?;
    let placed = (device.group_id, device.location_id);
    let mut active: device::ActiveModel = device.into();
    if let Some(name) = &update.name {
        active.name = Set(validate::name("name", name)?);
    }
    if let Some(location) = &update.location_id {
        let id = validate::opt_uuid("location_id", Some(location))?;
        if let Some(id) = id {
            places::find_location(&tx, id).await?;
        }
        active.location_id = Set(id);
    }
    if let Some(group) = &update.group_id {
        let id = validate::opt_uuid("group_id", Some(group))?;
        if let Some(id) = id {
            places::find_group(&tx, id).await?;
        }
        active.group_id = Set(id);
    }
    if let Some(tags) = &update.tags {
        active.tags = Set(validate::tags_to_json(&validate::tags(tags)?));
    }
    if let Some(keys) = sensor_list {
        active.sensor_keys = Set(keys);
    }
    let mut device = active.update(tx.conn()).await?;
    with_liveness(&tx, std::slice::from_mut(&mut device)).await?;
    if update.tags.is_some() {
        super::device_tags::replace(&tx, &device).await?;
    }
    if (device.group_id, device.location_id) != placed {
        // Joining a group or location joins its deployment.
        super::models::deployments::reach_device_in(core, &mut tx, &device).await?;
    }
    tx.publish(Event::DeviceChanged {
        device_id: device.id,
    })
    .await?;
    tx.commit().await?;
    Ok(device)
}

/// A sensor list as stored: registered keys, deduplicated; `None` when
/// empty (not configured).
pub async fn sensor_keys(core: &Core, org_id: Uuid, keys: &[String]) -> Result<Option<String>> {
    if keys.is_empty() {
        return Ok(None);
    }
    let types = core.sensor_types.for_org(&core.store, org_id).await?;
    let mut out: Vec<String> = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        if !types.contains_key(k) {
            return Err(Error::invalid(format!(
                "sensor_keys[{i}] {k:?} is not a registered sensor type"
            )));
        }
        if !out.contains(k) {
            out.push(k.clone());
        }
    }
    Ok(Some(validate::tags_to_json(&out)))
}

/// Inserts a new device key; used by pairing, enrollment and rotation.
pub async fn insert_device_key(now: DateTime<Utc>, tx: &OrgTx, device_id: Uuid) -> Result<String> {
    let secret = secret::generate(secret::SecretKind::DeviceKey);
    device_key::Entity::insert(device_key::ActiveModel {
        id: Set(new_id()),
        org_id: Set(tx.org_id()),
        device_id: Set(device_id),
        secret_hash: Set(secret.hash),
        created_at: Set(now),
        expires_at: Set(None),
        revoked_at: Set(None),
    })
    .exec(tx.conn())
    .await?;
    Ok(secret.plaintext)
}

/// A new device key; the old ones keep working for `grace_seconds` (0: stop now).
pub async fn rotate_key(
    core: &Core,
    access: &OrgWrite,
    id: &str,
    grace_seconds: u32,
) -> Result<String> {
    const MAX_GRACE: u32 = 7 * 24 * 3600;
    if grace_seconds > MAX_GRACE {
        return Err(Error::invalid(format!(
            "grace_seconds must be at most {MAX_GRACE}"
        )));
    }
    let mut tx = core.store.org_tx(access.org_id()).await?;
    let device = lock(&tx, id).await?;
    let now = core.clock.now();
    let live = device_key::Column::RevokedAt.is_null();
    if grace_seconds == 0 {
        revoke_live_keys(&tx, device.id, now).await?;
    } else {
        let end = now + Duration::seconds(grace_seconds.into());
        device_key::Entity::update_many()
            .col_expr(device_key::Column::ExpiresAt, Some(end).into())
            .filter(device_key::Column::DeviceId.eq(device.id))
            .filter(live)
            .filter(
                device_key::Column::ExpiresAt
                    .is_null()
                    .or(device_key::Column::ExpiresAt.gt(end)),
            )
            .exec(tx.conn())
            .await?;
    }
    let key = insert_device_key(core.clock.now(), &tx, device.id).await?;
    audit::by_key(
        core,
        &tx,
        access,
        Action::DeviceKeyRotated,
        ("device", device.id),
    )
    .await?;
    tx.publish(Event::DeviceKeysChanged {
        device_id: device.id,
    })
    .await?;
    tx.commit().await?;
    Ok(key)
}

/// Revokes every key of the device; its next request is 401.
pub async fn revoke_keys(core: &Core, access: &OrgWrite, id: &str) -> Result<(Uuid, u64)> {
    let mut tx = core.store.org_tx(access.org_id()).await?;
    let device = lock(&tx, id).await?;
    let revoked = revoke_live_keys(&tx, device.id, core.clock.now()).await?;
    audit::by_key(
        core,
        &tx,
        access,
        Action::DeviceKeyRevoked,
        ("device", device.id),
    )
    .await?;
    tx.publish(Event::DeviceKeysChanged {
        device_id: device.id,
    })
    .await?;
    tx.commit().await?;
    Ok((device.id, revoked))
}

/// Revokes the device's live keys at `now` (pairing, enrollment, rotation
/// without grace, revocation); answers how many. The caller has locked the
/// device and publishes `DeviceKeysChanged`.
pub async fn revoke_live_keys(tx: &OrgTx, device_id: Uuid, now: DateTime<Utc>) -> Result<u64> {
    let done = device_key::Entity::update_many()
        .col_expr(device_key::Column::RevokedAt, Some(now).into())
        .filter(device_key::Column::DeviceId.eq(device_id))
        .filter(device_key::Column::RevokedAt.is_null())
        .exec(tx.conn())
        .await?;
    Ok(done.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::successor;

    #[test]
    fn the_successor_of_a_prefix_bounds_every_name_that_starts_with_it() {
        assert_eq!(successor("cam-").as_deref(), Some("cam."));
        assert_eq!(successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(successor("\u{10FFFF}"), None);
        for name in ["cam-", "cam-1", "cam-\u{10FFFF}x", "cam-zzz"] {
            assert!(name >= "cam-" && name < successor("cam-").unwrap().as_str());
        }
    }
}
