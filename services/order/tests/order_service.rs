//! The Order Service against real Postgres and NATS: the menu replica from events, orders over
//! gRPC with their saga-starting events, and the saga's commands moving them to their outcome.

use std::time::Duration;

use ftgo_order_service::{Config, start};
use ftgo_platform::{messaging::OutgoingMessage, runtime::Running, testing::ServiceWorld};
use ftgo_proto::{
    common::v1::{LineItemRequest, MenuItem, Money},
    kitchen::v1 as kitchen,
    order::v1::{self as api, OrderState, order_service_client::OrderServiceClient},
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

struct App {
    world: ServiceWorld,
    running: Running,
    client: OrderServiceClient<Channel>,
    restaurant_id: String,
}

fn money(minor_units: i64) -> Option<Money> {
    Some(Money { minor_units })
}

fn item(menu_item_id: &str, quantity: i32) -> LineItemRequest {
    LineItemRequest { menu_item_id: menu_item_id.into(), quantity }
}

/// The service, with one restaurant replicated from its RestaurantCreated event.
async fn spawn_app() -> App {
    let world = ServiceWorld::start().await.unwrap();
    let config = Config { common: world.config("order").await.unwrap() };
    let running = start(config, CancellationToken::new()).await.unwrap();
    let client = OrderServiceClient::connect(format!("http://{}", running.addr)).await.unwrap();
    let restaurant_id = uuid::Uuid::new_v4().to_string();
    let event = kitchen::RestaurantCreated {
        restaurant: Some(kitchen::Restaurant {
            restaurant_id: restaurant_id.clone(),
            name: "Ajanta".into(),
            address: ftgo_platform::testing::address(),
            menu_items: vec![
                MenuItem { id: "1".into(), name: "Vindaloo".into(), price: money(1250) },
                MenuItem { id: "2".into(), name: "Dal".into(), price: money(500) },
            ],
        }),
    };
    world.publish(&OutgoingMessage::protobuf("ftgo.event.restaurant.RestaurantCreated", &event)).await.unwrap();
    let mut app = App { world, running, client, restaurant_id };
    // Replication is asynchronous: wait until an order can be priced.
    for _ in 0..100 {
        match app.create(vec![item("1", 1)]).await {
            Err(status) if status.code() == Code::NotFound => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => return app,
        }
    }
    panic!("the restaurant was never replicated");
}

impl App {
    async fn create(&mut self, line_items: Vec<LineItemRequest>) -> Result<api::Order, tonic::Status> {
        let request = api::CreateOrderRequest {
            consumer_id: "00000000-0000-4000-8000-0000000000c1".into(),
            restaurant_id: self.restaurant_id.clone(),
            delivery_address: ftgo_platform::testing::address(),
            line_items,
        };
        self.client.create_order(request).await.map(|r| r.into_inner())
    }

    async fn order(&mut self, order_id: &str) -> api::Order {
        self.client
            .get_order(api::GetOrderRequest { order_id: order_id.into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
    }

    /// Sends a saga command and returns whether the order accepted it (or the refusal's reason).
    async fn command<M: prost::Message + prost::Name>(&self, command: &M, saga: &str) -> Result<(), String> {
        let reply = self.world.command_reply(&format!("ftgo.command.order.{}", M::NAME), command, saga).await.unwrap();
        if reply.message_type == "ftgo.order.v1.OrderCommandSucceeded" {
            Ok(())
        } else {
            Err(reply.decode::<api::OrderCommandRefused>().reason)
        }
    }

    async fn approved(&mut self) -> String {
        let order = self.create(vec![item("1", 2)]).await.unwrap();
        self.command(&api::ApproveOrder { order_id: order.order_id.clone() }, &format!("approve-{}", order.order_id))
            .await
            .unwrap();
        order.order_id
    }
}

#[tokio::test]
async fn an_order_is_priced_from_the_replicated_menu_and_starts_the_create_order_saga() {
    let mut app = spawn_app().await;
    let order = app.create(vec![item("1", 2), item("2", 1)]).await.unwrap();
    assert_eq!(order.state(), OrderState::ApprovalPending);
    assert_eq!(order.order_total, money(3000));
    assert_eq!(order.line_items[0].name, "Vindaloo");

    let events = app.world.messages("ftgo.event.order.OrderCreated", 2, Duration::from_secs(10)).await.unwrap();
    let created: Vec<api::OrderCreated> = events.iter().map(|e| e.decode()).collect();
    assert!(created.iter().any(|e| e.order.as_ref().unwrap().order_id == order.order_id));
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_order_is_refused_at_once_with_the_field_that_is_wrong() {
    let mut app = spawn_app().await;
    let cases = [
        (vec![], Code::InvalidArgument, "lineItems must have at least one item"),
        (vec![item("1", 0)], Code::InvalidArgument, "lineItems[0].quantity must be from 1 to 100"),
        (vec![item("1", i32::MAX)], Code::InvalidArgument, "lineItems[0].quantity must be from 1 to 100"),
        (vec![item("9", 1)], Code::NotFound, "restaurant Ajanta has no menu item \"9\""),
    ];
    for (items, code, message) in cases {
        let status = app.create(items).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (code, message));
    }
    app.restaurant_id = uuid::Uuid::new_v4().to_string();
    assert_eq!(app.create(vec![item("1", 1)]).await.unwrap_err().code(), Code::NotFound);
    app.restaurant_id = "not-a-uuid".into();
    assert_eq!(app.create(vec![item("1", 1)]).await.unwrap_err().code(), Code::InvalidArgument);
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn the_saga_approves_or_rejects_a_pending_order_and_nothing_else() {
    let mut app = spawn_app().await;
    let rejected = app.create(vec![item("2", 1)]).await.unwrap().order_id;
    let reject = api::RejectOrder { order_id: rejected.clone(), reason: "consumer verification failed".into() };
    app.command(&reject, "reject-1").await.unwrap();
    let order = app.order(&rejected).await;
    assert_eq!(
        (order.state(), order.rejection_reason.as_str()),
        (OrderState::Rejected, "consumer verification failed")
    );

    let refused = app.command(&api::ApproveOrder { order_id: rejected.clone() }, "approve-late").await.unwrap_err();
    assert_eq!(refused, "cannot approve an order that is REJECTED");
    let unknown = app.command(&api::ApproveOrder { order_id: "nope".into() }, "approve-unknown").await.unwrap_err();
    assert_eq!(unknown, "order \"nope\" does not exist");
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn cancelling_an_approved_order_starts_the_cancel_saga_which_confirms_or_undoes_it() {
    let mut app = spawn_app().await;
    let id = app.approved().await;
    let pending = app.client.cancel_order(api::CancelOrderRequest { order_id: id.clone() }).await.unwrap().into_inner();
    assert_eq!(pending.state(), OrderState::CancelPending);
    let again = app.client.cancel_order(api::CancelOrderRequest { order_id: id.clone() }).await.unwrap_err();
    assert_eq!(
        (again.code(), again.message()),
        (Code::FailedPrecondition, "cannot cancel an order that is CANCEL_PENDING")
    );
    let events = app.world.messages("ftgo.event.order.OrderCancelRequested", 1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(events[0].decode::<api::OrderCancelRequested>().order.unwrap().order_id, id);

    app.command(&api::UndoCancelOrder { order_id: id.clone(), reason: "kitchen refused".into() }, "undo")
        .await
        .unwrap();
    assert_eq!(app.order(&id).await.state(), OrderState::Approved);
    app.client.cancel_order(api::CancelOrderRequest { order_id: id.clone() }).await.unwrap();
    app.command(&api::ConfirmCancelOrder { order_id: id.clone() }, "confirm").await.unwrap();
    assert_eq!(app.order(&id).await.state(), OrderState::Cancelled);
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_revision_is_priced_held_pending_and_applied_only_when_the_saga_confirms_it() {
    let mut app = spawn_app().await;
    let id = app.approved().await;
    let revise = || api::ReviseOrderRequest { order_id: id.clone(), revised_line_items: vec![item("2", 3)] };
    let pending = app.client.revise_order(revise()).await.unwrap().into_inner();
    assert_eq!((pending.state(), pending.order_total), (OrderState::RevisionPending, money(2500)), "old total kept");
    let events =
        app.world.messages("ftgo.event.order.OrderRevisionRequested", 1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(events[0].decode::<api::OrderRevisionRequested>().revised_total, money(1500));

    app.command(&api::UndoReviseOrder { order_id: id.clone(), reason: "over the credit limit".into() }, "undo")
        .await
        .unwrap();
    let order = app.order(&id).await;
    assert_eq!((order.state(), order.order_total), (OrderState::Approved, money(2500)));

    app.client.revise_order(revise()).await.unwrap();
    let confirm = api::ConfirmReviseOrder { order_id: id.clone() };
    app.command(&confirm, "confirm").await.unwrap();
    let order = app.order(&id).await;
    assert_eq!((order.state(), order.order_total), (OrderState::Approved, money(1500)));
    assert_eq!(order.line_items[0].name, "Dal");

    let bad = api::ReviseOrderRequest { order_id: id.clone(), revised_line_items: vec![item("2", 0)] };
    assert_eq!(app.client.revise_order(bad).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(app.order(&id).await.state(), OrderState::Approved, "a refused revision changes nothing");
    app.running.stop().await.unwrap();
}

fn wait(order_id: &str, states: &[OrderState], timeout_ms: u32) -> api::GetOrderRequest {
    api::GetOrderRequest {
        order_id: order_id.into(),
        wait_for: states.iter().map(|&s| s as i32).collect(),
        wait_timeout_ms: timeout_ms,
    }
}

#[tokio::test]
async fn a_client_can_wait_for_the_sagas_outcome_instead_of_polling() {
    let mut app = spawn_app().await;
    let order = app.create(vec![item("1", 1)]).await.unwrap();

    // Parked until the saga's last step commits.
    let mut client = app.client.clone();
    let request = wait(&order.order_id, &[OrderState::Approved, OrderState::Rejected], 20_000);
    let waiting = tokio::spawn(async move { client.get_order(request).await.map(|r| r.into_inner()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "an order still APPROVAL_PENDING does not answer a wait for its outcome");
    app.command(&api::ApproveOrder { order_id: order.order_id.clone() }, "wait-saga").await.unwrap();
    let answered = waiting.await.unwrap().unwrap();
    assert_eq!(answered.state(), OrderState::Approved);

    // A state the order is already in answers at once; a wait that times out answers with the
    // order as it is.
    let now = app.client.get_order(wait(&order.order_id, &[OrderState::Approved], 20_000)).await.unwrap();
    assert_eq!(now.into_inner().state(), OrderState::Approved);
    let timed_out = app.client.get_order(wait(&order.order_id, &[OrderState::Cancelled], 200)).await.unwrap();
    assert_eq!(timed_out.into_inner().state(), OrderState::Approved);

    // A cancel through the API wakes a waiter too.
    let mut client = app.client.clone();
    let request = wait(&order.order_id, &[OrderState::CancelPending], 20_000);
    let waiting = tokio::spawn(async move { client.get_order(request).await.map(|r| r.into_inner()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.client.cancel_order(api::CancelOrderRequest { order_id: order.order_id.clone() }).await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap().state(), OrderState::CancelPending);
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_wait_that_cannot_be_honoured_is_refused_with_the_reason() {
    let mut app = spawn_app().await;
    let order = app.create(vec![item("1", 1)]).await.unwrap();
    let id = order.order_id.as_str();
    let cases = [
        (wait(id, &[OrderState::Approved], 0), "wait_timeout_ms must be from 1 to 30000"),
        (wait(id, &[OrderState::Approved], 30_001), "wait_timeout_ms must be from 1 to 30000"),
        (wait(id, &[OrderState::Unspecified], 1000), "no order state"),
        (api::GetOrderRequest { order_id: id.into(), wait_for: vec![42], wait_timeout_ms: 1000 }, "no order state"),
        (wait(id, &[], 1000), "wait_timeout_ms needs wait_for"),
    ];
    for (request, reason) in cases {
        let status = app.client.get_order(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert!(status.message().contains(reason), "{request:?}: {}", status.message());
    }
    let unknown = wait(&uuid::Uuid::new_v4().to_string(), &[OrderState::Approved], 1000);
    assert_eq!(app.client.get_order(unknown).await.unwrap_err().code(), Code::NotFound);
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_change_announced_by_one_replica_wakes_the_waiters_of_another() {
    use ftgo_order_service::watch::OrderWatch;

    let world = ServiceWorld::start().await.unwrap();
    let connect = || async { async_nats::connect(world.nats.url()).await.unwrap() };
    let shutdown = CancellationToken::new();
    let (here, there) = (
        std::sync::Arc::new(OrderWatch::new(Some(connect().await), shutdown.clone())),
        OrderWatch::new(Some(connect().await), shutdown.clone()),
    );
    let listening = tokio::spawn({
        let (here, shutdown) = (here.clone(), shutdown.clone());
        async move { here.listen(shutdown).await }
    });
    let order = ftgo_platform::ids::OrderId::new();
    let subscription = here.subscribe(order);
    {
        let changed = subscription.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        // The subscription may not be in place yet: announce until the signal arrives.
        let woken = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                there.announce(order).await;
                if tokio::time::timeout(Duration::from_millis(100), changed.as_mut()).await.is_ok() {
                    return;
                }
            }
        })
        .await;
        assert!(woken.is_ok(), "the other replica's announcement never woke the waiter");
    }
    drop(subscription);
    shutdown.cancel();
    listening.await.unwrap().unwrap();
}
