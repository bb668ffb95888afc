//! The transactional outbox: writing a message in the caller's transaction, and waking the relay
//! when that transaction commits.
//!
//! The wake-up is in-process: [`commit`] commits and then wakes this process's relays, which
//! publish the new rows at once. Postgres is not asked to `NOTIFY`: a notifying transaction takes a
//! global lock at commit, which serialised every service's commits behind one another (measured in
//! `docs/bench.md`). A row that no wake-up announces (its writer died right after the commit) is
//! found by the relay's periodic poll, or by the writer's relay when it restarts.

use std::sync::{Arc, Mutex, Weak};

use sqlx::{PgConnection, Postgres, Transaction};
use tokio::sync::Notify;

use super::OutgoingMessage;

/// The relays running in this process (usually one; several when tests run many services in one
/// process).
static RELAYS: Mutex<Vec<Weak<Notify>>> = Mutex::new(Vec::new());

/// Registers a relay; it is woken by every [`commit`] in this process until the returned handle is
/// dropped.
pub(crate) fn register_relay() -> Arc<Notify> {
    let wake = Arc::new(Notify::new());
    let mut relays = RELAYS.lock().unwrap_or_else(|e| e.into_inner());
    relays.retain(|relay| relay.strong_count() > 0);
    relays.push(Arc::downgrade(&wake));
    wake
}

/// Wakes this process's relays: rows were committed. A relay that is busy keeps the wake-up and
/// looks again when it is done, so none is lost.
pub fn wake_relays() {
    let relays = RELAYS.lock().unwrap_or_else(|e| e.into_inner());
    for relay in relays.iter().filter_map(Weak::upgrade) {
        relay.notify_one();
    }
}

/// Commits a transaction that enqueued messages, then wakes the relay to publish them. Use it
/// instead of `tx.commit()` wherever [`enqueue`] was called.
pub async fn commit(tx: Transaction<'_, Postgres>) -> sqlx::Result<()> {
    tx.commit().await?;
    wake_relays();
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
    Ok(())
}

/// How many messages are committed but not yet acknowledged by JetStream: the outbox lag.
pub async fn pending(db: &sqlx::PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM messaging.outbox WHERE published_at IS NULL").fetch_one(db).await
}
