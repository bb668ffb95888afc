//! Idempotency keys: a client that sends a command again with the same `Idempotency-Key` (because
//! it never saw the answer: a timeout, a reset connection, an instance killed mid-call) gets the
//! first answer back instead of a second effect. The same key with a different request is refused.
//!
//! The gateway takes the key from the HTTP header and passes it on as the gRPC metadata
//! [`KEY_METADATA`]. The service that owns the effect keeps the key, the request and its answer
//! in its own database (`messaging.idempotency_keys`), **in the command's transaction**: the key is
//! recorded exactly when the effect commits. Two requests with one key at once are serialised by
//! the key's row: the second waits for the first's transaction, then gets its answer.

use std::time::Duration;

use prost::Message;
use sqlx::{PgConnection, PgPool};
use tonic::{Code, Request, Status, metadata::MetadataValue};

use crate::grpc::database_error;

/// The gRPC metadata that carries a request's idempotency key.
pub const KEY_METADATA: &str = "ftgo-idempotency-key";
/// Marks the refusal of a key that was used with a different request (the gateway's 422).
pub const REUSED_MARK: &str = "ftgo-idempotency-key-reused";
/// The longest key accepted.
pub const MAX_KEY_LENGTH: usize = 255;
/// How long a key is remembered.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// A command's idempotency key: the operation it names, the key, and the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    operation: &'static str,
    key: String,
    request: Vec<u8>,
}

impl Key {
    /// The key of `request` for `operation` (`CreateOrder`, ...), if the client sent one.
    pub fn of<T: Message>(request: &Request<T>, operation: &'static str) -> Result<Option<Self>, Status> {
        let Some(value) = request.metadata().get(KEY_METADATA) else { return Ok(None) };
        let key = value.to_str().ok().filter(|key| valid(key)).ok_or_else(|| {
            Status::invalid_argument(format!(
                "the idempotency key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters"
            ))
        })?;
        Ok(Some(Self { operation, key: key.to_owned(), request: request.get_ref().encode_to_vec() }))
    }
}

/// Whether `key` may be used as an idempotency key: 1 to [`MAX_KEY_LENGTH`] visible ASCII
/// characters (no spaces or control characters).
pub fn valid(key: &str) -> bool {
    (1..=MAX_KEY_LENGTH).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Runs `command` in the transaction `tx` once per key: without a key, simply runs it; with a key
/// seen before, returns the answer recorded then (and refuses a different request under the same
/// key, [`REUSED_MARK`]); otherwise runs it and records its answer in `tx`. An error is not
/// recorded: the caller rolls `tx` back, and the key is free again.
pub async fn once<R: Message + Default>(
    tx: &mut PgConnection,
    key: Option<&Key>,
    command: impl AsyncFnOnce(&mut PgConnection) -> Result<R, Status>,
) -> Result<R, Status> {
    let Some(key) = key else { return command(tx).await };
    let claimed = sqlx::query(
        "INSERT INTO messaging.idempotency_keys (operation, key, request) VALUES ($1, $2, $3)
         ON CONFLICT (operation, key) DO NOTHING",
    )
    .bind(key.operation)
    .bind(&key.key)
    .bind(&key.request)
    .execute(&mut *tx)
    .await
    .map_err(database_error)?
    .rows_affected()
        == 1;
    if !claimed {
        return answered(tx, key).await;
    }
    let answer = command(&mut *tx).await?;
    sqlx::query("UPDATE messaging.idempotency_keys SET response = $3 WHERE operation = $1 AND key = $2")
        .bind(key.operation)
        .bind(&key.key)
        .bind(answer.encode_to_vec())
        .execute(&mut *tx)
        .await
        .map_err(database_error)?;
    Ok(answer)
}

/// The answer recorded for `key`, if it came with the same request.
async fn answered<R: Message + Default>(tx: &mut PgConnection, key: &Key) -> Result<R, Status> {
    let (request, response): (Vec<u8>, Option<Vec<u8>>) =
        sqlx::query_as("SELECT request, response FROM messaging.idempotency_keys WHERE operation = $1 AND key = $2")
            .bind(key.operation)
            .bind(&key.key)
            .fetch_one(&mut *tx)
            .await
            .map_err(database_error)?;
    if request != key.request {
        let mut status = Status::failed_precondition(format!(
            "the idempotency key {:?} was used for a different {} request",
            key.key, key.operation
        ));
        status.metadata_mut().insert(REUSED_MARK, MetadataValue::from_static("1"));
        return Err(status);
    }
    let response = response.ok_or_else(|| Status::internal("an idempotency key without its answer"))?;
    R::decode(response.as_slice()).map_err(|e| {
        tracing::error!(error = %e, "a recorded answer does not decode");
        Status::internal("internal error")
    })
}

/// Whether `status` refuses a key that was used with a different request.
pub fn is_reused(status: &Status) -> bool {
    status.code() == Code::FailedPrecondition && status.metadata().contains_key(REUSED_MARK)
}

/// Forgets the keys older than [`RETENTION`].
pub async fn forget_old(db: &PgPool) -> sqlx::Result<u64> {
    let done =
        sqlx::query("DELETE FROM messaging.idempotency_keys WHERE created_at < now() - make_interval(secs => $1)")
            .bind(RETENTION.as_secs_f64())
            .execute(db)
            .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_one_to_255_visible_ascii_characters() {
        assert!(valid("order-2026-11-30-0001"));
        assert!(valid(&"k".repeat(255)));
        for bad in ["", " ", "a b", "tab\there", "caf\u{e9}", &"k".repeat(256)] {
            assert!(!valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_request_names_its_key_in_metadata_and_a_bad_key_is_refused() {
        let mut request = Request::new(ftgo_proto::common::v1::Money { minor_units: 5 });
        assert_eq!(Key::of(&request, "Pay").unwrap(), None);
        request.metadata_mut().insert(KEY_METADATA, MetadataValue::from_static("k-1"));
        let key = Key::of(&request, "Pay").unwrap().unwrap();
        assert_eq!((key.operation, key.key.as_str()), ("Pay", "k-1"));
        request.metadata_mut().insert(KEY_METADATA, MetadataValue::from_static("two words"));
        assert_eq!(Key::of(&request, "Pay").unwrap_err().code(), Code::InvalidArgument);
    }
}
