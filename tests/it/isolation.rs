//! Cross-organization isolation, as a matrix generated from the route table
//! (`swrm::rest::OPERATIONS`): every admin operation that takes an id is
//! tried, over REST and gRPC, with another organization's ids, and every
//! device operation that takes an id with another organization's and with
//! another device's (same organization) ids: all 404 `not_found`. Every list
//! answers none of the other organization's rows, filtered by its ids or not;
//! ids in request bodies are checked the same way. An operation with a path
//! parameter the matrix cannot fill fails the test, so a new route cannot
//! escape it.

use std::{collections::BTreeMap, time::Duration};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use swrm::{
    checks::Access,
    proto,
    rest::{OPERATIONS, Operation},
};
use tonic::Code;

use crate::common::{self, AdminClient, Answer, DeviceClient, TestServer, images::jpeg};

/// Paths with a parameter that names no row of an organization or device,
/// so the matrix has nothing foreign to put there. Empty: every parameter
/// of the route table is an id, or (sensor types) an organization's key.
const NO_FOREIGN_ID: &[&str] = &[];

/// In every name, tag, label and key of organization B: found in an answer
/// to organization A, it is a leak.
const MARK: &str = "zzorgb";

/// Ids by kind. The kind is the path segment before the parameter
/// (`/devices/{id}` takes a `devices` id); kinds that no path names are
/// there to be looked for in answers.
type Ids = BTreeMap<&'static str, Vec<String>>;

struct World {
    s: TestServer,
    /// Organization A's owner key.
    a_key: String,
    /// A device of A that makes the device calls.
    a1_id: String,
    a1_key: String,
    /// Another device of A: its commands, captures, deployments.
    a2: Ids,
    /// A model of A.
    a_model: String,
    /// Organization B's owner key, its paired device's key, and its ids.
    b_key: String,
    b_device_key: String,
    b: Ids,
    /// A's watch streams, opened before B existed.
    watch_commands: tonic::Streaming<proto::CommandStatus>,
    watch_alerts: tonic::Streaming<proto::AlertEvent>,
}

impl World {
    fn b1(&self, kind: &str) -> &str {
        &self.b[kind][0]
    }

    /// Everything of B that must not show in A's answers.
    fn b_needles(&self) -> Vec<String> {
        let mut needles: Vec<String> = self.b.values().flatten().cloned().collect();
        needles.push(MARK.to_owned());
        needles
    }

    /// Everything of A2 that must not show in A1's answers.
    fn a2_needles(&self) -> Vec<String> {
        self.a2.values().flatten().cloned().collect()
    }
}

fn id(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("an id, not {v}"))
        .to_owned()
}

/// POSTs and asserts 201; answers the body.
async fn created(s: &TestServer, key: &str, path: &str, body: Value) -> Value {
    let a = s.post(path, Some(key), body).await;
    assert_eq!(a.status, StatusCode::CREATED, "POST {path}: {}", a.body);
    a.body
}

async fn get_ok(s: &TestServer, key: &str, path: &str) -> Value {
    let a = s.get(path, Some(key)).await;
    assert_eq!(a.status, StatusCode::OK, "GET {path}: {}", a.body);
    a.body
}

/// Every `id` of the list `field` at `path`.
async fn list_ids(s: &TestServer, key: &str, path: &str, field: &str) -> Vec<String> {
    get_ok(s, key, path).await[field]
        .as_array()
        .unwrap_or_else(|| panic!("GET {path}: no {field}"))
        .iter()
        .map(|item| id(&item["id"]))
        .collect()
}

async fn upload_model(s: &TestServer, key: &str, name: &str) -> String {
    let form = reqwest::multipart::Form::new()
        .text("name", name.to_owned())
        .text("version", "1")
        .text("format", "onnx")
        .part(
            "file",
            reqwest::multipart::Part::bytes(name.as_bytes().repeat(64)).file_name("model.onnx"),
        );
    let res = s
        .http
        .post(format!("{}/api/v1/models", s.base))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let a = common::answer(res).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    id(&a.body["id"])
}

async fn upload_capture(s: &TestServer, key: &str, seed: u64, meta: Value) -> Answer {
    s.upload_capture(key, jpeg(64, 48, 2000, seed), Some(&meta.to_string()))
        .await
}

async fn poll_now(s: &TestServer, key: &str) -> Vec<Value> {
    let body = get_ok(s, key, "/api/public/v1/commands?wait=0").await;
    body["commands"].as_array().unwrap().clone()
}

