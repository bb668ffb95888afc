//! The database step of a reconcile: each named service's role and database, and the
//! credentials that may go into Secrets; and dropping them on delete under `Delete`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt, runtime::events::EventType};

use ftgo_catalog::ServiceName;

use crate::{
    controller::{
        apply::postgres::{Admin, AdminLogin, DatabaseError, generate_password},
        build::DatabaseCredentials,
        validate::System,
    },
    crd::{DatabaseReclaimPolicy, ExternalRecord, FtgoSystem},
    names::{credentials_secret_name, database_name},
};

use crate::controller::Context;

/// Why the administrator login could not be read from the Secret the spec names.
#[derive(Debug, thiserror::Error)]
pub enum AdminLoginError {
    #[error("reading Secret {secret}: {source}")]
    Read {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("the Postgres admin Secret {secret} does not exist")]
    SecretMissing { secret: String },
    #[error("the Postgres admin Secret {secret} has no key {key:?}")]
    KeyMissing { secret: String, key: &'static str },
}

/// Reads the administrator login from the Secret the spec names.
pub(crate) async fn admin_login(client: &Client, system: &System) -> Result<AdminLogin, AdminLoginError> {
    let name = &system.postgres.admin_secret_name;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &system.namespace);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|source| AdminLoginError::Read { secret: name.clone(), source })?
        .ok_or_else(|| AdminLoginError::SecretMissing { secret: name.clone() })?;
    let field = |key: &'static str| {
        secret_text(&secret, key).ok_or_else(|| AdminLoginError::KeyMissing { secret: name.clone(), key })
    };
    Ok(AdminLogin { username: field("username")?, password: field("password")? })
}

pub(crate) fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

/// Makes sure every named service's role and database exist. Returns the credentials whose
/// database is known to accept them (only those are written into Secrets, so a Secret never
/// holds a password Postgres does not know), and what went wrong, if anything. Every database
/// Postgres confirmed is added to `record`.
pub(crate) async fn ensure_databases(
    system: &System,
    secrets: &[Secret],
    ctx: &Context,
    object: &FtgoSystem,
    record: &mut ExternalRecord,
) -> (BTreeMap<ServiceName, DatabaseCredentials>, Result<(), String>) {
    let mut wanted = Vec::new();
    for spec in &system.services {
        let Some(database) = database_name(system, spec.name) else { continue };
        let secret_name = credentials_secret_name(&system.name, spec.name);
        let existing = secrets.iter().find(|s| s.name_any() == secret_name).and_then(|s| secret_text(s, "password"));
        let is_new = existing.is_none();
        let password = existing.unwrap_or_else(generate_password);
        wanted.push((spec.name, DatabaseCredentials { role: database.clone(), database, password }, is_new));
    }
    let mut ready = BTreeMap::new();
    if wanted.is_empty() {
        return (ready, Ok(()));
    }
    let admin = match admin_login(&ctx.client, system).await {
        Ok(login) => Admin::connect(&system.postgres, &login).await.map_err(|e| e.to_string()),
        Err(why) => Err(why.to_string()),
    };
    let mut admin = match admin {
        Ok(admin) => admin,
        Err(why) => {
            // Keep the Secrets that exist: the databases behind them were made before.
            let existing = wanted.into_iter().filter(|(_, _, is_new)| !is_new);
            ready.extend(existing.map(|(service, credentials, _)| (service, credentials)));
            return (ready, Err(why));
        }
    };
    let mut problems = Vec::new();
    let mut created = Vec::new();
    for (service, credentials, is_new) in wanted {
        match admin.ensure(&credentials, is_new).await {
            Ok(true) => {
                record.add_database(&credentials.database);
                created.push(credentials.database.clone());
                ready.insert(service, credentials);
            }
            Ok(false) => {
                record.add_database(&credentials.database);
                ready.insert(service, credentials);
            }
            Err(err) => {
                problems.push(format!("{service}: {err}"));
                if !is_new {
                    ready.insert(service, credentials);
                }
            }
        }
    }
    if !created.is_empty() {
        let note = format!("created or updated databases and roles {}", created.join(", "));
        ctx.event(object, EventType::Normal, "DatabasesProvisioned", note).await;
    }
    if problems.is_empty() { (ready, Ok(())) } else { (ready, Err(problems.join("; "))) }
}

/// Under `Delete`, drops `databases` and their roles (of the same name). Nothing to drop needs
/// no Postgres at all.
pub(crate) async fn drop_databases(
    system: &System,
    databases: &[String],
    ctx: &Context,
    object: &FtgoSystem,
) -> Result<(), DatabaseError> {
    if system.database_reclaim_policy == DatabaseReclaimPolicy::Retain || databases.is_empty() {
        return Ok(());
    }
    let login = match admin_login(&ctx.client, system).await {
        Ok(login) => login,
        Err(why) => {
            // The admin Secret goes when the namespace goes; then there is no way to log in,
            // and waiting would only keep the namespace from ever disappearing.
            let note = format!("databases were not dropped: {why}");
            ctx.event(object, EventType::Warning, "DatabasesNotDropped", note).await;
            return Ok(());
        }
    };
    let mut admin = Admin::connect(&system.postgres, &login).await?;
    for database in databases {
        admin.drop(database, database).await?;
    }
    let note = format!("dropped databases and roles {}", databases.join(", "));
    ctx.event(object, EventType::Normal, "DatabasesDropped", note).await;
    Ok(())
}
