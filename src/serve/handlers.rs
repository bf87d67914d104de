//! The HTTP routes. Errors answer JSON `{"error": "..."}` with a 4xx status for bad
//! requests (unknown layer, undecodable frame, unknown image) and 5xx for our faults;
//! a failing request never takes the server down. JSON comes with `<`, `>` and `&`
//! escaped (`\u003c`...), so that labels and paths, which may hold markup, never
//! appear as markup in a reply whatever a client makes of it.
//!
//! | route | answer |
//! |---|---|
//! | `GET /`, `/page.js`, `/page.css` | the page (compiled in) |
//! | `GET /api/layers` | model, layers (every tap), default layer, database summary |
//! | `POST /api/frame?layer=L` | image bytes in; `frame::Reply` out; 503 `busy` while another frame runs |
//! | `GET /api/unit/{layer}/{unit}` | `unit::UnitReport`: filter, top images with crops, best concepts, labels of the top images, classifier hint |
//! | `GET /api/concepts` | `concepts::ConceptList`: the labelled concepts, each with its best unit |
//! | `GET /api/images?offset=&limit=` | indexed images (id, path) |
//! | `GET /api/image/{id}` | the bytes of indexed image `id` |

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::model::Rule;

use super::concepts::Concepts;
use super::{frame, unit, App};

const PAGE_HTML: &str = include_str!("page.html");
const PAGE_JS: &str = include_str!("page.js");
const PAGE_CSS: &str = include_str!("page.css");

/// The page may only load what this server serves (frames and pictures arrive as
/// blob: and data: URLs).
const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
                   connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; \
                   base-uri 'none'; frame-ancestors 'none'";

/// An error reply: status and a sentence.
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    fn not_found(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::NOT_FOUND, msg.into())
    }
    fn internal(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, msg.into())
    }
}

/// 503 `{"busy": true, "error": ...}`: try again.
fn busy(msg: &str) -> BusyReply {
    BusyReply(msg.to_string())
}

struct BusyReply(String);

impl IntoResponse for BusyReply {
    fn into_response(self) -> Response {
        let mut r = (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "busy": true, "error": self.0 })),
        )
            .into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

/// A JSON reply whose text holds no `<`, `>` or `&`: inside JSON strings (the only
/// place JSON has them) they are written as `\u003c`, `\u003e`, `\u0026`, which
/// parse back to the same characters.
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let text = match serde_json::to_string(&self.0) {
            Ok(t) => t,
            Err(e) => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot write the reply: {e}"),
                )
                    .into_response()
            }
        };
        let mut safe = String::with_capacity(text.len());
        for ch in text.chars() {
            match ch {
                '<' => safe.push_str("\\u003c"),
                '>' => safe.push_str("\\u003e"),
                '&' => safe.push_str("\\u0026"),
                c => safe.push(c),
            }
        }
        (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            safe,
        )
            .into_response()
    }
}

/// Query-string and path values that do not parse answer JSON like every other
/// error, naming the value (axum's own rejections are text/plain).
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad(format!("bad query string: {}", e.body_text())))
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::bad(format!("bad path: {}", e.body_text())))
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> ApiError {
        ApiError::internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

/// Runs blocking work (the network, SQLite, decoding) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the request's worker failed: {e}")))?
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/page.js", get(script))
        .route("/page.css", get(style))
        .route("/api/layers", get(layers))
        // The frame handler enforces `max_upload` itself.
        .route("/api/frame", post(frame).layer(DefaultBodyLimit::disable()))
        .route("/api/unit/{layer}/{unit}", get(unit_report))
        .route("/api/concepts", get(concept_list))
        .route("/api/images", get(images))
        .route("/api/image/{id}", get(image))
        .fallback(|| async { ApiError::not_found("no such page") })
        .layer(axum::middleware::from_fn(within_time))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            super::guard::check,
        ))
        .with_state(app)
}

/// A request that takes longer than `REQUEST_TIMEOUT` is answered 503.
async fn within_time(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(super::REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "busy: the request took longer than {} s",
                super::REQUEST_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
    }
}

