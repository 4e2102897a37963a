//! The README quickstart, as a new user runs it: create a device, pair it with
//! `examples/pair.sh`, heartbeat, config, sensor types, and see it online.

use crate::common;

use reqwest::{StatusCode, header};
use serde_json::json;

#[tokio::test]
async fn quickstart_flow_over_rest() {
    let s = common::start().await;
    let owner = s.owner_key.clone();

    let loc = s
        .post("/api/v1/locations", Some(&owner), json!({"name": "Dock 4", "latitude": 52.5, "longitude": 13.4, "timezone": "Europe/Berlin"}))
        .await;
    assert_eq!(loc.status, StatusCode::CREATED, "{}", loc.body);
    let group = s
        .post("/api/v1/groups", Some(&owner), json!({"name": "cameras"}))
        .await;
    assert_eq!(group.status, StatusCode::CREATED, "{}", group.body);

    let created = s
        .post(
            "/api/v1/devices",
            Some(&owner),
            json!({"name": "cam-1", "location_id": loc.body["id"], "group_id": group.body["id"], "tags": ["yard"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let device_id = created.body["device"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["device"]["status"], "never_seen");
    assert_eq!(
        created.body["device"]["last_seen_at"],
        serde_json::Value::Null
    );
    let token = created.body["provisioning_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(token.starts_with("swrm_pt_"));
    assert!(created.body["provisioning_token_expires_at"].is_string());

    // Pair with the documented script.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("etc-swrm/token");
    let out = tokio::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/pair.sh"))
        .env("SWRM_PROV_TOKEN", &token)
        .env("SWRM_API", &s.base)
        .env("SWRM_TOKEN_FILE", &token_file)
        .env("SWRM_SERIAL_NUMBER", "SN-0001")
        .env("SWRM_HARDWARE_MODEL", "Raspberry Pi 5")
        .output()
        .await
        .expect("bash runs pair.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pair.sh failed: {stdout}{stderr}");
    let key = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(key.starts_with("swrm_dk_"), "token file holds a device key");
    assert!(
        !stdout.contains(&key) && !stderr.contains(&key),
        "the key is never printed"
    );
    assert!(!stdout.contains(&token) && !stderr.contains(&token));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "token file is private");
    }

    // Running the script again with the same token fails clearly.
    let again = tokio::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/pair.sh"))
        .env("SWRM_PROV_TOKEN", &token)
        .env("SWRM_API", &s.base)
        .env("SWRM_TOKEN_FILE", dir.path().join("second"))
        .output()
        .await
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("401"));

    let hb = s
        .post("/api/public/v1/heartbeat", Some(&key), json!({"firmware_version": "1.0.0", "uptime_seconds": 42, "ip_address": "192.168.1.20", "hostname": "cam-1"}))
        .await;
    assert_eq!(hb.status, StatusCode::OK, "{}", hb.body);
    assert_eq!(hb.body["heartbeat_interval_seconds"], 30);
    let server_time = hb.body["server_time"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(server_time).is_ok());

    let cfg = s.get("/api/public/v1/config", Some(&key)).await;
    assert_eq!(cfg.status, StatusCode::OK, "{}", cfg.body);
    assert_eq!(cfg.body["device"]["id"], device_id.as_str());
    assert_eq!(cfg.body["device"]["serial_number"], "SN-0001");
    assert_eq!(cfg.body["device"]["hardware_model"], "Raspberry Pi 5");
    assert_eq!(cfg.body["device"]["group"], "cameras");
    assert_eq!(cfg.body["device"]["tags"], json!(["yard"]));
    assert_eq!(cfg.body["org"]["name"], "default");
    assert_eq!(cfg.body["location"]["name"], "Dock 4");
    assert_eq!(cfg.body["location"]["timezone"], "Europe/Berlin");
    let mut location_keys: Vec<&str> = cfg.body["location"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    location_keys.sort();
    assert_eq!(
        location_keys,
        ["id", "latitude", "longitude", "name", "timezone"]
    );
    let mut top: Vec<&str> = cfg
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    top.sort();
    assert_eq!(
        top,
        [
            "active_model",
            "device",
            "endpoints",
            "heartbeat_interval_seconds",
            "location",
            "org",
            "sensor_keys"
        ]
    );
    assert_eq!(cfg.body["active_model"], serde_json::Value::Null);
    assert!(
        cfg.body["sensor_keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "temperature")
    );
    assert_eq!(
        cfg.body["endpoints"]["rest"],
        format!("{}/api/public/v1", s.base)
    );
    assert_eq!(cfg.body["heartbeat_interval_seconds"], 30);
    let etag = cfg
        .headers
        .get(header::ETAG)
        .expect("ETag")
        .to_str()
        .unwrap()
        .to_owned();
    let not_modified = s
        .http
        .get(format!("{}/api/public/v1/config", s.base))
        .bearer_auth(&key)
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    let other_etag = s
        .http
        .get(format!("{}/api/public/v1/config", s.base))
        .bearer_auth(&key)
        .header(header::IF_NONE_MATCH, "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other_etag.status(), StatusCode::OK);

    for key in [None, Some(key.as_str())] {
        let types = s.get("/api/public/v1/sensor-types", key).await;
        assert_eq!(types.status, StatusCode::OK);
        let list = types.body["sensor_types"].as_array().unwrap();
        let temp = list
            .iter()
            .find(|t| t["key"] == "temperature")
            .expect("temperature");
        assert_eq!(temp["unit"], "C");
        assert!(
            list.iter()
                .any(|t| t["key"] == "pm2_5" && t["unit"] == "ug/m3")
        );
    }

    let device = s
        .get(&format!("/api/v1/devices/{device_id}"), Some(&owner))
        .await;
    assert_eq!(device.status, StatusCode::OK);
    assert_eq!(device.body["status"], "online");
    assert_eq!(device.body["firmware_version"], "1.0.0");
    assert_eq!(device.body["uptime_seconds"], 42);
    assert_eq!(device.body["reported_ip"], "192.168.1.20");
    assert_eq!(device.body["source_ip"], "127.0.0.1");
    assert_eq!(device.body["location_id"], loc.body["id"]);
    assert_eq!(device.body["group_id"], group.body["id"]);
    assert!(device.body["last_seen_at"].is_string());

    let list = s.get("/api/v1/devices", Some(&owner)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["devices"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["next_page_token"], "");
}

#[tokio::test]
async fn device_goes_offline_after_three_missed_intervals() {
    let s = common::start_with_clock(|c| c.heartbeat_interval_seconds = 10).await;
    let (id, key) = s.paired_device("cam").await;
    let hb = s.heartbeat(&key).await;
    assert_eq!(hb.status, StatusCode::OK);
    assert_eq!(hb.body["heartbeat_interval_seconds"], 10);
    let d = s
        .get(&format!("/api/v1/devices/{id}"), Some(&s.owner_key))
        .await;
    assert_eq!(d.body["status"], "online");
    s.clock.advance(std::time::Duration::from_secs(29));
    let d = s
        .get(&format!("/api/v1/devices/{id}"), Some(&s.owner_key))
        .await;
    assert_eq!(d.body["status"], "online", "within three intervals");
    s.clock.advance(std::time::Duration::from_secs(2));
    let d = s
        .get(&format!("/api/v1/devices/{id}"), Some(&s.owner_key))
        .await;
    assert_eq!(d.body["status"], "offline");
}

#[tokio::test]
async fn health_and_openapi_are_served() {
    let s = common::start().await;
    let h = s.get("/healthz", None).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.body["status"], "ok");
    let doc = s.get("/api/openapi.json", None).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc.body["paths"]["/api/public/v1/heartbeat"]["post"].is_object());
}

#[tokio::test]
async fn devices_list_is_paginated() {
    let s = common::start().await;
    for i in 0..5 {
        s.create_device(&format!("d{i}")).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = s
            .get(
                &format!("/api/v1/devices?page_size=2&page_token={token}"),
                Some(&s.owner_key),
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let devices = page.body["devices"].as_array().unwrap();
        assert!(devices.len() <= 2);
        seen.extend(
            devices
                .iter()
                .map(|d| d["name"].as_str().unwrap().to_owned()),
        );
        token = page.body["next_page_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ["d0", "d1", "d2", "d3", "d4"]);
    let bad = s
        .get("/api/v1/devices?page_token=garbage", Some(&s.owner_key))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_code(), "invalid_argument");
}
