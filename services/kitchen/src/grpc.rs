//! The KitchenService gRPC API: restaurants, and the transitions a restaurant makes on its tickets.

use chrono::{DateTime, Utc};
use ftgo_platform::{
    grpc::{self, database_error},
    idempotency::{self, Key},
    ids::{OrderId, RestaurantId, TicketId},
    messaging::{OutgoingMessage, outbox, streams::event_subject},
    service::Infrastructure,
};
use ftgo_proto::{common::v1 as common, kitchen::v1 as api};
use sqlx::PgPool;
use tonic::{Request, Response, Status, service::Routes};

use crate::{
    domain::{
        restaurant::{Address, Restaurant},
        ticket::{Ticket, TicketError, TicketState},
    },
    store,
};

/// What this service serves over gRPC; the platform adds health, reflection and the dead-letter API.
pub fn routes(infra: &Infrastructure) -> Routes {
    Routes::new(api::kitchen_service_server::KitchenServiceServer::new(KitchenApi::new(infra.db.clone())))
}

pub struct KitchenApi {
    db: PgPool,
}

impl KitchenApi {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }
}

impl From<TicketError> for Status {
    fn from(e: TicketError) -> Self {
        match e {
            TicketError::IllegalTransition { .. } => Status::failed_precondition(e.to_string()),
            TicketError::ReadyByInThePast => Status::invalid_argument(e.to_string()),
        }
    }
}

pub fn restaurant_to_proto(r: &Restaurant) -> api::Restaurant {
    let a = &r.address;
    api::Restaurant {
        restaurant_id: r.id.to_string(),
        name: r.name.clone(),
        address: Some(a.into()),
        menu_items: r
            .menu
            .iter()
            .map(|i| common::MenuItem { id: i.id.clone(), name: i.name.clone(), price: Some(i.price.into()) })
            .collect(),
    }
}

