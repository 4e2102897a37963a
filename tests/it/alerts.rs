//! Alert rules users can trust: hysteresis, `for_seconds`, cooldown,
//! offline rules, acknowledgement, and state that survives a restart.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common;

async fn rule(s: &common::TestServer, body: Value) -> String {
    let a = s
        .post("/api/v1/alert-rules", Some(&s.owner_key), body)
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    a.body["id"].as_str().unwrap().to_owned()
}

/// Pushes one temperature reading `seconds_ago`; returns the alert changes.
async fn reading(s: &common::TestServer, key: &str, value: f64, ts_ms: i64) -> Vec<Value> {
    let a = s
        .post(
            "/api/public/v1/sensors",
            Some(key),
            json!({"readings": [{"sensor_type": "temperature", "value": value, "ts": ts_ms}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body["alerts"].as_array().unwrap().clone()
}

async fn alerts(s: &common::TestServer) -> Vec<Value> {
    let a = s.get("/api/v1/alerts", Some(&s.owner_key)).await;
    a.body["alerts"].as_array().unwrap().clone()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis() - 600_000
}

#[tokio::test]
async fn hysteresis_opens_once_and_clears_only_past_the_clear_threshold() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam").await;
    let rule_id = rule(
        &s,
        json!({"name": "hot", "sensor_type": "temperature", "op": ">", "threshold": 30, "clear_threshold": 25}),
    )
    .await;
    let t = now_ms();
    let opened = reading(&s, &key, 31.0, t).await;
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["state"], "open");
    assert_eq!(opened[0]["rule_id"], rule_id.as_str());
    // Oscillating around the threshold: still the one alert.
    for (i, v) in [29.0, 31.0, 26.0, 32.0].iter().enumerate() {
        assert!(
            reading(&s, &key, *v, t + (i as i64 + 1) * 1000)
                .await
                .is_empty()
        );
    }
    let resolved = reading(&s, &key, 24.0, t + 10_000).await;
    assert_eq!(
        resolved,
        vec![json!({"alert_id": opened[0]["alert_id"], "rule_id": rule_id, "state": "resolved"})]
    );
    let all = alerts(&s).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["state"], "resolved");
    assert_eq!(all[0]["value"], 31.0);
    assert_eq!(all[0]["resolved_value"], 24.0);
    // Readings older than what was evaluated are history, not news.
    assert!(reading(&s, &key, 40.0, t - 60_000).await.is_empty());
}

#[tokio::test]
async fn for_seconds_must_hold_and_cooldown_waits() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam").await;
    rule(
        &s,
        json!({"name": "hot", "sensor_type": "temperature", "op": ">=", "threshold": 30,
               "for_seconds": 60, "cooldown_seconds": 300}),
    )
    .await;
    let t = now_ms() - 3_600_000;
    assert!(reading(&s, &key, 30.0, t).await.is_empty());
    assert!(
        reading(&s, &key, 35.0, t + 30_000).await.is_empty(),
        "held 30 s"
    );
    assert!(
        reading(&s, &key, 20.0, t + 40_000).await.is_empty(),
        "broken: starts over"
    );
    assert!(reading(&s, &key, 35.0, t + 50_000).await.is_empty());
    let opened = reading(&s, &key, 35.0, t + 111_000).await;
    assert_eq!(opened.len(), 1, "held 61 s");
    let resolved = reading(&s, &key, 10.0, t + 120_000).await;
    assert_eq!(resolved[0]["state"], "resolved");
    // Within the cooldown, the condition opens nothing.
    assert!(reading(&s, &key, 50.0, t + 200_000).await.is_empty());
    assert!(reading(&s, &key, 50.0, t + 300_000).await.is_empty());
    // After it, the condition must hold for_seconds again.
    assert!(reading(&s, &key, 50.0, t + 430_000).await.is_empty());
    assert_eq!(reading(&s, &key, 50.0, t + 491_000).await.len(), 1);
}

#[tokio::test]
async fn a_restart_neither_loses_nor_repeats_an_alert() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam").await;
    rule(
        &s,
        json!({"name": "hot", "sensor_type": "temperature", "op": ">", "threshold": 30, "for_seconds": 10}),
    )
    .await;
    let t = now_ms();
    assert!(reading(&s, &key, 31.0, t).await.is_empty(), "pending");
    let s = s.restart().await;
    let opened = reading(&s, &key, 31.0, t + 11_000).await;
    assert_eq!(
        opened.len(),
        1,
        "the pending condition survived the restart"
    );
    let s = s.restart().await;
    assert!(
        reading(&s, &key, 32.0, t + 12_000).await.is_empty(),
        "still the open one"
    );
    assert_eq!(alerts(&s).await.len(), 1);
}

