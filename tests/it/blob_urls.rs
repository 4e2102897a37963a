//! Blobs behind captures: signed URLs (expiry, tampering, Range, ETag),
//! deleting a capture deletes its image, COCO export, and the orphan sweep
//! after a crash between the blob write and the row commit. On the
//! filesystem store, or on S3 when `SWRM_TEST_S3_ENDPOINT` is set.

use reqwest::{StatusCode, header};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use crate::{
    captures::{download, stored_blobs},
    common::{
        self, TestServer,
        images::{jpeg, sha256_hex},
    },
    crash::start_binary,
};

/// Uploads an image as `key`; answers the admin view (with `image_url`).
async fn uploaded(s: &TestServer, key: &str, image: Vec<u8>, meta: Value) -> Value {
    let a = s.upload_capture(key, image, Some(&meta.to_string())).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let id = a.body["capture_id"].as_str().unwrap();
    let got = s
        .get(&format!("/api/v1/captures/{id}"), Some(&s.owner_key))
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    got.body
}

async fn status_of(s: &TestServer, url: &str) -> StatusCode {
    s.http.get(url).send().await.unwrap().status()
}

#[tokio::test]
async fn signed_urls_expire_and_refuse_tampering() {
    let s = common::start_with(|c| c.blobs.signed_url_seconds = 2).await;
    let (_, key) = s.paired_device("cam").await;
    let image = jpeg(100, 100, 5000, 1);
    let c = uploaded(&s, &key, image.clone(), json!({})).await;
    let url = c["image_url"].as_str().unwrap().to_owned();
    assert_eq!(download(&s, &url).await, image);

    // Any altered character of the signature, or another object's key
    // under this signature, is refused.
    let signature_at = url.rfind("ignature=").expect("a signature parameter") + 9;
    let mut tampered = url.clone().into_bytes();
    tampered[signature_at] = if tampered[signature_at] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(status_of(&s, &tampered).await, StatusCode::FORBIDDEN);
    let other = uploaded(&s, &key, jpeg(100, 100, 5000, 2), json!({})).await;
    let other_url = other["image_url"].as_str().unwrap();
    let (other_path, _) = other_url.split_once('?').unwrap();
    let (_, query) = url.split_once('?').unwrap();
    let swapped = format!("{other_path}?{query}");
    assert_eq!(status_of(&s, &swapped).await, StatusCode::FORBIDDEN);
    let (unsigned, _) = url.split_once('?').unwrap();
    assert_eq!(status_of(&s, unsigned).await, StatusCode::FORBIDDEN);

    // Past its lifetime the URL is refused; a new one works again.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(status_of(&s, &url).await, StatusCode::FORBIDDEN);
    let fresh = s
        .get(
            &format!("/api/v1/captures/{}", c["capture_id"].as_str().unwrap()),
            Some(&s.owner_key),
        )
        .await;
    assert_eq!(
        download(&s, fresh.body["image_url"].as_str().unwrap()).await,
        image
    );
}

#[tokio::test]
async fn swrm_signed_urls_follow_the_server_clock() {
    if common::on_s3() {
        return; // S3 checks its own URLs against its own clock.
    }
    let s = common::start_with_clock(|_| {}).await;
    let (_, key) = s.paired_device("cam").await;
    let c = uploaded(&s, &key, jpeg(10, 10, 500, 1), json!({})).await;
    let url = c["image_url"].as_str().unwrap();
    let expires_at = s.clock.now() + chrono::Duration::seconds(300);
    assert!(
        url.contains(&format!("expires={}", expires_at.timestamp())),
        "{url}"
    );
    s.clock.advance(Duration::from_secs(299));
    assert_eq!(status_of(&s, url).await, StatusCode::OK);
    s.clock.advance(Duration::from_secs(2));
    let res = s.http.get(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "permission_denied");
}

