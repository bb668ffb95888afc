//! The Accounting Service against real Postgres and NATS: accounts opened by events, card
//! authorizations answered as saga replies, the account API over gRPC.

use std::time::Duration;

use ftgo_accounting_service::SERVICE;
use ftgo_platform::{
    messaging::OutgoingMessage,
    runtime::Running,
    testing::{ReceivedMessage, ServiceWorld},
};
use ftgo_proto::{
    accounting::v1::{self as api, accounting_service_client::AccountingServiceClient},
    common::v1::{Money, PersonName},
    consumer::v1 as consumer,
};
use tonic::{Code, transport::Channel};

/// Orders the saga names (any UUIDs: the Accounting Service never looks them up).
const O1: &str = "00000000-0000-4000-8000-000000000001";
const O2: &str = "00000000-0000-4000-8000-000000000002";

struct App {
    world: ServiceWorld,
    running: Running,
    client: AccountingServiceClient<Channel>,
}

async fn spawn_app() -> App {
    let world = ServiceWorld::start().await.unwrap();
    let serving = world.serve(&SERVICE).await.unwrap();
    App { world, running: serving.running, client: AccountingServiceClient::new(serving.channel) }
}

fn money(minor_units: i64) -> Option<Money> {
    Some(Money { minor_units })
}

const REPLIES: &str = "ftgo.reply.orchestrator.accounting";