#[tokio::test]
async fn rules_are_scoped_checked_and_acknowledged() {
    let s = common::start().await;
    let owner = Some(s.owner_key.as_str());
    let (a_id, a_key) = s.paired_device("a").await;
    let (_, b_key) = s.paired_device("b").await;
    rule(
        &s,
        json!({"name": "a only", "sensor_type": "temperature", "op": ">", "threshold": 0, "device_id": a_id}),
    )
    .await;
    let t = now_ms();
    assert!(
        reading(&s, &b_key, 5.0, t).await.is_empty(),
        "b is out of scope"
    );
    let opened = reading(&s, &a_key, 5.0, t).await;
    let alert_id = opened[0]["alert_id"].as_str().unwrap().to_owned();
    let ack = s
        .post(&format!("/api/v1/alerts/{alert_id}/ack"), owner, json!({}))
        .await;
    assert_eq!(ack.status, StatusCode::OK, "{}", ack.body);
    assert_eq!(ack.body["state"], "acknowledged");
    let again = s
        .post(&format!("/api/v1/alerts/{alert_id}/ack"), owner, json!({}))
        .await;
    assert_eq!(again.body, ack.body, "acknowledging twice answers the same");
    let listed = s.get("/api/v1/alerts?state=acknowledged", owner).await;
    assert_eq!(listed.body["alerts"].as_array().unwrap().len(), 1);
    // An acknowledged alert still resolves on its own.
    let resolved = reading(&s, &a_key, -1.0, t + 1000).await;
    assert_eq!(resolved[0]["state"], "resolved");

    for (body, expected) in [
        (
            json!({"name": "x", "sensor_type": "flux", "op": ">", "threshold": 1}),
            "sensor_type \"flux\" is not a registered sensor type (nor \"offline_seconds\")",
        ),
        (
            json!({"name": "x", "sensor_type": "temperature", "op": ">", "threshold": 1, "clear_threshold": 5}),
            "clear_threshold must be on the other side of threshold: at most 1 for op \">\"",
        ),
        (
            json!({"name": "x", "sensor_type": "temperature", "op": ">", "threshold": 1, "device_id": a_id, "group_id": a_id}),
            "at most one of device_id, group_id and location_id",
        ),
        (
            json!({"name": "x", "sensor_type": "temperature", "op": ">"}),
            "threshold is required",
        ),
    ] {
        let a = s.post("/api/v1/alert-rules", owner, body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(a.body["error"]["message"], expected, "{body}");
    }
    let theirs = s.other_org("other").await;
    let a = s
        .post(
            &format!("/api/v1/alerts/{alert_id}/ack"),
            Some(&theirs),
            json!({}),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn offline_rules_open_when_heartbeats_stop_and_resolve_when_they_return() {
    let s = common::start_with_clock(|_| {}).await;
    let (_, key) = s.paired_device("cam").await;
    let (_, never) = s.paired_device("never-seen").await;
    let _ = never;
    rule(
        &s,
        json!({"name": "offline", "sensor_type": "offline_seconds", "op": ">", "threshold": 120}),
    )
    .await;
    assert_eq!(s.heartbeat(&key).await.status, StatusCode::OK);
    let sweep = || swrm::core::alerts::sweep_offline(&s.app.core);
    assert!(sweep().await.unwrap().is_empty());
    s.clock.advance(std::time::Duration::from_secs(121));
    let opened = sweep().await.unwrap();
    assert_eq!(
        opened.len(),
        1,
        "only the device that was seen, then went quiet"
    );
    assert!(sweep().await.unwrap().is_empty(), "opens once");
    assert_eq!(s.heartbeat(&key).await.status, StatusCode::OK);
    let resolved = sweep().await.unwrap();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].state, "resolved");
    let bad = s
        .post(
            "/api/v1/alert-rules",
            Some(&s.owner_key),
            json!({"name": "x", "sensor_type": "offline_seconds", "op": "<", "threshold": 5}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn deleting_a_rule_resolves_its_alerts() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam").await;
    let id = rule(
        &s,
        json!({"name": "hot", "sensor_type": "temperature", "op": ">", "threshold": 0}),
    )
    .await;
    assert_eq!(reading(&s, &key, 5.0, now_ms()).await.len(), 1);
    let a = s
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/alert-rules/{id}"),
            Some(&s.owner_key),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(alerts(&s).await[0]["state"], "resolved");
    let rules = s.get("/api/v1/alert-rules", Some(&s.owner_key)).await;
    assert_eq!(rules.body["alert_rules"], json!([]));
    assert!(reading(&s, &key, 9.0, now_ms() + 1).await.is_empty());
}

#[tokio::test]
async fn two_replicas_evaluating_at_once_open_one_alert() {
    let a = common::start().await;
    let Some(b) = common::start_replica(&a).await else {
        return;
    };
    let (_, key) = a.paired_device("cam").await;
    rule(
        &a,
        json!({"name": "hot", "sensor_type": "temperature", "op": ">", "threshold": 30}),
    )
    .await;
    let t = now_ms();
    // The same device, the same moment, through both replicas, many times.
    let mut tries = Vec::new();
    for i in 0..10 {
        for s in [&a, &b] {
            let (http, base, key) = (s.http.clone(), s.base.clone(), key.clone());
            tries.push(tokio::spawn(async move {
                http.post(format!("{base}/api/public/v1/sensors"))
                    .bearer_auth(key)
                    .json(&json!({"readings": [{"sensor_type": "temperature", "value": 40, "ts": t + i}]}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            }));
        }
    }
    for t in tries {
        assert!(t.await.unwrap().is_success());
    }
    let open = alerts(&a).await;
    assert_eq!(open.len(), 1, "{open:?}");
}