#[tokio::test]
async fn range_requests_return_the_right_bytes() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam").await;
    let image = jpeg(100, 100, 50_000, 5);
    let c = uploaded(&s, &key, image.clone(), json!({})).await;
    let url = c["image_url"].as_str().unwrap();
    let get = |range: &'static str| s.http.get(url).header(header::RANGE, range).send();

    let res = get("bytes=100-199").await.unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        res.headers()[header::CONTENT_RANGE],
        format!("bytes 100-199/{}", image.len()).as_str()
    );
    assert_eq!(res.bytes().await.unwrap(), image[100..200]);

    let res = get("bytes=-10").await.unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.bytes().await.unwrap(), image[image.len() - 10..]);

    let res = get("bytes=49990-").await.unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.bytes().await.unwrap(), image[49_990..]);

    let res = get("bytes=60000-60010").await.unwrap();
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    let whole = s.http.get(url).send().await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()[header::CONTENT_TYPE], "image/jpeg");
    let etag = whole.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"'), "{etag}");
    assert_eq!(whole.bytes().await.unwrap(), image);
    if common::on_s3() {
        return; // Conditional GETs are the S3 server's (s3s-fs ignores them).
    }
    let res = s
        .http
        .get(url)
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn deleting_a_capture_deletes_its_blob() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam").await;
    let keep = uploaded(&s, &key, jpeg(10, 10, 800, 1), json!({})).await;
    let gone = uploaded(&s, &key, jpeg(10, 10, 900, 2), json!({})).await;
    let url = gone["image_url"].as_str().unwrap();
    let id = gone["capture_id"].as_str().unwrap();
    assert_eq!(status_of(&s, url).await, StatusCode::OK);

    let other = s.other_org("other").await;
    let a = s
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/captures/{id}"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(status_of(&s, url).await, StatusCode::OK);

    let a = s
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/captures/{id}"),
            Some(&s.owner_key),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    assert_eq!(status_of(&s, url).await, StatusCode::NOT_FOUND);
    let a = s
        .get(&format!("/api/v1/captures/{id}"), Some(&s.owner_key))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = s
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/captures/{id}"),
            Some(&s.owner_key),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // The other capture is untouched.
    assert_eq!(
        status_of(&s, keep["image_url"].as_str().unwrap()).await,
        StatusCode::OK
    );
    if !common::on_s3() {
        assert_eq!(stored_blobs(&s), 1);
    }
    // Device keys cannot delete.
    let a = s
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/captures/{}", keep["capture_id"].as_str().unwrap()),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

/// Checks `dataset` against the COCO object-detection format's rules.
fn assert_valid_coco(dataset: &Value) {
    for field in ["info", "licenses", "images", "annotations", "categories"] {
        assert!(!dataset[field].is_null(), "COCO needs {field}: {dataset}");
    }
    let info = &dataset["info"];
    assert!(info["year"].as_u64().unwrap() >= 2026);
    assert!(
        chrono::NaiveDateTime::parse_from_str(
            info["date_created"].as_str().unwrap(),
            "%Y-%m-%d %H:%M:%S"
        )
        .is_ok()
    );
    let licenses: HashSet<u64> = dataset["licenses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert!(l["name"].is_string());
            l["id"].as_u64().unwrap()
        })
        .collect();
    let mut images = HashMap::new();
    for image in dataset["images"].as_array().unwrap() {
        let id = image["id"].as_u64().expect("integer image id");
        let size = (
            image["width"].as_f64().unwrap(),
            image["height"].as_f64().unwrap(),
        );
        assert!(size.0 > 0.0 && size.1 > 0.0);
        assert!(image["file_name"].as_str().unwrap().len() > 4);
        assert!(licenses.contains(&image["license"].as_u64().unwrap()));
        assert!(
            chrono::NaiveDateTime::parse_from_str(
                image["date_captured"].as_str().unwrap(),
                "%Y-%m-%d %H:%M:%S"
            )
            .is_ok()
        );
        assert!(images.insert(id, size).is_none(), "duplicate image id {id}");
    }
    let categories: HashSet<u64> = dataset["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert!(!c["name"].as_str().unwrap().is_empty());
            assert!(c["supercategory"].is_string());
            c["id"].as_u64().expect("integer category id")
        })
        .collect();
    assert_eq!(
        categories.len(),
        dataset["categories"].as_array().unwrap().len()
    );
    let mut ids = HashSet::new();
    for a in dataset["annotations"].as_array().unwrap() {
        assert!(ids.insert(a["id"].as_u64().expect("integer annotation id")));
        let (w_img, h_img) = images[&a["image_id"].as_u64().unwrap()];
        assert!(categories.contains(&a["category_id"].as_u64().unwrap()));
        let bbox: Vec<f64> = a["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let [x, y, w, h] = bbox[..] else {
            panic!("bbox is [x, y, width, height]: {a}")
        };
        assert!(x >= 0.0 && y >= 0.0 && w > 0.0 && h > 0.0);
        assert!(x + w <= w_img && y + h <= h_img, "{a}");
        assert_eq!(a["area"].as_f64().unwrap(), w * h);
        assert_eq!(a["iscrowd"], 0);
        assert!(a["segmentation"].is_array());
    }
}

