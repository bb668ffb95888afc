//! `/api/tickets`: the kitchen's side of an order, moved along by the restaurant.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use ftgo_proto::kitchen::v1::{self as kitchen, TicketState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    ApiJson, ApiPath, path_id, respond, rpc,
    shapes::Id,
    shapes::{enum_name, timestamp, to_timestamp},
};
use crate::{
    Backends,
    error::{ApiError, BackendErrors, BodyErrors, ErrorBody, NotFound},
    resilience::Idempotency,
};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketLineItem {
    pub menu_item_id: String,
    pub name: String,
    pub quantity: i32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub ticket_id: String,
    pub order_id: String,
    pub restaurant_id: String,
    #[schema(example = "ACCEPTED")]
    pub state: String,
    pub line_items: Vec<TicketLineItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_by: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcceptTicket {
    /// When the food will be ready (RFC 3339); must not be in the past (a 400 says so).
    pub ready_by: DateTime<Utc>,
}

fn ticket(t: kitchen::Ticket) -> Ticket {
    Ticket {
        state: enum_name(t.state, TicketState::as_str_name),
        line_items: t
            .line_items
            .into_iter()
            .map(|i| TicketLineItem { menu_item_id: i.menu_item_id, name: i.name, quantity: i.quantity })
            .collect(),
        ready_by: timestamp(t.ready_by),
        ticket_id: t.ticket_id,
        order_id: t.order_id,
        restaurant_id: t.restaurant_id,
    }
}

#[utoipa::path(get, path = "/api/tickets/{ticketId}", tag = "tickets",
    params(("ticketId" = inline(Id), Path)),
    responses((status = 200, body = Ticket), NotFound, BackendErrors))]
pub async fn get(
    State(backends): State<Backends>,
    ApiPath(ticket_id): ApiPath<String>,
) -> Result<Json<Ticket>, ApiError> {
    let request = kitchen::GetTicketRequest { ticket_id: path_id("ticket", &ticket_id)? };
    respond(&backends.kitchen, Idempotency::Idempotent, request, rpc!(get_ticket), ticket).await
}

#[utoipa::path(post, path = "/api/tickets/{ticketId}/accept", tag = "tickets",
    params(("ticketId" = inline(Id), Path)), request_body = AcceptTicket,
    responses((status = 200, body = Ticket),
        BodyErrors, NotFound,
        (status = 409, body = ErrorBody, description = "The ticket's state forbids accepting it"),
        BackendErrors))]
pub async fn accept(
    State(backends): State<Backends>,
    ApiPath(ticket_id): ApiPath<String>,
    ApiJson(body): ApiJson<AcceptTicket>,
) -> Result<Json<Ticket>, ApiError> {
    let request = kitchen::AcceptTicketRequest {
        ticket_id: path_id("ticket", &ticket_id)?,
        ready_by: Some(to_timestamp(body.ready_by)),
    };
    respond(&backends.kitchen, Idempotency::NotIdempotent, request, rpc!(accept_ticket), ticket).await
}

/// The three transitions without a body share one shape.
async fn transition<F, Fut>(backends: &Backends, ticket_id: &str, rpc: F) -> Result<Json<Ticket>, ApiError>
where
    F: Fn(
        kitchen::kitchen_service_client::KitchenServiceClient<tonic::transport::Channel>,
        tonic::Request<kitchen::TicketRequest>,
    ) -> Fut,
    Fut: Future<Output = Result<tonic::Response<kitchen::Ticket>, tonic::Status>>,
{
    let request = kitchen::TicketRequest { ticket_id: path_id("ticket", ticket_id)? };
    respond(&backends.kitchen, Idempotency::NotIdempotent, request, rpc, ticket).await
}

#[utoipa::path(post, path = "/api/tickets/{ticketId}/preparing", tag = "tickets",
    params(("ticketId" = inline(Id), Path)),
    responses((status = 200, body = Ticket), NotFound,
        (status = 409, body = ErrorBody, description = "The ticket's state forbids this step"), BackendErrors))]
pub async fn preparing(
    State(backends): State<Backends>,
    ApiPath(ticket_id): ApiPath<String>,
) -> Result<Json<Ticket>, ApiError> {
    transition(&backends, &ticket_id, rpc!(prepare_ticket)).await
}

#[utoipa::path(post, path = "/api/tickets/{ticketId}/ready", tag = "tickets",
    params(("ticketId" = inline(Id), Path)),
    responses((status = 200, body = Ticket), NotFound,
        (status = 409, body = ErrorBody, description = "The ticket's state forbids this step"), BackendErrors))]
pub async fn ready(
    State(backends): State<Backends>,
    ApiPath(ticket_id): ApiPath<String>,
) -> Result<Json<Ticket>, ApiError> {
    transition(&backends, &ticket_id, rpc!(mark_ticket_ready)).await
}

#[utoipa::path(post, path = "/api/tickets/{ticketId}/pickedup", tag = "tickets",
    params(("ticketId" = inline(Id), Path)),
    responses((status = 200, body = Ticket), NotFound,
        (status = 409, body = ErrorBody, description = "The ticket's state forbids this step"), BackendErrors))]
pub async fn picked_up(
    State(backends): State<Backends>,
    ApiPath(ticket_id): ApiPath<String>,
) -> Result<Json<Ticket>, ApiError> {
    transition(&backends, &ticket_id, rpc!(pick_up_ticket)).await
}
