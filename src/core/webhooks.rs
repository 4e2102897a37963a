//! Webhooks: an organization's URLs that receive alert changes as signed
//! JSON POSTs. A delivery is queued in the transaction that changed the
//! alert (so it exists exactly when the change does), then a worker sends
//! it, retrying failures with exponential backoff and jitter, and keeps the
//! log the admin API lists.
//!
//! Signature: header `X-Swrm-Signature: t=<unix seconds>,v1=<hex>`, where
//! `<hex>` is HMAC-SHA256 with the webhook's secret over `"<t>.<body>"`.
//! A receiver recomputes it and refuses old `t` (replays).

use chrono::Utc;
use hmac::{Hmac, Mac};
use rand::Rng;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, ExprTrait, QueryFilter};
use sha2::Sha256;
use std::{sync::Arc, time::Duration};
use tokio::sync::broadcast;

use super::{Core, new_id, page::PageRequest, validate};
use crate::{
    auth::{OrgRead, OrgWrite, secret},
    bus::Event,
    error::{Error, Result},
    store::{
        OrgTx,
        entities::{webhook, webhook_delivery},
    },
};

pub const PENDING: &str = "pending";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";
/// Attempts before a delivery is given up (about 4 hours of backoff).
pub const MAX_ATTEMPTS: i32 = 10;
/// How long a worker owns a delivery it is sending.
const LEASE_MS: i64 = 60_000;
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn create(
    core: &Core,
    access: &OrgWrite,
    url: &str,
    description: Option<&str>,
) -> Result<webhook::Model> {
    let description = validate::short_text("description", description)?;
    // A signing secret: shown once, kept to sign (it cannot be hashed).
    let secret = format!(
        "whsec_{}",
        &secret::generate(secret::SecretKind::ApiKey).plaintext[8..]
    );
    let tx = core.store.org_tx(access.org_id()).await?;
    let model = webhook::Entity::insert(webhook::ActiveModel {
        id: Set(new_id()),
        org_id: Set(tx.org_id()),
        url: Set(url.trim().to_owned()),
        description: Set(description),
        secret: Set(secret),
        created_at: Set(core.clock.now()),
        deleted_at: Set(None),
    })
    .exec_with_returning(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(model)
}

pub async fn list(
    core: &Core,
    access: &OrgRead,
    page: PageRequest,
) -> Result<(Vec<webhook::Model>, String)> {
    let tx = core.store.org_read(access.org_id()).await?;
    let select = webhook::Entity::find()
        .filter(webhook::Column::OrgId.eq(tx.org_id()))
        .filter(webhook::Column::DeletedAt.is_null());
    let out = page
        .fetch(select, webhook::Column::Id, tx.conn(), |m| m.id)
        .await?;
    tx.commit().await?;
    Ok(out)
}

pub async fn delete(core: &Core, access: &OrgWrite, id: &str) -> Result<()> {
    let id = validate::path_id("webhook", id)?;
    let tx = core.store.org_tx(access.org_id()).await?;
    let done = webhook::Entity::update_many()
        .col_expr(webhook::Column::DeletedAt, Some(core.clock.now()).into())
        .filter(webhook::Column::Id.eq(id))
        .filter(webhook::Column::OrgId.eq(tx.org_id()))
        .filter(webhook::Column::DeletedAt.is_null())
        .exec(tx.conn())
        .await?;
    if done.rows_affected == 0 {
        return Err(Error::not_found("webhook"));
    }
    // Undelivered messages to it are dropped.
    webhook_delivery::Entity::update_many()
        .col_expr(webhook_delivery::Column::Status, FAILED.into())
        .col_expr(
            webhook_delivery::Column::LastError,
            Some("webhook deleted".to_owned()).into(),
        )
        .filter(webhook_delivery::Column::WebhookId.eq(id))
        .filter(webhook_delivery::Column::Status.eq(PENDING))
        .exec(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A webhook's deliveries, newest first.
pub async fn deliveries(
    core: &Core,
    access: &OrgRead,
    id: &str,
    page: PageRequest,
) -> Result<(Vec<webhook_delivery::Model>, String)> {
    let id = validate::path_id("webhook", id)?;
    let tx = core.store.org_read(access.org_id()).await?;
    // A deleted webhook is gone for its deliveries too, as for a GET.
    webhook::Entity::find_by_id(id)
        .filter(webhook::Column::OrgId.eq(tx.org_id()))
        .filter(webhook::Column::DeletedAt.is_null())
        .one(tx.conn())
        .await?
        .ok_or_else(|| Error::not_found("webhook"))?;
    let select = webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::OrgId.eq(tx.org_id()))
        .filter(webhook_delivery::Column::WebhookId.eq(id));
    let out = page
        .fetch(select, webhook_delivery::Column::Id, tx.conn(), |m| m.id)
        .await?;
    tx.commit().await?;
    Ok(out)
}

/// Queues `event` for every webhook of the transaction's organization.
pub async fn enqueue(
    core: &Core,
    tx: &mut OrgTx,
    event: &str,
    data: serde_json::Value,
) -> Result<()> {
    let hooks = webhook::Entity::find()
        .filter(webhook::Column::OrgId.eq(tx.org_id()))
        .filter(webhook::Column::DeletedAt.is_null())
        .all(tx.conn())
        .await?;
    let now = core.clock.now();
    for hook in hooks {
        let id = new_id();
        let payload = serde_json::json!({
            "id": id,
            "event": event,
            "occurred_at": super::rfc3339(now),
            "data": data,
        });
        webhook_delivery::Entity::insert(webhook_delivery::ActiveModel {
            id: Set(id),
            org_id: Set(tx.org_id()),
            webhook_id: Set(hook.id),
            event: Set(event.to_owned()),
            payload: Set(payload.to_string()),
            status: Set(PENDING.into()),
            attempts: Set(0),
            next_attempt_ms: Set(Some(now.timestamp_millis())),
            lease_until_ms: Set(None),
            last_status_code: Set(None),
            last_error: Set(None),
            created_at: Set(now),
            delivered_at: Set(None),
        })
        .exec_without_returning(tx.conn())
        .await?;
    }
    Ok(())
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Seconds before attempt `n + 1`: 2^n (at most an hour), ± 20 %.
fn backoff(attempts: i32) -> Duration {
    let base = 2f64.powi(attempts.clamp(0, 12)).min(3600.0);
    let jitter = rand::rng().random_range(0.8..1.2);
    Duration::from_secs_f64(base * jitter)
}

/// Sends due deliveries until shutdown; wakes when an alert changes (what
/// queues deliveries) or the next retry is due.
pub async fn delivery_loop(core: Arc<Core>) {
    let client = reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client");
    let mut changes = core.bus.subscribe_all();
    loop {
        let next = match deliver_due(&core, &client).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "webhook deliveries failed");
                Some(Duration::from_secs(5))
            }
        };
        let wait = next.unwrap_or(Duration::from_secs(60));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = alert_changed(&mut changes) => {}
            () = core.shutdown.cancelled() => return,
        }
    }
}

