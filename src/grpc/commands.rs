//! Command handlers: the device's long poll, stream and acknowledgement,
//! and the admin queue. The service impls call these.

use std::{collections::VecDeque, sync::Arc, time::Duration};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, codegen::BoxStream};

use super::credential;
use crate::{
    app::App,
    auth::{DevicePrincipal, require_device, require_read, require_write},
    bus::Event,
    core::{
        Core,
        commands::{self, delivery},
        page::PageRequest,
        rfc3339, rfc3339_ms,
    },
    proto,
    store::entities::command,
};

type Reply<T> = Result<Response<T>, Status>;

/// Default and longest long-poll wait.
const DEFAULT_WAIT: u32 = 25;

fn payload(text: &Option<String>) -> Option<pbjson_types::Struct> {
    text.as_deref().and_then(|t| serde_json::from_str(t).ok())
}

/// A command as the device receives it.
pub fn for_device(c: &command::Model) -> proto::Command {
    proto::Command {
        id: c.id.to_string(),
        r#type: c.kind.clone(),
        payload: payload(&c.payload),
        created_at: rfc3339(c.created_at),
        expires_at: rfc3339_ms(c.expires_ms),
        attempt: u32::try_from(c.attempt).unwrap_or(0),
    }
}

/// A command as an operator sees it.
pub fn status(c: &command::Model) -> proto::CommandStatus {
    proto::CommandStatus {
        id: c.id.to_string(),
        device_id: c.device_id.to_string(),
        r#type: c.kind.clone(),
        payload: payload(&c.payload),
        status: c.status.clone(),
        attempt: u32::try_from(c.attempt).unwrap_or(0),
        max_attempts: u32::try_from(c.max_attempts).unwrap_or(0),
        result: payload(&c.result),
        message: c.message.clone(),
        created_at: rfc3339(c.created_at),
        expires_at: rfc3339_ms(c.expires_ms),
        updated_at: Some(rfc3339(c.updated_at)),
        deployment_id: c.deployment_id.map(|id| id.to_string()),
    }
}

pub async fn poll(
    app: &App,
    req: Request<proto::PollCommandsRequest>,
) -> Reply<proto::PollCommandsResponse> {
    let who = require_device(credential(&req))?;
    let wait = Duration::from_secs(req.get_ref().wait.unwrap_or(DEFAULT_WAIT).into());
    let claimed = delivery::poll(&app.core, who, wait).await?;
    Ok(Response::new(proto::PollCommandsResponse {
        commands: claimed.iter().map(for_device).collect(),
    }))
}

/// Pushes each command the moment it is queued; on (re)connect, first
/// delivers again what was delivered but not acknowledged.
///
/// The stream is the response body itself, polled by the connection: no
/// task or channel of its own, so a device that only waits costs little
/// more than its connection, and leaving (the body dropped) ends the wait.
pub async fn stream(
    app: Arc<App>,
    req: Request<proto::StreamCommandsRequest>,
) -> Reply<BoxStream<proto::Command>> {
    let who = require_device(credential(&req))?;
    let core = app.core.clone();
    let waiter = delivery::Waiter::start(&core, who).await?;
    let state = Delivering {
        core,
        who,
        waiter,
        claimed: VecDeque::new(),
        next_lease: None,
        reclaim: true,
        ended: false,
    };
    let commands = futures_util::stream::unfold(state, |mut s| async move {
        let next = s.next().await?;
        Some((next, s))
    });
    Ok(Response::new(Box::pin(commands)))
}

/// One device's stream between two commands.
struct Delivering {
    core: Arc<Core>,
    who: DevicePrincipal,
    waiter: delivery::Waiter,
    /// Claimed, not yet handed to the connection.
    claimed: VecDeque<proto::Command>,
    next_lease: Option<i64>,
    /// The first claim takes back what was delivered and not acknowledged.
    reclaim: bool,
    ended: bool,
}

