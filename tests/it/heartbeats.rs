//! Heartbeats from many devices at once: every one is committed before it is
//! answered (they are written in shared transactions), each to its own device.

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
