//! `/api/sagas`: the Orchestration Service's saga instances, for inspection.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use ftgo_proto::{
    orchestrator::v1::{self as orchestrator, SagaState},
    order::v1 as order,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    ApiPath, path_id, respond, rpc,
    shapes::Id,
    shapes::{enum_name, timestamp},
};
use crate::{
    Backends,
    error::{ApiError, BackendErrors, NotFound},
    resilience::Idempotency,
};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SagaStep {
    pub name: String,
    /// `done`, `refused`, `compensated`, `compensation refused`, `resent` or `timed out`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// Why, for a step that was refused, resent or timed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Saga {
    pub saga_id: String,
    #[schema(example = "CreateOrderSaga")]
    pub saga_type: String,
    pub order_id: String,
    /// `RUNNING`, `COMPENSATING`, `SUCCEEDED`, `COMPENSATED` or `FAILED` (a step went unanswered
    /// through every attempt and could not be undone: the saga waits for an operator).
    pub state: String,
    /// The step waiting for a reply, while the saga runs (or the one it gave up on, if it failed).
    pub current_step: String,
    pub compensating: bool,
    /// The steps done so far, in order, compensations included.
    pub steps: Vec<SagaStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderSagas {
    pub order_id: String,
    /// Oldest first.
    pub sagas: Vec<Saga>,
}

fn saga(s: orchestrator::Saga) -> Saga {
    Saga {
        state: enum_name(s.state, SagaState::as_str_name),
        steps: s
            .steps
            .into_iter()
            .map(|step| SagaStep {
                name: step.name,
                status: step.status,
                at: timestamp(step.at),
                detail: Some(step.detail).filter(|d| !d.is_empty()),
            })
            .collect(),
        failure_reason: Some(s.failure_reason).filter(|r| !r.is_empty()),
        created_at: timestamp(s.created_at),
        updated_at: timestamp(s.updated_at),
        saga_id: s.saga_id,
        saga_type: s.saga_type,
        order_id: s.order_id,
        current_step: s.current_step,
        compensating: s.compensating,
    }
}

#[utoipa::path(get, path = "/api/sagas/{sagaId}", tag = "sagas", params(("sagaId" = inline(Id), Path)),
    responses((status = 200, body = Saga), NotFound, BackendErrors))]
pub async fn get(State(backends): State<Backends>, ApiPath(saga_id): ApiPath<String>) -> Result<Json<Saga>, ApiError> {
    let request = orchestrator::GetSagaRequest { saga_id: path_id("saga", &saga_id)? };
    respond(&backends.orchestrator, Idempotency::Idempotent, request, rpc!(get_saga), saga).await
}

#[utoipa::path(get, path = "/api/orders/{orderId}/sagas", tag = "sagas",
    params(("orderId" = inline(Id), Path)),
    responses((status = 200, body = OrderSagas), NotFound, BackendErrors))]
pub async fn for_order(
    State(backends): State<Backends>,
    ApiPath(order_id): ApiPath<String>,
) -> Result<Json<OrderSagas>, ApiError> {
    let order_id = path_id("order", &order_id)?;
    // Sagas start a moment after their order, so "no sagas" does not prove the order unknown.
    let request = order::GetOrderRequest { order_id: order_id.clone(), ..Default::default() };
    backends.order.call(Idempotency::Idempotent, request, rpc!(get_order)).await?;
    let request = orchestrator::ListOrderSagasRequest { order_id: order_id.clone() };
    respond(&backends.orchestrator, Idempotency::Idempotent, request, rpc!(list_order_sagas), |found| OrderSagas {
        order_id,
        sagas: found.sagas.into_iter().map(saga).collect(),
    })
    .await
}
