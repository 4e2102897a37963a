//! Factory enrollment: an operator creates an enrollment code (a shared
//! secret, shown once, kept as its SHA-256) with a quota, an expiry and the
//! defaults of the devices it creates; a device flashed with it enrolls
//! itself by serial number and gets its device key at once, with no
//! per-device provisioning token.
//!
//! Concurrent enrollments never exceed the quota: each runs in a
//! transaction that first locks its organization's row (so two enrollments
//! of one serial number cannot both create a device), then claims a place
//! with a conditional update of `enrolled_devices`.

use chrono::{DateTime, Utc};
use regex::{Regex, RegexBuilder};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, EntityTrait, ExprTrait,
    QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use uuid::Uuid;

use super::validate;
use super::{
    Core,
    audit::{self, Action, Actor, Entry},
    device_batch, devices, new_id,
    page::PageRequest,
    pairing::Paired,
    places,
};
use crate::{
    auth::{OrgRead, OrgWrite, secret},
    bus::Event,
    error::{Error, Result},
    store::{
        OrgTx,
        entities::{device, enrollment_code, organization},
    },
};

pub struct NewCode {
    pub name: String,
    pub max_devices: Option<u32>,
    pub expires_at: Option<String>,
    pub group_id: Option<String>,
    pub location_id: Option<String>,
    pub tags: Vec<String>,
    pub allow_reenroll: bool,
    pub serial_pattern: Option<String>,
}

/// A new code and its secret, shown once.
pub struct CreatedCode {
    pub code: enrollment_code::Model,
    pub plaintext: String,
}

/// The longest serial pattern, and the most memory its compiled form may
/// take (the `regex` crate matches in linear time; this bounds its size).
const MAX_PATTERN_LEN: usize = 200;
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

pub async fn create(core: &Core, access: &OrgWrite, input: NewCode) -> Result<CreatedCode> {
    let name = validate::name("name", &input.name)?;
    let now = core.clock.now();
    let expires_at = match input.expires_at.as_deref().map(str::trim) {
        None | Some("") => None,
        // A time already past makes a code that is already expired (401
        // at once): a way to test firmware against an expired code.
        Some(v) => Some(
            DateTime::parse_from_rfc3339(v)
                .map_err(|_| Error::invalid("expires_at must be an RFC 3339 time"))?
                .with_timezone(&Utc),
        ),
    };
    let max_devices = match input.max_devices {
        Some(0) => return Err(Error::invalid("max_devices must be at least 1")),
        Some(n) => Some(i32::try_from(n).map_err(|_| Error::invalid("max_devices is too large"))?),
        None => None,
    };
    let serial_pattern = validate::short_text("serial_pattern", input.serial_pattern.as_deref())?;
    if let Some(p) = &serial_pattern {
        compile(p)?;
    }
    let group_id = validate::opt_uuid("group_id", input.group_id.as_deref())?;
    let location_id = validate::opt_uuid("location_id", input.location_id.as_deref())?;
    let tags = validate::tags_to_json(&validate::tags(&input.tags)?);

    let tx = core.store.org_tx(access.org_id()).await?;
    if let Some(id) = group_id {
        places::find_group(&tx, id).await?;
    }
    if let Some(id) = location_id {
        places::find_location(&tx, id).await?;
    }
    let secret = secret::generate(secret::SecretKind::EnrollmentCode);
    let code = enrollment_code::Entity::insert(enrollment_code::ActiveModel {
        id: Set(new_id()),
        org_id: Set(tx.org_id()),
        name: Set(name),
        prefix: Set(secret.display_prefix()),
        secret_hash: Set(secret.hash),
        max_devices: Set(max_devices),
        enrolled_devices: Set(0),
        expires_at: Set(expires_at),
        group_id: Set(group_id),
        location_id: Set(location_id),
        tags: Set(tags),
        allow_reenroll: Set(input.allow_reenroll),
        serial_pattern: Set(serial_pattern),
        revoked_at: Set(None),
        created_at: Set(now),
    })
    .exec_with_returning(tx.conn())
    .await?;
    audit::by_key(
        core,
        &tx,
        access,
        Action::EnrollmentCodeCreated,
        ("enrollment_code", code.id),
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedCode {
        code,
        plaintext: secret.plaintext,
    })
}

/// A serial pattern that must match a whole serial number.
fn compile(pattern: &str) -> Result<Regex> {
    if pattern.chars().count() > MAX_PATTERN_LEN {
        return Err(Error::invalid(format!(
            "serial_pattern must be at most {MAX_PATTERN_LEN} characters"
        )));
    }
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let why = e.to_string();
            let last = why.lines().last().unwrap_or("").trim().to_owned();
            Error::invalid(format!(
                "serial_pattern is not a valid regular expression: {last}"
            ))
        })
}

