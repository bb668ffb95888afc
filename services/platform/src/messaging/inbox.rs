//! Idempotent message consumers with bounded redelivery and dead letters.
//!
//! For each message, in **one** transaction: record `(consumer, message id)` in
//! `messaging.processed_messages`, then run the handler, whose writes (state changes, outbox
//! messages) commit together with that record. Then acknowledge the message to JetStream.
//!
//! - Delivered twice (a redelivery after a lost ack, a crash between commit and ack, two replicas
//!   racing): the second transaction finds the id already recorded and only acknowledges.
//! - The handler fails with a transient error: the transaction rolls back, and the message is
//!   negatively acknowledged with a growing delay. Messages behind it keep flowing meanwhile.
//! - The handler refuses the message, or it is still failing after `max_deliveries`: it is written,
//!   whole and with the reason, to `messaging.dead_letters`, marked processed and acknowledged, so
//!   a poison message never blocks the messages behind it and is never silently dropped.
//!
//! Messages are handled concurrently, in order per key: each goes to one of
//! [`ConsumerConfig::concurrency`] lanes chosen by its [`partition key`](partition_key) (the
//! saga's id, else the subject), and each lane handles its messages one after the other. The
//! steps of one saga therefore stay in order, while different sagas no longer wait for each
//! other's database round trips.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, anyhow};
use async_nats::{
    HeaderMap,
    jetstream::{self, AckKind, consumer::pull},
};
use bytes::Bytes;
use futures::StreamExt;
use opentelemetry::{KeyValue, metrics::Counter};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool, types::Json};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::{
    MESSAGE_TYPE_HEADER, MSG_ID_HEADER,
    dead_letters::{self, Replay, ReplayError},
    outbox::{self, Publisher},
};

/// A message as a handler sees it.
#[derive(Debug, Clone)]
pub struct IncomingMessage {
    pub id: Uuid,
    pub subject: String,
    pub message_type: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
    /// 1 on first delivery.
    pub delivery: i64,
}

impl IncomingMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.as_str())
    }

    /// Reads the id and type that every FTGO message carries; a message without them cannot be
    /// handled idempotently and is dead-lettered.
    fn parse(message: &async_nats::Message, delivery: i64) -> Result<Self, String> {
        let headers = message.headers.clone().unwrap_or_default();
        let id = headers
            .get(MSG_ID_HEADER)
            .ok_or_else(|| format!("no {MSG_ID_HEADER} header"))?
            .as_str()
            .parse::<Uuid>()
            .map_err(|e| format!("{MSG_ID_HEADER} is not a UUID: {e}"))?;
        let message_type = headers
            .get(MESSAGE_TYPE_HEADER)
            .ok_or_else(|| format!("no {MESSAGE_TYPE_HEADER} header"))?
            .as_str()
            .to_owned();
        Ok(Self {
            id,
            subject: message.subject.to_string(),
            message_type,
            headers,
            payload: message.payload.clone(),
            delivery,
        })
    }
}

/// Why a handler did not apply a message.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying: a database hiccup, a dependency briefly away.
    #[error("transient failure: {0:#}")]
    Transient(anyhow::Error),
    /// Will never succeed: undecodable payload, unknown type, a command that contradicts the data.
    /// Dead-lettered at once.
    #[error("refused: {0:#}")]
    Rejected(anyhow::Error),
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        Self::Transient(e.into())
    }
}

