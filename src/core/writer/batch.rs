//! One batch, one transaction: per organization, heartbeats as one
//! upsert into `device_liveness`, then readings, telemetry and events as one `INSERT …
//! SELECT` each, and the latest value of each series upserted beside them;
//! then capture rows, and the command queue's jobs in the order they came.
//!
//! The rows travel as columns (see [`Columns`]): as `VALUES` lists, chunked
//! under SQLite's bind-parameter limit; and on PostgreSQL, once a batch is
//! large, as arrays through `unnest`, so the statement keeps one text and a
//! handful of parameters (a `VALUES` list of thousands of parameters costs
//! PostgreSQL more to parse and plan than to run; a short one is cheaper
//! than arrays, measured with `examples/loadgen`).
//!
//! Statements return no rows on the common path: a reading whose `(device,
//! seq)` is already stored is found by one range query per batch (normally
//! empty), and `ON CONFLICT DO NOTHING` guards against a concurrent
//! replica; heartbeats compare the rows updated with the devices named.
//! NULLs travel as sentinels (`''`, `-1`) that no stored value can take,
//! because the array encoding has no NULL elements.

use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseTransaction, Statement, Value, sea_query::ArrayType,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

use super::{Done, Job, Liveness};
use crate::{error::Result, store::Store};

/// Rows per `VALUES` statement (9 parameters at most, under SQLite's
/// 32,766 and PostgreSQL's 65,535).
const CHUNK: usize = 1000;
/// From this many rows, PostgreSQL takes arrays (`unnest`) instead.
const ARRAYS_FROM: usize = 256;

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
        super::blobs::pending_records(conn, jobs, &idx, &mut done).await?;
        super::blobs::captures(conn, jobs, &idx, &mut done).await?;
        super::commands::run(&mut tx, org, jobs, &idx, &mut done).await?;
    }
    tx.commit().await?;
    Ok(done
        .into_iter()
        .map(|d| d.expect("every job is answered"))
        .collect())
}

/// Column kinds: the PostgreSQL element type and the array type.
#[derive(Clone, Copy)]
enum Kind {
    Uuid,
    Time,
    Text,
    Float,
    Int,
}

impl Kind {
    fn pg(self) -> (&'static str, ArrayType) {
        match self {
            Kind::Uuid => ("uuid", ArrayType::Uuid),
            Kind::Time => ("timestamptz", ArrayType::ChronoDateTimeUtc),
            Kind::Text => ("text", ArrayType::String),
            Kind::Float => ("float8", ArrayType::Double),
            Kind::Int => ("int8", ArrayType::BigInt),
        }
    }
}

/// Rows as columns `column1 … columnN` of a source `v`.
struct Columns {
    kinds: Vec<Kind>,
    data: Vec<Vec<Value>>,
}

impl Columns {
    fn new(kinds: &[Kind]) -> Self {
        Self {
            kinds: kinds.to_vec(),
            data: kinds.iter().map(|_| Vec::new()).collect(),
        }
    }

    fn row(&mut self, values: Vec<Value>) {
        for (column, value) in self.data.iter_mut().zip(values) {
            column.push(value);
        }
    }

    fn len(&self) -> usize {
        self.data.first().map_or(0, Vec::len)
    }

