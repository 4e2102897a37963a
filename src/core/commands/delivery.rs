//! Delivering commands to a device: claim what is deliverable (in queue
//! order), else wait for the bus to say something was queued for the
//! device (or for the earliest lease to run out), never on a timer.
//!
//! A device has one waiter at a time: a new poll or stream announces
//! itself on the bus and every earlier one, on any replica, ends. A waiter
//! also ends when the device's keys change (its key may be revoked: the
//! device must authenticate again) and at shutdown.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, DatabaseTransaction, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect,
};
use std::time::Duration;
use uuid::Uuid;

use super::{DELIVERED, EXPIRED, FAILED, LEASE, OPEN, QUEUED};
use crate::{
    auth::DevicePrincipal,
    bus::{DeviceWatch, Event},
    core::{
        Core,
        ingest::deadline,
        new_id,
        writer::{Done, Job},
    },
    error::{Error, Result},
    store::entities::{command, device_key},
};

/// Most commands one delivery hands over.
pub const MAX_PER_DELIVERY: u64 = 100;

/// Claims the device's deliverable commands as new attempts, in queue
/// order. With `reclaim`, commands delivered but not acknowledged are
/// delivered again at once (a stream reconnecting) instead of after their
/// lease. Also expires and fails what is due. Returns the claimed commands
/// and when the next lease runs out. The claim is written by the
/// group-commit writer, beside other devices' claims and enqueues.
pub async fn claim(
    core: &Core,
    who: &DevicePrincipal,
    reclaim: bool,
) -> Result<(Vec<command::Model>, Option<i64>)> {
    let job = Job::Claim(ClaimRequest {
        org_id: who.org_id,
        device_id: who.device_id,
        reclaim,
        now: core.clock.now(),
    });
    match core.writer.write(job, deadline(core)).await? {
        Done::Claimed(c) => Ok((c.commands, c.next_lease)),
        _ => Err(Error::Internal("the writer answered another job".into())),
    }
}

/// A device's claim, as the writer runs it.
pub struct ClaimRequest {
    pub org_id: Uuid,
    pub device_id: Uuid,
    pub reclaim: bool,
    pub now: DateTime<Utc>,
}

/// What a claim did.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    /// Delivered now, in queue order.
    pub commands: Vec<command::Model>,
    /// When the earliest lease still held runs out (Unix ms).
    pub next_lease: Option<i64>,
    /// Every command whose status changed (delivered, expired, failed).
    pub changed: Vec<Uuid>,
}

/// `status IN ('queued', 'delivered', 'received')` spelled as literals:
/// the partial index of open commands serves only a query whose condition
/// matches its own, and bound parameters never do (on SQLite; on
/// PostgreSQL not in a generic plan).
fn open_statuses() -> sea_orm::sea_query::SimpleExpr {
    let list = OPEN.map(|s| format!("'{s}'")).join(", ");
    sea_orm::sea_query::Expr::cust(format!("status IN ({list})"))
}

/// Runs `req` in `conn`, a transaction scoped to its organization. Each
/// command is claimed only if nobody changed it since it was read.
pub(crate) async fn claim_in(conn: &DatabaseTransaction, req: &ClaimRequest) -> Result<Claimed> {
    let now_ms = req.now.timestamp_millis();
    let open = command::Entity::find()
        .filter(command::Column::OrgId.eq(req.org_id))
        .filter(command::Column::DeviceId.eq(req.device_id))
        .filter(open_statuses())
        .order_by_asc(command::Column::Id)
        .limit(MAX_PER_DELIVERY)
        .all(conn)
        .await?;
    let mut out = Claimed {
        commands: Vec::new(),
        next_lease: None,
        changed: Vec::new(),
    };
    let lease_until = now_ms + LEASE.as_millis() as i64;
    for c in open {
        let leased = c.status != QUEUED && c.lease_until_ms.is_some_and(|l| l > now_ms);
        let (status, message) = if c.expires_ms <= now_ms {
            (EXPIRED, None)
        } else if leased && !req.reclaim {
            let until = c.lease_until_ms.unwrap_or(now_ms);
            out.next_lease = Some(out.next_lease.map_or(until, |n| Ord::min(n, until)));
            continue;
        } else if c.attempt >= c.max_attempts {
            (
                FAILED,
                Some(format!("not acknowledged after {} deliveries", c.attempt)),
            )
        } else {
            (DELIVERED, None)
        };
        let mut update = command::Entity::update_many()
            .col_expr(command::Column::Status, status.into())
            .col_expr(command::Column::UpdatedAt, req.now.into())
            .filter(command::Column::Id.eq(c.id))
            .filter(command::Column::Attempt.eq(c.attempt))
            .filter(command::Column::Status.eq(c.status.as_str()));
        if status == DELIVERED {
            update = update
                .col_expr(
                    command::Column::Attempt,
                    command::Column::Attempt.into_expr().add(1),
                )
                .col_expr(command::Column::LeaseUntilMs, Some(lease_until).into());
        } else {
            update = update
                .col_expr(command::Column::LeaseUntilMs, Option::<i64>::None.into())
                .col_expr(command::Column::Message, message.into());
        }
        if update.exec(conn).await?.rows_affected != 1 {
            continue;
        }
        out.changed.push(c.id);
        if status == DELIVERED {
            out.next_lease = Some(
                out.next_lease
                    .map_or(lease_until, |n| Ord::min(n, lease_until)),
            );
            let mut delivered = c;
            delivered.status = DELIVERED.into();
            delivered.attempt += 1;
            delivered.lease_until_ms = Some(lease_until);
            delivered.updated_at = req.now;
            out.commands.push(delivered);
        }
    }
    Ok(out)
}

