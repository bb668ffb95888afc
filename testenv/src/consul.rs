//! A private Consul agent in `-dev` mode (a single in-memory server) on free loopback ports.

use std::{process::Command, time::Duration};

use anyhow::Result;
use serde_json::json;
use tempfile::TempDir;

use crate::{
    host,
    process::{self, ServerProcess},
};

#[derive(Debug)]
pub struct Consul {
    http_port: u16,
    process: ServerProcess,
    _dir: TempDir,
}

impl Consul {
    /// Starts a dev agent; ready when it has elected itself leader and registered its node, so the
    /// catalog and health APIs answer at once.
    pub async fn start() -> Result<Self> {
        process::retry_on_new_ports("consul", Self::start_once).await
    }

    async fn start_once() -> Result<Self> {
        let dir = host::workdir("consul")?;
        let http_port = process::free_port()?;
        // Every listener gets its own free port or is switched off: dev mode's defaults (8500,
        // 8502, 8600, ...) would collide between tests running side by side.
        let config = json!({
            "node_name": format!("ftgo-test-{http_port}"),
            "bind_addr": "127.0.0.1",
            "client_addr": "127.0.0.1",
            "advertise_addr": "127.0.0.1",
            "ports": {
                "http": http_port,
                "https": -1,
                "grpc": -1,
                "grpc_tls": -1,
                "dns": -1,
                "serf_lan": process::free_port()?,
                "serf_wan": process::free_port()?,
                "server": process::free_port()?,
            },
            "disable_update_check": true,
            "enable_script_checks": false,
            "log_level": "WARN",
        });
        let config_file = dir.path().join("consul.json");
        std::fs::write(&config_file, serde_json::to_vec_pretty(&config)?)?;
        let mut cmd = Command::new(host::binary("consul")?);
        cmd.args(["agent", "-dev", "-config-file"]).arg(&config_file).current_dir(dir.path());
        let mut process = ServerProcess::spawn("consul", cmd, &dir.path().join("consul.log"), libc::SIGTERM)?;

        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{http_port}");
        process
            .wait_ready(Duration::from_secs(30), || async {
                let leader = async {
                    let leader: String = http.get(format!("{base}/v1/status/leader")).send().await?.json().await?;
                    let nodes: Vec<serde_json::Value> =
                        http.get(format!("{base}/v1/catalog/nodes")).send().await?.json().await?;
                    Ok::<_, reqwest::Error>(!leader.is_empty() && !nodes.is_empty())
                };
                leader.await.unwrap_or(false)
            })
            .await?;
        Ok(Self { http_port, process, _dir: dir })
    }

    /// The HTTP API address, `http://127.0.0.1:<port>`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `127.0.0.1:<port>`, the form Fabio's `registry.consul.addr` and `CONSUL_HTTP_ADDR` take.
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    pub fn process(&mut self) -> &mut ServerProcess {
        &mut self.process
    }
}
