//! The Kitchen Service: restaurants and menus (it owns them, and publishes `RestaurantCreated` so
//! the Order Service can price orders locally), and the tickets kitchens prepare, driven by the
//! sagas' commands and by the restaurant's own actions (accept, preparing, ready, picked up).
//!
//! The same layout as every FTGO service: [`domain`] (pure rules: [`domain::ticket`] is the state
//! machine), [`store`], [`grpc`], [`commands`] and [`start`] (the composition root).

pub mod commands;
pub mod domain;
pub mod grpc;
pub mod store;

use anyhow::Result;
use ftgo_platform::{
    config::CommonConfig, messaging::inbox::ConsumerConfig, runtime::Running, service::Infrastructure,
};
use ftgo_proto::kitchen::v1::kitchen_service_server::{KitchenServiceServer, SERVICE_NAME};
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "kitchen-service";
static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self { common: CommonConfig::local("kitchen") }
    }
}

/// Connects, migrates and starts every task of the service; returns once it is serving.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let infra = Infrastructure::connect(&config.common, &MIGRATIONS).await?;
    let routes = tonic::service::Routes::new(KitchenServiceServer::new(grpc::KitchenApi::new(infra.db.clone())));
    let mut running = infra.serve(SERVICE, &config.common, routes, &[SERVICE_NAME], shutdown).await?;
    let commands = ConsumerConfig::new(SERVICE, vec![commands::SUBJECTS.to_owned()]);
    infra.consume(&mut running, commands, commands::KitchenCommands);
    tracing::info!(addr = %running.addr, "{SERVICE} serving");
    Ok(running)
}
