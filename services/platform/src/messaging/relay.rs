//! The outbox relay: publishes committed outbox rows to JetStream.
//!
//! Delivery is at least once, and JetStream turns it into exactly once within its duplicate
//! window: each row is published with its id as `Nats-Msg-Id`, and marked published only after
//! JetStream acknowledged it (an acknowledged message is on disk: the server runs with
//! `sync_interval: always`). A relay that dies in between publishes the row again on restart, and
//! JetStream answers "duplicate" instead of storing a second copy.
//!
//! Two ways in:
//! - **The fast path**: messages its own process just committed, handed over by
//!   [`outbox::commit`] through the [`Publisher`]. They are published as they are, without reading
//!   them back. Whatever arrives while a batch is in flight forms the next batch. The acknowledged
//!   ids are marked published together, in one `UPDATE` every `mark_delay` (or per full batch), not
//!   one per message: a relay that dies before marking leaves them for the claim, which publishes
//!   them again, and JetStream drops the copies.
//! - **The claim**: rows nobody handed over (their writer died after the commit, JetStream
//!   refused the fast path, or a commit outside a scope woke the relay) are claimed with
//!   `FOR UPDATE SKIP LOCKED`, so several replicas can relay at once without publishing a row
//!   concurrently. The periodic claim leaves rows younger than `claim_grace` alone: those are
//!   still on their fast path, and claiming them would only publish them twice.

use std::{
    collections::BTreeMap,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use anyhow::{Context, Result};
use async_nats::{
    HeaderMap,
    jetstream::{
        self,
        context::{PublishAckFuture, PublishError},
    },
};
use opentelemetry::metrics::Histogram;
use sqlx::{PgPool, types::Json};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    MESSAGE_TYPE_HEADER, MSG_ID_HEADER,
    connection::Link,
    outbox::{self, Committed, Publisher},
};

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows claimed and published per round trip.
    pub batch_size: i64,
    /// How often to claim rows that no fast path published.
    pub poll_interval: Duration,
    /// The periodic claim takes only rows older than this.
    pub claim_grace: Duration,
    /// How long the fast path's published ids wait to be marked together (or until a batch is
    /// full): one `UPDATE` for many messages. Shorter than `claim_grace`.
    pub mark_delay: Duration,
    /// Published rows are kept this long for inspection, then deleted.
    pub retain_published: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 200,
            poll_interval: Duration::from_secs(1),
            claim_grace: Duration::from_secs(1),
            mark_delay: Duration::from_millis(50),
            retain_published: Duration::from_secs(3600),
        }
    }
}

pub struct OutboxRelay {
    db: PgPool,
    js: jetstream::Context,
    config: RelayConfig,
    publisher: Publisher,
    /// The fast path's receiving end, taken by [`run`](Self::run).
    committed: Mutex<Option<mpsc::UnboundedReceiver<Committed>>>,
    /// The NATS connection's state, when watched ([`watching`](Self::watching)).
    link: Option<Link>,
}

/// id, subject, type, headers, payload, and seconds since the row was inserted.
type OutboxRow = (Uuid, String, String, Json<BTreeMap<String, String>>, Vec<u8>, f64);

