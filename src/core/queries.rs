//! Reading back what devices sent: readings (raw or bucketed), the latest
//! value of each series, telemetry and events. Every query starts from a
//! device or the caller's organization, in the caller's organization.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement,
};
use uuid::Uuid;

use super::{Core, devices, page::Cursor, validate};
use crate::{
    auth::OrgRead,
    error::{Error, Result},
    store::{
        OrgTx,
        entities::{device, event, latest_reading, latest_telemetry, reading, telemetry},
    },
};

pub const DEFAULT_SERIES_PAGE: u64 = 1000;
pub const MAX_BUCKETS: i64 = 10_000;

/// A time window in Unix milliseconds, [from, to).
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl Window {
    /// `to` defaults to now, `from` to a day before `to`.
    pub fn parse(from: Option<&str>, to: Option<&str>, now: DateTime<Utc>) -> Result<Self> {
        let parse = |field: &str, v: Option<&str>| -> Result<Option<i64>> {
            v.filter(|v| !v.is_empty())
                .map(|v| {
                    DateTime::parse_from_rfc3339(v)
                        .map(|t| t.timestamp_millis())
                        .map_err(|_| Error::invalid(format!("{field} must be an RFC 3339 time")))
                })
                .transpose()
        };
        let to_ms = parse("to", to)?.unwrap_or(now.timestamp_millis() + 1);
        let from_ms = parse("from", from)?.unwrap_or(to_ms - 86_400_000);
        if from_ms >= to_ms {
            return Err(Error::invalid("from must be before to"));
        }
        Ok(Self { from_ms, to_ms })
    }
}

/// A series page: size and the position after the previous page.
#[derive(Clone, Copy, Debug)]
pub struct SeriesPage {
    pub size: u64,
    pub after: Option<Cursor>,
}

impl SeriesPage {
    pub fn parse(size: Option<u32>, token: Option<&str>) -> Result<Self> {
        let after =
            match token.filter(|t| !t.is_empty()) {
                None => None,
                Some(t) => Some(Cursor::decode(t).ok_or_else(|| {
                    Error::invalid("page_token is not a page token this API issued")
                })?),
            };
        Ok(Self {
            size: size
                .filter(|s| *s > 0)
                .map_or(DEFAULT_SERIES_PAGE, u64::from),
            after,
        })
    }
}

fn row_cursor(ts_ms: i64, id: i64) -> Cursor {
    Cursor {
        key: ts_ms,
        id: Uuid::from_u64_pair(0, id as u64),
    }
}

/// (ts, id) after the cursor, for series ordered by time then id.
fn after_row(ts: impl ColumnTrait, id: impl ColumnTrait, c: Cursor) -> Condition {
    let row = c.id.as_u64_pair().1 as i64;
    Condition::any()
        .add(ts.gt(c.key))
        .add(Condition::all().add(ts.eq(c.key)).add(id.gt(row)))
}

async fn device_tx(core: &Core, access: &OrgRead, id: &str) -> Result<(OrgTx, Uuid)> {
    let tx = core.store.org_read(access.org_id()).await?;
    let device = devices::find(&tx, id).await?;
    Ok((tx, device.id))
}

pub struct Points {
    pub points: Vec<(i64, f64)>,
    pub next_page_token: String,
}

pub async fn reading_points(
    core: &Core,
    access: &OrgRead,
    device: &str,
    sensor_type: &str,
    window: Window,
    page: SeriesPage,
) -> Result<Points> {
    let (tx, device_id) = device_tx(core, access, device).await?;
    let mut select = reading::Entity::find()
        .filter(reading::Column::DeviceId.eq(device_id))
        .filter(reading::Column::SensorType.eq(sensor_type))
        .filter(reading::Column::TsMs.gte(window.from_ms))
        .filter(reading::Column::TsMs.lt(window.to_ms));
    if let Some(c) = page.after {
        select = select.filter(after_row(reading::Column::TsMs, reading::Column::Id, c));
    }
    let mut rows = select
        .order_by_asc(reading::Column::TsMs)
        .order_by_asc(reading::Column::Id)
        .limit(page.size + 1)
        .all(tx.conn())
        .await?;
    tx.commit().await?;
    let next_page_token = if rows.len() as u64 > page.size {
        rows.truncate(page.size as usize);
        rows.last()
            .map(|r| row_cursor(r.ts_ms, r.id).encode())
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Points {
        points: rows.iter().map(|r| (r.ts_ms, r.value)).collect(),
        next_page_token,
    })
}