/// What a service does with one kind of message. `tx` is the transaction that also records the
/// message as processed: write the effect (and any outgoing messages) through it.
pub trait MessageHandler: Send + Sync + 'static {
    fn handle(
        &self,
        tx: &mut PgConnection,
        message: &IncomingMessage,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Runs after the transaction that applied `message` has committed (never for a duplicate or
    /// a refusal): for what must follow the commit, such as waking clients that wait for the
    /// change. Nothing may depend on it running: a crash right after the commit skips it.
    fn committed(&self, _message: &IncomingMessage) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// How many messages each lane queues.
const LANE_CAPACITY: usize = 8;

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The durable JetStream consumer's name and the key in `processed_messages`. Services write
    /// theirs out rather than derive them: renaming a deployed consumer makes it handle its whole
    /// stream again.
    pub name: String,
    /// Subjects this consumer receives (`ftgo.command.kitchen.>`, ...).
    pub filter_subjects: Vec<String>,
    /// Deliveries before a still-failing message is dead-lettered.
    pub max_deliveries: i64,
    /// Delay before redelivery after the n-th failure (the last one repeats).
    pub backoff: Vec<Duration>,
    /// How long JetStream waits for an acknowledgement before it redelivers: how soon another
    /// instance (or this one, restarted) gets the message that a killed consumer was handling.
    /// A handler that runs longer keeps its message with progress acknowledgements.
    pub ack_wait: Duration,
    /// How many messages are handled at once (each from a different lane, see the module docs).
    pub concurrency: usize,
}

impl ConsumerConfig {
    pub fn new(name: impl Into<String>, filter_subjects: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            name: name.into(),
            filter_subjects: filter_subjects.into_iter().map(Into::into).collect(),
            max_deliveries: 5,
            backoff: vec![
                Duration::from_millis(100),
                Duration::from_millis(500),
                Duration::from_secs(2),
                Duration::from_secs(5),
            ],
            ack_wait: Duration::from_secs(2),
            concurrency: 8,
        }
    }

    fn backoff_after(&self, delivery: i64) -> Duration {
        let index = usize::try_from(delivery.saturating_sub(1)).unwrap_or(0);
        self.backoff.get(index).or(self.backoff.last()).copied().unwrap_or(Duration::from_secs(1))
    }
}

/// Counters a consumer keeps about itself, for whoever holds it (tests read them). What is
/// exported as a metric is the `ftgo.messages.handled` counter, by consumer and disposition.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub processed: AtomicU64,
    pub duplicates: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
}

/// What became of one delivery. (A saga step's *outcome*, success or failure, is the
/// participant's answer: [`super::saga`].)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Processed,
    Duplicate,
    Retry(Duration),
    DeadLettered,
}

pub struct InboxConsumer<H> {
    db: PgPool,
    stream: jetstream::stream::Stream,
    config: ConsumerConfig,
    handler: H,
    stats: Arc<ConsumerStats>,
    publisher: Option<Publisher>,
}

impl<H: MessageHandler> InboxConsumer<H> {
    pub fn new(db: PgPool, stream: jetstream::stream::Stream, config: ConsumerConfig, handler: H) -> Self {
        Self { db, stream, config, handler, stats: Arc::default(), publisher: None }
    }

    /// Hands the messages the handler enqueues to `publisher` the moment its transaction commits
    /// (the relay's fast path). Without it, the commit wakes the relays to claim them.
    pub fn with_publisher(mut self, publisher: Publisher) -> Self {
        self.publisher = Some(publisher);
        self
    }

    pub fn stats(&self) -> Arc<ConsumerStats> {
        self.stats.clone()
    }

    /// Creates (or reuses) the durable consumer and handles messages until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        // Created, or updated to this configuration if it exists (a new `ack_wait` applies to a
        // deployed consumer).
        let consumer = self
            .stream
            .create_consumer(pull::Config {
                durable_name: Some(self.config.name.clone()),
                filter_subjects: self.config.filter_subjects.clone(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: self.config.ack_wait,
                // Redelivery is bounded here, not by the server: the consumer must see the
                // last delivery to dead-letter it.
                max_deliver: -1,
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating the durable consumer {}", self.config.name))?;
        // One bounded queue per lane: a slow lane holds back only the reader, and with it at most
        // `concurrency` × its capacity unacknowledged messages. The reader pulls no more than the
        // lanes hold, so that little waits unacknowledged for longer than `ack_wait`.
        let lanes = self.config.concurrency.max(1);
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(lanes * LANE_CAPACITY)
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .context("subscribing to the consumer")?;
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..lanes).map(|_| tokio::sync::mpsc::channel(LANE_CAPACITY)).unzip();
        let stopping = shutdown.clone();
        let workers = futures::future::join_all(receivers.into_iter().map(|mut lane| {
            let stopping = stopping.clone();
            async move {
                while let Some(message) = lane.recv().await {
                    // What is still queued at shutdown is left unacknowledged: JetStream redelivers it.
                    if stopping.is_cancelled() {
                        break;
                    }
                    self.deliver(message).await;
                }
            }
        }));
        let reader = async move {
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        let lane = lane_of(&partition_key(&message.message), lanes);
                        if senders[lane].send(message).await.is_err() {
                            return Err(anyhow!("a message lane of {} stopped", self.config.name));
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(consumer = %self.config.name, error = %e, "receiving messages failed");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    None => return Err(anyhow!("the message stream of {} ended", self.config.name)),
                }
            }
            // Dropping the senders lets every lane finish what it holds, then stop.
        };
        let (result, _) = tokio::join!(reader, workers);
        result
    }

