//! The start-up every service shares: [`main`] (configuration, telemetry, signals), then
//! [`Infrastructure`]: connect to its database and migrate it, connect to JetStream, serve gRPC,
//! relay the outbox, run message consumers. A service's `start` is this, plus its own routes and
//! handlers.

use std::sync::Arc;

use anyhow::Result;
use async_nats::jetstream;
use ftgo_catalog::ServiceName;
use ftgo_proto::admin::v1::dead_letter_service_server::{DeadLetterServiceServer, SERVICE_NAME as DEAD_LETTERS};
use sqlx::{PgPool, migrate::Migrator};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::{
    admin::DeadLetterApi,
    config::{self, CommonConfig, ServiceConfig, Settings},
    db,
    grpc::GrpcServer,
    messaging::{
        connection,
        dead_letters::Consumers,
        inbox::{ConsumerConfig, InboxConsumer, MessageHandler},
        outbox::Publisher,
        relay::{OutboxRelay, RelayConfig},
        streams,
    },
    registry::{self, Registration},
    runtime::{self, Running},
    telemetry,
};

/// A service binary's whole `main`: loads the service's settings (`defaults`, then its file,
/// Consul and the environment, under the catalog's configuration name), starts logging and
/// tracing under its binary's name, runs `start`, and waits until a signal has stopped it.
pub async fn main<C, F, Fut>(service: ServiceName, defaults: C, start: F) -> Result<()>
where
    C: Settings,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<Running>>,
{
    let settings: C = config::load(service.config_name(), defaults).await?;
    let _telemetry = telemetry::init(service.binary(), &settings.base().log_level);
    let shutdown = runtime::shutdown_on_signals()?;
    start(settings, shutdown).await?.wait().await
}

/// Forgets idempotency keys past their retention, every hour until `shutdown`.
async fn forget_old_keys(db: PgPool, shutdown: CancellationToken) -> Result<()> {
    let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = hourly.tick() => {
                if let Err(e) = crate::idempotency::forget_old(&db).await {
                    tracing::warn!(error = %e, "could not forget old idempotency keys");
                }
            }
        }
    }
}

/// A service made only of what the platform provides: the settings every service has
/// ([`ServiceConfig`]), a database with its migrations, one gRPC API and its message handlers. The
/// Consumer, Kitchen and Accounting services are each one of these, a `static` in their `lib.rs`;
/// a service with settings or tasks of its own (Order, Orchestrator) writes its `start` with
/// [`Infrastructure`] instead.
pub struct Service {
    /// Its entry in the catalog: binary, port, database, gRPC service.
    pub name: ServiceName,
    /// Its database's migrations (`sqlx::migrate!`).
    pub migrations: Migrator,
    /// Its gRPC API; [`Infrastructure::serve`] adds health, reflection and the dead-letter API.
    pub routes: fn(&Infrastructure) -> Routes,
    /// Starts its message handlers, each with [`Infrastructure::consume`].
    pub consumers: fn(&Infrastructure, &mut Running),
}

impl Service {
    /// Connects, migrates and starts every task of the service; returns once it is serving.
    pub async fn start(&self, config: ServiceConfig, shutdown: CancellationToken) -> Result<Running> {
        let (infra, mut running) =
            Infrastructure::start(self.name, &config.common, &self.migrations, self.routes, shutdown).await?;
        (self.consumers)(&infra, &mut running);
        Ok(running)
    }

    /// The service binary's whole `main` ([`main`]).
    pub async fn main(&'static self) -> Result<()> {
        main(self.name, ServiceConfig::local(self.name), |config, shutdown| self.start(config, shutdown)).await
    }
}

/// Joins Consul as the program's loaded `settings` say. Outside `local`, it watches the program's
/// settings document (each new version layered over `settings`), applies its log level and hands
/// the whole of it to `apply` for the rest of what may change live. With `consul.register`, it registers the instance at `addr`
/// (with the catalog's tags and health check) until the program stops.
pub async fn join_consul<C: Settings>(
    running: &mut Running,
    service: ServiceName,
    addr: std::net::SocketAddr,
    settings: C,
    mut apply: impl FnMut(C) + Send + 'static,
) -> Result<()> {
    let base = settings.base().clone();
    if base.uses_consul() {
        config::watch_consul(running, service.config_name(), &base.consul.addr, settings, move |live: C| {
            if let Err(e) = telemetry::set_log_level(&live.base().log_level) {
                tracing::warn!(error = %e, "ignoring the new log level");
            }
            apply(live);
        });
    }
    if base.consul.register {
        registry::register_while_running(running, &base.consul.addr, Registration::of(service, addr)).await?;
    }
    Ok(())
}