impl OutboxRelay {
    pub fn new(db: PgPool, js: jetstream::Context, config: RelayConfig) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self { db, js, config, publisher: Publisher { sender }, committed: Mutex::new(Some(receiver)), link: None }
    }

    /// Watches the connection `link`: while it is down, no acknowledgement is waited for (the
    /// messages stay unpublished, and JetStream drops any copy that did get through when they are
    /// published again); the moment it is back, the relay publishes what is left.
    pub fn watching(mut self, link: Link) -> Self {
        self.link = Some(link);
        self
    }

    /// The handle that [`outbox::scope`] takes: what commits inside it reaches this relay at once.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// Relays until `shutdown` is cancelled: publishes what the fast path hands over as it comes;
    /// claims what is unpublished at start, when a commit outside a scope wakes it, when the NATS
    /// connection comes back, and every poll interval (backing off while JetStream or Postgres is
    /// failing).
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        let mut committed = self
            .committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .context("an outbox relay runs only once")?;
        let wake = outbox::register_relay();
        let mut last_cleanup = Instant::now();
        let mut failures = 0u32;
        // What a previous run left is claimed at once.
        let mut claim = Some(Duration::ZERO);
        let mut next_poll = Instant::now() + self.config.poll_interval;
        // The fast path's acknowledged ids, marked together once `mark_delay` has passed.
        let mut unmarked: Vec<Uuid> = Vec::new();
        let mut mark_at: Option<Instant> = None;
        let mut link = self.link.clone();
        loop {
            if let Some(grace) = claim.take() {
                // Marked first, so that the claim does not publish them again.
                self.mark(&mut unmarked).await;
                mark_at = None;
                match self.drain_older_than(grace).await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %format!("{e:#}"), failures, "outbox relay failed; retrying");
                    }
                }
                next_poll = Instant::now() + self.config.poll_interval * failures.clamp(1, 10);
                if last_cleanup.elapsed() > self.config.retain_published / 4 {
                    if let Err(e) = self.delete_published().await {
                        tracing::warn!(error = %e, "could not delete old published outbox rows");
                    }
                    last_cleanup = Instant::now();
                }
            }
            if unmarked.len() >= self.config.batch_size.max(1) as usize {
                self.mark(&mut unmarked).await;
                mark_at = None;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.mark(&mut unmarked).await;
                    return Ok(());
                }
                Some(first) = committed.recv() => {
                    let mut batch = vec![first];
                    while let Ok(more) = committed.try_recv() {
                        batch.push(more);
                    }
                    unmarked.extend(self.publish_committed(batch).await);
                    if !unmarked.is_empty() && mark_at.is_none() {
                        mark_at = Some(Instant::now() + self.config.mark_delay);
                    }
                }
                _ = tokio::time::sleep_until(mark_at.unwrap_or(next_poll)), if mark_at.is_some() => {
                    self.mark(&mut unmarked).await;
                    mark_at = None;
                }
                _ = wake.notified(), if failures == 0 => claim = Some(Duration::ZERO),
                Some(connected) = changed(&mut link) => if connected {
                    tracing::info!("NATS is back; publishing what is left");
                    failures = 0;
                    claim = Some(Duration::ZERO);
                },
                _ = tokio::time::sleep_until(next_poll) => claim = Some(self.config.claim_grace),
            }
        }
    }

    /// Marks the fast path's published rows, in one statement. If that fails they stay unpublished:
    /// the claim publishes them again and JetStream drops the copies.
    async fn mark(&self, ids: &mut Vec<Uuid>) {
        if ids.is_empty() {
            return;
        }
        let marked = sqlx::query(MARK_PUBLISHED).bind(&*ids).execute(&self.db).await;
        if let Err(e) = marked {
            tracing::warn!(error = %e, count = ids.len(), "could not mark published outbox rows");
        }
        ids.clear();
    }

    /// The fast path: publishes messages committed a moment ago and returns the ids JetStream
    /// acknowledged. Anything that fails stays unpublished for the claim.
    async fn publish_committed(&self, batch: Vec<Committed>) -> Vec<Uuid> {
        let mut pending = Vec::new();
        for (committed_at, messages) in batch {
            for message in messages {
                let sent = self
                    .send(message.id, message.subject, &message.message_type, &message.headers, message.payload)
                    .await;
                pending.push((message.id, sent, committed_at));
            }
        }
        let mut published = Vec::with_capacity(pending.len());
        for (id, sent, committed_at) in pending {
            match self.acked(sent).await {
                Ok(()) => {
                    published.push(id);
                    outbox_lag().record(committed_at.elapsed().as_secs_f64(), &[]);
                }
                Err(e) => {
                    tracing::warn!(%id, error = %format!("{e:#}"), "publishing a committed message failed; the claim will")
                }
            }
        }
        published
    }

    /// Claims and publishes batches until the outbox has nothing unpublished left. A batch smaller
    /// than `batch_size` was the last one, so the usual drain costs one transaction, not a second
    /// one that finds nothing (rows committed meanwhile come with their own hand-over or wake-up).
    pub async fn drain(&self) -> Result<()> {
        self.drain_older_than(Duration::ZERO).await
    }

    async fn drain_older_than(&self, grace: Duration) -> Result<()> {
        while self.relay_batch(grace).await? >= self.config.batch_size.max(1) as usize {}
        Ok(())
    }

    /// Claims up to one batch of unpublished rows older than `grace`, publishes them in order and
    /// marks the ones JetStream acknowledged. Returns how many were published.
    pub async fn relay_batch(&self, grace: Duration) -> Result<usize> {
        let mut tx = self.db.begin().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT id, subject, message_type, headers, payload,
                    EXTRACT(EPOCH FROM clock_timestamp() - created_at)::float8 FROM messaging.outbox
             WHERE published_at IS NULL AND created_at <= clock_timestamp() - make_interval(secs => $2)
             ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.config.batch_size)
        .bind(grace.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }

        // Send the whole batch, then collect the acknowledgements: one round trip, not one per row.
        let mut pending = Vec::with_capacity(rows.len());
        for (id, subject, message_type, Json(extra), payload, age) in rows {
            pending.push((id, self.send(id, subject, &message_type, &extra, payload).await, age));
        }
        // Mark the acknowledged prefix only: after the first failure, later rows may or may not
        // have been stored, and publishing them again is harmless (same Nats-Msg-Id).
        let mut published = Vec::new();
        let mut failure = None;
        for (id, sent, age) in pending {
            match self.acked(sent).await {
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
        sqlx::query(MARK_PUBLISHED).bind(&published).execute(&mut *tx).await?;
        tx.commit().await?;
        match failure {
            Some(e) => Err(e),
            None => Ok(published.len()),
        }
    }

    /// Sends one message with its id as `Nats-Msg-Id` (JetStream's duplicate check) and its type;
    /// its acknowledgement is awaited later with [`acked`](Self::acked), so a batch costs one round
    /// trip.
    async fn send(
        &self,
        id: Uuid,
        subject: String,
        message_type: &str,
        extra: &BTreeMap<String, String>,
        payload: Vec<u8>,
    ) -> Result<PublishAckFuture, PublishError> {
        let mut headers = HeaderMap::new();
        for (name, value) in extra {
            headers.insert(name.as_str(), value.as_str());
        }
        headers.insert(MSG_ID_HEADER, id.to_string().as_str());
        headers.insert(MESSAGE_TYPE_HEADER, message_type);
        self.js.publish_with_headers(subject, headers, payload.into()).await
    }

    /// Waits for JetStream to acknowledge (store) a message that [`send`](Self::send) sent; fails
    /// at once if the connection is or goes down meanwhile.
    async fn acked(&self, sent: Result<PublishAckFuture, PublishError>) -> Result<()> {
        let ack = sent?.into_future();
        let Some(mut link) = self.link.clone() else {
            ack.await?;
            return Ok(());
        };
        tokio::select! {
            ack = ack => { ack?; Ok(()) }
            _ = link.wait_for(|connected| !connected) => {
                anyhow::bail!("the connection to NATS dropped before JetStream acknowledged the message")
            }
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

/// Marks rows published (never one a claim already marked).
const MARK_PUBLISHED: &str =
    "UPDATE messaging.outbox SET published_at = now() WHERE id = ANY($1) AND published_at IS NULL";

/// The connection's next state, once it changes; never, without a watched connection.
async fn changed(link: &mut Option<Link>) -> Option<bool> {
    match link {
        Some(link) => {
            link.changed().await.ok()?;
            Some(*link.borrow_and_update())
        }
        None => std::future::pending().await,
    }
}

/// The outbox lag: seconds from a message's insert to JetStream's acknowledgement of it.
fn outbox_lag() -> &'static Histogram<f64> {
    static HISTOGRAM: OnceLock<Histogram<f64>> = OnceLock::new();
    HISTOGRAM.get_or_init(|| {
        crate::telemetry::meter()
            .f64_histogram("ftgo.outbox.lag")
            .with_unit("s")
            .with_description("Time from an outbox message's commit (fast path) or insert (claim) to its acknowledgement by JetStream")
            .build()
    })
}
