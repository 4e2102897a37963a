//! Model artifacts: uploaded by an operator (REST multipart or the gRPC
//! client stream), streamed into the blob store with SHA-256 and size
//! computed on the way in, never held whole in memory. A model's bytes
//! never change; a new version is a new model.

pub mod deployments;

use bytes::Bytes;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tokio_stream::{Stream, StreamExt};
use uuid::Uuid;

use super::{Core, blob_upload::BlobUpload, blobs, new_id, page::PageRequest, validate};
use crate::{
    auth::{OrgRead, OrgWrite},
    error::{Error, Result},
    store::{
        OrgTx,
        entities::{deployment, model_artifact},
    },
};

/// Longest name and version.
const MAX_TEXT: usize = 200;
/// Longest format ("onnx", "tflite", ...).
const MAX_FORMAT: usize = 32;

/// Some of a model's metadata: REST sends each field as its own part.
#[derive(Default, Debug)]
pub struct ModelMeta {
    pub name: Option<String>,
    pub version: Option<String>,
    pub format: Option<String>,
}

pub enum ModelPart {
    Meta(ModelMeta),
    Data(Bytes),
}

fn merge(into: &mut ModelMeta, part: ModelMeta) -> Result<()> {
    for (field, slot, value) in [
        ("name", &mut into.name, part.name),
        ("version", &mut into.version, part.version),
        ("format", &mut into.format, part.format),
    ] {
        if let Some(v) = value {
            if slot.is_some() {
                return Err(Error::invalid(format!("{field} was given twice")));
            }
            *slot = Some(v);
        }
    }
    Ok(())
}

/// The metadata, checked: (name, version, format).
fn checked(meta: &ModelMeta) -> Result<(String, String, String)> {
    let field = |name: &str, value: &Option<String>, max: usize| -> Result<String> {
        let v = value
            .as_deref()
            .ok_or_else(|| Error::invalid(format!("{name} is required")))?;
        let v = validate::name(name, v)?;
        if v.chars().count() > max {
            return Err(Error::invalid(format!(
                "{name} must be at most {max} characters"
            )));
        }
        Ok(v)
    };
    Ok((
        field("name", &meta.name, MAX_TEXT)?,
        field("version", &meta.version, MAX_TEXT)?,
        field("format", &meta.format, MAX_FORMAT)?.to_ascii_lowercase(),
    ))
}

/// Stores one model from `parts` (metadata in any order; on gRPC first).
pub async fn upload<S>(
    core: &Core,
    access: &OrgWrite,
    mut parts: S,
) -> Result<model_artifact::Model>
where
    S: Stream<Item = Result<ModelPart>> + Unpin + Send,
{
    let org_id = access.org_id();
    let id = new_id();
    let key = format!("models/{}/{}.bin", org_id.simple(), id.simple());
    let mut file = BlobUpload::new(org_id, key, "file", core.settings.max_model_bytes);
    let mut meta = ModelMeta::default();
    let outcome = async {
        while let Some(part) = parts.next().await {
            match part? {
                ModelPart::Meta(m) => merge(&mut meta, m)?,
                ModelPart::Data(bytes) => {
                    // Refuse before the bytes when all the metadata came
                    // first (as on gRPC; REST parts may come in any order).
                    let complete =
                        meta.name.is_some() && meta.version.is_some() && meta.format.is_some();
                    if file.size() == 0 && complete {
                        checked(&meta)?;
                    }
                    file.push(core, bytes).await?;
                }
            }
        }
        let (name, version, format) = checked(&meta)?;
        let (size, sha256) = file.finish().await?;
        let row = model_artifact::Model {
            org_id,
            id,
            name,
            version,
            format,
            sha256,
            size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
            blob_key: file.key().to_owned(),
            created_ms: core.clock.now().timestamp_millis(),
        };
        insert(core, row).await
    }
    .await;
    if outcome.is_err() {
        file.abandon(core).await;
    }
    outcome
}

