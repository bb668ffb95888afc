//! The HTTP API of `docs/api.md`: routes, and the JSON shapes of each resource.
//!
//! The mapping to gRPC is written by hand rather than generated from `google.api.http`
//! annotations: the public contract writes money as `"12.34"` strings, answers errors as
//! `{"error": {...}}` and composes an order from three services, none of which a transcoder of
//! canonical proto3 JSON would produce.

pub mod accounts;
pub mod admin;
pub mod consumers;
pub mod orders;
pub mod restaurants;
pub mod sagas;
pub mod shapes;
pub mod tickets;

use axum::{
    Json, Router,
    extract::{
        DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State,
        rejection::{PathRejection, QueryRejection},
    },
    http::{StatusCode, Uri},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use std::sync::{Arc, OnceLock};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use ftgo_platform::telemetry;
use opentelemetry::{KeyValue, metrics::Histogram};
use serde::Serialize;
use tracing::Instrument;
use utoipa::ToSchema;

use crate::{Backends, backends::Backend, error::ApiError, openapi, resilience::Idempotency};

/// A JSON body whose rejections (malformed, wrong types, too large) answer in the API's error
/// format.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// A path segment, with the same error format.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// A query string, with the same error format.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(rejection.status(), "invalid_path", rejection.body_text())
    }
}

/// An identifier from the path. Identifiers are opaque to clients; one that cannot name anything
/// (not a UUID) is answered like any unknown id, with 404, without bothering a service.
pub fn path_id(kind: &str, raw: &str) -> Result<String, ApiError> {
    raw.parse::<uuid::Uuid>()
        .map(|id| id.to_string())
        .map_err(|_| ApiError::not_found(format!("{kind} {raw:?} does not exist")))
}

/// A client method as [`Backend::call`] takes it: `rpc!(get_order)` is
/// `|mut c, r| async move { c.get_order(r).await }`.
macro_rules! rpc {
    ($method:ident) => {
        |mut c, r| async move { c.$method(r).await }
    };
}
pub(crate) use rpc;

/// What most handlers do: send `request` to `backend` through its resilience policy (retried only
/// when `idempotency` allows it), answer a gRPC error in the API's error format, and show the reply
/// as JSON through `view`.
pub async fn respond<C, M, T, V, F, Fut>(
    backend: &Backend<C>,
    idempotency: Idempotency,
    request: M,
    rpc: F,
    view: impl FnOnce(T) -> V,
) -> Result<Json<V>, ApiError>
where
    C: Clone,
    M: Clone,
    F: Fn(C, tonic::Request<M>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let reply = backend.call(idempotency, request, rpc).await?;
    Ok(Json(view(reply)))
}

/// Every path of the public API, each with its OpenAPI description: the one list both the router
/// and the OpenAPI document are made from (each handler's `#[utoipa::path]` names its method and
/// path), so a route cannot exist undocumented or be documented without existing.
pub fn routes() -> OpenApiRouter<Backends> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(consumers::create))
        .routes(routes!(consumers::get))
        .routes(routes!(accounts::get, accounts::update))
        .routes(routes!(restaurants::create))
        .routes(routes!(restaurants::get))
        .routes(routes!(orders::create))
        .routes(routes!(orders::get))
        .routes(routes!(orders::cancel))
        .routes(routes!(orders::revise))
        .routes(routes!(sagas::for_order))
        .routes(routes!(sagas::get))
        .routes(routes!(tickets::get))
        .routes(routes!(tickets::accept))
        .routes(routes!(tickets::preparing))
        .routes(routes!(tickets::ready))
        .routes(routes!(tickets::picked_up))
        .routes(routes!(admin::list))
        .routes(routes!(admin::replay))
}

/// The public API's router: [`routes`], the OpenAPI document at `/api/openapi.json`, and JSON
/// errors for unknown paths and methods.
pub fn router(backends: Backends, max_body_bytes: usize) -> Router {
    let (routes, mut document) = routes().split_for_parts();
    crate::idempotency::document(&mut document);
    let document = Arc::new(document);
    routes
        .route("/api/openapi.json", get(move || async move { Json(document.as_ref().clone()) }))
        .fallback(unknown_path)
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not allowed on this path",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn(crate::idempotency::carry))
        .layer(middleware::from_fn_with_state(max_body_bytes, limit_body))
        .layer(middleware::from_fn(trace_request))
        .with_state(backends)
}

