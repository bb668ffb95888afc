//! A private Fabio load balancer that learns its routes from a Consul agent.
//!
//! Fabio is FTGO's server-side discovery: services register in Consul with `urlprefix-` tags and
//! Fabio routes to their healthy instances. It gets an HTTP listener (for the API gateway), a gRPC
//! listener (`proto=grpc`, for service-to-service calls) and its admin listener (UI, `/health`,
//! `/api/routes`), all on free loopback ports.

use std::{process::Command, time::Duration};

use anyhow::Result;
use tempfile::TempDir;

use crate::{
    consul::Consul,
    host,
    process::{self, ServerProcess},
};

#[derive(Debug)]
pub struct Fabio {
    http_port: u16,
    grpc_port: u16,
    admin_port: u16,
    process: ServerProcess,
    _dir: TempDir,
}

impl Fabio {
    pub async fn start(consul: &Consul) -> Result<Self> {
        process::retry_on_new_ports("fabio", || Self::start_once(consul)).await
    }

    async fn start_once(consul: &Consul) -> Result<Self> {
        let dir = host::workdir("fabio")?;
        let (http_port, grpc_port, admin_port) = (process::free_port()?, process::free_port()?, process::free_port()?);
        let mut cmd = Command::new(host::binary("fabio")?);
        cmd.args([
            "-proxy.addr",
            &format!("127.0.0.1:{http_port};proto=http,127.0.0.1:{grpc_port};proto=grpc"),
            "-ui.addr",
            &format!("127.0.0.1:{admin_port}"),
            "-registry.backend",
            "consul",
            "-registry.consul.addr",
            &consul.http_addr(),
            // Fabio would otherwise register itself as a service in Consul.
            "-registry.consul.register.enabled=false",
            "-log.level",
            "WARN",
        ])
        .current_dir(dir.path());
        let mut process = ServerProcess::spawn("fabio", cmd, &dir.path().join("fabio.log"), libc::SIGTERM)?;
        process.wait_until_http_ok(Duration::from_secs(30), &format!("http://127.0.0.1:{admin_port}/health")).await?;
        Ok(Self { http_port, grpc_port, admin_port, process, _dir: dir })
    }

    /// Where HTTP traffic enters, `http://127.0.0.1:<port>`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Where gRPC traffic enters, `127.0.0.1:<port>`.
    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// The admin listener: UI, `/health`, `/api/routes`.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// Fabio's current routing table, as its admin API reports it.
    pub async fn routes(&self) -> Result<Vec<serde_json::Value>> {
        let response = reqwest::get(format!("{}/api/routes", self.admin_url())).await?.error_for_status()?;
        // An empty table is reported as `null`, not `[]`.
        let routes: Option<Vec<serde_json::Value>> = response.json().await?;
        Ok(routes.unwrap_or_default())
    }

    pub fn process(&mut self) -> &mut ServerProcess {
        &mut self.process
    }
}
