//! `/api/orders`: the Order Service, and the composite view of an order with its ticket (Kitchen)
//! and payment (Accounting).

use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode};
use ftgo_proto::{
    accounting::v1::{self as accounting, AuthorizationState},
    kitchen::v1::{self as kitchen, TicketState},
    order::v1::{self as order, OrderState},
};
use serde::{Deserialize, Serialize};
use tonic::Code;
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiJson, ApiPath, ApiQuery, path_id, respond, rpc,
    shapes::Id,
    shapes::{Address, LineItemRequest, check_uuid, enum_name, money, timestamp, uuid_schema},
};
use crate::{
    Backends,
    error::{ApiError, BackendErrors, BodyErrors, ErrorBody, NotFound},
    resilience::Idempotency,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrder {
    #[schema(schema_with = uuid_schema)]
    pub consumer_id: String,
    #[schema(schema_with = uuid_schema)]
    pub restaurant_id: String,
    pub delivery_address: Address,
    /// From 1 to 50 lines.
    #[schema(min_items = 1, max_items = 50)]
    pub line_items: Vec<LineItemRequest>,
}

impl CreateOrder {
    fn check(&self) -> Result<(), ApiError> {
        check_uuid("consumerId", &self.consumer_id)?;
        check_uuid("restaurantId", &self.restaurant_id)?;
        self.delivery_address.check("deliveryAddress")
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReviseOrder {
    /// From 1 to 50 lines: the order's new lines, replacing the old ones.
    #[schema(min_items = 1, max_items = 50)]
    pub revised_line_items: Vec<LineItemRequest>,
}

/// The answer of a saga-starting call: the state at that moment. Poll the order for the outcome.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderAccepted {
    pub order_id: String,
    #[schema(example = "APPROVAL_PENDING")]
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "12.34")]
    pub order_total: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLineItem {
    pub menu_item_id: String,
    pub name: String,
    #[schema(example = "12.34")]
    pub price: String,
    pub quantity: i32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketSummary {
    pub ticket_id: String,
    #[schema(example = "AWAITING_ACCEPTANCE")]
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_by: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    /// `AUTHORIZED`, or `REVERSED` once the order was cancelled.
    #[schema(example = "AUTHORIZED")]
    pub state: String,
    #[schema(example = "12.34")]
    pub amount: String,
}

/// An order as the Order Service knows it, with its ticket and payment when their services answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    pub order_id: String,
    pub consumer_id: String,
    pub restaurant_id: String,
    #[schema(example = "APPROVED")]
    pub state: String,
    #[schema(example = "12.34")]
    pub order_total: String,
    pub line_items: Vec<OrderLineItem>,
    pub delivery_address: Address,
    /// When the order was placed (RFC 3339).
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Why the order was rejected, naming the step that refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection_reason: Option<String>,
    /// Left out when the order has no ticket or the Kitchen Service cannot answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<TicketSummary>,
    /// Left out when nothing was authorized or the Accounting Service cannot answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment: Option<Payment>,
}

fn state_name(state: i32) -> String {
    enum_name(state, OrderState::as_str_name)
}

/// The answer of a call that starts a saga on an order: the order's state at that moment.
fn accepted(o: order::Order) -> OrderAccepted {
    OrderAccepted { state: state_name(o.state), order_total: None, order_id: o.order_id }
}

/// The answer to placing an order: [`accepted`], with the total the order was priced at.
fn placed(mut o: order::Order) -> OrderAccepted {
    let order_total = Some(money(o.order_total.take()));
    OrderAccepted { order_total, ..accepted(o) }
}

#[utoipa::path(post, path = "/api/orders", tag = "orders", request_body = CreateOrder,
    responses((status = 201, body = OrderAccepted, description = "The Create Order saga has started"),
        BodyErrors, (status = 404, body = ErrorBody, description = "Unknown restaurant or menu item"),
        BackendErrors))]
