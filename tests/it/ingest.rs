//! What devices push: readings (checked whole, units converted, retries by
//! `seq` stored once), telemetry and events, and reading them back.

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

fn ago(seconds: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(seconds)).to_rfc3339()
}

#[tokio::test]
async fn the_public_snippet_pushes_readings_and_they_read_back() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    let a = s
        .post(
            "/api/public/v1/sensors",
            Some(&key),
            json!({"readings": [{"sensor_type": "temperature", "value": 23.4, "unit": "C"}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        a.body,
        json!({"accepted": 1, "duplicates": 0, "alerts": []})
    );
    let r = s
        .get(
            &format!("/api/v1/devices/{id}/readings?sensor_type=temperature"),
            Some(&s.owner_key),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["points"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["points"][0]["value"], 23.4);
    let latest = s
        .get(
            &format!("/api/v1/devices/{id}/readings/latest"),
            Some(&s.owner_key),
        )
        .await;
    assert_eq!(latest.body["readings"][0]["sensor_type"], "temperature");
    assert_eq!(latest.body["readings"][0]["unit"], "C");
}

#[tokio::test]
async fn bad_readings_are_400_naming_the_index_and_nothing_is_stored() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    let good = json!({"sensor_type": "humidity", "value": 40});
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"sensor_type": "flux", "value": 1}),
            "readings[1].sensor_type \"flux\" is not a registered sensor type",
        ),
        (
            json!({"sensor_type": "temperature"}),
            "readings[1].value is required",
        ),
        (
            json!({"sensor_type": "temperature", "value": 1, "unit": "bananas"}),
            "readings[1].unit \"bananas\" cannot be converted to \"C\", the unit of temperature",
        ),
        (
            json!({"sensor_type": "temperature", "value": 1, "ts": ago(-600)}),
            "readings[1].ts is more than 5 minutes in the future",
        ),
        (
            json!({"sensor_type": "temperature", "value": 1, "ts": ago(31 * 86_400)}),
            "readings[1].ts is older than the 30-day horizon",
        ),
        (
            json!({"sensor_type": "temperature", "value": 1, "ts": "yesterday"}),
            "readings[1].ts must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z",
        ),
        (json!({"sensor_type": "temperature", "value": "hot"}), ""),
    ];
    for (bad, expected) in cases {
        let a = s
            .post(
                "/api/public/v1/sensors",
                Some(&key),
                json!({"readings": [good, bad]}),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {}", a.body);
        assert_eq!(a.error_code(), "invalid_argument");
        if !expected.is_empty() {
            assert_eq!(message(&a), expected, "{bad}");
        }
    }
    let too_many: Vec<Value> = (0..1001).map(|_| good.clone()).collect();
    let a = s
        .post(
            "/api/public/v1/sensors",
            Some(&key),
            json!({"readings": too_many}),
        )
        .await;
    assert_eq!(message(&a), "readings must have at most 1000 elements");
    // NaN cannot be sent as JSON; over gRPC it is refused the same way.
    let mut grpc = s.device_client(Some(&key)).await;
    let err = grpc
        .push_sensors(proto::PushSensorsRequest {
            readings: vec![proto::SensorReading {
                sensor_type: "temperature".into(),
                value: Some(f64::NAN),
                ..Default::default()
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "readings[0].value must be a finite number");
    // Nothing of any refused batch was stored.
    let r = s
        .get(
            &format!("/api/v1/devices/{id}/readings/latest"),
            Some(&s.owner_key),
        )
        .await;
    assert_eq!(r.body["readings"], json!([]));
}

#[tokio::test]
async fn units_are_converted_and_unix_milliseconds_accepted() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    let ms = chrono::Utc::now().timestamp_millis() - 60_000;
    let a = s
        .post(
            "/api/public/v1/sensors",
            Some(&key),
            json!({"readings": [
                {"sensor_type": "temperature", "value": 212, "unit": "F", "ts": ms},
                {"sensor_type": "pressure", "value": 101.325, "unit": "kPa", "ts": ms}
            ]}),
        )
        .await;
    assert_eq!(a.body["accepted"], 2, "{}", a.body);
    let latest = s
        .get(
            &format!("/api/v1/devices/{id}/readings/latest"),
            Some(&s.owner_key),
        )
        .await;
    let readings = latest.body["readings"].as_array().unwrap();
    let value = |t: &str| {
        readings.iter().find(|r| r["sensor_type"] == t).unwrap()["value"]
            .as_f64()
            .unwrap()
    };
    assert!((value("temperature") - 100.0).abs() < 1e-9);
    assert!((value("pressure") - 1013.25).abs() < 1e-9);
    let ts = &readings[0]["ts"];
    let parsed = chrono::DateTime::parse_from_rfc3339(ts.as_str().unwrap()).unwrap();
    assert_eq!(parsed.timestamp_millis(), ms);
}

#[tokio::test]
async fn a_retried_batch_is_stored_once() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    let batch = json!({"readings": [
        {"sensor_type": "temperature", "value": 20, "seq": 1},
        {"sensor_type": "temperature", "value": 21, "seq": 2},
        {"sensor_type": "temperature", "value": 21, "seq": 2},
        {"sensor_type": "humidity", "value": 50}
    ]});
    let first = s
        .post("/api/public/v1/sensors", Some(&key), batch.clone())
        .await;
    assert_eq!(first.body["accepted"], 3, "{}", first.body);
    assert_eq!(first.body["duplicates"], 1);
    let again = s.post("/api/public/v1/sensors", Some(&key), batch).await;
    assert_eq!(again.body["accepted"], 1, "only the reading without seq");
    assert_eq!(again.body["duplicates"], 3);
    let r = s
        .get(
            &format!("/api/v1/devices/{id}/readings?sensor_type=temperature"),
            Some(&s.owner_key),
        )
        .await;
    assert_eq!(r.body["points"].as_array().unwrap().len(), 2);
    // Another device's seq 1 is its own.
    let (_, other) = s.paired_device("cam-2").await;
    let a = s
        .post(
            "/api/public/v1/sensors",
            Some(&other),
            json!({"readings": [{"sensor_type": "temperature", "value": 1, "seq": 1}]}),
        )
        .await;
    assert_eq!(a.body["accepted"], 1);
}

#[tokio::test]
async fn the_latest_reading_is_the_newest_by_time_whatever_order_it_came_in() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    let t = chrono::Utc::now().timestamp_millis() - 60_000;
    let latest = |body: &Value, sensor: &str| -> Value {
        body["readings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["sensor_type"] == sensor)
            .map(|r| r["value"].clone())
            .unwrap_or(Value::Null)
    };
    // Out of order within one request, and a retried seq beside them.
    let a = s
        .post(
            "/api/public/v1/sensors",
            Some(&key),
            json!({"readings": [
                {"sensor_type": "temperature", "value": 22, "ts": t + 2000, "seq": 7},
                {"sensor_type": "temperature", "value": 20, "ts": t, "seq": 8},
                {"sensor_type": "humidity", "value": 40, "ts": t + 1000}
            ]}),
        )
        .await;
    assert_eq!(a.body["accepted"], 3, "{}", a.body);
    // Older than what is stored: kept in the series, not the latest.
    let b = s
        .post(
            "/api/public/v1/sensors",
            Some(&key),
            json!({"readings": [
                {"sensor_type": "temperature", "value": 19, "ts": t + 1000, "seq": 9},
                {"sensor_type": "temperature", "value": 99, "ts": t + 5000, "seq": 7},
                {"sensor_type": "humidity", "value": 45, "ts": t + 3000}
            ]}),
        )
        .await;
    assert_eq!(b.body["accepted"], 2, "{}", b.body);
    assert_eq!(b.body["duplicates"], 1, "seq 7 is stored already");
    let r = s
        .get(
            &format!("/api/v1/devices/{id}/readings/latest"),
            Some(&s.owner_key),
        )
        .await;
    assert_eq!(latest(&r.body, "temperature"), json!(22.0), "{}", r.body);
    assert_eq!(latest(&r.body, "humidity"), json!(45.0), "{}", r.body);
}

#[tokio::test]
async fn buckets_aggregate_each_window() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    // Two one-minute buckets, aligned to the epoch.
    let base = (chrono::Utc::now().timestamp() / 60 - 10) * 60_000;
    let readings: Vec<Value> = [(0, 1.0), (10, 3.0), (59, 5.0), (60, 10.0), (90, 20.0)]
        .iter()
        .map(|(sec, v)| json!({"sensor_type": "light", "value": v, "ts": base + sec * 1000}))
        .collect();
    let a = s
        .post(
            "/api/public/v1/sensors",
            Some(&key),
            json!({"readings": readings}),
        )
        .await;
    assert_eq!(a.body["accepted"], 5, "{}", a.body);
    let from = chrono::DateTime::from_timestamp_millis(base)
        .unwrap()
        .to_rfc3339();
    let to = chrono::DateTime::from_timestamp_millis(base + 120_000)
        .unwrap()
        .to_rfc3339();
    let q = format!(
        "/api/v1/devices/{id}/readings?sensor_type=light&bucket_seconds=60&from={}&to={}",
        urlencode(&from),
        urlencode(&to)
    );
    let r = s.get(&q, Some(&s.owner_key)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let buckets = r.body["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 2, "{}", r.body);
    assert_eq!(buckets[0]["count"], 3);
    assert_eq!(buckets[0]["min"], 1.0);
    assert_eq!(buckets[0]["max"], 5.0);
    assert_eq!(buckets[0]["avg"], 3.0);
    assert_eq!(buckets[1]["count"], 2);
    assert_eq!(buckets[1]["avg"], 15.0);
    let start =
        chrono::DateTime::parse_from_rfc3339(buckets[1]["start"].as_str().unwrap()).unwrap();
    assert_eq!(start.timestamp_millis(), base + 60_000);
    assert_eq!(r.body["points"], json!([]));
    // Pages of raw points.
    let q = format!(
        "/api/v1/devices/{id}/readings?sensor_type=light&page_size=2&from={}&to={}",
        urlencode(&from),
        urlencode(&to)
    );
    let mut seen = Vec::new();
    let mut url = q.clone();
    loop {
        let page = s.get(&url, Some(&s.owner_key)).await;
        for p in page.body["points"].as_array().unwrap() {
            seen.push(p["value"].as_f64().unwrap());
        }
        let token = page.body["next_page_token"].as_str().unwrap();
        if token.is_empty() {
            break;
        }
        url = format!("{q}&page_token={token}");
    }
    assert_eq!(seen, vec![1.0, 3.0, 5.0, 10.0, 20.0]);
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn telemetry_and_events_are_stored_and_listed() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    let a = s
        .post(
            "/api/public/v1/telemetry",
            Some(&key),
            json!({"values": {"cpu_temp": 51.2, "mode": "day", "fan": true}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body, json!({"accepted": 3}));
    let a = s
        .post(
            "/api/public/v1/telemetry",
            Some(&key),
            json!({"values": {"nested": {"no": 1}}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        message(&a),
        "values[\"nested\"] must be a number, a string or a boolean"
    );
    let latest = s
        .get(
            &format!("/api/v1/devices/{id}/telemetry/latest"),
            Some(&s.owner_key),
        )
        .await;
    let points = latest.body["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    let value = |k: &str| points.iter().find(|p| p["key"] == k).unwrap()["value"].clone();
    assert_eq!(value("cpu_temp"), 51.2);
    assert_eq!(value("mode"), "day");
    assert_eq!(value("fan"), true);

    let a = s
        .post(
            "/api/public/v1/events",
            Some(&key),
            json!({"events": [
                {"type": "boot", "message": "hello"},
                {"type": "error", "severity": "error", "data": {"code": 7}, "ts": ago(30)}
            ]}),
        )
        .await;
    assert_eq!(a.body, json!({"accepted": 2}));
    let a = s
        .post(
            "/api/public/v1/events",
            Some(&key),
            json!({"type": "model_swap"}),
        )
        .await;
    assert_eq!(a.body, json!({"accepted": 1}));
    let all = s.get("/api/v1/events", Some(&s.owner_key)).await;
    let events = all.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[0]["type"], "error",
        "in time order: the one 30 s ago first"
    );
    assert_eq!(events[0]["data"]["code"].as_f64(), Some(7.0));
    assert_eq!(events[1]["severity"], "info");
    let errors = s
        .get(
            &format!("/api/v1/events?severity=error&device_id={id}"),
            Some(&s.owner_key),
        )
        .await;
    assert_eq!(errors.body["events"].as_array().unwrap().len(), 1);
    let a = s
        .post(
            "/api/public/v1/events",
            Some(&key),
            json!({"events": [{"type": "x", "severity": "loud"}]}),
        )
        .await;
    assert_eq!(
        message(&a),
        "events[0].severity must be one of info, warning, error, critical"
    );
}

#[tokio::test]
async fn organization_sensor_types_and_sensor_keys_shape_config() {
    let s = common::start().await;
    let owner = Some(s.owner_key.as_str());
    let (id, key) = s.paired_device("cam").await;
    let a = s
        .post(
            "/api/v1/sensor-types",
            owner,
            json!({"key": "water_level", "unit": "cm", "description": "Tank level", "min": 0, "max": 300}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let dup = s
        .post(
            "/api/v1/sensor-types",
            owner,
            json!({"key": "temperature", "unit": "C"}),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    // The device sees its organization's type, and may report it.
    let types = s.get("/api/public/v1/sensor-types", Some(&key)).await;
    assert!(
        types.body["sensor_types"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "water_level")
    );
    let public = s.get("/api/public/v1/sensor-types", None).await;
    assert!(
        !public.body["sensor_types"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "water_level")
    );
    let config = s.get("/api/public/v1/config", Some(&key)).await;
    let keys = config.body["sensor_keys"].as_array().unwrap();
    assert!(keys.iter().any(|k| k == "water_level") && keys.iter().any(|k| k == "temperature"));
    let a = s
        .post(
            "/api/public/v1/sensors",
            Some(&key),
            json!({"readings": [{"sensor_type": "water_level", "value": 1000, "unit": "mm"}]}),
        )
        .await;
    assert_eq!(a.body["accepted"], 1, "1000 mm is 100 cm: {}", a.body);
    let a = s
        .post(
            "/api/public/v1/sensors",
            Some(&key),
            json!({"readings": [{"sensor_type": "water_level", "value": 301}]}),
        )
        .await;
    assert_eq!(message(&a), "readings[0].value must be at most 300 cm");

    // A group's list, then the device's own, win over "everything".
    let group = s
        .post("/api/v1/groups", owner, json!({"name": "tanks"}))
        .await;
    let gid = group.body["id"].as_str().unwrap().to_owned();
    let a = s
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/groups/{gid}"),
            owner,
            Some(json!({"sensor_keys": ["water_level", "battery"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    s.call(
        reqwest::Method::PATCH,
        &format!("/api/v1/devices/{id}"),
        owner,
        Some(json!({"group_id": gid})),
    )
    .await;
    let config = s.get("/api/public/v1/config", Some(&key)).await;
    assert_eq!(
        config.body["sensor_keys"],
        json!(["water_level", "battery"])
    );
    let a = s
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/devices/{id}"),
            owner,
            Some(json!({"sensor_keys": ["temperature"]})),
        )
        .await;
    assert_eq!(a.body["sensor_keys"], json!(["temperature"]));
    let config = s.get("/api/public/v1/config", Some(&key)).await;
    assert_eq!(config.body["sensor_keys"], json!(["temperature"]));
    let a = s
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/devices/{id}"),
            owner,
            Some(json!({"sensor_keys": ["nope"]})),
        )
        .await;
    assert_eq!(
        message(&a),
        "sensor_keys[0] \"nope\" is not a registered sensor type"
    );
    // The group's list changes: the cached config follows.
    s.call(
        reqwest::Method::PATCH,
        &format!("/api/v1/devices/{id}"),
        owner,
        Some(json!({"sensor_keys": []})),
    )
    .await;
    s.call(
        reqwest::Method::PATCH,
        &format!("/api/v1/groups/{gid}"),
        owner,
        Some(json!({"sensor_keys": ["battery"]})),
    )
    .await;
    let config = s.get("/api/public/v1/config", Some(&key)).await;
    assert_eq!(config.body["sensor_keys"], json!(["battery"]));
    let gone = s
        .call(
            reqwest::Method::DELETE,
            "/api/v1/sensor-types/water_level",
            owner,
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn config_changes_reach_another_replica() {
    let a = common::start().await;
    let Some(b) = common::start_replica(&a).await else {
        return;
    };
    let (id, key) = a.paired_device("cam").await;
    let before = b.get("/api/public/v1/config", Some(&key)).await;
    assert_eq!(before.body["device"]["name"], "cam");
    a.call(
        reqwest::Method::PATCH,
        &format!("/api/v1/devices/{id}"),
        Some(&a.owner_key),
        Some(json!({"name": "renamed", "sensor_keys": ["co2"]})),
    )
    .await;
    let started = std::time::Instant::now();
    loop {
        let after = b.get("/api/public/v1/config", Some(&key)).await;
        if after.body["device"]["name"] == "renamed" {
            assert_eq!(after.body["sensor_keys"], json!(["co2"]));
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "b still shows {}",
            after.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
