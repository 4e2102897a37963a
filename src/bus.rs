//! Cross-replica events. On PostgreSQL, `NOTIFY` inside the transaction that
//! changed a key reaches every replica's `LISTEN` at commit, so a revoked or
//! rotated key stops working on all of them at once, not after the cache TTL.
//! On SQLite there is one process, and local eviction is all it takes.

use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};
use std::{sync::Arc, time::Duration};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::{app::App, error::Result, store::OrgTx};

const KEYS_CHANNEL: &str = "swrm_keys";

/// A credential changed: every replica must forget what it cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyEvent {
    DeviceKeysChanged(Uuid),
    ApiKeyChanged(Uuid),
}

impl KeyEvent {
    fn encode(self) -> String {
        match self {
            KeyEvent::DeviceKeysChanged(id) => format!("device:{id}"),
            KeyEvent::ApiKeyChanged(id) => format!("api_key:{id}"),
        }
    }

    fn decode(payload: &str) -> Option<Self> {
        let (kind, id) = payload.split_once(':')?;
        let id = Uuid::parse_str(id).ok()?;
        match kind {
            "device" => Some(KeyEvent::DeviceKeysChanged(id)),
            "api_key" => Some(KeyEvent::ApiKeyChanged(id)),
            _ => None,
        }
    }

    /// Forgets the cached credentials this event names.
    pub fn apply(self, app: &App) {
        match self {
            KeyEvent::DeviceKeysChanged(id) => app.keys.evict_device(id),
            KeyEvent::ApiKeyChanged(id) => app.keys.evict_api_key(id),
        }
    }
}

/// Announces `event` to other replicas when `tx` commits (PostgreSQL only).
pub async fn publish(tx: &OrgTx, event: KeyEvent) -> Result<()> {
    if tx.conn().get_database_backend() == DatabaseBackend::Postgres {
        tx.conn()
            .execute_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [KEYS_CHANNEL.into(), event.encode().into()],
            ))
            .await?;
    }
    Ok(())
}

/// On PostgreSQL, listens for key events until aborted. If the listening
/// connection drops, notifications may have been missed, so the whole cache
/// is forgotten before listening again.
pub fn listen(app: Arc<App>) -> Option<JoinHandle<()>> {
    let url = app.config.storage.database_url();
    if !url.starts_with("postgres") {
        return None;
    }
    Some(tokio::spawn(async move {
        use sea_orm::sqlx::postgres::PgListener;
        loop {
            let mut listener = match PgListener::connect(&url).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "key event listener cannot connect; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(KEYS_CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            app.keys.clear();
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => match KeyEvent::decode(n.payload()) {
                        Some(event) => event.apply(&app),
                        None => tracing::warn!(payload = n.payload(), "unknown key event"),
                    },
                    Ok(None) => app.keys.clear(),
                    Err(e) => {
                        tracing::warn!(error = %e, "key event listener lost; reconnecting");
                        app.keys.clear();
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let id = Uuid::now_v7();
        for e in [KeyEvent::DeviceKeysChanged(id), KeyEvent::ApiKeyChanged(id)] {
            assert_eq!(KeyEvent::decode(&e.encode()), Some(e));
        }
        assert_eq!(KeyEvent::decode("device:nope"), None);
        assert_eq!(
            KeyEvent::decode("other:0190c0de-0000-7000-8000-000000000000"),
            None
        );
    }
}
