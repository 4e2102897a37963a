//! Organizations and their API keys.

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect,
    TransactionTrait,
};
use uuid::Uuid;

use super::{new_id, validate};
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
    let tx = store.unscoped().begin().await?;
    let taken = organization::Entity::find()
        .filter(organization::Column::Name.eq(&name))
        .count(&tx)
        .await?;
    if taken > 0 {
        return Err(Error::AlreadyExists(format!(
            "an organization named {name:?} already exists"
        )));
    }
    let org_id = new_id();
    let now = Utc::now();
    organization::Entity::insert(organization::ActiveModel {
        id: Set(org_id),
        name: Set(name),
        created_at: Set(now),
    })
    .exec(&tx)
    .await?;
    let key = secret::generate(secret::SecretKind::ApiKey);
    api_key::Entity::insert(api_key::ActiveModel {
        id: Set(new_id()),
        org_id: Set(org_id),
        name: Set("owner".into()),
        role: Set(Role::Owner.as_str().into()),
        prefix: Set(key.display_prefix()),
        secret_hash: Set(key.hash.clone()),
        created_at: Set(now),
        last_used_at: Set(None),
        revoked_at: Set(None),
    })
    .exec(&tx)
    .await?;
    tx.commit().await?;
    Ok(NewOrg {
        org_id,
        api_key: key.plaintext,
    })
}

/// On an empty database, creates organization `default` and returns its
/// owner key (to print once). Returns `None` when any organization exists.
pub async fn ensure_default_org(store: &Store) -> Result<Option<NewOrg>> {
    if organization::Entity::find().count(store.unscoped()).await? > 0 {
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
    organization::Entity::find_by_id(org_id)
        .one(store.unscoped())
        .await?
        .ok_or_else(|| Error::not_found("organization"))
}

/// The organization, when the database holds exactly one (the command
/// line's default).
pub async fn the_only_org(store: &Store) -> Result<Uuid> {
    let orgs = organization::Entity::find()
        .limit(2)
        .all(store.unscoped())
        .await?;
    match orgs.as_slice() {
        [org] => Ok(org.id),
        [] => Err(Error::NotFound("the database holds no organization".into())),
        _ => Err(Error::invalid(
            "the database holds several organizations: pass --org ORG_ID",
        )),
    }
}
