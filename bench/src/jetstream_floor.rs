//! The JetStream floor: what the Create Order saga's 11 messages cost NATS with nothing else in
//! the way.
//!
//! Each client plays the saga's message chain on the system's own NATS server, in a stream of its
//! own (`BENCH_FLOOR`, file storage like `FTGO`): for each of the 11 messages, in order, it
//! publishes the message with the headers and payload size the services give it (a `Nats-Msg-Id`
//! for de-duplication, the message type, the W3C `traceparent`, and a command's or reply's saga
//! headers) and waits for JetStream's acknowledgement, as a relay does; then takes it from a
//! durable pull consumer of its own and acknowledges it, as an inbox does. One floor saga is that
//! chain; its latency is the whole chain's.
//!
//! Not in it: Postgres, gRPC, HTTP, the relays' batching and the services' work. Next to the
//! Postgres-only floor it says what part of the system's CPU per saga no service code can remove
//! while a saga is 11 JetStream messages.

use anyhow::{Context, Result};
use async_nats::{
    HeaderMap,
    jetstream::{self, consumer::pull, stream},
};
use futures::StreamExt;
use uuid::Uuid;

const STREAM: &str = "BENCH_FLOOR";

/// The saga's messages in order: whether it is a command or a reply (saga headers) or the event
/// that starts it, its type, and the size of its encoded protobuf payload (as in [`crate::floor`]).
const MESSAGES: [(Kind, &str, usize); 11] = [
    (Kind::Event, "OrderCreated", 180),
    (Kind::Command, "VerifyConsumer", 81),
    (Kind::Reply, "ConsumerVerified", 38),
    (Kind::Command, "CreateTicket", 88),
    (Kind::Reply, "TicketCreated", 38),
    (Kind::Command, "AuthorizeCard", 81),
    (Kind::Reply, "CardAuthorized", 38),
    (Kind::Command, "ConfirmCreateTicket", 38),
    (Kind::Reply, "TicketCommandSucceeded", 38),
    (Kind::Command, "ApproveOrder", 38),
    (Kind::Reply, "OrderCommandSucceeded", 38),
];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Event,
    Command,
    Reply,
}

/// The floor's stream on the system's NATS server, created afresh.
pub struct Floor {
    js: jetstream::Context,
    stream: stream::Stream,
}

pub async fn prepare(nats_url: &str) -> Result<Floor> {
    let client = async_nats::connect(nats_url).await.context("connecting to the system's NATS")?;
    let js = jetstream::new(client);
    // A stream left by an interrupted run.
    let _ = js.delete_stream(STREAM).await;
    let stream = js
        .create_stream(stream::Config {
            name: STREAM.to_owned(),
            subjects: vec!["bench.floor.>".to_owned()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: std::time::Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .context("creating the JetStream floor's stream")?;
    Ok(Floor { js, stream })
}

impl Floor {
    /// Client `n`, with its own subject and durable consumer.
    pub async fn client(&self, n: usize) -> Result<Client> {
        let subject = format!("bench.floor.{n}");
        let consumer = self
            .stream
            .create_consumer(pull::Config {
                durable_name: Some(format!("floor-{n}")),
                filter_subject: subject.clone(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating the floor's consumer {n}"))?;
        Ok(Client { js: self.js.clone(), subject, messages: consumer.messages().await? })
    }

    /// Deletes the stream and its consumers.
    pub async fn remove(self) {
        if let Err(e) = self.js.delete_stream(STREAM).await {
            eprintln!("  could not delete the {STREAM} stream: {e}");
        }
    }
}

pub struct Client {
    js: jetstream::Context,
    subject: String,
    messages: pull::Stream,
}

impl Client {
    /// The saga's 11 messages, one after the other: published and acknowledged by JetStream, then
    /// delivered and acknowledged by the consumer.
    pub async fn saga(&mut self) -> Result<()> {
        let saga = Uuid::new_v4().to_string();
        for (step, (kind, message_type, payload_bytes)) in MESSAGES.iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", Uuid::new_v4().to_string().as_str());
            headers.insert("Ftgo-Message-Type", format!("ftgo.bench.v1.{message_type}").as_str());
            let (trace, span) = (Uuid::new_v4().simple().to_string(), Uuid::new_v4().simple().to_string());
            headers.insert("traceparent", format!("00-{trace}-{}-01", &span[..16]).as_str());
            if *kind != Kind::Event {
                headers.insert("Ftgo-Saga-Id", saga.as_str());
                headers.insert("Ftgo-Saga-Step", format!("{}:f", step / 2).as_str());
            }
            if *kind == Kind::Command {
                headers.insert("Ftgo-Reply-To", "ftgo.reply.orchestrator.saga");
            }
            let payload = vec![0x2a_u8; *payload_bytes];
            self.js.publish_with_headers(self.subject.clone(), headers, payload.into()).await?.await?;
            let message = self.messages.next().await.context("the floor's consumer stopped")??;
            message.ack().await.map_err(|e| anyhow::anyhow!("acknowledging: {e}"))?;
        }
        Ok(())
    }
}
