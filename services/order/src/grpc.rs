//! The OrderService gRPC API. Creating, cancelling and revising an order each change its state and
//! publish the event that starts the matching saga, in one transaction.

use std::{sync::Arc, time::Duration};

use ftgo_platform::{
    grpc::{self, database_error},
    idempotency::{self, Key},
    ids::{OrderId, RestaurantId},
    messaging::{
        OutgoingMessage,
        outbox::{self, Publisher},
        streams::event_subject,
    },
};
use ftgo_proto::{common::v1 as common, order::v1 as api};
use prost::Name;
use sqlx::{PgConnection, PgPool};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::{
    domain::order::{Address, Menu, Order, OrderError, OrderLineItem, OrderState, Pricing},
    store,
    watch::{self, OrderWatch},
};

pub struct OrderApi {
    db: PgPool,
    watch: Arc<OrderWatch>,
    /// The relay's fast path: the event that starts a saga is published the moment it commits.
    publisher: Publisher,
}

impl OrderApi {
    pub fn new(db: PgPool, watch: Arc<OrderWatch>, publisher: Publisher) -> Self {
        Self { db, watch, publisher }
    }

    async fn find(&self, id: OrderId) -> Result<Order, Status> {
        grpc::fetch(&self.db, async |conn| store::find_order(conn, id).await, || format!("order {id} does not exist"))
            .await
    }

    /// The order once it is in one of `states`, or as it is when `timeout` has passed (or when the
    /// service begins to stop).
    async fn wait_for(&self, id: OrderId, states: &[OrderState], timeout: Duration) -> Result<Order, Status> {
        let deadline = Instant::now() + timeout;
        let subscription = self.watch.subscribe(id);
        loop {
            // Enabled before the read: a change that commits after the read still wakes us.
            let changed = subscription.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let order = self.find(id).await?;
            let now = Instant::now();
            if states.contains(&order.state) || now >= deadline || subscription.stopping().is_cancelled() {
                return Ok(order);
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep((deadline - now).min(watch::RECHECK)) => {}
                _ = subscription.stopping().cancelled() => {}
            }
        }
    }
}

