//! Captures: uploads over REST multipart and the gRPC client stream, their
//! 4xx answers, idempotent `capture_id`s, sensor snapshots, labels, and the
//! admin list / get / delete. Runs on the filesystem store, or on S3 when
//! `SWRM_TEST_S3_ENDPOINT` is set (see `common`).

use reqwest::StatusCode;
use serde_json::{Value, json};
use swrm::proto;

use crate::common::{
    self, TestServer,
    images::{jpeg, png, sha256_hex},
};

/// The client from the public docs (DEVICE_API.md), verbatim.
const SNIPPET: &str = r#"import os, time, requests
API = "https://your-swrm-host"
TOKEN = os.environ["SWRM_TOKEN"]  # swrm_dk_...
H = {"Authorization": f"Bearer {TOKEN}"}
requests.post(f"{API}/api/public/v1/heartbeat", headers=H,
              json={"firmware_version": "1.0.0", "uptime_seconds": 42})
requests.post(f"{API}/api/public/v1/sensors", headers=H,
              json={"readings": [{"sensor_type": "temperature", "value": 23.4, "unit": "C"}]})
with open("frame.jpg", "rb") as f:
    requests.post(f"{API}/api/public/v1/captures", headers=H,
                  files={"image": ("frame.jpg", f, "image/jpeg")},
                  data={"meta": '{"detections":[{"label":"person","confidence":0.92,"bbox":[10,20,120,240]}]}'})
"#;

const PERSON: &str =
    r#"{"detections":[{"label":"person","confidence":0.92,"bbox":[10,20,120,240]}]}"#;

/// The bytes behind a signed URL, asserting 200.
pub async fn download(s: &TestServer, url: &str) -> Vec<u8> {
    let res = s.http.get(url).send().await.expect("download");
    assert_eq!(res.status(), StatusCode::OK, "GET {url}");
    res.bytes().await.unwrap().to_vec()
}

/// Files in the filesystem blob store (not counting its signing key).
pub fn stored_blobs(s: &TestServer) -> usize {
    fn walk(dir: &std::path::Path, n: &mut usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, n);
            } else if !e.file_name().to_string_lossy().starts_with('.') {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(&s.data_dir().join("blobs"), &mut n);
    n
}

