//! The Accounting Service as a real process, killed with SIGKILL at arbitrary instants while it
//! authorizes cards, then restarted: every authorization takes effect exactly once and is
//! answered.
//!
//! A kill can land before a handler's transaction commits (the command is redelivered and
//! handled), or after it commits but before the reply is relayed or the command acknowledged (the
//! reply waits in the outbox, the redelivered command is recognised as processed). The test does
//! not aim at one instant; it kills several times across a burst of commands and checks the
//! invariant that must hold whatever the instants were.

use std::{process::Command, time::Duration};

use ftgo_platform::{messaging::OutgoingMessage, testing::ServiceWorld};
use ftgo_proto::{
    accounting::v1::{self as api, accounting_service_client::AccountingServiceClient},
    common::v1::{Money, PersonName},
    consumer::v1 as consumer,
};
use ftgo_testenv::process::{ServerProcess, free_port};

const REPLIES: &str = "ftgo.reply.orchestrator.crash-test";
const ORDERS: usize = 40;

fn spawn_service(
    world_config: &ftgo_platform::config::CommonConfig,
    port: u16,
    log: &std::path::Path,
) -> ServerProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_accounting-service"));
    cmd.env("FTGO_GRPC__LISTEN", format!("127.0.0.1:{port}"))
        .env("FTGO_DATABASE__URL", &world_config.database.url)
        .env("FTGO_NATS__URL", &world_config.nats.url)
        .env("FTGO_ENVIRONMENT", "local");
    // SIGKILL as the stop signal: no clean shutdown, ever.
    ServerProcess::spawn("accounting-service", cmd, log, libc::SIGKILL).unwrap()
}

#[tokio::test]
async fn killed_at_arbitrary_instants_the_service_authorizes_each_card_exactly_once() {
    let world = ServiceWorld::start().await.unwrap();
    let config = world.config("accounting").await.unwrap();
    let port = free_port().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("accounting.log");

    let consumer_id = uuid::Uuid::new_v4().to_string();
    let created = consumer::ConsumerCreated {
        consumer: Some(consumer::Consumer {
            consumer_id: consumer_id.clone(),
            name: Some(PersonName { first_name: "Ada".into(), last_name: "Lovelace".into() }),
        }),
    };
    world.publish(&OutgoingMessage::protobuf("ftgo.event.consumer.ConsumerCreated", &created)).await.unwrap();
    let orders: Vec<String> = (0..ORDERS).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    for order_id in &orders {
        let command = api::AuthorizeCard {
            consumer_id: consumer_id.clone(),
            order_id: order_id.clone(),
            order_total: Some(Money { minor_units: 100 }),
        };
        let saga = format!("saga-{order_id}");
        world.send_command("ftgo.command.accounting.AuthorizeCard", &command, &saga, REPLIES).await.unwrap();
    }

    // Three lives cut short in the middle of the burst (once 1, 12 and 25 messages are processed),
    // then one that finishes.
    let db = sqlx::PgPool::connect(&config.database.url).await.unwrap();
    for kill_after in [1_i64, 12, 25] {
        let mut service = spawn_service(&config, port, &log);
        for _ in 0..2000 {
            let processed: Option<i64> =
                sqlx::query_scalar("SELECT count(*) FROM messaging.processed_messages").fetch_one(&db).await.ok();
            if processed.is_some_and(|n| n >= kill_after) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        service.stop();
    }
    let _survivor = spawn_service(&config, port, &log);

    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) = AccountingServiceClient::connect(format!("http://127.0.0.1:{port}")).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = client.expect("the restarted service answers");

    // Every command answered; duplicates of a reply (if any) carry the same outcome.
    let replies = world.messages(REPLIES, ORDERS, Duration::from_secs(60)).await.unwrap();
    let mut answered: Vec<String> = replies.iter().filter_map(|r| r.saga_id.clone()).collect();
    answered.sort();
    answered.dedup();
    assert_eq!(answered.len(), ORDERS, "every command gets a reply");
    assert!(replies.iter().all(|r| r.message_type == "ftgo.accounting.v1.CardAuthorized"), "{replies:?}");

    // Exactly one effect per command: 40 x 1.00 reserved, one authorization per order.
    let account =
        client.get_account(api::GetAccountRequest { consumer_id: consumer_id.clone() }).await.unwrap().into_inner();
    assert_eq!(account.reserved, Some(Money { minor_units: 100 * ORDERS as i64 }));
    for order_id in &orders {
        let authorization = client
            .get_authorization(api::GetAuthorizationRequest { order_id: order_id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(authorization.amount, Some(Money { minor_units: 100 }));
    }
}
