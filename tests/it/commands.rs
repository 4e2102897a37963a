//! The command queue: long polls and streams woken the moment a command is
//! queued, leases and redelivery, attempts and TTL, idempotent acks, one
//! waiter per device, and nothing lost across a restart.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use swrm::proto;

use crate::common;

async fn queue(s: &common::TestServer, device: &str, body: Value) -> Value {
    let a = s
        .post(
            &format!("/api/v1/devices/{device}/commands"),
            Some(&s.owner_key),
            body,
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    a.body
}

async fn poll(s: &common::TestServer, key: &str, wait: u32) -> Vec<Value> {
    let a = s
        .get(&format!("/api/public/v1/commands?wait={wait}"), Some(key))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body["commands"].as_array().unwrap().clone()
}

/// A long poll of `wait` seconds, started now: its status, its body, and
/// how long it took.
fn spawn_poll(
    s: &common::TestServer,
    key: &str,
    wait: u32,
) -> tokio::task::JoinHandle<(StatusCode, Value, Duration)> {
    let (http, base, key) = (s.http.clone(), s.base.clone(), key.to_owned());
    let started = Instant::now();
    tokio::spawn(async move {
        let res = http
            .get(format!("{base}/api/public/v1/commands?wait={wait}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body = res.json::<Value>().await.unwrap_or(Value::Null);
        (status, body, started.elapsed())
    })
}

async fn ack(s: &common::TestServer, key: &str, id: &str, body: Value) -> common::Answer {
    s.post(
        &format!("/api/public/v1/commands/{id}/ack"),
        Some(key),
        body,
    )
    .await
}

async fn status(s: &common::TestServer, id: &str) -> Value {
    s.get(&format!("/api/v1/commands/{id}"), Some(&s.owner_key))
        .await
        .body
}

#[tokio::test]
async fn a_long_poll_returns_the_moment_a_command_is_queued() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    let waiting = spawn_poll(&s, &key, 20);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = queue(&s, &id, json!({"type": "reboot", "payload": {"delay": 5}})).await;
    assert_eq!(queued["status"], "queued");
    let (code, body, took) = waiting.await.unwrap();
    assert_eq!(code, StatusCode::OK);
    assert!(
        took < Duration::from_secs(3),
        "woken at once, not after the wait: {took:?}"
    );
    let commands = body["commands"].as_array().unwrap();
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0]["id"], queued["id"]);
    assert_eq!(commands[0]["type"], "reboot");
    assert_eq!(commands[0]["attempt"], 1);
    assert_eq!(commands[0]["payload"]["delay"].as_f64(), Some(5.0));
    // Pending commands answer at once, in queue order.
    let first = queue(&s, &id, json!({"type": "a"})).await;
    let second = queue(&s, &id, json!({"type": "b"})).await;
    let started = Instant::now();
    let got = poll(&s, &key, 20).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["id"], first["id"]);
    assert_eq!(got[1]["id"], second["id"]);
    // Nothing pending: wait=0 answers an empty list at once.
    assert!(poll(&s, &key, 0).await.is_empty());
}

#[tokio::test]
async fn unacknowledged_commands_come_back_until_they_fail_or_expire() {
    let s = common::start_with_clock(|_| {}).await;
    let (id, key) = s.paired_device("cam").await;
    let c = queue(&s, &id, json!({"type": "x", "max_attempts": 2})).await;
    let cid = c["id"].as_str().unwrap().to_owned();
    assert_eq!(poll(&s, &key, 0).await[0]["attempt"], 1);
    assert!(poll(&s, &key, 0).await.is_empty(), "leased");
    assert_eq!(status(&s, &cid).await["status"], "delivered");
    s.clock.advance(Duration::from_secs(61));
    assert_eq!(
        poll(&s, &key, 0).await[0]["attempt"],
        2,
        "the lease ran out"
    );
    s.clock.advance(Duration::from_secs(61));
    assert!(poll(&s, &key, 0).await.is_empty());
    let failed = status(&s, &cid).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempt"], 2);

    let c = queue(&s, &id, json!({"type": "y", "ttl_seconds": 30})).await;
    let cid = c["id"].as_str().unwrap().to_owned();
    s.clock.advance(Duration::from_secs(31));
    assert!(poll(&s, &key, 0).await.is_empty(), "past its TTL");
    assert_eq!(status(&s, &cid).await["status"], "expired");
    let a = ack(&s, &key, &cid, json!({})).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.error_code(), "failed_precondition");
}

