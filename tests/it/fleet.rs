//! Fleet size: bulk creation (REST, gRPC and the CSV import), all or
//! nothing, and a list that pages through a large fleet exactly once.

use crate::common;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashSet;

const BATCH: &str = "/api/v1/devices:batchCreate";

/// Every device id in the organization, paging with `page_size`.
async fn all_device_ids(s: &common::TestServer, page_size: u32) -> Vec<String> {
    let (mut ids, mut token) = (Vec::new(), String::new());
    loop {
        let a = s
            .get(
                &format!("/api/v1/devices?page_size={page_size}&page_token={token}"),
                Some(&s.owner_key),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        for d in a.body["devices"].as_array().unwrap() {
            ids.push(d["id"].as_str().unwrap().to_owned());
        }
        token = a.body["next_page_token"].as_str().unwrap().to_owned();
        if token.is_empty() {
            return ids;
        }
    }
}

async fn device_count(s: &common::TestServer) -> usize {
    all_device_ids(s, 500).await.len()
}

#[tokio::test]
async fn batch_create_answers_each_device_with_a_token_that_pairs() {
    let s = common::start().await;
    let group = s
        .post(
            "/api/v1/groups",
            Some(&s.owner_key),
            json!({"name": "line-1"}),
        )
        .await;
    let group_id = group.body["id"].as_str().unwrap();
    let a = s
        .post(
            BATCH,
            Some(&s.owner_key),
            json!({"requests": [
                {"name": "cam-1", "serial_number": "SN-1", "group_id": group_id, "tags": ["dock"]},
                {"name": "cam-2", "serial_number": "SN-2"},
                {"name": "cam-3"},
            ]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let created = a.body["devices"].as_array().unwrap();
    assert_eq!(created.len(), 3);
    assert_eq!(created[0]["device"]["name"], "cam-1");
    assert_eq!(created[0]["device"]["serial_number"], "SN-1");
    assert_eq!(created[0]["device"]["group_id"], group_id);
    assert_eq!(created[0]["device"]["tags"], json!(["dock"]));
    assert_eq!(created[2]["device"]["status"], "never_seen");
    for c in created {
        assert!(c["provisioning_token_expires_at"].is_string());
        let paired = s
            .post(
                "/api/public/v1/pair",
                None,
                json!({"provisioning_token": c["provisioning_token"]}),
            )
            .await;
        assert_eq!(paired.status, StatusCode::OK, "{}", paired.body);
        assert_eq!(paired.body["device_id"], c["device"]["id"]);
    }

    // gRPC, the same core path.
    let mut admin = s.admin_client(Some(&s.owner_key)).await;
    let answer = admin
        .batch_create_devices(swrm::proto::BatchCreateDevicesRequest {
            requests: vec![swrm::proto::CreateDeviceRequest {
                name: "cam-4".into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.devices.len(), 1);
    assert!(answer.devices[0].provisioning_token.starts_with("swrm_pt_"));
    assert_eq!(device_count(&s).await, 4);
}

#[tokio::test]
async fn batch_create_is_all_or_nothing_and_names_the_bad_device() {
    let s = common::start().await;
    s.post(
        BATCH,
        Some(&s.owner_key),
        json!({"requests": [{"name": "old", "serial_number": "SN-OLD"}]}),
    )
    .await;
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"name": format!("d{i}")}))
        .collect();
    let cases = [
        (
            json!({"requests": [{"name": "ok"}, {"name": "  "}]}),
            StatusCode::BAD_REQUEST,
            "requests[1].name",
        ),
        (
            json!({"requests": [{"name": "ok"}, {"name": "x", "tags": ["a", ""]}]}),
            StatusCode::BAD_REQUEST,
            "requests[1].tags[1]",
        ),
        (
            json!({"requests": [{"name": "ok"}, {"name": "x", "group_id": "nope"}]}),
            StatusCode::BAD_REQUEST,
            "requests[1].group_id",
        ),
        (
            json!({"requests": [{"name": "ok"}, {"name": "x", "location_id": uuid::Uuid::now_v7()}]}),
            StatusCode::NOT_FOUND,
            "requests[1].location_id",
        ),
        (
            json!({"requests": [{"name": "a", "serial_number": "SN-9"}, {"name": "b", "serial_number": "SN-9"}]}),
            StatusCode::BAD_REQUEST,
            "requests[1].serial_number",
        ),
        (
            json!({"requests": [{"name": "a", "serial_number": "SN-NEW"}, {"name": "b", "serial_number": "SN-OLD"}]}),
            StatusCode::CONFLICT,
            "requests[1].serial_number",
        ),
        (json!({"requests": []}), StatusCode::BAD_REQUEST, "requests"),
        (
            json!({"requests": many}),
            StatusCode::BAD_REQUEST,
            "requests",
        ),
    ];
    for (body, status, names) in cases {
        let a = s.post(BATCH, Some(&s.owner_key), body).await;
        assert_eq!(a.status, status, "{}", a.body);
        let message = a.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{message} should name {names}");
    }
    assert_eq!(device_count(&s).await, 1, "nothing but the first device");

    // Another organization's group is not found.
    let other = s.other_org("other").await;
    let theirs = s
        .post("/api/v1/groups", Some(&other), json!({"name": "theirs"}))
        .await;
    let a = s
        .post(
            BATCH,
            Some(&s.owner_key),
            json!({"requests": [{"name": "x", "group_id": theirs.body["id"]}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    assert_eq!(device_count(&s).await, 1);
}

#[tokio::test]
async fn a_list_of_100000_devices_pages_through_every_device_exactly_once() {
    let s = common::start().await;
    let mut created = HashSet::new();
    for batch in 0..100 {
        let requests: Vec<Value> = (0..1000)
            .map(|i| json!({"name": format!("cam-{batch}-{i}")}))
            .collect();
        let a = s
            .post(BATCH, Some(&s.owner_key), json!({"requests": requests}))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        for d in a.body["devices"].as_array().unwrap() {
            created.insert(d["device"]["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(created.len(), 100_000);
    let listed = all_device_ids(&s, 500).await;
    assert_eq!(listed.len(), 100_000, "every device once");
    let unique: HashSet<String> = listed.into_iter().collect();
    assert_eq!(unique, created);
}

/// Runs `swrm admin import-devices` on the test server's database.
async fn import(s: &common::TestServer, csv: &str, out: &std::path::Path) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("factory.csv");
    std::fs::write(&file, csv).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_swrm"));
    cmd.args(["admin", "import-devices"])
        .arg(&file)
        .arg("--tokens-out")
        .arg(out)
        .arg("--data-dir")
        .arg(s.data_dir());
    if let Some(url) = &s.database_url {
        cmd.arg("--database-url").arg(url);
    }
    cmd.output().await.unwrap()
}

#[tokio::test]
async fn the_csv_import_creates_every_line_and_writes_private_tokens() {
    let s = common::start().await;
    let group = s
        .post(
            "/api/v1/groups",
            Some(&s.owner_key),
            json!({"name": "line-1"}),
        )
        .await;
    let location = s
        .post(
            "/api/v1/locations",
            Some(&s.owner_key),
            json!({"name": "plant"}),
        )
        .await;
    let out_dir = tempfile::tempdir().unwrap();
    let tokens = out_dir.path().join("tokens.csv");
    let csv = format!(
        "name,serial,group,location,tags\n\
         cam-1,SN-1,line-1,plant,dock;north\n\
         \"cam, two\",SN-2,{},,\n\
         cam-3\n",
        group.body["id"].as_str().unwrap()
    );
    let out = import(&s, &csv, &tokens).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["created"], 3);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&tokens).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "tokens readable by the owner only");
    }
    let mut reader = csv::Reader::from_path(&tokens).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(&rows[0][0], "2", "the line number");
    assert_eq!(&rows[1][1], "cam, two");

    let first = s
        .get(
            &format!("/api/v1/devices/{}", &rows[0][3]),
            Some(&s.owner_key),
        )
        .await;
    assert_eq!(first.body["serial_number"], "SN-1");
    assert_eq!(first.body["group_id"], group.body["id"]);
    assert_eq!(first.body["location_id"], location.body["id"]);
    assert_eq!(first.body["tags"], json!(["dock", "north"]));
    let paired = s
        .post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": &rows[2][4]}),
        )
        .await;
    assert_eq!(paired.status, StatusCode::OK, "{}", paired.body);
    assert_eq!(paired.body["name"], "cam-3");

    // The same serials again: 409 for the file, nothing imported, and an
    // existing tokens file is never overwritten.
    let again = import(&s, "cam-9,SN-1\n", &out_dir.path().join("again.csv")).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("line 1"));
    assert!(!out_dir.path().join("again.csv").exists());
    let clobber = import(&s, "cam-10\n", &tokens).await;
    assert!(!clobber.status.success());
    assert_eq!(device_count(&s).await, 3);
}

#[tokio::test]
async fn the_csv_import_reports_every_bad_line_and_imports_nothing() {
    let s = common::start().await;
    let out_dir = tempfile::tempdir().unwrap();
    let tokens = out_dir.path().join("tokens.csv");
    let csv = "cam-1,SN-1\n\
               ,SN-2\n\
               cam-3,SN-3,no-such-group\n\
               cam-4,SN-1\n\
               cam-5,SN-5,,,a;b,extra\n\
               cam-6,SN-6\n";
    let out = import(&s, csv, &tokens).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in ["line 2:", "line 3:", "line 4:", "line 5:"] {
        assert!(stderr.contains(line), "{line} reported in:\n{stderr}");
    }
    for good in ["line 1:", "line 6:"] {
        assert!(!stderr.contains(good), "{good} is fine:\n{stderr}");
    }
    assert!(stderr.contains("no-such-group"), "{stderr}");
    assert!(!tokens.exists(), "no tokens file when nothing is imported");
    assert_eq!(device_count(&s).await, 0);
}

#[tokio::test]
async fn device_lists_filter_by_group_location_and_status() {
    let s = common::start_with_clock(|_| {}).await;
    let group = s
        .post("/api/v1/groups", Some(&s.owner_key), json!({"name": "g"}))
        .await;
    let place = s
        .post(
            "/api/v1/locations",
            Some(&s.owner_key),
            json!({"name": "l"}),
        )
        .await;
    let (group_id, location_id) = (group.body["id"].clone(), place.body["id"].clone());
    let a = s
        .post(
            BATCH,
            Some(&s.owner_key),
            json!({"requests": [
                {"name": "in-group", "group_id": group_id},
                {"name": "in-both", "group_id": group_id, "location_id": location_id},
                {"name": "nowhere"},
            ]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let token = a.body["devices"][2]["provisioning_token"].clone();
    let paired = s
        .post(
            "/api/public/v1/pair",
            None,
            json!({"provisioning_token": token}),
        )
        .await;
    let key = paired.body["api_key"].as_str().unwrap();
    assert_eq!(s.heartbeat(key).await.status, StatusCode::OK);

    let names = |query: String| {
        let s = &s;
        async move {
            let a = s
                .get(&format!("/api/v1/devices?{query}"), Some(&s.owner_key))
                .await;
            assert_eq!(a.status, StatusCode::OK, "{query}: {}", a.body);
            let mut names: Vec<String> = a.body["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .collect();
            names.sort();
            names
        }
    };
    let (g, l) = (group_id.as_str().unwrap(), location_id.as_str().unwrap());
    assert_eq!(
        names(format!("group_id={g}")).await,
        ["in-both", "in-group"]
    );
    assert_eq!(names(format!("location_id={l}")).await, ["in-both"]);
    assert_eq!(
        names(format!("group_id={g}&location_id={l}")).await,
        ["in-both"]
    );
    assert_eq!(names("status=online".into()).await, ["nowhere"]);
    assert_eq!(
        names("status=never_seen".into()).await,
        ["in-both", "in-group"]
    );
    assert!(names("status=offline".into()).await.is_empty());
    // Three missed intervals later it is offline.
    s.clock.advance(std::time::Duration::from_secs(91));
    assert_eq!(names("status=offline".into()).await, ["nowhere"]);
    assert!(names("status=online".into()).await.is_empty());

    let bad = s
        .get("/api/v1/devices?status=asleep", Some(&s.owner_key))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let foreign = s
        .get(
            &format!("/api/v1/devices?group_id={}", uuid::Uuid::now_v7()),
            Some(&s.owner_key),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::OK);
    assert_eq!(foreign.body["devices"], json!([]));
}

#[tokio::test]
async fn concurrent_pairings_share_commits_and_each_token_works_once() {
    // A factory line behind one address: the per-IP pairing limit is off.
    let s = common::start_with(|c| c.rate_limits.pair_rate_per_minute = 0).await;
    let requests: Vec<Value> = (0..40).map(|i| json!({"name": format!("p{i}")})).collect();
    let a = s
        .post(BATCH, Some(&s.owner_key), json!({"requests": requests}))
        .await;
    let tokens: Vec<Value> = a.body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["provisioning_token"].clone())
        .collect();
    // Every token twice, all at once: one pairing each wins.
    let mut pairs = tokio::task::JoinSet::new();
    for token in tokens.iter().chain(tokens.iter()) {
        let (http, url, token) = (
            s.http.clone(),
            format!("{}/api/public/v1/pair", s.base),
            token.clone(),
        );
        pairs.spawn(async move {
            let r = http
                .post(url)
                .json(&json!({"provisioning_token": token}))
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (token, status, body)
        });
    }
    let mut won = std::collections::HashMap::new();
    while let Some(done) = pairs.join_next().await {
        let (token, status, body) = done.unwrap();
        match status {
            StatusCode::OK => {
                let key = body["api_key"].as_str().unwrap().to_owned();
                assert!(
                    won.insert(token.to_string(), key).is_none(),
                    "a token paired twice"
                );
            }
            StatusCode::UNAUTHORIZED => {}
            other => panic!("pairing answered {other}: {body}"),
        }
    }
    assert_eq!(won.len(), tokens.len(), "every token paired once");
    for key in won.values() {
        assert_eq!(s.heartbeat(key).await.status, StatusCode::OK);
    }
}

/// PostgreSQL: after 10,000 devices created in bulk, the server refreshes
/// the planner's statistics itself (plans made on a small table would turn
/// pairing's lookups into scans; this machine runs without autovacuum).
#[tokio::test]
async fn bulk_creation_refreshes_the_planners_statistics() {
    let s = common::start().await;
    let Some(url) = s.database_url.clone() else {
        return;
    };
    let owner = sea_orm::Database::connect(&url).await.unwrap();
    let analyzed = || async {
        use sea_orm::ConnectionTrait;
        owner
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'devices' \
                 AND greatest(last_analyze, last_autoanalyze) IS NOT NULL",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<i64>(0)
            .unwrap()
            == 1
    };
    if analyzed().await {
        eprintln!("skipped: autovacuum analyzed the new database already");
        return;
    }
    for batch in 0..10 {
        let requests: Vec<Value> = (0..1000)
            .map(|i| json!({"name": format!("cam-{batch}-{i}")}))
            .collect();
        let a = s
            .post(BATCH, Some(&s.owner_key), json!({"requests": requests}))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    let started = std::time::Instant::now();
    while !analyzed().await {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "devices not analyzed after 10,000 were created"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
