//! The Kitchen Service against real Postgres and NATS: restaurants over gRPC with their event,
//! tickets driven by saga commands and by the restaurant.

use std::time::Duration;

use ftgo_kitchen_service::SERVICE;
use ftgo_platform::{
    runtime::Running,
    testing::{ReceivedMessage, ServiceWorld},
};
use ftgo_proto::{
    common::v1::{MenuItem, Money},
    kitchen::v1::{self as api, TicketState, kitchen_service_client::KitchenServiceClient},
};
use tonic::{Code, transport::Channel};

/// Orders the saga names (any UUIDs: the Kitchen Service never looks them up).
const O1: &str = "00000000-0000-4000-8000-000000000001";
const O2: &str = "00000000-0000-4000-8000-000000000002";
const O3: &str = "00000000-0000-4000-8000-000000000003";
const O4: &str = "00000000-0000-4000-8000-000000000004";

struct App {
    world: ServiceWorld,
    running: Running,
    client: KitchenServiceClient<Channel>,
    database_url: String,
}

async fn spawn_app() -> App {
    let world = ServiceWorld::start().await.unwrap();
    let serving = world.serve(&SERVICE).await.unwrap();
    let client = KitchenServiceClient::new(serving.channel);
    App { world, running: serving.running, client, database_url: serving.database_url }
}

fn menu_item(id: &str, name: &str, price: i64) -> MenuItem {
    MenuItem { id: id.into(), name: name.into(), price: Some(Money { minor_units: price }) }
}

fn line(id: &str, quantity: i32) -> api::TicketLineItem {
    api::TicketLineItem { menu_item_id: id.into(), name: String::new(), quantity }
}

fn in_minutes(minutes: i64) -> Option<prost_types::Timestamp> {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    Some(prost_types::Timestamp { seconds: seconds + minutes * 60, nanos: 0 })
}

impl App {
    async fn restaurant(&mut self) -> String {
        let request = api::CreateRestaurantRequest {
            name: "Ajanta".into(),
            address: ftgo_platform::testing::address(),
            menu_items: vec![menu_item("1", "Chicken Vindaloo", 1250), menu_item("2", "Dal", 500)],
        };
        self.client.create_restaurant(request).await.unwrap().into_inner().restaurant_id
    }

    async fn command<M: prost::Message + prost::Name>(&self, command: &M, saga: &str) -> ReceivedMessage {
        let subject = format!("ftgo.command.kitchen.{}", M::NAME);
        self.world.command_reply(&subject, command, saga).await.unwrap()
    }

    async fn ticket(&mut self, order_id: &str) -> api::Ticket {
        let request = api::GetTicketByOrderRequest { order_id: order_id.into() };
        self.client.get_ticket_by_order(request).await.unwrap().into_inner()
    }

    /// A ticket for `order_id`, created and confirmed by the Create Order saga.
    async fn awaiting_acceptance(&mut self, restaurant_id: &str, order_id: &str) -> String {
        let create = api::CreateTicket {
            order_id: order_id.into(),
            restaurant_id: restaurant_id.into(),
            line_items: vec![line("1", 2)],
        };
        let ticket_id =
            self.command(&create, &format!("{order_id}-create")).await.decode::<api::TicketCreated>().ticket_id;
        let confirm = api::ConfirmCreateTicket { ticket_id: ticket_id.clone() };
        self.command(&confirm, &format!("{order_id}-confirm")).await.decode::<api::TicketCommandSucceeded>();
        ticket_id
    }
}

#[tokio::test]
async fn a_restaurant_is_stored_with_its_menu_and_announced_by_an_event() {
    let mut app = spawn_app().await;
    let id = app.restaurant().await;
    let restaurant =
        app.client.get_restaurant(api::GetRestaurantRequest { restaurant_id: id.clone() }).await.unwrap().into_inner();
    assert_eq!(restaurant.name, "Ajanta");
    assert_eq!(restaurant.menu_items, [menu_item("1", "Chicken Vindaloo", 1250), menu_item("2", "Dal", 500)]);
    assert_eq!(restaurant.address.as_ref().unwrap().city, "Berkeley");

    let events = app.world.messages("ftgo.event.restaurant.>", 1, Duration::from_secs(10)).await.unwrap();
    let event: api::RestaurantCreated = events[0].decode();
    assert_eq!(event.restaurant.unwrap(), api::Restaurant { restaurant_id: id, ..restaurant });
    app.running.stop().await.unwrap();
}