#[tokio::test]
async fn acks_are_idempotent_and_received_extends_the_lease() {
    let s = common::start_with_clock(|_| {}).await;
    let (id, key) = s.paired_device("cam").await;
    let c = queue(&s, &id, json!({"type": "update"})).await;
    let cid = c["id"].as_str().unwrap().to_owned();
    poll(&s, &key, 0).await;
    s.clock.advance(Duration::from_secs(30));
    let a = ack(&s, &key, &cid, json!({"status": "received"})).await;
    assert_eq!(a.body, json!({"id": cid, "status": "received"}));
    s.clock.advance(Duration::from_secs(45));
    assert!(
        poll(&s, &key, 0).await.is_empty(),
        "the lease was extended at 30 s"
    );
    let done = ack(
        &s,
        &key,
        &cid,
        json!({"status": "succeeded", "message": "ok", "result": {"exit": 0}}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(done.body, json!({"id": cid, "status": "succeeded"}));
    let again = ack(&s, &key, &cid, json!({"status": "succeeded"})).await;
    assert_eq!(again.body, done.body, "the same ack, the same answer");
    let other = ack(&s, &key, &cid, json!({"status": "failed"})).await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    let seen = status(&s, &cid).await;
    assert_eq!(seen["result"]["exit"].as_f64(), Some(0.0));
    assert_eq!(seen["message"], "ok");
    // Another device's command is not found.
    let (_, other_key) = s.paired_device("cam-2").await;
    assert_eq!(
        ack(&s, &other_key, &cid, json!({})).await.status,
        StatusCode::NOT_FOUND
    );
    let theirs = s.other_org("other").await;
    let a = s
        .get(&format!("/api/v1/commands/{cid}"), Some(&theirs))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn idempotency_keys_and_cancel() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    let first = queue(&s, &id, json!({"type": "reboot", "idempotency_key": "k1"})).await;
    let again = queue(&s, &id, json!({"type": "reboot", "idempotency_key": "k1"})).await;
    assert_eq!(first["id"], again["id"], "a retried enqueue queues once");
    let cid = first["id"].as_str().unwrap();
    let a = s
        .post(
            &format!("/api/v1/commands/{cid}/cancel"),
            Some(&s.owner_key),
            json!({}),
        )
        .await;
    assert_eq!(a.body["status"], "cancelled", "{}", a.body);
    assert!(
        poll(&s, &key, 0).await.is_empty(),
        "cancelled is never delivered"
    );
    let other = queue(&s, &id, json!({"type": "x"})).await;
    poll(&s, &key, 0).await;
    let oid = other["id"].as_str().unwrap();
    let a = s
        .post(
            &format!("/api/v1/commands/{oid}/cancel"),
            Some(&s.owner_key),
            json!({}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "already delivered");
    let list = s
        .get(
            &format!("/api/v1/devices/{id}/commands?status=delivered"),
            Some(&s.owner_key),
        )
        .await;
    assert_eq!(list.body["commands"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_stream_gets_pushes_and_redeliveries_on_reconnect() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    let mut client = s.device_client(Some(&key)).await;
    let mut stream = client
        .stream_commands(proto::StreamCommandsRequest {})
        .await
        .unwrap()
        .into_inner();
    let queued = queue(&s, &id, json!({"type": "reboot"})).await;
    let pushed = tokio::time::timeout(Duration::from_secs(3), stream.message())
        .await
        .expect("pushed at once")
        .unwrap()
        .unwrap();
    assert_eq!(pushed.id, queued["id"].as_str().unwrap());
    assert_eq!(pushed.attempt, 1);
    drop(stream);
    // Reconnecting: what was delivered but not acknowledged comes again.
    let mut stream = client
        .stream_commands(proto::StreamCommandsRequest {})
        .await
        .unwrap()
        .into_inner();
    let again = tokio::time::timeout(Duration::from_secs(3), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(again.id, pushed.id);
    assert_eq!(again.attempt, 2);
    let acked = client
        .ack_command(proto::AckCommandRequest {
            id: again.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.status, "succeeded");
}

#[tokio::test]
async fn a_device_that_leaves_its_stream_releases_its_waiter() {
    let s = common::start().await;
    let (_, key) = s.paired_device("cam").await;
    let mut client = s.device_client(Some(&key)).await;
    let stream = client
        .stream_commands(proto::StreamCommandsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.app.core.bus.watched_devices(), 1);
    drop(stream);
    let started = Instant::now();
    while s.app.core.bus.watched_devices() != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the waiter outlived its stream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_new_waiter_replaces_the_old_and_revocation_ends_them() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    let first = spawn_poll(&s, &key, 30);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut client = s.device_client(Some(&key)).await;
    let mut stream = client
        .stream_commands(proto::StreamCommandsRequest {})
        .await
        .unwrap()
        .into_inner();
    let (code, _, took) = first.await.unwrap();
    assert_eq!(code, StatusCode::OK);
    assert!(
        took < Duration::from_secs(3),
        "the poll ended when the stream started: {took:?}"
    );
    let revoked = s
        .post(
            &format!("/api/v1/devices/{id}/revoke-key"),
            Some(&s.owner_key),
            json!({}),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    let end = tokio::time::timeout(Duration::from_secs(1), stream.message())
        .await
        .expect("the stream ends within a second of the revocation");
    let status = end.expect_err("ended with an error");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn a_restart_loses_no_queued_or_leased_command() {
    let s = common::start_with_clock(|_| {}).await;
    let (id, key) = s.paired_device("cam").await;
    let a = queue(&s, &id, json!({"type": "a"})).await;
    let b = queue(&s, &id, json!({"type": "b"})).await;
    let delivered = poll(&s, &key, 0).await;
    assert_eq!(delivered.len(), 2);
    let c = queue(&s, &id, json!({"type": "c"})).await;
    let s = s.restart().await;
    let got = poll(&s, &key, 0).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], c["id"], "the queued one");
    s.clock.advance(Duration::from_secs(61));
    let again = poll(&s, &key, 0).await;
    let ids: Vec<&Value> = again.iter().map(|c| &c["id"]).collect();
    assert_eq!(
        ids,
        vec![&a["id"], &b["id"], &c["id"]],
        "leases ran out: delivered again, in order"
    );
    assert!(again.iter().all(|c| c["attempt"] == 2));
}

#[tokio::test]
async fn shutdown_releases_every_waiter_at_once() {
    let mut s = common::start().await;
    let (_, key) = s.paired_device("cam").await;
    let (http, base) = (s.http.clone(), s.base.clone());
    let started = Instant::now();
    let waiting = tokio::spawn(async move {
        let res = http
            .get(format!("{base}/api/public/v1/commands?wait=30"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        (res.status(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let served = s.shut_down();
    let (code, took) = waiting.await.unwrap();
    assert_eq!(code, StatusCode::OK);
    assert!(
        took < Duration::from_secs(5),
        "released at shutdown: {took:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn replicas_wake_each_other() {
    let a = common::start().await;
    let Some(b) = common::start_replica(&a).await else {
        return;
    };
    let (id, key) = a.paired_device("cam").await;
    let (http, base, k) = (b.http.clone(), b.base.clone(), key.clone());
    let started = Instant::now();
    let waiting = tokio::spawn(async move {
        let res = http
            .get(format!("{base}/api/public/v1/commands?wait=20"))
            .bearer_auth(k)
            .send()
            .await
            .unwrap();
        (res.json::<Value>().await.unwrap(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = queue(&a, &id, json!({"type": "reboot"})).await;
    let (body, took) = waiting.await.unwrap();
    assert!(
        took < Duration::from_secs(3),
        "b was woken by a's commit: {took:?}"
    );
    assert_eq!(body["commands"][0]["id"], queued["id"]);
}

/// Integrators watch the organization's command status changes as they
/// happen: queued, delivered, succeeded; another organization sees none.
#[tokio::test]
async fn watch_commands_streams_status_changes() {
    let s = common::start().await;
    let (device_id, key) = s.paired_device("cam").await;
    let mut admin = s.admin_client(Some(&s.owner_key)).await;
    let mut watch = admin
        .watch_commands(proto::WatchCommandsRequest {
            device_id: Some(device_id.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    let other = s.other_org("other").await;
    let mut foreign = s
        .admin_client(Some(&other))
        .await
        .watch_commands(proto::WatchCommandsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // The stream is subscribed once its answer has arrived.
    let queued = s
        .post(
            &format!("/api/v1/devices/{device_id}/commands"),
            Some(&s.owner_key),
            json!({"type": "reboot"}),
        )
        .await;
    assert_eq!(queued.status, StatusCode::CREATED, "{}", queued.body);
    let id = queued.body["id"].as_str().unwrap().to_owned();
    // Each change is reported as the command stands when the stream reads
    // it, so each step waits for the last to show before taking the next.
    let mut next_status = async || {
        let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("a status change within 5 s")
            .unwrap()
            .expect("the stream stays open");
        assert_eq!(next.id, id);
        next.status
    };
    assert_eq!(next_status().await, "queued");
    let polled = s.get("/api/public/v1/commands?wait=0", Some(&key)).await;
    assert_eq!(polled.body["commands"][0]["id"], id.as_str());
    assert_eq!(next_status().await, "delivered");
    s.post(
        &format!("/api/public/v1/commands/{id}/ack"),
        Some(&key),
        json!({"status": "succeeded"}),
    )
    .await;
    assert_eq!(next_status().await, "succeeded");
    let nothing = tokio::time::timeout(Duration::from_millis(300), foreign.message()).await;
    assert!(nothing.is_err(), "another organization saw {nothing:?}");
}

#[tokio::test]
async fn commands_for_another_organizations_device_or_none_are_404_and_queue_nothing() {
    let s = common::start().await;
    let other_key = s.other_org("globex").await;
    let (theirs, their_key) = s.paired_device_as(&other_key, "their-cam").await;
    for device in [theirs.clone(), uuid::Uuid::now_v7().to_string()] {
        let a = s
            .post(
                &format!("/api/v1/devices/{device}/commands"),
                Some(&s.owner_key),
                json!({"type": "reboot"}),
            )
            .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    }
    assert!(
        poll(&s, &their_key, 0).await.is_empty(),
        "nothing was queued"
    );
    // The same request from the device's own organization is queued.
    let a = s
        .post(
            &format!("/api/v1/devices/{theirs}/commands"),
            Some(&other_key),
            json!({"type": "reboot"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(poll(&s, &their_key, 0).await.len(), 1);
}

/// Enqueues and polls of many devices at once share the writer's batches
/// (one insert for the batch's commands, one read and one claim for its
/// devices): each device still gets exactly its own commands, in the
/// order they were queued, and a foreign device's enqueue in the same
/// batch is refused without touching the rest.
#[tokio::test]
async fn concurrent_enqueues_and_polls_each_get_exactly_their_own_commands() {
    let s = common::start().await;
    let other_key = s.other_org("globex").await;
    let (theirs, their_key) = s.paired_device_as(&other_key, "their-cam").await;
    let mut devices = Vec::new();
    for n in 0..8 {
        devices.push(s.paired_device(&format!("cam-{n}")).await);
    }
    // Three rounds, each queued at once for every device and the foreign
    // one, so a device's commands come in order of the rounds.
    let mut queued: Vec<Vec<String>> = vec![Vec::new(); devices.len()];
    let s = &s;
    for round in 0..3 {
        let ours = devices.iter().map(|(id, _)| async move {
            s.post(
                &format!("/api/v1/devices/{id}/commands"),
                Some(&s.owner_key),
                json!({"type": "ping", "payload": {"round": round}}),
            )
            .await
        });
        let theirs = &theirs;
        let foreign = (0..4).map(|_| async move {
            s.post(
                &format!("/api/v1/devices/{theirs}/commands"),
                Some(&s.owner_key),
                json!({"type": "ping"}),
            )
            .await
        });
        let (ours, foreign) = tokio::join!(
            futures_util::future::join_all(ours),
            futures_util::future::join_all(foreign)
        );
        for (n, a) in ours.into_iter().enumerate() {
            assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
            queued[n].push(a.body["id"].as_str().unwrap().to_owned());
        }
        for a in foreign {
            assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
        }
    }
    let polls = devices.iter().map(|(_, key)| poll(s, key, 0));
    let delivered = futures_util::future::join_all(polls).await;
    for (n, commands) in delivered.iter().enumerate() {
        let ids: Vec<&str> = commands.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, queued[n], "device {n} gets its own commands in order");
        assert!(commands.iter().all(|c| c["attempt"] == 1), "{commands:?}");
    }
    // Leased now: polling again at once delivers nothing to anyone.
    let again = devices.iter().map(|(_, key)| poll(s, key, 0));
    for commands in futures_util::future::join_all(again).await {
        assert!(commands.is_empty(), "{commands:?}");
    }
    assert!(
        poll(s, &their_key, 0).await.is_empty(),
        "nothing queued for theirs"
    );
    let first = &queued[0][0];
    assert_eq!(status(s, first).await["status"], "delivered");
}

/// Acks of many devices at once share the writer's batches (one read and
/// one write for the batch): each answers for its own command, the same
/// ack sent twice at once answers the same, and an ack of another
/// device's command is 404 and changes nothing.
#[tokio::test]
async fn concurrent_acks_each_answer_for_their_own_command() {
    let s = common::start().await;
    let s = &s;
    let mut devices = Vec::new();
    for n in 0..8 {
        let (id, key) = s.paired_device(&format!("cam-{n}")).await;
        let queued = queue(s, &id, json!({"type": "ping"})).await;
        assert_eq!(poll(s, &key, 0).await.len(), 1);
        devices.push((key, queued["id"].as_str().unwrap().to_owned()));
    }
    let acks = devices.iter().enumerate().flat_map(|(n, (key, id))| {
        let body =
            json!({"status": "succeeded", "message": format!("done {n}"), "result": {"n": n}});
        [
            (key.clone(), id.clone(), body.clone()),
            (key.clone(), id.clone(), body),
        ]
    });
    // Device 0 also acks device 1's command.
    let foreign = (
        devices[0].0.clone(),
        devices[1].1.clone(),
        json!({"status": "failed"}),
    );
    let answers = futures_util::future::join_all(
        acks.chain([foreign])
            .map(|(key, id, body)| async move { ack(s, &key, &id, body).await }),
    )
    .await;
    let (foreign, ours) = answers.split_last().unwrap();
    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{}", foreign.body);
    for (n, pair) in ours.chunks(2).enumerate() {
        for a in pair {
            assert_eq!(a.status, StatusCode::OK, "{}", a.body);
            assert_eq!(a.body["status"], "succeeded", "{}", a.body);
        }
        let stored = status(s, &devices[n].1).await;
        assert_eq!(stored["status"], "succeeded", "{stored}");
        assert_eq!(stored["message"], format!("done {n}"), "{stored}");
        // A protobuf Struct's numbers are doubles.
        assert_eq!(stored["result"]["n"].as_f64(), Some(n as f64), "{stored}");
    }
}

/// Waits until `n` devices wait on this server with a hand-off offered,
/// for 200 ms in a row (a waiter's first wake-ups, its own announcement
/// and the bus's word of a command it already has, end in a claim that
/// finds nothing, and it offers itself again).
async fn until_waiting(s: &common::TestServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut steady_since = Instant::now();
    loop {
        if s.app.core.handoffs.len() != n {
            steady_since = Instant::now();
        } else if steady_since.elapsed() >= Duration::from_millis(200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the devices did not come to wait"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_command_for_a_waiting_device_is_delivered_in_the_commit_that_queues_it() {
    let s = common::start().await;
    let (id, key) = s.paired_device("cam").await;
    let (other, other_key) = s.paired_device("cam-2").await;
    // A long poll and a stream, each waiting here.
    let polling = spawn_poll(&s, &key, 20);
    let mut client = s.device_client(Some(&other_key)).await;
    let mut stream = client
        .stream_commands(proto::StreamCommandsRequest {})
        .await
        .unwrap()
        .into_inner();
    until_waiting(&s, 2).await;
    let handoffs = &s.app.core.handoffs;
    let taken = handoffs.taken();
    let polled = queue(&s, &id, json!({"type": "reboot"})).await;
    let streamed = queue(&s, &other, json!({"type": "snapshot"})).await;
    assert_eq!(
        handoffs.taken(),
        taken + 2,
        "both claimed in their enqueue's batch"
    );
    // Claimed in the enqueue's own transaction: delivered by the time the
    // enqueue answers, not a commit later.
    for queued in [&polled, &streamed] {
        let now = status(&s, queued["id"].as_str().unwrap()).await;
        assert_eq!(now["status"], "delivered", "{now}");
        assert_eq!(now["attempt"], 1, "{now}");
    }
    let (_, body, _) = polling.await.unwrap();
    assert_eq!(body["commands"][0]["id"], polled["id"], "{body}");
    assert_eq!(body["commands"].as_array().unwrap().len(), 1);
    let pushed = tokio::time::timeout(Duration::from_secs(3), stream.message())
        .await
        .expect("pushed at once")
        .unwrap()
        .unwrap();
    assert_eq!(pushed.id, streamed["id"].as_str().unwrap());
    assert_eq!(pushed.attempt, 1);
    // The stream waits again, and the next command comes the same way,
    // once: the bus's wake-up for it finds nothing more to deliver.
    until_waiting(&s, 1).await;
    let next = queue(&s, &other, json!({"type": "reboot"})).await;
    assert_eq!(handoffs.taken(), taken + 3);
    assert_eq!(
        status(&s, next["id"].as_str().unwrap()).await["status"],
        "delivered"
    );
    let pushed = tokio::time::timeout(Duration::from_secs(3), stream.message())
        .await
        .expect("pushed at once")
        .unwrap()
        .unwrap();
    assert_eq!(pushed.id, next["id"].as_str().unwrap());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.message())
            .await
            .is_err(),
        "nothing delivered twice"
    );
}

/// A delivery of more commands than one update statement holds (the
/// writer sends at most 64 updates a statement, padded to a power of two):
/// 150 queued, the first poll takes the first 100 in queue order as
/// attempt 1, their acks (sent at once, so batched together) all land, and
/// the next poll takes the other 50.
#[tokio::test]
async fn a_delivery_larger_than_one_update_statement_claims_and_acks_every_command() {
    let s = common::start_with(|c| {
        c.rate_limits.device_burst = 1000;
        c.rate_limits.org_key_burst = 1000;
    })
    .await;
    let s = &s;
    let (id, key) = s.paired_device("cam-bulk").await;
    let mut queued = Vec::new();
    for n in 0..150 {
        let c = queue(s, &id, json!({"type": "ping", "payload": {"n": n}})).await;
        queued.push(c["id"].as_str().unwrap().to_owned());
    }
    let first = poll(s, &key, 0).await;
    let ids: Vec<&str> = first.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, queued[..100], "the first 100, in queue order");
    assert!(first.iter().all(|c| c["attempt"] == 1), "{first:?}");
    let answers = futures_util::future::join_all(ids.iter().map(|id| {
        let key = key.clone();
        async move { ack(s, &key, id, json!({"status": "succeeded"})).await }
    }))
    .await;
    for a in &answers {
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    for id in [ids[0], ids[63], ids[64], ids[99]] {
        assert_eq!(status(s, id).await["status"], "succeeded");
    }
    let rest = poll(s, &key, 0).await;
    let rest: Vec<&str> = rest.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(rest, queued[100..], "then the other 50");
    assert_eq!(status(s, queued[149].as_str()).await["status"], "delivered");
}
