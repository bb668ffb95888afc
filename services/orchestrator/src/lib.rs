//! The Orchestration Service: runs the Create Order, Cancel Order and Revise Order sagas.
//!
//! [`sagas`] is the engine and the three saga definitions (pure); [`store`] keeps every instance in
//! the `orchestrator` database so a restarted orchestrator simply carries on; [`messaging`] starts
//! sagas from the Order Service's events and moves them on with the participants' replies;
//! [`grpc`] shows them; [`deadlines`] sends an unanswered step again and gives up on it in the
//! end; [`start`] is the composition root.

pub mod deadlines;
pub mod grpc;
pub mod messaging;
pub mod sagas;
pub mod store;

use std::time::Duration;

use anyhow::Result;
use ftgo_catalog::ServiceName;
use ftgo_platform::{
    config::{self, BaseConfig, CommonConfig, Settings},
    runtime::Running,
    service::Infrastructure,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// This service in the catalog (`ftgo-catalog`): its binary, port, database, gRPC service.
pub const NAME: ServiceName = ServiceName::Orchestrator;

/// The settings every service has, and how long a saga waits for each step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    #[serde(default)]
    pub sagas: StepDeadlines,
}

impl Config {
    /// Defaults for one machine.
    pub fn local() -> Self {
        Self { common: config::ServiceConfig::local(NAME).common, sagas: StepDeadlines::default() }
    }
}

impl Settings for Config {
    fn base(&self) -> &BaseConfig {
        &self.common.base
    }
}

/// How long a saga waits for the reply to a step's command before it sends the command again,
/// and how many times it sends it in all before it gives up on the step (`[sagas]` in the
/// settings, `FTGO_SAGAS__REPLY_TIMEOUT` and `FTGO_SAGAS__ATTEMPTS` in the environment).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StepDeadlines {
    /// Seconds.
    #[serde(with = "config::seconds")]
    pub reply_timeout: Duration,
    /// At least 1: the first send counts.
    pub attempts: u32,
}

impl Default for StepDeadlines {
    fn default() -> Self {
        Self { reply_timeout: Duration::from_secs(10), attempts: 3 }
    }
}

/// Connects, migrates and starts every task of the service; returns once it is serving.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    anyhow::ensure!(config.sagas.attempts >= 1, "sagas.attempts must be at least 1");
    anyhow::ensure!(!config.sagas.reply_timeout.is_zero(), "sagas.reply_timeout must be more than 0 s");
    let deadlines = config.sagas;
    let migrations = sqlx::migrate!("./migrations");
    let (infra, mut running) = Infrastructure::start(NAME, &config.common, &migrations, grpc::routes, shutdown).await?;
    messaging::consumers(&infra, &mut running, deadlines);
    let sweep = deadlines::Sweep { db: infra.db.clone(), publisher: infra.publisher(), deadlines };
    let stop = running.shutdown_token();
    running.spawn("saga deadlines", async move { sweep.run(stop).await });
    Ok(running)
}
