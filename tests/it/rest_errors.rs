//! Bad input gets a clear 4xx in the contract's envelope, never a 5xx; unknown
//! fields are ignored so newer firmware keeps working.

use crate::common;

use reqwest::StatusCode;
use serde_json::json;

async fn raw(
    s: &common::TestServer,
    path: &str,
    key: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> common::Answer {
    let res = s
        .http
        .post(format!("{}{path}", s.base))
        .bearer_auth(key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    common::answer(res).await
}

#[tokio::test]
async fn malformed_json_and_wrong_types_are_400() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam").await;
    let owner = s.owner_key.clone();
    let cases: &[(&str, &str, &str)] = &[
        (
            "/api/public/v1/heartbeat",
            key.as_str(),
            "{\"uptime_seconds\": ",
        ),
        ("/api/public/v1/heartbeat", key.as_str(), "[1, 2]"),
        ("/api/public/v1/heartbeat", key.as_str(), "\"text\""),
        (
            "/api/public/v1/heartbeat",
            key.as_str(),
            "{\"uptime_seconds\": \"soon\"}",
        ),
        (
            "/api/public/v1/heartbeat",
            key.as_str(),
            "{\"uptime_seconds\": -5}",
        ),
        (
            "/api/public/v1/heartbeat",
            key.as_str(),
            "{\"uptime_seconds\": 1.5}",
        ),
        (
            "/api/public/v1/heartbeat",
            key.as_str(),
            "{\"firmware_version\": 7}",
        ),
        (
            "/api/public/v1/heartbeat",
            key.as_str(),
            "{\"ip_address\": \"999.1.1.1\"}",
        ),
        ("/api/v1/devices", owner.as_str(), "{\"name\": 12}"),
        ("/api/v1/devices", owner.as_str(), "{\"name\": \"\"}"),
        (
            "/api/v1/devices",
            owner.as_str(),
            "{\"name\": \"x\", \"tags\": \"not-a-list\"}",
        ),
        (
            "/api/v1/devices",
            owner.as_str(),
            "{\"name\": \"x\", \"location_id\": \"nope\"}",
        ),
        (
            "/api/v1/locations",
            owner.as_str(),
            "{\"name\": \"x\", \"latitude\": 123}",
        ),
        ("/api/v1/groups", owner.as_str(), "{}"),
    ];
    for (path, key, body) in cases {
        let a = raw(&s, path, key, "application/json", body.to_string()).await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{path} {body}: {}",
            a.body
        );
        assert_eq!(a.error_code(), "invalid_argument", "{path} {body}");
    }
    let a = raw(
        &s,
        "/api/public/v1/heartbeat",
        &key,
        "application/json",
        "{\"uptime_seconds\": \"soon\"}",
    )
    .await;
    let message = a.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("uptime_seconds"),
        "the message names the field: {message}"
    );
}

#[tokio::test]
async fn deep_json_is_400() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam").await;
    let deep = format!("{{\"x\": {}{}}}", "[".repeat(100), "]".repeat(100));
    let a = raw(
        &s,
        "/api/public/v1/heartbeat",
        &key,
        "application/json",
        deep,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.error_code(), "invalid_argument");
}

