//! A private NATS server with JetStream on a free loopback port.

use std::{process::Command, time::Duration};

use anyhow::Result;
use tempfile::TempDir;

use crate::{
    host,
    process::{self, ServerProcess},
};

#[derive(Debug)]
pub struct Nats {
    port: u16,
    monitor_port: u16,
    process: ServerProcess,
    dir: TempDir,
}

impl Nats {
    /// Starts nats-server with JetStream. `sync_interval: always` makes the server fsync every
    /// message before it acknowledges it, so an acknowledged message survives a server crash.
    pub async fn start() -> Result<Self> {
        process::retry_on_new_ports("nats-server", Self::start_once).await
    }

    async fn start_once() -> Result<Self> {
        let dir = host::workdir("nats")?;
        let (port, monitor_port) = (process::free_port()?, process::free_port()?);
        let config = dir.path().join("nats.conf");
        std::fs::write(
            &config,
            format!(
                r#"listen: "127.0.0.1:{port}"
http: "127.0.0.1:{monitor_port}"
server_name: "ftgo-{port}"
max_payload: 1MB
jetstream {{
  store_dir: "{store}"
  sync_interval: always
  max_memory_store: 256MB
  max_file_store: 2GB
}}
"#,
                store = dir.path().join("jetstream").display()
            ),
        )?;
        let process = Self::spawn(&dir, monitor_port).await?;
        Ok(Self { port, monitor_port, process, dir })
    }

    async fn spawn(dir: &TempDir, monitor_port: u16) -> Result<ServerProcess> {
        let mut cmd = Command::new(host::binary("nats-server")?);
        cmd.arg("-c").arg(dir.path().join("nats.conf"));
        let mut process = ServerProcess::spawn("nats-server", cmd, &dir.path().join("nats.log"), libc::SIGTERM)?;
        let health = format!("http://127.0.0.1:{monitor_port}/healthz?js-enabled-only=true");
        process.wait_until_http_ok(Duration::from_secs(30), &health).await?;
        Ok(process)
    }

    /// Kills the server with `SIGKILL`, as a crash would. What JetStream acknowledged is on disk.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again after [`kill`](Self::kill): the same ports, configuration and store,
    /// as a restarted server would be.
    pub async fn restart(&mut self) -> Result<()> {
        self.process = Self::spawn(&self.dir, self.monitor_port).await?;
        Ok(())
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The HTTP monitoring endpoint (`/varz`, `/jsz`, `/healthz`).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    pub fn process(&mut self) -> &mut ServerProcess {
        &mut self.process
    }
}
