//! Capture handlers (device upload and labels; admin list, get, delete,
//! COCO export). Upload takes a stream of `UploadCaptureChunk`s, from the
//! gRPC client stream or from the REST adapter's multipart parser alike.

use bytes::Bytes;
use std::collections::BTreeMap;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{credential, origin};
use crate::{
    app::App,
    auth::{Credential, require_device, require_read, require_write},
    checks::{At, Check},
    core::{
        blobs,
        captures::{
            self, CaptureView, DetectionInput, Filters, MetaInput, ModelRef, UploadPart,
            labels::LabelsInput,
        },
        page::{Cursor, PageRequest},
        rfc3339_ms,
    },
    error::{Error, Result},
    proto::{self, upload_capture_chunk::Part},
    store::entities::capture_detection,
};

type Reply<T> = std::result::Result<Response<T>, Status>;

/// The base URL signed paths are joined to: `--public-url`, else the one
/// the caller used.
pub(super) fn base_url<T>(app: &App, req: &Request<T>) -> String {
    app.config.public_url.clone().unwrap_or_else(|| origin(req))
}

fn detection_in(d: proto::Detection) -> DetectionInput {
    DetectionInput {
        label: d.label,
        confidence: d.confidence.unwrap_or(f64::NAN),
        bbox: d.bbox,
    }
}

fn model_in(m: Option<proto::ModelRef>) -> Option<ModelRef> {
    m.map(|m| ModelRef {
        name: m.name,
        version: Some(m.version).filter(|v| !v.trim().is_empty()),
    })
}

/// A checked `meta` for the use case.
pub fn meta_in(meta: proto::CaptureMeta) -> Result<MetaInput> {
    meta.check(&At::Root)?;
    Ok(MetaInput {
        detections: meta.detections.into_iter().map(detection_in).collect(),
        ts: meta.ts,
        capture_id: meta.capture_id,
        model: model_in(meta.model),
        tags: meta.tags,
    })
}

fn detection_out(d: capture_detection::Model) -> proto::Detection {
    proto::Detection {
        label: d.label,
        confidence: Some(d.confidence),
        bbox: vec![d.x_min, d.y_min, d.x_max, d.y_max],
        source: d.source,
        model: d.model_name.map(|name| proto::ModelRef {
            name,
            version: d.model_version.unwrap_or_default(),
        }),
        set_at: rfc3339_ms(d.set_ms),
    }
}

/// A capture as answered; admins also get `device_id` and `image_url`.
fn capture_out(v: CaptureView, image_url: Option<String>) -> proto::Capture {
    let admin = image_url.is_some();
    let tags = v.tags();
    let model = v.model();
    let r = v.row;
    proto::Capture {
        capture_id: r.id.to_string(),
        received_at: rfc3339_ms(r.received_ms),
        image: Some(proto::ImageInfo {
            content_type: r.content_type,
            size_bytes: r.size_bytes.max(0) as u64,
            width: r.width.max(0) as u32,
            height: r.height.max(0) as u32,
            sha256: r.sha256,
        }),
        detections: v.detections.into_iter().map(detection_out).collect(),
        sensor_snapshot: v
            .snapshot
            .into_iter()
            .map(|s| proto::SensorSnapshotEntry {
                sensor_type: s.sensor_type,
                value: s.value,
                unit: s.unit,
                ts: rfc3339_ms(s.ts_ms),
            })
            .collect(),
        device_id: if admin {
            r.device_id.to_string()
        } else {
            String::new()
        },
        image_url,
        ts: r.ts_ms.map(rfc3339_ms),
        tags,
        model: model.map(|m| proto::ModelRef {
            name: m.name,
            version: m.version.unwrap_or_default(),
        }),
    }
}

async fn admin_view(app: &App, base: &str, v: CaptureView) -> Result<proto::Capture> {
    let (url, _) = blobs::signed_url(&app.core, &v.row.blob_key).await?;
    Ok(capture_out(v, Some(url.resolve(base))))
}

