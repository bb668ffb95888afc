//! A private Postgres cluster: `initdb` into a temporary directory, `postgres` on a free loopback
//! port, and a fresh database per test (the zero-to-production pattern). Tuned for speed, not
//! durability, unless started with [`Durability::Durable`].

use std::{process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use sqlx::{Connection, PgConnection, PgPool, postgres::PgPoolOptions};
use tempfile::TempDir;

use crate::{
    host::{self, RunAs},
    process::{self, ServerProcess},
};

/// The superuser every private cluster is created with. Authentication is `trust` on loopback:
/// these clusters hold nothing but test data and listen on 127.0.0.1 only.
pub const SUPERUSER: &str = "postgres";

/// Settings every private cluster gets: room for every service's pool and the tests' own.
const COMMON_SETTINGS: &[(&str, &str)] = &[("max_connections", "300"), ("shared_buffers", "32MB")];

/// How Postgres is tuned for throwaway data: durability is traded for speed. Crash-safety tests
/// kill FTGO processes, never Postgres, so a durable WAL is not what they exercise.
const FAST_SETTINGS: &[(&str, &str)] = &[("fsync", "off"), ("synchronous_commit", "off"), ("full_page_writes", "off")];

/// Postgres's own defaults, spelled out: every commit waits until its WAL is flushed to disk.
const DURABLE_SETTINGS: &[(&str, &str)] = &[("fsync", "on"), ("synchronous_commit", "on"), ("full_page_writes", "on")];

/// Whether a cluster keeps what it committed through a crash of the machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `fsync`, `synchronous_commit` and `full_page_writes` off: what tests use ([`Postgres::start`]).
    #[default]
    Fast,
    /// All three on, as a production Postgres runs: a commit returns once its WAL is on disk (if
    /// the temporary directory is on a disk, not a tmpfs).
    Durable,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Durable => "durable",
        }
    }

    fn settings(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Fast => FAST_SETTINGS,
            Self::Durable => DURABLE_SETTINGS,
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Durability {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fast" => Ok(Self::Fast),
            "durable" => Ok(Self::Durable),
            other => {
                bail!("{other:?} is not a Postgres durability: `fast` (fsync off, the tests' settings) or `durable`")
            }
        }
    }
}

#[derive(Debug)]
pub struct Postgres {
    port: u16,
    // Field order matters: stop the server before its directory is removed.
    process: ServerProcess,
    _dir: TempDir,
}

/// A database created for one test, with its connection URL.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn pool(&self) -> Result<PgPool> {
        PgPoolOptions::new()
            .max_connections(5)
            .connect(&self.url)
            .await
            .with_context(|| format!("connecting to {}", self.name))
    }
}

impl Postgres {
    /// Creates and starts a new cluster with the fast settings; ready when it accepts a connection.
    pub async fn start() -> Result<Self> {
        Self::start_with(Durability::Fast).await
    }

    /// Creates and starts a new cluster, fast or durable; ready when it accepts a connection.
    pub async fn start_with(durability: Durability) -> Result<Self> {
        process::retry_on_new_ports("postgres", || Self::start_once(durability)).await
    }

    async fn start_once(durability: Durability) -> Result<Self> {
        let dir = host::workdir("postgres")?;
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");
        let run_as = RunAs::unprivileged()?;
        if let Some(user) = run_as {
            user.own(dir.path())?;
        }

        let mut initdb = Command::new(host::binary("initdb")?);
        initdb
            .args(["--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C", "-U", SUPERUSER, "-D"])
            .arg(&data)
            .current_dir(dir.path());
        if let Some(user) = run_as {
            user.apply(&mut initdb);
        }
        let out = initdb.output().context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }

        let port = process::free_port()?;
        let mut server = Command::new(host::binary("postgres")?);
        server
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="])
            .current_dir(dir.path());
        for (key, value) in COMMON_SETTINGS.iter().chain(durability.settings()) {
            server.args(["-c", &format!("{key}={value}")]);
        }
        if let Some(user) = run_as {
            user.apply(&mut server);
        }
        // SIGINT is Postgres's "fast shutdown": it does not wait for clients to disconnect.
        let mut process = ServerProcess::spawn("postgres", server, &log, libc::SIGINT)?;
        let url = admin_url(port, "postgres");
        process.wait_ready(Duration::from_secs(30), || async { PgConnection::connect(&url).await.is_ok() }).await?;
        Ok(Self { port, process, _dir: dir })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A superuser URL for `database`.
    pub fn url(&self, database: &str) -> String {
        admin_url(self.port, database)
    }

    /// Creates a database with a unique name starting with `prefix`.
    pub async fn create_database(&self, prefix: &str) -> Result<TestDatabase> {
        let prefix: String = prefix.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let name = format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut admin = PgConnection::connect(&self.url("postgres")).await?;
        // The name is built from [a-z0-9_] only, so quoting it is enough.
        sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#))).execute(&mut admin).await?;
        Ok(TestDatabase { url: self.url(&name), name })
    }

    pub fn process(&mut self) -> &mut ServerProcess {
        &mut self.process
    }
}

fn admin_url(port: u16, database: &str) -> String {
    format!("postgres://{SUPERUSER}@127.0.0.1:{port}/{database}")
}
