//! Secrets and privileges: one-time expiring provisioning tokens, malformed
//! secrets rejected without a database query, roles, organization scoping,
//! key rotation and revocation.

use crate::common;

use reqwest::{StatusCode, header};
use serde_json::json;

fn assert_unauthenticated(a: &common::Answer) {
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    assert_eq!(a.error_code(), "unauthenticated");
    assert_eq!(a.headers.get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
}

#[tokio::test]
async fn provisioning_token_works_once() {
    let s = common::start().await;
    let (_, token) = s.create_device("cam").await;
    let first = s
        .post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": token}),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let key = first.body["api_key"].as_str().unwrap();
    assert!(key.starts_with("swrm_dk_"));
    assert_eq!(first.body["name"], "cam");
    assert!(first.body["org_id"].is_string() && first.body["device_id"].is_string());

    let second = s
        .post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": token}),
        )
        .await;
    assert_unauthenticated(&second);
}

#[tokio::test]
async fn provisioning_token_as_bearer_pairs() {
    let s = common::start().await;
    let (_, token) = s.create_device("cam").await;
    let a = s
        .post(
            "/api/public/v1/pair",
            Some(&token),
            json!({"serial_number": "X1"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

#[tokio::test]
async fn expired_and_unknown_provisioning_tokens_are_401() {
    let s = common::start_with_clock(|c| c.provisioning_token_ttl_seconds = 60).await;
    let (_, token) = s.create_device("cam").await;
    s.clock.advance(std::time::Duration::from_secs(61));
    let expired = s
        .post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": token}),
        )
        .await;
    assert_unauthenticated(&expired);

    // Well-formed (valid checksum) but never issued.
    let unknown = swrm::auth::secret::generate(swrm::auth::secret::SecretKind::ProvisioningToken);
    let a = s
        .post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": unknown.plaintext}),
        )
        .await;
    assert_unauthenticated(&a);
    let missing = s.post("/api/public/v1/pair", None, json!({})).await;
    assert_unauthenticated(&missing);
}

#[tokio::test]
async fn new_provisioning_token_replaces_the_old_one() {
    let s = common::start().await;
    let (id, old) = s.create_device("cam").await;
    let fresh = s
        .post(
            &format!("/api/v1/devices/{id}/provisioning-token"),
            Some(&s.owner_key),
            json!({}),
        )
        .await;
    assert_eq!(fresh.status, StatusCode::CREATED, "{}", fresh.body);
    let new = fresh.body["provisioning_token"].as_str().unwrap();
    assert!(fresh.body["provisioning_token_expires_at"].is_string());
    assert_unauthenticated(
        &s.post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": old}),
        )
        .await,
    );
    let ok = s
        .post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": new}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_secrets_are_401_without_a_database_query() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam").await;
    // Warm up: the valid key is cached after its first use.
    let ok = s.heartbeat(&key).await;
    assert_eq!(ok.status, StatusCode::OK);
    let before = s.app.auth_db_lookups();

    let mut typo = key.clone().into_bytes();
    let i = 12;
    typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    for bad in [
        "swrm_dk_short",
        "not-a-token",
        typo.as_str(),
        &key[..key.len() - 1],
        "swrm_ak_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let a = s.heartbeat(bad).await;
        assert_unauthenticated(&a);
        let a = s.get("/api/v1/devices", Some(bad)).await;
        assert_unauthenticated(&a);
    }
    let a = s
        .post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": "swrm_pt_nope"}),
        )
        .await;
    assert_unauthenticated(&a);
    assert_eq!(
        s.app.auth_db_lookups(),
        before,
        "no credential query for malformed secrets"
    );

    // And the cached valid key does not query either.
    let ok = s.heartbeat(&key).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(s.app.auth_db_lookups(), before);
}

#[tokio::test]
async fn missing_key_is_401() {
    let s = common::start().await;
    assert_unauthenticated(&s.post("/api/public/v1/heartbeat", None, json!({})).await);
    assert_unauthenticated(&s.get("/api/public/v1/config", None).await);
    assert_unauthenticated(&s.get("/api/v1/devices", None).await);
}

