//! Webhooks: a receiver gets signed alert changes, a 500 is retried, the
//! delivery log shows it; and a gRPC stream watches alert changes.

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use swrm::proto;

use crate::common;

#[derive(Default)]
struct Received {
    /// (signature header, body) of every POST, the failed ones too.
    posts: Vec<(String, String)>,
}

/// A receiver on port 0 that answers 500 to its first POST, 200 after.
async fn receiver() -> (String, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received::default()));
    async fn hook(
        State(r): State<Arc<Mutex<Received>>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let mut r = r.lock().unwrap();
        let signature = headers
            .get("x-swrm-signature")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        r.posts
            .push((signature, String::from_utf8(body.to_vec()).unwrap()));
        if r.posts.len() == 1 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    }
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// Checks `t=<unix>,v1=<hex>` against the secret, as a receiver would.
fn verify(secret: &str, header: &str, body: &str) -> bool {
    let Some((t, v1)) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    mac.verify_slice(&hex::decode(v1).unwrap_or_default())
        .is_ok()
}

#[tokio::test]
async fn alert_changes_reach_a_webhook_signed_and_retried_after_a_500() {
    let s = common::start().await;
    let owner = Some(s.owner_key.as_str());
    let (url, received) = receiver().await;
    let created = s
        .post(
            "/api/v1/webhooks",
            owner,
            json!({"url": url, "description": "ops"}),
        )
        .await;
    assert_eq!(
        created.status,
        reqwest::StatusCode::CREATED,
        "{}",
        created.body
    );
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    let hook_id = created.body["id"].as_str().unwrap().to_owned();
    let listed = s.get("/api/v1/webhooks", owner).await;
    assert_eq!(
        listed.body["webhooks"][0]["secret"],
        Value::Null,
        "shown once"
    );

    let mut watch = s
        .admin_client(Some(&s.owner_key))
        .await
        .watch_alerts(proto::WatchAlertsRequest {})
        .await
        .unwrap()
        .into_inner();
    s.post(
        "/api/v1/alert-rules",
        owner,
        json!({"name": "hot", "sensor_type": "temperature", "op": ">", "threshold": 30}),
    )
    .await;
    let (_, key) = s.paired_device("cam").await;
    let a = s
        .post(
            "/api/public/v1/sensors",
            Some(&key),
            json!({"readings": [{"sensor_type": "temperature", "value": 35}]}),
        )
        .await;
    let alert_id = a.body["alerts"][0]["alert_id"].as_str().unwrap().to_owned();

    // The gRPC watcher sees it at once.
    let event = tokio::time::timeout(Duration::from_secs(3), watch.message())
        .await
        .expect("pushed")
        .unwrap()
        .unwrap();
    assert_eq!(event.alert.unwrap().id, alert_id);

    // The webhook: refused once (500), delivered on the retry (~2 s later).
    let started = std::time::Instant::now();
    loop {
        if received.lock().unwrap().posts.len() >= 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no retry after the 500"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let posts = received.lock().unwrap().posts.clone();
    for (signature, body) in &posts {
        assert!(verify(&secret, signature, body), "signed: {signature}");
        assert!(!verify("whsec_wrong", signature, body));
        let payload: Value = serde_json::from_str(body).unwrap();
        assert_eq!(payload["event"], "alert.opened");
        assert_eq!(payload["data"]["id"], alert_id.as_str());
        assert_eq!(payload["data"]["state"], "open");
    }
    assert_eq!(posts[0].1, posts[1].1, "the retry sends the same delivery");

    let log = s
        .get(&format!("/api/v1/webhooks/{hook_id}/deliveries"), owner)
        .await;
    let deliveries = log.body["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{}", log.body);
    let d = &deliveries[0];
    // The log is written just after the answer: give it a moment.
    let d = if d["status"] == "succeeded" {
        d.clone()
    } else {
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.get(&format!("/api/v1/webhooks/{hook_id}/deliveries"), owner)
            .await
            .body["deliveries"][0]
            .clone()
    };
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(d["attempts"], 2);
    assert_eq!(d["last_status_code"], 200);
    assert_eq!(d["event"], "alert.opened");

    let gone = s
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/webhooks/{hook_id}"),
            owner,
            None,
        )
        .await;
    assert_eq!(gone.status, reqwest::StatusCode::NO_CONTENT);
    // Deleted means gone, for its delivery log too (the fuzzer's ST301).
    let after = s
        .get(&format!("/api/v1/webhooks/{hook_id}/deliveries"), owner)
        .await;
    assert_eq!(
        after.status,
        reqwest::StatusCode::NOT_FOUND,
        "{}",
        after.body
    );
    let bad = s
        .post(
            "/api/v1/webhooks",
            owner,
            json!({"url": "ftp://example.com/x"}),
        )
        .await;
    assert_eq!(bad.status, reqwest::StatusCode::BAD_REQUEST);
}
