//! The one Consul client: every call FTGO's programs make to Consul's HTTP API, each with a
//! timeout, so that a Consul that accepts connections and never answers cannot hang a service's
//! start, its registration or an operator's reconcile.
//!
//! - **The agent**: a service registers itself with a health check that the agent runs
//!   ([`crate::registry`]), and deregisters when it stops.
//! - **The catalog and node health**: the operator registers pods on a node that exists only in
//!   Consul, with their status taken from Kubernetes readiness, and reads them back.
//! - **Health**: the gateway follows how many instances of each service pass their checks, so
//!   that its circuit breakers try a service again as soon as one is back.
//! - **KV**: the services' configuration documents (read once at start, then watched with
//!   blocking queries, [`crate::config`]) and the operator's Fabio route overrides.
//!
//! Keys, node names and service ids go into the URL as path segments, percent-encoded.
//!
//! Why not the `rs-consul` crate (0.15, evaluated 2026-11): it has no agent endpoints (service
//! registration with checks), pastes keys into URLs without encoding them, reads KV with no
//! timeout, and brings a second HTTP and TLS stack (hyper-rustls with `ring`) beside reqwest's,
//! with which rustls cannot pick a crypto provider on its own and panics. What FTGO uses of Consul
//! is a dozen JSON calls, written here once on reqwest.

use std::{collections::BTreeMap, time::Duration};

use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// A call that Consul has not answered within this fails, unless the client was made with
/// another [`Consul::with_timeout`].
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// How long a blocking query ([`Consul::kv_watch`], [`Consul::passing_instances_watch`]) asks Consul to hold it when nothing changes.
/// The call's own timeout is this plus the client's.
pub const BLOCKING_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("{addr} is not a Consul address (http://host:port): {reason}")]
    Address { addr: String, reason: String },
    #[error("Consul at {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Consul at {url} answered {status}: {body}")]
    Refused { url: String, status: StatusCode, body: String },
    #[error("Consul at {url} answered with JSON this client does not understand: {source}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ConsulError {
    /// Whether Consul was not reached or did not answer in time (rather than refusing the call).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Http { .. })
    }
}

/// A Consul agent's HTTP API at one address.
#[derive(Debug, Clone)]
pub struct Consul {
    http: reqwest::Client,
    base: Url,
    timeout: Duration,
}

/// One service instance as `PUT /v1/catalog/register` takes it, with its checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogRegistration {
    pub node: String,
    pub address: String,
    pub node_meta: BTreeMap<String, String>,
    pub service: CatalogService,
    pub checks: Vec<CatalogCheck>,
    /// The node exists already after the first registration; re-writing it on every service
    /// would bump its index for nothing.
    pub skip_node_update: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogService {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    pub address: String,
    pub port: u16,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogCheck {
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    /// `passing` or `critical`.
    pub status: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    #[serde(default)]
    pub output: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeServices {
    /// `null` when the node does not exist.
    #[serde(default)]
    services: Option<Vec<CatalogService>>,
}

/// What a blocking query saw, and Consul's index, to pass to the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched<T> {
    pub value: T,
    pub index: u64,
}

impl<T> Watched<T> {
    /// The index to wait from next, after waiting from `previous`: Consul's index only goes
    /// backwards when its state was reset, and then the watch starts over.
    pub fn next_index(&self, previous: u64) -> u64 {
        if self.index < previous { 0 } else { self.index }
    }
}

/// A KV key as a blocking query saw it: its value, `None` when there is no such key.
pub type KvState = Watched<Option<String>>;

/// What a watch does when its blocking query fails: says so, and waits a second before the next
/// one. `false` when `shutdown` came first.
pub async fn pause_after(error: &ConsulError, watching: &str, shutdown: &CancellationToken) -> bool {
    if error.is_unreachable() {
        tracing::warn!(error = %error, "Consul is unreachable; {watching} stays as it is");
    } else {
        tracing::warn!(error = %error, "watching {watching} in Consul failed");
    }
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(Duration::from_secs(1)) => true,
    }
}

