//! Organization API keys: created with a role, listed without their secret,
//! deleted (revoked) at once on every replica.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect,
};

use super::{
    Core,
    audit::{self, Action},
    new_id,
    page::PageRequest,
    validate,
};
use crate::{
    auth::{OrgRead, OrgWrite, Role, secret},
    bus::Event,
    error::{Error, Result},
    store::entities::{api_key, organization},
};

/// A new key and its secret, shown once.
pub struct NewApiKey {
    pub key: api_key::Model,
    pub plaintext: String,
}

pub async fn create(core: &Core, access: &OrgWrite, name: &str, role: &str) -> Result<NewApiKey> {
    let name = validate::name("name", name)?;
    let role = Role::parse(role.trim())
        .ok_or_else(|| Error::invalid("role must be \"owner\", \"admin\" or \"viewer\""))?;
    if role == Role::Owner && access.role() != Role::Owner {
        return Err(Error::PermissionDenied(
            "only an owner key may create owner keys".into(),
        ));
    }
    let secret = secret::generate(secret::SecretKind::ApiKey);
    let tx = core.store.org_tx(access.org_id()).await?;
    let key = api_key::Entity::insert(api_key::ActiveModel {
        id: Set(new_id()),
        org_id: Set(tx.org_id()),
        name: Set(name),
        role: Set(role.as_str().into()),
        prefix: Set(secret.display_prefix()),
        secret_hash: Set(secret.hash),
        created_at: Set(core.clock.now()),
        last_used_at: Set(None),
        revoked_at: Set(None),
    })
    .exec_with_returning(tx.conn())
    .await?;
    audit::by_key(
        core,
        &tx,
        access,
        Action::ApiKeyCreated,
        ("api_key", key.id),
    )
    .await?;
    tx.commit().await?;
    Ok(NewApiKey {
        key,
        plaintext: secret.plaintext,
    })
}

/// Live (not deleted) keys of the organization.
pub async fn list(
    core: &Core,
    access: &OrgRead,
    page: PageRequest,
) -> Result<(Vec<api_key::Model>, String)> {
    let tx = core.store.org_read(access.org_id()).await?;
    let select = api_key::Entity::find()
        .filter(api_key::Column::OrgId.eq(tx.org_id()))
        .filter(api_key::Column::RevokedAt.is_null());
    let out = page
        .fetch(select, api_key::Column::Id, tx.conn(), |m| m.id)
        .await?;
    tx.commit().await?;
    Ok(out)
}

/// Revokes the key: its next request is 401, on every replica.
pub async fn delete(core: &Core, access: &OrgWrite, id: &str) -> Result<()> {
    let id = validate::path_id("API key", id)?;
    let mut tx = core.store.org_tx(access.org_id()).await?;
    // Key deletions in one organization run one at a time (the organization
    // row is their one lock), so two owners deleting each other cannot both
    // pass the last-owner check, nor deadlock.
    organization::Entity::find_by_id(tx.org_id())
        .lock_exclusive()
        .one(tx.conn())
        .await?;
    let key = api_key::Entity::find_by_id(id)
        .filter(api_key::Column::OrgId.eq(tx.org_id()))
        .filter(api_key::Column::RevokedAt.is_null())
        .one(tx.conn())
        .await?
        .ok_or_else(|| Error::not_found("API key"))?;
    if key.role == Role::Owner.as_str() {
        if access.role() != Role::Owner {
            return Err(Error::PermissionDenied(
                "only an owner key may delete owner keys".into(),
            ));
        }
        let owners = api_key::Entity::find()
            .filter(api_key::Column::OrgId.eq(tx.org_id()))
            .filter(api_key::Column::Role.eq(Role::Owner.as_str()))
            .filter(api_key::Column::RevokedAt.is_null())
            .count(tx.conn())
            .await?;
        if owners <= 1 {
            return Err(Error::FailedPrecondition(
                "this is the organization's last owner key; create another owner key first".into(),
            ));
        }
    }
    api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Some(core.clock.now()).into())
        .filter(api_key::Column::Id.eq(key.id))
        .filter(api_key::Column::OrgId.eq(tx.org_id()))
        .exec(tx.conn())
        .await?;
    audit::by_key(
        core,
        &tx,
        access,
        Action::ApiKeyDeleted,
        ("api_key", key.id),
    )
    .await?;
    tx.publish(Event::ApiKeyChanged { key_id: key.id }).await?;
    tx.commit().await?;
    Ok(())
}