    /// Runs `before {source} after` over every row: once on PostgreSQL,
    /// per chunk on SQLite. Returns the rows the statements affected, and
    /// (when `rows_back`) the rows they answered.
    async fn run(
        &self,
        conn: &DatabaseTransaction,
        before: &str,
        after: &str,
        tail: &[Value],
        rows_back: bool,
    ) -> Result<(u64, Vec<sea_orm::QueryResult>)> {
        let backend = conn.get_database_backend();
        let (mut affected, mut back) = (0, Vec::new());
        let arrays = backend == DatabaseBackend::Postgres && self.len() >= ARRAYS_FROM;
        let ranges: Vec<(usize, usize)> = if arrays {
            vec![(0, self.len())]
        } else {
            (0..self.len())
                .step_by(CHUNK)
                .map(|s| (s, (s + CHUNK).min(self.len())))
                .collect()
        };
        for (start, end) in ranges {
            if start == end {
                continue;
            }
            let mut sql = String::from(before);
            let mut values: Vec<Value> = Vec::new();
            if arrays {
                sql.push_str("unnest(");
                for (n, (kind, column)) in self.kinds.iter().zip(&self.data).enumerate() {
                    let (pg, array) = kind.pg();
                    values.push(Value::Array(array, Some(Box::new(column.clone()))));
                    sql.push_str(&format!(
                        "{}${}::{pg}[]",
                        if n == 0 { "" } else { ", " },
                        n + 1
                    ));
                }
                let names: Vec<String> = (1..=self.kinds.len())
                    .map(|n| format!("column{n}"))
                    .collect();
                sql.push_str(&format!(") AS v({})", names.join(", ")));
            } else {
                sql.push_str("(VALUES ");
                for row in start..end {
                    sql.push_str(if row == start { "(" } else { ", (" });
                    for (n, (kind, column)) in self.kinds.iter().zip(&self.data).enumerate() {
                        values.push(column[row].clone());
                        sql.push_str(if n == 0 { "" } else { ", " });
                        if backend == DatabaseBackend::Postgres {
                            // Typed, as nothing else types a VALUES list.
                            sql.push_str(&format!("${}::{}", values.len(), kind.pg().0));
                        } else {
                            sql.push('?');
                        }
                    }
                    sql.push(')');
                }
                if backend == DatabaseBackend::Postgres {
                    let names: Vec<String> = (1..=self.kinds.len())
                        .map(|n| format!("column{n}"))
                        .collect();
                    sql.push_str(&format!(") AS v({})", names.join(", ")));
                } else {
                    // SQLite names a VALUES list's columns column1, column2, ...
                    sql.push_str(") AS v");
                }
            }
            let after = placeholders(backend, after, values.len());
            sql.push_str(&after);
            values.extend(tail.iter().cloned());
            let statement = Statement::from_sql_and_values(backend, sql, values);
            if rows_back {
                back.extend(conn.query_all_raw(statement).await?);
            } else {
                affected += conn.execute_raw(statement).await?.rows_affected();
            }
        }
        Ok((affected, back))
    }
}

/// Numbers the `$` placeholders of `text` after the first `used` ones
/// (PostgreSQL); SQLite takes `?` as written.
fn placeholders(backend: DatabaseBackend, text: &str, used: usize) -> String {
    if backend != DatabaseBackend::Postgres {
        return text.replace('$', "?");
    }
    let mut out = String::new();
    let mut n = used;
    for c in text.chars() {
        if c == '$' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

fn text(v: &Option<String>) -> Value {
    Value::from(v.clone().unwrap_or_default())
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
    let already = stored_seqs(conn, jobs, &jobs_here).await?;
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
    let mut latest: HashMap<(Uuid, &str), (f64, i64)> = HashMap::new();
    for &i in &jobs_here {
        let Job::Readings(r) = jobs[i] else { continue };
        let mut stored = Vec::with_capacity(r.rows.len());
        for row in &r.rows {
            let fresh = row.seq.is_none_or(|s| {
                !already.contains(&(r.device_id, s)) && seen.insert((r.device_id, s))
            });
            stored.push(fresh);
            if !fresh {
                continue;
            }
            rows.row(vec![
                r.org_id.into(),
                r.device_id.into(),
                row.sensor_type.clone().into(),
                row.value.into(),
                row.ts_ms.into(),
                r.received_ms.into(),
                row.seq.unwrap_or(-1).into(),
            ]);
            let entry = latest
                .entry((r.device_id, row.sensor_type.as_str()))
                .or_insert((row.value, row.ts_ms));
            if row.ts_ms >= entry.1 {
                *entry = (row.value, row.ts_ms);
            }
        }
        done[i] = Some(Done::Readings(stored));
    }
    // A concurrent replica may store the same (device, seq) first; then it
    // is skipped here, and this answer's counts are off by those readings
    // (each is still stored once).
    rows.run(
        conn,
        "INSERT INTO readings (org_id, device_id, sensor_type, value, ts_ms, received_ms, seq) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, NULLIF(v.column7, -1) FROM ",
        " WHERE true ON CONFLICT DO NOTHING",
        &[],
        false,
    )
    .await?;
    let org = jobs[jobs_here[0]].org_id();
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
    let (_, rows) = ranges
        .run(
            conn,
            "SELECT r.device_id, r.seq FROM readings AS r JOIN ",
            " ON r.device_id = v.column1 AND r.seq BETWEEN v.column2 AND v.column3",
            &[],
            true,
        )
        .await?;
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
