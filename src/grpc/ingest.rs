//! Admin handlers for what devices send: readings, telemetry, events,
//! sensor types, alert rules and alerts, webhooks. The `AdminService`
//! impl calls these; each takes the principal, converts, calls `core`.

use std::sync::Arc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, codegen::BoxStream};

use super::credential;
use crate::{
    app::App,
    auth::{require_read, require_write},
    bus::Event,
    core::{
        alerts,
        page::PageRequest,
        queries,
        queries::{SeriesPage, Window},
        rfc3339, rfc3339_ms, sensor_types, webhooks,
    },
    proto,
    store::entities::{alert, alert_rule, webhook, webhook_delivery},
};

type Reply<T> = Result<Response<T>, Status>;

pub async fn get_readings(
    app: &App,
    req: Request<proto::GetReadingsRequest>,
) -> Reply<proto::GetReadingsResponse> {
    let access = require_read(credential(&req))?;
    let b = req.into_inner();
    let core = &app.core;
    let window = Window::parse(b.from.as_deref(), b.to.as_deref(), core.clock.now())?;
    let mut answer = proto::GetReadingsResponse::default();
    match b.bucket_seconds {
        Some(seconds) => {
            let buckets =
                queries::reading_buckets(core, &access, &b.id, &b.sensor_type, window, seconds)
                    .await?;
            answer.buckets = buckets
                .into_iter()
                .map(|k| proto::ReadingBucket {
                    start: rfc3339_ms(k.start_ms),
                    min: k.min,
                    max: k.max,
                    avg: k.avg,
                    count: u64::try_from(k.count).unwrap_or(0),
                })
                .collect();
        }
        None => {
            let page = SeriesPage::parse(b.page_size, b.page_token.as_deref())?;
            let points =
                queries::reading_points(core, &access, &b.id, &b.sensor_type, window, page).await?;
            answer.points = points
                .points
                .into_iter()
                .map(|(ts, value)| proto::ReadingPoint {
                    ts: rfc3339_ms(ts),
                    value,
                })
                .collect();
            answer.next_page_token = points.next_page_token;
        }
    }
    Ok(Response::new(answer))
}

pub async fn get_latest_readings(
    app: &App,
    req: Request<proto::GetLatestReadingsRequest>,
) -> Reply<proto::GetLatestReadingsResponse> {
    let access = require_read(credential(&req))?;
    let rows = queries::latest_readings(&app.core, &access, &req.get_ref().id).await?;
    let types = app
        .core
        .sensor_types
        .for_org(&app.core.store, access.org_id())
        .await?;
    Ok(Response::new(proto::GetLatestReadingsResponse {
        readings: rows
            .into_iter()
            .map(|r| proto::LatestReading {
                unit: types
                    .get(&r.sensor_type)
                    .map(|t| t.unit.clone())
                    .unwrap_or_default(),
                sensor_type: r.sensor_type,
                value: r.value,
                ts: rfc3339_ms(r.ts_ms),
            })
            .collect(),
    }))
}

fn telemetry_point(key: String, value: &str, ts_ms: i64) -> proto::TelemetryPoint {
    proto::TelemetryPoint {
        key,
        value: serde_json::from_str(value).ok(),
        ts: rfc3339_ms(ts_ms),
    }
}

pub async fn get_telemetry(
    app: &App,
    req: Request<proto::GetTelemetryRequest>,
) -> Reply<proto::GetTelemetryResponse> {
    let access = require_read(credential(&req))?;
    let b = req.into_inner();
    let window = Window::parse(b.from.as_deref(), b.to.as_deref(), app.core.clock.now())?;
    let page = SeriesPage::parse(b.page_size, b.page_token.as_deref())?;
    let found =
        queries::telemetry_points(&app.core, &access, &b.id, b.key.as_deref(), window, page)
            .await?;
    Ok(Response::new(proto::GetTelemetryResponse {
        points: found
            .points
            .into_iter()
            .map(|(k, v, ts)| telemetry_point(k, &v, ts))
            .collect(),
        next_page_token: found.next_page_token,
    }))
}

pub async fn get_latest_telemetry(
    app: &App,
    req: Request<proto::GetLatestTelemetryRequest>,
) -> Reply<proto::GetTelemetryResponse> {
    let access = require_read(credential(&req))?;
    let rows = queries::latest_telemetry(&app.core, &access, &req.get_ref().id).await?;
    Ok(Response::new(proto::GetTelemetryResponse {
        points: rows
            .into_iter()
            .map(|r| telemetry_point(r.key, &r.value, r.ts_ms))
            .collect(),
        next_page_token: String::new(),
    }))
}

