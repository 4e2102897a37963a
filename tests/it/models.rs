//! Models and deployments: artifact upload (REST multipart and the gRPC
//! stream), list / get / delete, deployments to devices, groups, locations
//! and the organization (later joiners too), `deploy_model` commands,
//! `GET /model` with a resumable signed download, `model_swap` marking a
//! deployment active, and superseding.

use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use swrm::proto;

use crate::common::{self, Answer, TestServer, images::sha256_hex};

/// A model artifact: `len` deterministic bytes.
fn artifact(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn upload(
    s: &TestServer,
    key: &str,
    parts: &[(&str, &str)],
    file: Option<Vec<u8>>,
) -> Answer {
    let mut form = reqwest::multipart::Form::new();
    for (name, value) in parts {
        form = form.text(name.to_string(), value.to_string());
    }
    if let Some(bytes) = file {
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name("model.onnx"),
        );
    }
    let res = s
        .http
        .post(format!("{}/api/v1/models", s.base))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    common::answer(res).await
}

/// Uploads a model; answers its id.
async fn model(s: &TestServer, name: &str, version: &str, bytes: Vec<u8>) -> String {
    let a = upload(
        s,
        &s.owner_key,
        &[("name", name), ("version", version), ("format", "onnx")],
        Some(bytes),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    a.body["id"].as_str().unwrap().to_owned()
}

async fn deploy(s: &TestServer, body: Value) -> Value {
    let a = s
        .post("/api/v1/deployments", Some(&s.owner_key), body)
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    a.body
}

/// The device's queued commands, at once.
async fn commands(s: &TestServer, key: &str) -> Vec<Value> {
    let a = s.get("/api/public/v1/commands?wait=0", Some(key)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body["commands"].as_array().unwrap().clone()
}

#[tokio::test]
async fn models_upload_over_rest_and_grpc_then_list_get_and_delete() {
    let s = common::start().await;
    let bytes = artifact(300_000, 1);
    // Text parts after the file are fine.
    let a = s
        .http
        .post(format!("{}/api/v1/models", s.base))
        .bearer_auth(&s.owner_key)
        .multipart(
            reqwest::multipart::Form::new()
                .part("file", reqwest::multipart::Part::bytes(bytes.clone()))
                .text("name", "detector")
                .text("version", "1.0.0")
                .text("format", "ONNX"),
        )
        .send()
        .await
        .unwrap();
    let a = common::answer(a).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let m = &a.body;
    assert_eq!(m["name"], "detector");
    assert_eq!(m["version"], "1.0.0");
    assert_eq!(m["format"], "onnx");
    assert_eq!(m["size_bytes"], bytes.len());
    assert_eq!(m["sha256"], sha256_hex(&bytes));
    let id = m["id"].as_str().unwrap().to_owned();

    // The same name and version again is a conflict; a new version is fine.
    let a = upload(
        &s,
        &s.owner_key,
        &[
            ("name", "detector"),
            ("version", "1.0.0"),
            ("format", "onnx"),
        ],
        Some(artifact(10, 2)),
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    for (parts, file, status) in [
        (
            vec![("version", "2"), ("format", "onnx")],
            Some(artifact(10, 3)),
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![("name", "x"), ("version", "2"), ("format", "onnx")],
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![("name", " "), ("version", "2"), ("format", "onnx")],
            Some(artifact(10, 3)),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let a = upload(&s, &s.owner_key, &parts, file).await;
        assert_eq!(a.status, status, "{parts:?}: {}", a.body);
    }

    // gRPC: meta first, then chunks.
    let big = artifact(3 * 1024 * 1024 + 7, 4);
    let mut chunks = vec![proto::UploadModelChunk {
        part: Some(proto::upload_model_chunk::Part::Meta(
            proto::ModelUploadMeta {
                name: "detector".into(),
                version: "2.0.0".into(),
                format: "tflite".into(),
            },
        )),
    }];
    chunks.extend(big.chunks(1024 * 1024).map(|c| proto::UploadModelChunk {
        part: Some(proto::upload_model_chunk::Part::Data(c.to_vec())),
    }));
    let mut admin = s.admin_client(Some(&s.owner_key)).await;
    let m2 = admin
        .upload_model(tokio_stream::iter(chunks))
        .await
        .expect("UploadModel")
        .into_inner();
    assert_eq!(m2.sha256, sha256_hex(&big));
    assert_eq!(m2.size_bytes, big.len() as u64);

    let list = s.get("/api/v1/models", Some(&s.owner_key)).await;
    let names: Vec<(&str, &str)> = list.body["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["version"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("detector", "1.0.0"), ("detector", "2.0.0")]);
    let got = s
        .get(&format!("/api/v1/models/{id}"), Some(&s.owner_key))
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(&got.body, m);

    // Devices cannot upload; another organization cannot see it.
    let (_, device_key) = s.paired_device("cam").await;
    let a = upload(
        &s,
        &device_key,
        &[("name", "x"), ("version", "1"), ("format", "onnx")],
        Some(artifact(10, 1)),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let other = s.other_org("other").await;
    let a = s.get(&format!("/api/v1/models/{id}"), Some(&other)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    // Not deployed: it can go.
    let a = s
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/models/{id}"),
            Some(&s.owner_key),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let a = s
        .get(&format!("/api/v1/models/{id}"), Some(&s.owner_key))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_deployment_reaches_its_devices_which_download_with_resume_and_report_it_active() {
    let s = common::start().await;
    let (cam1, key1) = s.paired_device("cam-1").await;
    let (_, key2) = s.paired_device("cam-2").await;
    let (_, idle_key) = s.paired_device("idle").await;
    let bytes = artifact(200_000, 9);
    let model_id = model(&s, "detector", "1.0.0", bytes.clone()).await;

    // Nothing deployed yet: 204, an empty gRPC answer, no active_model.
    let a = s.get("/api/public/v1/model", Some(&key1)).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let mut device = s.device_client(Some(&idle_key)).await;
    let none = device
        .get_model(proto::GetModelRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(none.deployment_id, "");
    let cfg = s.get("/api/public/v1/config", Some(&key1)).await;
    assert_eq!(cfg.body["active_model"], Value::Null);

    let d = deploy(&s, json!({"model_id": model_id, "device_ids": [cam1]})).await;
    let deployment_id = d["id"].as_str().unwrap().to_owned();
    assert_eq!(d["status"], "active");
    assert_eq!(d["commands_queued"], 1);
    assert_eq!(d["rollup"]["pending"], 1);

    // The device's command names the deployment.
    let cmds = commands(&s, &key1).await;
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0]["type"], "deploy_model");
    assert_eq!(cmds[0]["payload"]["deployment_id"], deployment_id.as_str());
    assert_eq!(cmds[0]["payload"]["sha256"], sha256_hex(&bytes));
    assert!(
        commands(&s, &key2).await.is_empty(),
        "cam-2 is not a target"
    );

    // /model and /config agree.
    let m = s.get("/api/public/v1/model", Some(&key1)).await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.body);
    assert_eq!(m.body["deployment_id"], deployment_id.as_str());
    assert_eq!(m.body["model"]["id"], model_id.as_str());
    assert_eq!(m.body["model"]["size_bytes"], bytes.len());
    assert!(chrono::DateTime::parse_from_rfc3339(m.body["expires_at"].as_str().unwrap()).is_ok());
    let cfg = s.get("/api/public/v1/config", Some(&key1)).await;
    assert_eq!(
        cfg.body["active_model"]["deployment_id"],
        deployment_id.as_str()
    );
    assert_eq!(cfg.body["active_model"]["sha256"], sha256_hex(&bytes));

    // An interrupted download resumes with Range.
    let url = m.body["download_url"].as_str().unwrap();
    let first = s
        .http
        .get(url)
        .header(header::RANGE, "bytes=0-65535")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::PARTIAL_CONTENT);
    let mut got = first.bytes().await.unwrap().to_vec();
    let rest = s
        .http
        .get(url)
        .header(header::RANGE, format!("bytes={}-", got.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), StatusCode::PARTIAL_CONTENT);
    got.extend_from_slice(&rest.bytes().await.unwrap());
    assert_eq!(sha256_hex(&got), sha256_hex(&bytes));
    // Altered, it is refused.
    // (`signature=` on swrm's URLs, `X-Amz-Signature=` on S3's.)
    let at = url.find("ignature=").expect("a signature") + 9;
    let flipped = if &url[at..=at] == "0" { "1" } else { "0" };
    let tampered = format!("{}{flipped}{}", &url[..at], &url[at + 1..]);
    let status = s.http.get(&tampered).send().await.unwrap().status();
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The device acknowledges, then reports the swap.
    let cmd_id = cmds[0]["id"].as_str().unwrap();
    let a = s
        .post(
            &format!("/api/public/v1/commands/{cmd_id}/ack"),
            Some(&key1),
            json!({"status": "succeeded"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let d = s
        .get(
            &format!("/api/v1/deployments/{deployment_id}"),
            Some(&s.owner_key),
        )
        .await;
    assert_eq!(d.body["rollup"]["delivered"], 1, "{}", d.body);
    let a = s
        .post(
            "/api/public/v1/events",
            Some(&key1),
            json!({"events": [{"type": "model_swap", "data": {"deployment_id": deployment_id}}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let d = s
        .get(
            &format!("/api/v1/deployments/{deployment_id}"),
            Some(&s.owner_key),
        )
        .await;
    assert_eq!(d.body["rollup"]["active"], 1, "{}", d.body);
    let devices = s
        .get(
            &format!("/api/v1/deployments/{deployment_id}/devices"),
            Some(&s.owner_key),
        )
        .await;
    assert_eq!(devices.status, StatusCode::OK, "{}", devices.body);
    let row = &devices.body["devices"][0];
    assert_eq!(row["device_id"], cam1.as_str());
    assert_eq!(row["status"], "active");
    assert_eq!(row["command_id"], cmd_id);
    assert!(row["active_at"].is_string());

    // A deployed model cannot be deleted.
    let a = s
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/models/{model_id}"),
            Some(&s.owner_key),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    let list = s.get("/api/v1/deployments", Some(&s.owner_key)).await;
    assert_eq!(list.body["deployments"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn newer_deployments_supersede_older_ones_and_groups_reach_later_joiners() {
    let s = common::start().await;
    let owner = Some(s.owner_key.as_str());
    let group = s
        .post("/api/v1/groups", owner, json!({"name": "lobby"}))
        .await;
    assert_eq!(group.status, StatusCode::CREATED, "{}", group.body);
    let group_id = group.body["id"].as_str().unwrap().to_owned();
    let (cam1, key1) = s.paired_device("cam-1").await;
    let (cam2, key2) = s.paired_device("cam-2").await;
    for cam in [&cam1, &cam2] {
        let a = s
            .call(
                reqwest::Method::PATCH,
                &format!("/api/v1/devices/{cam}"),
                owner,
                Some(json!({"group_id": group_id})),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    let v1 = model(&s, "det", "1", artifact(1000, 1)).await;
    let v2 = model(&s, "det", "2", artifact(1000, 2)).await;
    let by_group = deploy(&s, json!({"model_id": v1, "group_id": group_id})).await;
    assert_eq!(by_group["commands_queued"], 2);
    let by_device = deploy(&s, json!({"model_id": v2, "device_ids": [cam1]})).await;

    let model_of = |key: String| {
        let s = &s;
        async move {
            let a = s.get("/api/public/v1/model", Some(&key)).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.body);
            a.body["deployment_id"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(
        model_of(key1.clone()).await,
        by_device["id"].as_str().unwrap()
    );
    assert_eq!(
        model_of(key2.clone()).await,
        by_group["id"].as_str().unwrap()
    );
    let d = s
        .get(
            &format!("/api/v1/deployments/{}", by_group["id"].as_str().unwrap()),
            owner,
        )
        .await;
    assert_eq!(d.body["rollup"]["superseded"], 1, "{}", d.body);
    assert_eq!(d.body["rollup"]["pending"], 1, "{}", d.body);
    assert_eq!(d.body["status"], "active");

    // A device created in the group, and one moved into it, get the
    // group's deployment.
    let created = s
        .post(
            "/api/v1/devices",
            owner,
            json!({"name": "cam-3", "group_id": group_id}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let token = created.body["provisioning_token"].as_str().unwrap();
    let paired = s
        .post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": token}),
        )
        .await;
    let key3 = paired.body["api_key"].as_str().unwrap().to_owned();
    assert_eq!(
        model_of(key3.clone()).await,
        by_group["id"].as_str().unwrap()
    );
    let cmds = commands(&s, &key3).await;
    assert_eq!(cmds.len(), 1, "the joiner's deploy_model command");
    assert_eq!(cmds[0]["payload"]["deployment_id"], by_group["id"]);

    let (cam4, key4) = s.paired_device("cam-4").await;
    let a = s.get("/api/public/v1/model", Some(&key4)).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    s.call(
        reqwest::Method::PATCH,
        &format!("/api/v1/devices/{cam4}"),
        owner,
        Some(json!({"group_id": group_id})),
    )
    .await;
    assert_eq!(
        model_of(key4.clone()).await,
        by_group["id"].as_str().unwrap()
    );
    assert_eq!(commands(&s, &key4).await.len(), 1);

    // An organization-wide deployment supersedes both and reaches devices
    // created later.
    let everyone = deploy(&s, json!({"model_id": v2, "all_devices": true})).await;
    assert_eq!(everyone["commands_queued"], 4);
    for key in [&key1, &key2, &key3, &key4] {
        assert_eq!(
            model_of(key.clone()).await,
            everyone["id"].as_str().unwrap()
        );
    }
    let (_, key5) = s.paired_device("cam-5").await;
    assert_eq!(model_of(key5).await, everyone["id"].as_str().unwrap());
    let list = s.get("/api/v1/deployments", owner).await;
    let statuses: Vec<&str> = list.body["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["superseded", "superseded", "active"]);
    // v1 is no longer deployed anywhere: it can go (with its history).
    let a = s
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/models/{v1}"),
            owner,
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
}

#[tokio::test]
async fn deployments_check_their_target() {
    let s = common::start().await;
    let owner = Some(s.owner_key.as_str());
    let (cam, _) = s.paired_device("cam").await;
    let m = model(&s, "det", "1", artifact(100, 1)).await;
    for (body, status) in [
        (json!({"model_id": m}), StatusCode::BAD_REQUEST),
        (
            json!({"model_id": m, "device_ids": [cam], "all_devices": true}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"model_id": m, "device_ids": [uuid::Uuid::now_v7()]}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"model_id": uuid::Uuid::now_v7(), "device_ids": [cam]}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"model_id": m, "group_id": uuid::Uuid::now_v7()}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"model_id": "nope", "all_devices": true}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let a = s.post("/api/v1/deployments", owner, body.clone()).await;
        assert_eq!(a.status, status, "{body}: {}", a.body);
    }
    // Another organization's model or device is not found.
    let other = s.other_org("other").await;
    let a = s
        .post(
            "/api/v1/deployments",
            Some(&other),
            json!({"model_id": m, "all_devices": true}),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = s
        .get(
            &format!("/api/v1/deployments/{}", uuid::Uuid::now_v7()),
            owner,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // A location target works like a group's.
    let loc = s
        .post("/api/v1/locations", owner, json!({"name": "dock"}))
        .await;
    assert_eq!(loc.status, StatusCode::CREATED, "{}", loc.body);
    let d = s
        .post(
            "/api/v1/deployments",
            owner,
            json!({"model_id": m, "location_id": loc.body["id"]}),
        )
        .await;
    assert_eq!(d.status, StatusCode::CREATED, "{}", d.body);
    assert_eq!(d.body["location_id"], loc.body["id"]);
    assert_eq!(d.body["commands_queued"], 0);
}

/// `/model` answers from the device's cached configuration: deleting a
/// model (with the superseded deployment a device still named) must not
/// leave it answering the deleted model.
#[tokio::test]
async fn a_deleted_model_leaves_no_stale_answer() {
    let s = common::start().await;
    let owner = Some(s.owner_key.as_str());
    let group = s
        .post("/api/v1/groups", owner, json!({"name": "dock"}))
        .await;
    let group_id = group.body["id"].as_str().unwrap().to_owned();
    let (cam, key) = s.paired_device("cam").await;
    let patch = |group: Value| {
        let s = &s;
        let cam = cam.clone();
        async move {
            let a = s
                .call(
                    reqwest::Method::PATCH,
                    &format!("/api/v1/devices/{cam}"),
                    Some(&s.owner_key),
                    Some(json!({ "group_id": group })),
                )
                .await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        }
    };
    patch(json!(group_id)).await;
    let v1 = model(&s, "det", "1", artifact(100, 1)).await;
    let v2 = model(&s, "det", "2", artifact(100, 2)).await;
    deploy(&s, json!({"model_id": v1, "group_id": group_id})).await;
    // The device leaves the group but keeps v1; /model is now cached.
    patch(json!("")).await;
    let a = s.get("/api/public/v1/model", Some(&key)).await;
    assert_eq!(a.body["model"]["id"], v1.as_str());
    // A newer group deployment retires the old one; v1 can go.
    deploy(&s, json!({"model_id": v2, "group_id": group_id})).await;
    let a = s.get("/api/public/v1/model", Some(&key)).await;
    assert_eq!(a.body["model"]["id"], v1.as_str(), "cached again");
    let a = s
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/models/{v1}"),
            owner,
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let a = s.get("/api/public/v1/model", Some(&key)).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let cfg = s.get("/api/public/v1/config", Some(&key)).await;
    assert_eq!(cfg.body["active_model"], Value::Null);
}
