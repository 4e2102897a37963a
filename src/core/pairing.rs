//! Pairing: a one-time provisioning token becomes a persistent device key.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use std::{collections::BTreeMap, sync::OnceLock, time::Duration};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    Clock, Core,
    audit::{self, Action, Actor, Entry},
    devices, validate,
};
use crate::{
    auth::secret::{self, SecretKind},
    bus::Event,
    error::{Error, Result},
    store::{
        OrgTx, Store,
        entities::{device, provisioning_token},
    },
};

pub struct PairInput {
    pub token: String,
    pub hardware_model: Option<String>,
    pub serial_number: Option<String>,
    pub firmware_version: Option<String>,
    /// Where the request came from, for the audit trail.
    pub source_ip: Option<std::net::IpAddr>,
}

pub struct Paired {
    pub device_id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub api_key: String,
}

const REJECTED: &str = "provisioning token is unknown, already used, revoked or expired";

pub async fn pair(core: &Core, input: PairInput) -> Result<Paired> {
    if secret::parse(&input.token) != Some(SecretKind::ProvisioningToken) {
        return Err(Error::Unauthenticated(
            "malformed provisioning token".into(),
        ));
    }
    let claim = Claim {
        hardware_model: validate::short_text("hardware_model", input.hardware_model.as_deref())?,
        serial_number: validate::short_text("serial_number", input.serial_number.as_deref())?,
        firmware_version: validate::short_text(
            "firmware_version",
            input.firmware_version.as_deref(),
        )?,
        source_ip: input.source_ip,
        token: {
            let hash = secret::hash(&input.token);
            core.count_auth_lookup();
            core.store
                .provisioning_token_by_hash(&hash)
                .await?
                .ok_or_else(|| Error::Unauthenticated(REJECTED.into()))?
        },
    };
    let owner = (claim.token.org_id, Actor::ProvisioningToken(claim.token.id));
    let source_ip = claim.source_ip;
    let answer = core.pairings.submit(claim).await;
    // A token that exists but no longer works: counted in the audit trail.
    if let (Err(Error::Unauthenticated(_)), Some(ip)) = (&answer, source_ip) {
        let why = "provisioning token already used, revoked or expired";
        core.audit_tally.auth_failed(Some(owner), ip, why);
    }
    answer
}

/// A pairing, checked, waiting for its transaction.
struct Claim {
    token: provisioning_token::Model,
    source_ip: Option<std::net::IpAddr>,
    hardware_model: Option<String>,
    serial_number: Option<String>,
    firmware_version: Option<String>,
}

struct Job {
    claim: Claim,
    done: oneshot::Sender<Result<Paired>>,
}

/// Group commit for pairing: a factory line, or a fleet re-pairing after an
/// outage, is not throttled by one commit (one fsync) per device. One task
/// takes every pairing queued while the previous batch was committing and
/// runs them in one transaction per organization. A pairing refused for
/// its own reason (a used token) writes nothing and does not disturb its
/// neighbours; if the database refuses a statement, each pairing of the
/// batch is retried in a transaction of its own. Each caller is answered
/// only after its own pairing has committed.
pub struct Pairings {
    store: Store,
    clock: Clock,
    deadline: Duration,
    queue: OnceLock<mpsc::Sender<Job>>,
}

/// Most pairings committed together.
const MAX_BATCH: usize = 64;

impl Pairings {
    pub fn new(store: Store, clock: Clock, deadline: Duration) -> Self {
        Self {
            store,
            clock,
            deadline,
            queue: OnceLock::new(),
        }
    }

    async fn submit(&self, claim: Claim) -> Result<Paired> {
        // Started on first use, on the runtime that serves the requests.
        let queue = self.queue.get_or_init(|| {
            let (queue, incoming) = mpsc::channel(1024);
            tokio::spawn(commit_loop(
                self.store.clone(),
                self.clock.clone(),
                incoming,
            ));
            queue
        });
        let (done, answer) = oneshot::channel();
        let wait = async {
            queue
                .send(Job { claim, done })
                .await
                .map_err(|_| Error::Unavailable("shutting down".into()))?;
            answer
                .await
                .map_err(|_| Error::Internal("the pairing task stopped".into()))?
        };
        tokio::time::timeout(self.deadline, wait)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Unavailable(
                    "the database is not answering in time; retry shortly".into(),
                ))
            })
    }
}