/// How much of an oversized body the gateway reads (and throws away) before it answers 413: at
/// least 8 MiB, and four times the limit. A client still sending when the answer comes would see
/// its connection cut (a broken pipe, not the 413); one that sends more than this may.
pub fn drain_bytes(max_body_bytes: usize) -> usize {
    (8 << 20).max(max_body_bytes.saturating_mul(4))
}

/// The longest the gateway spends reading an oversized body it will refuse anyway.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the request's body before any handler: one over `max_body_bytes` (declared in
/// `content-length` or found while reading) is answered 413 in the API's error format, after the
/// rest of it has been read up to [`drain_bytes`], so the client gets to read the answer.
async fn limit_body(State(max_body_bytes): State<usize>, request: Request, next: Next) -> Response {
    use futures::StreamExt;

    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    let mut read: usize = 0;
    let mut kept = Vec::new();
    let mut too_large = declared.is_some_and(|n| n > max_body_bytes as u64);
    if declared.is_some_and(|n| n > drain_bytes(max_body_bytes) as u64) {
        // More than the gateway would read anyway: answering at once is the best it can do.
        return payload_too_large(max_body_bytes);
    }
    let drain = async {
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                return Err(());
            };
            read = read.saturating_add(chunk.len());
            if read > max_body_bytes {
                too_large = true;
                kept = Vec::new();
            }
            if too_large {
                if read >= drain_bytes(max_body_bytes) {
                    break;
                }
            } else {
                kept.extend_from_slice(&chunk);
            }
        }
        Ok(())
    };
    let outcome = tokio::time::timeout(DRAIN_TIME, drain).await;
    if too_large {
        return payload_too_large(max_body_bytes);
    }
    match outcome {
        Ok(Ok(())) => next.run(Request::from_parts(parts, axum::body::Body::from(kept))).await,
        _ => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "the request body could not be read").into_response()
        }
    }
}

fn payload_too_large(max_body_bytes: usize) -> Response {
    let message = format!("the request body is larger than {max_body_bytes} bytes");
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message).into_response()
}

/// A span per request, named by its route (`POST /api/orders/{order_id}/cancel`), continuing the
/// client's trace when it sent a `traceparent`.
async fn trace_request(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unknown route", MatchedPath::as_str).to_owned();
    let span = tracing::info_span!(
        "http request",
        otel.name = %format!("{} {route}", request.method()),
        otel.kind = "server",
        http.status_code = tracing::field::Empty,
    );
    telemetry::set_parent_from(&span, &telemetry::HttpHeaders(request.headers()));
    let method = request.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.status_code", response.status().as_u16());
    let labels = [
        KeyValue::new("http.request.method", method),
        KeyValue::new("http.route", route),
        KeyValue::new("http.response.status_code", i64::from(response.status().as_u16())),
    ];
    request_duration().record(started.elapsed().as_secs_f64(), &labels);
    response
}

/// Requests by method, route and status, with their durations.
fn request_duration() -> &'static Histogram<f64> {
    static HISTOGRAM: OnceLock<Histogram<f64>> = OnceLock::new();
    HISTOGRAM.get_or_init(|| {
        telemetry::meter()
            .f64_histogram("http.server.request.duration")
            .with_unit("s")
            .with_description("Duration of HTTP requests the gateway served")
            .build()
    })
}

async fn unknown_path(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such path: {}", uri.path()))
}

/// `GET /healthz`: the gateway is up; the state of each backend's circuit, for a person to read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Always `ok` when the gateway answers.
    pub status: &'static str,
    /// Circuit breaker state per backend: `closed`, `open` or `halfOpen`.
    pub circuits: std::collections::BTreeMap<&'static str, &'static str>,
}

#[utoipa::path(get, path = "/healthz", tag = "gateway", responses((status = 200, body = Health)))]
pub async fn healthz(State(backends): State<Backends>) -> Json<Health> {
    use crate::resilience::BreakerState;
    let name = |state| match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "halfOpen",
    };
    let circuits = backends.circuits().into_iter().map(|(backend, state)| (backend, name(state))).collect();
    Json(Health { status: "ok", circuits })
}
