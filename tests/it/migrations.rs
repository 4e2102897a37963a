//! Upgrading a database that already holds a fleet: the migrations that
//! move data keep it. Run on SQLite, and on PostgreSQL when
//! `SWRM_TEST_DATABASE_URL` is set (as the owner login the tests use).

use crate::common;
use chrono::Utc;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ActiveModelTrait, Database, DatabaseConnection, EntityTrait, IntoActiveModel};
use swrm::store::entities::{device, device_liveness, organization};

/// The last migration before liveness moved out of `devices`.
const BEFORE_LIVENESS_TABLE: u32 = 11;

async fn fresh_database(dir: &tempfile::TempDir) -> DatabaseConnection {
    let url = match common::fresh_postgres_url().await {
        Some(url) => url,
        None => format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("upgrade.db").display()
        ),
    };
    Database::connect(&url).await.expect("connect")
}

#[tokio::test]
async fn heartbeats_stored_before_the_liveness_table_are_carried_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_database(&dir).await;
    Migrator::up(&db, Some(BEFORE_LIVENESS_TABLE))
        .await
        .unwrap();

    let now = Utc::now();
    let org = organization::Model {
        id: uuid::Uuid::now_v7(),
        name: "acme".into(),
        created_at: now,
    };
    organization::Entity::insert(org.clone().into_active_model())
        .exec(&db)
        .await
        .unwrap();
    let seen_at = now - chrono::Duration::seconds(42);
    let mut heard = swrm::core::device_batch::blank_row(org.id, "heard".into(), now);
    heard.last_seen_at = Some(seen_at);
    heard.hostname = Some("cam-host".into());
    heard.firmware_version = Some("1.2.3".into());
    heard.source_ip = Some("10.0.0.7".into());
    let silent = swrm::core::device_batch::blank_row(org.id, "silent".into(), now);
    for d in [&heard, &silent] {
        d.clone().into_active_model().insert(&db).await.unwrap();
    }

    Migrator::up(&db, None).await.unwrap();
    let carried = device_liveness::Entity::find().all(&db).await.unwrap();
    assert_eq!(
        carried.len(),
        1,
        "only the device that was heard: {carried:?}"
    );
    let row = &carried[0];
    assert_eq!(row.device_id, heard.id);
    assert_eq!(row.org_id, org.id);
    assert_eq!(
        row.last_seen_at.timestamp_millis(),
        seen_at.timestamp_millis()
    );
    assert_eq!(row.hostname.as_deref(), Some("cam-host"));
    assert_eq!(row.firmware_version.as_deref(), Some("1.2.3"));
    assert_eq!(row.source_ip.as_deref(), Some("10.0.0.7"));
    // The devices themselves are untouched.
    assert_eq!(device::Entity::find().all(&db).await.unwrap().len(), 2);
}