pub fn state_to_proto(state: TicketState) -> api::TicketState {
    match state {
        TicketState::CreatePending => api::TicketState::CreatePending,
        TicketState::AwaitingAcceptance => api::TicketState::AwaitingAcceptance,
        TicketState::Accepted => api::TicketState::Accepted,
        TicketState::Preparing => api::TicketState::Preparing,
        TicketState::ReadyForPickup => api::TicketState::ReadyForPickup,
        TicketState::PickedUp => api::TicketState::PickedUp,
        TicketState::CancelPending => api::TicketState::CancelPending,
        TicketState::Cancelled => api::TicketState::Cancelled,
        TicketState::RevisionPending => api::TicketState::RevisionPending,
    }
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

pub fn ticket_to_proto(t: &Ticket) -> api::Ticket {
    api::Ticket {
        ticket_id: t.id.to_string(),
        order_id: t.order_id.to_string(),
        restaurant_id: t.restaurant_id.to_string(),
        state: state_to_proto(t.state).into(),
        line_items: t
            .line_items
            .iter()
            .map(|i| api::TicketLineItem {
                menu_item_id: i.menu_item_id.clone(),
                name: i.name.clone(),
                quantity: i.quantity as i32,
            })
            .collect(),
        ready_by: t.ready_by.map(timestamp),
    }
}

impl KitchenApi {
    /// Applies `change` to the ticket under a row lock and saves it, once per idempotency `key`.
    async fn change_ticket(
        &self,
        ticket_id: &str,
        key: Option<Key>,
        change: impl FnOnce(&mut Ticket) -> Result<(), TicketError>,
    ) -> Result<Response<api::Ticket>, Status> {
        let id = ticket_id.parse::<TicketId>()?;
        let mut tx = self.db.begin().await.map_err(database_error)?;
        let changed = idempotency::once(&mut tx, key.as_ref(), async |tx| {
            let mut ticket = store::lock_ticket(tx, id)
                .await
                .map_err(database_error)?
                .ok_or_else(|| grpc::not_found(format!("ticket {id} does not exist")))?;
            change(&mut ticket)?;
            store::save_ticket(tx, &ticket).await.map_err(database_error)?;
            tracing::info!(ticket_id = %id, state = ticket.state.as_str(), "ticket changed");
            Ok(ticket_to_proto(&ticket))
        })
        .await?;
        tx.commit().await.map_err(database_error)?;
        Ok(Response::new(changed))
    }
}

#[tonic::async_trait]
impl api::kitchen_service_server::KitchenService for KitchenApi {
    async fn create_restaurant(
        &self,
        request: Request<api::CreateRestaurantRequest>,
    ) -> Result<Response<api::CreateRestaurantResponse>, Status> {
        let key = Key::of(&request, "CreateRestaurant")?;
        let request = request.into_inner();
        let address = Address::from_proto("address", request.address)?;
        let menu =
            request.menu_items.into_iter().map(|i| (i.id, i.name, i.price.map_or(0, |p| p.minor_units))).collect();
        let restaurant = Restaurant::create(&request.name, address, menu)?;

        // The restaurant and the event that replicates it to the Order Service commit together.
        let event = api::RestaurantCreated { restaurant: Some(restaurant_to_proto(&restaurant)) };
        let mut tx = self.db.begin().await.map_err(database_error)?;
        let created = idempotency::once(&mut tx, key.as_ref(), async |tx| {
            store::insert_restaurant(tx, &restaurant).await.map_err(database_error)?;
            let message = OutgoingMessage::protobuf(event_subject("restaurant", "RestaurantCreated"), &event);
            outbox::enqueue(tx, &message).await.map_err(database_error)?;
            Ok(api::CreateRestaurantResponse { restaurant_id: restaurant.id.to_string() })
        })
        .await?;
        outbox::commit(tx).await.map_err(database_error)?;
        Ok(Response::new(created))
    }

    async fn get_restaurant(
        &self,
        request: Request<api::GetRestaurantRequest>,
    ) -> Result<Response<api::Restaurant>, Status> {
        let id = request.into_inner().restaurant_id.parse::<RestaurantId>()?;
        let restaurant = grpc::fetch(
            &self.db,
            async |conn| store::find_restaurant(conn, id).await,
            || format!("restaurant {id} does not exist"),
        )
        .await?;
        Ok(Response::new(restaurant_to_proto(&restaurant)))
    }

    async fn get_ticket(&self, request: Request<api::GetTicketRequest>) -> Result<Response<api::Ticket>, Status> {
        let id = request.into_inner().ticket_id.parse::<TicketId>()?;
        let ticket = grpc::fetch(
            &self.db,
            async |conn| store::find_ticket(conn, id).await,
            || format!("ticket {id} does not exist"),
        )
        .await?;
        Ok(Response::new(ticket_to_proto(&ticket)))
    }

    async fn get_ticket_by_order(
        &self,
        request: Request<api::GetTicketByOrderRequest>,
    ) -> Result<Response<api::Ticket>, Status> {
        let raw = request.into_inner().order_id;
        let missing = || format!("order {raw:?} has no ticket");
        // An id that cannot name an order names none: not found, as for any unknown order.
        let order_id: OrderId = raw.parse().map_err(|_| grpc::not_found(missing()))?;
        let ticket =
            grpc::fetch(&self.db, async |conn| store::find_ticket_by_order(conn, order_id).await, missing).await?;
        Ok(Response::new(ticket_to_proto(&ticket)))
    }

    async fn accept_ticket(&self, request: Request<api::AcceptTicketRequest>) -> Result<Response<api::Ticket>, Status> {
        let key = Key::of(&request, "AcceptTicket")?;
        let request = request.into_inner();
        let ready_by = request
            .ready_by
            .and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
            .ok_or_else(|| Status::invalid_argument("readyBy is required and must be a valid time"))?;
        self.change_ticket(&request.ticket_id, key, |t| t.accept(ready_by, Utc::now())).await
    }

    async fn prepare_ticket(&self, request: Request<api::TicketRequest>) -> Result<Response<api::Ticket>, Status> {
        let key = Key::of(&request, "PrepareTicket")?;
        self.change_ticket(&request.into_inner().ticket_id, key, Ticket::prepare).await
    }

    async fn mark_ticket_ready(&self, request: Request<api::TicketRequest>) -> Result<Response<api::Ticket>, Status> {
        let key = Key::of(&request, "MarkTicketReady")?;
        self.change_ticket(&request.into_inner().ticket_id, key, Ticket::mark_ready).await
    }

    async fn pick_up_ticket(&self, request: Request<api::TicketRequest>) -> Result<Response<api::Ticket>, Status> {
        let key = Key::of(&request, "PickUpTicket")?;
        self.change_ticket(&request.into_inner().ticket_id, key, Ticket::pick_up).await
    }
}
