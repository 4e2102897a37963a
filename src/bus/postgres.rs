//! Events across replicas on PostgreSQL: `pg_notify` inside the transaction
//! that made the change (so it is sent exactly when, and only if, that
//! transaction commits), and one `LISTEN`ing connection per replica that
//! delivers other replicas' events locally. When that connection drops,
//! events may have been missed: the replica is told to [`Event::Resync`].
//! A group-commit batch sends its events together, as few notifications as
//! fit PostgreSQL's payload limit (each is a round trip before its commit).

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

/// Several events in one notification (the group-commit writer's batch).
#[derive(Serialize, Deserialize)]
struct Batch {
    from: Uuid,
    events: Vec<Event>,
}

/// A notification: one event, or a batch of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Wire {
    Batch(Batch),
    One(Envelope),
}

/// A notification's payload must stay under PostgreSQL's 8,000 bytes.
const MAX_PAYLOAD: usize = 7_000;

/// Sends `events` to the other replicas when `tx` commits, as few
/// notifications as fit: each is a round trip on the transaction's
/// connection, and a batch of the group-commit writer can carry hundreds.
pub async fn notify_all(tx: &DatabaseTransaction, from: Uuid, events: &[Event]) -> Result<()> {
    for payload in batch_payloads(from, events) {
        send(tx, payload).await?;
    }
    Ok(())
}

/// `events` as [`Batch`] payloads, in order, each under [`MAX_PAYLOAD`].
fn batch_payloads(from: Uuid, events: &[Event]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut chunk: Vec<Event> = Vec::new();
    let mut size = 0;
    let mut flush = |chunk: &mut Vec<Event>| {
        let events = std::mem::take(chunk);
        payloads.push(serde_json::to_string(&Batch { from, events }).expect("events serialize"));
    };
    for event in events {
        // An event's JSON and its comma; the envelope's own keys are in
        // the margin below PostgreSQL's limit.
        let one = serde_json::to_string(event)
            .expect("events serialize")
            .len()
            + 1;
        if !chunk.is_empty() && size + one > MAX_PAYLOAD {
            flush(&mut chunk);
            size = 0;
        }
        chunk.push(*event);
        size += one;
    }
    if !chunk.is_empty() {
        flush(&mut chunk);
    }
    payloads
}

/// Sends `event` to the other replicas when `conn` commits (a
/// transaction, or a connection in autocommit: at once).
pub async fn notify(conn: &impl ConnectionTrait, from: Uuid, event: Event) -> Result<()> {
    let payload = serde_json::to_string(&Envelope { from, event }).expect("events serialize");
    send(conn, payload).await
}

/// One notification on the events channel, sent when `conn` commits.
async fn send(conn: &impl ConnectionTrait, payload: String) -> Result<()> {
    conn.execute_raw(Statement::from_sql_and_values(
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
                Ok(Some(n)) => match serde_json::from_str::<Wire>(n.payload()) {
                    // Ours were delivered here at our commit.
                    Ok(Wire::One(e)) if e.from != bus.replica() => bus.deliver(&[e.event]),
                    Ok(Wire::Batch(b)) if b.from != bus.replica() => bus.deliver(&b.events),
                    Ok(_) => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_batch_is_split_under_the_notification_limit_and_read_back_in_order() {
        let from = Uuid::now_v7();
        let events: Vec<Event> = (0..500)
            .map(|_| Event::CommandQueued {
                device_id: Uuid::now_v7(),
            })
            .collect();
        let payloads = batch_payloads(from, &events);
        assert!(payloads.len() > 1, "500 events do not fit one notification");
        let mut read = Vec::new();
        for p in &payloads {
            assert!(p.len() < 8000, "{} bytes", p.len());
            match serde_json::from_str::<Wire>(p).unwrap() {
                Wire::Batch(b) => {
                    assert_eq!(b.from, from);
                    read.extend(b.events);
                }
                Wire::One(_) => panic!("a batch read as one event"),
            }
        }
        assert_eq!(read, events);
        let one = serde_json::to_string(&Envelope {
            from,
            event: events[0],
        })
        .unwrap();
        assert!(matches!(
            serde_json::from_str::<Wire>(&one),
            Ok(Wire::One(_))
        ));
    }
}
