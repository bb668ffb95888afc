//! `/api/admin/{service}/dead-letters`: each service's dead letters, and replaying one. The
//! gateway calls the service's `ftgo.admin.v1.DeadLetterService` on the service's own backend
//! (through Fabio, picked by the `dsthost` metadata key), under the service's circuit breaker.

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use ftgo_catalog::ServiceName;
use ftgo_platform::admin::MAX_LIST;
use ftgo_proto::admin::v1 as admin;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiPath, ApiQuery, respond, rpc, shapes::timestamp};
use crate::{
    Backends,
    backends::{AdminClient, Backend},
    error::{ApiError, BackendErrors, ErrorBody, NotFound},
    resilience::Idempotency,
};

/// The `service` of an admin path: one of the catalog's back-end services, by name.
pub struct ServiceParam;

impl utoipa::PartialSchema for ServiceParam {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .enum_values(Some(ServiceName::back_end().map(ServiceName::as_str)))
            .into()
    }
}

impl ToSchema for ServiceParam {}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: i64,
    /// The consumer that gave up on the message.
    #[schema(example = "kitchen-service-commands")]
    pub consumer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "ftgo.kitchen.v1.CreateTicket")]
    pub message_type: Option<String>,
    /// The saga the message belongs to, for a saga command or reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saga_id: Option<String>,
    /// Why it was given up on.
    pub error: String,
    pub deliveries: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<DateTime<Utc>>,
    /// When it was replayed successfully; absent while it waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetters {
    #[schema(example = "kitchen")]
    pub service: String,
    /// Newest first.
    pub dead_letters: Vec<DeadLetter>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many, from 1 to 1000 (100 when left out).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `true`: only the dead letters not replayed yet.
    pub waiting: Option<bool>,
}

fn non_empty(value: String) -> Option<String> {
    Some(value).filter(|v| !v.is_empty())
}

fn dead_letter(d: admin::DeadLetter) -> DeadLetter {
    DeadLetter {
        id: d.id,
        consumer: d.consumer,
        message_id: non_empty(d.message_id),
        subject: d.subject,
        message_type: non_empty(d.message_type),
        saga_id: non_empty(d.saga_id),
        error: d.error,
        deliveries: d.deliveries,
        failed_at: timestamp(d.failed_at),
        replayed_at: timestamp(d.replayed_at),
    }
}

/// The admin API of the service named `name` in the path (`kitchen`, ...).
fn service<'a>(backends: &'a Backends, name: &str) -> Result<(ServiceName, &'a Backend<AdminClient>), ApiError> {
    ServiceName::parse(name).and_then(|s| Some((s, backends.admin(s)?))).ok_or_else(|| {
        let known: Vec<&str> = ServiceName::back_end().map(ServiceName::as_str).collect();
        ApiError::not_found(format!("no service {name:?} has dead letters; the services are {}", known.join(", ")))
    })
}

#[utoipa::path(get, path = "/api/admin/{service}/dead-letters", tag = "admin",
    params(("service" = inline(ServiceParam), Path, description = "The service whose dead letters to list"), ListQuery),
    responses((status = 200, body = DeadLetters),
        (status = 400, body = ErrorBody, description = "A bad or unknown query parameter"),
        (status = 404, body = ErrorBody, description = "No such service"), BackendErrors))]
pub async fn list(
    State(backends): State<Backends>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<DeadLetters>, ApiError> {
    let (service, backend) = service(&backends, &name)?;
    let limit = match query.limit {
        None => 0,
        Some(n @ 1..=MAX_LIST) => n,
        Some(n) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("limit {n} is not from 1 to {MAX_LIST}"),
            ));
        }
    };
    let request = admin::ListDeadLettersRequest { limit, waiting_only: query.waiting.unwrap_or(false) };
    let found = backend.call(Idempotency::Idempotent, request, rpc!(list_dead_letters)).await?;
    if found.service != service.binary() {
        // A load balancer sent the call elsewhere: one service's letters are never shown as another's.
        tracing::error!(asked = service.binary(), answered = %found.service, "an admin call reached the wrong service");
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "backend_error",
            format!("asked {} for its dead letters, and {:?} answered", service.binary(), found.service),
        ));
    }
    Ok(Json(DeadLetters {
        service: service.as_str().to_owned(),
        dead_letters: found.dead_letters.into_iter().map(dead_letter).collect(),
    }))
}

#[utoipa::path(post, path = "/api/admin/{service}/dead-letters/{id}/replay", tag = "admin",
    params(("service" = inline(ServiceParam), Path, description = "The service the dead letter belongs to"),
        ("id" = i64, Path, description = "the dead letter's id")),
    responses((status = 200, body = DeadLetter, description = "replayed: the handler applied it"),
        NotFound,
        (status = 409, body = ErrorBody, description = "the handler failed again (the dead letter stays), or it was replayed already"),
        BackendErrors))]
pub async fn replay(
    State(backends): State<Backends>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> Result<Json<DeadLetter>, ApiError> {
    let (_, backend) = service(&backends, &name)?;
    let id: i64 = id.parse().map_err(|_| ApiError::not_found(format!("dead letter {id:?} does not exist")))?;
    let request = admin::ReplayDeadLetterRequest { id };
    respond(backend, Idempotency::NotIdempotent, request, rpc!(replay_dead_letter), dead_letter).await
}
