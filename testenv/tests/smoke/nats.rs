use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use ftgo_testenv::Nats;
use futures::StreamExt;

#[tokio::test]
async fn jetstream_acknowledges_a_publish_and_delivers_it_to_a_consumer() {
    ftgo_testenv::init_test_tracing();
    let nats = Nats::start().await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);

    let stream = js
        .create_stream(stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let ack = js.publish("orders.created", "order-1".into()).await.unwrap().await.unwrap();
    assert_eq!(ack.stream, "ORDERS");
    assert_eq!(ack.sequence, 1);

    // The same Nats-Msg-Id inside the duplicate window is stored once: the outbox relay relies on it.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "msg-42");
    let first = js.publish_with_headers("orders.approved", headers.clone(), "a".into()).await.unwrap().await.unwrap();
    let again = js.publish_with_headers("orders.approved", headers, "a".into()).await.unwrap().await.unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!(again.sequence, first.sequence);

    let consumer = stream
        .create_consumer(pull::Config { durable_name: Some("kitchen".into()), ..Default::default() })
        .await
        .unwrap();
    let mut messages = consumer.fetch().max_messages(10).expires(Duration::from_secs(2)).messages().await.unwrap();
    let mut payloads = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.unwrap();
        payloads.push(String::from_utf8(message.payload.to_vec()).unwrap());
        message.ack().await.unwrap();
    }
    assert_eq!(payloads, ["order-1", "a"]);
}
