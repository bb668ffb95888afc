//! The transactional outbox: writing a message in the caller's transaction.

use sqlx::PgConnection;

use super::OutgoingMessage;

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