pub async fn create(
    State(backends): State<Backends>,
    ApiJson(body): ApiJson<CreateOrder>,
) -> Result<(StatusCode, Json<OrderAccepted>), ApiError> {
    body.check()?;
    let request = order::CreateOrderRequest {
        consumer_id: body.consumer_id,
        restaurant_id: body.restaurant_id,
        delivery_address: Some(body.delivery_address.into()),
        line_items: body.line_items.into_iter().map(Into::into).collect(),
    };
    let created = respond(&backends.order, Idempotency::NotIdempotent, request, rpc!(create_order), placed).await?;
    Ok((StatusCode::CREATED, created))
}

/// `GET /api/orders/{orderId}`'s options: waiting for a state instead of polling
/// (`?wait=APPROVED,REJECTED&timeout=5s`), and how much of the order to show (`?view=summary`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetOrderQuery {
    /// Order states, comma-separated (`APPROVED,REJECTED`). The answer comes as soon as the order
    /// is in one of them, or when `timeout` has passed: then with the order as it is, in whatever
    /// state. Left out: the answer comes at once.
    #[param(
        example = "APPROVED,REJECTED",
        pattern = "^(APPROVAL_PENDING|APPROVED|REJECTED|CANCEL_PENDING|CANCELLED|REVISION_PENDING)(,(APPROVAL_PENDING|APPROVED|REJECTED|CANCEL_PENDING|CANCELLED|REVISION_PENDING))*$"
    )]
    pub wait: Option<String>,
    /// How long to wait, as `500ms` or `5s` (up to three decimals), from 1 ms to 30 s. 10 s when
    /// `wait` is given without it; only allowed with `wait`.
    #[param(
        example = "5s",
        pattern = "^(0*([1-9][0-9]{0,3}|[12][0-9]{4}|30000)ms|0*([1-9]|[12][0-9])(\\.[0-9]{1,3})?s|0*30(\\.0{1,3})?s|0+\\.(00[1-9]|0[1-9][0-9]?|[1-9][0-9]{0,2})s)$"
    )]
    pub timeout: Option<String>,
    /// `full` (the default): the order with its ticket and payment. `summary`: the order alone,
    /// without asking the Kitchen and Accounting services; for a client that only needs the
    /// outcome (`state`, `rejectionReason`).
    #[param(inline, example = "summary")]
    pub view: Option<OrderViewKind>,
}

/// How much of an order `GET /api/orders/{orderId}` shows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderViewKind {
    /// The order with its ticket (Kitchen) and payment (Accounting).
    #[default]
    Full,
    /// The order alone.
    Summary,
}

/// How long a wait lasts when the client does not say.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// The longest wait (the Order Service's limit, in the contract).
pub use order::MAX_WAIT;