/// The states and the timeout of a `GetOrder` that waits.
fn wait_request(request: &api::GetOrderRequest) -> Result<Option<(Vec<OrderState>, Duration)>, Status> {
    if request.wait_for.is_empty() {
        if request.wait_timeout_ms != 0 {
            return Err(Status::invalid_argument("wait_timeout_ms needs wait_for"));
        }
        return Ok(None);
    }
    let states = request
        .wait_for
        .iter()
        .map(|&raw| match api::OrderState::try_from(raw) {
            Ok(state) if state != api::OrderState::Unspecified => Ok(state_from_proto(state)),
            _ => Err(Status::invalid_argument(format!("wait_for holds {raw}, which is no order state"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let timeout = Duration::from_millis(u64::from(request.wait_timeout_ms));
    if timeout.is_zero() || timeout > watch::MAX_WAIT {
        return Err(Status::invalid_argument(format!(
            "wait_timeout_ms must be from 1 to {}, not {}",
            watch::MAX_WAIT.as_millis(),
            request.wait_timeout_ms
        )));
    }
    Ok(Some((states, timeout)))
}

fn state_from_proto(state: api::OrderState) -> OrderState {
    match state {
        api::OrderState::Unspecified | api::OrderState::ApprovalPending => OrderState::ApprovalPending,
        api::OrderState::Approved => OrderState::Approved,
        api::OrderState::Rejected => OrderState::Rejected,
        api::OrderState::CancelPending => OrderState::CancelPending,
        api::OrderState::Cancelled => OrderState::Cancelled,
        api::OrderState::RevisionPending => OrderState::RevisionPending,
    }
}

impl From<OrderError> for Status {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::Invalid { .. } => Status::invalid_argument(e.to_string()),
            OrderError::UnknownMenuItem { .. } => grpc::not_found(e.to_string()),
            OrderError::IllegalTransition { .. } => Status::failed_precondition(e.to_string()),
        }
    }
}

pub fn state_to_proto(state: OrderState) -> api::OrderState {
    match state {
        OrderState::ApprovalPending => api::OrderState::ApprovalPending,
        OrderState::Approved => api::OrderState::Approved,
        OrderState::Rejected => api::OrderState::Rejected,
        OrderState::CancelPending => api::OrderState::CancelPending,
        OrderState::Cancelled => api::OrderState::Cancelled,
        OrderState::RevisionPending => api::OrderState::RevisionPending,
    }
}

pub fn line_items_to_proto(items: &[OrderLineItem]) -> Vec<api::OrderLineItem> {
    items
        .iter()
        .map(|i| api::OrderLineItem {
            menu_item_id: i.menu_item_id.clone(),
            name: i.name.clone(),
            price: Some(i.price.into()),
            quantity: i.quantity as i32,
        })
        .collect()
}

pub fn to_proto(order: &Order) -> api::Order {
    api::Order {
        order_id: order.id.to_string(),
        consumer_id: order.consumer_id.to_string(),
        restaurant_id: order.restaurant_id.to_string(),
        state: state_to_proto(order.state).into(),
        line_items: line_items_to_proto(&order.pricing.line_items),
        order_total: Some(order.pricing.total.into()),
        delivery_address: Some((&order.delivery_address).into()),
        rejection_reason: order.rejection_reason.clone().unwrap_or_default(),
        created_at: Some(std::time::SystemTime::from(order.created_at).into()),
    }
}

fn requested(items: Vec<common::LineItemRequest>) -> Vec<(String, i32)> {
    items.into_iter().map(|i| (i.menu_item_id, i.quantity)).collect()
}

async fn menu(conn: &mut PgConnection, restaurant_id: RestaurantId) -> Result<Menu, Status> {
    store::find_menu(conn, restaurant_id)
        .await
        .map_err(database_error)?
        .ok_or_else(|| grpc::not_found(format!("restaurant {restaurant_id} does not exist")))
}

async fn publish<M: prost::Message + Name>(tx: &mut PgConnection, event: &M) -> Result<(), Status> {
    let message = OutgoingMessage::protobuf(event_subject("order", M::NAME), event);
    outbox::enqueue(tx, &message).await.map_err(database_error)
}

impl OrderApi {
    /// Locks the order, applies `change` (which returns the saga-starting event), saves both, once
    /// per idempotency `key`.
    async fn change<M: prost::Message + Name>(
        &self,
        order_id: &str,
        key: Option<Key>,
        change: impl AsyncFnOnce(&mut PgConnection, &mut Order) -> Result<M, Status>,
    ) -> Result<Response<api::Order>, Status> {
        let id = order_id.parse::<OrderId>()?;
        let order = outbox::scope(&self.publisher, async {
            let mut tx = self.db.begin().await.map_err(database_error)?;
            let order = idempotency::once(&mut tx, key.as_ref(), async |tx| {
                let mut order = store::lock_order(tx, id)
                    .await
                    .map_err(database_error)?
                    .ok_or_else(|| grpc::not_found(format!("order {id} does not exist")))?;
                let event = change(tx, &mut order).await?;
                store::save_order(tx, &order).await.map_err(database_error)?;
                publish(tx, &event).await?;
                tracing::info!(order_id = %id, state = order.state.as_str(), "order changed");
                Ok(to_proto(&order))
            })
            .await?;
            outbox::commit(tx).await.map_err(database_error)?;
            Ok::<_, Status>(order)
        })
        .await?;
        self.watch.announce(id).await;
        Ok(Response::new(order))
    }
}

#[tonic::async_trait]
impl api::order_service_server::OrderService for OrderApi {
    async fn create_order(&self, request: Request<api::CreateOrderRequest>) -> Result<Response<api::Order>, Status> {
        let key = Key::of(&request, "CreateOrder")?;
        let request = request.into_inner();
        let restaurant_id: RestaurantId = request
            .restaurant_id
            .parse()
            .map_err(|_| Status::invalid_argument(format!("restaurantId {:?} is not a UUID", request.restaurant_id)))?;
        let address = Address::from_proto("deliveryAddress", request.delivery_address)?;
        // OrderCreated, which starts the saga, is published the moment the order commits.
        let order = outbox::scope(&self.publisher, async {
            let mut tx = self.db.begin().await.map_err(database_error)?;
            let order = idempotency::once(&mut tx, key.as_ref(), async |tx| {
                let menu = menu(tx, restaurant_id).await?;
                let order = Order::create(&request.consumer_id, &menu, address, &requested(request.line_items))?;
                store::insert_order(tx, &order).await.map_err(database_error)?;
                publish(tx, &api::OrderCreated { order: Some(to_proto(&order)) }).await?;
                tracing::info!(order_id = %order.id, total = %order.pricing.total, "order created");
                Ok(to_proto(&order))
            })
            .await?;
            outbox::commit(tx).await.map_err(database_error)?;
            Ok::<_, Status>(order)
        })
        .await?;
        Ok(Response::new(order))
    }

    async fn get_order(&self, request: Request<api::GetOrderRequest>) -> Result<Response<api::Order>, Status> {
        let request = request.into_inner();
        let id = request.order_id.parse::<OrderId>()?;
        let order = match wait_request(&request)? {
            None => self.find(id).await?,
            Some((states, timeout)) => self.wait_for(id, &states, timeout).await?,
        };
        Ok(Response::new(to_proto(&order)))
    }

    async fn cancel_order(&self, request: Request<api::CancelOrderRequest>) -> Result<Response<api::Order>, Status> {
        let key = Key::of(&request, "CancelOrder")?;
        self.change(&request.into_inner().order_id, key, async |_, order| {
            order.request_cancel()?;
            Ok(api::OrderCancelRequested { order: Some(to_proto(order)) })
        })
        .await
    }

    async fn revise_order(&self, request: Request<api::ReviseOrderRequest>) -> Result<Response<api::Order>, Status> {
        let key = Key::of(&request, "ReviseOrder")?;
        let request = request.into_inner();
        let items = requested(request.revised_line_items);
        self.change(&request.order_id, key, async |tx, order| {
            let menu = menu(tx, order.restaurant_id).await?;
            let Pricing { line_items, total } = order.request_revision(&menu, &items)?;
            Ok(api::OrderRevisionRequested {
                order: Some(to_proto(order)),
                revised_line_items: line_items_to_proto(&line_items),
                revised_total: Some(total.into()),
            })
        })
        .await
    }
}
