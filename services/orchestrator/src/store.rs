//! Saga instances in the `orchestrator` database. The row holds everything needed to resume.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, types::Json};
use uuid::Uuid;

use crate::sagas::{Saga, SagaDefinition, SagaState, StepRecord};

/// A saga as stored, before its data is read as a particular saga type.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SagaRow {
    pub id: Uuid,
    pub saga_type: String,
    pub order_id: String,
    pub state: String,
    pub step: i32,
    pub data: Json<Value>,
    pub history: Json<Vec<StepRecord>>,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SagaRow {
    pub fn decode<D: SagaDefinition>(&self) -> Result<Saga<D>, String> {
        Ok(Saga {
            id: self.id,
            order_id: self.order_id.clone(),
            state: SagaState::parse(&self.state).ok_or_else(|| format!("unknown saga state {}", self.state))?,
            step: usize::try_from(self.step).map_err(|e| e.to_string())?,
            data: serde_json::from_value(self.data.0.clone()).map_err(|e| format!("saga data: {e}"))?,
            failure_reason: self.failure_reason.clone(),
            history: self.history.0.clone(),
        })
    }
}

macro_rules! select_sagas {
    ($tail:literal) => {
        concat!(
            "SELECT id, saga_type, order_id, state, step, data, history, failure_reason, created_at, updated_at FROM sagas ",
            $tail
        )
    };
}

fn data<D: SagaDefinition>(saga: &Saga<D>) -> sqlx::Result<Json<Value>> {
    serde_json::to_value(&saga.data).map(Json).map_err(|e| sqlx::Error::Encode(e.into()))
}

pub async fn insert<D: SagaDefinition>(tx: &mut PgConnection, saga: &Saga<D>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sagas (id, saga_type, order_id, state, step, data, history, failure_reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(saga.id)
    .bind(D::TYPE)
    .bind(&saga.order_id)
    .bind(saga.state.as_str())
    .bind(saga.step as i32)
    .bind(data(saga)?)
    .bind(Json(&saga.history))
    .bind(&saga.failure_reason)
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn save<D: SagaDefinition>(tx: &mut PgConnection, saga: &Saga<D>) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE sagas SET state = $2, step = $3, data = $4, history = $5, failure_reason = $6, updated_at = now()
         WHERE id = $1",
    )
    .bind(saga.id)
    .bind(saga.state.as_str())
    .bind(saga.step as i32)
    .bind(data(saga)?)
    .bind(Json(&saga.history))
    .bind(&saga.failure_reason)
    .execute(tx)
    .await?;
    Ok(())
}

/// Reads a saga and locks it until the transaction ends: replies to one saga are applied one at a
/// time, even by several orchestrator replicas.
pub async fn lock(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<SagaRow>> {
    sqlx::query_as(select_sagas!("WHERE id = $1 FOR UPDATE")).bind(id).fetch_optional(tx).await
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<SagaRow>> {
    sqlx::query_as(select_sagas!("WHERE id = $1")).bind(id).fetch_optional(conn).await
}

pub async fn for_order(conn: &mut PgConnection, order_id: &str) -> sqlx::Result<Vec<SagaRow>> {
    sqlx::query_as(select_sagas!("WHERE order_id = $1 ORDER BY created_at, id")).bind(order_id).fetch_all(conn).await
}
