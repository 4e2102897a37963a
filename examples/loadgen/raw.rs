//! The row-rate baseline: the same readings written straight into the same
//! database, without the server. PostgreSQL takes them by `COPY` (on a
//! connection of the URL's own role, `postgres` in the README: row security
//! refuses COPY to the server's role); SQLite by
//! multi-row `INSERT`s, each batch in one transaction. Batches are the size
//! a full group commit would write (`concurrency × 50` rows).

use sea_orm::{
    ConnectionTrait, DatabaseBackend, Statement, TransactionTrait, Value,
    sqlx::{Connection, postgres::PgConnection},
};
use std::time::{Duration, Instant};
use swrm::store::Store;
use uuid::Uuid;

/// Rows per second written for `seconds`.
pub async fn insert_rows(
    store: &Store,
    org_id: Uuid,
    devices: &[Uuid],
    seconds: u64,
    batch: usize,
) -> Result<f64, crate::fleet::Error> {
    let db = store.unscoped();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut rows = 0usize;
    let now = chrono::Utc::now().timestamp_millis();
    // The server's own role is bound by row security, which refuses COPY:
    // the baseline connects as the URL's role.
    let mut pg = match db.get_database_backend() {
        DatabaseBackend::Postgres => {
            let url = std::env::var("SWRM_DATABASE_URL")?;
            Some(PgConnection::connect(&url).await?)
        }
        _ => None,
    };
    while Instant::now() < deadline {
        if let Some(conn) = pg.as_mut() {
            // Row security admits the organization the transaction names.
            sea_orm::sqlx::query("BEGIN").execute(&mut *conn).await?;
            sea_orm::sqlx::query("SELECT set_config('swrm.org_id', $1, true)")
                .bind(org_id.to_string())
                .execute(&mut *conn)
                .await?;
            let mut copy = conn
                .copy_in_raw(
                    "COPY readings (org_id, device_id, sensor_type, value, ts_ms, received_ms) FROM STDIN",
                )
                .await?;
            let mut text = String::with_capacity(batch * 96);
            for i in 0..batch {
                let device = devices[i % devices.len()];
                text.push_str(&format!(
                    "{org_id}\t{device}\ttemperature\t21.5\t{now}\t{now}\n"
                ));
            }
            copy.send(text.as_bytes()).await?;
            copy.finish().await.map_err(|e| {
                format!("{e}: the raw baseline's COPY needs a role that bypasses row security (postgres)")
            })?;
            sea_orm::sqlx::query("COMMIT").execute(&mut *conn).await?;
        } else {
            let tx = db.begin().await?;
            for chunk in (0..batch).collect::<Vec<_>>().chunks(1000) {
                let mut sql = String::from(
                    "INSERT INTO readings (org_id, device_id, sensor_type, value, ts_ms, received_ms) VALUES ",
                );
                let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 6);
                for (n, i) in chunk.iter().enumerate() {
                    sql.push_str(if n == 0 {
                        "(?, ?, ?, ?, ?, ?)"
                    } else {
                        ", (?, ?, ?, ?, ?, ?)"
                    });
                    values.extend([
                        org_id.into(),
                        devices[i % devices.len()].into(),
                        "temperature".into(),
                        21.5f64.into(),
                        now.into(),
                        now.into(),
                    ]);
                }
                tx.execute_raw(Statement::from_sql_and_values(
                    DatabaseBackend::Sqlite,
                    sql,
                    values,
                ))
                .await?;
            }
            tx.commit().await?;
        }
        rows += batch;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}