pub async fn list_events(
    app: &App,
    req: Request<proto::ListEventsRequest>,
) -> Reply<proto::ListEventsResponse> {
    let access = require_read(credential(&req))?;
    let b = req.into_inner();
    let page = PageRequest::parse(b.page_size, b.page_token.as_deref())?;
    let filter = queries::EventFilter {
        device_id: b.device_id,
        kind: b.r#type,
        severity: b.severity,
        from: b.from,
        to: b.to,
    };
    let (rows, next_page_token) =
        queries::events(&app.core, &access, filter, page.size, page.cursor).await?;
    Ok(Response::new(proto::ListEventsResponse {
        events: rows
            .into_iter()
            .map(|e| proto::Event {
                id: e.id.to_string(),
                device_id: e.device_id.to_string(),
                r#type: e.kind,
                severity: e.severity,
                message: e.message,
                data: e.data.and_then(|d| serde_json::from_str(&d).ok()),
                ts: rfc3339_ms(e.ts_ms),
                received_at: rfc3339_ms(e.received_ms),
            })
            .collect(),
        next_page_token,
    }))
}

fn org_type(t: sensor_types::SensorType) -> proto::OrgSensorType {
    proto::OrgSensorType {
        key: t.key,
        unit: t.unit,
        description: t.description,
        min: t.min,
        max: t.max,
        built_in: t.built_in,
    }
}

pub async fn create_sensor_type(
    app: &App,
    req: Request<proto::CreateSensorTypeRequest>,
) -> Reply<proto::OrgSensorType> {
    let access = require_write(credential(&req))?;
    let b = req.into_inner();
    let created = sensor_types::create(
        &app.core,
        &access,
        sensor_types::NewSensorType {
            key: b.key,
            unit: b.unit,
            description: b.description,
            min: b.min,
            max: b.max,
        },
    )
    .await?;
    Ok(Response::new(org_type(created)))
}

pub async fn list_org_sensor_types(
    app: &App,
    req: Request<proto::ListOrgSensorTypesRequest>,
) -> Reply<proto::ListOrgSensorTypesResponse> {
    let access = require_read(credential(&req))?;
    let all = sensor_types::list_for_admin(&app.core, &access).await?;
    Ok(Response::new(proto::ListOrgSensorTypesResponse {
        sensor_types: all.into_iter().map(org_type).collect(),
    }))
}

pub async fn delete_sensor_type(
    app: &App,
    req: Request<proto::DeleteSensorTypeRequest>,
) -> Reply<proto::DeleteSensorTypeResponse> {
    let access = require_write(credential(&req))?;
    sensor_types::delete(&app.core, &access, &req.get_ref().key).await?;
    Ok(Response::new(proto::DeleteSensorTypeResponse {}))
}

fn rule(m: alert_rule::Model) -> proto::AlertRule {
    proto::AlertRule {
        id: m.id.to_string(),
        name: m.name,
        sensor_type: m.sensor_type,
        op: m.op,
        threshold: m.threshold,
        clear_threshold: m.clear_threshold,
        for_seconds: u32::try_from(m.for_seconds).unwrap_or(0),
        severity: m.severity,
        device_id: m.device_id.map(|id| id.to_string()),
        group_id: m.group_id.map(|id| id.to_string()),
        location_id: m.location_id.map(|id| id.to_string()),
        created_at: rfc3339(m.created_at),
        cooldown_seconds: u32::try_from(m.cooldown_seconds).unwrap_or(0),
    }
}

pub fn alert(m: alert::Model) -> proto::Alert {
    proto::Alert {
        id: m.id.to_string(),
        rule_id: m.rule_id.to_string(),
        device_id: m.device_id.to_string(),
        state: m.state,
        opened_at: rfc3339(m.opened_at),
        resolved_at: m.resolved_at.map(rfc3339),
        value: m.value,
        severity: m.severity,
        sensor_type: m.sensor_type,
        acknowledged_at: m.acknowledged_at.map(rfc3339),
        resolved_value: m.resolved_value,
    }
}

pub async fn create_alert_rule(
    app: &App,
    req: Request<proto::CreateAlertRuleRequest>,
) -> Reply<proto::AlertRule> {
    let access = require_write(credential(&req))?;
    let b = req.into_inner();
    let created = alerts::create_rule(
        &app.core,
        &access,
        alerts::NewRule {
            name: b.name,
            sensor_type: b.sensor_type,
            op: b.op,
            threshold: b.threshold.unwrap_or_default(),
            clear_threshold: b.clear_threshold,
            for_seconds: b.for_seconds.unwrap_or(0),
            cooldown_seconds: b.cooldown_seconds.unwrap_or(0),
            severity: b.severity,
            device_id: b.device_id,
            group_id: b.group_id,
            location_id: b.location_id,
        },
    )
    .await?;
    Ok(Response::new(rule(created)))
}

pub async fn list_alert_rules(
    app: &App,
    req: Request<proto::ListAlertRulesRequest>,
) -> Reply<proto::ListAlertRulesResponse> {
    let access = require_read(credential(&req))?;
    let b = req.get_ref();
    let page = PageRequest::parse(b.page_size, b.page_token.as_deref())?;
    let (rows, next_page_token) = alerts::list_rules(&app.core, &access, page).await?;
    Ok(Response::new(proto::ListAlertRulesResponse {
        alert_rules: rows.into_iter().map(rule).collect(),
        next_page_token,
    }))
}

pub async fn delete_alert_rule(
    app: &App,
    req: Request<proto::DeleteAlertRuleRequest>,
) -> Reply<proto::DeleteAlertRuleResponse> {
    let access = require_write(credential(&req))?;
    alerts::delete_rule(&app.core, &access, &req.get_ref().id).await?;
    Ok(Response::new(proto::DeleteAlertRuleResponse {}))
}