fn text(body: &'static str, mime: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    let mut r = text(PAGE_HTML, "text/html; charset=utf-8");
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

async fn script() -> Response {
    text(PAGE_JS, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    text(PAGE_CSS, "text/css; charset=utf-8")
}

async fn layers(State(app): State<Arc<App>>) -> Result<Json<serde_json::Value>, ApiError> {
    let db = app.db.clone();
    let images = match db {
        Some(db) => Some(blocking(move || Ok(unit::list_images(&db, 0, 0)?.0)).await?),
        None => None,
    };
    Ok(Json(serde_json::json!({
        "model": app.net.arch.name,
        "weights_id": app.net.weights_id(),
        "input_size": app.net.arch.recipe.size,
        "crop_fraction": app.net.arch.recipe.crop_fraction,
        "default": app.default_layer,
        "db": app.db.as_ref().map(|p| p.display().to_string()),
        "images": images,
        "layers": app.layers,
    })))
}

#[derive(Deserialize)]
struct FrameQuery {
    layer: Option<String>,
    /// With `mode`: also the projection of this unit's maximum.
    unit: Option<usize>,
    /// backprop, guided or deconv.
    mode: Option<String>,
}

async fn frame(
    State(app): State<Arc<App>>,
    q: Result<Query<FrameQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    // Refuse an announced oversized upload before reading it, then cap what is read
    // (a client may announce nothing, or lie).
    let too_large = || {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("upload larger than the limit of {} bytes", app.max_upload),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > app.max_upload as u64) {
        return Err(too_large());
    }
    let body: Bytes = axum::body::to_bytes(body, app.max_upload)
        .await
        .map_err(|_| too_large())?;
    let name = q.layer.unwrap_or_else(|| app.default_layer.clone());
    let layer = app
        .layer(&name)
        .ok_or_else(|| {
            ApiError::bad(format!(
                "unknown layer {name:?} for {} (see /api/layers)",
                app.net.arch.name
            ))
        })?
        .clone();
    let back = match (q.unit, q.mode.as_deref()) {
        (None, None) => None,
        (Some(u), Some(m)) => {
            let rule = Rule::from_name(m).ok_or_else(|| {
                ApiError::bad(format!("unknown mode {m:?} (backprop, guided or deconv)"))
            })?;
            if u >= layer.c {
                return Err(ApiError::bad(format!(
                    "layer {} has {} units; there is no unit {u}",
                    layer.name, layer.c
                )));
            }
            Some((u, rule))
        }
        _ => return Err(ApiError::bad("a projection needs both unit and mode")),
    };
    // Busy: drop this frame now rather than queue it behind the running one.
    let Some(slot) = app.try_slot() else {
        return Ok(busy("busy: frame dropped").into_response());
    };
    let worker = app.clone();
    let reply = blocking(move || {
        let _slot = slot;
        let start = Instant::now();
        let img = frame::decode(&body, worker.max_frame_pixels)
            .map_err(|e| ApiError::bad(e.to_string()))?;
        let decode_ms = start.elapsed().as_secs_f64() * 1e3;
        Ok(frame::infer(
            &worker.net,
            &img,
            layer.node,
            &layer.name,
            decode_ms,
            back,
        )?)
    })
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        reply.encode(),
    )
        .into_response())
}

async fn unit_report(
    State(app): State<Arc<App>>,
    p: Result<Path<(String, usize)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (name, u) = path(p)?;
    let layer = app
        .layer(&name)
        .ok_or_else(|| ApiError::not_found(format!("unknown layer {name:?}")))?
        .clone();
    if u >= layer.c {
        return Err(ApiError::not_found(format!(
            "layer {} has {} units; there is no unit {u}",
            layer.name, layer.c
        )));
    }
    // Waits a little for the report before this one, else busy (the page asks again).
    let turn = tokio::time::timeout(super::REPORT_WAIT, app.reports.acquire()).await;
    let Ok(Ok(_turn)) = turn else {
        return Ok(busy("busy: another unit's report is being made").into_response());
    };
    // Without the concepts the report still shows the top images, and says why.
    let (known, failed) = match concepts(&app).await {
        Ok(k) => (k, None),
        Err(e) => (None, Some(e.1)),
    };
    let worker = app.clone();
    let rep = blocking(move || {
        let db = worker.db.as_deref();
        let mut rep = unit::report(&worker.net, db, layer.node, &layer.name, layer.c, u, 9)?;
        if let (Some(k), Some(db)) = (known, db) {
            if let Err(e) = k.fill(&mut rep, db) {
                rep.notes.push(format!("no concepts: {e}"));
            }
        }
        rep.notes
            .extend(failed.map(|e| format!("no concepts: {e}")));
        Ok(rep)
    })
    .await?;
    Ok(Json(rep).into_response())
}

/// The index's concepts, scored on first need and kept (`None`: no database). An
/// error is not kept: the next request tries again.
pub(super) async fn concepts(app: &Arc<App>) -> Result<Option<Arc<Concepts>>, ApiError> {
    let Some(db) = app.db.clone() else {
        return Ok(None);
    };
    let worker = app.clone();
    let known = app
        .concepts
        .get_or_try_init(|| {
            blocking(move || {
                Concepts::load(&worker.net, &db, &worker.layers)
                    .map(Arc::new)
                    .map_err(|e| ApiError::internal(format!("cannot score the units: {e}")))
            })
        })
        .await?;
    Ok(Some(known.clone()))
}

async fn concept_list(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let Some(known) = concepts(&app).await? else {
        return Ok(Json(super::concepts::ConceptList::empty()).into_response());
    };
    Ok(Json(known.list()).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    offset: Option<u64>,
    limit: Option<u64>,
}

async fn images(
    State(app): State<Arc<App>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query(q)?;
    let Some(db) = app.db.clone() else {
        return Ok(Json(serde_json::json!({ "total": 0, "images": [] })));
    };
    let (offset, limit) = (q.offset.unwrap_or(0), q.limit.unwrap_or(500).min(5000));
    let (total, list) = blocking(move || Ok(unit::list_images(&db, offset, limit)?)).await?;
    Ok(Json(serde_json::json!({ "total": total, "images": list })))
}

async fn image(
    State(app): State<Arc<App>>,
    p: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path(p)?;
    let Some(db) = app.db.clone() else {
        return Err(ApiError::not_found("no database: no images to serve"));
    };
    let bytes = blocking(move || {
        let f = unit::image_file(&db, id)?
            .ok_or_else(|| ApiError::not_found(format!("no indexed image {id}")))?;
        use crate::source::{open_indexed, Refused};
        let file = open_indexed(&f.root, &f.rel, f.size, f.mtime_ns).map_err(|e| {
            let status = match e {
                Refused::Changed(_) => StatusCode::CONFLICT,
                _ => StatusCode::NOT_FOUND,
            };
            ApiError(status, format!("indexed image {id}: {e}"))
        })?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::BufReader::new(file), &mut bytes).map_err(
            |e| ApiError::not_found(format!("indexed image {id} cannot be read any more: {e}")),
        )?;
        Ok(bytes)
    })
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, unit::mime(&bytes)),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        bytes,
    )
        .into_response())
}
