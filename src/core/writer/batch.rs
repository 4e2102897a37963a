//! One batch, one transaction: per organization, heartbeats as one
//! `UPDATE … FROM (VALUES …)`, then readings, telemetry and events as
//! multi-row `INSERT`s (chunked under each database's bind-parameter limit),
//! and the latest value of each series upserted beside them. A reading whose
//! `(device, seq)` is already stored is skipped by `ON CONFLICT DO NOTHING`;
//! `RETURNING` tells which rows went in.

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseTransaction, Statement, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

use super::{Done, Job, Liveness};
use crate::{error::Result, store::Store};

/// Rows per statement: 7 parameters each stays far below SQLite's 32,766
/// and PostgreSQL's 65,535.
const CHUNK: usize = 1000;

pub async fn write(store: &Store, jobs: &[&Job]) -> Result<Vec<Done>> {
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
    }
    tx.commit().await?;
    Ok(done
        .into_iter()
        .map(|d| d.expect("every job is answered"))
        .collect())
}

/// A statement under construction, with its backend's placeholders.
struct Sql {
    backend: DatabaseBackend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    fn new(conn: &DatabaseTransaction, text: &str) -> Self {
        Self {
            backend: conn.get_database_backend(),
            text: text.to_owned(),
            values: Vec::new(),
        }
    }

    /// Appends a placeholder for `value`; `pg_type` types it on PostgreSQL
    /// where nothing else would (inside `VALUES` of an `UPDATE … FROM`).
    fn param(&mut self, value: impl Into<Value>, pg_type: &str) -> &mut Self {
        self.values.push(value.into());
        if self.backend == DatabaseBackend::Postgres {
            self.text.push_str(&format!("${}", self.values.len()));
            if !pg_type.is_empty() {
                self.text.push_str("::");
                self.text.push_str(pg_type);
            }
        } else {
            self.text.push('?');
        }
        self
    }

    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn statement(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text, self.values)
    }
}

async fn heartbeats(
    conn: &DatabaseTransaction,
    org: Uuid,
    jobs: &[&Job],
    idx: &[usize],
    done: &mut [Option<Done>],
) -> Result<()> {
    // The latest heartbeat per device; fields a later one leaves out keep
    // the earlier one's value.
    let mut merged: Vec<Liveness> = Vec::new();
    for &i in idx {
        let Job::Heartbeat(h) = jobs[i] else { continue };
        match merged.iter_mut().find(|m| m.device_id == h.device_id) {
            None => merged.push(h.clone()),
            Some(m) => {
                m.at = m.at.max(h.at);
                m.source_ip.clone_from(&h.source_ip);
                merge(&mut m.firmware_version, &h.firmware_version);
                merge(&mut m.reported_ip, &h.reported_ip);
                merge(&mut m.hostname, &h.hostname);
                if h.uptime_seconds.is_some() {
                    m.uptime_seconds = h.uptime_seconds;
                }
            }
        }
    }
    let mut found: HashSet<Uuid> = HashSet::new();
    for chunk in merged.chunks(CHUNK) {
        let mut sql = Sql::new(
            conn,
            "UPDATE devices SET last_seen_at = v.column2, source_ip = v.column3, \
             firmware_version = COALESCE(v.column4, firmware_version), \
             uptime_seconds = COALESCE(v.column5, uptime_seconds), \
             reported_ip = COALESCE(v.column6, reported_ip), \
             hostname = COALESCE(v.column7, hostname) FROM (VALUES ",
        );
        for (n, h) in chunk.iter().enumerate() {
            sql.push(if n == 0 { "(" } else { ", (" })
                .param(h.device_id, "uuid")
                .push(", ")
                .param(h.at, "timestamptz")
                .push(", ")
                .param(h.source_ip.clone(), "text")
                .push(", ")
                .param(h.firmware_version.clone(), "text")
                .push(", ")
                .param(h.uptime_seconds, "bigint")
                .push(", ")
                .param(h.reported_ip.clone(), "text")
                .push(", ")
                .param(h.hostname.clone(), "text")
                .push(")");
        }
        sql.push(") AS v WHERE devices.id = v.column1 AND devices.org_id = ")
            .param(org, "uuid")
            .push(" RETURNING devices.id");
        for row in conn.query_all_raw(sql.statement()).await? {
            found.insert(row.try_get::<Uuid>("", "id")?);
        }
    }
    for &i in idx {
        if let Job::Heartbeat(h) = jobs[i] {
            done[i] = Some(Done::Heartbeat(found.contains(&h.device_id)));
        }
    }
    Ok(())
}

