//! The same flow through gRPC (generated client, HTTP/2) and REST gives the
//! same results and the same error codes; reflection, health and gRPC-web work
//! on the same port.

use crate::common;

use prost::Message;
use serde_json::{Value, json};
use swrm::proto;
use tonic::Code;

fn to_json<T: serde::Serialize>(m: &T) -> Value {
    serde_json::to_value(m).unwrap()
}

#[tokio::test]
async fn flow_over_grpc_matches_rest() {
    let s = common::start().await;
    let mut admin = s.admin_client(Some(&s.owner_key)).await;
    let created = admin
        .create_device(proto::CreateDeviceRequest {
            name: "grpc-cam".into(),
            tags: vec!["edge".into()],
            ..Default::default()
        })
        .await
        .expect("CreateDevice")
        .into_inner();
    let device = created.device.clone().unwrap();
    assert_eq!(device.status, "never_seen");
    assert!(created.provisioning_token.starts_with("swrm_pt_"));

    let mut anonymous = s.device_client(None).await;
    let paired = anonymous
        .pair(proto::PairRequest {
            provisioning_token: created.provisioning_token.clone(),
            serial_number: Some("SN-9".into()),
            ..Default::default()
        })
        .await
        .expect("Pair")
        .into_inner();
    assert_eq!(paired.device_id, device.id);
    assert!(paired.api_key.starts_with("swrm_dk_"));
    let key = paired.api_key.clone();

    let mut dev = s.device_client(Some(&key)).await;
    let hb = dev
        .heartbeat(proto::HeartbeatRequest {
            firmware_version: Some("3.1.0".into()),
            uptime_seconds: Some(99),
            ..Default::default()
        })
        .await
        .expect("Heartbeat")
        .into_inner();
    assert_eq!(hb.heartbeat_interval_seconds, 30);

    // Same answers through both transports.
    let grpc_config = dev
        .get_config(proto::GetConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    let rest_config = s.get("/api/public/v1/config", Some(&key)).await;
    assert_eq!(to_json(&grpc_config), rest_config.body);
    assert_eq!(
        grpc_config.device.unwrap().serial_number.as_deref(),
        Some("SN-9")
    );

    let grpc_types = dev
        .list_sensor_types(proto::ListSensorTypesRequest {})
        .await
        .unwrap()
        .into_inner();
    let rest_types = s.get("/api/public/v1/sensor-types", None).await;
    assert_eq!(to_json(&grpc_types), rest_types.body);

    let grpc_device = admin
        .get_device(proto::GetDeviceRequest {
            id: device.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grpc_device.status, "online");
    assert_eq!(grpc_device.firmware_version.as_deref(), Some("3.1.0"));
    assert_eq!(grpc_device.uptime_seconds, Some(99));
    let rest_device = s
        .get(
            &format!("/api/v1/devices/{}", device.id),
            Some(&s.owner_key),
        )
        .await;
    assert_eq!(to_json(&grpc_device), rest_device.body);

    let grpc_list = admin
        .list_devices(proto::ListDevicesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let rest_list = s.get("/api/v1/devices", Some(&s.owner_key)).await;
    assert_eq!(to_json(&grpc_list), rest_list.body);
}

fn grpc_ok<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Result<(), tonic::Status> {
    r.map(|_| ())
}

/// One situation, tried through REST and gRPC: both must fail with the same
/// code and message.
async fn same_error(
    s: &common::TestServer,
    rest: common::Answer,
    grpc: Result<(), tonic::Status>,
    expected: &str,
) {
    let status = grpc.expect_err("gRPC call should fail");
    assert_eq!(rest.error_code(), expected, "REST: {}", rest.body);
    assert_eq!(
        swrm::rest::code_name(status.code()),
        expected,
        "gRPC: {status:?}"
    );
    assert_eq!(
        rest.body["error"]["message"],
        status.message(),
        "same message"
    );
    assert!(
        status
            .metadata()
            .get(swrm::error::HTTP_STATUS_HINT)
            .is_none(),
        "internal hints do not leak to gRPC clients"
    );
    let _ = s;
}

#[tokio::test]
async fn errors_match_between_rest_and_grpc() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    let owner = s.owner_key.clone();
    let theirs = s.other_org("other").await;
    let (_, used_token) = s.create_device("used").await;
    s.post(
        "/api/public/v1/pair",
        None,
        json!({"provisioning_token": used_token}),
    )
    .await;

    // No key.
    let rest = s.post("/api/public/v1/heartbeat", None, json!({})).await;
    let grpc = grpc_ok(
        s.device_client(None)
            .await
            .heartbeat(proto::HeartbeatRequest::default())
            .await,
    );
    same_error(&s, rest, grpc, "unauthenticated").await;

    // Malformed key.
    let rest = s
        .post("/api/public/v1/heartbeat", Some("swrm_dk_x"), json!({}))
        .await;
    let grpc = grpc_ok(
        s.device_client(Some("swrm_dk_x"))
            .await
            .heartbeat(proto::HeartbeatRequest::default())
            .await,
    );
    same_error(&s, rest, grpc, "unauthenticated").await;

    // Org key on a device route.
    let rest = s.heartbeat(&owner).await;
    let grpc = grpc_ok(
        s.device_client(Some(&owner))
            .await
            .heartbeat(proto::HeartbeatRequest::default())
            .await,
    );
    same_error(&s, rest, grpc, "permission_denied").await;

    // Device key on an admin route.
    let rest = s.get(&format!("/api/v1/devices/{id}"), Some(&key)).await;
    let grpc = grpc_ok(
        s.admin_client(Some(&key))
            .await
            .get_device(proto::GetDeviceRequest { id: id.clone() })
            .await,
    );
    same_error(&s, rest, grpc, "permission_denied").await;

    // Another organization's device.
    let rest = s.get(&format!("/api/v1/devices/{id}"), Some(&theirs)).await;
    let grpc = grpc_ok(
        s.admin_client(Some(&theirs))
            .await
            .get_device(proto::GetDeviceRequest { id: id.clone() })
            .await,
    );
    same_error(&s, rest, grpc, "not_found").await;

    // Used provisioning token.
    let rest = s
        .post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": used_token}),
        )
        .await;
    let grpc = grpc_ok(
        s.device_client(None)
            .await
            .pair(proto::PairRequest {
                provisioning_token: used_token.clone(),
                ..Default::default()
            })
            .await,
    );
    same_error(&s, rest, grpc, "unauthenticated").await;

    // Invalid argument.
    let rest = s
        .post("/api/v1/devices", Some(&owner), json!({"name": "  "}))
        .await;
    let grpc = grpc_ok(
        s.admin_client(Some(&owner))
            .await
            .create_device(proto::CreateDeviceRequest {
                name: "  ".into(),
                ..Default::default()
            })
            .await,
    );
    same_error(&s, rest, grpc, "invalid_argument").await;

    // A rule the core checks (a serial pattern must compile).
    let rest = s
        .post(
            "/api/v1/enrollment-codes",
            Some(&s.owner_key),
            json!({"name": "line 1", "serial_pattern": "SN-("}),
        )
        .await;
    let grpc = grpc_ok(
        s.admin_client(Some(&s.owner_key))
            .await
            .create_enrollment_code(proto::CreateEnrollmentCodeRequest {
                name: "line 1".into(),
                serial_pattern: Some("SN-(".into()),
                ..Default::default()
            })
            .await,
    );
    same_error(&s, rest, grpc, "invalid_argument").await;
}

#[tokio::test]
async fn reflection_lists_the_services_and_health_serves() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let s = common::start().await;
    let mut client = ServerReflectionClient::new(s.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let response = responses.message().await.unwrap().expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "swrm.v1.DeviceService",
        "swrm.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {names:?}"
        );
    }

    let mut health = HealthClient::new(s.channel().await);
    let status = health
        .check(HealthCheckRequest {
            service: "swrm.v1.DeviceService".into(),
        })
        .await
        .expect("health answers")
        .into_inner();
    assert_eq!(status.status, ServingStatus::Serving as i32);
}