pub struct Bucket {
    pub start_ms: i64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    pub count: i64,
}

/// Aggregates per `bucket_seconds`, aligned to the Unix epoch.
pub async fn reading_buckets(
    core: &Core,
    access: &OrgRead,
    device: &str,
    sensor_type: &str,
    window: Window,
    bucket_seconds: u32,
) -> Result<Vec<Bucket>> {
    let width = i64::from(bucket_seconds) * 1000;
    if (window.to_ms - window.from_ms) / width > MAX_BUCKETS {
        return Err(Error::invalid(format!(
            "bucket_seconds is too small for the window: at most {MAX_BUCKETS} buckets"
        )));
    }
    let (tx, device_id) = device_tx(core, access, device).await?;
    let backend = tx.conn().get_database_backend();
    let p = |n: usize| match backend {
        sea_orm::DatabaseBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    };
    let sql = format!(
        "SELECT (ts_ms / {w}) * {w} AS start_ms, MIN(value) AS min_value, MAX(value) AS max_value, \
         AVG(value) AS avg_value, COUNT(*) AS n FROM readings \
         WHERE device_id = {} AND sensor_type = {} AND ts_ms >= {} AND ts_ms < {} \
         GROUP BY start_ms ORDER BY start_ms",
        p(1),
        p(2),
        p(3),
        p(4),
        w = width,
    );
    let rows = tx
        .conn()
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [
                device_id.into(),
                sensor_type.into(),
                window.from_ms.into(),
                window.to_ms.into(),
            ],
        ))
        .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(Bucket {
                start_ms: r.try_get("", "start_ms")?,
                min: r.try_get("", "min_value")?,
                max: r.try_get("", "max_value")?,
                avg: r.try_get("", "avg_value")?,
                count: r.try_get("", "n")?,
            })
        })
        .collect()
}