async fn commit_loop(store: Store, clock: Clock, mut incoming: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while incoming.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let mut by_org: BTreeMap<Uuid, Vec<Job>> = BTreeMap::new();
        for job in jobs.drain(..) {
            by_org.entry(job.claim.token.org_id).or_default().push(job);
        }
        for (org, group) in by_org {
            commit_group(&store, &clock, org, group).await;
        }
    }
}

async fn commit_group(store: &Store, clock: &Clock, org: Uuid, jobs: Vec<Job>) {
    let claims: Vec<&Claim> = jobs.iter().map(|j| &j.claim).collect();
    match run(store, clock, org, &claims).await {
        Ok(answers) => {
            for (job, answer) in jobs.into_iter().zip(answers) {
                let _ = job.done.send(answer);
            }
        }
        Err(Error::Unavailable(why)) => {
            for job in jobs {
                let _ = job.done.send(Err(Error::Unavailable(why.clone())));
            }
        }
        Err(e) if jobs.len() == 1 => {
            let job = jobs.into_iter().next().expect("one job");
            let _ = job.done.send(Err(e));
        }
        Err(e) => {
            tracing::warn!(error = %e, pairings = jobs.len(), "pairing batch failed; retrying one by one");
            for job in jobs {
                let answer = run(store, clock, org, &[&job.claim])
                    .await
                    .and_then(|mut a| a.remove(0));
                let _ = job.done.send(answer);
            }
        }
    }
}

/// Pairs each claim in one transaction: an answer per claim, or the error
/// that made the transaction unusable.
async fn run(
    store: &Store,
    clock: &Clock,
    org: Uuid,
    claims: &[&Claim],
) -> Result<Vec<Result<Paired>>> {
    let mut tx = store.org_tx(org).await?;
    let mut answers = Vec::with_capacity(claims.len());
    for claim in claims {
        match pair_in(clock.now(), &mut tx, claim).await {
            Ok(paired) => answers.push(Ok(paired)),
            // Refused before anything was written.
            Err(e @ (Error::Unauthenticated(_) | Error::NotFound(_))) => answers.push(Err(e)),
            Err(e) => return Err(e),
        }
    }
    tx.commit().await?;
    Ok(answers)
}

async fn pair_in(now: DateTime<Utc>, tx: &mut OrgTx, claim: &Claim) -> Result<Paired> {
    let token = &claim.token;
    // Lock the device first, as every key operation does, so that pairing and
    // a concurrent new token or rotation cannot deadlock.
    let device = devices::lock_by_id(tx, token.device_id).await?;
    // Claim the token with a conditional update, so two concurrent pairings
    // with the same token cannot both succeed.
    let claimed = provisioning_token::Entity::update_many()
        .col_expr(provisioning_token::Column::UsedAt, Some(now).into())
        .filter(provisioning_token::Column::Id.eq(token.id))
        .filter(provisioning_token::Column::OrgId.eq(tx.org_id()))
        .filter(provisioning_token::Column::UsedAt.is_null())
        .filter(provisioning_token::Column::RevokedAt.is_null())
        .filter(provisioning_token::Column::ExpiresAt.gt(now))
        .exec(tx.conn())
        .await?;
    if claimed.rows_affected != 1 {
        return Err(Error::Unauthenticated(REJECTED.into()));
    }

    // A re-paired device (new SD card, factory reset) keeps one live key.
    devices::revoke_live_keys(tx, device.id, now).await?;
    let api_key = devices::insert_device_key(now, tx, device.id).await?;

    let mut active: device::ActiveModel = device.clone().into();
    if claim.hardware_model.is_some() {
        active.hardware_model = Set(claim.hardware_model.clone());
    }
    if claim.serial_number.is_some() {
        active.serial_number = Set(claim.serial_number.clone());
    }
    if claim.firmware_version.is_some() {
        devices::firmware_reported(tx, device.id).await?;
        active.firmware_version = Set(claim.firmware_version.clone());
    }
    let device = active.update(tx.conn()).await?;
    audit::write(
        tx,
        now,
        Entry::new(
            Action::DevicePaired,
            Actor::ProvisioningToken(token.id),
            Some(("device", device.id)),
        )
        .from_ip(claim.source_ip),
    )
    .await?;
    tx.publish(Event::DeviceKeysChanged {
        device_id: device.id,
    })
    .await?;
    Ok(Paired {
        device_id: device.id,
        org_id: device.org_id,
        name: device.name,
        api_key,
    })
}
