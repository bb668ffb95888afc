//! Database per service: one Postgres role and one database owned by it for every service that
//! keeps data, created through an administrator connection named by a Secret.
//!
//! The operator only creates (and, under `databaseReclaimPolicy: Delete`, drops) roles and
//! databases; each service migrates its own schema when it starts.

use std::time::Duration;

use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};

use crate::{controller::build::DatabaseCredentials, crd::PostgresConnection};

/// How long the operator waits for Postgres before reporting it unreachable; a reconcile must
/// not hang on a server that is gone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("cannot reach Postgres at {host}:{port}: {source}")]
    Connect { host: String, port: i32, source: sqlx::Error },
    #[error("Postgres at {host}:{port} did not answer within {CONNECT_TIMEOUT:?}")]
    Timeout { host: String, port: i32 },
    #[error("{what}: {source}")]
    Statement { what: String, source: sqlx::Error },
    #[error("{0:?} is not a safe Postgres name (lowercase letters, digits and _ only)")]
    UnsafeName(String),
}

/// The administrator's login, read from the Secret that `spec.infrastructure.postgres.adminSecretName` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminLogin {
    pub username: String,
    pub password: String,
}

/// An open administrator session on the `postgres` database.
pub struct Admin {
    connection: PgConnection,
}

impl Admin {
    pub async fn connect(server: &PostgresConnection, login: &AdminLogin) -> Result<Self, DatabaseError> {
        let port = u16::try_from(server.port).unwrap_or(5432);
        let options = PgConnectOptions::new()
            .host(&server.host)
            .port(port)
            .username(&login.username)
            .password(&login.password)
            .database("postgres");
        let (host, port) = (server.host.clone(), server.port);
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| DatabaseError::Timeout { host: host.clone(), port })?
            .map_err(|source| DatabaseError::Connect { host, port, source })?;
        Ok(Self { connection })
    }

    /// Makes sure the role and its database exist. A new role gets `credentials.password`; an
    /// existing one gets it only when `password_is_new` (the Secret that held the old one was
    /// lost, so nobody can log in with it any more). Otherwise nothing is written. Returns
    /// whether anything was.
    pub async fn ensure(
        &mut self,
        credentials: &DatabaseCredentials,
        password_is_new: bool,
    ) -> Result<bool, DatabaseError> {
        let role = identifier(&credentials.role)?;
        let database = identifier(&credentials.database)?;
        let password = literal(&credentials.password);
        let role_exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(&credentials.role)
            .fetch_optional(&mut self.connection)
            .await
            .map_err(|source| statement(format!("looking up role {role}"), source))?;
        let mut wrote = true;
        match role_exists {
            None => self.execute(format!("CREATE ROLE {role} LOGIN PASSWORD {password}"), "creating role").await?,
            Some(_) if password_is_new => {
                self.execute(format!("ALTER ROLE {role} WITH LOGIN PASSWORD {password}"), "setting password").await?
            }
            Some(_) => wrote = false,
        }
        let database_exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(&credentials.database)
            .fetch_optional(&mut self.connection)
            .await
            .map_err(|source| statement(format!("looking up database {database}"), source))?;
        if database_exists.is_none() {
            self.execute(format!("CREATE DATABASE {database} OWNER {role}"), "creating database").await?;
            wrote = true;
        }
        Ok(wrote)
    }

    /// Drops a database and its role; what is already gone is fine. `WITH (FORCE)` ends the
    /// sessions of pods that are still shutting down, which would otherwise block the drop.
    pub async fn drop(&mut self, database: &str, role: &str) -> Result<(), DatabaseError> {
        let (database, role) = (identifier(database)?, identifier(role)?);
        self.execute(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"), "dropping database").await?;
        self.execute(format!("DROP ROLE IF EXISTS {role}"), "dropping role").await
    }

    async fn execute(&mut self, sql: String, what: &str) -> Result<(), DatabaseError> {
        let summary = format!("{what} ({})", sql.split(" PASSWORD ").next().unwrap_or_default());
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut self.connection)
            .await
            .map_err(|source| statement(summary, source))?;
        Ok(())
    }
}

fn statement(what: String, source: sqlx::Error) -> DatabaseError {
    DatabaseError::Statement { what, source }
}

/// A quoted identifier. DDL takes no bind parameters, so names are checked to be plain
/// `[a-z0-9_]` (the CRD's pattern for the prefix guarantees it for every name the operator
/// builds) before they are put into SQL.
fn identifier(name: &str) -> Result<String, DatabaseError> {
    let plain = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain { Ok(format!("\"{name}\"")) } else { Err(DatabaseError::UnsafeName(name.to_owned())) }
}

/// A string literal with quotes doubled (standard_conforming_strings is on since Postgres 9.1).
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A fresh password: 256 bits from the operating system's CSPRNG (uuid's v4 draws from
/// `getrandom`), as hex so it needs no escaping in URLs or SQL.
pub fn generate_password() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_become_identifiers() {
        assert_eq!(identifier("shop_order").unwrap(), "\"shop_order\"");
        for bad in ["", "Order", "a\"; DROP TABLE x; --", "x-y", &"a".repeat(64)] {
            assert!(identifier(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn literals_double_their_quotes() {
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn generated_passwords_are_long_hex_and_differ() {
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