impl Delivering {
    async fn next(&mut self) -> Option<Result<proto::Command, Status>> {
        loop {
            if let Some(c) = self.claimed.pop_front() {
                return Some(Ok(c));
            }
            if self.ended {
                return None;
            }
            if !self.reclaim {
                let until = self.next_lease.map(|at| {
                    let left = at - self.core.clock.now().timestamp_millis();
                    Duration::from_millis(u64::try_from(left).unwrap_or(0) + 1)
                });
                match self.waiter.wait(&self.core, until).await {
                    Ok(delivery::Wake::Claim) => {}
                    Ok(delivery::Wake::Delivered(c)) => {
                        self.claimed.extend(c.commands.iter().map(for_device));
                        self.next_lease = c.next_lease;
                        continue;
                    }
                    Ok(delivery::Wake::Done) => return None,
                    Err(e) => return self.end(e),
                }
            }
            // Boxed: the claim's state is large and lives only while it
            // runs, not for as long as the stream waits.
            let claim = Box::pin(delivery::claim(&self.core, &self.who, self.reclaim));
            match claim.await {
                Ok((claimed, next_lease)) => {
                    self.claimed.extend(claimed.iter().map(for_device));
                    self.next_lease = next_lease;
                    self.reclaim = false;
                }
                Err(e) => return self.end(e),
            }
        }
    }

    fn end(&mut self, e: crate::error::Error) -> Option<Result<proto::Command, Status>> {
        self.ended = true;
        Some(Err(Status::from(e)))
    }
}

pub async fn ack(
    app: &App,
    req: Request<proto::AckCommandRequest>,
) -> Reply<proto::AckCommandResponse> {
    let who = require_device(credential(&req))?;
    let b = req.into_inner();
    let acked = commands::ack(
        &app.core,
        &who,
        &b.id,
        commands::Ack {
            status: b.status,
            message: b.message,
            result: b
                .result
                .map(|r| serde_json::to_value(r).unwrap_or_default()),
        },
    )
    .await?;
    Ok(Response::new(proto::AckCommandResponse {
        id: acked.id.to_string(),
        status: acked.status,
    }))
}

pub async fn create(
    app: &App,
    req: Request<proto::CreateCommandRequest>,
) -> Reply<proto::CommandStatus> {
    let access = require_write(credential(&req))?;
    let b = req.into_inner();
    let queued = commands::enqueue(
        &app.core,
        &access,
        &b.id,
        commands::NewCommand {
            kind: b.r#type,
            payload: b
                .payload
                .map(|p| serde_json::to_value(p).unwrap_or_default()),
            ttl_seconds: b.ttl_seconds,
            max_attempts: b.max_attempts,
            idempotency_key: b.idempotency_key,
            deployment_id: None,
        },
    )
    .await?;
    Ok(Response::new(status(&queued)))
}

pub async fn list(
    app: &App,
    req: Request<proto::ListCommandsRequest>,
) -> Reply<proto::ListCommandsResponse> {
    let access = require_read(credential(&req))?;
    let b = req.get_ref();
    let page = PageRequest::parse(b.page_size, b.page_token.as_deref())?;
    let (rows, next_page_token) =
        commands::list(&app.core, &access, &b.id, b.status.as_deref(), page).await?;
    Ok(Response::new(proto::ListCommandsResponse {
        commands: rows.iter().map(status).collect(),
        next_page_token,
    }))
}

pub async fn get(app: &App, req: Request<proto::GetCommandRequest>) -> Reply<proto::CommandStatus> {
    let access = require_read(credential(&req))?;
    let found = commands::get(&app.core, &access, &req.get_ref().id).await?;
    Ok(Response::new(status(&found)))
}

pub async fn cancel(
    app: &App,
    req: Request<proto::CancelCommandRequest>,
) -> Reply<proto::CommandStatus> {
    let access = require_write(credential(&req))?;
    let cancelled = commands::cancel(&app.core, &access, &req.get_ref().id).await?;
    Ok(Response::new(status(&cancelled)))
}

/// Every status change of the organization's commands, as it commits.
pub async fn watch(
    app: Arc<App>,
    req: Request<proto::WatchCommandsRequest>,
) -> Reply<BoxStream<proto::CommandStatus>> {
    let access = require_read(credential(&req))?;
    let device = crate::core::validate::opt_uuid("device_id", req.get_ref().device_id.as_deref())?;
    let mut events = app.core.bus.subscribe_all();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                () = tx.closed() => return,
            };
            let id = match event {
                Ok(Event::CommandChanged { org_id, command_id }) if org_id == access.org_id() => {
                    command_id
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            let Ok(c) = commands::get(&app.core, &access, &id.to_string()).await else {
                continue;
            };
            if device.is_some_and(|d| d != c.device_id) {
                continue;
            }
            if tx.send(Ok(status(&c))).await.is_err() {
                return;
            }
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}