#[tokio::test]
async fn unknown_fields_are_ignored_and_null_means_absent() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    let a = s
        .post(
            "/api/public/v1/heartbeat",
            Some(&key),
            json!({"firmware_version": "2.0.0", "uptime_seconds": 7, "hostname": null, "future_field": {"nested": [1, 2]}, "battery_mv": 3700}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let d = s
        .get(&format!("/api/v1/devices/{id}"), Some(&s.owner_key))
        .await;
    assert_eq!(d.body["firmware_version"], "2.0.0");
    assert_eq!(d.body["hostname"], serde_json::Value::Null);
    let a = s
        .post(
            "/api/v1/devices",
            Some(&s.owner_key),
            json!({"name": "n", "colour": "blue", "location_id": null}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    // An empty body is an empty message.
    let empty = raw(&s, "/api/public/v1/heartbeat", &key, "application/json", "").await;
    assert_eq!(empty.status, StatusCode::OK);
}

#[tokio::test]
async fn body_limits_and_content_types() {
    let s = common::start_with(|c| c.max_json_bytes = 4096).await;
    let (_, key) = s.paired_device("cam").await;
    let big = format!("{{\"hostname\": \"{}\"}}", "a".repeat(10_000));
    let a = raw(
        &s,
        "/api/public/v1/heartbeat",
        &key,
        "application/json",
        big,
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
    assert_eq!(a.error_code(), "resource_exhausted");

    let a = raw(
        &s,
        "/api/public/v1/heartbeat",
        &key,
        "application/xml",
        "<x/>",
    )
    .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", a.body);
    assert_eq!(a.error_code(), "invalid_argument");

    // What `curl -d` sends is fine as long as the body is JSON.
    let a = raw(
        &s,
        "/api/public/v1/heartbeat",
        &key,
        "application/x-www-form-urlencoded",
        "{\"uptime_seconds\": 1}",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // Long strings inside the limit are still checked.
    let a = s
        .post(
            "/api/public/v1/heartbeat",
            Some(&key),
            json!({"hostname": "h".repeat(300)}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_envelope() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam").await;
    let a = s.get("/api/public/v1/nope", Some(&key)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.error_code(), "not_found");
    let a = s
        .call(
            reqwest::Method::DELETE,
            "/api/public/v1/heartbeat",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    a.error_code();
}

#[tokio::test]
async fn routes_authenticate_and_check_the_role_first() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam").await;
    for (path, key) in [
        ("/api/public/v1/sensors", None),
        ("/api/public/v1/captures", None),
        ("/api/v1/alerts", None),
    ] {
        let a = s
            .call(reqwest::Method::POST, path, key, Some(json!({})))
            .await;
        // POST /alerts is not a route: 405; the others want a key first.
        if path == "/api/v1/alerts" {
            assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
        } else {
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}: {}", a.body);
        }
    }
    let a = s.get("/api/v1/alerts", None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = s.get("/api/v1/alerts", Some(&key)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = s
        .post("/api/public/v1/captures", Some(&s.owner_key), json!({}))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = s.get("/api/v1/enrollment-codes", Some(&key)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = s.get("/api/v1/enrollment-codes", Some(&s.owner_key)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

#[tokio::test]
async fn undecodable_path_ids_are_404_in_the_envelope() {
    let s = common::start().await;
    let a = s.get("/api/v1/devices/%FF%FE", Some(&s.owner_key)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.error_code(), "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_never_fail() {
    // This is about the database, not the rate limits: those are off (0).
    let s = std::sync::Arc::new(
        common::start_with(|c| {
            c.rate_limits.device_rate_per_second = 0;
            c.rate_limits.org_key_rate_per_second = 0;
        })
        .await,
    );
    let (id, key) = s.paired_device("busy").await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (s, id, key) = (s.clone(), id.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let a = match i % 8 {
                0 => {
                    s.post(
                        &format!("/api/v1/devices/{id}/provisioning-token"),
                        Some(&s.owner_key),
                        json!({}),
                    )
                    .await
                }
                1 => {
                    s.post(
                        "/api/v1/devices",
                        Some(&s.owner_key),
                        json!({"name": format!("d{i}")}),
                    )
                    .await
                }
                2 => {
                    s.call(
                        reqwest::Method::PATCH,
                        &format!("/api/v1/devices/{id}"),
                        Some(&s.owner_key),
                        Some(json!({"tags": [format!("t{i}")]})),
                    )
                    .await
                }
                _ => {
                    s.post(
                        "/api/public/v1/heartbeat",
                        Some(&key),
                        json!({"uptime_seconds": i}),
                    )
                    .await
                }
            };
            assert!(
                a.status.is_success(),
                "request {i}: {} {}",
                a.status,
                a.body
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn garbage_never_gets_a_5xx() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam").await;
    let owner = s.owner_key.clone();
    let bodies = [
        "",
        "{",
        "null",
        "0",
        "{}",
        "{\"a\":",
        "\u{0}\u{1}",
        "{\"name\": {\"$gt\": \"\"}}",
        "{\"tags\": [null, 1]}",
    ];
    let paths = [
        ("/api/public/v1/pair", None),
        ("/api/public/v1/heartbeat", Some(key.as_str())),
        ("/api/v1/devices", Some(owner.as_str())),
        ("/api/v1/locations", Some(owner.as_str())),
        ("/api/v1/groups", Some(owner.as_str())),
    ];
    for (path, key) in paths {
        for body in bodies {
            let mut req = s
                .http
                .post(format!("{}{path}", s.base))
                .header("content-type", "application/json")
                .body(body);
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            let a = common::answer(req.send().await.unwrap()).await;
            assert!(
                a.status.is_client_error() || a.status.is_success(),
                "{path} {body:?} → {} {}",
                a.status,
                a.body
            );
            if !a.status.is_success() {
                a.error_code();
            }
        }
    }
}
