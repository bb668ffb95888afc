//! The Orchestration Service: runs the Create Order, Cancel Order and Revise Order sagas.
//!
//! [`sagas`] is the engine and the three saga definitions (pure); [`store`] keeps every instance in
//! the `orchestrator` database so a restarted orchestrator simply carries on; [`messaging`] starts
//! sagas from the Order Service's events and moves them on with the participants' replies;
//! [`grpc`] shows them; [`start`] is the composition root.

pub mod grpc;
pub mod messaging;
pub mod sagas;
pub mod store;

use anyhow::Result;
use ftgo_catalog::ServiceName;
use ftgo_platform::{
    config::ServiceConfig, messaging::inbox::ConsumerConfig, runtime::Running, service::Infrastructure,
};
use ftgo_proto::orchestrator::v1::saga_service_server::SagaServiceServer;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// This service in the catalog (`ftgo-catalog`): its binary, port, database, gRPC service.
pub const NAME: ServiceName = ServiceName::Orchestrator;
/// Its binary's name, which names it in logs, traces, Consul and its message consumers.
const SERVICE: &str = NAME.binary();

/// The Orchestration Service has only the settings every service has.
pub type Config = ServiceConfig;

/// Connects, migrates and starts every task of the service; returns once it is serving.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let api = |infra: &Infrastructure| Routes::new(SagaServiceServer::new(grpc::SagaApi::new(infra.db.clone())));
    let (infra, mut running) =
        Infrastructure::start(NAME, &config.common, &sqlx::migrate!("./migrations"), api, shutdown).await?;
    infra.consume(
        &mut running,
        ConsumerConfig::new(format!("{SERVICE}-order-events"), vec![messaging::EVENT_SUBJECTS.to_owned()]),
        messaging::OrderEvents,
    );
    infra.consume(
        &mut running,
        ConsumerConfig::new(format!("{SERVICE}-replies"), vec![messaging::REPLY_SUBJECTS.to_owned()]),
        messaging::SagaReplies,
    );
    Ok(running)
}