/// Organization A with two devices, organization B with one of everything.
async fn world() -> World {
    let s = common::start_with(|c| {
        c.rate_limits.pair_rate_per_minute = 0;
        c.rate_limits.org_key_rate_per_second = 0;
        c.rate_limits.device_rate_per_second = 0;
    })
    .await;
    let a_key = s.owner_key.clone();
    let mut admin = s.admin_client(Some(&a_key)).await;
    let watch_commands = admin
        .watch_commands(proto::WatchCommandsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let watch_alerts = admin
        .watch_alerts(proto::WatchAlertsRequest {})
        .await
        .unwrap()
        .into_inner();

    // Organization A: device A1 acts; device A2 owns things.
    let (a1_id, a1_key) = s.paired_device("a1").await;
    let (a2_id, a2_key) = s.paired_device("a2").await;
    let a_model = upload_model(&s, &a_key, "a-model").await;
    let a2_deployment = created(
        &s,
        &a_key,
        "/api/v1/deployments",
        json!({"model_id": a_model, "device_ids": [a2_id]}),
    )
    .await;
    created(
        &s,
        &a_key,
        &format!("/api/v1/devices/{a2_id}/commands"),
        json!({"type": "reboot"}),
    )
    .await;
    assert_eq!(poll_now(&s, &a2_key).await.len(), 2, "reboot and deploy");
    created(
        &s,
        &a_key,
        &format!("/api/v1/devices/{a2_id}/commands"),
        json!({"type": "queued"}),
    )
    .await;
    let a2_capture = upload_capture(
        &s,
        &a2_key,
        2,
        json!({"detections": [{"label": "a2", "confidence": 0.5, "bbox": [1, 1, 10, 10]}]}),
    )
    .await;
    assert_eq!(
        a2_capture.status,
        StatusCode::CREATED,
        "{}",
        a2_capture.body
    );
    let mut a2 = Ids::new();
    a2.insert("devices", vec![a2_id.clone()]);
    a2.insert(
        "commands",
        list_ids(
            &s,
            &a_key,
            &format!("/api/v1/devices/{a2_id}/commands"),
            "commands",
        )
        .await,
    );
    a2.insert("captures", vec![id(&a2_capture.body["capture_id"])]);
    a2.insert("deployments", vec![id(&a2_deployment["id"])]);

    // Organization B: one of everything that has an id.
    let b_key = s.other_org(&format!("{MARK}-org")).await;
    let k = b_key.as_str();
    let mut b = Ids::new();
    let location = id(&created(
        &s,
        k,
        "/api/v1/locations",
        json!({"name": format!("{MARK}-location")}),
    )
    .await["id"]);
    let group = id(&created(
        &s,
        k,
        "/api/v1/groups",
        json!({"name": format!("{MARK}-group")}),
    )
    .await["id"]);
    let device = created(
        &s,
        k,
        "/api/v1/devices",
        json!({
            "name": format!("{MARK}-device"),
            "location_id": location,
            "group_id": group,
            "tags": [format!("{MARK}-tag")],
            "serial_number": format!("{MARK}-serial"),
        }),
    )
    .await;
    let device_id = id(&device["device"]["id"]);
    let paired = s
        .post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": device["provisioning_token"]}),
        )
        .await;
    assert_eq!(paired.status, StatusCode::OK, "{}", paired.body);
    let b_device_key = id(&paired.body["api_key"]);
    let (unpaired_id, _) = s.create_device_as(k, &format!("{MARK}-unpaired")).await;
    let dk = b_device_key.as_str();
    let sensor_key = format!("{MARK}_lux");
    created(
        &s,
        k,
        "/api/v1/sensor-types",
        json!({"key": sensor_key, "unit": "lux"}),
    )
    .await;
    assert_eq!(s.heartbeat(dk).await.status, StatusCode::OK);
    for (path, body) in [
        (
            "/api/public/v1/telemetry",
            json!({"values": {format!("{MARK}_metric"): 1.5}}),
        ),
        (
            "/api/public/v1/sensors",
            json!({"readings": [
                {"sensor_type": "temperature", "value": 20.0},
                {"sensor_type": sensor_key, "value": 5.0},
            ]}),
        ),
        (
            "/api/public/v1/events",
            json!({"events": [{"type": format!("{MARK}_event"), "message": MARK}]}),
        ),
    ] {
        let a = s.post(path, Some(dk), body).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
    }
    let rule = id(&created(
        &s,
        k,
        "/api/v1/alert-rules",
        json!({"name": format!("{MARK}-rule"), "sensor_type": "temperature", "op": ">",
               "threshold": 30, "device_id": device_id}),
    )
    .await["id"]);
    let webhook = id(&created(
        &s,
        k,
        "/api/v1/webhooks",
        json!({"url": format!("http://127.0.0.1:9/{MARK}"), "description": MARK}),
    )
    .await["id"]);
    let hot = s
        .post(
            "/api/public/v1/sensors",
            Some(dk),
            json!({"readings": [{"sensor_type": "temperature", "value": 31.0}]}),
        )
        .await;
    assert_eq!(hot.status, StatusCode::OK, "{}", hot.body);
    let alert = id(&hot.body["alerts"][0]["alert_id"]);
    created(
        &s,
        k,
        "/api/v1/api-keys",
        json!({"name": format!("{MARK}-key"), "role": "viewer"}),
    )
    .await;
    let code = id(&created(
        &s,
        k,
        "/api/v1/enrollment-codes",
        json!({"name": format!("{MARK}-code"), "group_id": group, "location_id": location}),
    )
    .await["id"]);
    let capture = upload_capture(
        &s,
        dk,
        1,
        json!({"detections": [{"label": format!("{MARK}_label"), "confidence": 0.9,
                               "bbox": [1, 2, 30, 40]}]}),
    )
    .await;
    assert_eq!(capture.status, StatusCode::CREATED, "{}", capture.body);
    let model = upload_model(&s, k, &format!("{MARK}-model")).await;
    let deployment = id(&created(
        &s,
        k,
        "/api/v1/deployments",
        json!({"model_id": model, "device_ids": [device_id]}),
    )
    .await["id"]);
    // One command delivered (with the deploy_model one), one queued.
    created(
        &s,
        k,
        &format!("/api/v1/devices/{device_id}/commands"),
        json!({"type": "reboot"}),
    )
    .await;
    assert_eq!(poll_now(&s, dk).await.len(), 2, "reboot and deploy");
    let queued = id(&created(
        &s,
        k,
        &format!("/api/v1/devices/{device_id}/commands"),
        json!({"type": format!("{MARK}_queued")}),
    )
    .await["id"]);
    let mut commands = list_ids(
        &s,
        k,
        &format!("/api/v1/devices/{device_id}/commands"),
        "commands",
    )
    .await;
    // The queued one first: the matrix reads its state afterwards.
    commands.retain(|c| *c != queued);
    commands.insert(0, queued);

    b.insert("devices", vec![device_id, unpaired_id]);
    b.insert("locations", vec![location]);
    b.insert("groups", vec![group]);
    b.insert("sensor-types", vec![sensor_key]);
    b.insert("alert-rules", vec![rule]);
    b.insert("alerts", vec![alert]);
    b.insert("webhooks", vec![webhook.clone()]);
    // B's own owner key too: deleting it must be 404, not "last owner key".
    b.insert(
        "api-keys",
        list_ids(&s, k, "/api/v1/api-keys", "api_keys").await,
    );
    b.insert("enrollment-codes", vec![code]);
    b.insert("captures", vec![id(&capture.body["capture_id"])]);
    b.insert("models", vec![model]);
    b.insert("deployments", vec![deployment]);
    b.insert("commands", commands);
    // Only looked for in answers.
    b.insert("events", list_ids(&s, k, "/api/v1/events", "events").await);
    b.insert(
        "deliveries",
        list_ids(
            &s,
            k,
            &format!("/api/v1/webhooks/{webhook}/deliveries"),
            "deliveries",
        )
        .await,
    );
    b.insert("orgs", vec![id(&paired.body["org_id"])]);
    World {
        s,
        a_key,
        a1_id,
        a1_key,
        a2,
        a_model,
        b_key,
        b_device_key,
        b,
        watch_commands,
        watch_alerts,
    }
}

