//! The consumer table, through sqlx.

use ftgo_platform::ids::ConsumerId;
use sqlx::PgConnection;

use crate::domain::consumer::{Consumer, PersonName};

pub async fn insert(tx: &mut PgConnection, consumer: &Consumer) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO consumers (id, first_name, last_name) VALUES ($1, $2, $3)")
        .bind(consumer.id)
        .bind(&consumer.name.first_name)
        .bind(&consumer.name.last_name)
        .execute(tx)
        .await?;
    Ok(())
}

pub async fn find(db: &mut PgConnection, id: ConsumerId) -> sqlx::Result<Option<Consumer>> {
    let row: Option<(ConsumerId, String, String)> =
        sqlx::query_as("SELECT id, first_name, last_name FROM consumers WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(id, first_name, last_name)| Consumer { id, name: PersonName { first_name, last_name } }))
}