fn merge(into: &mut Option<String>, later: &Option<String>) {
    if later.is_some() {
        into.clone_from(later);
    }
}

async fn readings(
    conn: &DatabaseTransaction,
    jobs: &[&Job],
    idx: &[usize],
    done: &mut [Option<Done>],
) -> Result<()> {
    // (job, row) of each reading to insert; a seq repeated within the
    // batch goes in once, the first time.
    let mut seen: HashSet<(Uuid, i64)> = HashSet::new();
    let mut todo: Vec<(usize, usize)> = Vec::new();
    let mut first: HashSet<(usize, usize)> = HashSet::new();
    for &i in idx {
        let Job::Readings(r) = jobs[i] else { continue };
        for (j, row) in r.rows.iter().enumerate() {
            if row.seq.is_none_or(|s| seen.insert((r.device_id, s))) {
                first.insert((i, j));
                todo.push((i, j));
            }
        }
    }
    let mut inserted: HashSet<(Uuid, i64)> = HashSet::new();
    let mut latest: HashMap<(Uuid, &str), (f64, i64)> = HashMap::new();
    for chunk in todo.chunks(CHUNK) {
        let mut sql = Sql::new(
            conn,
            "INSERT INTO readings (org_id, device_id, sensor_type, value, ts_ms, received_ms, seq) VALUES ",
        );
        for (n, &(i, j)) in chunk.iter().enumerate() {
            let Job::Readings(r) = jobs[i] else { continue };
            let row = &r.rows[j];
            sql.push(if n == 0 { "(" } else { ", (" })
                .param(r.org_id, "")
                .push(", ")
                .param(r.device_id, "")
                .push(", ")
                .param(row.sensor_type.clone(), "")
                .push(", ")
                .param(row.value, "")
                .push(", ")
                .param(row.ts_ms, "")
                .push(", ")
                .param(r.received_ms, "")
                .push(", ")
                .param(row.seq, "")
                .push(")");
        }
        sql.push(" ON CONFLICT DO NOTHING RETURNING device_id, seq");
        for row in conn.query_all_raw(sql.statement()).await? {
            if let Some(seq) = row.try_get::<Option<i64>>("", "seq")? {
                inserted.insert((row.try_get::<Uuid>("", "device_id")?, seq));
            }
        }
    }
    for &i in idx {
        let Job::Readings(r) = jobs[i] else { continue };
        let stored: Vec<bool> = r
            .rows
            .iter()
            .enumerate()
            .map(|(j, row)| {
                first.contains(&(i, j))
                    && row.seq.is_none_or(|s| inserted.contains(&(r.device_id, s)))
            })
            .collect();
        for (row, _) in r.rows.iter().zip(&stored).filter(|(_, s)| **s) {
            let entry = latest
                .entry((r.device_id, row.sensor_type.as_str()))
                .or_insert((row.value, row.ts_ms));
            if row.ts_ms >= entry.1 {
                *entry = (row.value, row.ts_ms);
            }
        }
        done[i] = Some(Done::Readings(stored));
    }
    let org = idx.first().map(|&i| jobs[i].org_id());
    let latest: Vec<(Uuid, String, Value, i64)> = latest
        .into_iter()
        .map(|((d, k), (v, ts))| (d, k.to_owned(), v.into(), ts))
        .collect();
    upsert_latest(conn, "latest_readings", "sensor_type", org, &latest).await
}

