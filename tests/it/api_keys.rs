//! Organization API keys: roles, shown once, listed without secrets, deleted
//! keys stop at once, and no organization can lock itself out.

use crate::common;

use reqwest::{Method, StatusCode};
use serde_json::json;

async fn new_key(s: &common::TestServer, with: &str, role: &str) -> (String, String) {
    let a = s
        .post(
            "/api/v1/api-keys",
            Some(with),
            json!({"name": format!("{role} key"), "role": role}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["role"], role);
    (
        a.body["id"].as_str().unwrap().to_owned(),
        a.body["api_key"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn viewers_read_and_cannot_write() {
    let s = common::start().await;
    let (_, viewer) = new_key(&s, &s.owner_key, "viewer").await;
    assert!(viewer.starts_with("swrm_ak_"));
    assert_eq!(
        s.get("/api/v1/devices", Some(&viewer)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        s.get("/api/v1/locations", Some(&viewer)).await.status,
        StatusCode::OK
    );
    for (path, body) in [
        ("/api/v1/devices", json!({"name": "x"})),
        ("/api/v1/locations", json!({"name": "x"})),
        ("/api/v1/groups", json!({"name": "x"})),
        ("/api/v1/api-keys", json!({"name": "x", "role": "viewer"})),
    ] {
        let a = s.post(path, Some(&viewer), body).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}: {}", a.body);
        assert_eq!(a.error_code(), "permission_denied");
    }
    let (id, _) = s.create_device("d").await;
    let a = s
        .post(
            &format!("/api/v1/devices/{id}/rotate-key"),
            Some(&viewer),
            json!({}),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn admins_cannot_mint_or_remove_owners() {
    let s = common::start().await;
    let (admin_id, admin) = new_key(&s, &s.owner_key, "admin").await;
    assert_eq!(
        s.post("/api/v1/devices", Some(&admin), json!({"name": "x"}))
            .await
            .status,
        StatusCode::CREATED
    );
    let a = s
        .post(
            "/api/v1/api-keys",
            Some(&admin),
            json!({"name": "o", "role": "owner"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    new_key(&s, &admin, "viewer").await;

    let keys = s.get("/api/v1/api-keys", Some(&admin)).await;
    let owner_id = keys.body["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "owner")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = s
        .call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{owner_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // An owner may delete an admin key.
    let a = s
        .call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{admin_id}"),
            Some(&s.owner_key),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn keys_are_listed_without_secrets_and_deleted_keys_stop_at_once() {
    let s = common::start().await;
    let (id, key) = new_key(&s, &s.owner_key, "admin").await;
    assert_eq!(
        s.get("/api/v1/devices", Some(&key)).await.status,
        StatusCode::OK
    );

    let list = s.get("/api/v1/api-keys", Some(&s.owner_key)).await;
    assert_eq!(list.status, StatusCode::OK);
    let keys = list.body["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "the owner key and the new one");
    let listed = keys.iter().find(|k| k["id"] == id.as_str()).unwrap();
    assert_eq!(
        listed["api_key"],
        serde_json::Value::Null,
        "never the secret again"
    );
    assert!(key.starts_with(listed["prefix"].as_str().unwrap()));
    assert!(listed["prefix"].as_str().unwrap().len() < key.len() / 2);
    assert!(listed["created_at"].is_string());
    assert!(listed["last_used_at"].is_string(), "it was used above");
    assert!(!list.body.to_string().contains(&key));

    let a = s
        .call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{id}"),
            Some(&s.owner_key),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(a.body, serde_json::Value::Null);
    let a = s.get("/api/v1/devices", Some(&key)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = s
        .call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{id}"),
            Some(&s.owner_key),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "already deleted");
    let list = s.get("/api/v1/api-keys", Some(&s.owner_key)).await;
    assert_eq!(list.body["api_keys"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_last_owner_key_cannot_be_deleted() {
    let s = common::start().await;
    let list = s.get("/api/v1/api-keys", Some(&s.owner_key)).await;
    let owner_id = list.body["api_keys"][0]["id"].as_str().unwrap().to_owned();
    let a = s
        .call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{owner_id}"),
            Some(&s.owner_key),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert_eq!(a.error_code(), "failed_precondition");
    // With a second owner it can.
    let (_, second) = new_key(&s, &s.owner_key, "owner").await;
    let a = s
        .call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{owner_id}"),
            Some(&second),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(
        s.get("/api/v1/devices", Some(&s.owner_key)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn other_organizations_keys_are_404_and_bad_roles_400() {
    let s = common::start().await;
    let (id, _) = new_key(&s, &s.owner_key, "viewer").await;
    let theirs = s.other_org("acme").await;
    let a = s
        .call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{id}"),
            Some(&theirs),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let list = s.get("/api/v1/api-keys", Some(&theirs)).await;
    assert_eq!(
        list.body["api_keys"].as_array().unwrap().len(),
        1,
        "only their own owner key"
    );
    for body in [
        json!({"name": "x", "role": "root"}),
        json!({"name": "x"}),
        json!({"role": "viewer"}),
    ] {
        let a = s.post("/api/v1/api-keys", Some(&s.owner_key), body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    }
}

/// A cached API key goes stale after a minute, and then every request in
/// flight with it misses the cache at once. One of them writes the key's
/// last use; the others neither write nor queue behind that row's lock
/// (they did, one commit after another).
#[tokio::test]
async fn a_burst_of_requests_that_miss_the_cache_writes_last_use_once() {
    let s = common::start_with_clock(|_| {}).await;
    let writes = || s.app.core.metrics.api_key_last_use_writes.get();
    assert_eq!(
        s.get("/api/v1/devices", Some(&s.owner_key)).await.status,
        StatusCode::OK
    );

    let burst = |n| {
        s.app.keys.clear();
        let requests = (0..n).map(|_| s.get("/api/v1/devices", Some(&s.owner_key)));
        futures_util::future::join_all(requests)
    };
    let before = writes();
    for a in burst(20).await {
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    assert_eq!(writes(), before, "written less than a minute ago");

    s.clock.advance(std::time::Duration::from_secs(61));
    for a in burst(20).await {
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    assert_eq!(writes(), before + 1, "one write for the whole burst");
    let list = s.get("/api/v1/api-keys", Some(&s.owner_key)).await;
    let owner = list.body["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| s.owner_key.starts_with(k["prefix"].as_str().unwrap()))
        .unwrap()
        .clone();
    assert_eq!(
        owner["last_used_at"].as_str(),
        Some(swrm::core::rfc3339(s.clock.now()).as_str()),
        "{owner}"
    );
}
