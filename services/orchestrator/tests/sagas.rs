//! The three sagas end to end: the four participants and the orchestrator, each with its own
//! database, talking over real NATS JetStream, every failure branch included.

use ftgo_testenv::eventually;
use std::time::Duration;

use prost::Name;

use ftgo_orchestrator_service::StepDeadlines;
use ftgo_platform::{
    config::{CommonConfig, ServiceConfig},
    runtime::Running,
    testing::ServiceWorld,
};
use ftgo_proto::{
    accounting::v1::{self as accounting, accounting_service_client::AccountingServiceClient},
    admin::v1::{self as admin, dead_letter_service_client::DeadLetterServiceClient},
    common::v1::{LineItemRequest, MenuItem, Money, PersonName},
    consumer::v1::{self as consumer, consumer_service_client::ConsumerServiceClient},
    kitchen::v1::{self as kitchen, TicketState, kitchen_service_client::KitchenServiceClient},
    orchestrator::v1::{self as orchestrator, SagaState, saga_service_client::SagaServiceClient},
    order::v1::{self as order, OrderState, order_service_client::OrderServiceClient},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The whole back end on one machine.
struct System {
    world: ServiceWorld,
    orchestrator_config: CommonConfig,
    orchestrator: Option<Running>,
    consumer_config: CommonConfig,
    consumer_service: Option<Running>,
    accounting_config: CommonConfig,
    accounting_service: Option<Running>,
    order_config: CommonConfig,
    order_service: Running,
    deadlines: StepDeadlines,
    _others: Vec<Running>,
    consumers: ConsumerServiceClient<Channel>,
    accounts: AccountingServiceClient<Channel>,
    kitchen: KitchenServiceClient<Channel>,
    orders: OrderServiceClient<Channel>,
}

fn url(running: &Running) -> String {
    format!("http://{}", running.addr)
}

async fn start_consumer_service(config: &CommonConfig) -> Running {
    ftgo_consumer_service::SERVICE
        .start(ServiceConfig { common: config.clone() }, CancellationToken::new())
        .await
        .unwrap()
}

async fn start_accounting_service(config: &CommonConfig) -> Running {
    ftgo_accounting_service::SERVICE
        .start(ServiceConfig { common: config.clone() }, CancellationToken::new())
        .await
        .unwrap()
}

async fn start_orchestrator(config: &CommonConfig, deadlines: StepDeadlines) -> Running {
    let config = ftgo_orchestrator_service::Config { common: config.clone(), sagas: deadlines };
    ftgo_orchestrator_service::start(config, CancellationToken::new()).await.unwrap()
}

async fn system() -> System {
    system_with(StepDeadlines::default()).await
}

/// The system, with the orchestrator waiting for each step's reply as `deadlines` say.
async fn system_with(deadlines: StepDeadlines) -> System {
    let world = ServiceWorld::start().await.unwrap();
    let consumer_config = world.config("consumer").await.unwrap();
    let orchestrator_config = world.config("orchestrator").await.unwrap();
    let accounting_config = world.config("accounting").await.unwrap();
    let consumer_service = start_consumer_service(&consumer_config).await;
    let accounting = start_accounting_service(&accounting_config).await;
    let kitchen = world.serve(&ftgo_kitchen_service::SERVICE).await.unwrap().running;
    let order_config = world.config("order").await.unwrap();
    let order = ftgo_order_service::start(
        ftgo_order_service::Config { common: order_config.clone() },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let orchestrator = start_orchestrator(&orchestrator_config, deadlines).await;
    System {
        consumers: ConsumerServiceClient::connect(url(&consumer_service)).await.unwrap(),
        accounts: AccountingServiceClient::connect(url(&accounting)).await.unwrap(),
        kitchen: KitchenServiceClient::connect(url(&kitchen)).await.unwrap(),
        orders: OrderServiceClient::connect(url(&order)).await.unwrap(),
        world,
        orchestrator_config,
        orchestrator: Some(orchestrator),
        consumer_config,
        consumer_service: Some(consumer_service),
        accounting_config,
        accounting_service: Some(accounting),
        order_config,
        order_service: order,
        deadlines,
        _others: vec![kitchen],
    }
}

fn money(minor_units: i64) -> Option<Money> {
    Some(Money { minor_units })
}

impl System {
    /// A consumer with an open account.
    async fn consumer(&mut self) -> String {
        let request = consumer::CreateConsumerRequest {
            name: Some(PersonName { first_name: "Ada".into(), last_name: "Lovelace".into() }),
        };
        let id = self.consumers.create_consumer(request).await.unwrap().into_inner().consumer_id;
        let mut accounts = self.accounts.clone();
        eventually("the account to open", Duration::from_secs(30), async || {
            accounts.get_account(accounting::GetAccountRequest { consumer_id: id.clone() }).await.ok()
        })
        .await;
        id
    }

    /// A restaurant (Vindaloo 12.50, Dal 5.00) whose menu the Order Service has replicated.
    async fn restaurant(&mut self, consumer_id: &str) -> String {
        let request = kitchen::CreateRestaurantRequest {
            name: "Ajanta".into(),
            address: ftgo_platform::testing::address(),
            menu_items: vec![
                MenuItem { id: "1".into(), name: "Vindaloo".into(), price: money(1250) },
                MenuItem { id: "2".into(), name: "Dal".into(), price: money(500) },
            ],
        };
        let id = self.kitchen.create_restaurant(request).await.unwrap().into_inner().restaurant_id;
        // The replica is ready once an order can be priced; that probe order is then cancelled
        // by its own saga or left alone: tests look only at their own orders.
        let mut orders = self.orders.clone();
        let probe = order::CreateOrderRequest {
            consumer_id: consumer_id.into(),
            restaurant_id: id.clone(),
            delivery_address: ftgo_platform::testing::address(),
            line_items: vec![LineItemRequest { menu_item_id: "2".into(), quantity: 1 }],
        };
        let probe = eventually("the menu to be replicated", Duration::from_secs(30), async || {
            orders.create_order(probe.clone()).await.ok()
        })
        .await;
        self.outcome(&probe.into_inner().order_id).await;
        id
    }

    async fn place(&mut self, consumer_id: &str, restaurant_id: &str, vindaloos: i32) -> String {
        let request = order::CreateOrderRequest {
            consumer_id: consumer_id.into(),
            restaurant_id: restaurant_id.into(),
            delivery_address: ftgo_platform::testing::address(),
            line_items: vec![LineItemRequest { menu_item_id: "1".into(), quantity: vindaloos }],
        };
        let created = self.orders.create_order(request).await.unwrap().into_inner();
        assert_eq!(created.state(), OrderState::ApprovalPending);
        created.order_id
    }

    async fn order(&mut self, order_id: &str) -> order::Order {
        self.orders
            .get_order(order::GetOrderRequest { order_id: order_id.into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits until no saga of the order is running, and returns the order.
    async fn outcome(&mut self, order_id: &str) -> order::Order {
        let mut orders = self.orders.clone();
        eventually("the order to settle", Duration::from_secs(30), async || {
            let o = orders
                .get_order(order::GetOrderRequest { order_id: order_id.into(), ..Default::default() })
                .await
                .ok()?
                .into_inner();
            let pending = [OrderState::ApprovalPending, OrderState::CancelPending, OrderState::RevisionPending];
            (!pending.contains(&o.state())).then_some(o)
        })
        .await
    }

    async fn ticket(&mut self, order_id: &str) -> Option<kitchen::Ticket> {
        let request = kitchen::GetTicketByOrderRequest { order_id: order_id.into() };
        self.kitchen.get_ticket_by_order(request).await.ok().map(|r| r.into_inner())
    }

    async fn reserved(&mut self, consumer_id: &str) -> Option<Money> {
        let request = accounting::GetAccountRequest { consumer_id: consumer_id.into() };
        self.accounts.get_account(request).await.unwrap().into_inner().reserved
    }

    async fn sagas(&mut self, order_id: &str) -> Vec<orchestrator::Saga> {
        let running = self.orchestrator.as_ref().expect("orchestrator running");
        let mut client = SagaServiceClient::connect(url(running)).await.unwrap();
        let request = orchestrator::ListOrderSagasRequest { order_id: order_id.into() };
        client.list_order_sagas(request).await.unwrap().into_inner().sagas
    }

    async fn set_account(&mut self, consumer_id: &str, enabled: bool) {
        let request = accounting::UpdateAccountRequest {
            consumer_id: consumer_id.into(),
            credit_limit: None,
            enabled: Some(enabled),
        };
        self.accounts.update_account(request).await.unwrap();
    }
}

#[tokio::test]
async fn create_order_happy_path_ends_approved_with_a_ticket_awaiting_acceptance_and_the_total_reserved() {
    let mut s = system().await;
    let consumer_id = s.consumer().await;
    let restaurant_id = s.restaurant(&consumer_id).await;
    let before = s.reserved(&consumer_id).await.unwrap().minor_units;

    let order_id = s.place(&consumer_id, &restaurant_id, 2).await;
    let order = s.outcome(&order_id).await;

    assert_eq!(order.state(), OrderState::Approved);
    assert_eq!(s.ticket(&order_id).await.unwrap().state(), TicketState::AwaitingAcceptance);
    assert_eq!(s.reserved(&consumer_id).await, money(before + 2500));
    let sagas = s.sagas(&order_id).await;
    assert_eq!(sagas.len(), 1);
    assert_eq!((sagas[0].saga_type.as_str(), sagas[0].state()), ("CreateOrderSaga", SagaState::Succeeded));
    let steps: Vec<_> = sagas[0].steps.iter().map(|st| (st.name.as_str(), st.status.as_str())).collect();
    assert_eq!(
        steps,
        [
            ("create order", "done"),
            ("verify consumer", "done"),
            ("create ticket", "done"),
            ("authorize card", "done"),
            ("confirm ticket", "done"),
            ("approve order", "done"),
        ]
    );
}

#[tokio::test]
async fn an_unknown_consumer_gets_the_order_rejected_without_a_ticket() {
    let mut s = system().await;
    let consumer_id = s.consumer().await;
    let restaurant_id = s.restaurant(&consumer_id).await;
    let stranger = uuid::Uuid::new_v4().to_string();

    let order_id = s.place(&stranger, &restaurant_id, 1).await;
    let order = s.outcome(&order_id).await;

    assert_eq!(order.state(), OrderState::Rejected);
    assert_eq!(order.rejection_reason, format!("verify consumer refused: consumer {stranger} does not exist"));
    assert!(s.ticket(&order_id).await.is_none());
    assert_eq!(s.sagas(&order_id).await[0].state(), SagaState::Compensated);
}

#[tokio::test]
async fn a_kitchen_refusal_rejects_the_order_before_any_card_is_authorized() {
    let mut s = system().await;
    let consumer_id = s.consumer().await;
    let before = s.reserved(&consumer_id).await;
    // A restaurant the Order Service has heard of (its event, as if from the Kitchen) but the
    // Kitchen has not: the Kitchen refuses the ticket, step 3 of the saga.
    let restaurant_id = uuid::Uuid::new_v4().to_string();
    let event = kitchen::RestaurantCreated {
        restaurant: Some(kitchen::Restaurant {
            restaurant_id: restaurant_id.clone(),
            name: "Phantom".into(),
            address: ftgo_platform::testing::address(),
            menu_items: vec![MenuItem { id: "1".into(), name: "Vindaloo".into(), price: money(1250) }],
        }),
    };
    let message =
        ftgo_platform::messaging::OutgoingMessage::protobuf("ftgo.event.restaurant.RestaurantCreated", &event);
    s.world.publish(&message).await.unwrap();
    let mut orders = s.orders.clone();
    let request = order::CreateOrderRequest {
        consumer_id: consumer_id.clone(),
        restaurant_id: restaurant_id.clone(),
        delivery_address: ftgo_platform::testing::address(),
        line_items: vec![LineItemRequest { menu_item_id: "1".into(), quantity: 1 }],
    };
    let created = eventually("the menu to be replicated", Duration::from_secs(30), async || {
        orders.create_order(request.clone()).await.ok()
    })
    .await;
    let order_id = created.into_inner().order_id;

    let order = s.outcome(&order_id).await;
    assert_eq!(order.state(), OrderState::Rejected);
    assert_eq!(order.rejection_reason, format!("create ticket refused: restaurant {restaurant_id} does not exist"));
    assert!(s.ticket(&order_id).await.is_none());
    assert_eq!(s.reserved(&consumer_id).await, before, "no card was authorized");
    let sagas = s.sagas(&order_id).await;
    let steps: Vec<_> = sagas[0].steps.iter().map(|st| (st.name.as_str(), st.status.as_str())).collect();
    assert_eq!(
        steps,
        [
            ("create order", "done"),
            ("verify consumer", "done"),
            ("create ticket", "refused"),
            ("create order", "compensated"),
        ]
    );
}

#[tokio::test]
async fn exceeding_the_credit_limit_rejects_the_order_cancels_its_ticket_and_reserves_nothing() {
    let mut s = system().await;
    let consumer_id = s.consumer().await;
    let restaurant_id = s.restaurant(&consumer_id).await;
    let before = s.reserved(&consumer_id).await;

    // 41 x 12.50 = 512.50 > 500.00
    let order_id = s.place(&consumer_id, &restaurant_id, 41).await;
    let order = s.outcome(&order_id).await;

    assert_eq!(order.state(), OrderState::Rejected);
    assert!(
        order.rejection_reason.starts_with("authorize card refused: credit limit exceeded"),
        "{}",
        order.rejection_reason
    );
    assert_eq!(s.ticket(&order_id).await.unwrap().state(), TicketState::Cancelled);
    assert_eq!(s.reserved(&consumer_id).await, before);
}

#[tokio::test]
async fn a_disabled_account_rejects_the_order() {
    let mut s = system().await;
    let consumer_id = s.consumer().await;
    let restaurant_id = s.restaurant(&consumer_id).await;
    s.set_account(&consumer_id, false).await;

    let order_id = s.place(&consumer_id, &restaurant_id, 1).await;
    let order = s.outcome(&order_id).await;

    assert_eq!(order.state(), OrderState::Rejected);
    assert!(order.rejection_reason.contains("is disabled"), "{}", order.rejection_reason);
    assert_eq!(s.ticket(&order_id).await.unwrap().state(), TicketState::Cancelled);
}

#[tokio::test]
async fn cancelling_releases_the_reservation_until_the_kitchen_starts_preparing() {
    let mut s = system().await;
    let consumer_id = s.consumer().await;
    let restaurant_id = s.restaurant(&consumer_id).await;
    let baseline = s.reserved(&consumer_id).await.unwrap().minor_units;

    let cancelled = s.place(&consumer_id, &restaurant_id, 1).await;
    s.outcome(&cancelled).await;
    s.orders.cancel_order(order::CancelOrderRequest { order_id: cancelled.clone() }).await.unwrap();
    assert_eq!(s.outcome(&cancelled).await.state(), OrderState::Cancelled);
    assert_eq!(s.ticket(&cancelled).await.unwrap().state(), TicketState::Cancelled);
    assert_eq!(s.reserved(&consumer_id).await, money(baseline));

    let preparing = s.place(&consumer_id, &restaurant_id, 1).await;
    s.outcome(&preparing).await;
    let ticket_id = s.ticket(&preparing).await.unwrap().ticket_id;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let ready_by = Some(prost_types::Timestamp { seconds: now + 1800, nanos: 0 });
    s.kitchen.accept_ticket(kitchen::AcceptTicketRequest { ticket_id: ticket_id.clone(), ready_by }).await.unwrap();
    s.kitchen.prepare_ticket(kitchen::TicketRequest { ticket_id }).await.unwrap();
    s.orders.cancel_order(order::CancelOrderRequest { order_id: preparing.clone() }).await.unwrap();

    assert_eq!(s.outcome(&preparing).await.state(), OrderState::Approved);
    assert_eq!(s.ticket(&preparing).await.unwrap().state(), TicketState::Preparing);
    assert_eq!(s.reserved(&consumer_id).await, money(baseline + 1250));
    let sagas = s.sagas(&preparing).await;
    let cancel = sagas.iter().find(|saga| saga.saga_type == "CancelOrderSaga").unwrap();
    assert_eq!(cancel.state(), SagaState::Compensated);
    assert_eq!(cancel.failure_reason, "begin cancel ticket refused: cannot cancel a ticket that is PREPARING");
}

#[tokio::test]
async fn a_revision_is_applied_within_the_credit_limit_and_undone_over_it() {
    let mut s = system().await;
    let consumer_id = s.consumer().await;
    let restaurant_id = s.restaurant(&consumer_id).await;
    let baseline = s.reserved(&consumer_id).await.unwrap().minor_units;
    let order_id = s.place(&consumer_id, &restaurant_id, 2).await;
    s.outcome(&order_id).await;

    let revise = |quantity| order::ReviseOrderRequest {
        order_id: order_id.clone(),
        revised_line_items: vec![LineItemRequest { menu_item_id: "1".into(), quantity }],
    };
    s.orders.revise_order(revise(3)).await.unwrap();
    let revised = s.outcome(&order_id).await;
    assert_eq!((revised.state(), revised.order_total), (OrderState::Approved, money(3750)));
    assert_eq!(s.ticket(&order_id).await.unwrap().line_items[0].quantity, 3);
    assert_eq!(s.reserved(&consumer_id).await, money(baseline + 3750));

    // 45 x 12.50 = 562.50 > 500.00: refused, and everything keeps the revision before it.
    s.orders.revise_order(revise(45)).await.unwrap();
    let kept = s.outcome(&order_id).await;
    assert_eq!((kept.state(), kept.order_total), (OrderState::Approved, money(3750)));
    let ticket = s.ticket(&order_id).await.unwrap();
    assert_eq!((ticket.state(), ticket.line_items[0].quantity), (TicketState::AwaitingAcceptance, 3));
    assert_eq!(s.reserved(&consumer_id).await, money(baseline + 3750));
}

#[tokio::test]
async fn a_saga_survives_an_orchestrator_restart_in_the_middle() {
    let mut s = system().await;
    let consumer_id = s.consumer().await;
    let restaurant_id = s.restaurant(&consumer_id).await;

    // With the Consumer Service down, the saga waits at "verify consumer" ...
    s.consumer_service.take().unwrap().stop().await.unwrap();
    let order_id = s.place(&consumer_id, &restaurant_id, 1).await;
    let running = eventually("the saga to start", Duration::from_secs(30), async || {
        let sagas = s.sagas(&order_id).await;
        sagas.first().filter(|saga| saga.current_step == "verify consumer").cloned()
    })
    .await;
    assert_eq!(running.state(), SagaState::Running);

    // ... the orchestrator goes away, the participant comes back and replies meanwhile ...
    s.orchestrator.take().unwrap().stop().await.unwrap();
    let replies_before = s.world.messages("ftgo.reply.orchestrator.>", 0, Duration::ZERO).await.unwrap().len();
    s.consumer_service = Some(start_consumer_service(&s.consumer_config).await);
    let replies =
        s.world.messages("ftgo.reply.orchestrator.>", replies_before + 1, Duration::from_secs(15)).await.unwrap();
    assert_eq!(replies.len(), replies_before + 1, "the Consumer Service answered while the orchestrator was down");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.order(&order_id).await.state(), OrderState::ApprovalPending);

    // ... and a new orchestrator picks the saga up where it was.
    s.orchestrator = Some(start_orchestrator(&s.orchestrator_config, s.deadlines).await);
    assert_eq!(s.outcome(&order_id).await.state(), OrderState::Approved);
    assert_eq!(s.sagas(&order_id).await[0].state(), SagaState::Succeeded);
}

#[tokio::test]
async fn many_concurrent_orders_for_one_account_reserve_exactly_what_was_approved() {
    let mut s = system().await;
    let consumer_id = s.consumer().await;
    let restaurant_id = s.restaurant(&consumer_id).await;
    let before = s.reserved(&consumer_id).await.unwrap().minor_units;

    // 24 orders of 37.50 at once: 900.00 against a 500.00 limit, so some must be refused, and the
    // sagas of all of them run side by side, their messages handled concurrently.
    let placed = futures::future::join_all((0..24).map(|_| {
        let mut orders = s.orders.clone();
        let request = order::CreateOrderRequest {
            consumer_id: consumer_id.clone(),
            restaurant_id: restaurant_id.clone(),
            delivery_address: ftgo_platform::testing::address(),
            line_items: vec![LineItemRequest { menu_item_id: "1".into(), quantity: 3 }],
        };
        async move { orders.create_order(request).await.unwrap().into_inner().order_id }
    }))
    .await;
    let mut approved = 0;
    for order_id in &placed {
        match s.outcome(order_id).await.state() {
            OrderState::Approved => approved += 1,
            OrderState::Rejected => {}
            other => panic!("order {order_id} ended {other:?}"),
        }
    }
    let reserved = s.reserved(&consumer_id).await.unwrap().minor_units;
    assert_eq!(reserved, before + approved * 3750, "exactly the approved orders are reserved");
    assert!(reserved <= 50_000, "never over the credit limit: {reserved}");
    assert!(approved > 0 && approved < 24, "some approved, some refused: {approved}");
}

#[tokio::test]
async fn a_participant_that_never_answers_gets_the_step_resent_then_undone_and_a_late_reply_resumes_the_saga() {
    let deadlines = StepDeadlines { reply_timeout: Duration::from_secs(2), attempts: 2 };
    let mut s = system_with(deadlines).await;
    let consumer_id = s.consumer().await;
    let restaurant_id = s.restaurant(&consumer_id).await;
    let before = s.reserved(&consumer_id).await;

    // The Accounting Service is down: "authorize card" is sent twice, then given up on. The card
    // may have been authorized without the reply arriving, so the saga starts undoing with the
    // reversal, which goes unanswered too: the saga fails there, waiting.
    s.accounting_service.take().unwrap().stop().await.unwrap();
    let order_id = s.place(&consumer_id, &restaurant_id, 1).await;
    let failed = eventually("the saga to give up", Duration::from_secs(60), async || {
        s.sagas(&order_id).await.into_iter().next().filter(|saga| saga.state() == SagaState::Failed)
    })
    .await;
    assert!(failed.compensating);
    assert_eq!(failed.current_step, "authorize card");
    assert_eq!(failed.failure_reason, "authorize card got no reply after 2 attempts");
    let steps: Vec<_> =
        failed.steps.iter().skip(3).map(|st| (st.name.as_str(), st.status.as_str(), st.detail.as_str())).collect();
    assert_eq!(
        steps,
        [
            ("authorize card", "resent", "no reply; sent again (attempt 2 of 2)"),
            ("authorize card", "timed out", "authorize card got no reply after 2 attempts"),
            ("authorize card", "resent", "no reply; sent again (attempt 2 of 2)"),
            ("authorize card", "timed out", "authorize card got no reply after 2 attempts"),
        ]
    );
    assert_eq!(s.order(&order_id).await.state(), OrderState::ApprovalPending);

    // The Accounting Service comes back and works through its queue in order: both copies of the
    // authorization, then both reversals. The first late reply to the reversal resumes the saga,
    // which cancels the ticket and rejects the order; nothing stays reserved.
    s.accounting_service = Some(start_accounting_service(&s.accounting_config).await);
    s.accounts = AccountingServiceClient::connect(url(s.accounting_service.as_ref().unwrap())).await.unwrap();
    let order = s.outcome(&order_id).await;
    assert_eq!(order.state(), OrderState::Rejected);
    assert_eq!(order.rejection_reason, "authorize card got no reply after 2 attempts");
    let saga = s.sagas(&order_id).await.remove(0);
    assert_eq!(saga.state(), SagaState::Compensated);
    let undone: Vec<_> = saga.steps.iter().skip(7).map(|st| (st.name.as_str(), st.status.as_str())).collect();
    assert_eq!(
        undone,
        [("authorize card", "compensated"), ("create ticket", "compensated"), ("create order", "compensated")]
    );
    assert_eq!(s.ticket(&order_id).await.unwrap().state(), TicketState::Cancelled);
    assert_eq!(s.reserved(&consumer_id).await, before);
}

#[tokio::test]
async fn a_command_whose_handler_always_fails_leaves_the_saga_failed_until_its_dead_letter_is_replayed() {
    let deadlines = StepDeadlines { reply_timeout: Duration::from_secs(2), attempts: 2 };
    let mut s = system_with(deadlines).await;
    let consumer_id = s.consumer().await;
    let restaurant_id = s.restaurant(&consumer_id).await;

    // The Order Service cannot approve any order: its handler fails on every delivery, so each
    // ApproveOrder is dead-lettered. "approve order" comes after the pivot, so the saga may not
    // undo anything: it sends the command twice, then fails and waits.
    let orders_db = sqlx::PgPool::connect(&s.order_config.database.url).await.unwrap();
    sqlx::query("ALTER TABLE orders ADD CONSTRAINT no_approvals CHECK (state <> 'APPROVED') NOT VALID")
        .execute(&orders_db)
        .await
        .unwrap();
    let order_id = s.place(&consumer_id, &restaurant_id, 1).await;
    let failed = eventually("the saga to give up", Duration::from_secs(60), async || {
        s.sagas(&order_id).await.into_iter().next().filter(|saga| saga.state() == SagaState::Failed)
    })
    .await;
    assert_eq!((failed.current_step.as_str(), failed.compensating), ("approve order", false));
    assert_eq!(failed.failure_reason, "approve order got no reply after 2 attempts");

    // Both copies end up in the Order Service's dead letters, listed by its admin API.
    let mut admin = DeadLetterServiceClient::connect(url(&s.order_service)).await.unwrap();
    let dead = eventually("both ApproveOrder copies to be dead-lettered", Duration::from_secs(60), async || {
        let request = admin::ListDeadLettersRequest { limit: 10, waiting_only: true };
        let dead = admin.list_dead_letters(request).await.unwrap().into_inner().dead_letters;
        (dead.len() == 2).then_some(dead)
    })
    .await;
    for letter in &dead {
        assert_eq!(letter.message_type, order::ApproveOrder::full_name());
        assert_eq!(
            (letter.consumer.as_str(), letter.saga_id.as_str()),
            ("order-service-commands", failed.saga_id.as_str())
        );
        assert!(letter.error.contains("no_approvals"), "{}", letter.error);
    }

    // While the cause is there, a replay fails and says why.
    let refused = admin.replay_dead_letter(admin::ReplayDeadLetterRequest { id: dead[0].id }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert_eq!(s.order(&order_id).await.state(), OrderState::ApprovalPending);

    // Fixed, one replay approves the order, and its reply ends the failed saga.
    sqlx::query("ALTER TABLE orders DROP CONSTRAINT no_approvals").execute(&orders_db).await.unwrap();
    let keyed = |id| {
        let mut request = tonic::Request::new(admin::ReplayDeadLetterRequest { id });
        request.metadata_mut().insert(ftgo_platform::idempotency::KEY_METADATA, "replay-1".parse().unwrap());
        request
    };
    let replayed = admin.replay_dead_letter(keyed(dead[0].id)).await.unwrap().into_inner();
    assert!(replayed.replayed_at.is_some());
    // Sent again with its key (its answer lost, say): the first answer, not a second replay.
    assert_eq!(admin.replay_dead_letter(keyed(dead[0].id)).await.unwrap().into_inner(), replayed);
    // Without the key, a replay of a replayed dead letter is refused.
    let again = admin.replay_dead_letter(admin::ReplayDeadLetterRequest { id: dead[0].id }).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    assert_eq!(s.outcome(&order_id).await.state(), OrderState::Approved);
    let saga = eventually("the saga to end", Duration::from_secs(30), async || {
        s.sagas(&order_id).await.into_iter().next().filter(|saga| saga.state() == SagaState::Succeeded)
    })
    .await;
    assert_eq!(saga.failure_reason, "");
    // The other copy changes nothing: the order is approved already, and the saga is over.
    admin.replay_dead_letter(admin::ReplayDeadLetterRequest { id: dead[1].id }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.sagas(&order_id).await[0].state(), SagaState::Succeeded);
    assert_eq!(s.order(&order_id).await.state(), OrderState::Approved);
}