/// What a service is connected to.
#[derive(Clone)]
pub struct Infrastructure {
    pub db: PgPool,
    pub js: jetstream::Context,
    pub stream: jetstream::stream::Stream,
    /// The service's outbox relay, started by [`serve`](Self::serve).
    relay: Arc<OutboxRelay>,
    /// The message consumers started by [`consume`](Self::consume), for dead-letter replays.
    consumers: Consumers,
}

impl Infrastructure {
    /// Connects to the service's database (and migrates it with `migrations` after the shared
    /// messaging schema) and to JetStream (creating the FTGO stream if needed).
    pub async fn connect(config: &CommonConfig, migrations: &Migrator) -> Result<Self> {
        let database = &config.database;
        let db = db::connect(&database.url, database.max_connections, database.connect_timeout).await?;
        db::migrate(&db, migrations).await?;
        let (client, link) = connection::connect(&config.nats.url, database.connect_timeout).await?;
        let js = jetstream::new(client);
        let stream = streams::ensure_stream(&js).await?;
        let relay = Arc::new(OutboxRelay::new(db.clone(), js.clone(), RelayConfig::default()).watching(link));
        Ok(Self { db, js, stream, relay, consumers: Consumers::default() })
    }

    /// The start of a service whose gRPC API needs only what it is connected to: connects and
    /// migrates ([`connect`](Self::connect)), then serves `api(&infrastructure)`
    /// ([`serve`](Self::serve)). The caller adds its message consumers with
    /// [`consume`](Self::consume).
    pub async fn start(
        service: ServiceName,
        config: &CommonConfig,
        migrations: &Migrator,
        api: impl FnOnce(&Self) -> Routes,
        shutdown: CancellationToken,
    ) -> Result<(Self, Running)> {
        let infra = Self::connect(config, migrations).await?;
        let running = infra.serve(service, config, api(&infra), shutdown).await?;
        Ok((infra, running))
    }

    /// What a gRPC method that enqueues messages runs inside ([`outbox::scope`](crate::messaging::outbox::scope)), so that they are
    /// published the moment its transaction commits.
    pub fn publisher(&self) -> Publisher {
        self.relay.publisher()
    }

    /// Starts the gRPC server with `routes` (the catalog's gRPC service of `service`, plus health
    /// and reflection) and the outbox relay, and registers `service` in Consul when configured to.
    pub async fn serve(
        &self,
        service: ServiceName,
        config: &CommonConfig,
        routes: Routes,
        shutdown: CancellationToken,
    ) -> Result<Running> {
        let grpc_services: Vec<&str> = service.grpc_service().into_iter().chain([DEAD_LETTERS]).collect();
        let routes = routes.add_service(DeadLetterServiceServer::new(DeadLetterApi::new(
            service,
            self.db.clone(),
            self.consumers.clone(),
        )));
        let server = GrpcServer::bind(config.grpc.listen, routes, &grpc_services).await?;
        let addr = server.local_addr()?;
        let mut running = Running::new(addr, shutdown.clone());
        running.spawn("grpc server", server.serve(shutdown.clone()));
        let relay = self.relay.clone();
        let relay_stop = shutdown.clone();
        running.spawn("outbox relay", async move { relay.run(relay_stop).await });
        let db = self.db.clone();
        running.spawn("idempotency keys", async move { forget_old_keys(db, shutdown).await });
        // Live: the log level. (Everything else is read at start.)
        join_consul(&mut running, service, addr, config.clone(), |_: CommonConfig| {}).await?;
        tracing::info!(%addr, "{} serving", service.binary());
        Ok(running)
    }

    /// Runs an idempotent consumer of `config.filter_subjects` with `handler`, as one of the
    /// service's tasks; its dead letters can be replayed through the admin API.
    pub fn consume<H: MessageHandler>(&self, running: &mut Running, config: ConsumerConfig, handler: H) {
        let name = config.name.clone();
        let consumer = Arc::new(
            InboxConsumer::new(self.db.clone(), self.stream.clone(), config, handler).with_publisher(self.publisher()),
        );
        self.consumers.add(&name, consumer.clone());
        let shutdown = running.shutdown_token();
        running.spawn("message consumer", async move { consumer.run(shutdown).await });
    }
}