impl Consul {
    /// A client of the agent at `addr` (`http://127.0.0.1:8500`), with the default [`TIMEOUT`].
    pub fn new(addr: &str) -> Result<Self, ConsulError> {
        Self::with_timeout(addr, TIMEOUT)
    }

    pub fn with_timeout(addr: &str, timeout: Duration) -> Result<Self, ConsulError> {
        let invalid = |reason: String| ConsulError::Address { addr: addr.to_owned(), reason };
        let base = Url::parse(addr.trim_end_matches('/')).map_err(|e| invalid(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid("not an http(s) URL".to_owned()));
        }
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| invalid(e.to_string()))?;
        Ok(Self { http, base, timeout })
    }

    /// The address this client calls.
    pub fn addr(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `/v1/<path...>`, each segment percent-encoded (a KV key's slashes separate segments).
    fn url<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut().expect("checked in with_timeout").pop_if_empty().push("v1").extend(segments);
        url
    }

    /// Sends one call: its body (`None` for a 404) and Consul's index (`X-Consul-Index`, 0 when
    /// absent), or an error for any other answer.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Body<'_>>,
        timeout: Option<Duration>,
    ) -> Result<(Option<String>, u64), ConsulError> {
        let mut request = self.http.request(method, url.clone());
        match body {
            Some(Body::Json(value)) => request = request.json(value),
            Some(Body::Text(text)) => request = request.body(text.to_owned()),
            None => {}
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let url = url.to_string();
        let response = request.send().await.map_err(|source| ConsulError::Http { url: url.clone(), source })?;
        let status = response.status();
        let index = response.headers().get("X-Consul-Index").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
        let text = response.text().await.map_err(|source| ConsulError::Http { url: url.clone(), source })?;
        match status {
            StatusCode::NOT_FOUND => Ok((None, index)),
            s if s.is_success() => Ok((Some(text), index)),
            status => Err(ConsulError::Refused { url, status, body: text }),
        }
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, url: Url) -> Result<Option<T>, ConsulError> {
        let (Some(body), _) = self.call(Method::GET, url.clone(), None, None).await? else {
            return Ok(None);
        };
        serde_json::from_str(&body).map(Some).map_err(|source| ConsulError::Decode { url: url.to_string(), source })
    }

    async fn put(&self, url: Url, body: Option<Body<'_>>) -> Result<(), ConsulError> {
        self.call(Method::PUT, url, body, None).await.map(drop)
    }

    // The agent.

    /// `PUT /v1/agent/service/register`: the agent's service definition as Consul documents it
    /// (`ID`, `Name`, `Address`, `Port`, `Tags`, `Check`).
    pub async fn agent_register(&self, service: &serde_json::Value) -> Result<(), ConsulError> {
        self.put(self.url(["agent", "service", "register"]), Some(Body::Json(service))).await
    }

    /// Whether the agent has the service instance `id` (a restarted dev agent forgets everything).
    pub async fn agent_has_service(&self, id: &str) -> Result<bool, ConsulError> {
        Ok(self.call(Method::GET, self.url(["agent", "service", id]), None, None).await?.0.is_some())
    }

    pub async fn agent_deregister(&self, id: &str) -> Result<(), ConsulError> {
        self.put(self.url(["agent", "service", "deregister", id]), None).await
    }

    // The catalog.

    pub async fn catalog_register(&self, registration: &CatalogRegistration) -> Result<(), ConsulError> {
        let body = serde_json::to_value(registration).expect("a registration is plain JSON");
        self.put(self.url(["catalog", "register"]), Some(Body::Json(&body))).await
    }

    pub async fn catalog_deregister_service(&self, node: &str, service_id: &str) -> Result<(), ConsulError> {
        let body = serde_json::json!({"Node": node, "ServiceID": service_id});
        self.put(self.url(["catalog", "deregister"]), Some(Body::Json(&body))).await
    }

    /// Removes the node with every service and check on it.
    pub async fn catalog_deregister_node(&self, node: &str) -> Result<(), ConsulError> {
        let body = serde_json::json!({"Node": node});
        self.put(self.url(["catalog", "deregister"]), Some(Body::Json(&body))).await
    }

    /// The services registered on `node`; none when the node does not exist.
    pub async fn node_services(&self, node: &str) -> Result<Vec<CatalogService>, ConsulError> {
        // An unknown node answers `{"Node": null, "Services": null}` (older Consuls: 404).
        let found: Option<NodeServices> = self.get_json(self.url(["catalog", "node-services", node])).await?;
        Ok(found.and_then(|n| n.services).unwrap_or_default())
    }

    /// The checks on `node`, with their current status.
    pub async fn node_checks(&self, node: &str) -> Result<Vec<CatalogCheck>, ConsulError> {
        Ok(self.get_json(self.url(["health", "node", node])).await?.unwrap_or_default())
    }

    // KV.

    fn kv_url(&self, key: &str) -> Url {
        self.url(std::iter::once("kv").chain(key.split('/')))
    }

    /// The value at `key`, `None` when there is no such key.
    pub async fn kv_get(&self, key: &str) -> Result<Option<String>, ConsulError> {
        let mut url = self.kv_url(key);
        url.set_query(Some("raw"));
        Ok(self.call(Method::GET, url, None, None).await?.0)
    }

    /// A blocking query on `key`: answers when its index passes `index` (0: at once), or after
    /// [`BLOCKING_WAIT`] with the key as it is.
    pub async fn kv_watch(&self, key: &str, index: u64) -> Result<KvState, ConsulError> {
        let mut url = self.kv_url(key);
        url.set_query(Some(&format!("raw&index={index}&wait={}s", BLOCKING_WAIT.as_secs())));
        let (value, index) = self.call(Method::GET, url, None, Some(BLOCKING_WAIT + self.timeout)).await?;
        Ok(KvState { value, index })
    }

    /// A blocking query on the instances of `service` that pass their health checks: answers with
    /// how many there are when the service's health changes after `index` (0: at once), or after
    /// [`BLOCKING_WAIT`] as it is.
    pub async fn passing_instances_watch(&self, service: &str, index: u64) -> Result<Watched<usize>, ConsulError> {
        let mut url = self.url(["health", "service", service]);
        url.set_query(Some(&format!("passing=true&index={index}&wait={}s", BLOCKING_WAIT.as_secs())));
        let (body, index) = self.call(Method::GET, url.clone(), None, Some(BLOCKING_WAIT + self.timeout)).await?;
        let instances: Vec<serde_json::Value> = match body {
            Some(body) => {
                serde_json::from_str(&body).map_err(|source| ConsulError::Decode { url: url.to_string(), source })?
            }
            None => Vec::new(),
        };
        Ok(Watched { value: instances.len(), index })
    }

    pub async fn kv_put(&self, key: &str, value: &str) -> Result<(), ConsulError> {
        self.put(self.kv_url(key), Some(Body::Text(value))).await
    }

    pub async fn kv_delete(&self, key: &str) -> Result<(), ConsulError> {
        self.call(Method::DELETE, self.kv_url(key), None, None).await.map(drop)
    }
}

enum Body<'a> {
    Json(&'a serde_json::Value),
    Text(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names_become_encoded_path_segments() {
        let consul = Consul::new("http://127.0.0.1:8500/").unwrap();
        assert_eq!(consul.addr(), "http://127.0.0.1:8500");
        assert_eq!(
            consul.kv_url("ftgo/config/order-service").as_str(),
            "http://127.0.0.1:8500/v1/kv/ftgo/config/order-service"
        );
        assert_eq!(consul.kv_url("a b/c?d").as_str(), "http://127.0.0.1:8500/v1/kv/a%20b/c%3Fd");
        assert_eq!(
            consul.url(["agent", "service", "deregister", "x/../y"]).as_str(),
            "http://127.0.0.1:8500/v1/agent/service/deregister/x%2F..%2Fy"
        );
    }

    #[test]
    fn an_address_that_is_not_an_http_url_is_refused() {
        for addr in ["", "127.0.0.1:8500", "consul:8500", "ftp://consul:21", "mailto:x@y"] {
            assert!(matches!(Consul::new(addr), Err(ConsulError::Address { .. })), "{addr:?}");
        }
    }
}
