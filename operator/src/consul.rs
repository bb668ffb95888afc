//! A small client for the parts of Consul's HTTP API the operator uses: the catalog (to
//! register endpoints on a synthetic node), node health (to read back check states) and KV (for
//! Fabio's route overrides).
//!
//! Pods are not Consul agents, so nothing runs the health checks: the operator registers them
//! in the catalog directly, with their status set from Kubernetes readiness, on a node that
//! exists only in Consul (the approach of consul-k8s' catalog sync).

use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

/// A Consul that does not answer within this is reported unreachable; a reconcile must not hang.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("Consul at {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("Consul at {url} answered {status}: {body}")]
    Refused { url: String, status: StatusCode, body: String },
}

/// One service instance as `PUT /v1/catalog/register` takes it, with its one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Registration {
    pub node: String,
    pub address: String,
    pub node_meta: std::collections::BTreeMap<String, String>,
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
    pub meta: std::collections::BTreeMap<String, String>,
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

#[derive(Clone, Debug)]
pub struct Consul {
    http: reqwest::Client,
    base: String,
}

impl Consul {
    pub fn new(url: &str) -> Self {
        let http = reqwest::Client::builder().timeout(TIMEOUT).build().unwrap_or_default();
        Self { http, base: url.trim_end_matches('/').to_owned() }
    }

    async fn send(&self, request: reqwest::RequestBuilder, url: String) -> Result<Option<String>, ConsulError> {
        let response = request.send().await.map_err(|source| ConsulError::Http { url: url.clone(), source })?;
        let status = response.status();
        let body = response.text().await.map_err(|source| ConsulError::Http { url: url.clone(), source })?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(body)),
            status => Err(ConsulError::Refused { url, status, body }),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The services registered on `node`; none when the node does not exist.
    pub async fn node_services(&self, node: &str) -> Result<Vec<CatalogService>, ConsulError> {
        let url = self.url(&format!("/v1/catalog/node-services/{node}"));
        let body = self.send(self.http.get(&url), url.clone()).await?;
        // An unknown node answers `{"Node": null, "Services": null}` (older Consuls: 404).
        let parsed: Option<NodeServices> = body.and_then(|body| serde_json::from_str(&body).ok());
        Ok(parsed.and_then(|n| n.services).unwrap_or_default())
    }

    /// The checks on `node`, with their current status.
    pub async fn node_checks(&self, node: &str) -> Result<Vec<CatalogCheck>, ConsulError> {
        let url = self.url(&format!("/v1/health/node/{node}"));
        let body = self.send(self.http.get(&url), url.clone()).await?;
        Ok(body.and_then(|b| serde_json::from_str(&b).ok()).unwrap_or_default())
    }

    pub async fn register(&self, registration: &Registration) -> Result<(), ConsulError> {
        let url = self.url("/v1/catalog/register");
        self.send(self.http.put(&url).json(registration), url.clone()).await.map(drop)
    }

    pub async fn deregister_service(&self, node: &str, service_id: &str) -> Result<(), ConsulError> {
        let url = self.url("/v1/catalog/deregister");
        let body = serde_json::json!({"Node": node, "ServiceID": service_id});
        self.send(self.http.put(&url).json(&body), url.clone()).await.map(drop)
    }

    /// Removes the node with every service and check on it.
    pub async fn deregister_node(&self, node: &str) -> Result<(), ConsulError> {
        let url = self.url("/v1/catalog/deregister");
        let body = serde_json::json!({"Node": node});
        self.send(self.http.put(&url).json(&body), url.clone()).await.map(drop)
    }

    pub async fn kv_get(&self, key: &str) -> Result<Option<String>, ConsulError> {
        let url = self.url(&format!("/v1/kv/{key}?raw"));
        self.send(self.http.get(&url), url.clone()).await
    }

    pub async fn kv_put(&self, key: &str, value: &str) -> Result<(), ConsulError> {
        let url = self.url(&format!("/v1/kv/{key}"));
        self.send(self.http.put(&url).body(value.to_owned()), url.clone()).await.map(drop)
    }

    pub async fn kv_delete(&self, key: &str) -> Result<(), ConsulError> {
        let url = self.url(&format!("/v1/kv/{key}"));
        self.send(self.http.delete(&url), url.clone()).await.map(drop)
    }
}
