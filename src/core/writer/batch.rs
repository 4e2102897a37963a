//! One batch, one transaction: per organization, heartbeats as one
//! upsert into `device_liveness`, then readings, telemetry and events as one `INSERT …
//! SELECT` each, and the latest value of each series upserted beside them;
//! then capture rows, and the command queue's jobs in the order they came.
//!
//! The rows travel as columns (see [`Columns`]).
//!
//! Statements return no rows on the common path. A reading whose `(device,
//! seq)` is already stored is skipped by `ON CONFLICT DO NOTHING`; on
//! SQLite one range query per batch (normally empty) finds it first, on
//! PostgreSQL the insert's own statement answers it (see
//! [`insert_readings_postgres`]).

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseTransaction};
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

use super::{
    Done, Job, Liveness,
    columns::{Columns, Kind, text},
};
use crate::{core::commands::handoff::Handoffs, error::Result, store::Store};

pub async fn write(store: &Store, jobs: &[&Job], handoffs: &Handoffs) -> Result<Vec<Done>> {
    let mut tx = store.batch_tx().await?;
    let mut done: Vec<Option<Done>> = jobs.iter().map(|_| None).collect();
    let mut by_org: BTreeMap<Uuid, Vec<usize>> = BTreeMap::new();
    for (i, job) in jobs.iter().enumerate() {
        by_org.entry(job.org_id()).or_default().push(i);
    }
    for (org, idx) in by_org {
        let conn = tx.scope(org).await?;
        heartbeats(conn, org, jobs, &idx, &mut done).await?;
        readings(conn, jobs, &idx, &mut done).await?;
        telemetry(conn, jobs, &idx, &mut done).await?;
        events(conn, jobs, &idx, &mut done).await?;
        super::blobs::pending_records(conn, jobs, &idx, &mut done).await?;
        super::blobs::captures(conn, jobs, &idx, &mut done).await?;
        super::commands::run(&mut tx, org, jobs, &idx, &mut done, handoffs).await?;
    }
    tx.commit().await?;
    Ok(done
        .into_iter()
        .map(|d| d.expect("every job is answered"))
        .collect())
}

async fn heartbeats(
    conn: &DatabaseTransaction,
    org: Uuid,
    jobs: &[&Job],
    idx: &[usize],
    done: &mut [Option<Done>],
) -> Result<()> {
    // The latest heartbeat per device (flushes hold one already; two
    // flushes may meet in one batch).
    let mut merged: Vec<Liveness> = Vec::new();
    let mut at: HashMap<Uuid, usize> = HashMap::new();
    for &i in idx {
        let Job::Liveness(l) = jobs[i] else { continue };
        for h in &l.rows {
            match at.get(&h.device_id) {
                None => {
                    at.insert(h.device_id, merged.len());
                    merged.push(h.clone());
                }
                Some(&k) => merged[k].absorb(h),
            }
        }
        done[i] = Some(Done::Stored(l.rows.len()));
    }
    if merged.is_empty() {
        return Ok(());
    }
    // In key order (ids are time-ordered v7), so the upsert's key lookups
    // walk the primary-key index in order instead of seeking at random.
    // The rows themselves sit in first-heard order on both databases, so
    // this is a small saving: 7% of the statement's time in isolation.
    merged.sort_unstable_by_key(|h| h.device_id);
    let mut cols = Columns::new(&[
        Kind::Uuid,
        Kind::Time,
        Kind::Text,
        Kind::Text,
        Kind::Int,
        Kind::Text,
        Kind::Text,
    ]);
    for h in &merged {
        cols.row(vec![
            h.device_id.into(),
            h.at.into(),
            h.source_ip.clone().into(),
            text(&h.firmware_version),
            h.uptime_seconds.unwrap_or(-1).into(),
            text(&h.reported_ip),
            text(&h.hostname),
        ]);
    }
    // One short row per device in `device_liveness` (see its migration),
    // inserted the first time and updated after.
    let org_param = if conn.get_database_backend() == DatabaseBackend::Postgres {
        ", (SELECT $::uuid AS org_id) AS o"
    } else {
        ", (SELECT $ AS org_id) AS o"
    };
    cols.run(
        conn,
        "INSERT INTO device_liveness (device_id, org_id, last_seen_at, source_ip, \
         firmware_version, uptime_seconds, reported_ip, hostname) \
         SELECT v.column1, o.org_id, v.column2, v.column3, NULLIF(v.column4, ''), \
         NULLIF(v.column5, -1), NULLIF(v.column6, ''), NULLIF(v.column7, '') FROM ",
        // SQLite needs the WHERE to read ON CONFLICT as the upsert clause.
        &format!(
            "{org_param} WHERE true ON CONFLICT (device_id) DO UPDATE SET \
         last_seen_at = excluded.last_seen_at, source_ip = excluded.source_ip, \
         firmware_version = COALESCE(excluded.firmware_version, device_liveness.firmware_version), \
         uptime_seconds = COALESCE(excluded.uptime_seconds, device_liveness.uptime_seconds), \
         reported_ip = COALESCE(excluded.reported_ip, device_liveness.reported_ip), \
         hostname = COALESCE(excluded.hostname, device_liveness.hostname)"
        ),
        &[org.into()],
        false,
    )
    .await?;
    Ok(())
}