/// The concrete paths for `template`, each parameter filled with every id
/// of its kind (the segment before it); an error names a kind `ids` lacks.
fn fill(template: &str, ids: &Ids) -> Result<Vec<String>, String> {
    let mut paths = vec![String::new()];
    let mut previous = "";
    for segment in template.split('/').skip(1) {
        let mut variants = vec![segment.to_owned()];
        if let (Some(open), Some(close)) = (segment.find('{'), segment.find('}')) {
            let values = ids.get(previous).filter(|v| !v.is_empty()).ok_or_else(|| {
                format!("no ids of kind `{previous}` for {}", &segment[open..=close])
            })?;
            variants = values
                .iter()
                .map(|v| format!("{}{v}{}", &segment[..open], &segment[close + 1..]))
                .collect();
        }
        paths = paths
            .iter()
            .flat_map(|p| variants.iter().map(move |v| format!("{p}/{v}")))
            .collect();
        previous = segment;
    }
    Ok(paths)
}

/// The kinds of a template's parameters, in order.
fn param_kinds(template: &str) -> Vec<&str> {
    let segments: Vec<&str> = template.split('/').collect();
    segments
        .windows(2)
        .filter(|w| w[1].contains('{'))
        .map(|w| w[0])
        .collect()
}

fn rpc_name(op: &Operation) -> &'static str {
    op.rpc.rsplit('/').next().unwrap()
}

/// Reads first, then writes, deletes last: a write that wrongly succeeds
/// cannot hide a read's leak.
fn method_rank(op: &&Operation) -> u8 {
    match op.method {
        "GET" => 0,
        "DELETE" => 2,
        _ => 1,
    }
}

/// A minimal valid body, so that validation (400) cannot answer first.
fn body_for(op: &Operation) -> Option<Value> {
    match op.method {
        "GET" | "DELETE" => None,
        _ => Some(match rpc_name(op) {
            "UpdateDevice" | "UpdateGroup" => json!({"name": "stolen"}),
            "CreateCommand" => json!({"type": "reboot"}),
            "AckCommand" => json!({"status": "succeeded"}),
            _ => json!({}),
        }),
    }
}