    async fn deliver(&self, message: jetstream::Message) {
        let delivery = message.info().map(|info| info.delivered).unwrap_or(1);
        let disposition = self.process_keeping(&message, delivery).await;
        let name = match disposition {
            Disposition::Processed => "processed",
            Disposition::Duplicate => "duplicate",
            Disposition::DeadLettered => "dead_lettered",
            Disposition::Retry(_) => "retried",
        };
        messages_handled()
            .add(1, &[KeyValue::new("consumer", self.config.name.clone()), KeyValue::new("disposition", name)]);
        let ack = match disposition {
            Disposition::Processed | Disposition::Duplicate | Disposition::DeadLettered => AckKind::Ack,
            Disposition::Retry(delay) => AckKind::Nak(Some(delay)),
        };
        if let Err(e) = message.ack_with(ack).await {
            // Harmless: JetStream redelivers after ack_wait, and the inbox recognises the id.
            tracing::warn!(consumer = %self.config.name, error = %e, "acknowledgement failed");
        }
    }

    /// [`process`](Self::process), telling JetStream every third of `ack_wait` that the message is
    /// still being worked on, so that a slow handler does not get it redelivered.
    async fn process_keeping(&self, message: &jetstream::Message, delivery: i64) -> Disposition {
        let every = (self.config.ack_wait / 3).max(Duration::from_millis(100));
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let processing = self.process(&message.message, delivery);
        tokio::pin!(processing);
        loop {
            tokio::select! {
                disposition = &mut processing => return disposition,
                _ = progress.tick() => {
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(consumer = %self.config.name, error = %e, "progress acknowledgement failed");
                    }
                }
            }
        }
    }

    /// Handles one delivery of `message` (the `delivery`-th) and says what became of it. The
    /// caller acknowledges accordingly.
    pub async fn process(&self, message: &async_nats::Message, delivery: i64) -> Disposition {
        let incoming = match IncomingMessage::parse(message, delivery) {
            Ok(incoming) => incoming,
            Err(reason) => return self.dead_letter(message, None, delivery, &reason).await,
        };
        if delivery > self.config.max_deliveries {
            // The consumer stopped (crashed?) while handling the earlier deliveries.
            let reason = format!("gave up after {} deliveries without being handled", delivery - 1);
            return self.dead_letter(message, Some(incoming.id), delivery, &reason).await;
        }
        let span = tracing::info_span!(
            "handle message",
            otel.name = %format!("handle {}", incoming.message_type),
            consumer = %self.config.name,
            subject = %incoming.subject,
            delivery,
        );
        crate::telemetry::set_parent_from(&span, &crate::telemetry::NatsHeaders(&incoming.headers));
        let disposition = match self.apply_once(&incoming).instrument(span).await {
            Ok(true) => Disposition::Processed,
            Ok(false) => Disposition::Duplicate,
            Err(HandlerError::Rejected(e)) => {
                self.dead_letter(message, Some(incoming.id), delivery, &format!("refused: {e:#}")).await
            }
            Err(HandlerError::Transient(e)) if delivery >= self.config.max_deliveries => {
                let reason = format!("still failing after {delivery} deliveries: {e:#}");
                self.dead_letter(message, Some(incoming.id), delivery, &reason).await
            }
            Err(HandlerError::Transient(e)) => {
                tracing::warn!(consumer = %self.config.name, id = %incoming.id, delivery, error = %format!("{e:#}"), "will retry");
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                Disposition::Retry(self.config.backoff_after(delivery))
            }
        };
        match disposition {
            Disposition::Processed => self.stats.processed.fetch_add(1, Ordering::Relaxed),
            Disposition::Duplicate => self.stats.duplicates.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        disposition
    }

    /// Records the id and applies the handler in one transaction. `Ok(false)`: already processed.
    async fn apply_once(&self, message: &IncomingMessage) -> Result<bool, HandlerError> {
        match &self.publisher {
            Some(publisher) => outbox::scope(publisher, self.apply_in_transaction(message)).await,
            None => self.apply_in_transaction(message).await,
        }
    }

    async fn apply_in_transaction(&self, message: &IncomingMessage) -> Result<bool, HandlerError> {
        let mut tx = self.db.begin().await?;
        // Blocks while another transaction holds the same id, then sees its outcome.
        let fresh = sqlx::query(
            "INSERT INTO messaging.processed_messages (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&self.config.name)
        .bind(message.id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            return Ok(false);
        }
        self.handler.handle(&mut tx, message).await?;
        // The handler's replies are published the moment they commit.
        outbox::commit(tx).await?;
        self.handler.committed(message).await;
        Ok(true)
    }

    /// Handles dead letter `id` of this consumer again, in one transaction that also marks it
    /// replayed (see [`dead_letters`]).
    pub async fn replay(&self, id: i64) -> Result<(), ReplayError> {
        let work = async {
            let mut tx = self.db.begin().await?;
            let message = dead_letters::take(&mut tx, &self.config.name, id).await?;
            self.handler.handle(&mut tx, &message).await.map_err(ReplayError::Failed)?;
            outbox::commit(tx).await?;
            self.handler.committed(&message).await;
            Ok(())
        };
        match &self.publisher {
            Some(publisher) => outbox::scope(publisher, work).await,
            None => work.await,
        }
    }

    async fn dead_letter(
        &self,
        message: &async_nats::Message,
        id: Option<Uuid>,
        delivery: i64,
        reason: &str,
    ) -> Disposition {
        tracing::error!(consumer = %self.config.name, subject = %message.subject, ?id, delivery, reason, "dead-lettering a message");
        match self.store_dead_letter(message, id, delivery, reason).await {
            Ok(()) => {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                Disposition::DeadLettered
            }
            Err(e) => {
                // Not acknowledged, so not lost: JetStream delivers it again later.
                tracing::error!(consumer = %self.config.name, error = %e, "could not store the dead letter; will retry");
                Disposition::Retry(self.config.backoff_after(delivery))
            }
        }
    }

    async fn store_dead_letter(
        &self,
        message: &async_nats::Message,
        id: Option<Uuid>,
        delivery: i64,
        reason: &str,
    ) -> sqlx::Result<()> {
        let headers = message.headers.as_ref().map(headers_as_json).unwrap_or_default();
        let message_type = message.headers.as_ref().and_then(|h| h.get(MESSAGE_TYPE_HEADER)).map(|v| v.to_string());
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO messaging.dead_letters (consumer, message_id, subject, message_type, headers, payload, error, deliveries)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&self.config.name)
        .bind(id)
        .bind(message.subject.as_str())
        .bind(message_type)
        .bind(Json(Value::Object(headers)))
        .bind(message.payload.as_ref())
        .bind(reason)
        .bind(delivery)
        .execute(&mut *tx)
        .await?;
        if let Some(id) = id {
            sqlx::query(
                "INSERT INTO messaging.processed_messages (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(&self.config.name)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }
}

/// What orders a message relative to others: the saga it belongs to, or else its subject (events
/// of one kind stay in the order they were published).
pub fn partition_key(message: &async_nats::Message) -> String {
    message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(super::saga::SAGA_ID_HEADER))
        .map(|id| id.as_str().to_owned())
        .unwrap_or_else(|| message.subject.to_string())
}

/// The lane of `key` among `lanes`: the same key, the same lane.
fn lane_of(key: &str, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}

fn headers_as_json(headers: &HeaderMap) -> Map<String, Value> {
    headers
        .iter()
        .map(|(name, values)| {
            let values = values.iter().map(|v| Value::String(v.to_string())).collect();
            (name.to_string(), Value::Array(values))
        })
        .collect()
}

/// Deliveries by consumer and disposition: `processed`, `duplicate`, `retried`, `dead_lettered`.
fn messages_handled() -> &'static Counter<u64> {
    static COUNTER: OnceLock<Counter<u64>> = OnceLock::new();
    COUNTER.get_or_init(|| {
        crate::telemetry::meter()
            .u64_counter("ftgo.messages.handled")
            .with_description("Message deliveries handled by a consumer, by disposition")
            .build()
    })
}

impl<H: MessageHandler> Replay for InboxConsumer<H> {
    fn replay(&self, id: i64) -> futures::future::BoxFuture<'_, Result<(), ReplayError>> {
        Box::pin(InboxConsumer::replay(self, id))
    }
}