pub async fn latest_readings(
    core: &Core,
    access: &OrgRead,
    device: &str,
) -> Result<Vec<latest_reading::Model>> {
    let (tx, device_id) = device_tx(core, access, device).await?;
    let rows = latest_reading::Entity::find()
        .filter(latest_reading::Column::DeviceId.eq(device_id))
        .order_by_asc(latest_reading::Column::SensorType)
        .all(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(rows)
}

pub struct TelemetryPage {
    pub points: Vec<(String, String, i64)>,
    pub next_page_token: String,
}

pub async fn telemetry_points(
    core: &Core,
    access: &OrgRead,
    device: &str,
    key: Option<&str>,
    window: Window,
    page: SeriesPage,
) -> Result<TelemetryPage> {
    let (tx, device_id) = device_tx(core, access, device).await?;
    let mut select = telemetry::Entity::find()
        .filter(telemetry::Column::DeviceId.eq(device_id))
        .filter(telemetry::Column::TsMs.gte(window.from_ms))
        .filter(telemetry::Column::TsMs.lt(window.to_ms));
    if let Some(key) = key.filter(|k| !k.is_empty()) {
        select = select.filter(telemetry::Column::Key.eq(key));
    }
    if let Some(c) = page.after {
        select = select.filter(after_row(telemetry::Column::TsMs, telemetry::Column::Id, c));
    }
    let mut rows = select
        .order_by_asc(telemetry::Column::TsMs)
        .order_by_asc(telemetry::Column::Id)
        .limit(page.size + 1)
        .all(tx.conn())
        .await?;
    tx.commit().await?;
    let next_page_token = if rows.len() as u64 > page.size {
        rows.truncate(page.size as usize);
        rows.last()
            .map(|r| row_cursor(r.ts_ms, r.id).encode())
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(TelemetryPage {
        points: rows
            .into_iter()
            .map(|r| (r.key, r.value, r.ts_ms))
            .collect(),
        next_page_token,
    })
}

pub async fn latest_telemetry(
    core: &Core,
    access: &OrgRead,
    device: &str,
) -> Result<Vec<latest_telemetry::Model>> {
    let (tx, device_id) = device_tx(core, access, device).await?;
    let rows = latest_telemetry::Entity::find()
        .filter(latest_telemetry::Column::DeviceId.eq(device_id))
        .order_by_asc(latest_telemetry::Column::Key)
        .all(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(rows)
}

pub struct EventFilter {
    pub device_id: Option<String>,
    pub kind: Option<String>,
    pub severity: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Events in time order (`ts`, then id), cursor-paged.
pub async fn events(
    core: &Core,
    access: &OrgRead,
    filter: EventFilter,
    size: u64,
    after: Option<Cursor>,
) -> Result<(Vec<event::Model>, String)> {
    let tx = core.store.org_read(access.org_id()).await?;
    let device_id = validate::opt_uuid("device_id", filter.device_id.as_deref())?;
    let mut select = match device_id {
        // By the device's index alone; that the device is the caller's is
        // checked below. With `org_id = ?` beside it, SQLite's planner may
        // take the organization's index and read the fleet's events.
        Some(id) => event::Entity::find().filter(event::Column::DeviceId.eq(id)),
        None => event::Entity::find().filter(event::Column::OrgId.eq(tx.org_id())),
    };
    if let Some(kind) = filter.kind.filter(|k| !k.is_empty()) {
        select = select.filter(event::Column::Kind.eq(kind));
    }
    if let Some(severity) = filter.severity.filter(|s| !s.is_empty()) {
        select = select.filter(event::Column::Severity.eq(severity));
    }
    let time = |field: &str, v: Option<&str>| -> Result<Option<i64>> {
        v.filter(|v| !v.is_empty())
            .map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.timestamp_millis())
                    .map_err(|_| Error::invalid(format!("{field} must be an RFC 3339 time")))
            })
            .transpose()
    };
    if let Some(from) = time("from", filter.from.as_deref())? {
        select = select.filter(event::Column::TsMs.gte(from));
    }
    if let Some(to) = time("to", filter.to.as_deref())? {
        select = select.filter(event::Column::TsMs.lt(to));
    }
    if let Some(c) = after {
        select = select.filter(
            Condition::any().add(event::Column::TsMs.gt(c.key)).add(
                Condition::all()
                    .add(event::Column::TsMs.eq(c.key))
                    .add(event::Column::Id.gt(c.id)),
            ),
        );
    }
    if let Some(id) = device_id {
        let theirs = device::Entity::find_by_id(id)
            .filter(device::Column::OrgId.eq(tx.org_id()))
            .select_only()
            .column(device::Column::Id)
            .into_tuple::<Uuid>()
            .one(tx.conn())
            .await?;
        if theirs.is_none() {
            // Another organization's device (or none): no events, as before.
            tx.commit().await?;
            return Ok((Vec::new(), String::new()));
        }
    }
    let mut rows = select
        .order_by_asc(event::Column::TsMs)
        .order_by_asc(event::Column::Id)
        .limit(size + 1)
        .all(tx.conn())
        .await?;
    tx.commit().await?;
    let next = if rows.len() as u64 > size {
        rows.truncate(size as usize);
        rows.last()
            .map(|e| {
                Cursor {
                    key: e.ts_ms,
                    id: e.id,
                }
                .encode()
            })
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok((rows, next))
}
