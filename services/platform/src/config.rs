//! Layered configuration, the same for every service (the seed's Viper role):
//!
//! defaults (in code) < a TOML file per service < Consul KV (when the environment is not `local`)
//! < environment variables.
//!
//! Environment variables are `FTGO_` followed by the key path in capitals, with `__` between
//! levels: `FTGO_DATABASE__URL`, `FTGO_GRPC__LISTEN`. The file is `$FTGO_CONFIG_FILE`, or
//! `config/<service>.toml` when that exists. In Consul, the service's settings are one TOML
//! document at `ftgo/config/<service>`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::{
    consul::{self, Consul},
    runtime::Running,
};

use anyhow::{Context, Result};
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use ftgo_catalog::ServiceName;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// What every FTGO program has, a gRPC service or the gateway: where it runs, how much it logs,
/// and its Consul. Embedded with `#[serde(flatten)]`, so its keys sit at the top of the file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaseConfig {
    /// `local` runs without Consul KV; any other value reads it.
    pub environment: String,
    /// A `tracing` filter: `info`, `ftgo=debug,sqlx=warn`, ...
    pub log_level: String,
    pub consul: ConsulConfig,
}

impl BaseConfig {
    /// On one machine, without Consul.
    pub fn local() -> Self {
        Self {
            environment: "local".to_owned(),
            log_level: "info".to_owned(),
            consul: ConsulConfig { addr: String::new(), register: false },
        }
    }

    /// Whether the program reads (and so watches) Consul KV.
    pub fn uses_consul(&self) -> bool {
        uses_consul(&self.environment, &self.consul.addr)
    }
}

/// Settings every FTGO gRPC service has: the [`BaseConfig`], its gRPC listener, its database and
/// NATS. A service's own settings struct embeds this one with `#[serde(flatten)]`. Unknown keys
/// are refused inside each section (a typo such as `FTGO_DATABASE__URLL` is an error), not at the
/// top, where other `FTGO_` variables live.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommonConfig {
    #[serde(flatten)]
    pub base: BaseConfig,
    pub grpc: GrpcConfig,
    pub database: DatabaseConfig,
    pub nats: NatsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Where the gRPC server listens. Port 0 picks a free port (tests).
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The service's own database; no service reads another's.
    pub url: String,
    pub max_connections: u32,
    #[serde(with = "seconds")]
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsulConfig {
    /// The Consul agent's HTTP address, e.g. `http://127.0.0.1:8500`. Empty: no Consul.
    pub addr: String,
    /// Whether the service registers itself in Consul (locally: yes; on Kubernetes the operator
    /// registers endpoints, so no).
    #[serde(default)]
    pub register: bool,
}

impl CommonConfig {
    /// Defaults for a service on one machine; `database` is the service's database name.
    pub fn local(database: &str) -> Self {
        Self {
            base: BaseConfig::local(),
            grpc: GrpcConfig { listen: "127.0.0.1:0".parse().expect("static address") },
            database: DatabaseConfig {
                url: format!("postgres://postgres@127.0.0.1:5432/{database}"),
                max_connections: 10,
                connect_timeout: Duration::from_secs(5),
            },
            nats: NatsConfig { url: "nats://127.0.0.1:4222".to_owned() },
        }
    }
}

/// The settings of a service that has none beyond the common ones (every back-end service today).
/// A service that needs its own adds a struct of its own that flattens [`CommonConfig`] in, as
/// this one does, and implements [`Settings`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceConfig {
    #[serde(flatten)]
    pub common: CommonConfig,
}

impl ServiceConfig {
    /// Defaults for `service` on one machine (its database as the catalog names it).
    pub fn local(service: ServiceName) -> Self {
        Self { common: CommonConfig::local(service.database().unwrap_or(service.as_str())) }
    }
}

/// What [`crate::service::main`] and [`crate::service::join_consul`] need of a program's
/// settings, whatever else they hold: its [`BaseConfig`].
pub trait Settings: Serialize + DeserializeOwned + Clone + Send + 'static {
    fn base(&self) -> &BaseConfig;
}

impl Settings for CommonConfig {
    fn base(&self) -> &BaseConfig {
        &self.base
    }
}

impl Settings for ServiceConfig {
    fn base(&self) -> &BaseConfig {
        &self.common.base
    }
}

