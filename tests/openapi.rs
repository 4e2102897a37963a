//! The OpenAPI document and the router agree: every documented operation is
//! served, and every served path and method is documented.

mod common;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeSet;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn document() -> Value {
    serde_json::from_str(swrm::rest::OPENAPI_JSON).expect("openapi.json is JSON")
}

/// Paths the router declares, read from its source (`.route("…"`).
fn router_paths() -> BTreeSet<String> {
    let source = include_str!("../src/rest/mod.rs");
    source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"'))
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
}

#[test]
fn every_router_path_is_documented_and_back() {
    let doc = document();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(router_paths(), documented);
}

#[tokio::test]
async fn every_documented_operation_is_served_and_nothing_else() {
    // The probe sends a few hundred requests: rate limits off (0) here.
    let s = common::start_with(|c| {
        c.rate_limits.org_key_rate_per_second = 0;
        c.rate_limits.device_rate_per_second = 0;
        c.rate_limits.pair_rate_per_minute = 0;
    })
    .await;
    let (_, device_key) = s.paired_device("probe").await;
    let doc = document();
    let id = uuid::Uuid::now_v7().to_string();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url_path = path.replace("{id}", &id);
        let key = if path.starts_with("/api/public/") {
            device_key.as_str()
        } else {
            s.owner_key.as_str()
        };
        for method in METHODS {
            let documented = item.get(method).is_some();
            let res = s
                .http
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    format!("{}{url_path}", s.base),
                )
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = res.status();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            if documented {
                assert_ne!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is documented but not routed"
                );
                assert_ne!(
                    body["error"]["message"], "no such route",
                    "{method} {path} is documented but not routed"
                );
                assert!(
                    !status.is_server_error() || status == StatusCode::NOT_IMPLEMENTED,
                    "{method} {path} → {status}"
                );
                let documents_501 = item[method]["responses"].get("501").is_some();
                assert_eq!(
                    status == StatusCode::NOT_IMPLEMENTED,
                    documents_501,
                    "{method} {path}: answers {status}, and the document {} say 501",
                    if documents_501 { "does" } else { "does not" }
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is routed but not documented"
                );
            }
        }
    }
}