/// A gRPC-web frame: flag byte, big-endian length, payload.
fn grpc_web_frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a gRPC-web response body into (data frames, trailer text).
fn parse_grpc_web(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let mut data = Vec::new();
    let mut trailers = String::new();
    while body.len() >= 5 {
        let flag = body[0];
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let payload = &body[5..5 + len];
        if flag & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(payload));
        } else {
            data.push(payload.to_vec());
        }
        body = &body[5 + len..];
    }
    (data, trailers)
}

#[tokio::test]
async fn grpc_web_over_http1_works() {
    let s = common::start().await;
    let (_, key) = s.paired_device("web").await;
    let http1 = reqwest::Client::builder().http1_only().build().unwrap();

    let body = grpc_web_frame(
        0,
        &proto::HeartbeatRequest {
            uptime_seconds: Some(5),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let res = http1
        .post(format!("{}/swrm.v1.DeviceService/Heartbeat", s.base))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("authorization", format!("Bearer {key}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_11);
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web")
    );
    let bytes = res.bytes().await.unwrap();
    let (data, trailers) = parse_grpc_web(&bytes);
    assert!(trailers.contains("grpc-status:0"), "trailers: {trailers:?}");
    let reply = proto::HeartbeatResponse::decode(data[0].as_slice()).unwrap();
    assert_eq!(reply.heartbeat_interval_seconds, 30);

    // Errors arrive as gRPC-web status too.
    let res = http1
        .post(format!("{}/swrm.v1.DeviceService/Heartbeat", s.base))
        .header("content-type", "application/grpc-web+proto")
        .body(grpc_web_frame(0, &[]))
        .send()
        .await
        .unwrap();
    let header_status = res
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = res.bytes().await.unwrap();
    let (_, trailers) = parse_grpc_web(&bytes);
    let code = header_status.unwrap_or_else(|| {
        trailers
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("grpc-status:")
                    .map(|v| v.trim().to_owned())
            })
            .expect("grpc-status somewhere")
    });
    assert_eq!(code, (Code::Unauthenticated as i32).to_string());
}
