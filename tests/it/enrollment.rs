//! Factory enrollment: codes created, listed and revoked by operators;
//! devices enrolling themselves with one, within its quota, expiry,
//! serial pattern and re-enrollment rule.

use crate::common::{self, Answer, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};
use swrm::proto;

async fn new_code(s: &TestServer, body: Value) -> (String, String) {
    let a = s
        .post("/api/v1/enrollment-codes", Some(&s.owner_key), body)
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let code = a.body["code"].as_str().expect("code shown once").to_owned();
    assert!(code.starts_with("swrm_ec_"), "{code}");
    (a.body["id"].as_str().unwrap().to_owned(), code)
}

async fn enroll(s: &TestServer, code: &str, serial: &str) -> Answer {
    s.post(
        "/api/public/v1/enroll",
        None,
        json!({"enrollment_code": code, "serial_number": serial}),
    )
    .await
}

async fn get_code(s: &TestServer, id: &str) -> Value {
    let a = s
        .get(
            &format!("/api/v1/enrollment-codes/{id}"),
            Some(&s.owner_key),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body
}

fn unlimited(c: &mut swrm::config::Config) {
    c.rate_limits.pair_rate_per_minute = 0;
}

#[tokio::test]
async fn a_device_enrolls_with_the_codes_defaults_and_its_key_works() {
    let s = common::start().await;
    let group = s
        .post(
            "/api/v1/groups",
            Some(&s.owner_key),
            json!({"name": "line-a"}),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let location = s
        .post(
            "/api/v1/locations",
            Some(&s.owner_key),
            json!({"name": "plant 2"}),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (id, code) = new_code(
        &s,
        json!({"name": "line A", "max_devices": 10, "group_id": group,
               "location_id": location, "tags": ["factory", "cam"]}),
    )
    .await;

    let a = s
        .post(
            "/api/public/v1/enroll",
            None,
            json!({"enrollment_code": code, "serial_number": "SN-0001",
                   "hardware_model": "rpi5"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let key = a.body["api_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("swrm_dk_"));
    assert_eq!(a.body["name"], "SN-0001", "named by its serial by default");
    let device_id = a.body["device_id"].as_str().unwrap().to_owned();
    assert_eq!(a.body["org_id"].as_str().unwrap().len(), 36);

    assert_eq!(s.heartbeat(&key).await.status, StatusCode::OK);
    let d = s
        .get(&format!("/api/v1/devices/{device_id}"), Some(&s.owner_key))
        .await
        .body;
    assert_eq!(d["group_id"], group.as_str());
    assert_eq!(d["location_id"], location.as_str());
    assert_eq!(d["tags"], json!(["factory", "cam"]));
    assert_eq!(d["serial_number"], "SN-0001");
    assert_eq!(d["hardware_model"], "rpi5");
    let cfg = s.get("/api/public/v1/config", Some(&key)).await.body;
    assert_eq!(cfg["device"]["group"], "line-a");

    // The code as bearer, and a name of the device's choosing.
    let a = s
        .post(
            "/api/public/v1/enroll",
            Some(&code),
            json!({"serial_number": "SN-0002", "name": "gate camera"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["name"], "gate camera");

    let listed = s
        .get("/api/v1/enrollment-codes", Some(&s.owner_key))
        .await
        .body;
    let codes = listed["enrollment_codes"].as_array().unwrap();
    assert_eq!(codes.len(), 1);
    assert_eq!(codes[0]["id"], id.as_str());
    assert_eq!(codes[0]["enrolled_devices"], 2);
    assert_eq!(codes[0]["max_devices"], 10);
    assert!(codes[0]["code"].is_null(), "never listed: {}", codes[0]);
    assert!(code.starts_with(codes[0]["prefix"].as_str().unwrap()));
    assert!(!listed.to_string().contains(&code));
}

#[tokio::test]
async fn a_spent_revoked_expired_or_unknown_code_is_401() {
    let s = common::start_with_clock(unlimited).await;
    let (_, code) = new_code(&s, json!({"name": "two", "max_devices": 2})).await;
    assert_eq!(enroll(&s, &code, "A").await.status, StatusCode::CREATED);
    assert_eq!(enroll(&s, &code, "B").await.status, StatusCode::CREATED);
    let a = enroll(&s, &code, "C").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    assert_eq!(a.error_code(), "unauthenticated");
    assert!(a.headers.contains_key("www-authenticate"));

    let (id, code) = new_code(&s, json!({"name": "revoked"})).await;
    let a = s
        .post(
            &format!("/api/v1/enrollment-codes/{id}/revoke"),
            Some(&s.owner_key),
            json!({}),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    assert_eq!(
        enroll(&s, &code, "D").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(get_code(&s, &id).await["revoked_at"].is_string());

    let soon = (s.clock.now() + chrono::Duration::hours(1)).to_rfc3339();
    let (_, code) = new_code(&s, json!({"name": "expiring", "expires_at": soon})).await;
    assert_eq!(enroll(&s, &code, "E").await.status, StatusCode::CREATED);
    s.clock.advance(std::time::Duration::from_secs(3601));
    assert_eq!(
        enroll(&s, &code, "F").await.status,
        StatusCode::UNAUTHORIZED
    );

    // Created already expired.
    let (_, code) = new_code(
        &s,
        json!({"name": "past", "expires_at": "2001-01-01T00:00:00Z"}),
    )
    .await;
    let a = enroll(&s, &code, "G0").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);

    let unknown = swrm::auth::secret::generate(swrm::auth::secret::SecretKind::EnrollmentCode);
    for code in [unknown.plaintext.as_str(), "swrm_ec_nope", ""] {
        let a = enroll(&s, code, "G").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{code}: {}", a.body);
    }
    // A provisioning token is not an enrollment code.
    let (_, token) = s.create_device("cam").await;
    assert_eq!(
        enroll(&s, &token, "H").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn serial_patterns_and_repeated_serials() {
    let s = common::start_with(unlimited).await;
    let (_, code) = new_code(&s, json!({"name": "p", "serial_pattern": "SN-[0-9]{4}"})).await;
    let a = enroll(&s, &code, "SN-12345").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "whole serial: {}", a.body);
    assert_eq!(a.error_code(), "permission_denied");
    assert_eq!(
        enroll(&s, &code, "SN-1234").await.status,
        StatusCode::CREATED
    );
    let a = enroll(&s, &code, "SN-1234").await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert_eq!(a.error_code(), "already_exists");

    // A serial registered by an operator counts as enrolled too.
    let a = s
        .post(
            "/api/v1/devices",
            Some(&s.owner_key),
            json!({"name": "x", "serial_number": "SN-9999"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(
        enroll(&s, &code, "SN-9999").await.status,
        StatusCode::CONFLICT
    );

    for bad in [
        json!({"name": "p", "serial_pattern": "SN-("}),
        json!({"name": "p", "max_devices": 0}),
        json!({"name": "p", "expires_at": "tomorrow"}),
        json!({"name": " "}),
    ] {
        let a = s
            .post("/api/v1/enrollment-codes", Some(&s.owner_key), bad.clone())
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {}", a.body);
    }
    let a = enroll(&s, &code, " ").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
}

#[tokio::test]
async fn re_enrollment_keeps_the_device_and_revokes_its_old_key() {
    let s = common::start_with(unlimited).await;
    let (id, code) = new_code(
        &s,
        json!({"name": "r", "max_devices": 1, "allow_reenroll": true}),
    )
    .await;
    let first = enroll(&s, &code, "SN-1").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let old_key = first.body["api_key"].as_str().unwrap().to_owned();
    assert_eq!(s.heartbeat(&old_key).await.status, StatusCode::OK);

    let again = enroll(&s, &code, "SN-1").await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(again.body["device_id"], first.body["device_id"]);
    let new_key = again.body["api_key"].as_str().unwrap();
    assert_ne!(new_key, old_key);
    assert_eq!(s.heartbeat(&old_key).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.heartbeat(new_key).await.status, StatusCode::OK);
    // The same device again: the quota of one is not spent by it.
    assert_eq!(get_code(&s, &id).await["enrolled_devices"], 1);
    assert_eq!(
        enroll(&s, &code, "SN-2").await.status,
        StatusCode::UNAUTHORIZED,
        "a second device is over the quota"
    );
}

#[tokio::test]
async fn concurrent_enrollments_never_exceed_the_quota() {
    let s = common::start_with(unlimited).await;
    let (id, code) = new_code(&s, json!({"name": "q", "max_devices": 5})).await;
    let tries = (0..24).map(|i| {
        let (s, code) = (&s, code.clone());
        async move { enroll(s, &code, &format!("SN-{i}")).await.status }
    });
    let statuses = futures_util::future::join_all(tries).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!((created, refused), (5, 19), "{statuses:?}");
    assert_eq!(get_code(&s, &id).await["enrolled_devices"], 5);
    let devices = s.get("/api/v1/devices", Some(&s.owner_key)).await.body;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 5);

    // One serial sent at once by many: one device.
    let (_, code) = new_code(&s, json!({"name": "same"})).await;
    let tries = (0..8).map(|_| {
        let (s, code) = (&s, code.clone());
        async move { enroll(s, &code, "SN-same").await.status }
    });
    let statuses = futures_util::future::join_all(tries).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| matches!(*s, StatusCode::CREATED | StatusCode::CONFLICT))
    );
}

#[tokio::test]
async fn codes_of_another_organization_are_404_and_its_places_too() {
    let s = common::start().await;
    let other = s.other_org("other").await;
    let (id, _) = new_code(&s, json!({"name": "mine"})).await;
    let a = s
        .get(&format!("/api/v1/enrollment-codes/{id}"), Some(&other))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    let a = s
        .post(
            &format!("/api/v1/enrollment-codes/{id}/revoke"),
            Some(&other),
            json!({}),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let listed = s.get("/api/v1/enrollment-codes", Some(&other)).await.body;
    assert_eq!(listed["enrollment_codes"], json!([]));

    let group = s
        .post("/api/v1/groups", Some(&other), json!({"name": "theirs"}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = s
        .post(
            "/api/v1/enrollment-codes",
            Some(&s.owner_key),
            json!({"name": "x", "group_id": group}),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);

    // A viewer reads codes but creates none.
    let viewer = s
        .post(
            "/api/v1/api-keys",
            Some(&s.owner_key),
            json!({"name": "v", "role": "viewer"}),
        )
        .await
        .body["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        s.get("/api/v1/enrollment-codes", Some(&viewer))
            .await
            .status,
        StatusCode::OK
    );
    let a = s
        .post(
            "/api/v1/enrollment-codes",
            Some(&viewer),
            json!({"name": "x"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn enroll_over_grpc_with_the_code_as_bearer() {
    let s = common::start().await;
    let created = s
        .admin_client(Some(&s.owner_key))
        .await
        .create_enrollment_code(proto::CreateEnrollmentCodeRequest {
            name: "grpc".into(),
            max_devices: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let code = created.code.expect("shown once");
    let enrolled = s
        .device_client(Some(&code))
        .await
        .enroll(proto::EnrollRequest {
            serial_number: "SN-g".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(enrolled.api_key.starts_with("swrm_dk_"));
    let spent = s
        .device_client(Some(&code))
        .await
        .enroll(proto::EnrollRequest {
            serial_number: "SN-h".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(spent.code(), tonic::Code::Unauthenticated);
}