/// Waits for an event that may have queued deliveries. The bus carries
/// every event (a fleet's commands are thousands a second): waking on each
/// cost two queries per event.
async fn alert_changed(changes: &mut broadcast::Receiver<Event>) {
    loop {
        match changes.recv().await {
            Ok(Event::AlertChanged { .. } | Event::Resync)
            | Err(broadcast::error::RecvError::Lagged(_)) => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// Sends what is due; returns how long until the next retry is due.
pub async fn deliver_due(core: &Core, client: &reqwest::Client) -> Result<Option<Duration>> {
    let now_ms = core.clock.now().timestamp_millis();
    // A server-side job over every organization's queue.
    let due = core.store.due_webhook_deliveries(now_ms, 50).await?;
    for delivery in due {
        // Claimed with a conditional update: one replica sends each attempt.
        let tx = core.store.org_tx(delivery.org_id).await?;
        let claimed = webhook_delivery::Entity::update_many()
            .col_expr(
                webhook_delivery::Column::LeaseUntilMs,
                Some(now_ms + LEASE_MS).into(),
            )
            .filter(webhook_delivery::Column::Id.eq(delivery.id))
            .filter(webhook_delivery::Column::Status.eq(PENDING))
            .filter(
                webhook_delivery::Column::LeaseUntilMs
                    .is_null()
                    .or(webhook_delivery::Column::LeaseUntilMs.lt(now_ms)),
            )
            .exec(tx.conn())
            .await?;
        tx.commit().await?;
        if claimed.rows_affected == 1 {
            send(core, client, delivery).await?;
        }
    }
    let next = core
        .store
        .next_webhook_attempt_ms()
        .await?
        .map(|at| Duration::from_millis(Ord::max(u64::try_from(at - now_ms).unwrap_or(0), 50)));
    Ok(next)
}

async fn send(core: &Core, client: &reqwest::Client, d: webhook_delivery::Model) -> Result<()> {
    let tx = core.store.org_read(d.org_id).await?;
    let hook = webhook::Entity::find_by_id(d.webhook_id)
        .one(tx.conn())
        .await?;
    tx.commit().await?;
    let attempts = d.attempts + 1;
    let live = hook.filter(|h| h.deleted_at.is_none());
    let gone = live.is_none();
    let (code, error) = match live {
        None => (None, Some("webhook deleted".to_owned())),
        Some(hook) => {
            let ts = Utc::now().timestamp();
            let answer = client
                .post(&hook.url)
                .header("content-type", "application/json")
                .header("x-swrm-signature", signature(&hook.secret, ts, &d.payload))
                .header("x-swrm-event", &d.event)
                .header("x-swrm-delivery", d.id.to_string())
                .body(d.payload.clone())
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
                Ok(r) => (
                    Some(r.status().as_u16()),
                    Some(format!("answered {}", r.status())),
                ),
                Err(e) => (None, Some(format!("not delivered: {e}"))),
            }
        }
    };
    let now = core.clock.now();
    let mut update = webhook_delivery::Entity::update_many()
        .col_expr(webhook_delivery::Column::Attempts, attempts.into())
        .col_expr(
            webhook_delivery::Column::LastStatusCode,
            code.map(i32::from).into(),
        )
        .col_expr(webhook_delivery::Column::LastError, error.clone().into())
        .col_expr(
            webhook_delivery::Column::LeaseUntilMs,
            Option::<i64>::None.into(),
        );
    update = match error {
        None => update
            .col_expr(webhook_delivery::Column::Status, SUCCEEDED.into())
            .col_expr(webhook_delivery::Column::DeliveredAt, Some(now).into())
            .col_expr(
                webhook_delivery::Column::NextAttemptMs,
                Option::<i64>::None.into(),
            ),
        Some(_) if gone || attempts >= MAX_ATTEMPTS => update
            .col_expr(webhook_delivery::Column::Status, FAILED.into())
            .col_expr(
                webhook_delivery::Column::NextAttemptMs,
                Option::<i64>::None.into(),
            ),
        Some(_) => {
            let next = now.timestamp_millis() + backoff(attempts).as_millis() as i64;
            update.col_expr(webhook_delivery::Column::NextAttemptMs, Some(next).into())
        }
    };
    let tx = core.store.org_tx(d.org_id).await?;
    update
        .filter(webhook_delivery::Column::Id.eq(d.id))
        .exec(tx.conn())
        .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_documented_recipe() {
        let sig = signature("whsec_test", 1_700_000_000, "{\"a\":1}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sig, format!("t=1700000000,v1={expected}"));
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        assert!(backoff(1) < backoff(5));
        assert!(backoff(30) <= Duration::from_secs_f64(3600.0 * 1.2));
    }
}