/// Every code of the organization, revoked ones too, oldest first.
pub async fn list(
    core: &Core,
    access: &OrgRead,
    page: PageRequest,
) -> Result<(Vec<enrollment_code::Model>, String)> {
    let tx = core.store.org_read(access.org_id()).await?;
    let select =
        enrollment_code::Entity::find().filter(enrollment_code::Column::OrgId.eq(tx.org_id()));
    let out = page
        .fetch(select, enrollment_code::Column::Id, tx.conn(), |m| m.id)
        .await?;
    tx.commit().await?;
    Ok(out)
}

pub async fn get(core: &Core, access: &OrgRead, id: &str) -> Result<enrollment_code::Model> {
    let id = validate::path_id("enrollment code", id)?;
    let tx = core.store.org_read(access.org_id()).await?;
    let code = find(&tx, id).await?;
    tx.commit().await?;
    Ok(code)
}

async fn find(tx: &OrgTx, id: Uuid) -> Result<enrollment_code::Model> {
    enrollment_code::Entity::find_by_id(id)
        .filter(enrollment_code::Column::OrgId.eq(tx.org_id()))
        .one(tx.conn())
        .await?
        .ok_or_else(|| Error::not_found("enrollment code"))
}

/// Revokes the code: the next enrollment with it is 401. Revoking twice
/// keeps the first time; the devices it enrolled keep their keys.
pub async fn revoke(core: &Core, access: &OrgWrite, id: &str) -> Result<()> {
    let id = validate::path_id("enrollment code", id)?;
    let tx = core.store.org_tx(access.org_id()).await?;
    if find(&tx, id).await?.revoked_at.is_none() {
        audit::by_key(
            core,
            &tx,
            access,
            Action::EnrollmentCodeRevoked,
            ("enrollment_code", id),
        )
        .await?;
    }
    enrollment_code::Entity::update_many()
        .col_expr(
            enrollment_code::Column::RevokedAt,
            Some(core.clock.now()).into(),
        )
        .filter(enrollment_code::Column::Id.eq(id))
        .filter(enrollment_code::Column::OrgId.eq(tx.org_id()))
        .filter(enrollment_code::Column::RevokedAt.is_null())
        .exec(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(())
}

pub struct EnrollInput {
    pub code: String,
    pub serial_number: String,
    pub hardware_model: Option<String>,
    pub name: Option<String>,
    pub firmware_version: Option<String>,
    /// Where the request came from, for the audit trail.
    pub source_ip: Option<std::net::IpAddr>,
}

const REJECTED: &str = "enrollment code is unknown";

/// Enrolls a device: a new one with the code's defaults, or (when the code
/// allows it) the organization's device with this serial number, whose old
/// keys stop working.
pub async fn enroll(core: &Core, input: EnrollInput) -> Result<Paired> {
    if secret::parse(&input.code) != Some(secret::SecretKind::EnrollmentCode) {
        return Err(Error::Unauthenticated("malformed enrollment code".into()));
    }
    let serial = validate::short_text("serial_number", Some(&input.serial_number))?
        .ok_or_else(|| Error::invalid("serial_number is required"))?;
    let hardware_model = validate::short_text("hardware_model", input.hardware_model.as_deref())?;
    let firmware_version =
        validate::short_text("firmware_version", input.firmware_version.as_deref())?;
    let name = match input.name.as_deref() {
        Some(n) => Some(validate::name("name", n)?),
        None => None,
    };

    core.count_auth_lookup();
    let found = core
        .store
        .enrollment_code_by_hash(&secret::hash(&input.code))
        .await?
        .ok_or_else(|| Error::Unauthenticated(REJECTED.into()))?;
    let checked = Checked {
        serial,
        hardware_model,
        firmware_version,
        name,
        source_ip: input.source_ip,
    };
    let answer = enroll_with(core, &found, checked).await;
    // A code that exists but no longer works: counted in the audit trail.
    if let (Err(Error::Unauthenticated(why)), Some(ip)) = (&answer, input.source_ip) {
        let owner = (found.org_id, Actor::EnrollmentCode(found.id));
        core.audit_tally.auth_failed(Some(owner), ip, why);
    }
    answer
}

/// An enrollment's fields, validated.
struct Checked {
    serial: String,
    hardware_model: Option<String>,
    firmware_version: Option<String>,
    name: Option<String>,
    source_ip: Option<std::net::IpAddr>,
}

async fn enroll_with(
    core: &Core,
    found: &enrollment_code::Model,
    input: Checked,
) -> Result<Paired> {
    let Checked {
        serial,
        hardware_model,
        firmware_version,
        name,
        source_ip,
    } = input;
    let now = core.clock.now();
    let mut tx = core.store.org_tx(found.org_id).await?;
    // Enrollments of one organization run one at a time.
    organization::Entity::find_by_id(tx.org_id())
        .lock_exclusive()
        .one(tx.conn())
        .await?;
    let code = find(&tx, found.id).await?;
    // The caller holds the code, so saying why it no longer works leaks nothing.
    if code.revoked_at.is_some() {
        return Err(Error::Unauthenticated(
            "enrollment code has been revoked".into(),
        ));
    }
    if code.expires_at.is_some_and(|at| at <= now) {
        return Err(Error::Unauthenticated("enrollment code has expired".into()));
    }
    if let Some(pattern) = &code.serial_pattern
        && !compile(pattern)?.is_match(&serial)
    {
        return Err(Error::PermissionDenied(format!(
            "serial_number {serial:?} is not one this enrollment code accepts"
        )));
    }

    let existing = registered(&tx, &serial).await?;
    let reenrolled = existing.is_some();
    let enrolled = match existing {
        Some(_) if !code.allow_reenroll => {
            return Err(Error::AlreadyExists(format!(
                "serial_number {serial:?} is already enrolled in this organization"
            )));
        }
        Some(existing) => {
            let device = devices::lock_by_id(&tx, existing).await?;
            devices::revoke_live_keys(&tx, device.id, now).await?;
            let mut active: device::ActiveModel = device.into();
            if let Some(h) = hardware_model {
                active.hardware_model = Set(Some(h));
            }
            if let Some(f) = firmware_version {
                devices::firmware_reported(&tx, existing).await?;
                active.firmware_version = Set(Some(f));
            }
            if let Some(n) = name {
                active.name = Set(n);
            }
            let device = active.update(tx.conn()).await?;
            tx.publish(Event::DeviceChanged {
                device_id: device.id,
            })
            .await?;
            device
        }
        None => {
            claim_place(&tx, &code).await?;
            let mut row = device_batch::blank_row(
                tx.org_id(),
                name.unwrap_or_else(|| serial.chars().take(200).collect()),
                now,
            );
            row.serial_number = Some(serial);
            row.hardware_model = hardware_model;
            row.firmware_version = firmware_version;
            row.group_id = code.group_id;
            row.location_id = code.location_id;
            row.tags = code.tags.clone();
            device_batch::insert_rows(core, &mut tx, std::slice::from_ref(&row)).await?;
            row
        }
    };
    let api_key = devices::insert_device_key(now, &tx, enrolled.id).await?;
    let action = if reenrolled {
        Action::DeviceReenrolled
    } else {
        Action::DeviceEnrolled
    };
    audit::record(
        core,
        &tx,
        Entry::new(
            action,
            Actor::EnrollmentCode(code.id),
            Some(("device", enrolled.id)),
        )
        .from_ip(source_ip),
    )
    .await?;
    tx.publish(Event::DeviceKeysChanged {
        device_id: enrolled.id,
    })
    .await?;
    tx.commit().await?;
    Ok(Paired {
        device_id: enrolled.id,
        org_id: enrolled.org_id,
        name: enrolled.name,
        api_key,
    })
}

/// The organization's device with this serial number, if any (the oldest,
/// should an earlier import have repeated one).
async fn registered(tx: &OrgTx, serial: &str) -> Result<Option<Uuid>> {
    Ok(device::Entity::find()
        .select_only()
        .column(device::Column::Id)
        .filter(device::Column::OrgId.eq(tx.org_id()))
        .filter(device::Column::SerialNumber.eq(serial))
        .order_by_asc(device::Column::Id)
        .limit(1)
        .into_tuple::<Uuid>()
        .one(tx.conn())
        .await?)
}

/// One more device against the code's quota; 401 when it is spent.
async fn claim_place(tx: &OrgTx, code: &enrollment_code::Model) -> Result<()> {
    let enrolled = enrollment_code::Column::EnrolledDevices;
    let claimed = enrollment_code::Entity::update_many()
        .col_expr(enrolled, Expr::col(enrolled).add(1))
        .filter(enrollment_code::Column::Id.eq(code.id))
        .filter(enrollment_code::Column::OrgId.eq(tx.org_id()))
        .filter(
            Condition::any()
                .add(enrollment_code::Column::MaxDevices.is_null())
                .add(Expr::col(enrolled).lt(Expr::col(enrollment_code::Column::MaxDevices))),
        )
        .exec(tx.conn())
        .await?;
    if claimed.rows_affected != 1 {
        return Err(Error::Unauthenticated(format!(
            "enrollment code has enrolled all the devices it allows ({})",
            code.max_devices.unwrap_or_default()
        )));
    }
    Ok(())
}
