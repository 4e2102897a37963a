//! Creating devices, one or many: `POST /api/v1/devices`, the bulk
//! `POST /api/v1/devices:batchCreate` (AIP-233) and `swrm admin
//! import-devices` all come here. Up to [`MAX_BATCH`] devices and their
//! one-time provisioning tokens are written in one transaction as two
//! multi-row inserts, so a factory list of a million devices is a thousand
//! commits, not a million, and a batch is all-or-nothing: one bad device
//! (named by its position) and nothing is created.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

use super::{
    Core,
    audit::{self, Action, Actor, Entry},
    devices::{self, ProvisioningToken},
    new_id, places, validate,
};
use crate::{
    auth::OrgWrite,
    error::{Error, Result},
    store::{
        OrgTx,
        entities::{device, provisioning_token},
    },
};

/// Most devices created at once.
pub const MAX_BATCH: usize = 1000;

pub struct NewDevice {
    pub name: String,
    pub serial_number: Option<String>,
    pub location_id: Option<String>,
    pub group_id: Option<String>,
    pub tags: Vec<String>,
}

/// How an error names the device it is about: `requests[3].` for the bulk
/// route, `line 7: ` for a CSV file, nothing for a single create.
pub type Label<'a> = &'a (dyn Fn(usize) -> String + Sync);

/// Creates every device or none; answers them with their tokens, in order.
pub async fn create_devices(
    core: &Core,
    access: &OrgWrite,
    inputs: Vec<NewDevice>,
    label: Label<'_>,
) -> Result<Vec<(device::Model, ProvisioningToken)>> {
    if inputs.is_empty() || inputs.len() > MAX_BATCH {
        return Err(Error::invalid(format!(
            "between 1 and {MAX_BATCH} devices per batch, not {}",
            inputs.len()
        )));
    }
    let checked = check_all(&inputs, label).map_err(|mut errors| errors.remove(0))?;
    let mut tx = core.store.org_tx(access.org_id()).await?;
    let created = insert(core, &mut tx, checked, label).await?;
    record_created(core, &tx, access, &created).await?;
    tx.commit().await?;
    core.statistics
        .devices_created(&core.store, created.len() as u64);
    Ok(created)
}

/// A device checked against the rules, before any database work.
pub struct Checked {
    name: String,
    serial_number: Option<String>,
    location_id: Option<Uuid>,
    group_id: Option<Uuid>,
    tags: String,
}

