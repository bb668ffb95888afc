//! Database per service: connecting to the service's own Postgres database and migrating it.

use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// The messaging schema (outbox, processed messages, dead letters) that every service database
/// carries. Its migration history lives in `messaging._sqlx_migrations`, apart from the service's.
static MESSAGING_MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Connects a pool to `url`, failing after `connect_timeout` rather than hanging.
pub async fn connect(url: &str, max_connections: u32, connect_timeout: Duration) -> Result<PgPool> {
    let options: PgConnectOptions = url.parse().context("invalid database URL")?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(connect_timeout)
        .connect_with(options)
        .await
        .context("connecting to the service database")
}

/// Brings the database up to date: first the shared messaging schema, then the service's own
/// migrations. Both are safe to run concurrently from several replicas (sqlx takes an advisory
/// lock) and are no-ops when nothing is new.
pub async fn migrate(pool: &PgPool, service: &Migrator) -> Result<()> {
    let mut messaging = Migrator { migrations: MESSAGING_MIGRATIONS.migrations.clone(), ..Migrator::DEFAULT };
    messaging.dangerous_set_table_name("messaging._sqlx_migrations");
    messaging.create_schema("messaging");
    messaging.run(pool).await.context("applying the messaging migrations")?;
    service.run(pool).await.context("applying the service migrations")?;
    Ok(())
}
