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
    let revoked = s
        .post(
            &format!("/api/v1/enrollment-codes/{code_id}/revoke"),
            Some(&owner),
            json!({}),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    for path in [format!("/api/v1/api-keys/{admin_id}")] {
        let a = s
            .call(reqwest::Method::DELETE, &path, Some(&owner), None)
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{path}");
    }

    let all = events(&s, &owner, "").await;
    assert_eq!(
        actions(&all),
        [
            "api_key.created",
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
    assert_eq!(
        all[0]["actor"], "operator",
        "the owner key of the first start"
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
    let batch_event = &all[6];
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
    // Its own first key is all another organization's trail holds.
    assert_eq!(actions(&events(&s, &other, "").await), ["api_key.created"]);

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
        ["api_key.created", "devices.created", "device.paired"]
    );
}

/// Writes what the server counted this minute (the flush loop does it
/// every minute, and at shutdown).
async fn flush_counts(s: &common::TestServer) {
    s.app.core.audit_tally.flush(&s.app.core).await.unwrap();
}

#[tokio::test]
async fn role_denials_are_counted_per_key_source_and_operation() {
    let s = common::start().await;
    let viewer = s
        .post(
            "/api/v1/api-keys",
            Some(&s.owner_key),
            json!({"name": "dashboard", "role": "viewer"}),
        )
        .await;
    let viewer_id = viewer.body["id"].as_str().unwrap().to_owned();
    let viewer = viewer.body["api_key"].as_str().unwrap().to_owned();
    for _ in 0..50 {
        let denied = s
            .post("/api/v1/devices", Some(&viewer), json!({"name": "x"}))
            .await;
        assert_eq!(denied.status, StatusCode::FORBIDDEN);
    }
    let (_, device_key) = s.paired_device("cam").await;
    for _ in 0..2 {
        let denied = s.get("/api/v1/devices", Some(&device_key)).await;
        assert_eq!(denied.status, StatusCode::FORBIDDEN);
    }
    let mut admin = s.admin_client(Some(&viewer)).await;
    let denied = admin
        .create_device(swrm::proto::CreateDeviceRequest {
            name: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    // Reads the viewer may make are not denials.
    assert_eq!(
        s.get("/api/v1/devices", Some(&viewer)).await.status,
        StatusCode::OK
    );
    assert!(
        events(&s, &s.owner_key, "action=auth.role_denied")
            .await
            .is_empty(),
        "counted, not written per request"
    );

    flush_counts(&s).await;
    let denials = events(&s, &s.owner_key, "action=auth.role_denied").await;
    assert_eq!(denials.len(), 3, "{denials:#?}");
    let find = |detail: &str| {
        denials
            .iter()
            .find(|e| e["detail"].as_str().unwrap().contains(detail))
            .unwrap_or_else(|| panic!("no denial of {detail}: {denials:#?}"))
    };
    let rest = find("POST /api/v1/devices");
    assert_eq!(rest["count"], 50);
    assert_eq!(rest["actor"], format!("api_key:{viewer_id}"));
    assert_eq!(rest["source_ip"], "127.0.0.1");
    assert_eq!(find("CreateDevice")["count"], 1);
    let device = find("GET /api/v1/devices");
    assert_eq!(device["count"], 2);
    assert!(
        device["actor"].as_str().unwrap().starts_with("device_key:"),
        "{device}"
    );
    // Written once: the next flush adds nothing new.
    flush_counts(&s).await;
    assert_eq!(
        events(&s, &s.owner_key, "action=auth.role_denied")
            .await
            .len(),
        3
    );
    // Another organization's trail has none of it.
    let other = s.other_org("globex").await;
    // Its own first key is all another organization's trail holds.
    assert_eq!(actions(&events(&s, &other, "").await), ["api_key.created"]);
}

#[tokio::test]
async fn refused_credentials_that_name_a_key_are_counted_against_its_organization() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    let revoked = s
        .post(
            &format!("/api/v1/devices/{id}/revoke-key"),
            Some(&s.owner_key),
            json!({}),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    for _ in 0..4 {
        assert_eq!(s.heartbeat(&key).await.status, StatusCode::UNAUTHORIZED);
    }
    // A secret that matches no key belongs to no organization's trail.
    let forged = swrm::auth::secret::generate(swrm::auth::secret::SecretKind::DeviceKey).plaintext;
    assert_eq!(s.heartbeat(&forged).await.status, StatusCode::UNAUTHORIZED);

    flush_counts(&s).await;
    let failures = events(&s, &s.owner_key, "action=auth.failed").await;
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert_eq!(failures[0]["count"], 4);
    assert_eq!(failures[0]["detail"], "device key revoked or expired");
    assert_eq!(failures[0]["source_ip"], "127.0.0.1");
    assert!(
        failures[0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("device_key:")
    );
    let other = s.other_org("globex").await;
    // Its own first key is all another organization's trail holds.
    assert_eq!(actions(&events(&s, &other, "").await), ["api_key.created"]);
}

#[tokio::test]
async fn a_spent_token_or_a_revoked_code_presented_again_is_counted() {
    let s = common::start().await;
    let (_, token) = s.create_device("cam").await;
    let pair = || {
        s.post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": token}),
        )
    };
    assert_eq!(pair().await.status, StatusCode::OK);
    for _ in 0..3 {
        assert_eq!(pair().await.status, StatusCode::UNAUTHORIZED);
    }
    let code = s
        .post(
            "/api/v1/enrollment-codes",
            Some(&s.owner_key),
            json!({"name": "line 1"}),
        )
        .await;
    let code_id = code.body["id"].as_str().unwrap().to_owned();
    let secret = code.body["code"].as_str().unwrap().to_owned();
    let revoked = s
        .post(
            &format!("/api/v1/enrollment-codes/{code_id}/revoke"),
            Some(&s.owner_key),
            json!({}),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let enroll = s
        .post(
            "/api/public/v1/enroll",
            None,
            json!({"enrollment_code": secret, "serial_number": "SN-1"}),
        )
        .await;
    assert_eq!(enroll.status, StatusCode::UNAUTHORIZED, "{}", enroll.body);
    assert_eq!(
        enroll.body["error"]["message"],
        "enrollment code has been revoked"
    );

    flush_counts(&s).await;
    let failures = events(&s, &s.owner_key, "action=auth.failed").await;
    assert_eq!(failures.len(), 2, "{failures:#?}");
    let by_actor = |prefix: &str| {
        failures
            .iter()
            .find(|e| e["actor"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no failure by {prefix}: {failures:#?}"))
    };
    assert_eq!(by_actor("provisioning_token:")["count"], 3);
    let code_failure = by_actor("enrollment_code:");
    assert_eq!(code_failure["actor"], format!("enrollment_code:{code_id}"));
    assert_eq!(code_failure["detail"], "enrollment code has been revoked");
}
