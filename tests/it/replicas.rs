//! Scale-out: two servers on one PostgreSQL database. A key revoked,
//! rotated or re-paired through one stops working on the other at once
//! (LISTEN/NOTIFY), although the other had it cached (for hours). On SQLite (one process) this is skipped.

use crate::common::{self, TestServer};

use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

/// Polls until `path` answers `want` for `key` on `server`; returns how long it took.
async fn until_status(server: &common::TestServer, key: &str, want: StatusCode) -> Duration {
    let started = Instant::now();
    loop {
        let a = server.heartbeat(key).await;
        if a.status == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still {} after 5 s",
            a.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Has `s` cache `key`; answers its credential lookups so far. The
/// pairing's own event may still be on its way to `s` and evict the key
/// once, so this waits for a heartbeat that `s` answers from memory.
async fn warm_cache(s: &TestServer, key: &str) -> u64 {
    let warming = Instant::now();
    loop {
        assert_eq!(s.heartbeat(key).await.status, StatusCode::OK);
        let before = s.app.auth_db_lookups();
        assert_eq!(s.heartbeat(key).await.status, StatusCode::OK);
        if s.app.auth_db_lookups() == before {
            return before;
        }
        assert!(
            warming.elapsed() < Duration::from_secs(5),
            "the replica never serves the key from its cache"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn revocation_reaches_every_replica_at_once() {
    let a = common::start().await;
    let Some(b) = common::start_replica(&a).await else {
        eprintln!("skipped: needs SWRM_TEST_DATABASE_URL (PostgreSQL)");
        return;
    };
    let (id, key) = a.paired_device("cam").await;
    // Replica b resolves and caches the key.
    warm_cache(&b, &key).await;

    let r = a
        .post(
            &format!("/api/v1/devices/{id}/revoke-key"),
            Some(&a.owner_key),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let took = until_status(&b, &key, StatusCode::UNAUTHORIZED).await;
    assert!(
        took < Duration::from_secs(2),
        "took {took:?}; cached keys live for hours otherwise"
    );

    // Rotation too: the new key works on b, the old one stops there.
    let (id, old) = a.paired_device("cam2").await;
    assert_eq!(b.heartbeat(&old).await.status, StatusCode::OK);
    let r = a
        .post(
            &format!("/api/v1/devices/{id}/rotate-key"),
            Some(&a.owner_key),
            json!({}),
        )
        .await;
    let new = r.body["api_key"].as_str().unwrap().to_owned();
    until_status(&b, &old, StatusCode::UNAUTHORIZED).await;
    assert_eq!(b.heartbeat(&new).await.status, StatusCode::OK);

    // Re-pairing too (a factory reset): b cached the key, a pairs again.
    let (id, first) = a.paired_device("cam3").await;
    assert_eq!(b.heartbeat(&first).await.status, StatusCode::OK);
    let token = a
        .post(
            &format!("/api/v1/devices/{id}/provisioning-token"),
            Some(&a.owner_key),
            json!({}),
        )
        .await;
    let paired = a
        .post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": token.body["provisioning_token"]}),
        )
        .await;
    assert_eq!(paired.status, StatusCode::OK, "{}", paired.body);
    let took = until_status(&b, &first, StatusCode::UNAUTHORIZED).await;
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let second = paired.body["api_key"].as_str().unwrap();
    assert_eq!(b.heartbeat(second).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_device_waiter_on_one_replica_hears_a_change_made_on_another() {
    let a = common::start().await;
    let Some(b) = common::start_replica(&a).await else {
        return;
    };
    let (id, _) = a.paired_device("cam").await;
    let device_id: uuid::Uuid = id.parse().unwrap();
    let mut waiter = b.app.core.bus.watch_device(device_id);
    let r = a
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/devices/{id}"),
            Some(&a.owner_key),
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(2), waiter.changed())
        .await
        .expect("replica b is woken by replica a's commit");
}

#[tokio::test]
async fn a_replica_that_loses_its_listener_stops_trusting_its_cache() {
    let a = common::start().await;
    let Some(b) = common::start_replica(&a).await else {
        return;
    };
    let (_, key) = a.paired_device("cam").await;
    let cached = warm_cache(&b, &key).await;

    // Cut every LISTEN connection on this database: b (and a) may have
    // missed events while reconnecting, so they must forget their caches.
    let url = b.database_url.clone().unwrap();
    let admin = sea_orm::Database::connect(&url).await.unwrap();
    use sea_orm::ConnectionTrait;
    admin
        .execute_unprepared(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        assert_eq!(b.heartbeat(&key).await.status, StatusCode::OK);
        if b.app.auth_db_lookups() > cached {
            break; // looked up again: the cache was dropped
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "b still trusts its cache"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_heartbeat_on_one_replica_shows_online_on_another_within_a_flush() {
    let a = common::start().await;
    let Some(b) = common::start_replica(&a).await else {
        return;
    };
    let (id, key) = a.paired_device("cam").await;
    assert_eq!(a.heartbeat(&key).await.status, StatusCode::OK);
    let started = Instant::now();
    loop {
        let d = b
            .get(&format!("/api/v1/devices/{id}"), Some(&b.owner_key))
            .await;
        if d.body["status"] == "online" {
            break;
        }
        assert_eq!(d.body["status"], "never_seen");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "b still has not seen the heartbeat"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
