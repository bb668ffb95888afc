//! The Order Service: creates orders priced from its replica of the restaurants' menus, and keeps
//! each order's state machine. Creating, cancelling and revising an order publish the events that
//! start the sagas; the sagas' commands move the order to its outcome.
//!
//! The same layout as every FTGO service: [`domain`] (pure rules: [`domain::order`] is the state
//! machine), [`store`], [`grpc`], [`messaging`] and [`start`] (the composition root).

pub mod domain;
pub mod grpc;
pub mod messaging;
pub mod store;
pub mod watch;

use std::sync::Arc;

use anyhow::Result;
use ftgo_catalog::ServiceName;
use ftgo_platform::{config::ServiceConfig, runtime::Running, service::Infrastructure};
use ftgo_proto::order::v1::order_service_server::OrderServiceServer;
use tokio_util::sync::CancellationToken;

/// This service in the catalog (`ftgo-catalog`): its binary, port, database, gRPC service.
pub const NAME: ServiceName = ServiceName::Order;

/// The Order Service has only the settings every service has.
pub type Config = ServiceConfig;

/// Connects, migrates and starts every task of the service; returns once it is serving.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let infra = Infrastructure::connect(&config.common, &sqlx::migrate!("./migrations")).await?;
    let watch = Arc::new(watch::OrderWatch::new(Some(infra.js.client()), shutdown.clone()));
    let api = grpc::OrderApi::new(infra.db.clone(), watch.clone(), infra.publisher());
    let routes = tonic::service::Routes::new(OrderServiceServer::new(api));
    let mut running = infra.serve(NAME, &config.common, routes, shutdown.clone()).await?;
    let listener = watch.clone();
    running.spawn("order watch", async move { listener.listen(shutdown).await });
    messaging::consumers(&infra, &mut running, watch);
    Ok(running)
}