impl App {
    async fn announce_consumer(&self) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let event = consumer::ConsumerCreated {
            consumer: Some(consumer::Consumer {
                consumer_id: id.clone(),
                name: Some(PersonName { first_name: "Ada".into(), last_name: "Lovelace".into() }),
            }),
        };
        self.world.publish(&OutgoingMessage::protobuf("ftgo.event.consumer.ConsumerCreated", &event)).await.unwrap();
        id
    }

    async fn account(&mut self, consumer_id: &str) -> Result<api::Account, tonic::Status> {
        let request = api::GetAccountRequest { consumer_id: consumer_id.into() };
        self.client.get_account(request).await.map(|r| r.into_inner())
    }

    async fn open_account(&mut self) -> String {
        let id = self.announce_consumer().await;
        for _ in 0..100 {
            if self.account(&id).await.is_ok() {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the account of {id} was not opened");
    }

    /// Sends `command` as saga `saga` and waits for its reply.
    async fn command<M: prost::Message + prost::Name>(
        &self,
        subject: &str,
        command: &M,
        saga: &str,
    ) -> ReceivedMessage {
        self.world.send_command(subject, command, saga, REPLIES).await.unwrap();
        for _ in 0..100 {
            let replies = self.world.messages(REPLIES, 1, Duration::from_millis(100)).await.unwrap();
            if let Some(reply) = replies.into_iter().find(|r| r.saga_id.as_deref() == Some(saga)) {
                return reply;
            }
        }
        panic!("no reply for saga {saga}");
    }

    async fn authorize(&self, consumer_id: &str, order_id: &str, total: i64) -> ReceivedMessage {
        let command = api::AuthorizeCard {
            consumer_id: consumer_id.into(),
            order_id: order_id.into(),
            order_total: money(total),
        };
        self.command("ftgo.command.accounting.AuthorizeCard", &command, &format!("authorize-{order_id}")).await
    }
}

#[tokio::test]
async fn a_new_consumer_gets_an_enabled_account_with_a_limit_of_500() {
    let mut app = spawn_app().await;
    let id = app.open_account().await;
    let account = app.account(&id).await.unwrap();
    assert_eq!(account.credit_limit, money(50_000));
    assert_eq!(account.reserved, money(0));
    assert!(account.enabled);
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn authorizations_reserve_up_to_the_credit_limit_and_are_refused_beyond_it() {
    let mut app = spawn_app().await;
    let id = app.open_account().await;

    let first = app.authorize(&id, O1, 30_000).await;
    assert_eq!(first.decode::<api::CardAuthorized>().order_id, O1);
    let refused = app.authorize(&id, O2, 25_000).await;
    let failure: api::CardAuthorizationFailed = refused.decode();
    assert_eq!(failure.reason, "credit limit exceeded: 300.00 reserved + 250.00 requested > 500.00 limit");

    assert_eq!(app.account(&id).await.unwrap().reserved, money(30_000));
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_disabled_account_refuses_every_authorization() {
    let mut app = spawn_app().await;
    let id = app.open_account().await;
    let update = api::UpdateAccountRequest { consumer_id: id.clone(), credit_limit: None, enabled: Some(false) };
    assert!(!app.client.update_account(update).await.unwrap().into_inner().enabled);

    let failure: api::CardAuthorizationFailed = app.authorize(&id, O1, 100).await.decode();
    assert!(failure.reason.contains("is disabled"), "{}", failure.reason);
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn reversing_releases_the_reservation_and_is_harmless_when_repeated() {
    let mut app = spawn_app().await;
    let id = app.open_account().await;
    app.authorize(&id, O1, 10_000).await.decode::<api::CardAuthorized>();

    let reverse = api::ReverseAuthorization { consumer_id: id.clone(), order_id: O1.into() };
    for saga in ["reverse-1", "reverse-2"] {
        let reply = app.command("ftgo.command.accounting.ReverseAuthorization", &reverse, saga).await;
        reply.decode::<api::CardAuthorized>();
    }
    assert_eq!(app.account(&id).await.unwrap().reserved, money(0));
    let authorization =
        app.client.get_authorization(api::GetAuthorizationRequest { order_id: O1.into() }).await.unwrap().into_inner();
    assert_eq!(authorization.state(), api::AuthorizationState::Reversed);
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_revision_is_authorized_within_the_limit_and_refused_over_it_keeping_the_old_amount() {
    let mut app = spawn_app().await;
    let id = app.open_account().await;
    app.authorize(&id, O1, 40_000).await.decode::<api::CardAuthorized>();

    let revise =
        |total| api::ReviseAuthorization { consumer_id: id.clone(), order_id: O1.into(), order_total: money(total) };
    app.command("ftgo.command.accounting.ReviseAuthorization", &revise(50_000), "revise-1")
        .await
        .decode::<api::CardAuthorized>();
    let failure: api::CardAuthorizationFailed =
        app.command("ftgo.command.accounting.ReviseAuthorization", &revise(60_000), "revise-2").await.decode();
    assert!(failure.reason.starts_with("credit limit exceeded"), "{}", failure.reason);

    assert_eq!(app.account(&id).await.unwrap().reserved, money(50_000));
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn an_authorization_that_arrives_before_the_account_waits_for_it() {
    let app = spawn_app().await;
    let id = uuid::Uuid::new_v4().to_string();
    let command = api::AuthorizeCard { consumer_id: id.clone(), order_id: O1.into(), order_total: money(100) };
    app.world.send_command("ftgo.command.accounting.AuthorizeCard", &command, "early", REPLIES).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let event = consumer::ConsumerCreated { consumer: Some(consumer::Consumer { consumer_id: id, name: None }) };
    app.world.publish(&OutgoingMessage::protobuf("ftgo.event.consumer.ConsumerCreated", &event)).await.unwrap();

    let replies = app.world.messages(REPLIES, 1, Duration::from_secs(15)).await.unwrap();
    assert_eq!(replies.len(), 1);
    replies[0].decode::<api::CardAuthorized>();
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let mut app = spawn_app().await;
    let status = app.account("not-a-uuid").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(app.account(&unknown).await.unwrap_err().code(), Code::NotFound);

    let id = app.open_account().await;
    let negative = api::UpdateAccountRequest { consumer_id: id.clone(), credit_limit: money(-1), enabled: None };
    let status = app.client.update_account(negative).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "creditLimit must not be negative");
    assert_eq!(app.account(&id).await.unwrap().credit_limit, money(50_000), "nothing changed");
    app.running.stop().await.unwrap();
}
