//! The Accounting Service: opens an account for every consumer (from `ConsumerCreated`), and
//! authorizes, reverses and revises card authorizations for the sagas.
//!
//! The same layout as every FTGO service: [`domain`] (pure rules), [`store`] (database), [`grpc`]
//! (synchronous API), [`messaging`] (events and saga commands), [`start`] (composition root).

pub mod domain;
pub mod grpc;
pub mod messaging;
pub mod store;

use anyhow::Result;
use ftgo_catalog::ServiceName;
use ftgo_platform::{
    config::ServiceConfig, messaging::inbox::ConsumerConfig, runtime::Running, service::Infrastructure,
};
use ftgo_proto::accounting::v1::accounting_service_server::AccountingServiceServer;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// This service in the catalog (`ftgo-catalog`): its binary, port, database, gRPC service.
pub const NAME: ServiceName = ServiceName::Accounting;
/// Its binary's name, which names it in logs, traces, Consul and its message consumers.
const SERVICE: &str = NAME.binary();

/// The Accounting Service has only the settings every service has.
pub type Config = ServiceConfig;

/// Connects, migrates and starts every task of the service; returns once it is serving.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let api =
        |infra: &Infrastructure| Routes::new(AccountingServiceServer::new(grpc::AccountingApi::new(infra.db.clone())));
    let (infra, mut running) =
        Infrastructure::start(NAME, &config.common, &sqlx::migrate!("./migrations"), api, shutdown).await?;
    infra.consume(
        &mut running,
        ConsumerConfig::new(format!("{SERVICE}-consumer-events"), vec![messaging::EVENT_SUBJECTS.to_owned()]),
        messaging::ConsumerEvents,
    );
    infra.consume(
        &mut running,
        ConsumerConfig::new(format!("{SERVICE}-commands"), vec![messaging::COMMAND_SUBJECTS.to_owned()]),
        messaging::CardCommands,
    );
    Ok(running)
}
