//! The audit trail: every security change leaves one event, written with
//! the change, naming its actor and target (never a secret) and, for pair
//! and enroll, the source IP; scoped to the organization; owner and admin
//! keys only; removed after the retention period.

use crate::common;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn events(s: &common::TestServer, key: &str, query: &str) -> Vec<Value> {
    let a = s
        .get(&format!("/api/v1/audit-events?{query}"), Some(key))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body["audit_events"].as_array().unwrap().clone()
}

fn actions(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn every_security_change_leaves_one_event_with_actor_and_target() {
    let s = common::start_with_clock(|c| c.rate_limits.pair_rate_per_minute = 0).await;
    let owner = s.owner_key.clone();
    let (device_id, token) = s.create_device("cam").await;
    let paired = s
        .post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": token}),
        )
        .await;
    assert_eq!(paired.status, StatusCode::OK);
    let path = |what: &str| format!("/api/v1/devices/{device_id}/{what}");
    assert_eq!(
        s.post(&path("rotate-key"), Some(&owner), json!({}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        s.post(&path("revoke-key"), Some(&owner), json!({}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        s.post(&path("provisioning-token"), Some(&owner), json!({}))
            .await
            .status,
        StatusCode::CREATED
    );
    let batch = s
        .post(
            "/api/v1/devices:batchCreate",
            Some(&owner),
            json!({"requests": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}),
        )
        .await;
    assert_eq!(batch.status, StatusCode::CREATED);
    let admin = s
        .post(
            "/api/v1/api-keys",
            Some(&owner),
            json!({"name": "ops", "role": "admin"}),
        )
        .await;
    let admin_id = admin.body["id"].as_str().unwrap().to_owned();
    let admin_key = admin.body["api_key"].as_str().unwrap().to_owned();
    let code = s
        .post(
            "/api/v1/enrollment-codes",
            Some(&admin_key),
            json!({"name": "line"}),
        )
        .await;
    let code_id = code.body["id"].as_str().unwrap().to_owned();
    let enrolled = s
        .post(
            "/api/public/v1/enroll",
            None,
            json!({"enrollment_code": code.body["code"], "serial_number": "SN-1"}),
        )
        .await;
    assert_eq!(enrolled.status, StatusCode::CREATED);
    for path in [
        format!("/api/v1/enrollment-codes/{code_id}"),
        format!("/api/v1/api-keys/{admin_id}"),
    ] {
        let a = s
            .call(reqwest::Method::DELETE, &path, Some(&owner), None)
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{path}");
    }

    let all = events(&s, &owner, "").await;
    assert_eq!(
        actions(&all),
        [
            "devices.created",
            "device.paired",
            "device.key_rotated",
            "device.key_revoked",
            "device.provisioning_token_issued",
            "devices.created",
            "api_key.created",
            "enrollment_code.created",
            "device.enrolled",
            "enrollment_code.revoked",
            "api_key.deleted",
        ]
    );
    let by = |action: &str| all.iter().find(|e| e["action"] == action).unwrap().clone();
    let pair = by("device.paired");
    assert_eq!(pair["target_type"], "device");
    assert_eq!(pair["target_id"], device_id.as_str());
    assert!(
        pair["actor"]
            .as_str()
            .unwrap()
            .starts_with("provisioning_token:")
    );
    assert_eq!(pair["source_ip"], "127.0.0.1");
    let enroll = by("device.enrolled");
    assert_eq!(enroll["actor"], format!("enrollment_code:{code_id}"));
    assert_eq!(enroll["target_id"], enrolled.body["device_id"]);
    assert_eq!(
        by("enrollment_code.created")["actor"],
        format!("api_key:{admin_id}")
    );
    assert!(
        by("device.key_revoked")["actor"]
            .as_str()
            .unwrap()
            .starts_with("api_key:")
    );
    let batch_event = &all[5];
    assert_eq!(batch_event["count"], 3);
    assert!(batch_event["target_id"].is_null());

    // Filters.
    let about_device = events(&s, &owner, &format!("target_id={device_id}")).await;
    assert_eq!(about_device.len(), 5, "{about_device:?}");
    assert_eq!(
        actions(&events(&s, &owner, "action=device.key_revoked").await),
        ["device.key_revoked"]
    );

    // Never a secret.
    let text = serde_json::to_string(&all).unwrap();
    for secret in [
        token.as_str(),
        &admin_key,
        code.body["code"].as_str().unwrap(),
    ] {
        assert!(!text.contains(secret));
    }
    assert!(!text.contains(paired.body["api_key"].as_str().unwrap()));

    // Viewers may not read it; other organizations see none of it.
    let viewer = s
        .post(
            "/api/v1/api-keys",
            Some(&owner),
            json!({"name": "v", "role": "viewer"}),
        )
        .await
        .body["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = s.get("/api/v1/audit-events", Some(&viewer)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let other = s.other_org("other").await;
    assert!(events(&s, &other, "").await.is_empty());

    // Past the retention period (365 days by default), events go.
    s.clock
        .advance(std::time::Duration::from_secs(366 * 86_400));
    let removed = swrm::core::audit::purge(&s.app.core).await.unwrap();
    assert!(removed >= 12, "{removed}");
    assert!(events(&s, &owner, "").await.is_empty());
}

#[tokio::test]
async fn a_refused_change_leaves_no_event() {
    let s = common::start().await;
    let owner = s.owner_key.clone();
    // The organization's last owner key cannot be deleted.
    let keys = s.get("/api/v1/api-keys", Some(&owner)).await;
    let id = keys.body["api_keys"][0]["id"].as_str().unwrap().to_owned();
    let a = s
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/api-keys/{id}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    // A used provisioning token pairs nothing.
    let (_, token) = s.create_device("cam").await;
    let body = json!({"provisioning_token": token});
    assert_eq!(
        s.post("/api/public/v1/pair", None, body.clone())
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        s.post("/api/public/v1/pair", None, body).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        actions(&events(&s, &owner, "").await),
        ["devices.created", "device.paired"]
    );
}