/// Checks every device; on failure, every error found (each named by its
/// label), a repeated serial number among them.
pub fn check_all(
    inputs: &[NewDevice],
    label: Label<'_>,
) -> std::result::Result<Vec<Checked>, Vec<Error>> {
    let mut serials: HashMap<String, usize> = HashMap::new();
    let (mut out, mut errors) = (Vec::with_capacity(inputs.len()), Vec::new());
    for (i, input) in inputs.iter().enumerate() {
        match check(input).map_err(|e| prefixed(e, &label(i))) {
            Err(e) => errors.push(e),
            Ok(c) => {
                if let Some(serial) = &c.serial_number
                    && let Some(first) = serials.insert(serial.clone(), i)
                {
                    errors.push(Error::invalid(format!(
                        "{}serial_number {serial:?} repeats {}",
                        label(i),
                        label(first).trim_end_matches(['.', ':', ' '])
                    )));
                }
                out.push(c);
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn check(input: &NewDevice) -> Result<Checked> {
    Ok(Checked {
        name: validate::name("name", &input.name)?,
        serial_number: validate::short_text("serial_number", input.serial_number.as_deref())?,
        location_id: validate::opt_uuid("location_id", input.location_id.as_deref())?,
        group_id: validate::opt_uuid("group_id", input.group_id.as_deref())?,
        tags: validate::tags_to_json(&validate::tags(&input.tags)?),
    })
}

/// Inserts checked devices (any number; chunks of [`MAX_BATCH`]) and their
/// provisioning tokens in `tx`, which the caller commits.
pub async fn insert(
    core: &Core,
    tx: &mut OrgTx,
    checked: Vec<Checked>,
    label: Label<'_>,
) -> Result<Vec<(device::Model, ProvisioningToken)>> {
    places_exist(tx, &checked, label).await?;
    let now = core.clock.now();
    let ttl = Duration::from_std(core.settings.provisioning_token_ttl).unwrap_or(Duration::MAX);
    let expires_at = now + ttl;
    let mut out = Vec::with_capacity(checked.len());
    let mut rest = checked.into_iter().peekable();
    let mut offset = 0;
    while rest.peek().is_some() {
        let chunk: Vec<Checked> = rest.by_ref().take(MAX_BATCH).collect();
        let shifted = |i: usize| label(offset + i);
        serials_are_new(tx, &chunk, &shifted).await?;
        offset += chunk.len();
        let mut rows = Vec::with_capacity(chunk.len());
        let mut tokens = Vec::with_capacity(chunk.len());
        let mut plaintexts = Vec::with_capacity(chunk.len());
        for c in chunk {
            let mut row = blank_row(tx.org_id(), c.name, now);
            row.serial_number = c.serial_number;
            row.location_id = c.location_id;
            row.group_id = c.group_id;
            row.tags = c.tags;
            let (token, plaintext) =
                devices::provisioning_token_row(tx.org_id(), row.id, now, expires_at);
            rows.push(row);
            tokens.push(token);
            plaintexts.push(plaintext);
        }
        // 16 and 8 parameters a row: a thousand rows stay under SQLite's
        // 32,766 bind parameters and PostgreSQL's 65,535.
        insert_rows(core, tx, &rows).await?;
        provisioning_token::Entity::insert_many(tokens)
            .exec(tx.conn())
            .await?;
        out.extend(
            rows.into_iter()
                .zip(plaintexts)
                .map(|(d, token)| (d, ProvisioningToken { token, expires_at })),
        );
    }
    Ok(out)
}

/// Inserts new device rows (at most [`MAX_BATCH`]) with their tag rows, and
/// queues them the deployments that already target them.
pub async fn insert_rows(core: &Core, tx: &mut OrgTx, rows: &[device::Model]) -> Result<()> {
    device::Entity::insert_many(rows.iter().cloned().map(device::ActiveModel::from))
        .exec(tx.conn())
        .await?;
    super::device_tags::insert(tx, rows).await?;
    reach_deployments(core, tx, rows).await
}

/// One audit event for a batch: the device when there is one, else how many.
pub async fn record_created(
    core: &Core,
    tx: &OrgTx,
    access: &OrgWrite,
    created: &[(device::Model, ProvisioningToken)],
) -> Result<()> {
    let target = match created {
        [(one, _)] => Some(("device", one.id)),
        _ => None,
    };
    let mut entry = Entry::new(Action::DevicesCreated, Actor::of(access), target);
    entry.count = i32::try_from(created.len()).unwrap_or(i32::MAX);
    audit::record(core, tx, entry).await
}

/// A new device of `org_id` named `name`, never seen, with nothing else set.
pub fn blank_row(org_id: Uuid, name: String, now: DateTime<Utc>) -> device::Model {
    device::Model {
        id: new_id(),
        org_id,
        name,
        serial_number: None,
        hardware_model: None,
        location_id: None,
        group_id: None,
        tags: "[]".into(),
        firmware_version: None,
        uptime_seconds: None,
        reported_ip: None,
        source_ip: None,
        hostname: None,
        last_seen_at: None,
        created_at: now,
        sensor_keys: None,
    }
}

/// Each distinct location and group named, looked up once.
async fn places_exist(tx: &OrgTx, checked: &[Checked], label: Label<'_>) -> Result<()> {
    let mut seen = HashSet::new();
    for (i, c) in checked.iter().enumerate() {
        if let Some(id) = c.location_id
            && seen.insert(id)
        {
            places::find_location(tx, id)
                .await
                .map_err(|e| field_error(e, &label(i), "location_id"))?;
        }
        if let Some(id) = c.group_id
            && seen.insert(id)
        {
            places::find_group(tx, id)
                .await
                .map_err(|e| field_error(e, &label(i), "group_id"))?;
        }
    }
    Ok(())
}

/// A serial number names one device of an organization: one already
/// registered is 409 (the index on `(org_id, serial_number)` answers).
async fn serials_are_new(tx: &OrgTx, checked: &[Checked], label: Label<'_>) -> Result<()> {
    let serials: Vec<&str> = checked
        .iter()
        .filter_map(|c| c.serial_number.as_deref())
        .collect();
    if serials.is_empty() {
        return Ok(());
    }
    let taken: Vec<String> = device::Entity::find()
        .select_only()
        .column(device::Column::SerialNumber)
        .filter(device::Column::OrgId.eq(tx.org_id()))
        .filter(device::Column::SerialNumber.is_in(serials))
        .limit(1)
        .into_tuple::<Option<String>>()
        .all(tx.conn())
        .await?
        .into_iter()
        .flatten()
        .collect();
    if let Some(serial) = taken.first() {
        let i = checked
            .iter()
            .position(|c| c.serial_number.as_ref() == Some(serial))
            .unwrap_or_default();
        return Err(Error::AlreadyExists(format!(
            "{}serial_number {serial:?} is already registered in this organization",
            label(i)
        )));
    }
    Ok(())
}

/// An organization, group or location deployment reaches new devices too.
/// Most batches meet none: one query says so.
async fn reach_deployments(core: &Core, tx: &mut OrgTx, rows: &[device::Model]) -> Result<()> {
    if !super::models::deployments::any_active(tx).await? {
        return Ok(());
    }
    for row in rows {
        super::models::deployments::reach_device_in(core, tx, row).await?;
    }
    Ok(())
}

/// `requests[3].` + "name must not be empty".
fn prefixed(e: Error, prefix: &str) -> Error {
    match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("{prefix}{m}")),
        other => other,
    }
}

/// `requests[3].location_id: location not found`.
fn field_error(e: Error, prefix: &str, field: &str) -> Error {
    match e {
        Error::NotFound(m) => Error::NotFound(format!("{prefix}{field}: {m}")),
        other => other,
    }
}