/// Why a waiter stopped waiting.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// Something may be deliverable: claim again.
    Claim,
    /// The wait is over (deadline, replaced by a newer waiter, shutdown).
    Done,
}

/// One device's waiter: announces itself (ending earlier ones) and waits
/// for the device's events.
pub struct Waiter {
    id: Uuid,
    watch: DeviceWatch,
    keys_seen: u64,
    who: DevicePrincipal,
}

impl Waiter {
    /// Starts waiting for `who`'s commands, ending its earlier waiter.
    pub async fn start(core: &Core, who: DevicePrincipal) -> Result<Self> {
        // Watch before announcing and claiming, so nothing falls between.
        let watch = core.bus.watch_device(who.device_id);
        let keys_seen = watch.current().keys_changed;
        let id = new_id();
        core.store
            .announce(Event::WaiterStarted {
                device_id: who.device_id,
                waiter: id,
            })
            .await?;
        Ok(Self {
            id,
            watch,
            keys_seen,
            who,
        })
    }

    /// Waits until something may be deliverable, `until` (a lease running
    /// out), or the end. A revoked or expired key is `Unauthenticated`.
    pub async fn wait(&mut self, core: &Core, until: Option<Duration>) -> Result<Wake> {
        let sleep = async {
            match until {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let signal = tokio::select! {
            signal = self.watch.changed() => signal,
            () = sleep => return Ok(Wake::Claim),
            () = core.shutdown.cancelled() => return Ok(Wake::Done),
        };
        if signal.waiter.is_some_and(|w| w != self.id) {
            return Ok(Wake::Done);
        }
        if signal.keys_changed != self.keys_seen {
            self.keys_seen = signal.keys_changed;
            if !Box::pin(key_is_valid(core, &self.who)).await? {
                return Err(Error::Unauthenticated(
                    "the device key was revoked or rotated".into(),
                ));
            }
        }
        Ok(Wake::Claim)
    }
}

async fn key_is_valid(core: &Core, who: &DevicePrincipal) -> Result<bool> {
    let now = core.clock.now();
    let tx = core.store.org_read(who.org_id).await?;
    let key = device_key::Entity::find_by_id(who.key_id)
        .one(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(key.is_some_and(|k| k.revoked_at.is_none() && k.expires_at.is_none_or(|e| now < e)))
}

/// The long poll: deliverable commands at once, else waits up to `wait`
/// for one to be queued (an empty list when nothing comes).
pub async fn poll(
    core: &Core,
    who: DevicePrincipal,
    wait: Duration,
) -> Result<Vec<command::Model>> {
    let mut waiter = Waiter::start(core, who).await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Boxed: the claim's state is large and lives only while it runs,
        // not for as long as the poll waits.
        let (claimed, next_lease) = Box::pin(claim(core, &who, false)).await?;
        if !claimed.is_empty() {
            return Ok(claimed);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Vec::new());
        }
        let mut until = deadline - now;
        if let Some(lease) = next_lease {
            let left = lease - core.clock.now().timestamp_millis();
            until = until.min(Duration::from_millis(u64::try_from(left).unwrap_or(0) + 1));
        }
        if waiter.wait(core, Some(until)).await? == Wake::Done {
            return Ok(Vec::new());
        }
    }
}
