//! What the server does when things go wrong around it: replicas starting
//! together, a stalled database, floods of forged keys, proxies' headers,
//! and the indexes the hot queries need.

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use serde_json::json;
use std::time::{Duration, Instant};
use swrm::Config;

use crate::common;

#[tokio::test]
async fn two_servers_started_together_on_an_empty_postgres_both_come_up() {
    let Some(url) = common::fresh_postgres_url().await else {
        return; // one process per SQLite file by design
    };
    let config = |dir: &tempfile::TempDir| {
        let mut c = Config::for_data_dir(dir.path());
        c.storage.database_url = Some(url.clone());
        c
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (first, second) = tokio::join!(swrm::build(config(&a)), swrm::build(config(&b)));
    let (first, created_a) = first.expect("first replica comes up");
    let (_second, created_b) = second.expect("second replica comes up");
    assert!(
        created_a.is_some() != created_b.is_some(),
        "exactly one creates organization default"
    );
    assert!(first.core.store.ping().await);
}

/// Holds the database's write lock from another connection until dropped.
struct Stall {
    release: tokio::sync::oneshot::Sender<()>,
    held: tokio::task::JoinHandle<()>,
}

impl Stall {
    async fn begin(url: &str, tables: &str) -> Stall {
        let db = Database::connect(url).await.expect("second connection");
        let postgres = db.get_database_backend() == DbBackend::Postgres;
        let (locked_tx, locked) = tokio::sync::oneshot::channel();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let url = url.to_owned();
        let tables = tables.to_owned();
        let held = tokio::spawn(async move {
            use sea_orm::TransactionTrait;
            if postgres {
                let tx = db.begin().await.unwrap();
                tx.execute_raw(Statement::from_string(
                    DbBackend::Postgres,
                    format!("LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"),
                ))
                .await
                .unwrap();
                let _ = locked_tx.send(());
                let _ = released.await;
                tx.rollback().await.unwrap();
            } else {
                // A raw connection, so BEGIN EXCLUSIVE stays on it.
                use sea_orm::sqlx::{Connection, Executor, SqliteConnection};
                let mut conn = SqliteConnection::connect(&url).await.unwrap();
                conn.execute("BEGIN EXCLUSIVE").await.unwrap();
                let _ = locked_tx.send(());
                let _ = released.await;
                conn.execute("ROLLBACK").await.unwrap();
            }
        });
        locked.await.expect("the lock is taken");
        Stall { release, held }
    }

    async fn end(self) {
        let _ = self.release.send(());
        self.held.await.unwrap();
    }
}

#[tokio::test]
async fn a_stalled_database_answers_503_quickly_never_500() {
    let s = common::start_with(|c| {
        c.storage.database_timeout_seconds = 1;
        c.rate_limits.device_rate_per_second = 0;
    })
    .await;
    let (_, cached) = s.paired_device("cam").await;
    assert_eq!(s.heartbeat(&cached).await.status, StatusCode::OK);
    let (_, uncached) = s.paired_device("fresh").await;
    let url = s.app.config.storage.database_url();

    let stall = Stall::begin(&url, "devices, device_keys").await;
    let started = Instant::now();
    let mut waves = Vec::new();
    for _ in 0..20 {
        let (http, base, key) = (s.http.clone(), s.base.clone(), cached.clone());
        waves.push(tokio::spawn(async move {
            let res = http
                .post(format!("{base}/api/public/v1/sensors"))
                .bearer_auth(key)
                .json(&json!({"readings": [{"sensor_type": "temperature", "value": 20.0}]}))
                .send()
                .await
                .unwrap();
            (res.status(), res.text().await.unwrap())
        }));
    }
    for wave in waves {
        let (status, body) = wave.await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("\"unavailable\""), "{body}");
    }
    // Twenty queued writes, one bounded wait: not one wait each.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // Heartbeats are flushed in the background (see `core::liveness`):
    // once the flushes have failed for longer than the database timeout,
    // heartbeats say so with 503 rather than pretend.
    let started = Instant::now();
    loop {
        let a = s.heartbeat(&cached).await;
        if a.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(a.error_code(), "unavailable");
            break;
        }
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "heartbeats still 200 after 10 s of failed flushes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if s.database_url.is_some() {
        // PostgreSQL also locks out the key lookup of an uncached key.
        let started = Instant::now();
        let a = s.heartbeat(&uncached).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
        assert!(started.elapsed() < Duration::from_secs(4));
    }
    stall.end().await;
    let started = Instant::now();
    while s.heartbeat(&cached).await.status != StatusCode::OK {
        assert!(started.elapsed() < Duration::from_secs(10), "no recovery");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(s.heartbeat(&uncached).await.status, StatusCode::OK);
}

