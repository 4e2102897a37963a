//! Organizations and their API keys.

use chrono::Utc;
use sea_orm::{ActiveValue::Set, EntityTrait, SqlErr};
use uuid::Uuid;

use super::{
    audit::{self, Action, Actor, Entry},
    new_id, validate,
};
use crate::{
    auth::{Role, secret},
    error::{Error, Result},
    store::{
        Store,
        entities::{api_key, organization},
    },
};

pub const DEFAULT_ORG: &str = "default";

pub struct NewOrg {
    pub org_id: Uuid,
    /// The owner key, shown once.
    pub api_key: String,
}

/// Creates an organization with an owner API key.
pub async fn create_org(store: &Store, name: &str) -> Result<NewOrg> {
    let name = validate::name("name", name)?;
    let org_id = new_id();
    let now = Utc::now();
    // Scoped to the organization it creates: row security admits its rows
    // and no other's. A taken name is the unique index's answer (another
    // organization's row is not visible to ask).
    let tx = store.org_tx(org_id).await?;
    let created = organization::Entity::insert(organization::ActiveModel {
        id: Set(org_id),
        name: Set(name.clone()),
        created_at: Set(now),
    })
    .exec_without_returning(tx.conn())
    .await;
    if let Err(e) = created {
        if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
            return Err(Error::AlreadyExists(format!(
                "an organization named {name:?} already exists"
            )));
        }
        return Err(e.into());
    }
    let key = secret::generate(secret::SecretKind::ApiKey);
    let key_id = new_id();
    api_key::Entity::insert(api_key::ActiveModel {
        id: Set(key_id),
        org_id: Set(org_id),
        name: Set("owner".into()),
        role: Set(Role::Owner.as_str().into()),
        prefix: Set(key.display_prefix()),
        secret_hash: Set(key.hash.clone()),
        created_at: Set(now),
        last_used_at: Set(None),
        revoked_at: Set(None),
    })
    .exec_without_returning(tx.conn())
    .await?;
    // The first key of an organization is the operator's doing (first
    // start, or `swrm admin create-org`).
    let entry = Entry::new(
        Action::ApiKeyCreated,
        Actor::ApiKey(Uuid::nil()),
        Some(("api_key", key_id)),
    );
    audit::write(&tx, now, entry).await?;
    tx.commit().await?;
    Ok(NewOrg {
        org_id,
        api_key: key.plaintext,
    })
}

/// On an empty database, creates organization `default` and returns its
/// owner key (to print once). Returns `None` when any organization exists.
pub async fn ensure_default_org(store: &Store) -> Result<Option<NewOrg>> {
    if !store.organization_ids(1).await?.is_empty() {
        return Ok(None);
    }
    match create_org(store, DEFAULT_ORG).await {
        Ok(org) => Ok(Some(org)),
        // Another replica starting at the same moment won the race.
        Err(Error::AlreadyExists(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

pub async fn get_org(store: &Store, org_id: Uuid) -> Result<organization::Model> {
    let tx = store.org_read(org_id).await?;
    let org = organization::Entity::find_by_id(org_id)
        .one(tx.conn())
        .await?
        .ok_or_else(|| Error::not_found("organization"))?;
    tx.commit().await?;
    Ok(org)
}

/// The organization, when the database holds exactly one (the command
/// line's default).
pub async fn the_only_org(store: &Store) -> Result<Uuid> {
    match store.organization_ids(2).await?.as_slice() {
        [org] => Ok(*org),
        [] => Err(Error::NotFound("the database holds no organization".into())),
        _ => Err(Error::invalid(
            "the database holds several organizations: pass --org ORG_ID",
        )),
    }
}
