//! The Consumer Service as its clients see it: gRPC in front, events and saga replies on JetStream,
//! against real Postgres and NATS.

use std::time::Duration;

use ftgo_consumer_service::SERVICE;
use ftgo_platform::{runtime::Running, testing::ServiceWorld};
use ftgo_proto::{
    common::v1::{Money, PersonName},
    consumer::v1::{self as api, consumer_service_client::ConsumerServiceClient},
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

struct App {
    world: ServiceWorld,
    running: Running,
    client: ConsumerServiceClient<Channel>,
}

async fn spawn_app() -> App {
    let world = ServiceWorld::start().await.unwrap();
    let serving = world.serve(&SERVICE).await.unwrap();
    App { world, running: serving.running, client: ConsumerServiceClient::new(serving.channel) }
}

fn name(first: &str, last: &str) -> Option<PersonName> {
    Some(PersonName { first_name: first.into(), last_name: last.into() })
}

async fn register(app: &mut App, first: &str, last: &str) -> String {
    let request = api::CreateConsumerRequest { name: name(first, last) };
    app.client.create_consumer(request).await.unwrap().into_inner().consumer_id
}

#[tokio::test]
async fn a_registered_consumer_can_be_read_back_and_is_announced_by_an_event() {
    let mut app = spawn_app().await;
    let id = register(&mut app, " Ada ", "Lovelace").await;

    let consumer =
        app.client.get_consumer(api::GetConsumerRequest { consumer_id: id.clone() }).await.unwrap().into_inner();
    assert_eq!(consumer.consumer_id, id);
    assert_eq!(consumer.name, name("Ada", "Lovelace"), "names are stored trimmed");

    let events = app.world.messages("ftgo.event.consumer.>", 1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(events.len(), 1);
    let event: api::ConsumerCreated = events[0].decode();
    assert_eq!(event.consumer.unwrap().consumer_id, id);
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_stores_nothing() {
    let mut app = spawn_app().await;
    let cases = [
        (api::CreateConsumerRequest { name: None }, "name.firstName is required"),
        (api::CreateConsumerRequest { name: name("Ada", "  ") }, "name.lastName is required"),
        (api::CreateConsumerRequest { name: name(&"x".repeat(101), "L") }, "longer than 100 characters"),
        (api::CreateConsumerRequest { name: name("Ada\u{7}", "L") }, "control characters"),
    ];
    for (request, message) in cases {
        let status = app.client.create_consumer(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(message), "{:?} should mention {message:?}", status.message());
    }

    let status = app.client.get_consumer(api::GetConsumerRequest { consumer_id: "nope".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let unknown = uuid::Uuid::new_v4().to_string();
    let status = app.client.get_consumer(api::GetConsumerRequest { consumer_id: unknown.clone() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains(&unknown));

    let events = app.world.messages("ftgo.event.consumer.>", 1, Duration::from_millis(500)).await.unwrap();
    assert!(events.is_empty(), "no consumer was registered, so no event: {events:?}");
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn verify_consumer_replies_verified_for_a_known_consumer_and_failed_for_an_unknown_one() {
    let mut app = spawn_app().await;
    let id = register(&mut app, "Ada", "Lovelace").await;
    let total = Some(Money { minor_units: 1250 });
    let reply_to = "ftgo.reply.orchestrator.consumer";

    let known = api::VerifyConsumer { consumer_id: id.clone(), order_id: "o-1".into(), order_total: total };
    app.world.send_command("ftgo.command.consumer.VerifyConsumer", &known, "saga-1", reply_to).await.unwrap();
    let unknown = api::VerifyConsumer {
        consumer_id: uuid::Uuid::new_v4().to_string(),
        order_id: "o-2".into(),
        order_total: total,
    };
    app.world.send_command("ftgo.command.consumer.VerifyConsumer", &unknown, "saga-2", reply_to).await.unwrap();
    let garbage = api::VerifyConsumer {
        consumer_id: "'; DROP TABLE consumers; --".into(),
        order_id: "o-3".into(),
        order_total: total,
    };
    app.world.send_command("ftgo.command.consumer.VerifyConsumer", &garbage, "saga-3", reply_to).await.unwrap();

    let replies = app.world.messages(reply_to, 3, Duration::from_secs(10)).await.unwrap();
    assert_eq!(replies.len(), 3, "{replies:?}");
    let by_saga = |saga: &str| replies.iter().find(|r| r.saga_id.as_deref() == Some(saga)).unwrap();
    let verified: api::ConsumerVerified = by_saga("saga-1").decode();
    assert_eq!(verified.consumer_id, id);
    let failed: api::ConsumerVerificationFailed = by_saga("saga-2").decode();
    assert_eq!(failed.reason, format!("consumer {} does not exist", unknown.consumer_id));
    let failed: api::ConsumerVerificationFailed = by_saga("saga-3").decode();
    assert!(failed.reason.contains("does not exist"));

    // The table survived the hostile id, and the consumer is still there.
    app.client.get_consumer(api::GetConsumerRequest { consumer_id: id }).await.unwrap();
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn the_service_reports_serving_on_grpc_health() {
    let app = spawn_app().await;
    let channel = Channel::from_shared(format!("http://{}", app.running.addr)).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "ftgo.consumer.v1.ConsumerService"] {
        let response = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
    app.running.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_lists_only_what_the_service_serves() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn_app().await;
    let channel = Channel::from_shared(format!("http://{}", app.running.addr)).unwrap().connect().await.unwrap();
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([list]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("an answer").message_response;
    let Some(MessageResponse::ListServicesResponse(listed)) = answer else { panic!("not a list: {answer:?}") };
    let mut names: Vec<String> = listed.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ftgo.admin.v1.DeadLetterService",
            "ftgo.consumer.v1.ConsumerService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection"
        ]
    );
    app.running.stop().await.unwrap();
}