async fn readings(
    conn: &DatabaseTransaction,
    jobs: &[&Job],
    idx: &[usize],
    done: &mut [Option<Done>],
) -> Result<()> {
    let jobs_here: Vec<usize> = idx
        .iter()
        .copied()
        .filter(|&i| matches!(jobs[i], Job::Readings(_)))
        .collect();
    if jobs_here.is_empty() {
        return Ok(());
    }
    let postgres = conn.get_database_backend() == DatabaseBackend::Postgres;
    // SQLite: the seqs already stored, first (normally none: an index range
    // per device). PostgreSQL learns them from the insert itself, below.
    let mut already = if postgres {
        HashSet::new()
    } else {
        stored_seqs(conn, jobs, &jobs_here).await?
    };
    // A seq repeated within the batch goes in once, the first time; one
    // already stored does not go in.
    let mut seen: HashSet<(Uuid, i64)> = HashSet::new();
    let mut rows = Columns::new(&[
        Kind::Uuid,
        Kind::Uuid,
        Kind::Text,
        Kind::Float,
        Kind::Int,
        Kind::Int,
        Kind::Int,
    ]);
    // Per job, per reading: whether it goes to the database (not a repeat
    // within the batch, nor already stored as far as is known yet).
    let mut sent: Vec<Vec<bool>> = Vec::with_capacity(jobs_here.len());
    for &i in &jobs_here {
        let Job::Readings(r) = jobs[i] else { continue };
        let mut job_sent = Vec::with_capacity(r.rows.len());
        for row in &r.rows {
            let fresh = row.seq.is_none_or(|s| {
                !already.contains(&(r.device_id, s)) && seen.insert((r.device_id, s))
            });
            job_sent.push(fresh);
            if fresh {
                rows.row(vec![
                    r.org_id.into(),
                    r.device_id.into(),
                    row.sensor_type.clone().into(),
                    row.value.into(),
                    row.ts_ms.into(),
                    r.received_ms.into(),
                    row.seq.unwrap_or(-1).into(),
                ]);
            }
        }
        sent.push(job_sent);
    }
    let org = jobs[jobs_here[0]].org_id();
    if postgres {
        already = insert_readings_postgres(conn, &rows, org).await?;
    } else {
        // A concurrent replica may store the same (device, seq) first;
        // then it is skipped here, and this answer's counts are off by
        // those readings (each is still stored once).
        rows.run(
            conn,
            &format!("{INSERT_READINGS}FROM "),
            " WHERE true ON CONFLICT DO NOTHING",
            &[],
            false,
        )
        .await?;
    }
    let mut latest: HashMap<(Uuid, &str), (f64, i64)> = HashMap::new();
    for (&i, job_sent) in jobs_here.iter().zip(sent) {
        let Job::Readings(r) = jobs[i] else { continue };
        let mut stored = Vec::with_capacity(r.rows.len());
        for (row, sent) in r.rows.iter().zip(job_sent) {
            let fresh = sent && row.seq.is_none_or(|s| !already.contains(&(r.device_id, s)));
            stored.push(fresh);
            if !fresh || postgres {
                continue;
            }
            let entry = latest
                .entry((r.device_id, row.sensor_type.as_str()))
                .or_insert((row.value, row.ts_ms));
            if row.ts_ms >= entry.1 {
                *entry = (row.value, row.ts_ms);
            }
        }
        done[i] = Some(Done::Readings(stored));
    }
    if postgres {
        return Ok(()); // the insert kept the latest values too
    }
    let mut cols = Columns::new(&[Kind::Uuid, Kind::Text, Kind::Uuid, Kind::Float, Kind::Int]);
    for ((device, key), (value, ts)) in latest {
        cols.row(vec![
            device.into(),
            key.into(),
            org.into(),
            value.into(),
            ts.into(),
        ]);
    }
    upsert_latest(conn, "latest_readings", "sensor_type", &cols).await
}

