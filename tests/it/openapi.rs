//! The OpenAPI document and the router agree: every documented operation is
//! served, and every served path and method is documented.

use crate::common;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeSet;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn document() -> Value {
    serde_json::from_str(swrm::rest::OPENAPI_JSON).expect("the document is JSON")
}

/// (method, path) of every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn the_router_and_the_document_list_the_same_operations() {
    let doc = document();
    let mut routed: BTreeSet<(String, String)> = swrm::rest::OPERATIONS
        .iter()
        .map(|op| (op.method.to_owned(), op.path.to_owned()))
        .collect();
    for probe in ["/healthz", "/livez", "/readyz", "/metrics"] {
        routed.insert(("GET".into(), probe.into()));
    }
    assert_eq!(routed, documented(&doc));
    // Every rpc with an HTTP binding, and only those, is an operation.
    let rpcs: BTreeSet<&str> = swrm::rest::OPERATIONS.iter().map(|op| op.rpc).collect();
    assert_eq!(
        rpcs.len(),
        swrm::rest::OPERATIONS.len(),
        "one route per rpc"
    );
    assert!(rpcs.contains("/swrm.v1.DeviceService/Heartbeat"));
    assert!(!rpcs.contains("/swrm.v1.DeviceService/StreamCommands"));
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
                let documented = &item[method]["responses"][status.as_str()];
                assert!(
                    !documented.is_null(),
                    "{method} {path}: answers {status}, which the document does not list"
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

/// Checks `value` against an OpenAPI 3.1 schema: objects have exactly the
/// documented properties (every response field is present, nothing
/// undocumented), types match, `null` only where the schema allows it.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        return conforms(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let Some(branches) = schema.get("anyOf").and_then(Value::as_array) {
        let null_ok = branches.iter().any(|b| b["type"] == "null");
        if value.is_null() {
            assert!(null_ok, "{at} is null but not nullable");
            return;
        }
        let branch = branches.iter().find(|b| b["type"] != "null").unwrap();
        return conforms(doc, branch, value, at);
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return, // anything
    };
    if value.is_null() {
        assert!(types.contains(&"null"), "{at} is null but not nullable");
        return;
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        assert!(values.contains(value), "{at}: {value} is not in {values:?}");
    }
    match types.iter().find(|t| **t != "null").copied() {
        Some("object") => {
            let obj = value
                .as_object()
                .unwrap_or_else(|| panic!("{at} is not an object: {value}"));
            let Some(props) = schema["properties"].as_object() else {
                return; // free-form object (google.protobuf.Struct)
            };
            let documented: BTreeSet<&String> = props.keys().collect();
            let sent: BTreeSet<&String> = obj.keys().collect();
            assert_eq!(sent, documented, "{at}: fields differ from the document");
            for (k, v) in obj {
                conforms(doc, &props[k], v, &format!("{at}.{k}"));
            }
        }
        Some("array") => {
            for (i, item) in value
                .as_array()
                .unwrap_or_else(|| panic!("{at} is not an array"))
                .iter()
                .enumerate()
            {
                conforms(doc, &schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        Some("string") => {
            let text = value
                .as_str()
                .unwrap_or_else(|| panic!("{at} is not a string: {value}"));
            match schema["format"].as_str() {
                Some("uuid") => assert!(uuid::Uuid::parse_str(text).is_ok(), "{at}: {text}"),
                Some("date-time") => assert!(
                    chrono::DateTime::parse_from_rfc3339(text).is_ok(),
                    "{at}: {text}"
                ),
                _ => {}
            }
        }
        Some("integer") => assert!(
            value.is_u64() || value.is_i64(),
            "{at} is not an integer: {value}"
        ),
        Some("number") => assert!(value.is_number(), "{at} is not a number: {value}"),
        Some("boolean") => assert!(value.is_boolean(), "{at} is not a boolean: {value}"),
        other => panic!("{at}: unexpected schema type {other:?}"),
    }
}

/// The schema the document gives for `method path` answering `status`.
fn response_schema<'a>(doc: &'a Value, method: &str, path: &str, status: u16) -> &'a Value {
    let mut response = &doc["paths"][path][method]["responses"][status.to_string()];
    if let Some(r) = response.get("$ref").and_then(Value::as_str) {
        response = &doc["components"]["responses"][r.trim_start_matches("#/components/responses/")];
    }
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        !schema.is_null(),
        "{method} {path} documents no {status} JSON body"
    );
    schema
}