/// Stores one capture from upload chunks: `meta` (at most once, anywhere
/// in the stream) and `data`. Returns the capture and whether it is new
/// (REST answers 201, or 200 for a repeated `capture_id`).
pub async fn upload<S>(
    app: &App,
    credential: &Credential,
    chunks: S,
) -> Result<(proto::Capture, bool)>
where
    S: Stream<Item = std::result::Result<proto::UploadCaptureChunk, Status>> + Unpin + Send,
{
    let who = require_device(credential)?;
    let parts = chunks.filter_map(|chunk| match chunk {
        Err(status) => Some(Err(status_error(status))),
        Ok(proto::UploadCaptureChunk { part: None }) => None,
        Ok(proto::UploadCaptureChunk {
            part: Some(Part::Meta(meta)),
        }) => Some(meta_in(meta).map(UploadPart::Meta)),
        Ok(proto::UploadCaptureChunk {
            part: Some(Part::Data(data)),
        }) => Some(Ok(UploadPart::Data(Bytes::from(data)))),
    });
    let uploaded = captures::upload::upload(&app.core, &who, parts).await?;
    Ok((capture_out(uploaded.view, None), uploaded.created))
}

/// A transport error in the middle of the stream (the client went away,
/// a chunk over the message limit) as a use-case error.
pub(super) fn status_error(status: Status) -> Error {
    match status.code() {
        tonic::Code::ResourceExhausted | tonic::Code::OutOfRange => {
            Error::PayloadTooLarge(status.message().to_owned())
        }
        tonic::Code::InvalidArgument => Error::invalid(status.message()),
        _ => Error::invalid(format!("the upload stream broke off: {}", status.message())),
    }
}

pub async fn upload_stream(
    app: &App,
    req: Request<tonic::Streaming<proto::UploadCaptureChunk>>,
) -> Reply<proto::Capture> {
    let credential = credential(&req).clone();
    let (capture, _) = upload(app, &credential, req.into_inner()).await?;
    Ok(Response::new(capture))
}

pub async fn set_labels(
    app: &App,
    req: Request<proto::SetLabelsRequest>,
) -> Reply<proto::SetLabelsResponse> {
    let who = require_device(credential(&req))?;
    let b = req.into_inner();
    let capture_id = b.capture_id.clone();
    let detections = captures::labels::set(
        &app.core,
        &who,
        LabelsInput {
            capture_id: b.capture_id,
            detections: b.detections.into_iter().map(detection_in).collect(),
            mode: b.mode,
            source: b.source,
            model: model_in(b.model),
        },
    )
    .await?;
    Ok(Response::new(proto::SetLabelsResponse {
        capture_id: capture_id.trim().to_ascii_lowercase(),
        detections: detections.into_iter().map(detection_out).collect(),
    }))
}

fn filters(
    device_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    label: Option<String>,
    min_confidence: Option<f64>,
) -> Filters {
    Filters {
        device_id,
        from,
        to,
        label,
        min_confidence,
    }
}

pub async fn list(
    app: &App,
    req: Request<proto::ListCapturesRequest>,
) -> Reply<proto::ListCapturesResponse> {
    let access = require_read(credential(&req))?;
    let base = base_url(app, &req);
    let b = req.into_inner();
    let page = PageRequest::parse(b.page_size, b.page_token.as_deref())?;
    let f = filters(b.device_id, b.from, b.to, b.label, b.min_confidence);
    let (views, next_page_token) =
        captures::list(&app.core, &access, &f, page.size, page.cursor).await?;
    let mut out = Vec::with_capacity(views.len());
    for v in views {
        out.push(admin_view(app, &base, v).await?);
    }
    Ok(Response::new(proto::ListCapturesResponse {
        captures: out,
        next_page_token,
    }))
}

pub async fn get(app: &App, req: Request<proto::GetCaptureRequest>) -> Reply<proto::Capture> {
    let access = require_read(credential(&req))?;
    let base = base_url(app, &req);
    let v = captures::get(&app.core, &access, &req.get_ref().id).await?;
    Ok(Response::new(admin_view(app, &base, v).await?))
}