/// The insert of readings from `v` (columns as in [`readings`]).
const INSERT_READINGS: &str = "INSERT INTO readings \
    (org_id, device_id, sensor_type, value, ts_ms, received_ms, seq) \
    SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, \
    NULLIF(v.column7, -1) ";

/// PostgreSQL: stores `rows` and keeps each series' latest value in one
/// statement (one round trip for the whole batch), answering the `(device,
/// seq)` that did not go in because they were already stored (a retry, or
/// a concurrent replica's): they conflict on the unique index, so the
/// insert skips them and its `RETURNING` lacks them. Normally no row comes
/// back.
async fn insert_readings_postgres(
    conn: &DatabaseTransaction,
    rows: &Columns,
    org: Uuid,
) -> Result<HashSet<(Uuid, i64)>> {
    let (_, back) = rows
        .run(
            conn,
            "WITH v AS MATERIALIZED (SELECT * FROM ",
            &format!(
                "), ins AS ({INSERT_READINGS}FROM v ON CONFLICT DO NOTHING \
                 RETURNING device_id, sensor_type, value, ts_ms, seq), \
                 latest AS (INSERT INTO latest_readings (device_id, sensor_type, org_id, value, ts_ms) \
                 SELECT DISTINCT ON (device_id, sensor_type) device_id, sensor_type, $::uuid, value, ts_ms \
                 FROM ins ORDER BY device_id, sensor_type, ts_ms DESC \
                 ON CONFLICT (device_id, sensor_type) DO UPDATE SET value = excluded.value, \
                 ts_ms = excluded.ts_ms WHERE excluded.ts_ms >= latest_readings.ts_ms) \
                 SELECT v.column2 AS device_id, v.column7 AS seq FROM v WHERE v.column7 <> -1 \
                 AND NOT EXISTS (SELECT 1 FROM ins WHERE ins.device_id = v.column2 AND ins.seq = v.column7)"
            ),
            &[org.into()],
            true,
        )
        .await?;
    seq_pairs(&back)
}

/// The `(device, seq)` pairs of these jobs already stored: one range per
/// job, on the unique `(device_id, seq)` index.
async fn stored_seqs(
    conn: &DatabaseTransaction,
    jobs: &[&Job],
    idx: &[usize],
) -> Result<HashSet<(Uuid, i64)>> {
    let mut ranges = Columns::new(&[Kind::Uuid, Kind::Int, Kind::Int]);
    for &i in idx {
        let Job::Readings(r) = jobs[i] else { continue };
        let seqs = r.rows.iter().filter_map(|row| row.seq);
        if let (Some(low), Some(high)) = (seqs.clone().min(), seqs.max()) {
            ranges.row(vec![r.device_id.into(), low.into(), high.into()]);
        }
    }
    if ranges.len() == 0 {
        return Ok(HashSet::new());
    }
    // PostgreSQL joined the ranges to a sequential scan of every reading
    // (a plan made before the table had statistics, kept as it grew: seen
    // with `auto_explain`); a lateral subquery it cannot flatten (`OFFSET
    // 0`) is one index range per device whatever the statistics.
    let (before, after) = if conn.get_database_backend() == DatabaseBackend::Postgres {
        (
            "SELECT r.device_id, r.seq FROM ",
            " CROSS JOIN LATERAL (SELECT device_id, seq FROM readings \
             WHERE device_id = v.column1 AND seq BETWEEN v.column2 AND v.column3 OFFSET 0) AS r",
        )
    } else {
        (
            "SELECT r.device_id, r.seq FROM readings AS r JOIN ",
            " ON r.device_id = v.column1 AND r.seq BETWEEN v.column2 AND v.column3",
        )
    };
    let (_, rows) = ranges.run(conn, before, after, &[], true).await?;
    seq_pairs(&rows)
}