#[tokio::test]
async fn answers_match_the_documented_schemas() {
    let s = common::start().await;
    let doc = document();
    let owner = s.owner_key.clone();
    let check = |method: &str, path: &str, a: &common::Answer| {
        let schema = response_schema(&doc, method, path, a.status.as_u16());
        conforms(&doc, schema, &a.body, &format!("{method} {path}"));
    };

    let loc = s
        .post(
            "/api/v1/locations",
            Some(&owner),
            serde_json::json!({"name": "L", "latitude": 1.5}),
        )
        .await;
    check("post", "/api/v1/locations", &loc);
    let group = s
        .post(
            "/api/v1/groups",
            Some(&owner),
            serde_json::json!({"name": "G"}),
        )
        .await;
    check("post", "/api/v1/groups", &group);
    let created = s
        .post("/api/v1/devices", Some(&owner), serde_json::json!({"name": "d", "location_id": loc.body["id"], "group_id": group.body["id"]}))
        .await;
    check("post", "/api/v1/devices", &created);
    let id = created.body["device"]["id"].as_str().unwrap().to_owned();
    let token = created.body["provisioning_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let paired = s
        .post(
            "/api/public/v1/pair",
            None,
            serde_json::json!({"provisioning_token": token}),
        )
        .await;
    check("post", "/api/public/v1/pair", &paired);
    let key = paired.body["api_key"].as_str().unwrap().to_owned();
    check(
        "post",
        "/api/public/v1/heartbeat",
        &s.post(
            "/api/public/v1/heartbeat",
            Some(&key),
            serde_json::json!({"uptime_seconds": 3}),
        )
        .await,
    );
    check(
        "get",
        "/api/public/v1/config",
        &s.get("/api/public/v1/config", Some(&key)).await,
    );
    check(
        "get",
        "/api/public/v1/sensor-types",
        &s.get("/api/public/v1/sensor-types", None).await,
    );
    check(
        "get",
        "/api/v1/devices",
        &s.get("/api/v1/devices", Some(&owner)).await,
    );
    check(
        "get",
        "/api/v1/devices/{id}",
        &s.get(&format!("/api/v1/devices/{id}"), Some(&owner)).await,
    );
    check(
        "patch",
        "/api/v1/devices/{id}",
        &s.call(
            reqwest::Method::PATCH,
            &format!("/api/v1/devices/{id}"),
            Some(&owner),
            Some(serde_json::json!({"tags": ["a"]})),
        )
        .await,
    );
    check(
        "get",
        "/api/v1/locations",
        &s.get("/api/v1/locations", Some(&owner)).await,
    );
    check(
        "get",
        "/api/v1/groups",
        &s.get("/api/v1/groups", Some(&owner)).await,
    );
    check(
        "post",
        "/api/v1/devices/{id}/provisioning-token",
        &s.post(
            &format!("/api/v1/devices/{id}/provisioning-token"),
            Some(&owner),
            serde_json::json!({}),
        )
        .await,
    );
    check(
        "post",
        "/api/v1/devices/{id}/rotate-key",
        &s.post(
            &format!("/api/v1/devices/{id}/rotate-key"),
            Some(&owner),
            serde_json::json!({}),
        )
        .await,
    );
    check(
        "post",
        "/api/v1/devices/{id}/revoke-key",
        &s.post(
            &format!("/api/v1/devices/{id}/revoke-key"),
            Some(&owner),
            serde_json::json!({}),
        )
        .await,
    );
    let key = s
        .post(
            "/api/v1/api-keys",
            Some(&owner),
            serde_json::json!({"name": "k", "role": "viewer"}),
        )
        .await;
    check("post", "/api/v1/api-keys", &key);
    check(
        "get",
        "/api/v1/api-keys",
        &s.get("/api/v1/api-keys", Some(&owner)).await,
    );
    // Errors, in the documented envelope.
    check(
        "get",
        "/api/v1/devices/{id}",
        &s.get(
            &format!("/api/v1/devices/{}", uuid::Uuid::now_v7()),
            Some(&owner),
        )
        .await,
    );
    check(
        "post",
        "/api/public/v1/heartbeat",
        &s.post("/api/public/v1/heartbeat", None, serde_json::json!({}))
            .await,
    );
    check(
        "post",
        "/api/v1/devices",
        &s.post(
            "/api/v1/devices",
            Some(&owner),
            serde_json::json!({"name": ""}),
        )
        .await,
    );
}
