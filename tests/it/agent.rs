//! The reference device agent (`examples/agent`), run against a test
//! server: it pairs, receives a deployment on its command stream, downloads
//! the model (resuming a partial file with Range), checks the SHA-256 and
//! reports it active.

#[path = "../../examples/agent/agent.rs"]
#[allow(dead_code)]
mod reference_agent;

use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

use crate::common::{self, images::sha256_hex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_pairs_installs_a_deployed_model_and_reports_it_active() {
    let s = common::start().await;
    let owner = Some(s.owner_key.as_str());
    let (device_id, token) = s.create_device("cam-agent").await;
    let artifact: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    let form = reqwest::multipart::Form::new()
        .text("name", "detector")
        .text("version", "3")
        .text("format", "onnx")
        .part("file", reqwest::multipart::Part::bytes(artifact.clone()));
    let res = s
        .http
        .post(format!("{}/api/v1/models", s.base))
        .bearer_auth(&s.owner_key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let model = common::answer(res).await;
    assert_eq!(model.status, StatusCode::CREATED, "{}", model.body);
    let model_id = model.body["id"].as_str().unwrap().to_owned();

    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    // A download cut off earlier: the agent resumes from it.
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(models.join(format!("{model_id}.part")), &artifact[..40_000]).unwrap();
    let config = reference_agent::AgentConfig {
        api: s.base.clone(),
        token_file: dir.path().join("token"),
        provisioning_token: Some(token),
        model_dir: models.clone(),
    };
    let running = tokio::spawn(reference_agent::run(config));

    // Paired: the key file exists (mode 600) and the device heartbeats.
    let started = Instant::now();
    loop {
        let d = s.get(&format!("/api/v1/devices/{device_id}"), owner).await;
        if d.body["status"] == "online" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{}", d.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let d = s
        .post(
            "/api/v1/deployments",
            owner,
            json!({"model_id": model_id, "device_ids": [device_id]}),
        )
        .await;
    assert_eq!(d.status, StatusCode::CREATED, "{}", d.body);
    let deployment = d.body["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let row = loop {
        let a = s
            .get(&format!("/api/v1/deployments/{deployment}/devices"), owner)
            .await;
        let row = a.body["devices"][0].clone();
        if row["status"] == "active" {
            break row;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{}", a.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let installed = std::fs::read(models.join(format!("{model_id}.onnx"))).unwrap();
    assert_eq!(sha256_hex(&installed), sha256_hex(&artifact));
    let cmd = s
        .get(
            &format!("/api/v1/commands/{}", row["command_id"].as_str().unwrap()),
            owner,
        )
        .await;
    assert_eq!(cmd.body["status"], "succeeded", "{}", cmd.body);
    running.abort();
}
