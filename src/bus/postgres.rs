//! Events across replicas on PostgreSQL: `pg_notify` inside the transaction
//! that made the change (so it is sent exactly when, and only if, that
//! transaction commits), and one `LISTEN`ing connection per replica that
//! delivers other replicas' events locally. When that connection drops,
//! events may have been missed: the replica is told to [`Event::Resync`].

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseTransaction, Statement};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Bus, Event};
use crate::error::Result;

const CHANNEL: &str = "swrm_events";

#[derive(Serialize, Deserialize)]
struct Envelope {
    from: Uuid,
    #[serde(flatten)]
    event: Event,
}

/// Sends `event` to the other replicas when `tx` commits.
pub async fn notify(tx: &DatabaseTransaction, from: Uuid, event: Event) -> Result<()> {
    let payload = serde_json::to_string(&Envelope { from, event }).expect("events serialize");
    tx.execute_raw(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [CHANNEL.into(), payload.into()],
    ))
    .await?;
    Ok(())
}

/// Listens until `stop` is cancelled, delivering other replicas' events.
pub fn listen(bus: Bus, url: String, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::select! {
            () = listen_loop(&bus, &url) => {}
            () = stop.cancelled() => {}
        }
    })
}

async fn listen_loop(bus: &Bus, url: &str) {
    use sea_orm::sqlx::postgres::PgListener;
    loop {
        let mut listener = match PgListener::connect(url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "event listener cannot connect; retrying");
                bus.deliver(&[Event::Resync]);
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        // Whatever happened before we listened may have been missed.
        bus.deliver(&[Event::Resync]);
        bus.set_listening(true);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => match serde_json::from_str::<Envelope>(n.payload()) {
                    Ok(e) if e.from == bus.replica() => {} // delivered at our commit
                    Ok(e) => bus.deliver(&[e.event]),
                    Err(_) => tracing::warn!(payload = n.payload(), "unknown event"),
                },
                // The connection was lost and re-established underneath.
                Ok(None) => bus.deliver(&[Event::Resync]),
                Err(e) => {
                    tracing::warn!(error = %e, "event listener lost; reconnecting");
                    bus.set_listening(false);
                    bus.deliver(&[Event::Resync]);
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
