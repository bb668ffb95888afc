//! The transactional outbox: writing a message in the caller's transaction, and handing it to the
//! relay the moment that transaction commits.
//!
//! - **The fast path.** Work that runs inside [`scope`] (every inbox handler, and each service's
//!   gRPC methods that publish) remembers what it [`enqueue`]s; [`commit`] commits and then hands
//!   those messages straight to the service's relay ([`Publisher`]), which publishes them without
//!   reading them back, and marks them published afterwards in one statement per batch. A message
//!   reaches JetStream one publish after its commit, not one claim transaction later.
//! - **Nothing depends on it.** The rows are committed before anything is published. If the
//!   process dies after the commit, or JetStream refuses the publish, the rows stay unpublished and
//!   the relay's periodic claim publishes them (again, perhaps: JetStream drops the copy by its
//!   `Nats-Msg-Id`).
//! - **No `NOTIFY`.** A notifying transaction takes a cluster-wide lock at commit, which serialised
//!   every service's commits. A commit outside any scope wakes this process's relays instead
//!   ([`wake_relays`]), and they claim what is unpublished.

use std::{
    cell::RefCell,
    sync::{Arc, Mutex, Weak},
};

use sqlx::{PgConnection, Postgres, Transaction};
use tokio::sync::{Notify, mpsc};

use super::OutgoingMessage;

/// Where committed messages go to be published at once: a handle on one relay
/// ([`OutboxRelay::publisher`](super::relay::OutboxRelay::publisher)).
#[derive(Debug, Clone)]
pub struct Publisher {
    pub(crate) sender: mpsc::UnboundedSender<Committed>,
}

/// What one transaction enqueued, and when it committed.
pub(crate) type Committed = (tokio::time::Instant, Vec<OutgoingMessage>);

struct Scope {
    publisher: Publisher,
    enqueued: RefCell<Vec<OutgoingMessage>>,
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// Runs `work`, which holds **one** transaction that may [`enqueue`] messages and ends with
/// [`commit`], so that its messages are handed to `publisher` as soon as it commits. What a
/// transaction that rolls back enqueued is dropped with the scope, never published.
pub async fn scope<F: Future>(publisher: &Publisher, work: F) -> F::Output {
    SCOPE.scope(Scope { publisher: publisher.clone(), enqueued: RefCell::default() }, work).await
}

/// The relays running in this process (usually one; several when tests run many services in one
/// process).
static RELAYS: Mutex<Vec<Weak<Notify>>> = Mutex::new(Vec::new());

/// Registers a relay; it is woken by every [`commit`] outside a [`scope`] in this process until
/// the returned handle is dropped.
pub(crate) fn register_relay() -> Arc<Notify> {
    let wake = Arc::new(Notify::new());
    let mut relays = RELAYS.lock().unwrap_or_else(|e| e.into_inner());
    relays.retain(|relay| relay.strong_count() > 0);
    relays.push(Arc::downgrade(&wake));
    wake
}

/// Wakes this process's relays to claim what is unpublished. A relay that is busy keeps the
/// wake-up and looks again when it is done, so none is lost.
pub fn wake_relays() {
    let relays = RELAYS.lock().unwrap_or_else(|e| e.into_inner());
    for relay in relays.iter().filter_map(Weak::upgrade) {
        relay.notify_one();
    }
}

/// Commits a transaction that enqueued messages, then hands them to the relay: inside a
/// [`scope`], straight to its publisher; outside one, by waking the relays to claim them. Use it
/// instead of `tx.commit()` wherever [`enqueue`] was called.
pub async fn commit(tx: Transaction<'_, Postgres>) -> sqlx::Result<()> {
    tx.commit().await?;
    let committed = SCOPE.try_with(|scope| (scope.publisher.clone(), scope.enqueued.take()));
    match committed {
        Ok((_, messages)) if messages.is_empty() => {}
        Ok((publisher, messages)) => {
            if publisher.sender.send((tokio::time::Instant::now(), messages)).is_err() {
                // The relay has stopped: its successor's claim publishes the rows.
                wake_relays();
            }
        }
        Err(_) => wake_relays(),
    }
    Ok(())
}

/// Adds `message` to the outbox inside the caller's transaction. It is published only if, and
/// after, that transaction commits.
pub async fn enqueue(tx: &mut PgConnection, message: &OutgoingMessage) -> sqlx::Result<()> {
    // The message carries the trace it was caused in, so its handler continues that trace.
    let mut headers = message.headers.clone();
    for (name, value) in crate::telemetry::current_context_headers() {
        headers.entry(name).or_insert(value);
    }
    sqlx::query(
        "INSERT INTO messaging.outbox (id, subject, message_type, headers, payload) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(message.id)
    .bind(&message.subject)
    .bind(&message.message_type)
    .bind(sqlx::types::Json(&headers))
    .bind(&message.payload)
    .execute(tx)
    .await?;
    // Published as written, trace headers included, once the transaction commits.
    let _ = SCOPE.try_with(|scope| scope.enqueued.borrow_mut().push(OutgoingMessage { headers, ..message.clone() }));
    Ok(())
}

/// How many messages are committed but not yet acknowledged by JetStream: the outbox lag.
pub async fn pending(db: &sqlx::PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM messaging.outbox WHERE published_at IS NULL").fetch_one(db).await
}
