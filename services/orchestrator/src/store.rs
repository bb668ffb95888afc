//! Saga instances in the `orchestrator` database. The row holds everything needed to resume.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ftgo_platform::ids::{OrderId, SagaId};
use serde_json::Value;
use sqlx::{PgConnection, types::Json};

use crate::sagas::{Saga, SagaDefinition, SagaState, StepRecord};

/// A saga as stored, before its data is read as a particular saga type.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SagaRow {
    pub id: SagaId,
    pub saga_type: String,
    /// Kept as text: the column predates typed ids.
    pub order_id: String,
    pub state: String,
    pub step: i32,
    pub data: Json<Value>,
    pub history: Json<Vec<StepRecord>>,
    pub failure_reason: Option<String>,
    pub awaiting: Option<String>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SagaRow {
    pub fn decode<D: SagaDefinition>(&self) -> Result<Saga<D>, String> {
        Ok(Saga {
            id: self.id,
            order_id: self.order_id.parse().map_err(|e| format!("{e}"))?,
            state: SagaState::parse(&self.state).ok_or_else(|| format!("unknown saga state {}", self.state))?,
            step: usize::try_from(self.step).map_err(|e| e.to_string())?,
            data: serde_json::from_value(self.data.0.clone()).map_err(|e| format!("saga data: {e}"))?,
            failure_reason: self.failure_reason.clone(),
            history: self.history.0.clone(),
            awaiting: self.awaiting.clone(),
            attempts: u32::try_from(self.attempts).map_err(|e| format!("attempts: {e}"))?,
        })
    }
}

macro_rules! select_sagas {
    ($tail:literal) => {
        concat!(
            "SELECT id, saga_type, order_id, state, step, data, history, failure_reason, awaiting, attempts, created_at,
                    updated_at
               FROM sagas ",
            $tail
        )
    };
}

fn data<D: SagaDefinition>(saga: &Saga<D>) -> sqlx::Result<Json<Value>> {
    serde_json::to_value(&saga.data).map(Json).map_err(|e| sqlx::Error::Encode(e.into()))
}

/// When a saga's step is overdue: `timeout` after its command was sent, while the saga waits for
/// it (never for a finished or failed saga).
fn deadline<D>(saga: &Saga<D>, timeout: Duration) -> Option<DateTime<Utc>> {
    let waits = matches!(saga.state, SagaState::Running | SagaState::Compensating) && saga.awaiting.is_some();
    waits.then(|| Utc::now() + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX))
}

/// Stores a saga, new or moved on (or that sent its step again); its step in flight is due within
/// `timeout`.
pub async fn save<D: SagaDefinition>(tx: &mut PgConnection, saga: &Saga<D>, timeout: Duration) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sagas (id, saga_type, order_id, state, step, data, history, failure_reason, awaiting, attempts,
                            deadline)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (id) DO UPDATE
         SET state = EXCLUDED.state, step = EXCLUDED.step, data = EXCLUDED.data, history = EXCLUDED.history,
             failure_reason = EXCLUDED.failure_reason, awaiting = EXCLUDED.awaiting, attempts = EXCLUDED.attempts,
             deadline = EXCLUDED.deadline, updated_at = now()",
    )
    .bind(saga.id)
    .bind(D::TYPE)
    .bind(saga.order_id.to_string())
    .bind(saga.state.as_str())
    .bind(saga.step as i32)
    .bind(data(saga)?)
    .bind(Json(&saga.history))
    .bind(&saga.failure_reason)
    .bind(&saga.awaiting)
    .bind(saga.attempts as i32)
    .bind(deadline(saga, timeout))
    .execute(tx)
    .await?;
    Ok(())
}

/// Up to `limit` sagas whose step is overdue, oldest deadline first, locked until the transaction
/// ends; sagas that another transaction holds (a reply being applied) are skipped.
pub async fn lock_overdue(tx: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<SagaRow>> {
    sqlx::query_as(select_sagas!("WHERE deadline <= now() ORDER BY deadline LIMIT $1 FOR UPDATE SKIP LOCKED"))
        .bind(limit)
        .fetch_all(tx)
        .await
}

/// Takes a saga that cannot be read off the deadline sweep (it is logged, for an operator).
pub async fn clear_deadline(tx: &mut PgConnection, id: SagaId) -> sqlx::Result<()> {
    sqlx::query("UPDATE sagas SET deadline = NULL WHERE id = $1").bind(id).execute(tx).await?;
    Ok(())
}

/// Reads a saga and locks it until the transaction ends: replies to one saga are applied one at a
/// time, even by several orchestrator replicas.
pub async fn lock(tx: &mut PgConnection, id: SagaId) -> sqlx::Result<Option<SagaRow>> {
    sqlx::query_as(select_sagas!("WHERE id = $1 FOR UPDATE")).bind(id).fetch_optional(tx).await
}

pub async fn find(conn: &mut PgConnection, id: SagaId) -> sqlx::Result<Option<SagaRow>> {
    sqlx::query_as(select_sagas!("WHERE id = $1")).bind(id).fetch_optional(conn).await
}

pub async fn for_order(conn: &mut PgConnection, order_id: OrderId) -> sqlx::Result<Vec<SagaRow>> {
    sqlx::query_as(select_sagas!("WHERE order_id = $1 ORDER BY created_at, id"))
        .bind(order_id.to_string())
        .fetch_all(conn)
        .await
}
