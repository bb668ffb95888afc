//! The outbox relay: publishes committed outbox rows to JetStream.
//!
//! Delivery is at least once, and JetStream turns it into exactly once within its duplicate
//! window: each row is published with its id as `Nats-Msg-Id`, and marked published only after
//! JetStream acknowledged it (an acknowledged message is on disk: the server runs with
//! `sync_interval: always`). A relay that dies in between publishes the row again on restart, and
//! JetStream answers "duplicate" instead of storing a second copy.
//!
//! Rows are claimed with `FOR UPDATE SKIP LOCKED`, so several replicas of a service can relay at
//! once without publishing the same row concurrently.

use std::{collections::BTreeMap, sync::OnceLock, time::Duration};

use anyhow::Result;
use async_nats::{HeaderMap, jetstream};
use opentelemetry::metrics::Histogram;
use sqlx::{PgPool, types::Json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{MESSAGE_TYPE_HEADER, MSG_ID_HEADER, outbox};

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows claimed and published per round trip.
    pub batch_size: i64,
    /// How often to look for rows even when no notification arrived (a notification can be lost
    /// when the listening connection drops).
    pub poll_interval: Duration,
    /// Published rows are kept this long for inspection, then deleted.
    pub retain_published: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self { batch_size: 200, poll_interval: Duration::from_secs(1), retain_published: Duration::from_secs(3600) }
    }
}

pub struct OutboxRelay {
    db: PgPool,
    js: jetstream::Context,
    config: RelayConfig,
}

/// id, subject, type, headers, payload, and seconds since the row was inserted.
type OutboxRow = (Uuid, String, String, Json<BTreeMap<String, String>>, Vec<u8>, f64);

impl OutboxRelay {
    pub fn new(db: PgPool, js: jetstream::Context, config: RelayConfig) -> Self {
        Self { db, js, config }
    }

    /// Relays until `shutdown` is cancelled: drains the outbox, then sleeps until this process
    /// commits new rows ([`outbox::commit`]) or the poll interval passes.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        let wake = outbox::register_relay();
        let mut last_cleanup = tokio::time::Instant::now();
        let mut failures = 0u32;
        loop {
            match self.drain().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %format!("{e:#}"), failures, "outbox relay failed; retrying");
                }
            }
            if last_cleanup.elapsed() > self.config.retain_published / 4 {
                if let Err(e) = self.delete_published().await {
                    tracing::warn!(error = %e, "could not delete old published outbox rows");
                }
                last_cleanup = tokio::time::Instant::now();
            }
            // Back off while JetStream or Postgres is failing, up to ten poll intervals.
            let wait = self.config.poll_interval * failures.clamp(1, 10);
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = wake.notified(), if failures == 0 => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Publishes batches until the outbox has nothing unpublished left. A batch smaller than
    /// `batch_size` was the last one, so the usual drain of a row or two costs one transaction, not
    /// a second one that finds nothing (rows committed meanwhile come with their own wake-up).
    pub async fn drain(&self) -> Result<()> {
        while self.relay_batch().await? >= self.config.batch_size.max(1) as usize {}
        Ok(())
    }

    /// Claims up to one batch of unpublished rows, publishes them in order and marks the ones
    /// JetStream acknowledged. Returns how many were published.
    pub async fn relay_batch(&self) -> Result<usize> {
        let mut tx = self.db.begin().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT id, subject, message_type, headers, payload,
                    EXTRACT(EPOCH FROM clock_timestamp() - created_at)::float8 FROM messaging.outbox
             WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.config.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }

        // Send the whole batch, then collect the acknowledgements: one round trip, not one per row.
        let mut pending = Vec::with_capacity(rows.len());
        for (id, subject, message_type, Json(extra), payload, age) in rows {
            let mut headers = HeaderMap::new();
            for (name, value) in &extra {
                headers.insert(name.as_str(), value.as_str());
            }
            headers.insert(MSG_ID_HEADER, id.to_string().as_str());
            headers.insert(MESSAGE_TYPE_HEADER, message_type.as_str());
            let sent = self.js.publish_with_headers(subject, headers, payload.into()).await;
            pending.push((id, sent, age));
        }
        // Mark the acknowledged prefix only: after the first failure, later rows may or may not
        // have been stored, and publishing them again is harmless (same Nats-Msg-Id).
        let mut published = Vec::new();
        let mut failure = None;
        for (id, sent, age) in pending {
            let acked = match sent {
                Ok(ack) => ack.await.map(|_| ()).map_err(anyhow::Error::from),
                Err(e) => Err(e.into()),
            };
            match acked {
                Ok(()) => {
                    published.push(id);
                    outbox_lag().record(age.max(0.0), &[]);
                }
                Err(e) => {
                    failure = Some(e.context(format!("publishing outbox message {id}")));
                    break;
                }
            }
        }
        sqlx::query("UPDATE messaging.outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&published)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        match failure {
            Some(e) => Err(e),
            None => Ok(published.len()),
        }
    }

    async fn delete_published(&self) -> sqlx::Result<()> {
        let keep_seconds = self.config.retain_published.as_secs_f64();
        sqlx::query("DELETE FROM messaging.outbox WHERE published_at < now() - make_interval(secs => $1)")
            .bind(keep_seconds)
            .execute(&self.db)
            .await?;
        Ok(())
    }
}

/// The outbox lag: seconds from a message's insert to JetStream's acknowledgement of it.
fn outbox_lag() -> &'static Histogram<f64> {
    static HISTOGRAM: OnceLock<Histogram<f64>> = OnceLock::new();
    HISTOGRAM.get_or_init(|| {
        crate::telemetry::meter()
            .f64_histogram("ftgo.outbox.lag")
            .with_unit("s")
            .with_description("Time from an outbox insert to its publication on JetStream")
            .build()
    })
}