impl GetOrderQuery {
    /// The states to wait for (as the Order Service numbers them) and for how long, or `None`
    /// when the client does not wait.
    fn parse(&self) -> Result<Option<(Vec<i32>, Duration)>, ApiError> {
        let Some(wait) = &self.wait else {
            if self.timeout.is_some() {
                return Err(ApiError::invalid("timeout is only allowed with wait"));
            }
            return Ok(None);
        };
        let states = wait
            .split(',')
            .map(|name| match OrderState::from_str_name(name) {
                Some(state) if state != OrderState::Unspecified => Ok(state as i32),
                _ => Err(ApiError::invalid(format!(
                    "wait: {name:?} is not an order state (APPROVAL_PENDING, APPROVED, REJECTED, CANCEL_PENDING, CANCELLED, REVISION_PENDING)"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let timeout = match &self.timeout {
            None => DEFAULT_WAIT,
            Some(text) => parse_timeout(text).filter(|t| !t.is_zero() && *t <= MAX_WAIT).ok_or_else(|| {
                ApiError::invalid(format!("timeout: {text:?} is not a duration from 1ms to 30s, such as 500ms or 5s"))
            })?,
        };
        Ok(Some((states, timeout)))
    }
}

/// `500ms`, `5s`, `2.5s`: whole milliseconds, or seconds with up to three decimals (the
/// document's `timeout` pattern, with the range checked by the caller).
fn parse_timeout(text: &str) -> Option<Duration> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(ms) = text.strip_suffix("ms") {
        return digits(ms).then(|| ms.parse().ok()).flatten().map(Duration::from_millis);
    }
    let seconds = text.strip_suffix('s')?;
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, "0"));
    if !digits(whole) || !digits(fraction) || fraction.len() > 3 {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let millis: u64 = format!("{fraction:0<3}").parse().ok()?;
    Some(Duration::from_secs(whole.min(3600)) + Duration::from_millis(millis))
}

#[utoipa::path(get, path = "/api/orders/{orderId}", tag = "orders",
    params(("orderId" = inline(Id), Path), GetOrderQuery),
    responses((status = 200, body = OrderView, description = "The order; with `wait`, once it is in one of \
        those states or when the timeout has passed"),
        (status = 400, body = ErrorBody, description = "A bad `wait`, `timeout` or `view`, an unknown \
        parameter, or `timeout` without `wait`"),
        NotFound, BackendErrors))]
pub async fn get(
    State(backends): State<Backends>,
    ApiPath(order_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<GetOrderQuery>,
) -> Result<Json<OrderView>, ApiError> {
    let order_id = path_id("order", &order_id)?;
    let (wait_for, wait) = query.parse()?.unwrap_or_default();
    let request = order::GetOrderRequest {
        order_id: order_id.clone(),
        wait_timeout_ms: if wait_for.is_empty() { 0 } else { wait.as_millis() as u32 },
        wait_for,
    };
    let found = backends.order.call_waiting(Idempotency::Idempotent, wait, request, rpc!(get_order)).await?;

    let (ticket, payment) = match query.view.unwrap_or_default() {
        OrderViewKind::Full => ticket_and_payment(&backends, &order_id).await,
        OrderViewKind::Summary => (None, None),
    };

    Ok(Json(OrderView {
        state: state_name(found.state),
        order_total: money(found.order_total),
        line_items: found
            .line_items
            .into_iter()
            .map(|i| OrderLineItem {
                menu_item_id: i.menu_item_id,
                name: i.name,
                price: money(i.price),
                quantity: i.quantity,
            })
            .collect(),
        delivery_address: found.delivery_address.unwrap_or_default().into(),
        created_at: timestamp(found.created_at),
        rejection_reason: Some(found.rejection_reason).filter(|r| !r.is_empty()),
        order_id: found.order_id,
        consumer_id: found.consumer_id,
        restaurant_id: found.restaurant_id,
        ticket,
        payment,
    }))
}

/// The ticket and the payment of an order, asked for together. Each is optional: a Kitchen or
/// Accounting outage (or an open circuit) leaves its part out instead of failing the order.
async fn ticket_and_payment(backends: &Backends, order_id: &str) -> (Option<TicketSummary>, Option<Payment>) {
    let (ticket, payment) = tokio::join!(
        backends.kitchen.call(
            Idempotency::Idempotent,
            kitchen::GetTicketByOrderRequest { order_id: order_id.to_owned() },
            rpc!(get_ticket_by_order)
        ),
        backends.accounting.call(
            Idempotency::Idempotent,
            accounting::GetAuthorizationRequest { order_id: order_id.to_owned() },
            rpc!(get_authorization)
        ),
    );
    let ticket = optional_part("ticket", ticket).map(|t| TicketSummary {
        state: enum_name(t.state, TicketState::as_str_name),
        ready_by: timestamp(t.ready_by),
        ticket_id: t.ticket_id,
    });
    let payment = optional_part("payment", payment)
        .map(|a| Payment { state: enum_name(a.state, AuthorizationState::as_str_name), amount: money(a.amount) });
    (ticket, payment)
}

fn optional_part<T>(part: &str, answer: Result<T, tonic::Status>) -> Option<T> {
    match answer {
        Ok(value) => Some(value),
        Err(status) if status.code() == Code::NotFound => None,
        Err(status) => {
            tracing::info!(part, %status, "left out of the order view");
            None
        }
    }
}

#[utoipa::path(post, path = "/api/orders/{orderId}/cancel", tag = "orders",
    params(("orderId" = inline(Id), Path)),
    responses((status = 202, body = OrderAccepted, description = "The Cancel Order saga has started"),
        NotFound, (status = 409, body = ErrorBody, description = "The order's state forbids cancelling"),
        BackendErrors))]