async fn insert(core: &Core, row: model_artifact::Model) -> Result<model_artifact::Model> {
    let tx = core.store.org_tx(row.org_id).await?;
    let taken = model_artifact::Entity::find()
        .filter(model_artifact::Column::OrgId.eq(row.org_id))
        .filter(model_artifact::Column::Name.eq(row.name.as_str()))
        .filter(model_artifact::Column::Version.eq(row.version.as_str()))
        .one(tx.conn())
        .await?;
    if taken.is_some() {
        return Err(version_taken(&row));
    }
    blobs::settle(&tx, &row.blob_key).await?;
    let active: model_artifact::ActiveModel = row.clone().into();
    match model_artifact::Entity::insert(active)
        .exec_without_returning(tx.conn())
        .await
    {
        Ok(_) => {}
        Err(e) => {
            let e = Error::from(e);
            return Err(match e {
                Error::AlreadyExists(_) => version_taken(&row),
                other => other,
            });
        }
    }
    tx.commit().await?;
    Ok(row)
}

fn version_taken(row: &model_artifact::Model) -> Error {
    Error::AlreadyExists(format!(
        "model {:?} version {:?} already exists; upload a new version",
        row.name, row.version
    ))
}

pub async fn find(tx: &OrgTx, id: Uuid) -> Result<model_artifact::Model> {
    model_artifact::Entity::find_by_id((tx.org_id(), id))
        .one(tx.conn())
        .await?
        .ok_or_else(|| Error::not_found("model"))
}

pub async fn list(
    core: &Core,
    access: &OrgRead,
    page: PageRequest,
) -> Result<(Vec<model_artifact::Model>, String)> {
    let tx = core.store.org_read(access.org_id()).await?;
    let select =
        model_artifact::Entity::find().filter(model_artifact::Column::OrgId.eq(tx.org_id()));
    let out = page
        .fetch(select, model_artifact::Column::Id, tx.conn(), |m| m.id)
        .await?;
    tx.commit().await?;
    Ok(out)
}

pub async fn get(core: &Core, access: &OrgRead, id: &str) -> Result<model_artifact::Model> {
    let id = validate::path_id("model", id)?;
    let tx = core.store.org_read(access.org_id()).await?;
    let found = find(&tx, id).await?;
    tx.commit().await?;
    Ok(found)
}

/// Deletes a model no active deployment uses, its superseded deployments
/// (their history goes with it) and its artifact.
pub async fn delete(core: &Core, access: &OrgWrite, id: &str) -> Result<()> {
    let id = validate::path_id("model", id)?;
    let mut tx = core.store.org_tx(access.org_id()).await?;
    let model = find(&tx, id).await?;
    let uses = deployment::Entity::find()
        .filter(deployment::Column::OrgId.eq(tx.org_id()))
        .filter(deployment::Column::ModelId.eq(id))
        .all(tx.conn())
        .await?;
    if let Some(active) = uses
        .iter()
        .find(|d| d.status == deployments::ACTIVE_DEPLOYMENT)
    {
        return Err(Error::FailedPrecondition(format!(
            "model is deployed (deployment {}); deploy another model to its devices first",
            active.id
        )));
    }
    let forgotten = deployment::Entity::delete_many()
        .filter(deployment::Column::OrgId.eq(tx.org_id()))
        .filter(deployment::Column::ModelId.eq(id))
        .exec(tx.conn())
        .await?;
    if forgotten.rows_affected > 0 {
        // A device moved out of a group may still have named one of them.
        tx.publish(crate::bus::Event::DeploymentChanged {
            org_id: tx.org_id(),
        })
        .await?;
    }
    model_artifact::Entity::delete_by_id((tx.org_id(), id))
        .exec(tx.conn())
        .await?;
    blobs::release(&tx, &model.blob_key).await?;
    tx.commit().await?;
    blobs::discard(core, &model.blob_key).await;
    Ok(())
}
