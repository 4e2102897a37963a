//! The rules declared in proto/ hold on both transports, and the generated
//! document states them: limits, formats, whole-number floats, opaque page
//! tokens, update masks, single-event bodies, secrets kept out of `Debug`.

use reqwest::StatusCode;
use serde_json::{Value, json};
use swrm::proto;

use crate::common;

fn message(a: &common::Answer) -> String {
    a.body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn rules_from_the_proto_are_enforced_with_the_field_named() {
    let s = common::start().await;
    let owner = s.owner_key.clone();
    let (_, key) = s.paired_device("cam").await;
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            "/api/v1/devices",
            owner.as_str(),
            json!({"name": "x".repeat(201)}),
            "name must be at most 200 characters",
        ),
        (
            "/api/v1/devices",
            owner.as_str(),
            json!({"name": "a\u{0}b"}),
            "name must not contain control characters",
        ),
        (
            "/api/v1/devices",
            owner.as_str(),
            json!({"name": " \u{3000} "}),
            "name must not be blank",
        ),
        (
            "/api/v1/devices",
            owner.as_str(),
            json!({"name": "ok", "tags": ["a", " "]}),
            "tags[1] must not be blank",
        ),
        (
            "/api/v1/devices",
            owner.as_str(),
            json!({"name": "ok", "location_id": "nope"}),
            "location_id must be a UUID",
        ),
        (
            "/api/v1/locations",
            owner.as_str(),
            json!({"name": "l", "timezone": "Mars/Olympus"}),
            "timezone must be an IANA time zone name, e.g. Europe/Berlin",
        ),
        (
            "/api/v1/locations",
            owner.as_str(),
            json!({"name": "l", "latitude": 90.5}),
            "latitude must be at most 90",
        ),
        (
            "/api/v1/api-keys",
            owner.as_str(),
            json!({"name": "k", "role": "root"}),
            "role must be one of owner, admin, viewer",
        ),
        (
            "/api/public/v1/heartbeat",
            key.as_str(),
            json!({"ip_address": "300.1.1.1"}),
            "ip_address must be an IPv4 or IPv6 address",
        ),
        (
            "/api/public/v1/heartbeat",
            key.as_str(),
            json!({"uptime_seconds": 9_223_372_036_854_775_808_u64}),
            "uptime_seconds must be at most 9223372036854775807",
        ),
        (
            "/api/public/v1/sensors",
            key.as_str(),
            json!({"readings": [{"sensor_type": "temperature", "value": 1}, {"sensor_type": "temperature"}]}),
            "readings[1].value is required",
        ),
        (
            "/api/public/v1/sensors",
            key.as_str(),
            json!({"readings": []}),
            "readings must not be empty",
        ),
        (
            "/api/public/v1/events",
            key.as_str(),
            json!({"severity": "info"}),
            "events[0].type is required",
        ),
    ];
    for (path, k, body, expected) in cases {
        let a = s.post(path, Some(k), body.clone()).await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{path} {body}: {}",
            a.body
        );
        assert_eq!(message(&a), expected, "{path} {body}");
    }
    // A valid IANA zone is kept.
    let a = s
        .post(
            "/api/v1/locations",
            Some(&owner),
            json!({"name": "Berlin", "timezone": "Europe/Berlin"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["timezone"], "Europe/Berlin");
    // A single event object is the whole body.
    let a = s
        .post("/api/public/v1/events", Some(&key), json!({"type": "boot"}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["accepted"], 1);
}

#[tokio::test]
async fn grpc_is_held_to_the_same_rules() {
    let s = common::start().await;
    let mut admin = s.admin_client(Some(&s.owner_key)).await;
    let err = admin
        .create_location(proto::CreateLocationRequest {
            name: "l".into(),
            latitude: Some(f64::NAN),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "latitude must be a finite number");
    let err = admin
        .list_devices(proto::ListDevicesRequest {
            page_size: Some(501),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "page_size must be at most 500");
    // The caller is admitted before the body is looked at.
    let mut anonymous = s.admin_client(None).await;
    let err = anonymous
        .create_device(proto::CreateDeviceRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn whole_number_floats_are_integers() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    let a = s
        .post(
            "/api/public/v1/heartbeat",
            Some(&key),
            json!({"uptime_seconds": 590.0}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let d = s
        .get(&format!("/api/v1/devices/{id}"), Some(&s.owner_key))
        .await;
    assert_eq!(d.body["uptime_seconds"], 590);
    let a = s
        .post(
            "/api/public/v1/heartbeat",
            Some(&key),
            json!({"uptime_seconds": 1.5}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = s
        .get("/api/v1/devices?page_size=2.0", Some(&s.owner_key))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = s
        .get("/api/v1/devices?page_size=2.5", Some(&s.owner_key))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn page_tokens_are_opaque_and_page_sizes_capped() {
    let s = common::start().await;
    for i in 0..3 {
        s.create_device(&format!("d{i}")).await;
    }
    let owner = Some(s.owner_key.as_str());
    let first = s.get("/api/v1/devices?page_size=2", owner).await;
    let token = first.body["next_page_token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 32, "{token}");
    assert!(
        uuid::Uuid::parse_str(&token).is_err(),
        "not an id in the clear"
    );
    let second = s
        .get(
            &format!("/api/v1/devices?page_size=2&page_token={token}"),
            owner,
        )
        .await;
    assert_eq!(second.body["devices"].as_array().unwrap().len(), 1);
    assert_eq!(second.body["next_page_token"], "");
    // Any token of the documented shape is a position, not an error.
    let a = s
        .get(
            &format!("/api/v1/devices?page_token={}", "A".repeat(32)),
            owner,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = s.get("/api/v1/devices?page_token=garbage", owner).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        message(&a),
        "page_token is not a page token this API issued"
    );
    let a = s.get("/api/v1/devices?page_size=501", owner).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(message(&a), "page_size must be at most 500");
}

#[tokio::test]
async fn patch_updates_the_fields_sent_and_grpc_uses_the_mask() {
    let s = common::start().await;
    let owner = s.owner_key.clone();
    let created = s
        .post(
            "/api/v1/devices",
            Some(&owner),
            json!({"name": "cam", "tags": ["a", "b"]}),
        )
        .await;
    let id = created.body["device"]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/devices/{id}");
    let patch = |body: Value| s.call(reqwest::Method::PATCH, &path, Some(&owner), Some(body));
    // Tags left out (or null) stay; sent (even empty) replace.
    let a = patch(json!({"name": "cam-2"})).await;
    assert_eq!(a.body["tags"], json!(["a", "b"]));
    let a = patch(json!({"tags": null})).await;
    assert_eq!(a.body["tags"], json!(["a", "b"]));
    let a = patch(json!({"tags": []})).await;
    assert_eq!(a.body["tags"], json!([]));
    assert_eq!(a.body["name"], "cam-2");

    let mut admin = s.admin_client(Some(&owner)).await;
    let d = admin
        .update_device(proto::UpdateDeviceRequest {
            id: id.clone(),
            tags: vec!["x".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(d.tags.is_empty(), "without a mask the tags stay");
    let d = admin
        .update_device(proto::UpdateDeviceRequest {
            id,
            tags: vec!["x".into()],
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["tags".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.tags, vec!["x".to_owned()]);
}

#[test]
fn debug_never_shows_a_secret() {
    let secret = "swrm_dk_0123456789abcdefghijklmnopqrst";
    let shown = [
        format!(
            "{:?}",
            proto::PairResponse {
                api_key: secret.into(),
                ..Default::default()
            }
        ),
        format!(
            "{:?}",
            proto::PairRequest {
                provisioning_token: secret.into(),
                ..Default::default()
            }
        ),
        format!(
            "{:?}",
            proto::EnrollRequest {
                enrollment_code: secret.into(),
                ..Default::default()
            }
        ),
        format!(
            "{:?}",
            proto::CreateDeviceResponse {
                provisioning_token: secret.into(),
                ..Default::default()
            }
        ),
        format!(
            "{:?}",
            proto::ProvisioningToken {
                provisioning_token: secret.into(),
                ..Default::default()
            }
        ),
        format!(
            "{:?}",
            proto::RotateDeviceKeyResponse {
                api_key: secret.into()
            }
        ),
        format!(
            "{:?}",
            proto::ApiKey {
                api_key: Some(secret.into()),
                ..Default::default()
            }
        ),
        format!(
            "{:?}",
            proto::EnrollmentCode {
                code: Some(secret.into()),
                ..Default::default()
            }
        ),
    ];
    for s in shown {
        assert!(!s.contains(secret), "{s}");
        assert!(s.contains("<redacted>"), "{s}");
    }
}
