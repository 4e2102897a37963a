//! Scale-out: two servers on one PostgreSQL database. A key revoked or
//! rotated through one stops working on the other at once (LISTEN/NOTIFY),
//! although the other had it cached. On SQLite (one process) this is skipped.

use crate::common;

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

#[tokio::test]
async fn revocation_reaches_every_replica_at_once() {
    let a = common::start().await;
    let Some(b) = common::start_replica(&a).await else {
        eprintln!("skipped: needs SWRM_TEST_DATABASE_URL (PostgreSQL)");
        return;
    };
    let (id, key) = a.paired_device("cam").await;
    // Replica b resolves and caches the key.
    assert_eq!(b.heartbeat(&key).await.status, StatusCode::OK);
    let lookups = b.app.auth_db_lookups();
    assert_eq!(b.heartbeat(&key).await.status, StatusCode::OK);
    assert_eq!(b.app.auth_db_lookups(), lookups, "served from b's cache");

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
        "took {took:?}, the cache TTL is 30 s"
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
}
