//! The Kitchen Service: restaurants and menus (it owns them, and publishes `RestaurantCreated` so
//! the Order Service can price orders locally), and the tickets kitchens prepare, driven by the
//! sagas' commands and by the restaurant's own actions (accept, preparing, ready, picked up).
//!
//! The same layout as every FTGO service: [`domain`] (pure rules: [`domain::ticket`] is the state
//! machine), [`store`], [`grpc`], [`messaging`] and [`start`] (the composition root).

pub mod domain;
pub mod grpc;
pub mod messaging;
pub mod store;

use anyhow::Result;
use ftgo_catalog::ServiceName;
use ftgo_platform::{
    config::ServiceConfig, messaging::inbox::ConsumerConfig, runtime::Running, service::Infrastructure,
};
use ftgo_proto::kitchen::v1::kitchen_service_server::KitchenServiceServer;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// This service in the catalog (`ftgo-catalog`): its binary, port, database, gRPC service.
pub const NAME: ServiceName = ServiceName::Kitchen;
/// Its binary's name, which names it in logs, traces, Consul and its message consumers.
const SERVICE: &str = NAME.binary();

/// The Kitchen Service has only the settings every service has.
pub type Config = ServiceConfig;

/// Connects, migrates and starts every task of the service; returns once it is serving.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let api = |infra: &Infrastructure| Routes::new(KitchenServiceServer::new(grpc::KitchenApi::new(infra.db.clone())));
    let (infra, mut running) =
        Infrastructure::start(NAME, &config.common, &sqlx::migrate!("./migrations"), api, shutdown).await?;
    infra.consume(
        &mut running,
        ConsumerConfig::new(SERVICE, vec![messaging::COMMAND_SUBJECTS.to_owned()]),
        messaging::KitchenCommands,
    );
    Ok(running)
}