pub async fn list_alerts(
    app: &App,
    req: Request<proto::ListAlertsRequest>,
) -> Reply<proto::ListAlertsResponse> {
    let access = require_read(credential(&req))?;
    let b = req.into_inner();
    let page = PageRequest::parse(b.page_size, b.page_token.as_deref())?;
    let filter = alerts::AlertFilter {
        state: b.state,
        device_id: b.device_id,
        rule_id: b.rule_id,
    };
    let (rows, next_page_token) = alerts::list_alerts(&app.core, &access, filter, page).await?;
    Ok(Response::new(proto::ListAlertsResponse {
        alerts: rows.into_iter().map(alert).collect(),
        next_page_token,
    }))
}

pub async fn acknowledge_alert(
    app: &App,
    req: Request<proto::AcknowledgeAlertRequest>,
) -> Reply<proto::Alert> {
    let access = require_write(credential(&req))?;
    let acked = alerts::acknowledge(&app.core, &access, &req.get_ref().id).await?;
    Ok(Response::new(alert(acked)))
}

/// Pushes each alert change of the caller's organization as it commits.
pub async fn watch_alerts(
    app: Arc<App>,
    req: Request<proto::WatchAlertsRequest>,
) -> Reply<BoxStream<proto::AlertEvent>> {
    let access = require_read(credential(&req))?;
    let mut events = app.core.bus.subscribe_all();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                () = tx.closed() => return,
            };
            let id = match event {
                Ok(Event::AlertChanged { org_id, alert_id }) if org_id == access.org_id() => {
                    alert_id
                }
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            let sent = match alerts::get_alert(&app.core, &access, id).await {
                Ok(a) => {
                    tx.send(Ok(proto::AlertEvent {
                        alert: Some(alert(a)),
                    }))
                    .await
                }
                Err(e) => tx.send(Err(Status::from(e))).await,
            };
            if sent.is_err() {
                return; // the client left
            }
        }
    });
    let stream = ReceiverStream::new(rx).map(|item| item);
    Ok(Response::new(Box::pin(stream)))
}

fn hook(m: webhook::Model, with_secret: bool) -> proto::Webhook {
    proto::Webhook {
        id: m.id.to_string(),
        url: m.url,
        description: m.description,
        secret: with_secret.then_some(m.secret),
        created_at: rfc3339(m.created_at),
    }
}

pub async fn create_webhook(
    app: &App,
    req: Request<proto::CreateWebhookRequest>,
) -> Reply<proto::Webhook> {
    let access = require_write(credential(&req))?;
    let b = req.get_ref();
    let created = webhooks::create(&app.core, &access, &b.url, b.description.as_deref()).await?;
    Ok(Response::new(hook(created, true)))
}

pub async fn list_webhooks(
    app: &App,
    req: Request<proto::ListWebhooksRequest>,
) -> Reply<proto::ListWebhooksResponse> {
    let access = require_read(credential(&req))?;
    let b = req.get_ref();
    let page = PageRequest::parse(b.page_size, b.page_token.as_deref())?;
    let (rows, next_page_token) = webhooks::list(&app.core, &access, page).await?;
    Ok(Response::new(proto::ListWebhooksResponse {
        webhooks: rows.into_iter().map(|m| hook(m, false)).collect(),
        next_page_token,
    }))
}

pub async fn delete_webhook(
    app: &App,
    req: Request<proto::DeleteWebhookRequest>,
) -> Reply<proto::DeleteWebhookResponse> {
    let access = require_write(credential(&req))?;
    webhooks::delete(&app.core, &access, &req.get_ref().id).await?;
    Ok(Response::new(proto::DeleteWebhookResponse {}))
}

fn delivery(m: webhook_delivery::Model) -> proto::WebhookDelivery {
    proto::WebhookDelivery {
        id: m.id.to_string(),
        webhook_id: m.webhook_id.to_string(),
        event: m.event,
        status: m.status,
        attempts: u32::try_from(m.attempts).unwrap_or(0),
        last_status_code: m.last_status_code.and_then(|c| u32::try_from(c).ok()),
        last_error: m.last_error,
        created_at: rfc3339(m.created_at),
        next_attempt_at: m.next_attempt_ms.map(rfc3339_ms),
        delivered_at: m.delivered_at.map(rfc3339),
        payload: serde_json::from_str(&m.payload).ok(),
    }
}

pub async fn list_webhook_deliveries(
    app: &App,
    req: Request<proto::ListWebhookDeliveriesRequest>,
) -> Reply<proto::ListWebhookDeliveriesResponse> {
    let access = require_read(credential(&req))?;
    let b = req.get_ref();
    let page = PageRequest::parse(b.page_size, b.page_token.as_deref())?;
    let (rows, next_page_token) = webhooks::deliveries(&app.core, &access, &b.id, page).await?;
    Ok(Response::new(proto::ListWebhookDeliveriesResponse {
        deliveries: rows.into_iter().map(delivery).collect(),
        next_page_token,
    }))
}