/// Durations as whole or fractional seconds in files and variables (`#[serde(with = ...)]`).
pub mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// Loads `T` for `service` from the layers above; `defaults` is the bottom layer. A bad value in
/// any layer is an error that names the key and the layer, never a silent default.
pub async fn load<T>(service: &str, defaults: T) -> Result<T>
where
    T: Serialize + DeserializeOwned,
{
    let mut figment = defaults_and_file(service, defaults);

    // Consul KV sits between the file and the environment, and only outside `local`.
    let so_far: CommonConfigView = figment.clone().merge(env()).extract().context("reading the configuration")?;
    if uses_consul(&so_far.environment, &so_far.consul.addr)
        && let Some(document) = consul_document(&so_far.consul.addr, service).await?
    {
        figment = figment.merge(Toml::string(&document));
    }
    figment.merge(env()).extract().with_context(|| format!("invalid configuration for {service}"))
}

/// The two bottom layers: the defaults in code and the service's file.
fn defaults_and_file<T: Serialize>(service: &str, defaults: T) -> Figment {
    let file = std::env::var_os("FTGO_CONFIG_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("config/{service}.toml")));
    Figment::from(Serialized::defaults(defaults)).merge(Toml::file(&file))
}

/// The configuration with `document` as its Consul layer: what [`load`] would give if Consul
/// held `document`.
pub fn with_consul_document<T>(service: &str, defaults: T, document: &str) -> Result<T>
where
    T: Serialize + DeserializeOwned,
{
    defaults_and_file(service, defaults)
        .merge(Toml::string(document))
        .merge(env())
        .extract()
        .with_context(|| format!("invalid configuration for {service} in Consul"))
}

/// Whether this configuration reads (and so watches) Consul KV.
pub fn uses_consul(environment: &str, consul_addr: &str) -> bool {
    environment != "local" && !consul_addr.is_empty()
}

/// Live configuration: watches the service's document in Consul KV with blocking queries and
/// calls `apply` with the whole configuration each time the document changes (the keys that
/// can change at run time, such as `log_level`, are the caller's to pick from it). A document
/// that does not parse is logged and ignored: the running configuration stays. Runs as one of
/// the service's tasks, until shutdown.
pub fn watch_consul<T, F>(running: &mut Running, service: &'static str, consul_addr: &str, defaults: T, mut apply: F)
where
    T: Serialize + DeserializeOwned + Clone + Send + 'static,
    F: FnMut(T) + Send + 'static,
{
    let key = config_key(service);
    let consul = Consul::new(consul_addr);
    let shutdown = running.shutdown_token();
    running.spawn("live configuration", async move {
        let consul = consul?;
        let (mut index, mut last) = (0_u64, None::<String>);
        loop {
            let answer = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                answer = consul.kv_watch(&key, index) => answer,
            };
            let document = match answer {
                Ok(state) => {
                    index = state.next_index(index);
                    state.value
                }
                Err(e) if consul::pause_after(&e, "the live configuration", &shutdown).await => continue,
                Err(_) => return Ok(()),
            };
            if let Some(document) = document
                && last.as_ref() != Some(&document)
            {
                match with_consul_document(service, defaults.clone(), &document) {
                    Ok(config) => apply(config),
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "ignoring a configuration that does not parse"),
                }
                last = Some(document);
            }
        }
    });
}

fn env() -> Env {
    Env::prefixed("FTGO_").split("__").ignore(&["CONFIG_FILE"])
}

/// The two keys needed to decide whether to read Consul, read leniently.
#[derive(Deserialize)]
struct CommonConfigView {
    environment: String,
    consul: ConsulView,
}

#[derive(Deserialize)]
struct ConsulView {
    addr: String,
}

/// Where a service's TOML document lives in Consul KV.
pub fn config_key(service: &str) -> String {
    format!("ftgo/config/{service}")
}

/// The service's TOML document from Consul KV, `None` when the key does not exist. Fails, rather
/// than waits, when Consul does not answer within [`crate::consul::TIMEOUT`].
pub async fn consul_document(consul: &str, service: &str) -> Result<Option<String>> {
    let key = config_key(service);
    Consul::new(consul)?.kv_get(&key).await.with_context(|| format!("reading {key} from Consul"))
}
