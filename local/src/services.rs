//! The FTGO services as child processes of `ftgo-local up`: each binary started with its
//! settings file in `.ftgo/settings/` (the service's own settings type, filled in and written as
//! the TOML its loader reads, `FTGO_CONFIG_FILE`), its log in `.ftgo/logs/`, and a health check
//! before the next step.
//!
//! Every service registers itself in Consul; the gateway calls them all through Fabio's gRPC
//! listener, which routes each call by its gRPC service name to a healthy instance (server-side
//! discovery), and Fabio's HTTP listener serves the public API through the gateway.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use ftgo_api_gateway::{BackendsConfig, Config as GatewayConfig, HttpConfig};
use ftgo_catalog::ServiceName;
use ftgo_platform::config::{BaseConfig, ConsulConfig, ServiceConfig};
use ftgo_testenv::{Consul, Fabio, Nats, Postgres, process::ServerProcess};
use serde::Serialize;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// Where `up` finds the binaries and writes the services' settings files and logs.
pub struct Dirs {
    pub bin: PathBuf,
    pub settings: PathBuf,
    pub logs: PathBuf,
}

/// A running service process and where it answers.
pub struct RunningService {
    pub service: ServiceName,
    pub binary: &'static str,
    pub addr: SocketAddr,
    /// The database every instance of the service shares.
    pub database_url: String,
    /// Its settings file (its port, its database), which a restart reads again.
    settings: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    /// Stopped (SIGTERM, then a clean shutdown) when dropped.
    process: ServerProcess,
}

impl RunningService {
    /// Kills the process with `SIGKILL`, as a crash would: it neither finishes what it is doing
    /// nor deregisters from Consul.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the service again after [`kill`](Self::kill): the same settings, so the same port
    /// and database, and waits until it serves.
    pub async fn restart(&mut self) -> Result<()> {
        self.process = launch(self.service, &self.bin, &self.settings, &self.log, self.addr).await?;
        Ok(())
    }
}

/// The directory holding the service binaries: the one `ftgo-local` itself was built into.
pub fn binary_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding ftgo-local's own path")?;
    Ok(exe.parent().context("ftgo-local has no parent directory")?.to_owned())
}

fn command(bin_dir: &Path, binary: &str) -> Result<Command> {
    let path = bin_dir.join(binary);
    if !path.exists() {
        bail!("{} is missing: build the services first (`cargo build --bins`, which `just up` does)", path.display());
    }
    let mut cmd = Command::new(path);
    // The services' own defaults decide their log level; a RUST_LOG meant for ftgo-local must
    // not leak into them.
    cmd.env_remove("RUST_LOG");
    Ok(cmd)
}

/// Writes `settings` as the settings file `name` in `dir`, and returns its path.
fn write_settings<T: Serialize>(dir: &Path, name: &str, settings: &T) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    let written = toml::to_string(settings).with_context(|| format!("writing {name}'s settings"))?;
    std::fs::write(&path, written).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Writes `settings` as `service`'s settings file in `dir` and points `cmd` at it. Variables
/// (`FTGO_LOG_LEVEL=debug just up`) still override it, as the service's layering says.
fn use_settings<T: Serialize>(cmd: &mut Command, dir: &Path, service: ServiceName, settings: &T) -> Result<()> {
    cmd.env("FTGO_CONFIG_FILE", write_settings(dir, service.config_name(), settings)?);
    Ok(())
}

/// Every service here registers itself in the one Consul, from which Fabio routes.
fn registering(consul: &Consul) -> ConsulConfig {
    ConsulConfig { addr: consul.http_url(), register: true }
}

/// Creates the service's database and starts `replicas` instances of it (at least one), each on a
/// free port, waiting until each one's gRPC health check answers `SERVING` (the first migrates
/// the database before it serves).
pub async fn start(
    service: ServiceName,
    replicas: usize,
    dirs: &Dirs,
    postgres: &Postgres,
    nats: &Nats,
    consul: &Consul,
) -> Result<Vec<RunningService>> {
    let database = postgres.create_database(service.database().context("a back-end service owns a database")?).await?;
    let mut instances = Vec::with_capacity(replicas.max(1));
    for instance in 0..replicas.max(1) {
        instances.push(start_instance(service, instance, &database.url, dirs, nats, consul).await?);
    }
    Ok(instances)
}

