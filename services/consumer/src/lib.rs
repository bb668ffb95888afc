//! The Consumer Service: registers the people who order food, publishes `ConsumerCreated` (from
//! which Accounting opens their account), and answers the Create Order saga's `VerifyConsumer`.
//!
//! Layout, the same in every FTGO service: [`domain`] holds the rules and has no I/O; [`store`] is
//! the database; [`grpc`] the synchronous API; [`messaging`] the saga participant; [`start`] wires
//! them together (the composition root that `main` calls and tests call too).

pub mod domain;
pub mod grpc;
pub mod messaging;
pub mod store;

use anyhow::Result;
use ftgo_catalog::ServiceName;
use ftgo_platform::{
    config::ServiceConfig, messaging::inbox::ConsumerConfig, runtime::Running, service::Infrastructure,
};
use ftgo_proto::consumer::v1::consumer_service_server::ConsumerServiceServer;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// This service in the catalog (`ftgo-catalog`): its binary, port, database, gRPC service.
pub const NAME: ServiceName = ServiceName::Consumer;
/// Its binary's name, which names it in logs, traces, Consul and its message consumers.
const SERVICE: &str = NAME.binary();

/// The Consumer Service has only the settings every service has.
pub type Config = ServiceConfig;

/// Connects, migrates and starts every task of the service; returns once it is serving.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let api =
        |infra: &Infrastructure| Routes::new(ConsumerServiceServer::new(grpc::ConsumerApi::new(infra.db.clone())));
    let (infra, mut running) =
        Infrastructure::start(NAME, &config.common, &sqlx::migrate!("./migrations"), api, shutdown).await?;
    infra.consume(
        &mut running,
        ConsumerConfig::new(SERVICE, vec![messaging::COMMAND_SUBJECTS.to_owned()]),
        messaging::ConsumerCommands,
    );
    Ok(running)
}