/// Required query parameters.
fn query_for(op: &Operation) -> &'static str {
    match rpc_name(op) {
        "GetReadings" => "?sensor_type=temperature",
        "PollCommands" => "?wait=0",
        _ => "",
    }
}

/// Calls `op` on `path` with `key`; a failure unless 404 `not_found`.
async fn expect_404(
    s: &TestServer,
    op: &Operation,
    path: &str,
    key: &str,
    whose: &str,
    failures: &mut Vec<String>,
) {
    let method = Method::from_bytes(op.method.as_bytes()).unwrap();
    let url = format!("{path}{}", query_for(op));
    let a = s.call(method, &url, Some(key), body_for(op)).await;
    if a.status != StatusCode::NOT_FOUND || a.body["error"]["code"] != "not_found" {
        failures.push(format!(
            "REST {} {url} ({whose}): {} {}",
            op.method, a.status, a.body
        ));
    }
}

fn expect_grpc_404(
    answer: Option<Result<(), tonic::Status>>,
    what: String,
    failures: &mut Vec<String>,
) {
    match answer {
        None => failures.push(format!("{what}: not in the gRPC matrix (grpc_admin)")),
        Some(Ok(())) => failures.push(format!("{what}: answered OK")),
        Some(Err(e)) if e.code() != Code::NotFound => {
            failures.push(format!("{what}: {:?} {}", e.code(), e.message()))
        }
        Some(Err(_)) => {}
    }
}

/// The admin method `rpc` with `id` as its path parameter (and a minimal
/// valid rest); `None` for a method this does not know.
async fn grpc_admin(c: &mut AdminClient, rpc: &str, id: &str) -> Option<Result<(), tonic::Status>> {
    let id = id.to_owned();
    macro_rules! call {
        ($method:ident, $request:expr) => {
            c.$method($request).await.map(|_| ())
        };
    }
    Some(match rpc {
        "GetDevice" => call!(get_device, proto::GetDeviceRequest { id }),
        "UpdateDevice" => call!(
            update_device,
            proto::UpdateDeviceRequest {
                id,
                name: Some("stolen".into()),
                ..Default::default()
            }
        ),
        "CreateProvisioningToken" => call!(
            create_provisioning_token,
            proto::CreateProvisioningTokenRequest { id }
        ),
        "RotateDeviceKey" => call!(
            rotate_device_key,
            proto::RotateDeviceKeyRequest {
                id,
                ..Default::default()
            }
        ),
        "RevokeDeviceKey" => call!(revoke_device_key, proto::RevokeDeviceKeyRequest { id }),
        "CreateCommand" => call!(
            create_command,
            proto::CreateCommandRequest {
                id,
                r#type: "reboot".into(),
                ..Default::default()
            }
        ),
        "ListCommands" => call!(
            list_commands,
            proto::ListCommandsRequest {
                id,
                ..Default::default()
            }
        ),
        "GetCommand" => call!(get_command, proto::GetCommandRequest { id }),
        "CancelCommand" => call!(cancel_command, proto::CancelCommandRequest { id }),
        "GetReadings" => call!(
            get_readings,
            proto::GetReadingsRequest {
                id,
                sensor_type: "temperature".into(),
                ..Default::default()
            }
        ),
        "GetLatestReadings" => call!(get_latest_readings, proto::GetLatestReadingsRequest { id }),
        "GetTelemetry" => call!(
            get_telemetry,
            proto::GetTelemetryRequest {
                id,
                ..Default::default()
            }
        ),
        "GetLatestTelemetry" => call!(
            get_latest_telemetry,
            proto::GetLatestTelemetryRequest { id }
        ),
        "GetEnrollmentCode" => call!(get_enrollment_code, proto::GetEnrollmentCodeRequest { id }),
        "DeleteEnrollmentCode" => call!(
            delete_enrollment_code,
            proto::DeleteEnrollmentCodeRequest { id }
        ),
        "DeleteApiKey" => call!(delete_api_key, proto::DeleteApiKeyRequest { id }),
        "DeleteAlertRule" => call!(delete_alert_rule, proto::DeleteAlertRuleRequest { id }),
        "AcknowledgeAlert" => call!(acknowledge_alert, proto::AcknowledgeAlertRequest { id }),
        "DeleteSensorType" => call!(
            delete_sensor_type,
            proto::DeleteSensorTypeRequest { key: id }
        ),
        "UpdateGroup" => call!(
            update_group,
            proto::UpdateGroupRequest {
                id,
                name: Some("stolen".into()),
                ..Default::default()
            }
        ),
        "DeleteWebhook" => call!(delete_webhook, proto::DeleteWebhookRequest { id }),
        "ListWebhookDeliveries" => call!(
            list_webhook_deliveries,
            proto::ListWebhookDeliveriesRequest {
                id,
                ..Default::default()
            }
        ),
        "GetCapture" => call!(get_capture, proto::GetCaptureRequest { id }),
        "DeleteCapture" => call!(delete_capture, proto::DeleteCaptureRequest { id }),
        "GetModelArtifact" => call!(get_model_artifact, proto::GetModelArtifactRequest { id }),
        "DeleteModel" => call!(delete_model, proto::DeleteModelRequest { id }),
        "GetDeployment" => call!(get_deployment, proto::GetDeploymentRequest { id }),
        "ListDeploymentDevices" => call!(
            list_deployment_devices,
            proto::ListDeploymentDevicesRequest {
                id,
                ..Default::default()
            }
        ),
        _ => return None,
    })
}

