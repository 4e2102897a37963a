//! Security events that come in floods, counted rather than written one by
//! one: a valid key refused an operation (`auth.role_denied`, a 403), and a
//! credential that exists but no longer works (`auth.failed`, a 401: a
//! revoked or expired key, a spent, revoked or expired token or code).
//!
//! Each (organization, action, actor, source IP, detail) is counted in
//! memory and written once a [`WINDOW`] as one audit event carrying its
//! count, so a client retrying a denied call a thousand times costs a
//! thousand increments and one row, never a write per request. Secrets that
//! match nothing belong to no organization's trail: they are counted per
//! source and logged once a window, one line per source (the request log
//! and `/metrics` have each request).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use uuid::Uuid;

use super::{
    Core,
    audit::{self, Action, Actor, Entry},
};
use crate::error::Result;

/// How long events are counted before they are written.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Distinct counters held per window. A flood from many sources counts
/// past it only in a total (logged), so memory stays bounded.
const MAX_COUNTERS: usize = 10_000;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Counter {
    /// `None`: a secret that matched nothing.
    org_id: Option<Uuid>,
    action: Action,
    actor: Option<Actor>,
    source_ip: IpAddr,
    detail: String,
}

#[derive(Default)]
pub struct AuditTally {
    counts: Mutex<HashMap<Counter, i32>>,
    /// Events not counted because the window held `MAX_COUNTERS` already.
    overflow: AtomicU64,
}

impl AuditTally {
    /// A valid key of `org_id` was refused `operation`.
    pub fn role_denied(&self, org_id: Uuid, actor: Actor, ip: IpAddr, operation: String) {
        self.add(Counter {
            org_id: Some(org_id),
            action: Action::RoleDenied,
            actor: Some(actor),
            source_ip: ip,
            detail: operation,
        });
    }

    /// A credential was refused; `owner` when it names a key that exists.
    pub fn auth_failed(&self, owner: Option<(Uuid, Actor)>, ip: IpAddr, why: &str) {
        self.add(Counter {
            org_id: owner.map(|(org, _)| org),
            action: Action::AuthFailed,
            actor: owner.map(|(_, actor)| actor),
            source_ip: ip,
            detail: why.to_owned(),
        });
    }

    fn add(&self, counter: Counter) {
        let mut counts = self.counts.lock().expect("audit tally lock");
        let full = counts.len() >= MAX_COUNTERS;
        match counts.get_mut(&counter) {
            Some(n) => *n = n.saturating_add(1),
            None if full => {
                self.overflow.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                counts.insert(counter, 1);
            }
        }
    }

    /// Writes what was counted: one event per counter, each organization's
    /// in one transaction. An organization whose write fails keeps its
    /// counts for the next flush.
    pub async fn flush(&self, core: &Core) -> Result<()> {
        let counts = std::mem::take(&mut *self.counts.lock().expect("audit tally lock"));
        let overflow = self.overflow.swap(0, Ordering::Relaxed);
        if overflow > 0 {
            tracing::warn!(
                events = overflow,
                "authentication failures and denials not itemized (too many sources this window)"
            );
        }
        let mut by_org: HashMap<Uuid, Vec<(Counter, i32)>> = HashMap::new();
        for (counter, count) in counts {
            match counter.org_id {
                Some(org) => by_org.entry(org).or_default().push((counter, count)),
                None => tracing::warn!(
                    source_ip = %counter.source_ip,
                    count,
                    why = %counter.detail,
                    "unknown credentials presented"
                ),
            }
        }
        let mut failed = None;
        for (org, counters) in by_org {
            if let Err(e) = write_org(core, org, &counters).await {
                let mut counts = self.counts.lock().expect("audit tally lock");
                for (counter, count) in counters {
                    let n = counts.entry(counter).or_default();
                    *n = n.saturating_add(count);
                }
                failed = Some(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

async fn write_org(core: &Core, org: Uuid, counters: &[(Counter, i32)]) -> Result<()> {
    let tx = core.store.org_tx(org).await?;
    let at = core.clock.now();
    for (counter, count) in counters {
        // Counters of an organization always name the key (see `Counter`).
        let Some(actor) = counter.actor else { continue };
        let mut entry = Entry::new(counter.action, actor, None).from_ip(Some(counter.source_ip));
        entry.count = *count;
        entry.detail = Some(counter.detail.clone());
        audit::write(&tx, at, entry).await?;
    }
    tx.commit().await
}

/// Writes the counts every [`WINDOW`] until shutdown (the server flushes
/// once more after its last request).
pub async fn flush_loop(core: Arc<Core>) {
    let mut every = tokio::time::interval(WINDOW);
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = core.shutdown.cancelled() => return,
        }
        if let Err(e) = core.audit_tally.flush(&core).await {
            tracing::warn!(error = %e, "counted audit events not written; retrying");
        }
    }
}