/// Starts instance number `instance` (0 for the first) of `service` on a free port, on the
/// database at `database_url` that every instance of the service shares; each instance registers
/// in Consul under its own address, and Fabio balances between the healthy ones.
pub async fn start_instance(
    service: ServiceName,
    instance: usize,
    database_url: &str,
    dirs: &Dirs,
    nats: &Nats,
    consul: &Consul,
) -> Result<RunningService> {
    let addr = SocketAddr::from(([127, 0, 0, 1], ftgo_testenv::process::free_port()?));
    let mut settings = ServiceConfig::local(service);
    settings.common.grpc.listen = addr;
    settings.common.database.url = database_url.to_owned();
    settings.common.nats.url = nats.url();
    settings.common.base.consul = registering(consul);
    let name = instance_name(service, instance);
    let settings = write_settings(&dirs.settings, &name, &settings)?;
    let log = dirs.logs.join(format!("{name}.log"));
    let process = launch(service, &dirs.bin, &settings, &log, addr).await?;
    Ok(RunningService {
        service,
        binary: service.binary(),
        addr,
        database_url: database_url.to_owned(),
        settings,
        log,
        bin: dirs.bin.clone(),
        process,
    })
}

/// `kitchen-service`, then `kitchen-service-2`, ...: the name of an instance's settings and log.
fn instance_name(service: ServiceName, instance: usize) -> String {
    match instance {
        0 => service.binary().to_owned(),
        n => format!("{}-{}", service.binary(), n + 1),
    }
}

/// Runs `service`'s binary with the settings file `settings` and waits until it serves at `addr`.
async fn launch(
    service: ServiceName,
    bin: &Path,
    settings: &Path,
    log: &Path,
    addr: SocketAddr,
) -> Result<ServerProcess> {
    let mut cmd = command(bin, service.binary())?;
    cmd.env("FTGO_CONFIG_FILE", settings);
    let mut process = ServerProcess::spawn(service.binary(), cmd, log, libc::SIGTERM)?;
    let url = format!("http://{addr}");
    process.wait_ready(Duration::from_secs(60), || serving(url.clone())).await?;
    Ok(process)
}

async fn serving(url: String) -> bool {
    let Ok(channel) = tonic::transport::Endpoint::from_shared(url) else {
        return false;
    };
    let Ok(channel) = channel.connect().await else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

/// Starts the API gateway on `listen`, calling every back-end service through Fabio, and waits
/// for `/healthz`.
pub async fn start_gateway(dirs: &Dirs, listen: SocketAddr, consul: &Consul, fabio: &Fabio) -> Result<ServerProcess> {
    let gateway = ServiceName::Gateway.binary();
    let mut cmd = command(&dirs.bin, gateway)?;
    let defaults = GatewayConfig::default();
    let settings = GatewayConfig {
        http: HttpConfig { listen, ..defaults.http },
        // Every call goes through Fabio's gRPC listener, which routes it by its gRPC service.
        backends: BackendsConfig::each(|_| format!("http://{}", fabio.grpc_addr())),
        base: BaseConfig { consul: registering(consul), ..defaults.base },
        ..defaults
    };
    use_settings(&mut cmd, &dirs.settings, ServiceName::Gateway, &settings)?;
    let mut process = ServerProcess::spawn(gateway, cmd, &dirs.logs.join(format!("{gateway}.log")), libc::SIGTERM)?;
    process.wait_until_http_ok(Duration::from_secs(30), &format!("http://{listen}/healthz")).await?;
    Ok(process)
}

/// Waits (up to 30 s) until Fabio has learnt every route from Consul's passing health checks:
/// each service's, as the catalog names them (`src`: host and path).
pub async fn wait_for_routes(fabio: &Fabio) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let routes = fabio.routes().await.unwrap_or_default();
        let missing: Vec<String> = ServiceName::ALL
            .into_iter()
            .flat_map(ServiceName::fabio_routes)
            .filter(|source| !routes.iter().any(|r| r["src"] == source.as_str()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("Fabio has no route for {missing:?} after 30s: see the services' logs and Consul's UI");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
