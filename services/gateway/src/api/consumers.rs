//! `/api/consumers`: the Consumer Service.

use axum::{Json, extract::State, http::StatusCode};
use ftgo_proto::consumer::v1 as consumer;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, ApiPath, path_id, respond, rpc, shapes::Id, shapes::PersonName};
use crate::{
    Backends,
    error::{ApiError, BackendErrors, BodyErrors, NotFound},
    resilience::Idempotency,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateConsumer {
    pub name: PersonName,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerCreated {
    pub consumer_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Consumer {
    pub consumer_id: String,
    pub name: PersonName,
}

/// Registers a consumer; an account is opened for them by event.
#[utoipa::path(post, path = "/api/consumers", tag = "consumers", request_body = CreateConsumer,
    responses((status = 201, body = ConsumerCreated), BodyErrors, BackendErrors))]
pub async fn create(
    State(backends): State<Backends>,
    ApiJson(body): ApiJson<CreateConsumer>,
) -> Result<(StatusCode, Json<ConsumerCreated>), ApiError> {
    body.name.check("name")?;
    let request = consumer::CreateConsumerRequest { name: Some(body.name.into()) };
    let created = respond(&backends.consumer, Idempotency::NotIdempotent, request, rpc!(create_consumer), |reply| {
        ConsumerCreated { consumer_id: reply.consumer_id }
    })
    .await?;
    Ok((StatusCode::CREATED, created))
}

#[utoipa::path(get, path = "/api/consumers/{consumerId}", tag = "consumers",
    params(("consumerId" = inline(Id), Path)),
    responses((status = 200, body = Consumer), NotFound, BackendErrors))]
pub async fn get(
    State(backends): State<Backends>,
    ApiPath(consumer_id): ApiPath<String>,
) -> Result<Json<Consumer>, ApiError> {
    let request = consumer::GetConsumerRequest { consumer_id: path_id("consumer", &consumer_id)? };
    respond(&backends.consumer, Idempotency::Idempotent, request, rpc!(get_consumer), |found| Consumer {
        consumer_id: found.consumer_id,
        name: found.name.unwrap_or_default().into(),
    })
    .await
}