/// A row that does not hold what its type says is an error, never a value with blank fields.
#[tokio::test]
async fn a_corrupt_row_is_an_error_not_blank_fields() {
    let mut app = spawn_app().await;
    let restaurant_id = app.restaurant().await;
    let order_id = uuid::Uuid::new_v4().to_string();
    app.awaiting_acceptance(&restaurant_id, &order_id).await;
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&app.database_url).await.unwrap();
    sqlx::query("UPDATE restaurants SET address = '{\"street1\": 5}'").execute(&mut db).await.unwrap();
    sqlx::query("UPDATE tickets SET line_items = '[{\"name\": \"Dal\"}]'").execute(&mut db).await.unwrap();

    let restaurant = app.client.get_restaurant(api::GetRestaurantRequest { restaurant_id }).await;
    assert!(restaurant.is_err(), "{restaurant:?}");
    let ticket = app.client.get_ticket_by_order(api::GetTicketByOrderRequest { order_id }).await;
    assert!(ticket.is_err(), "{ticket:?}");
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn an_invalid_restaurant_is_refused_field_by_field() {
    let mut app = spawn_app().await;
    let cases = [
        (vec![], "menu.menuItems must have at least one item"),
        (vec![menu_item("1", "a", 100), menu_item("1", "b", 100)], "menu.menuItems[1].id \"1\" appears twice"),
        (vec![menu_item("1", "a", 0)], "menu.menuItems[0].price must be more than zero"),
        (vec![menu_item("1", "a", -100)], "menu.menuItems[0].price must not be negative"),
    ];
    for (menu_items, message) in cases {
        let request =
            api::CreateRestaurantRequest { name: "X".into(), address: ftgo_platform::testing::address(), menu_items };
        let status = app.client.create_restaurant(request).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::InvalidArgument, message));
    }
    let unknown = uuid::Uuid::new_v4().to_string();
    let status = app.client.get_restaurant(api::GetRestaurantRequest { restaurant_id: unknown }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn create_ticket_is_refused_for_an_unknown_restaurant_or_menu_item_and_created_otherwise() {
    let mut app = spawn_app().await;
    let restaurant_id = app.restaurant().await;

    let unknown_restaurant = api::CreateTicket {
        order_id: O1.into(),
        restaurant_id: uuid::Uuid::new_v4().to_string(),
        line_items: vec![line("1", 1)],
    };
    let refused: api::TicketCommandRefused = app.command(&unknown_restaurant, "s-1").await.decode();
    assert!(refused.reason.contains("does not exist"), "{}", refused.reason);

    let unknown_item =
        api::CreateTicket { order_id: O2.into(), restaurant_id: restaurant_id.clone(), line_items: vec![line("9", 1)] };
    let refused: api::TicketCommandRefused = app.command(&unknown_item, "s-2").await.decode();
    assert_eq!(refused.reason, "restaurant Ajanta has no menu item \"9\"");

    let huge = api::CreateTicket {
        order_id: O3.into(),
        restaurant_id: restaurant_id.clone(),
        line_items: vec![line("1", 1000)],
    };
    let refused: api::TicketCommandRefused = app.command(&huge, "s-3").await.decode();
    assert!(refused.reason.contains("must be from 1 to 100"), "{}", refused.reason);

    let good = api::CreateTicket { order_id: O4.into(), restaurant_id, line_items: vec![line("1", 2)] };
    let created: api::TicketCreated = app.command(&good, "s-4").await.decode();
    let ticket = app.ticket(O4).await;
    assert_eq!((ticket.state(), ticket.ticket_id), (TicketState::CreatePending, created.ticket_id.clone()));
    // Asked again (a different message), it answers with the same ticket.
    let again: api::TicketCreated = app.command(&good, "s-5").await.decode();
    assert_eq!(again.ticket_id, created.ticket_id);
    for order in [O1, O2, O3] {
        let status = app.client.get_ticket_by_order(api::GetTicketByOrderRequest { order_id: order.into() }).await;
        assert_eq!(status.unwrap_err().code(), Code::NotFound, "a refused order has no ticket");
    }
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_ticket_can_be_cancelled_until_the_kitchen_starts_preparing_it() {
    let mut app = spawn_app().await;
    let restaurant_id = app.restaurant().await;
    let ticket_id = app.awaiting_acceptance(&restaurant_id, O1).await;
    app.client
        .accept_ticket(api::AcceptTicketRequest { ticket_id: ticket_id.clone(), ready_by: in_minutes(30) })
        .await
        .unwrap();

    let begin = api::BeginCancelTicket { order_id: O1.into() };
    app.command(&begin, "cancel-1").await.decode::<api::TicketCommandSucceeded>();
    assert_eq!(app.ticket(O1).await.state(), TicketState::CancelPending);
    app.command(&api::UndoBeginCancelTicket { order_id: O1.into() }, "undo-1")
        .await
        .decode::<api::TicketCommandSucceeded>();
    assert_eq!(app.ticket(O1).await.state(), TicketState::Accepted);

    app.client.prepare_ticket(api::TicketRequest { ticket_id }).await.unwrap();
    let refused: api::TicketCommandRefused = app.command(&begin, "cancel-2").await.decode();
    assert_eq!(refused.reason, "cannot cancel a ticket that is PREPARING");
    let revise = api::BeginReviseTicket { order_id: O1.into(), revised_line_items: vec![line("2", 1)] };
    let refused: api::TicketCommandRefused = app.command(&revise, "revise-1").await.decode();
    assert_eq!(refused.reason, "cannot revise a ticket that is PREPARING");
    assert_eq!(app.ticket(O1).await.state(), TicketState::Preparing);
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_cancelled_or_revised_ticket_ends_as_the_saga_says() {
    let mut app = spawn_app().await;
    let restaurant_id = app.restaurant().await;
    app.awaiting_acceptance(&restaurant_id, O1).await;
    app.command(&api::BeginCancelTicket { order_id: O1.into() }, "c-1").await.decode::<api::TicketCommandSucceeded>();
    app.command(&api::ConfirmCancelTicket { order_id: O1.into() }, "c-2").await.decode::<api::TicketCommandSucceeded>();
    assert_eq!(app.ticket(O1).await.state(), TicketState::Cancelled);

    app.awaiting_acceptance(&restaurant_id, O2).await;
    let revised = vec![line("2", 3)];
    let begin = api::BeginReviseTicket { order_id: O2.into(), revised_line_items: revised.clone() };
    app.command(&begin, "r-1").await.decode::<api::TicketCommandSucceeded>();
    assert_eq!(app.ticket(O2).await.state(), TicketState::RevisionPending);
    let confirm = api::ConfirmReviseTicket { order_id: O2.into(), revised_line_items: revised.clone() };
    app.command(&confirm, "r-2").await.decode::<api::TicketCommandSucceeded>();
    let ticket = app.ticket(O2).await;
    assert_eq!(ticket.state(), TicketState::AwaitingAcceptance);
    assert_eq!(ticket.line_items, revised);
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn the_restaurant_moves_a_ticket_to_picked_up_and_illegal_steps_are_refused() {
    let mut app = spawn_app().await;
    let restaurant_id = app.restaurant().await;
    let ticket_id = app.awaiting_acceptance(&restaurant_id, O1).await;
    let request = || api::TicketRequest { ticket_id: ticket_id.clone() };

    let status = app.client.prepare_ticket(request()).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::FailedPrecondition, "cannot start preparing a ticket that is AWAITING_ACCEPTANCE")
    );
    let past = api::AcceptTicketRequest { ticket_id: ticket_id.clone(), ready_by: in_minutes(-5) };
    assert_eq!(app.client.accept_ticket(past).await.unwrap_err().code(), Code::InvalidArgument);
    let missing = api::AcceptTicketRequest { ticket_id: ticket_id.clone(), ready_by: None };
    assert_eq!(app.client.accept_ticket(missing).await.unwrap_err().code(), Code::InvalidArgument);

    // One instant for both: computed twice, a second boundary can fall between them.
    let ready_by = in_minutes(20);
    let accepted = app
        .client
        .accept_ticket(api::AcceptTicketRequest { ticket_id: ticket_id.clone(), ready_by })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(accepted.state(), TicketState::Accepted);
    assert_eq!(accepted.ready_by, ready_by);
    assert_eq!(app.client.prepare_ticket(request()).await.unwrap().into_inner().state(), TicketState::Preparing);
    assert_eq!(
        app.client.mark_ticket_ready(request()).await.unwrap().into_inner().state(),
        TicketState::ReadyForPickup
    );
    assert_eq!(app.client.pick_up_ticket(request()).await.unwrap().into_inner().state(), TicketState::PickedUp);
    assert_eq!(app.client.pick_up_ticket(request()).await.unwrap_err().code(), Code::FailedPrecondition);

    let unknown = api::TicketRequest { ticket_id: uuid::Uuid::new_v4().to_string() };
    assert_eq!(app.client.prepare_ticket(unknown).await.unwrap_err().code(), Code::NotFound);
    let garbage = api::TicketRequest { ticket_id: "../../etc/passwd".into() };
    assert_eq!(app.client.prepare_ticket(garbage).await.unwrap_err().code(), Code::InvalidArgument);
    app.running.stop().await.unwrap();
}
