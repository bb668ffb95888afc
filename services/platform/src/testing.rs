//! Test support for service crates (feature `testing`): a world with real Postgres and NATS
//! JetStream, a service configuration pointing at them, and helpers to send and receive messages
//! as another service would.

use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer::pull};
use ftgo_testenv::{Nats, Postgres};
use futures::StreamExt;
use prost::{Message, Name};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{
    config::{CommonConfig, ServiceConfig},
    messaging::{
        MESSAGE_TYPE_HEADER, MSG_ID_HEADER, OutgoingMessage,
        saga::{REPLY_TO_HEADER, SAGA_ID_HEADER},
        streams,
    },
    runtime::Running,
    service::Service,
};

/// Real infrastructure for one test.
pub struct ServiceWorld {
    pub postgres: Postgres,
    pub nats: Nats,
    pub js: jetstream::Context,
    pub stream: jetstream::stream::Stream,
}

/// A service that [`ServiceWorld::serve`] started.
pub struct Serving {
    pub running: Running,
    /// To its gRPC server.
    pub channel: Channel,
    pub database_url: String,
}

/// A message read back from JetStream.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub subject: String,
    pub message_type: String,
    pub saga_id: Option<String>,
    pub payload: bytes::Bytes,
}

impl ReceivedMessage {
    pub fn decode<M: Message + Name + Default>(&self) -> M {
        assert_eq!(self.message_type, M::full_name(), "unexpected message type on {}", self.subject);
        M::decode(self.payload.as_ref()).expect("decodable payload")
    }
}

impl ServiceWorld {
    pub async fn start() -> Result<Self> {
        ftgo_testenv::init_test_tracing();
        let (postgres, nats) = tokio::try_join!(Postgres::start(), Nats::start())?;
        let js = jetstream::new(async_nats::connect(nats.url()).await?);
        let stream = streams::ensure_stream(&js).await?;
        Ok(Self { postgres, nats, js, stream })
    }

    /// A configuration for a service with a fresh database, on a free gRPC port.
    pub async fn config(&self, database: &str) -> Result<CommonConfig> {
        let db = self.postgres.create_database(database).await?;
        let mut config = CommonConfig::local(database);
        config.database.url = db.url;
        config.nats.url = self.nats.url();
        Ok(config)
    }

    /// Starts `service` with a fresh database on this world's Postgres and NATS, and connects to
    /// its gRPC server.
    pub async fn serve(&self, service: &Service) -> Result<Serving> {
        let database = service.name.database().context("a service without a database")?;
        let common = self.config(database).await?;
        let database_url = common.database.url.clone();
        let running = service.start(ServiceConfig { common }, CancellationToken::new()).await?;
        let channel = Channel::from_shared(format!("http://{}", running.addr))?.connect().await?;
        Ok(Serving { running, channel, database_url })
    }

    /// Publishes a saga command as the orchestrator would: with a message id, its type, the
    /// saga id and the subject to reply to.
    pub async fn send_command<M: Message + Name>(
        &self,
        subject: &str,
        command: &M,
        saga_id: &str,
        reply_to: &str,
    ) -> Result<OutgoingMessage> {
        let message = OutgoingMessage::protobuf(subject, command)
            .with_header(SAGA_ID_HEADER, saga_id)
            .with_header(REPLY_TO_HEADER, reply_to);
        self.publish(&message).await?;
        Ok(message)
    }

    /// Sends a saga command as the orchestrator would and waits (up to 15 s) for the participant's
    /// reply, which goes to a reply subject of this saga's own.
    pub async fn command_reply<M: Message + Name>(
        &self,
        subject: &str,
        command: &M,
        saga_id: &str,
    ) -> Result<ReceivedMessage> {
        let reply_to = format!("ftgo.reply.test.{saga_id}");
        self.send_command(subject, command, saga_id, &reply_to).await?;
        let mut replies = self.messages(&reply_to, 1, Duration::from_secs(15)).await?;
        anyhow::ensure!(!replies.is_empty(), "no reply to {} for saga {saga_id}", M::full_name());
        Ok(replies.remove(0))
    }

    /// Publishes `message` directly (bypassing any outbox), with its id as `Nats-Msg-Id`.
    pub async fn publish(&self, message: &OutgoingMessage) -> Result<()> {
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in &message.headers {
            headers.insert(name.as_str(), value.as_str());
        }
        headers.insert(MSG_ID_HEADER, message.id.to_string().as_str());
        headers.insert(MESSAGE_TYPE_HEADER, message.message_type.as_str());
        self.js
            .publish_with_headers(message.subject.clone(), headers, message.payload.clone().into())
            .await?
            .await
            .context("JetStream did not acknowledge")?;
        Ok(())
    }

    /// Every message stored so far on subjects matching `filter`, waiting up to `timeout` for at
    /// least `at_least` of them.
    pub async fn messages(&self, filter: &str, at_least: usize, timeout: Duration) -> Result<Vec<ReceivedMessage>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = self.read_all(filter).await?;
            if found.len() >= at_least || tokio::time::Instant::now() >= deadline {
                return Ok(found);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn read_all(&self, filter: &str) -> Result<Vec<ReceivedMessage>> {
        let consumer = self
            .stream
            .create_consumer(pull::Config { filter_subject: filter.to_owned(), ..Default::default() })
            .await?;
        let mut found = Vec::new();
        let mut batch = consumer.fetch().max_messages(1000).expires(Duration::from_millis(300)).messages().await?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
            let headers = message.headers.clone().unwrap_or_default();
            found.push(ReceivedMessage {
                subject: message.subject.to_string(),
                message_type: headers.get(MESSAGE_TYPE_HEADER).map(|v| v.to_string()).unwrap_or_default(),
                saga_id: headers.get(SAGA_ID_HEADER).map(|v| v.to_string()),
                payload: message.payload.clone(),
            });
        }
        Ok(found)
    }
}

/// A valid address, for requests that need one.
pub fn address() -> Option<ftgo_proto::common::v1::Address> {
    Some(ftgo_proto::common::v1::Address {
        street1: "1 Shattuck Ave".into(),
        street2: String::new(),
        city: "Berkeley".into(),
        state: "CA".into(),
        zip: "94704".into(),
    })
}
