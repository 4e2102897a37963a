//! Rate limits: pairing per source IP, each device key, each organization
//! key; 429 with `Retry-After` and the IETF `RateLimit` / `RateLimit-Policy`
//! fields over REST, RESOURCE_EXHAUSTED with the same in metadata over gRPC.

use crate::common;

use reqwest::{StatusCode, header};
use serde_json::json;
use swrm::proto;

fn assert_limited(a: &common::Answer) {
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    assert_eq!(a.error_code(), "resource_exhausted");
    let retry: u64 = a.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "Retry-After in whole seconds");
    // The IETF RateLimit fields: which bucket, none left, when one is.
    let state = a.headers["ratelimit"].to_str().unwrap();
    assert!(state.ends_with(&format!(";r=0;t={retry}")), "{state}");
    let policy = a.headers["ratelimit-policy"].to_str().unwrap();
    let name = state.split(';').next().unwrap();
    assert!(policy.starts_with(&format!("{name};q=")), "{policy}");
    assert!(policy.contains(";w="), "{policy}");
}

#[tokio::test]
async fn pairing_is_limited_per_source_ip() {
    let s = common::start_with(|c| {
        c.rate_limits.pair_rate_per_minute = 2;
        c.rate_limits.pair_burst = 2;
    })
    .await;
    let (_, token) = s.create_device("cam").await;
    let bad = json!({"provisioning_token": "swrm_pt_wrong"});
    assert_eq!(
        s.post("/api/public/v1/pair", None, bad.clone())
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.post("/api/public/v1/pair", None, bad.clone())
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // The bucket is empty: even the right token waits.
    assert_limited(
        &s.post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": token}),
        )
        .await,
    );
    let grpc = s
        .device_client(None)
        .await
        .pair(proto::PairRequest {
            provisioning_token: token.clone(),
            ..Default::default()
        })
        .await
        .expect_err("limited over gRPC too");
    assert_eq!(grpc.code(), tonic::Code::ResourceExhausted);
    assert!(grpc.metadata().get("retry-after").is_some());
    assert_eq!(
        grpc.metadata().get("ratelimit-policy").unwrap(),
        "\"pairing\";q=2;w=60"
    );
    assert!(grpc.metadata().get("ratelimit").is_some());
    // Other routes are not affected by the pairing bucket.
    assert_eq!(
        s.get("/api/v1/devices", Some(&s.owner_key)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn each_device_key_has_its_own_bucket() {
    let s = common::start_with(|c| {
        c.rate_limits.device_rate_per_second = 1;
        c.rate_limits.device_burst = 3;
    })
    .await;
    let (_, noisy) = s.paired_device("noisy").await;
    let (_, quiet) = s.paired_device("quiet").await;
    for _ in 0..3 {
        assert_eq!(s.heartbeat(&noisy).await.status, StatusCode::OK);
    }
    assert_limited(&s.heartbeat(&noisy).await);
    assert_eq!(s.heartbeat(&quiet).await.status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(s.heartbeat(&noisy).await.status, StatusCode::OK);
}

#[tokio::test]
async fn organization_keys_are_limited() {
    let s = common::start_with(|c| {
        c.rate_limits.org_key_rate_per_second = 1;
        c.rate_limits.org_key_burst = 2;
    })
    .await;
    let owner = s.owner_key.clone();
    for _ in 0..2 {
        assert_eq!(
            s.get("/api/v1/devices", Some(&owner)).await.status,
            StatusCode::OK
        );
    }
    assert_limited(&s.get("/api/v1/devices", Some(&owner)).await);
}

#[tokio::test]
async fn requests_without_a_valid_key_are_limited_per_ip() {
    let s = common::start_with(|c| {
        c.rate_limits.device_rate_per_second = 1;
        c.rate_limits.device_burst = 2;
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            s.get("/api/public/v1/sensor-types", None).await.status,
            StatusCode::OK
        );
    }
    assert_limited(&s.get("/api/public/v1/sensor-types", None).await);
    assert_limited(
        &s.post(
            "/api/public/v1/heartbeat",
            Some("swrm_dk_garbage"),
            json!({}),
        )
        .await,
    );
}

#[tokio::test]
async fn forged_keys_cannot_flood_the_database() {
    let s = common::start_with(|c| {
        c.rate_limits.device_rate_per_second = 1;
        c.rate_limits.device_burst = 3;
    })
    .await;
    let before = s.app.auth_db_lookups();
    let mut limited = 0;
    for _ in 0..10 {
        // Well-formed (valid checksum), never issued: each is a cache miss.
        let forged =
            swrm::auth::secret::generate(swrm::auth::secret::SecretKind::DeviceKey).plaintext;
        let a = s.heartbeat(&forged).await;
        assert!(matches!(a.status.as_u16(), 401 | 429), "{}", a.status);
        limited += usize::from(a.status == StatusCode::TOO_MANY_REQUESTS);
    }
    assert!(limited >= 6, "most forged keys are turned away: {limited}");
    assert!(
        s.app.auth_db_lookups() - before <= 4,
        "lookups bounded by the burst"
    );
}

#[tokio::test]
async fn trusted_proxies_forward_the_client_address() {
    let s = common::start_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let (id, key) = s.paired_device("cam").await;
    let res = s
        .http
        .post(format!("{}/api/public/v1/heartbeat", s.base))
        .bearer_auth(&key)
        .header("x-forwarded-for", "198.51.100.7, 203.0.113.9")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let d = s
        .get(&format!("/api/v1/devices/{id}"), Some(&s.owner_key))
        .await;
    assert_eq!(
        d.body["source_ip"], "203.0.113.9",
        "the address our proxy saw"
    );

    // An entry a proxy wrote that we cannot read (ip:port) ends the walk:
    // what stands left of it may be the client's invention.
    s.http
        .post(format!("{}/api/public/v1/heartbeat", s.base))
        .bearer_auth(&key)
        .header("x-forwarded-for", "198.51.100.7, 203.0.113.9:443")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let d = s
        .get(&format!("/api/v1/devices/{id}"), Some(&s.owner_key))
        .await;
    assert_eq!(d.body["source_ip"], "127.0.0.1");

    // Without trust, the header is ignored (it could be forged).
    let plain = common::start().await;
    let (id, key) = plain.paired_device("cam").await;
    plain
        .http
        .post(format!("{}/api/public/v1/heartbeat", plain.base))
        .bearer_auth(&key)
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let d = plain
        .get(&format!("/api/v1/devices/{id}"), Some(&plain.owner_key))
        .await;
    assert_eq!(d.body["source_ip"], "127.0.0.1");
}

#[tokio::test]
async fn a_fleet_behind_one_address_is_not_limited_by_its_first_requests() {
    // Many devices share one public address (NAT): each one's first request
    // is a cache miss, and valid keys never draw on the per-IP failure bucket.
    let s = common::start_with(|c| {
        c.rate_limits.device_rate_per_second = 1;
        c.rate_limits.device_burst = 3;
        c.rate_limits.pair_rate_per_minute = 0;
    })
    .await;
    let mut keys = Vec::new();
    for i in 0..12 {
        keys.push(s.paired_device(&format!("cam{i}")).await.1);
    }
    for key in &keys {
        let a = s.heartbeat(key).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
}