/// The device method `rpc` with `id` as its path parameter.
async fn grpc_device(
    c: &mut DeviceClient,
    rpc: &str,
    id: &str,
) -> Option<Result<(), tonic::Status>> {
    let id = id.to_owned();
    Some(match rpc {
        "AckCommand" => c
            .ack_command(proto::AckCommandRequest {
                id,
                status: Some("succeeded".into()),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        _ => return None,
    })
}

#[tokio::test]
async fn every_operation_with_an_id_answers_404_for_another_organizations_or_devices_ids() {
    let w = world().await;
    let s = &w.s;
    let mut admin = s.admin_client(Some(&w.a_key)).await;
    let mut device = s.device_client(Some(&w.a1_key)).await;
    let mut failures = Vec::new();
    let (mut rest_calls, mut grpc_calls, mut operations) = (0, 0, 0);
    let mut ops: Vec<&Operation> = OPERATIONS
        .iter()
        .filter(|op| op.path.contains('{') && !NO_FOREIGN_ID.contains(&op.path))
        .collect();
    ops.sort_by_key(method_rank);
    for op in ops {
        let what = format!("{} {} ({})", op.method, op.path, rpc_name(op));
        let kinds = param_kinds(op.path);
        match op.access {
            Access::OrgRead | Access::OrgWrite => {
                let paths = match fill(op.path, &w.b) {
                    Ok(paths) => paths,
                    Err(e) => {
                        failures.push(format!("{what}: not in the matrix: {e}"));
                        continue;
                    }
                };
                operations += 1;
                for path in &paths {
                    // Control: B itself reads it, so the ids are right.
                    if op.method == "GET" {
                        let url = format!("{path}{}", query_for(op));
                        let a = s.get(&url, Some(&w.b_key)).await;
                        assert_eq!(a.status, StatusCode::OK, "control {url}: {}", a.body);
                    }
                    expect_404(s, op, path, &w.a_key, "A's key, B's id", &mut failures).await;
                    rest_calls += 1;
                }
                if kinds.len() != 1 {
                    failures.push(format!("{what}: the gRPC matrix takes one parameter"));
                    continue;
                }
                for id in &w.b[kinds[0]] {
                    let answer = grpc_admin(&mut admin, rpc_name(op), id).await;
                    expect_grpc_404(answer, format!("gRPC {what} with B's {id}"), &mut failures);
                    grpc_calls += 1;
                }
            }
            Access::Device => {
                operations += 1;
                for (whose, ids) in [("B's", &w.b), ("A2's", &w.a2)] {
                    let paths = match fill(op.path, ids) {
                        Ok(paths) => paths,
                        Err(e) => {
                            failures.push(format!("{what}: not in the matrix ({whose}): {e}"));
                            continue;
                        }
                    };
                    for path in &paths {
                        let whose = format!("A1's device key, {whose} id");
                        expect_404(s, op, path, &w.a1_key, &whose, &mut failures).await;
                        rest_calls += 1;
                    }
                    if kinds.len() != 1 {
                        failures.push(format!("{what}: the gRPC matrix takes one parameter"));
                        continue;
                    }
                    for id in ids.get(kinds[0]).into_iter().flatten() {
                        let answer = grpc_device(&mut device, rpc_name(op), id).await;
                        expect_grpc_404(
                            answer,
                            format!("gRPC {what} with {whose} {id}"),
                            &mut failures,
                        );
                        grpc_calls += 1;
                    }
                }
            }
            other => failures.push(format!(
                "{what}: access {other:?} with a path parameter is not in the matrix"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the matrix's calls leaked:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let expected = OPERATIONS
        .iter()
        .filter(|op| op.path.contains('{') && !NO_FOREIGN_ID.contains(&op.path))
        .count();
    assert_eq!(operations, expected);
    println!(
        "isolation matrix: {operations} operations, {rest_calls} REST and {grpc_calls} gRPC calls"
    );

    // Nothing of B changed.
    let b = |path: String| {
        let key = w.b_key.clone();
        async move { get_ok(s, &key, &path).await }
    };
    let device = b(format!("/api/v1/devices/{}", w.b1("devices"))).await;
    assert_eq!(device["name"], format!("{MARK}-device"));
    assert_eq!(device["group_id"], w.b1("groups"));
    assert_eq!(s.heartbeat(&w.b_device_key).await.status, StatusCode::OK);
    let queued = b(format!("/api/v1/commands/{}", w.b1("commands"))).await;
    assert_eq!(queued["status"], "queued", "{queued}");
    let code = b(format!(
        "/api/v1/enrollment-codes/{}",
        w.b1("enrollment-codes")
    ))
    .await;
    assert_eq!(code["revoked_at"], Value::Null);
    let alerts = b("/api/v1/alerts".into()).await;
    assert_eq!(alerts["alerts"][0]["state"], "open", "{alerts}");
    let groups = b("/api/v1/groups".into()).await;
    assert_eq!(groups["groups"][0]["name"], format!("{MARK}-group"));
    for (path, kind) in [
        ("/api/v1/devices", "devices"),
        ("/api/v1/api-keys", "api-keys"),
        ("/api/v1/alert-rules", "alert-rules"),
        ("/api/v1/webhooks", "webhooks"),
        ("/api/v1/sensor-types", "sensor-types"),
        ("/api/v1/captures", "captures"),
        ("/api/v1/models", "models"),
        ("/api/v1/deployments", "deployments"),
        ("/api/v1/enrollment-codes", "enrollment-codes"),
    ] {
        let list = b(path.into()).await.to_string();
        for id in &w.b[kind] {
            assert!(list.contains(id.as_str()), "B lost {kind} {id}: {list}");
        }
    }
}

/// Filters that name B's rows; a list that has no such filter ignores it.
fn probes(w: &World) -> Vec<String> {
    let mut probes = vec![String::new()];
    for (name, kind) in [
        ("device_id", "devices"),
        ("group_id", "groups"),
        ("location_id", "locations"),
        ("rule_id", "alert-rules"),
        ("model_id", "models"),
    ] {
        probes.push(format!("?{name}={}", w.b1(kind)));
    }
    for (name, value) in [
        ("name_prefix", MARK.to_owned()),
        ("tag", format!("{MARK}-tag")),
        ("label", format!("{MARK}_label")),
        ("type", format!("{MARK}_event")),
        ("key", format!("{MARK}_metric")),
    ] {
        probes.push(format!("?{name}={value}"));
    }
    probes
}

fn leaks(body: &Value, needles: &[String]) -> Vec<String> {
    let text = body.to_string();
    needles
        .iter()
        .filter(|n| text.contains(n.as_str()))
        .cloned()
        .collect()
}

/// Reads `stream` until `done` says a message is the sentinel; fails on
/// any message with one of B's needles.
async fn until_sentinel<T: std::fmt::Debug>(
    stream: &mut tonic::Streaming<T>,
    needles: &[String],
    done: impl Fn(&T) -> bool,
) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the sentinel arrives")
            .expect("the stream stays open")
            .expect("the stream stays open");
        let text = format!("{message:?}");
        let found: Vec<&String> = needles
            .iter()
            .filter(|n| text.contains(n.as_str()))
            .collect();
        assert!(found.is_empty(), "A's stream carried B's {found:?}: {text}");
        if done(&message) {
            return;
        }
    }
}

#[tokio::test]
async fn no_list_or_stream_answers_another_organizations_rows() {
    let mut w = world().await;
    let s = &w.s;
    let b_needles = w.b_needles();
    let a2_needles = w.a2_needles();
    let mut failures = Vec::new();
    let mut lists = 0;
    for op in OPERATIONS
        .iter()
        .filter(|op| op.method == "GET" && !op.path.contains('{'))
    {
        match op.access {
            Access::OrgRead | Access::OrgWrite => {
                lists += 1;
                for probe in probes(&w) {
                    let url = format!("{}{probe}", op.path);
                    let a = s.get(&url, Some(&w.a_key)).await;
                    let leaked = leaks(&a.body, &b_needles);
                    let plain = probe.is_empty();
                    if !(a.status == StatusCode::OK || !plain && a.status == StatusCode::NOT_FOUND)
                        || !leaked.is_empty()
                    {
                        failures.push(format!(
                            "GET {url}: {} leaks {leaked:?}: {}",
                            a.status, a.body
                        ));
                    }
                }
                // Control: B's own list shows B's rows.
                let theirs = s.get(op.path, Some(&w.b_key)).await;
                assert!(
                    !leaks(&theirs.body, &b_needles).is_empty(),
                    "control: B's GET {} shows none of B's rows (give B one): {}",
                    op.path,
                    theirs.body
                );
            }
            Access::Device | Access::Public => {
                lists += 1;
                let url = format!("{}{}", op.path, query_for(op));
                let mut keys = vec![Some(w.a1_key.as_str())];
                if op.access == Access::Public {
                    keys.push(None);
                }
                for key in keys {
                    let a = s.get(&url, key).await;
                    let mut leaked = leaks(&a.body, &b_needles);
                    if key.is_some() {
                        leaked.extend(leaks(&a.body, &a2_needles));
                    }
                    if !matches!(a.status, StatusCode::OK | StatusCode::NO_CONTENT)
                        || !leaked.is_empty()
                    {
                        failures.push(format!(
                            "GET {url} (A1: {}): {} leaks {leaked:?}: {}",
                            key.is_some(),
                            a.status,
                            a.body
                        ));
                    }
                }
                // Control: B's device sees B's (its poll delivers the queued command).
                let theirs = s.get(&url, Some(&w.b_device_key)).await;
                assert!(
                    !leaks(&theirs.body, &b_needles).is_empty(),
                    "control: B's device's GET {url} shows none of B's: {}",
                    theirs.body
                );
            }
            _ => {}
        }
    }
    assert!(lists >= 15, "only {lists} lists");

    // gRPC: watching one of B's devices is 404 or silent.
    let mut admin = s.admin_client(Some(&w.a_key)).await;
    let watched = admin
        .watch_commands(proto::WatchCommandsRequest {
            device_id: Some(w.b1("devices").to_owned()),
        })
        .await;
    let mut stream = match watched {
        Err(e) => {
            assert_eq!(e.code(), Code::NotFound, "{e:?}");
            None
        }
        Ok(stream) => Some(stream.into_inner()),
    };
    created(
        s,
        &w.b_key,
        &format!("/api/v1/devices/{}/commands", w.b1("devices")),
        json!({"type": format!("{MARK}_watched")}),
    )
    .await;
    if let Some(stream) = &mut stream {
        match tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
            Err(_) => {}
            Ok(Err(e)) => assert_eq!(e.code(), Code::NotFound, "{e:?}"),
            Ok(Ok(m)) => failures.push(format!("A watched B's device's commands: {m:?}")),
        }
    }

    // A's organization-wide watches, open since before B existed: B's
    // commands and alerts never came, A's own sentinel does.
    let sentinel = id(&created(
        s,
        &w.a_key,
        &format!("/api/v1/devices/{}/commands", w.a1_id),
        json!({"type": "sentinel"}),
    )
    .await["id"]);
    until_sentinel(&mut w.watch_commands, &b_needles, |c| c.id == sentinel).await;
    created(
        s,
        &w.a_key,
        "/api/v1/alert-rules",
        json!({"name": "sentinel", "sensor_type": "temperature", "op": ">", "threshold": 30,
               "device_id": w.a1_id}),
    )
    .await;
    let hot = s
        .post(
            "/api/public/v1/sensors",
            Some(&w.a1_key),
            json!({"readings": [{"sensor_type": "temperature", "value": 31.0}]}),
        )
        .await;
    let alert = id(&hot.body["alerts"][0]["alert_id"]);
    until_sentinel(&mut w.watch_alerts, &b_needles, |e| {
        e.alert.as_ref().is_some_and(|a| a.id == alert)
    })
    .await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn ids_in_request_bodies_of_another_organization_or_device_are_404() {
    let w = world().await;
    let s = &w.s;
    let a = w.a_key.as_str();
    let (b_device, b_group, b_location, b_model) = (
        w.b1("devices"),
        w.b1("groups"),
        w.b1("locations"),
        w.b1("models"),
    );
    let mut failures = Vec::new();
    let a1 = format!("/api/v1/devices/{}", w.a1_id);
    let rule = json!({"name": "x", "sensor_type": "temperature", "op": ">", "threshold": 1});
    let with = |base: &Value, extra: Value| {
        let mut body = base.clone();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let admin_probes = [
        (
            Method::POST,
            "/api/v1/devices",
            json!({"name": "x", "location_id": b_location}),
        ),
        (
            Method::POST,
            "/api/v1/devices",
            json!({"name": "x", "group_id": b_group}),
        ),
        (
            Method::POST,
            "/api/v1/devices:batchCreate",
            json!({"requests": [{"name": "x", "group_id": b_group}]}),
        ),
        (
            Method::POST,
            "/api/v1/devices:batchCreate",
            json!({"requests": [{"name": "x", "location_id": b_location}]}),
        ),
        (
            Method::PATCH,
            a1.as_str(),
            json!({"location_id": b_location}),
        ),
        (Method::PATCH, a1.as_str(), json!({"group_id": b_group})),
        (
            Method::POST,
            "/api/v1/enrollment-codes",
            json!({"name": "x", "group_id": b_group}),
        ),
        (
            Method::POST,
            "/api/v1/enrollment-codes",
            json!({"name": "x", "location_id": b_location}),
        ),
        (
            Method::POST,
            "/api/v1/alert-rules",
            with(&rule, json!({"device_id": b_device})),
        ),
        (
            Method::POST,
            "/api/v1/alert-rules",
            with(&rule, json!({"group_id": b_group})),
        ),
        (
            Method::POST,
            "/api/v1/alert-rules",
            with(&rule, json!({"location_id": b_location})),
        ),
        (
            Method::POST,
            "/api/v1/deployments",
            json!({"model_id": b_model, "device_ids": [w.a1_id]}),
        ),
        (
            Method::POST,
            "/api/v1/deployments",
            json!({"model_id": w.a_model, "device_ids": [b_device]}),
        ),
        (
            Method::POST,
            "/api/v1/deployments",
            json!({"model_id": w.a_model, "group_id": b_group}),
        ),
        (
            Method::POST,
            "/api/v1/deployments",
            json!({"model_id": w.a_model, "location_id": b_location}),
        ),
    ];
    for (method, path, body) in admin_probes {
        let answer = s
            .call(method.clone(), path, Some(a), Some(body.clone()))
            .await;
        if answer.status != StatusCode::NOT_FOUND || answer.body["error"]["code"] != "not_found" {
            failures.push(format!(
                "{method} {path} {body}: {} {}",
                answer.status, answer.body
            ));
        }
    }
    // B's own sensor type is unknown to A: 400 as any unknown type.
    let sensor = format!("{MARK}_lux");
    let unknown = [
        (
            "/api/v1/alert-rules",
            a,
            json!({"name": "x", "sensor_type": sensor, "op": ">", "threshold": 1}),
        ),
        (
            "/api/public/v1/sensors",
            w.a1_key.as_str(),
            json!({"readings": [{"sensor_type": sensor, "value": 1.0}]}),
        ),
    ];
    for (path, key, body) in unknown {
        let answer = s.post(path, Some(key), body).await;
        if answer.status != StatusCode::BAD_REQUEST {
            failures.push(format!(
                "POST {path} with B's sensor type: {} {}",
                answer.status, answer.body
            ));
        }
    }

    // Labels on B's capture or on A2's: 404, REST and gRPC.
    let mut device = s.device_client(Some(&w.a1_key)).await;
    for (whose, capture) in [
        ("B's", w.b1("captures")),
        ("A2's", w.a2["captures"][0].as_str()),
    ] {
        let answer = s
            .post(
                "/api/public/v1/labels",
                Some(&w.a1_key),
                json!({"capture_id": capture, "detections": [
                    {"label": "stolen", "confidence": 0.5, "bbox": [1, 1, 5, 5]}
                ]}),
            )
            .await;
        if answer.status != StatusCode::NOT_FOUND || answer.body["error"]["code"] != "not_found" {
            failures.push(format!(
                "POST /labels on {whose} capture: {} {}",
                answer.status, answer.body
            ));
        }
        let grpc = device
            .set_labels(proto::SetLabelsRequest {
                capture_id: capture.to_owned(),
                detections: vec![proto::Detection {
                    label: "stolen".into(),
                    confidence: Some(0.5),
                    bbox: vec![1.0, 1.0, 5.0, 5.0],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .map(|_| ());
        expect_grpc_404(
            Some(grpc),
            format!("gRPC SetLabels on {whose} capture"),
            &mut failures,
        );
    }

    // A model_swap naming B's or A2's deployment marks neither active.
    let a2_deployment = w.a2["deployments"][0].as_str();
    let swap = s
        .post(
            "/api/public/v1/events",
            Some(&w.a1_key),
            json!({"events": [
                {"type": "model_swap", "data": {"deployment_id": w.b1("deployments")}},
                {"type": "model_swap", "data": {"deployment_id": a2_deployment}},
            ]}),
        )
        .await;
    assert_eq!(swap.status, StatusCode::OK, "{}", swap.body);
    for (key, deployment) in [(&w.b_key, w.b1("deployments")), (&w.a_key, a2_deployment)] {
        let devices = get_ok(s, key, &format!("/api/v1/deployments/{deployment}/devices")).await;
        for d in devices["devices"].as_array().unwrap() {
            assert_ne!(d["status"], "active", "{devices}");
            assert_ne!(d["device_id"], w.a1_id.as_str(), "{devices}");
        }
    }

    // A capture_id is per organization: B's makes A1 a capture of its own
    // (never answers B's); A2's is a conflict.
    let b_capture = w.b1("captures");
    let before = get_ok(s, &w.b_key, &format!("/api/v1/captures/{b_capture}")).await;
    let ours = upload_capture(
        s,
        &w.a1_key,
        9,
        json!({"capture_id": b_capture, "detections": [
            {"label": "ours", "confidence": 0.5, "bbox": [1, 1, 5, 5]}
        ]}),
    )
    .await;
    if ours.status != StatusCode::CREATED
        || ours.body["image"]["sha256"] == before["image"]["sha256"]
        || !leaks(&ours.body, &[MARK.to_owned()]).is_empty()
    {
        failures.push(format!(
            "upload with B's capture_id: {} {}",
            ours.status, ours.body
        ));
    }
    let after = get_ok(s, &w.b_key, &format!("/api/v1/captures/{b_capture}")).await;
    assert_eq!(after["image"], before["image"]);
    assert_eq!(after["detections"], before["detections"]);
    assert_eq!(after["device_id"], before["device_id"]);
    let conflict =
        upload_capture(s, &w.a1_key, 10, json!({"capture_id": w.a2["captures"][0]})).await;
    if conflict.status != StatusCode::CONFLICT {
        failures.push(format!(
            "upload with A2's capture_id: {} {}",
            conflict.status, conflict.body
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
