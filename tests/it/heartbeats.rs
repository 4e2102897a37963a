//! Heartbeats from many devices at once, each landing on its own device,
//! recorded in memory and flushed to the database in shared transactions.

use crate::common;

use reqwest::StatusCode;
use serde_json::json;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_heartbeats_each_land_on_their_device() {
    let s = Arc::new(
        common::start_with(|c| {
            c.rate_limits.pair_rate_per_minute = 0;
            c.rate_limits.device_rate_per_second = 0;
        })
        .await,
    );
    let other = s.other_org("acme").await;
    let mut devices = Vec::new();
    for i in 0..24 {
        // Half the devices in another organization: batches mix organizations.
        let owner = if i % 2 == 0 {
            s.owner_key.clone()
        } else {
            other.clone()
        };
        let (id, key) = s.paired_device_as(&owner, &format!("d{i}")).await;
        devices.push((id, key, owner));
    }
    let mut tasks = Vec::new();
    for round in 0..5u64 {
        for (i, (_, key, _)) in devices.iter().enumerate() {
            let (s, key) = (s.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let a = s
                    .post("/api/public/v1/heartbeat", Some(&key), json!({"uptime_seconds": i as u64 * 1000 + round, "hostname": format!("host-{i}")}))
                    .await;
                assert_eq!(a.status, StatusCode::OK, "{}", a.body);
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for (i, (id, _, owner)) in devices.iter().enumerate() {
        let d = s.get(&format!("/api/v1/devices/{id}"), Some(owner)).await;
        assert_eq!(d.body["status"], "online");
        assert_eq!(d.body["hostname"], format!("host-{i}"));
        let uptime = d.body["uptime_seconds"].as_u64().unwrap();
        assert_eq!(uptime / 1000, i as u64, "device {i} got its own uptime");
    }
}

/// Heartbeats are kept in memory and flushed every second (see
/// `core::liveness`): this replica answers from memory at once, the
/// database has them within a flush, and a clean shutdown loses none.
#[tokio::test]
async fn heartbeats_are_seen_at_once_and_reach_the_database_within_a_flush() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    let a = s
        .post(
            "/api/public/v1/heartbeat",
            Some(&key),
            json!({"firmware_version": "2.0.1", "hostname": "cam-host"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let device = s
        .get(&format!("/api/v1/devices/{id}"), Some(&s.owner_key))
        .await;
    assert_eq!(device.body["status"], "online", "{}", device.body);
    assert_eq!(device.body["firmware_version"], "2.0.1");

    // The database, read directly, has it within a flush or two.
    let device_id: uuid::Uuid = id.parse().unwrap();
    let started = std::time::Instant::now();
    loop {
        use sea_orm::EntityTrait;
        let org_id = s.org_id().await;
        let tx = s.app.core.store.org_read(org_id).await.unwrap();
        let row = swrm::store::entities::device_liveness::Entity::find_by_id(device_id)
            .one(tx.conn())
            .await
            .unwrap();
        if let Some(row) = row {
            assert_eq!(row.hostname.as_deref(), Some("cam-host"));
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "not flushed after 3 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The last heartbeat before a clean shutdown is kept.
    let a = s
        .post(
            "/api/public/v1/heartbeat",
            Some(&key),
            json!({"firmware_version": "2.0.2"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let s = s.restart().await;
    let device = s
        .get(&format!("/api/v1/devices/{id}"), Some(&s.owner_key))
        .await;
    assert_eq!(device.body["firmware_version"], "2.0.2", "{}", device.body);
    assert_eq!(device.body["status"], "online");
}

/// Liveness is stored apart from the device (`device_liveness`): a stored
/// heartbeat's firmware gives way to the firmware a re-pairing reports, and
/// the rest of what heartbeats carry still shows.
#[tokio::test]
async fn a_re_paired_device_shows_the_firmware_it_paired_with() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    let beat = s
        .post(
            "/api/public/v1/heartbeat",
            Some(&key),
            json!({"firmware_version": "1.0.0", "hostname": "cam-host"}),
        )
        .await;
    assert_eq!(beat.status, StatusCode::OK, "{}", beat.body);
    s.app.core.liveness.flush(&s.app.core).await.unwrap();

    let fresh = s
        .post(
            &format!("/api/v1/devices/{id}/provisioning-token"),
            Some(&s.owner_key),
            json!({}),
        )
        .await;
    let token = fresh.body["provisioning_token"].as_str().unwrap();
    let paired = s
        .post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": token, "firmware_version": "2.0.0"}),
        )
        .await;
    assert_eq!(paired.status, StatusCode::OK, "{}", paired.body);
    let device = s
        .get(&format!("/api/v1/devices/{id}"), Some(&s.owner_key))
        .await;
    assert_eq!(device.body["firmware_version"], "2.0.0");
    assert_eq!(device.body["hostname"], "cam-host");
    assert_eq!(device.body["status"], "online");
}
