//! Device search: by name prefix and by tag (each on an index), kept right
//! as devices are created, retagged and enrolled, paged and scoped to the
//! organization.

use crate::common::{self, TestServer};
use reqwest::StatusCode;
use serde_json::json;

/// Names of every device the query lists, walking pages of two.
async fn names(s: &TestServer, key: &str, query: &str) -> Vec<String> {
    let (mut out, mut token) = (Vec::new(), String::new());
    loop {
        let a = s
            .get(
                &format!("/api/v1/devices?{query}&page_size=2&page_token={token}"),
                Some(key),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{query}: {}", a.body);
        for d in a.body["devices"].as_array().unwrap() {
            out.push(d["name"].as_str().unwrap().to_owned());
        }
        token = a.body["next_page_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            out.sort();
            return out;
        }
    }
}

#[tokio::test]
async fn devices_are_found_by_name_prefix_and_by_tag() {
    let s = common::start().await;
    let owner = s.owner_key.clone();
    let a = s
        .post(
            "/api/v1/devices:batchCreate",
            Some(&owner),
            json!({"requests": [
                {"name": "cam-01", "tags": ["outdoor", "v2"]},
                {"name": "cam-02", "tags": ["indoor"]},
                {"name": "camera", "tags": ["outdoor"]},
                {"name": "Cam-03", "tags": ["outdoor"]},
                {"name": "cäm-04"},
                {"name": "gate-1", "tags": ["outdoor", "gate"]},
            ]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);

    assert_eq!(
        names(&s, &owner, "name_prefix=cam-").await,
        ["cam-01", "cam-02"]
    );
    assert_eq!(
        names(&s, &owner, "name_prefix=cam").await,
        ["cam-01", "cam-02", "camera"],
        "case-sensitive"
    );
    assert_eq!(names(&s, &owner, "name_prefix=c%C3%A4m").await, ["cäm-04"]);
    assert_eq!(
        names(&s, &owner, "name_prefix=zzz").await,
        Vec::<String>::new()
    );
    assert_eq!(
        names(&s, &owner, "tag=outdoor").await,
        ["Cam-03", "cam-01", "camera", "gate-1"]
    );
    assert_eq!(
        names(&s, &owner, "tag=outdoor&name_prefix=cam").await,
        ["cam-01", "camera"]
    );
    assert_eq!(names(&s, &owner, "tag=nothing").await, Vec::<String>::new());

    // Retagging moves the device between searches.
    let camera = a.body["devices"][2]["device"]["id"].as_str().unwrap();
    let p = s
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/devices/{camera}"),
            Some(&owner),
            Some(json!({"tags": ["indoor"]})),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(
        names(&s, &owner, "tag=outdoor").await,
        ["Cam-03", "cam-01", "gate-1"]
    );
    assert_eq!(names(&s, &owner, "tag=indoor").await, ["cam-02", "camera"]);
    // A rename keeps the tags.
    let p = s
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/devices/{camera}"),
            Some(&owner),
            Some(json!({"name": "cam-05"})),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(names(&s, &owner, "tag=indoor").await, ["cam-02", "cam-05"]);

    // Enrolled devices carry their code's tags.
    let code = s
        .post(
            "/api/v1/enrollment-codes",
            Some(&owner),
            json!({"name": "line", "tags": ["outdoor"]}),
        )
        .await;
    let e = s
        .post(
            "/api/public/v1/enroll",
            None,
            json!({"enrollment_code": code.body["code"], "serial_number": "cam-06"}),
        )
        .await;
    assert_eq!(e.status, StatusCode::CREATED, "{}", e.body);
    assert_eq!(
        names(&s, &owner, "tag=outdoor&name_prefix=cam-").await,
        ["cam-01", "cam-06"]
    );

    // Another organization's devices never show, whatever their tags.
    let other = s.other_org("other").await;
    s.post(
        "/api/v1/devices",
        Some(&other),
        json!({"name": "cam-99", "tags": ["outdoor"]}),
    )
    .await;
    assert_eq!(names(&s, &other, "tag=outdoor").await.len(), 1);
    assert!(
        !names(&s, &owner, "tag=outdoor")
            .await
            .contains(&"cam-99".to_owned())
    );
    assert!(
        !names(&s, &owner, "name_prefix=cam-9")
            .await
            .contains(&"cam-99".to_owned())
    );
}
