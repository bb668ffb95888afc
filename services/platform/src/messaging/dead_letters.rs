//! Dead letters: the messages a consumer gave up on, kept whole in `messaging.dead_letters`, and
//! how an operator lists and replays them.
//!
//! A replay hands the dead letter to the consumer that gave up on it (the same handler, in this
//! process), in one transaction that applies the handler's effect, writes its outgoing messages
//! and marks the dead letter replayed. It is not published again: republishing would reach every
//! other consumer of the subject too, and JetStream's duplicate window would drop a copy with the
//! same id. A replay that fails again changes nothing and says why; the dead letter stays.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

use super::{
    MESSAGE_TYPE_HEADER,
    inbox::{HandlerError, IncomingMessage},
};

/// A dead letter as an operator sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub consumer: String,
    pub message_id: Option<Uuid>,
    pub subject: String,
    pub message_type: Option<String>,
    pub headers: Json<Value>,
    pub payload: Vec<u8>,
    pub error: String,
    pub deliveries: i64,
    pub failed_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
}

impl DeadLetter {
    /// The first value of header `name`, as stored.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.0.get(name)?.as_array()?.first()?.as_str()
    }

    /// The message as its consumer first saw it, for a replay. A message that had no id or no
    /// type cannot be handled idempotently, so it cannot be replayed either.
    fn incoming(&self) -> Result<IncomingMessage, ReplayError> {
        let id = self.message_id.ok_or(ReplayError::Unreplayable("it has no message id"))?;
        let message_type = self.message_type.clone().ok_or(ReplayError::Unreplayable("it has no Ftgo-Message-Type"))?;
        let mut headers = HeaderMap::new();
        for (name, values) in self.headers.0.as_object().into_iter().flatten() {
            for value in values.as_array().into_iter().flatten().filter_map(Value::as_str) {
                headers.append(name.as_str(), value);
            }
        }
        debug_assert!(headers.get(MESSAGE_TYPE_HEADER).is_some_and(|t| t.as_str() == message_type));
        Ok(IncomingMessage {
            id,
            subject: self.subject.clone(),
            message_type,
            headers,
            payload: self.payload.clone().into(),
            // Past every retry: a handler that waits for something (an account to open) gives its
            // final answer now.
            delivery: self.deliveries + 1,
        })
    }
}

macro_rules! select_dead_letters {
    ($tail:literal) => {
        concat!(
            "SELECT id, consumer, message_id, subject, message_type, headers, payload, error, deliveries, failed_at,
                    replayed_at
               FROM messaging.dead_letters ",
            $tail
        )
    };
}

/// The dead letters of one consumer, oldest first.
pub async fn of_consumer(db: &PgPool, consumer: &str) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as(select_dead_letters!("WHERE consumer = $1 ORDER BY id")).bind(consumer).fetch_all(db).await
}

/// Up to `limit` of the service's dead letters, newest first; with `waiting_only`, only those not
/// replayed yet.
pub async fn newest(db: &PgPool, limit: i64, waiting_only: bool) -> sqlx::Result<Vec<DeadLetter>> {
    sqlx::query_as(select_dead_letters!("WHERE NOT $2 OR replayed_at IS NULL ORDER BY id DESC LIMIT $1"))
        .bind(limit)
        .bind(waiting_only)
        .fetch_all(db)
        .await
}

pub async fn find(db: &PgPool, id: i64) -> sqlx::Result<Option<DeadLetter>> {
    sqlx::query_as(select_dead_letters!("WHERE id = $1")).bind(id).fetch_optional(db).await
}

/// Why a replay did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("dead letter {0} does not exist")]
    NotFound(i64),
    #[error("dead letter {id} was replayed at {at}")]
    AlreadyReplayed { id: i64, at: DateTime<Utc> },
    #[error("the dead letter cannot be replayed: {0}")]
    Unreplayable(&'static str),
    #[error("consumer {0} does not run in this process, so it cannot replay its dead letter")]
    NoConsumer(String),
    #[error("the handler failed again: {0}")]
    Failed(HandlerError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Locks dead letter `id` of `consumer` for a replay in `tx`, and returns the message to handle.
pub(crate) async fn take(tx: &mut PgConnection, consumer: &str, id: i64) -> Result<IncomingMessage, ReplayError> {
    let dead: DeadLetter = sqlx::query_as(select_dead_letters!("WHERE id = $1 AND consumer = $2 FOR UPDATE"))
        .bind(id)
        .bind(consumer)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ReplayError::NotFound(id))?;
    if let Some(at) = dead.replayed_at {
        return Err(ReplayError::AlreadyReplayed { id, at });
    }
    let message = dead.incoming()?;
    sqlx::query("UPDATE messaging.dead_letters SET replayed_at = now() WHERE id = $1").bind(id).execute(tx).await?;
    Ok(message)
}

/// A consumer that can handle one of its dead letters again.
pub trait Replay: Send + Sync {
    fn replay(&self, id: i64) -> BoxFuture<'_, Result<(), ReplayError>>;
}

/// The consumers running in this process, by name: whom a replay goes to.
#[derive(Clone, Default)]
pub struct Consumers(Arc<RwLock<BTreeMap<String, Arc<dyn Replay>>>>);

impl Consumers {
    pub fn add(&self, name: &str, consumer: Arc<dyn Replay>) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned(), consumer);
    }

    /// Replays dead letter `id` through the consumer that dead-lettered it.
    pub async fn replay(&self, db: &PgPool, id: i64) -> Result<DeadLetter, ReplayError> {
        let dead = find(db, id).await?.ok_or(ReplayError::NotFound(id))?;
        let consumer = self
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&dead.consumer)
            .cloned()
            .ok_or_else(|| ReplayError::NoConsumer(dead.consumer.clone()))?;
        consumer.replay(id).await?;
        tracing::info!(id, consumer = %dead.consumer, message_type = ?dead.message_type, "dead letter replayed");
        find(db, id).await?.ok_or(ReplayError::NotFound(id))
    }
}