async fn telemetry(
    conn: &DatabaseTransaction,
    jobs: &[&Job],
    idx: &[usize],
    done: &mut [Option<Done>],
) -> Result<()> {
    let rows: Vec<(usize, usize)> = idx
        .iter()
        .filter_map(|&i| match jobs[i] {
            Job::Telemetry(r) => Some((0..r.rows.len()).map(move |j| (i, j))),
            _ => None,
        })
        .flatten()
        .collect();
    let mut latest: HashMap<(Uuid, &str), (&str, i64)> = HashMap::new();
    for chunk in rows.chunks(CHUNK) {
        let mut sql = Sql::new(
            conn,
            "INSERT INTO telemetry (org_id, device_id, key, value, ts_ms, received_ms) VALUES ",
        );
        for (n, &(i, j)) in chunk.iter().enumerate() {
            let Job::Telemetry(r) = jobs[i] else { continue };
            let row = &r.rows[j];
            sql.push(if n == 0 { "(" } else { ", (" })
                .param(r.org_id, "")
                .push(", ")
                .param(r.device_id, "")
                .push(", ")
                .param(row.key.clone(), "")
                .push(", ")
                .param(row.value.clone(), "")
                .push(", ")
                .param(row.ts_ms, "")
                .push(", ")
                .param(r.received_ms, "")
                .push(")");
            let entry = latest
                .entry((r.device_id, row.key.as_str()))
                .or_insert((row.value.as_str(), row.ts_ms));
            if row.ts_ms >= entry.1 {
                *entry = (row.value.as_str(), row.ts_ms);
            }
        }
        conn.execute_raw(sql.statement()).await?;
    }
    for &i in idx {
        if let Job::Telemetry(r) = jobs[i] {
            done[i] = Some(Done::Stored(r.rows.len()));
        }
    }
    let org = idx.first().map(|&i| jobs[i].org_id());
    let latest: Vec<(Uuid, String, Value, i64)> = latest
        .into_iter()
        .map(|((d, k), (v, ts))| (d, k.to_owned(), v.to_owned().into(), ts))
        .collect();
    upsert_latest(conn, "latest_telemetry", "key", org, &latest).await
}

/// Keeps the newest value of each (device, series).
async fn upsert_latest(
    conn: &DatabaseTransaction,
    table: &str,
    series: &str,
    org: Option<Uuid>,
    latest: &[(Uuid, String, Value, i64)],
) -> Result<()> {
    let Some(org) = org else { return Ok(()) };
    for chunk in latest.chunks(CHUNK) {
        let mut sql = Sql::new(
            conn,
            &format!("INSERT INTO {table} (device_id, {series}, org_id, value, ts_ms) VALUES "),
        );
        for (n, (device, key, value, ts)) in chunk.iter().enumerate() {
            sql.push(if n == 0 { "(" } else { ", (" })
                .param(*device, "")
                .push(", ")
                .param(key.clone(), "")
                .push(", ")
                .param(org, "")
                .push(", ")
                .param(value.clone(), "")
                .push(", ")
                .param(*ts, "")
                .push(")");
        }
        sql.push(&format!(
            " ON CONFLICT (device_id, {series}) DO UPDATE SET value = excluded.value, \
             ts_ms = excluded.ts_ms WHERE excluded.ts_ms >= {table}.ts_ms"
        ));
        conn.execute_raw(sql.statement()).await?;
    }
    Ok(())
}

async fn events(
    conn: &DatabaseTransaction,
    jobs: &[&Job],
    idx: &[usize],
    done: &mut [Option<Done>],
) -> Result<()> {
    let rows: Vec<(usize, usize)> = idx
        .iter()
        .filter_map(|&i| match jobs[i] {
            Job::Events(r) => Some((0..r.rows.len()).map(move |j| (i, j))),
            _ => None,
        })
        .flatten()
        .collect();
    for chunk in rows.chunks(CHUNK) {
        let mut sql = Sql::new(
            conn,
            "INSERT INTO events (id, org_id, device_id, type, severity, message, data, ts_ms, received_ms) VALUES ",
        );
        for (n, &(i, j)) in chunk.iter().enumerate() {
            let Job::Events(r) = jobs[i] else { continue };
            let e = &r.rows[j];
            sql.push(if n == 0 { "(" } else { ", (" })
                .param(e.id, "")
                .push(", ")
                .param(r.org_id, "")
                .push(", ")
                .param(r.device_id, "")
                .push(", ")
                .param(e.kind.clone(), "")
                .push(", ")
                .param(e.severity.clone(), "")
                .push(", ")
                .param(e.message.clone(), "")
                .push(", ")
                .param(e.data.clone(), "")
                .push(", ")
                .param(e.ts_ms, "")
                .push(", ")
                .param(r.received_ms, "")
                .push(")");
        }
        conn.execute_raw(sql.statement()).await?;
    }
    for &i in idx {
        if let Job::Events(r) = jobs[i] {
            done[i] = Some(Done::Stored(r.rows.len()));
        }
    }
    Ok(())
}
