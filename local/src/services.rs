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
    pub binary: &'static str,
    pub addr: SocketAddr,
    /// Stopped (SIGTERM, then a clean shutdown) when dropped.
    _process: ServerProcess,
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

/// Writes `settings` as `service`'s settings file in `dir` and points `cmd` at it. Variables
/// (`FTGO_LOG_LEVEL=debug just up`) still override it, as the service's layering says.
fn use_settings<T: Serialize>(cmd: &mut Command, dir: &Path, service: ServiceName, settings: &T) -> Result<()> {
    let path = dir.join(format!("{}.toml", service.config_name()));
    let written = toml::to_string(settings).with_context(|| format!("writing {service}'s settings"))?;
    std::fs::write(&path, written).with_context(|| format!("writing {}", path.display()))?;
    cmd.env("FTGO_CONFIG_FILE", path);
    Ok(())
}

/// Every service here registers itself in the one Consul, from which Fabio routes.
fn registering(consul: &Consul) -> ConsulConfig {
    ConsulConfig { addr: consul.http_url(), register: true }
}

/// Creates the service's database, starts it on a free port and waits until its gRPC health
/// check answers `SERVING` (it migrates its database before it serves).
pub async fn start(
    service: ServiceName,
    dirs: &Dirs,
    postgres: &Postgres,
    nats: &Nats,
    consul: &Consul,
) -> Result<RunningService> {
    let database = postgres.create_database(service.database().context("a back-end service owns a database")?).await?;
    let addr = SocketAddr::from(([127, 0, 0, 1], ftgo_testenv::process::free_port()?));
    let mut cmd = command(&dirs.bin, service.binary())?;
    let mut settings = ServiceConfig::local(service);
    settings.common.grpc.listen = addr;
    settings.common.database.url = database.url.clone();
    settings.common.nats.url = nats.url();
    settings.common.base.consul = registering(consul);
    use_settings(&mut cmd, &dirs.settings, service, &settings)?;
    let log = dirs.logs.join(format!("{}.log", service.binary()));
    let mut process = ServerProcess::spawn(service.binary(), cmd, &log, libc::SIGTERM)?;
    let url = format!("http://{addr}");
    process.wait_ready(Duration::from_secs(60), || serving(url.clone())).await?;
    Ok(RunningService { binary: service.binary(), addr, _process: process })
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