#[tokio::test]
async fn forged_keys_from_many_addresses_never_evict_a_valid_key() {
    let s = common::start_with(|c| {
        c.key_cache_rejected_entries = 64;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let (_, key) = s.paired_device("cam").await;
    assert_eq!(s.heartbeat(&key).await.status, StatusCode::OK);
    let lookups = s.app.auth_db_lookups();
    for i in 0..600u32 {
        let forged = swrm::auth::secret::generate(swrm::auth::secret::SecretKind::DeviceKey);
        let res = s
            .http
            .post(format!("{}/api/public/v1/heartbeat", s.base))
            .bearer_auth(&forged.plaintext)
            .header("x-forwarded-for", format!("10.{}.{}.1", i / 250, i % 250))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    assert!(
        s.app.auth_db_lookups() >= lookups + 600,
        "each forged key was looked up"
    );
    assert!(s.app.keys.len() <= 64 + 2, "bounded: {}", s.app.keys.len());
    let before = s.app.auth_db_lookups();
    assert_eq!(s.heartbeat(&key).await.status, StatusCode::OK);
    assert_eq!(
        s.app.auth_db_lookups(),
        before,
        "the valid key is still answered from memory"
    );
}

#[tokio::test]
async fn forwarded_proto_counts_only_from_trusted_proxies() {
    let direct = common::start().await;
    let behind =
        common::start_with(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    for (s, expected) in [(&direct, "http://"), (&behind, "https://")] {
        let (_, key) = s.paired_device("cam").await;
        let res = s
            .http
            .get(format!("{}/api/public/v1/config", s.base))
            .bearer_auth(&key)
            .header("x-forwarded-proto", "https")
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = res.json().await.unwrap();
        let rest = body["endpoints"]["rest"].as_str().unwrap();
        assert!(rest.starts_with(expected), "{rest}");
    }
}

#[tokio::test]
async fn the_queries_that_walk_a_column_have_an_index_on_it() {
    let s = common::start().await;
    let db = s.app.core.store.unscoped();
    let wanted = [
        ("device_keys", "device_id"),
        ("provisioning_tokens", "device_id"),
        ("devices", "org_id"),
        ("devices", "location_id"),
        ("devices", "group_id"),
        ("api_keys", "org_id"),
        ("locations", "org_id"),
        ("device_groups", "org_id"),
    ];
    for (table, column) in wanted {
        let leading = leading_index_columns(db, table).await;
        assert!(
            leading.iter().any(|c| c == column),
            "{table}({column}) has no index; leading columns: {leading:?}"
        );
    }
}

/// The first column of every index on `table`.
async fn leading_index_columns(db: &sea_orm::DatabaseConnection, table: &str) -> Vec<String> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => format!(
            "SELECT a.attname AS col FROM pg_index i \
             JOIN pg_class t ON t.oid = i.indrelid \
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0] \
             WHERE t.relname = '{table}'"
        ),
        _ => format!(
            "SELECT ii.name AS col FROM pragma_index_list('{table}') il \
             JOIN pragma_index_info(il.name) ii WHERE ii.seqno = 0"
        ),
    };
    db.query_all_raw(Statement::from_string(backend, sql))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String>("", "col").unwrap())
        .collect()
}
