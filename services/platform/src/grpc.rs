//! The gRPC server every service runs: its own services, plus `grpc.health.v1` (what Consul and
//! Kubernetes probe) and server reflection (so `grpcurl` can explore it), with graceful shutdown.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use sqlx::{PgConnection, PgPool};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, metadata::MetadataValue, service::Routes, transport::server::TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};

const HEALTH: &str = "grpc.health.v1.Health";
const REFLECTION: &str = "grpc.reflection.v1.ServerReflection";

/// A bound gRPC listener, ready to serve.
pub struct GrpcServer {
    listener: TcpListener,
    health: HealthReporter,
    routes: Routes,
}

impl GrpcServer {
    /// Binds `addr` and assembles `routes` with health and reflection. `service_names` are the
    /// fully qualified gRPC services in `routes`, reported SERVING in the health service.
    pub async fn bind(addr: SocketAddr, routes: Routes, service_names: &[&str]) -> Result<Self> {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding the gRPC listener to {addr}"))?;
        let (health, health_service) = tonic_health::server::health_reporter();
        for name in service_names {
            health.set_service_status(*name, ServingStatus::Serving).await;
        }
        // Reflection lists what this server implements, not every service in the descriptors.
        let listed = service_names.iter().copied().chain([HEALTH, REFLECTION]);
        let reflection = listed
            .fold(tonic_reflection::server::Builder::configure(), |builder, name| builder.with_service_name(name))
            .register_encoded_file_descriptor_set(ftgo_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("building the reflection service")?;
        let routes = routes.add_service(health_service).add_service(reflection);
        Ok(Self { listener, health, routes })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` is cancelled; then reports NOT_SERVING (so load balancers stop
    /// sending) and lets in-flight calls finish.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<()> {
        let health = self.health.clone();
        let stopping = async move {
            shutdown.cancelled().await;
            health.set_service_status("", ServingStatus::NotServing).await;
        };
        tonic::transport::Server::builder()
            // Each call gets a span, a child of the caller's trace when it sent one.
            .trace_fn(|request| {
                let span = tracing::info_span!("grpc request", otel.name = %request.uri().path(), otel.kind = "server");
                crate::telemetry::set_parent_from(&span, &crate::telemetry::HttpHeaders(request.headers()));
                span
            })
            .add_routes(self.routes)
            .serve_with_incoming_shutdown(TcpIncoming::from(self.listener), stopping)
            .await
            .context("gRPC server failed")
    }
}

/// The response metadata by which a service says that a `NOT_FOUND` is its own answer: the entity
/// does not exist. A `NOT_FOUND` without it came from something in between, such as Fabio, which
/// answers `NOT_FOUND "no route found"` while no healthy instance of the service is registered:
/// the service is unavailable, and the entity may well exist.
pub const ABSENT_MARK: &str = "ftgo-absent";

/// `NOT_FOUND` as a service's own answer ([`ABSENT_MARK`]): `message` says what does not exist.
pub fn not_found(message: impl Into<String>) -> Status {
    let mut status = Status::not_found(message);
    status.metadata_mut().insert(ABSENT_MARK, MetadataValue::from_static("1"));
    status
}

/// Whether `status` says that the entity does not exist ([`not_found`]), rather than that nothing
/// answered for the service.
pub fn is_absent(status: &Status) -> bool {
    status.code() == Code::NotFound && status.metadata().contains_key(ABSENT_MARK)
}

/// Reads one entity with `find` on a connection from `db`: a database failure is
/// [`database_error`], no entity is [`not_found`] with the message `missing` gives.
pub async fn fetch<T>(
    db: &PgPool,
    find: impl AsyncFnOnce(&mut PgConnection) -> sqlx::Result<Option<T>>,
    missing: impl FnOnce() -> String,
) -> Result<T, Status> {
    let mut conn = db.acquire().await.map_err(database_error)?;
    find(&mut conn).await.map_err(database_error)?.ok_or_else(|| not_found(missing()))
}

/// The gRPC status for a database failure: UNAVAILABLE when the database cannot be reached (the
/// caller may retry), INTERNAL otherwise. The details go to the log, not to the client.
pub fn database_error(e: sqlx::Error) -> tonic::Status {
    tracing::error!(error = %e, "database error");
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            tonic::Status::unavailable("the database is unavailable; try again")
        }
        _ => tonic::Status::internal("internal error"),
    }
}