/// Rows of `device_id` and `seq` as pairs.
fn seq_pairs(rows: &[sea_orm::QueryResult]) -> Result<HashSet<(Uuid, i64)>> {
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<Uuid>("", "device_id")?,
                r.try_get::<i64>("", "seq")?,
            ))
        })
        .collect()
}

async fn telemetry(
    conn: &DatabaseTransaction,
    jobs: &[&Job],
    idx: &[usize],
    done: &mut [Option<Done>],
) -> Result<()> {
    let mut rows = Columns::new(&[
        Kind::Uuid,
        Kind::Uuid,
        Kind::Text,
        Kind::Text,
        Kind::Int,
        Kind::Int,
    ]);
    let mut latest: HashMap<(Uuid, &str), (&str, i64)> = HashMap::new();
    let mut org = None;
    for &i in idx {
        let Job::Telemetry(r) = jobs[i] else { continue };
        org = Some(r.org_id);
        for row in &r.rows {
            rows.row(vec![
                r.org_id.into(),
                r.device_id.into(),
                row.key.clone().into(),
                row.value.clone().into(),
                row.ts_ms.into(),
                r.received_ms.into(),
            ]);
            let entry = latest
                .entry((r.device_id, row.key.as_str()))
                .or_insert((row.value.as_str(), row.ts_ms));
            if row.ts_ms >= entry.1 {
                *entry = (row.value.as_str(), row.ts_ms);
            }
        }
        done[i] = Some(Done::Stored(r.rows.len()));
    }
    let Some(org) = org else { return Ok(()) };
    rows.run(
        conn,
        "INSERT INTO telemetry (org_id, device_id, key, value, ts_ms, received_ms) SELECT * FROM ",
        " WHERE true",
        &[],
        false,
    )
    .await?;
    let mut cols = Columns::new(&[Kind::Uuid, Kind::Text, Kind::Uuid, Kind::Text, Kind::Int]);
    for ((device, key), (value, ts)) in latest {
        cols.row(vec![
            device.into(),
            key.into(),
            org.into(),
            value.into(),
            ts.into(),
        ]);
    }
    upsert_latest(conn, "latest_telemetry", "key", &cols).await
}

/// Keeps the newest value of each (device, series).
async fn upsert_latest(
    conn: &DatabaseTransaction,
    table: &str,
    series: &str,
    cols: &Columns,
) -> Result<()> {
    cols.run(
        conn,
        &format!("INSERT INTO {table} (device_id, {series}, org_id, value, ts_ms) SELECT * FROM "),
        &format!(
            " WHERE true ON CONFLICT (device_id, {series}) DO UPDATE SET value = excluded.value, \
             ts_ms = excluded.ts_ms WHERE excluded.ts_ms >= {table}.ts_ms"
        ),
        &[],
        false,
    )
    .await?;
    Ok(())
}

async fn events(
    conn: &DatabaseTransaction,
    jobs: &[&Job],
    idx: &[usize],
    done: &mut [Option<Done>],
) -> Result<()> {
    let mut rows = Columns::new(&[
        Kind::Uuid,
        Kind::Uuid,
        Kind::Uuid,
        Kind::Text,
        Kind::Text,
        Kind::Text,
        Kind::Text,
        Kind::Int,
        Kind::Int,
    ]);
    for &i in idx {
        let Job::Events(r) = jobs[i] else { continue };
        for e in &r.rows {
            rows.row(vec![
                e.id.into(),
                r.org_id.into(),
                r.device_id.into(),
                e.kind.clone().into(),
                e.severity.clone().into(),
                text(&e.message),
                text(&e.data),
                e.ts_ms.into(),
                r.received_ms.into(),
            ]);
        }
        done[i] = Some(Done::Stored(r.rows.len()));
    }
    rows.run(
        conn,
        "INSERT INTO events (id, org_id, device_id, type, severity, message, data, ts_ms, received_ms) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, NULLIF(v.column6, ''), \
         NULLIF(v.column7, ''), v.column8, v.column9 FROM ",
        " WHERE true",
        &[],
        false,
    )
    .await?;
    Ok(())
}