fn python_with_requests() -> Option<String> {
    let candidates = [
        std::env::var("SWRM_TEST_PYTHON").ok(),
        Some("python3".to_owned()),
    ];
    candidates.into_iter().flatten().find(|py| {
        std::process::Command::new(py)
            .args(["-c", "import requests"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[tokio::test]
async fn the_public_python_snippet_uploads_and_the_image_round_trips() {
    let s = common::start().await;
    let (device_id, key) = s.paired_device("cam-1").await;
    let dir = tempfile::tempdir().unwrap();
    let image = jpeg(640, 480, 150_000, 1);
    std::fs::write(dir.path().join("frame.jpg"), &image).unwrap();
    let snippet = SNIPPET.replace(
        "API = \"https://your-swrm-host\"",
        &format!("API = {:?}", s.base),
    );
    let Some(python) = python_with_requests() else {
        // CI sets SWRM_TEST_PYTHON, so there this cannot pass by skipping.
        assert!(
            std::env::var("SWRM_TEST_PYTHON").is_err(),
            "SWRM_TEST_PYTHON has no `requests`"
        );
        eprintln!("skipped: no python3 with `requests` (set SWRM_TEST_PYTHON)");
        return;
    };
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg(&snippet)
        .env("SWRM_TOKEN", &key)
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let list = s.get("/api/v1/captures", Some(&s.owner_key)).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let captures = list.body["captures"].as_array().unwrap();
    assert_eq!(captures.len(), 1, "{}", list.body);
    let c = &captures[0];
    assert_eq!(c["device_id"], device_id.as_str());
    assert_eq!(c["image"]["content_type"], "image/jpeg");
    assert_eq!(c["image"]["size_bytes"], image.len());
    assert_eq!(c["image"]["width"], 640);
    assert_eq!(c["image"]["height"], 480);
    assert_eq!(c["image"]["sha256"], sha256_hex(&image));
    let d = &c["detections"][0];
    assert_eq!(d["label"], "person");
    assert_eq!(d["confidence"], 0.92);
    assert_eq!(d["bbox"], json!([10.0, 20.0, 120.0, 240.0]));
    assert_eq!(d["source"], "device");
    // The snippet's reading, sent just before, is in the snapshot.
    let snapshot = c["sensor_snapshot"].as_array().unwrap();
    assert_eq!(snapshot.len(), 1, "{}", c);
    assert_eq!(snapshot[0]["sensor_type"], "temperature");
    assert_eq!(snapshot[0]["value"], 23.4);
    assert_eq!(snapshot[0]["unit"], "C");

    let url = c["image_url"].as_str().expect("a signed image_url");
    let bytes = download(&s, url).await;
    assert_eq!(sha256_hex(&bytes), sha256_hex(&image));
    assert_eq!(bytes, image);
}

#[tokio::test]
async fn rest_upload_answers_the_documented_shape() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam-1").await;
    let image = png(300, 200);
    let ts = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let meta = json!({
        "detections": [{"label": "car", "confidence": 0.5, "bbox": [0, 0, 300, 200]}],
        "ts": ts,
        "model": {"name": "yolov8n", "version": "1.2"},
        "tags": ["gate", "night"],
        "unknown_future_field": 1
    });
    let a = s
        .upload_capture(&key, image.clone(), Some(&meta.to_string()))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let c = &a.body;
    assert!(uuid::Uuid::parse_str(c["capture_id"].as_str().unwrap()).is_ok());
    assert!(chrono::DateTime::parse_from_rfc3339(c["received_at"].as_str().unwrap()).is_ok());
    assert_eq!(c["image"]["content_type"], "image/png");
    assert_eq!(c["image"]["width"], 300);
    assert_eq!(c["image"]["height"], 200);
    assert_eq!(c["image"]["size_bytes"], image.len());
    assert_eq!(c["image"]["sha256"], sha256_hex(&image));
    assert_eq!(c["detections"][0]["model"]["name"], "yolov8n");
    assert_eq!(c["detections"][0]["model"]["version"], "1.2");
    assert_eq!(c["tags"], json!(["gate", "night"]));
    assert_eq!(c["sensor_snapshot"], json!([]));
    // Device answers carry no admin fields.
    assert_eq!(c["device_id"], "");
    assert_eq!(c["image_url"], Value::Null);
    // The bbox may touch the far edges (x_max == width, y_max == height).
    let got = s
        .get(
            &format!("/api/v1/captures/{}", c["capture_id"].as_str().unwrap()),
            Some(&s.owner_key),
        )
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["detections"], c["detections"]);
    assert_eq!(got.body["ts"], c["ts"]);
}

#[tokio::test]
async fn grpc_upload_streams_chunks_and_the_bytes_round_trip() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam-1").await;
    // Over 8 MiB: a multipart upload on S3, several chunks on the stream.
    let image = jpeg(1920, 1080, 9 * 1024 * 1024 + 123, 7);
    let capture_id = uuid::Uuid::now_v7().to_string();
    let mut chunks = vec![proto::UploadCaptureChunk {
        part: Some(proto::upload_capture_chunk::Part::Meta(
            proto::CaptureMeta {
                detections: vec![proto::Detection {
                    label: "truck".into(),
                    confidence: Some(0.7),
                    bbox: vec![100.0, 100.0, 1920.0, 1080.0],
                    ..Default::default()
                }],
                capture_id: Some(capture_id.clone()),
                ..Default::default()
            },
        )),
    }];
    for piece in image.chunks(1024 * 1024) {
        chunks.push(proto::UploadCaptureChunk {
            part: Some(proto::upload_capture_chunk::Part::Data(piece.to_vec())),
        });
    }
    let mut client = s.device_client(Some(&key)).await;
    let capture = client
        .upload_capture(tokio_stream::iter(chunks.clone()))
        .await
        .expect("UploadCapture")
        .into_inner();
    assert_eq!(capture.capture_id, capture_id);
    let info = capture.image.unwrap();
    assert_eq!(info.size_bytes, image.len() as u64);
    assert_eq!((info.width, info.height), (1920, 1080));
    assert_eq!(info.sha256, sha256_hex(&image));
    assert_eq!(capture.detections[0].label, "truck");

    // The same stream again stores nothing twice.
    let again = client
        .upload_capture(tokio_stream::iter(chunks))
        .await
        .expect("a repeated UploadCapture")
        .into_inner();
    assert_eq!(again.capture_id, capture_id);
    assert_eq!(again.received_at, capture.received_at);

    let mut admin = s.admin_client(Some(&s.owner_key)).await;
    let got = admin
        .get_capture(proto::GetCaptureRequest {
            id: capture_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let bytes = download(&s, got.image_url.as_deref().unwrap()).await;
    assert_eq!(bytes.len(), image.len());
    assert_eq!(sha256_hex(&bytes), sha256_hex(&image));
    let listed = admin
        .list_captures(proto::ListCapturesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.captures.len(), 1);
    if !common::on_s3() {
        assert_eq!(stored_blobs(&s), 1);
    }
}

#[tokio::test]
async fn grpc_upload_errors_are_statuses() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam-1").await;
    let mut client = s.device_client(Some(&key)).await;
    let data = |b: Vec<u8>| proto::UploadCaptureChunk {
        part: Some(proto::upload_capture_chunk::Part::Data(b)),
    };
    let status = client
        .upload_capture(tokio_stream::iter(vec![data(b"GIF89a not ours".to_vec())]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let status = client
        .upload_capture(tokio_stream::iter(Vec::<proto::UploadCaptureChunk>::new()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("image"), "{status:?}");
    let mut unauthenticated = s.device_client(None).await;
    let status = unauthenticated
        .upload_capture(tokio_stream::iter(vec![data(jpeg(10, 10, 500, 1))]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn bad_uploads_get_the_right_4xx_and_store_nothing() {
    let s = common::start_with(|c| c.max_capture_bytes = 64 * 1024).await;
    let (_, key) = s.paired_device("cam-1").await;
    let ok = jpeg(200, 100, 4000, 3);

    let a = s
        .upload_capture(&key, b"definitely not an image, just text".to_vec(), None)
        .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", a.body);
    a.error_code();

    let a = s
        .upload_capture(&key, jpeg(200, 100, 100_000, 3), None)
        .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("65536"),
        "{}",
        a.body
    );

    for (meta, field) in [
        (
            r#"{"detections":[{"label":"a","confidence":0.5,"bbox":[0,0,10,10]},{"label":"b","confidence":0.5,"bbox":[10,20,201,50]}]}"#,
            "detections[1].bbox",
        ),
        (
            r#"{"detections":[{"label":"a","confidence":0.5,"bbox":[50,20,40,50]}]}"#,
            "detections[0].bbox",
        ),
        (
            r#"{"detections":[{"label":"a","confidence":0.5,"bbox":[0,0,10]}]}"#,
            "detections[0].bbox",
        ),
        (
            r#"{"detections":[{"label":"a","confidence":1.5,"bbox":[0,0,10,10]}]}"#,
            "detections[0].confidence",
        ),
        (
            r#"{"detections":[{"label":"  ","confidence":0.5,"bbox":[0,0,10,10]}]}"#,
            "detections[0].label",
        ),
        (
            r#"{"detections":[{"confidence":0.5,"bbox":[0,0,10,10]}]}"#,
            "detections[0].label",
        ),
        (r#"{"detections":[{"label":"a""#, "meta"),
        (r#"{"capture_id":"not-a-uuid"}"#, "capture_id"),
        (r#"{"ts":"yesterday"}"#, "ts"),
    ] {
        let a = s.upload_capture(&key, ok.clone(), Some(meta)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{meta}: {}", a.body);
        assert_eq!(a.error_code(), "invalid_argument");
        let message = a.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{meta}: {message}");
    }

    // Not multipart at all.
    let a = s
        .post("/api/public/v1/captures", Some(&key), json!({"image": "x"}))
        .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", a.body);
    // Multipart without an image part.
    let form = reqwest::multipart::Form::new().text("meta", "{}");
    let res = s
        .http
        .post(format!("{}/api/public/v1/captures", s.base))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let a = common::answer(res).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("image")
    );

    let list = s.get("/api/v1/captures", Some(&s.owner_key)).await;
    assert_eq!(list.body["captures"], json!([]));
    if !common::on_s3() {
        assert_eq!(stored_blobs(&s), 0, "a refused upload leaves no blob");
    }
    // And the store still works.
    let a = s.upload_capture(&key, ok, None).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
}

#[tokio::test]
async fn a_repeated_capture_id_stores_once_and_never_leaks_across_organizations() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam-1").await;
    let id = uuid::Uuid::now_v7().to_string();
    let meta = json!({"capture_id": id, "detections": [
        {"label": "person", "confidence": 0.9, "bbox": [1, 1, 5, 5]}]})
    .to_string();
    let first = s
        .upload_capture(&key, jpeg(64, 64, 2000, 1), Some(&meta))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["capture_id"], id.as_str());
    // A retry (even with other bytes, as a re-encoded frame would be).
    let again = s
        .upload_capture(&key, jpeg(64, 64, 2500, 2), Some(&meta))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body, first.body);
    let list = s.get("/api/v1/captures", Some(&s.owner_key)).await;
    assert_eq!(list.body["captures"].as_array().unwrap().len(), 1);
    if !common::on_s3() {
        assert_eq!(stored_blobs(&s), 1, "the retry's bytes are not kept");
    }

    // Another organization may use the same id: it gets its own capture.
    let other = s.other_org("other").await;
    let (_, other_key) = s.paired_device_as(&other, "cam-x").await;
    let theirs = s
        .upload_capture(
            &other_key,
            jpeg(32, 32, 1000, 9),
            Some(&json!({"capture_id": id}).to_string()),
        )
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED, "{}", theirs.body);
    assert_eq!(theirs.body["detections"], json!([]));
    assert_eq!(theirs.body["image"]["width"], 32);
    // Each organization sees its own.
    let mine = s
        .get(&format!("/api/v1/captures/{id}"), Some(&s.owner_key))
        .await;
    assert_eq!(mine.body["image"]["width"], 64);
    let yours = s.get(&format!("/api/v1/captures/{id}"), Some(&other)).await;
    assert_eq!(yours.body["image"]["width"], 32);

    // Another device of the same organization cannot take it over.
    let (_, key2) = s.paired_device("cam-2").await;
    let a = s
        .upload_capture(&key2, jpeg(64, 64, 2000, 1), Some(&meta))
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
}

#[tokio::test]
async fn the_snapshot_holds_each_sensors_latest_reading_within_the_window() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam-1").await;
    let now = chrono::Utc::now();
    let ago = |m: i64| (now - chrono::Duration::minutes(m)).timestamp_millis();
    let a = s
        .post(
            "/api/public/v1/sensors",
            Some(&key),
            json!({"readings": [
                {"sensor_type": "temperature", "value": 20.0, "unit": "C", "ts": ago(5)},
                {"sensor_type": "temperature", "value": 21.5, "unit": "C", "ts": ago(2)},
                {"sensor_type": "humidity", "value": 40.0, "unit": "%", "ts": ago(3)},
                {"sensor_type": "co2", "value": 600.0, "unit": "ppm", "ts": ago(30)},
            ]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let (_, other_key) = s.paired_device("cam-2").await;
    s.post(
        "/api/public/v1/sensors",
        Some(&other_key),
        json!({"readings": [{"sensor_type": "pressure", "value": 1000.0, "unit": "hPa"}]}),
    )
    .await;

    let a = s.upload_capture(&key, jpeg(64, 64, 2000, 1), None).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let snapshot: Vec<(String, f64, String)> = a.body["sensor_snapshot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(chrono::DateTime::parse_from_rfc3339(e["ts"].as_str().unwrap()).is_ok());
            (
                e["sensor_type"].as_str().unwrap().to_owned(),
                e["value"].as_f64().unwrap(),
                e["unit"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        snapshot,
        vec![
            ("humidity".to_owned(), 40.0, "%".to_owned()),
            ("temperature".to_owned(), 21.5, "C".to_owned()),
        ],
        "co2 is older than the window; pressure is another device's"
    );
}

#[tokio::test]
async fn labels_replace_and_append_with_their_provenance() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam-1").await;
    let up = s
        .upload_capture(&key, jpeg(640, 480, 3000, 1), Some(PERSON))
        .await;
    let id = up.body["capture_id"].as_str().unwrap().to_owned();

    let a = s
        .post(
            "/api/public/v1/labels",
            Some(&key),
            json!({"capture_id": id, "mode": "append", "source": "cloud",
                   "model": {"name": "yolov8x", "version": "8.1"},
                   "detections": [{"label": "dog", "confidence": 0.6, "bbox": [0, 0, 640, 480]}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["capture_id"], id.as_str());
    let d = a.body["detections"].as_array().unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0]["label"], "person");
    assert_eq!(d[0]["source"], "device");
    assert_eq!(d[1]["label"], "dog");
    assert_eq!(d[1]["source"], "cloud");
    assert_eq!(d[1]["model"], json!({"name": "yolov8x", "version": "8.1"}));
    for d in d {
        assert!(chrono::DateTime::parse_from_rfc3339(d["set_at"].as_str().unwrap()).is_ok());
    }

    // Replace is the default; the source defaults to the device.
    let a = s
        .post(
            "/api/public/v1/labels",
            Some(&key),
            json!({"capture_id": id,
                   "detections": [{"label": "cat", "confidence": 1, "bbox": [1, 2, 3, 4]}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let d = a.body["detections"].as_array().unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["label"], "cat");
    assert_eq!(d[0]["source"], "device");
    assert_eq!(d[0]["model"], Value::Null);
    let got = s
        .get(&format!("/api/v1/captures/{id}"), Some(&s.owner_key))
        .await;
    assert_eq!(got.body["detections"], a.body["detections"]);

    // A human clears them.
    let a = s
        .post(
            "/api/public/v1/labels",
            Some(&key),
            json!({"capture_id": id, "mode": "replace", "source": "human", "detections": []}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["detections"], json!([]));

    // Labels are checked against the stored image's size.
    let a = s
        .post(
            "/api/public/v1/labels",
            Some(&key),
            json!({"capture_id": id, "detections": [{"label": "x", "confidence": 0.5, "bbox": [0, 0, 641, 10]}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("detections[0].bbox")
    );
    let a = s
        .post(
            "/api/public/v1/labels",
            Some(&key),
            json!({"capture_id": id, "mode": "merge", "detections": []}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);

    // Another device's, another organization's, or no capture: 404.
    let (_, key2) = s.paired_device("cam-2").await;
    let other = s.other_org("other").await;
    let (_, foreign_key) = s.paired_device_as(&other, "cam-x").await;
    for (k, capture) in [
        (&key2, id.clone()),
        (&foreign_key, id.clone()),
        (&key, uuid::Uuid::now_v7().to_string()),
    ] {
        let a = s
            .post(
                "/api/public/v1/labels",
                Some(k),
                json!({"capture_id": capture, "detections": []}),
            )
            .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
        assert_eq!(a.error_code(), "not_found");
    }

    // gRPC SetLabels is the same call.
    let mut client = s.device_client(Some(&key)).await;
    let out = client
        .set_labels(proto::SetLabelsRequest {
            capture_id: id.clone(),
            detections: vec![proto::Detection {
                label: "bird".into(),
                confidence: Some(0.3),
                bbox: vec![5.0, 5.0, 6.0, 6.0],
                ..Default::default()
            }],
            mode: Some("append".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.detections.len(), 1);
    assert_eq!(out.detections[0].source, "device");
    let mut foreign = s.device_client(Some(&foreign_key)).await;
    let status = foreign
        .set_labels(proto::SetLabelsRequest {
            capture_id: id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn admins_list_with_filters_and_pages_and_never_see_foreign_captures() {
    let s = common::start().await;
    let (cam1, key1) = s.paired_device("cam-1").await;
    let (_, key2) = s.paired_device("cam-2").await;
    let now = chrono::Utc::now();
    let at = |m: i64| (now - chrono::Duration::minutes(m)).to_rfc3339();
    let mut ids = Vec::new();
    for (key, label, confidence, minutes) in [
        (&key1, "person", 0.9, 40),
        (&key1, "car", 0.4, 30),
        (&key2, "person", 0.3, 20),
        (&key1, "person", 0.6, 10),
    ] {
        let meta = json!({"ts": at(minutes), "detections": [
            {"label": label, "confidence": confidence, "bbox": [0, 0, 8, 8]}]});
        let a = s
            .upload_capture(
                key,
                jpeg(16, 16, 600, minutes as u64),
                Some(&meta.to_string()),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        ids.push(a.body["capture_id"].as_str().unwrap().to_owned());
    }
    let owner = Some(s.owner_key.as_str());
    let listed = |a: &common::Answer| -> Vec<String> {
        a.body["captures"]
            .as_array()
            .unwrap_or_else(|| panic!("{}", a.body))
            .iter()
            .map(|c| c["capture_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let pick = |ix: &[usize]| ix.iter().map(|i| ids[*i].clone()).collect::<Vec<_>>();
    // Newest first (by when each was taken).
    let all = s.get("/api/v1/captures", owner).await;
    assert_eq!(listed(&all), pick(&[3, 2, 1, 0]));
    let s = &s;
    let q = |query: String| async move { s.get(&format!("/api/v1/captures?{query}"), owner).await };
    assert_eq!(
        listed(&q(format!("device_id={cam1}")).await),
        pick(&[3, 1, 0])
    );
    assert_eq!(listed(&q("label=person".into()).await), pick(&[3, 2, 0]));
    assert_eq!(
        listed(&q("label=person&min_confidence=0.5".into()).await),
        pick(&[3, 0])
    );
    assert_eq!(
        listed(&q("min_confidence=0.35".into()).await),
        pick(&[3, 1, 0])
    );
    let from = urlencode(&at(35));
    let to = urlencode(&at(15));
    assert_eq!(
        listed(&q(format!("from={from}&to={to}")).await),
        pick(&[2, 1])
    );
    // Pages of one.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let a = q(format!("page_size=1&page_token={token}")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        seen.extend(listed(&a));
        token = a.body["next_page_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, listed(&all));
    for bad in [
        "min_confidence=2",
        "from=yesterday",
        "device_id=nope",
        "page_size=501",
    ] {
        let a = q(bad.into()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {}", a.body);
    }

    // Another organization sees none of them, and a foreign id is 404.
    let other = s.other_org("other").await;
    let theirs = s.get("/api/v1/captures", Some(&other)).await;
    assert_eq!(theirs.body["captures"], json!([]));
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let a = s
            .call(
                method,
                &format!("/api/v1/captures/{}", ids[0]),
                Some(&other),
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    }
    // Devices are not admins.
    let a = s.get("/api/v1/captures", Some(&key1)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // Still there for its owner.
    let a = s.get(&format!("/api/v1/captures/{}", ids[0]), owner).await;
    assert_eq!(a.status, StatusCode::OK);
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn uploads_need_a_device_key() {
    let s = common::start().await;
    let a = s
        .upload_capture("swrm_dk_nope", jpeg(8, 8, 300, 1), None)
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = s
        .upload_capture(&s.owner_key, jpeg(8, 8, 300, 1), None)
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

/// Many concurrent uploads from many devices all land, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_all_land() {
    let s = std::sync::Arc::new(common::start().await);
    let mut keys = Vec::new();
    for i in 0..8 {
        keys.push(s.paired_device(&format!("cam-{i}")).await.1);
    }
    let mut uploads = tokio::task::JoinSet::new();
    for (i, key) in keys.iter().enumerate() {
        for j in 0..4 {
            let s = s.clone();
            let key = key.clone();
            uploads.spawn(async move {
                let image = jpeg(320, 240, 20_000 + j * 10, (i * 10 + j) as u64);
                let a = s.upload_capture(&key, image.clone(), Some(PERSON)).await;
                assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
                assert_eq!(a.body["image"]["sha256"], sha256_hex(&image));
            });
        }
    }
    while let Some(done) = uploads.join_next().await {
        done.unwrap();
    }
    let list = s
        .get("/api/v1/captures?page_size=500", Some(&s.owner_key))
        .await;
    assert_eq!(list.body["captures"].as_array().unwrap().len(), 32);
}