#[tokio::test]
async fn coco_export_follows_the_coco_rules() {
    let s = common::start().await;
    let (cam1, key1) = s.paired_device("cam-1").await;
    let (_, key2) = s.paired_device("cam-2").await;
    let images = [jpeg(640, 480, 3000, 1), jpeg(320, 240, 3000, 2)];
    let first = uploaded(
        &s,
        &key1,
        images[0].clone(),
        json!({"detections": [
            {"label": "person", "confidence": 0.9, "bbox": [10, 20, 110, 220]},
            {"label": "car", "confidence": 0.2, "bbox": [0, 0, 640, 480]}]}),
    )
    .await;
    uploaded(
        &s,
        &key2,
        images[1].clone(),
        json!({"detections": [{"label": "person", "confidence": 0.8, "bbox": [1, 1, 2, 2]}]}),
    )
    .await;
    uploaded(&s, &key1, jpeg(50, 50, 900, 3), json!({})).await;

    let a = s
        .get("/api/v1/captures/export/coco", Some(&s.owner_key))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let d = &a.body;
    assert_valid_coco(d);
    assert_eq!(d["images"].as_array().unwrap().len(), 3);
    assert_eq!(d["annotations"].as_array().unwrap().len(), 3);
    let names: Vec<&str> = d["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["car", "person"]);
    // The person box [10, 20, 110, 220] is [10, 20, 100, 200] in COCO.
    let image = d["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["capture_id"] == first["capture_id"])
        .unwrap();
    assert_eq!(
        image["file_name"],
        format!("{}.jpg", first["capture_id"].as_str().unwrap()).as_str()
    );
    assert_eq!(
        (image["width"].as_u64(), image["height"].as_u64()),
        (Some(640), Some(480))
    );
    let person = d["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["image_id"] == image["id"] && a["score"] == 0.9)
        .unwrap();
    assert_eq!(person["bbox"], json!([10.0, 20.0, 100.0, 200.0]));
    assert_eq!(person["area"], 20000.0);
    // Image URLs download the image.
    let bytes = download(&s, image["coco_url"].as_str().unwrap()).await;
    assert_eq!(sha256_hex(&bytes), sha256_hex(&images[0]));

    // A selection: one device, confident detections only.
    let a = s
        .get(
            &format!("/api/v1/captures/export/coco?device_id={cam1}&min_confidence=0.5"),
            Some(&s.owner_key),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_valid_coco(&a.body);
    assert_eq!(a.body["images"].as_array().unwrap().len(), 1);
    assert_eq!(a.body["annotations"].as_array().unwrap().len(), 1);
    assert_eq!(a.body["categories"][0]["name"], "person");

    // Pages: each is a valid dataset on its own.
    let mut token = String::new();
    let mut seen = HashSet::new();
    loop {
        let a = s
            .get(
                &format!("/api/v1/captures/export/coco?page_size=2&page_token={token}"),
                Some(&s.owner_key),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_valid_coco(&a.body);
        for i in a.body["images"].as_array().unwrap() {
            assert!(seen.insert(i["capture_id"].as_str().unwrap().to_owned()));
        }
        token = a.body["next_page_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 3);

    // Another organization exports nothing of ours.
    let other = s.other_org("other").await;
    let a = s.get("/api/v1/captures/export/coco", Some(&other)).await;
    assert_eq!(a.body["images"], json!([]));
    assert_valid_coco(&a.body);
}

/// The database's `(pending blob keys, capture rows)`.
async fn pending_and_rows(url: &str) -> (Vec<String>, i64) {
    let db = Database::connect(url).await.unwrap();
    let backend = db.get_database_backend();
    let pending = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT blob_key FROM pending_blobs".to_owned(),
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect();
    let rows = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT COUNT(*) FROM captures".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    db.close().await.ok();
    (pending, rows)
}

/// Whether the object `key` exists in the store the test runs on.
async fn blob_exists(dir: &std::path::Path, blob_env: &[(&str, String)], key: &str) -> bool {
    if !common::on_s3() {
        return dir.join("blobs").join(key).is_file();
    }
    let mut args = swrm::blobs::BlobArgs::default();
    for (name, value) in blob_env {
        match *name {
            "SWRM_S3_ENDPOINT" => args.s3_endpoint = Some(value.clone()),
            "SWRM_S3_BUCKET" => args.s3_bucket = value.clone(),
            "SWRM_S3_ACCESS_KEY" => args.s3_access_key = Some(value.clone()),
            "SWRM_S3_SECRET_KEY" => args.s3_secret_key = Some(value.clone()),
            _ => {}
        }
    }
    args.backend = swrm::blobs::BlobBackend::S3;
    let store = swrm::blobs::open(&args, dir).await.unwrap();
    let now = chrono::Utc::now();
    let url = store
        .signed_url(key, now + chrono::Duration::seconds(60), now)
        .await
        .unwrap()
        .resolve("");
    let status = reqwest::get(&url).await.unwrap().status();
    assert!(
        status == StatusCode::OK || status == StatusCode::NOT_FOUND,
        "{status}"
    );
    status == StatusCode::OK
}

/// The blob settings a test server process gets from the environment.
fn blob_env() -> Vec<(&'static str, String)> {
    if !common::on_s3() {
        return Vec::new();
    }
    let var = |n: &str| std::env::var(n).unwrap_or_default();
    vec![
        ("SWRM_BLOB_STORE", "s3".into()),
        ("SWRM_S3_ENDPOINT", var("SWRM_TEST_S3_ENDPOINT")),
        ("SWRM_S3_ACCESS_KEY", var("SWRM_TEST_S3_ACCESS_KEY")),
        ("SWRM_S3_SECRET_KEY", var("SWRM_TEST_S3_SECRET_KEY")),
        ("SWRM_S3_BUCKET", common::test_bucket()),
    ]
}

/// Uploads a 64×64 JPEG (its bytes chosen by `seed`) to the server at `base`.
async fn send_capture(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    seed: u64,
) -> reqwest::Result<reqwest::Response> {
    let image = reqwest::multipart::Part::bytes(jpeg(64, 64, 20_000, seed)).file_name("frame.jpg");
    http.post(format!("{base}/api/public/v1/captures"))
        .bearer_auth(key)
        .multipart(reqwest::multipart::Form::new().part("image", image))
        .send()
        .await
}

/// A crash after the image is stored and before its row commits (the
/// `capture-before-row` failpoint aborts the process there) leaves a blob
/// no row names, never a row without its blob; after the grace period the
/// sweep removes it.
#[tokio::test]
async fn a_crash_between_blob_and_row_leaves_an_orphan_the_sweep_removes() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: failpoints exist in debug builds only");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let database_url = common::fresh_postgres_url().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let blob_env = blob_env();
    let mut env = blob_env.clone();
    env.push(("SWRM_FAILPOINT", "capture-before-row".into()));
    let (mut server, owner) = start_binary(dir.path(), port, database_url.as_deref(), &env).await;
    let owner = owner.expect("the owner key on the first start");
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{base}/api/v1/devices"))
        .bearer_auth(&owner)
        .json(&json!({"name": "cam"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["provisioning_token"].as_str().unwrap();
    let paired: Value = http
        .post(format!("{base}/api/public/v1/pair"))
        .json(&json!({"provisioning_token": token}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = paired["api_key"].as_str().unwrap();
    let cut = send_capture(&http, &base, key, 1).await;
    assert!(cut.is_err(), "the failpoint ends the process mid-request");
    let exit = server.child.wait().await.unwrap();
    assert!(!exit.success());

    let db_url = database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("swrm.db").display()));
    let (pending, rows) = pending_and_rows(&db_url).await;
    assert_eq!(rows, 0, "no row was committed");
    assert_eq!(pending.len(), 1, "the blob is recorded as pending");
    let orphan = &pending[0];
    assert!(
        blob_exists(dir.path(), &blob_env, orphan).await,
        "the blob was stored before the crash"
    );

    // Restarted with a short grace period, the sweep removes it.
    let mut env = blob_env.clone();
    env.push(("SWRM_ORPHAN_GRACE_SECONDS", "1".into()));
    env.push(("SWRM_SWEEP_INTERVAL_SECONDS", "1".into()));
    let (mut server, _) = start_binary(dir.path(), port, database_url.as_deref(), &env).await;
    let started = Instant::now();
    loop {
        let (pending, _) = pending_and_rows(&db_url).await;
        if pending.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the sweep did not run"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!blob_exists(dir.path(), &blob_env, orphan).await);
    // And uploads work again, each with its blob.
    let res = send_capture(&http, &base, key, 2).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let (pending, rows) = pending_and_rows(&db_url).await;
    assert_eq!((pending.len(), rows), (0, 1));
    server.child.start_kill().unwrap();
}