#[tokio::test]
async fn keys_on_the_wrong_kind_of_route_are_403() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    for (path, body) in [
        ("/api/v1/devices", Some(json!({"name": "x"}))),
        ("/api/v1/locations", Some(json!({"name": "x"}))),
    ] {
        let a = s.post(path, Some(&key), body.unwrap()).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}: {}", a.body);
        assert_eq!(a.error_code(), "permission_denied");
    }
    let a = s.get(&format!("/api/v1/devices/{id}"), Some(&key)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);

    let owner = s.owner_key.clone();
    let a = s.heartbeat(&owner).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(a.error_code(), "permission_denied");
    let a = s.get("/api/public/v1/config", Some(&owner)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn another_organizations_ids_are_404() {
    let s = common::start().await;
    let (id, _) = s.paired_device("ours").await;
    let loc = s
        .post(
            "/api/v1/locations",
            Some(&s.owner_key),
            json!({"name": "ours"}),
        )
        .await;
    let loc_id = loc.body["id"].as_str().unwrap().to_owned();
    let theirs = s.other_org("acme").await;

    let a = s.get(&format!("/api/v1/devices/{id}"), Some(&theirs)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    assert_eq!(a.error_code(), "not_found");
    for action in ["provisioning-token", "rotate-key", "revoke-key"] {
        let a = s
            .post(
                &format!("/api/v1/devices/{id}/{action}"),
                Some(&theirs),
                json!({}),
            )
            .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{action}: {}", a.body);
    }
    let a = s
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/devices/{id}"),
            Some(&theirs),
            Some(json!({"name": "stolen"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // Their device cannot be put in our location either.
    let a = s
        .post(
            "/api/v1/devices",
            Some(&theirs),
            json!({"name": "x", "location_id": loc_id}),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    let list = s.get("/api/v1/devices", Some(&theirs)).await;
    assert_eq!(list.body["devices"], json!([]));
    let list = s.get("/api/v1/locations", Some(&theirs)).await;
    assert_eq!(list.body["locations"], json!([]));
    // A path id that is not a UUID names nothing.
    let a = s
        .get("/api/v1/devices/not-a-uuid", Some(&s.owner_key))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn revoked_key_stops_at_once() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    assert_eq!(s.heartbeat(&key).await.status, StatusCode::OK);
    let r = s
        .post(
            &format!("/api/v1/devices/{id}/revoke-key"),
            Some(&s.owner_key),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["revoked"], 1);
    assert_unauthenticated(&s.heartbeat(&key).await);
}

#[tokio::test]
async fn rotated_key_replaces_the_old_one_after_the_grace() {
    let s = common::start_with_clock(|_| {}).await;
    let (id, old) = s.paired_device("cam").await;
    assert_eq!(s.heartbeat(&old).await.status, StatusCode::OK);

    let r = s
        .post(
            &format!("/api/v1/devices/{id}/rotate-key"),
            Some(&s.owner_key),
            json!({"grace_seconds": 60}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let new = r.body["api_key"].as_str().unwrap().to_owned();
    assert!(new.starts_with("swrm_dk_") && new != old);
    assert_eq!(s.heartbeat(&old).await.status, StatusCode::OK);
    assert_eq!(s.heartbeat(&new).await.status, StatusCode::OK);
    s.clock.advance(std::time::Duration::from_secs(59));
    assert_eq!(s.heartbeat(&old).await.status, StatusCode::OK);
    s.clock.advance(std::time::Duration::from_secs(2));
    assert_unauthenticated(&s.heartbeat(&old).await);
    assert_eq!(s.heartbeat(&new).await.status, StatusCode::OK);

    // Without grace the old key stops at once.
    let r = s
        .post(
            &format!("/api/v1/devices/{id}/rotate-key"),
            Some(&s.owner_key),
            json!({}),
        )
        .await;
    let newest = r.body["api_key"].as_str().unwrap().to_owned();
    assert_unauthenticated(&s.heartbeat(&new).await);
    assert_eq!(s.heartbeat(&newest).await.status, StatusCode::OK);
}

#[tokio::test]
async fn repairing_a_device_revokes_its_previous_key() {
    let s = common::start().await;
    let (id, first) = s.paired_device("cam").await;
    let fresh = s
        .post(
            &format!("/api/v1/devices/{id}/provisioning-token"),
            Some(&s.owner_key),
            json!({}),
        )
        .await;
    let token = fresh.body["provisioning_token"].as_str().unwrap();
    let a = s
        .post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": token}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["device_id"], id.as_str());
    assert_unauthenticated(&s.heartbeat(&first).await);
}

#[tokio::test]
async fn create_org_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_swrm"));
    cmd.args(["admin", "create-org", "acme"])
        .arg("--data-dir")
        .arg(dir.path());
    if let Some(url) = common::fresh_postgres_url().await {
        cmd.arg("--database-url").arg(url);
    }
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert!(printed["org_id"].is_string());
    let key = printed["api_key"].as_str().unwrap();
    assert!(key.starts_with("swrm_ak_"));
    assert!(swrm::auth::secret::parse(key).is_some());
}
