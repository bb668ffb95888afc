//! No saga waits for ever: the deadline sweep. Every saga row that waits for a reply carries the
//! moment its step is overdue (`reply_timeout` after the step's command was sent). The sweep
//! finds the overdue ones and hands each to the engine ([`Saga::on_deadline`]), which sends the
//! command again or, after the last attempt, gives up on the step (compensating, or `FAILED`).
//!
//! The sweep locks the rows it handles and skips the ones that are locked, so a reply being
//! applied at the same moment wins and several orchestrator replicas share the work. The command
//! it sends again is a new message (a new id) with the same saga step: the participant handles it
//! as it handled the first, and whichever reply comes first moves the saga on; the other is then
//! stale and ignored.

use std::time::Duration;

use chrono::Utc;
use ftgo_platform::messaging::{outbox, outbox::Publisher};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::{
    StepDeadlines,
    messaging::{count_deadline, count_finished},
    sagas::{Overdue, Saga, SagaDefinition, SagaVisitor, is_known, with_saga_type},
    store::{self, SagaRow},
};

/// Overdue sagas handled per transaction.
const BATCH: i64 = 100;

/// The orchestrator's deadline task.
pub struct Sweep {
    pub db: PgPool,
    pub publisher: Publisher,
    pub deadlines: StepDeadlines,
}

impl Sweep {
    /// Sweeps a few times per reply timeout (at most every second) until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tick = (self.deadlines.reply_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(tick) => {}
            }
            loop {
                match self.sweep_once().await {
                    Ok(handled) if handled as i64 == BATCH => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "the saga deadline sweep failed; it runs again");
                        break;
                    }
                }
            }
        }
    }

    /// Handles the overdue sagas (up to a batch) in one transaction; returns how many.
    pub async fn sweep_once(&self) -> anyhow::Result<usize> {
        outbox::scope(&self.publisher, async {
            let mut tx = self.db.begin().await?;
            let rows = store::lock_overdue(&mut tx, BATCH).await?;
            for row in &rows {
                if !is_known(&row.saga_type) {
                    tracing::error!(saga_id = %row.id, saga_type = %row.saga_type, "an overdue saga of an unknown type is left alone");
                    store::clear_deadline(&mut tx, row.id).await?;
                } else if let Some(handled) =
                    with_saga_type(&row.saga_type, ApplyDeadline { tx: &mut tx, row, deadlines: self.deadlines })
                {
                    handled.await?;
                }
            }
            outbox::commit(tx).await?;
            Ok(rows.len())
        })
        .await
    }
}

/// Applies a deadline to a saga of whichever type its row says.
struct ApplyDeadline<'a> {
    tx: &'a mut PgConnection,
    row: &'a SagaRow,
    deadlines: StepDeadlines,
}

impl<'a> SagaVisitor for ApplyDeadline<'a> {
    type Output = futures::future::BoxFuture<'a, sqlx::Result<()>>;

    fn visit<D: SagaDefinition>(self) -> Self::Output {
        Box::pin(overdue::<D>(self.tx, self.row, self.deadlines))
    }
}

async fn overdue<D: SagaDefinition>(
    tx: &mut PgConnection,
    row: &SagaRow,
    deadlines: StepDeadlines,
) -> sqlx::Result<()> {
    let mut saga: Saga<D> = match row.decode() {
        Ok(saga) => saga,
        Err(e) => {
            tracing::error!(saga_id = %row.id, error = %e, "an overdue saga that cannot be read is left alone");
            return store::clear_deadline(tx, row.id).await;
        }
    };
    let Some(step) = D::STEPS.get(saga.step).map(|step| step.name) else {
        tracing::error!(saga_id = %row.id, step = saga.step, "an overdue saga at a step its type does not have");
        return store::clear_deadline(tx, row.id).await;
    };
    let overdue = saga.on_deadline(deadlines.attempts, Utc::now());
    // Saved in every case: a saga that waits for nothing any more loses its deadline.
    store::save(tx, &saga, deadlines.reply_timeout).await?;
    let resent = match &overdue {
        Overdue::NotWaiting => return Ok(()),
        Overdue::Resent(_) => {
            tracing::warn!(saga_id = %saga.id, saga_type = D::TYPE, step, attempt = saga.attempts, "no reply in time: the step's command is sent again");
            true
        }
        Overdue::GaveUp(_) => {
            tracing::warn!(saga_id = %saga.id, saga_type = D::TYPE, step, state = saga.state.as_str(), reason = ?saga.failure_reason, "no reply after every attempt: the saga gave up on the step");
            false
        }
    };
    if let Some(next) = overdue.next() {
        outbox::enqueue(tx, &next.message(saga.id)).await?;
    }
    count_deadline(&saga, step, resent);
    if saga.state.is_finished() {
        count_finished(&saga);
    }
    Ok(())
}
