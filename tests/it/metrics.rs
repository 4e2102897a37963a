//! `GET /metrics`: requests by route (never raw paths), transport and
//! status, latencies, group commits, the key cache, rate limits and the
//! database pool, in the Prometheus (OpenMetrics) text format.

use reqwest::StatusCode;
use serde_json::json;
use swrm::proto;

use crate::common;

async fn scrape(s: &common::TestServer, key: Option<&str>) -> (StatusCode, String) {
    let mut req = s.http.get(format!("{}/metrics", s.base));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let res = req.send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

/// The value of the sample whose line starts with `series`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn requests_commits_cache_and_limits_are_counted() {
    // A slow refill, so a loaded machine cannot refill the burst between
    // requests.
    let s = common::start_with(|c| {
        c.rate_limits.org_key_burst = 5;
        c.rate_limits.org_key_rate_per_second = 1;
    })
    .await;
    let (id, key) = s.paired_device("cam").await;
    for _ in 0..3 {
        assert_eq!(s.heartbeat(&key).await.status, StatusCode::OK);
    }
    let mut grpc = s.device_client(Some(&key)).await;
    grpc.heartbeat(proto::HeartbeatRequest::default())
        .await
        .unwrap();
    s.get(&format!("/api/v1/devices/{id}"), Some(&s.owner_key))
        .await;
    s.get("/no/such/route/0190c0de", None).await;
    // Past the organization key's burst.
    let mut limited = false;
    for _ in 0..20 {
        limited |= s.get("/api/v1/devices", Some(&s.owner_key)).await.status
            == StatusCode::TOO_MANY_REQUESTS;
    }
    assert!(limited);

    // Heartbeats reach the database in the next flush (within a second).
    s.app.core.liveness.flush(&s.app.core).await.unwrap();
    let (status, text) = scrape(&s, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        sample(
            &text,
            r#"swrm_requests_total{route="/api/public/v1/heartbeat",transport="rest",status="200"}"#
        ) >= 3.0
    );
    assert!(
        sample(
            &text,
            r#"swrm_requests_total{route="/swrm.v1.DeviceService/Heartbeat",transport="grpc",status="ok"}"#
        ) >= 1.0
    );
    // Route templates, never ids.
    assert!(text.contains(r#"route="/api/v1/devices/{id}""#), "{text}");
    assert!(!text.contains(&id));
    assert!(text.contains(r#"route="unmatched""#));
    assert!(!text.contains("0190c0de"));
    assert!(
        sample(
            &text,
            r#"swrm_request_duration_seconds_count{route="/api/public/v1/heartbeat",transport="rest"}"#
        ) >= 3.0
    );
    assert!(sample(&text, "swrm_group_commit_batch_size_count") >= 1.0);
    assert!(sample(&text, "swrm_group_commit_wait_seconds_count") >= 1.0);
    assert!(sample(&text, "swrm_key_cache_hits_total") >= 3.0);
    assert!(sample(&text, "swrm_key_cache_misses_total") >= 1.0);
    assert!(sample(&text, r#"swrm_rate_limited_total{bucket="org_key"}"#) >= 1.0);
    assert!(text.contains(r#"swrm_db_connections{state="idle"}"#));
    assert!(text.contains("swrm_key_cache_entries"));
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn metrics_can_require_an_owner_key() {
    let s = common::start_with(|c| c.metrics_require_key = true).await;
    assert_eq!(scrape(&s, None).await.0, StatusCode::UNAUTHORIZED);
    let viewer = s
        .post(
            "/api/v1/api-keys",
            Some(&s.owner_key),
            json!({"name": "v", "role": "viewer"}),
        )
        .await;
    let viewer = viewer.body["api_key"].as_str().unwrap().to_owned();
    assert_eq!(scrape(&s, Some(&viewer)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(scrape(&s, Some(&s.owner_key)).await.0, StatusCode::OK);
}