pub async fn delete(
    app: &App,
    req: Request<proto::DeleteCaptureRequest>,
) -> Reply<proto::DeleteCaptureResponse> {
    let access = require_write(credential(&req))?;
    captures::delete(&app.core, &access, &req.get_ref().id).await?;
    Ok(Response::new(proto::DeleteCaptureResponse {}))
}

const COCO_DEFAULT_PAGE: u64 = 1000;
const COCO_MAX_PAGE: u64 = 5000;

fn coco_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

pub async fn export_coco(
    app: &App,
    req: Request<proto::ExportCocoRequest>,
) -> Reply<proto::CocoDataset> {
    let access = require_read(credential(&req))?;
    let base = base_url(app, &req);
    let b = req.into_inner();
    let size = match b.page_size {
        None | Some(0) => COCO_DEFAULT_PAGE,
        Some(n) => u64::from(n).min(COCO_MAX_PAGE),
    };
    let after = match b.page_token.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) => Some(
            Cursor::decode(t)
                .ok_or_else(|| Error::invalid("page_token is not a page token this API issued"))?,
        ),
    };
    let min_confidence = b.min_confidence;
    let f = filters(b.device_id, b.from, b.to, b.label, b.min_confidence);
    let (views, next_page_token) = captures::list(&app.core, &access, &f, size, after).await?;

    let mut categories: BTreeMap<String, u64> = BTreeMap::new();
    for v in &views {
        for d in &v.detections {
            if min_confidence.is_none_or(|m| d.confidence >= m) {
                categories.insert(d.label.clone(), 0);
            }
        }
    }
    for (id, slot) in (1..).zip(categories.values_mut()) {
        *slot = id;
    }
    let mut images = Vec::with_capacity(views.len());
    let mut annotations = Vec::new();
    for (image_id, v) in (1u64..).zip(views) {
        let (url, _) = blobs::signed_url(&app.core, &v.row.blob_key).await?;
        let extension = captures::image::ImageKind::from_content_type(&v.row.content_type)
            .map(|k| k.extension())
            .unwrap_or("bin");
        images.push(proto::CocoImage {
            id: image_id,
            width: v.row.width.max(0) as u32,
            height: v.row.height.max(0) as u32,
            file_name: format!("{}.{extension}", v.row.id),
            coco_url: url.resolve(&base),
            date_captured: coco_time(v.row.taken_ms),
            license: 1,
            capture_id: v.row.id.to_string(),
            device_id: v.row.device_id.to_string(),
        });
        for d in v.detections {
            let Some(&category_id) = categories.get(&d.label) else {
                continue;
            };
            if min_confidence.is_some_and(|m| d.confidence < m) {
                continue;
            }
            let (w, h) = (d.x_max - d.x_min, d.y_max - d.y_min);
            annotations.push(proto::CocoAnnotation {
                id: annotations.len() as u64 + 1,
                image_id,
                category_id,
                bbox: vec![d.x_min, d.y_min, w, h],
                area: w * h,
                iscrowd: 0,
                segmentation: Some(pbjson_types::ListValue { values: vec![] }),
                score: d.confidence,
            });
        }
    }
    let now = app.core.clock.now();
    Ok(Response::new(proto::CocoDataset {
        info: Some(proto::CocoInfo {
            description: "swrm capture export".into(),
            version: "1.0".into(),
            year: chrono::Datelike::year(&now) as u32,
            contributor: "swrm".into(),
            date_created: coco_time(now.timestamp_millis()),
        }),
        licenses: vec![proto::CocoLicense {
            id: 1,
            name: "unspecified".into(),
            url: String::new(),
        }],
        images,
        annotations,
        categories: categories
            .into_iter()
            .map(|(name, id)| proto::CocoCategory {
                id,
                name,
                supercategory: "object".into(),
            })
            .collect(),
        next_page_token,
    }))
}