pub async fn cancel(
    State(backends): State<Backends>,
    ApiPath(order_id): ApiPath<String>,
) -> Result<(StatusCode, Json<OrderAccepted>), ApiError> {
    let request = order::CancelOrderRequest { order_id: path_id("order", &order_id)? };
    let changed = respond(&backends.order, Idempotency::NotIdempotent, request, rpc!(cancel_order), accepted).await?;
    Ok((StatusCode::ACCEPTED, changed))
}

#[utoipa::path(post, path = "/api/orders/{orderId}/revise", tag = "orders",
    params(("orderId" = inline(Id), Path)), request_body = ReviseOrder,
    responses((status = 202, body = OrderAccepted, description = "The Revise Order saga has started"),
        BodyErrors, (status = 404, body = ErrorBody, description = "Unknown order or menu item"),
        (status = 409, body = ErrorBody, description = "The order's state forbids revising"), BackendErrors))]
pub async fn revise(
    State(backends): State<Backends>,
    ApiPath(order_id): ApiPath<String>,
    ApiJson(body): ApiJson<ReviseOrder>,
) -> Result<(StatusCode, Json<OrderAccepted>), ApiError> {
    let request = order::ReviseOrderRequest {
        order_id: path_id("order", &order_id)?,
        revised_line_items: body.revised_line_items.into_iter().map(Into::into).collect(),
    };
    let changed = respond(&backends.order, Idempotency::NotIdempotent, request, rpc!(revise_order), accepted).await?;
    Ok((StatusCode::ACCEPTED, changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(wait: Option<&str>, timeout: Option<&str>) -> GetOrderQuery {
        GetOrderQuery { wait: wait.map(Into::into), timeout: timeout.map(Into::into), view: None }
    }

    #[test]
    fn a_wait_names_order_states_and_a_bounded_timeout() {
        assert!(query(None, None).parse().unwrap().is_none());
        let (states, timeout) = query(Some("APPROVED,REJECTED"), Some("2.5s")).parse().unwrap().unwrap();
        assert_eq!(states, vec![OrderState::Approved as i32, OrderState::Rejected as i32]);
        assert_eq!(timeout, Duration::from_millis(2500));
        assert_eq!(query(Some("APPROVED"), None).parse().unwrap().unwrap().1, DEFAULT_WAIT);
        assert_eq!(query(Some("APPROVED"), Some("750ms")).parse().unwrap().unwrap().1, Duration::from_millis(750));
        assert_eq!(query(Some("APPROVED"), Some("30s")).parse().unwrap().unwrap().1, MAX_WAIT);
        assert_eq!(query(Some("APPROVED"), Some("0.001s")).parse().unwrap().unwrap().1, Duration::from_millis(1));
        assert_eq!(query(Some("APPROVED"), Some("030.000s")).parse().unwrap().unwrap().1, MAX_WAIT);
        for (wait, timeout) in [
            (Some("approved"), None),
            (Some(""), None),
            (Some("APPROVED,"), None),
            (Some("ORDER_STATE_UNSPECIFIED"), None),
            (Some("APPROVED"), Some("0s")),
            (Some("APPROVED"), Some("31s")),
            (Some("APPROVED"), Some("5")),
            (Some("APPROVED"), Some("-1s")),
            (Some("APPROVED"), Some("1e3s")),
            (Some("APPROVED"), Some("NaNs")),
            (Some("APPROVED"), Some("1.5ms")),
            (Some("APPROVED"), Some("1.s")),
            (Some("APPROVED"), Some(".5s")),
            (Some("APPROVED"), Some("1.2345s")),
            (Some("APPROVED"), Some("30.001s")),
            (Some("APPROVED"), Some("0.0001s")),
            (Some("APPROVED, REJECTED"), None),
            (None, Some("5s")),
        ] {
            assert!(query(wait, timeout).parse().is_err(), "{wait:?} {timeout:?}");
        }
    }
}
