//! The Orchestration Service binary: everything is the platform's `main` and this service's `start`.

use ftgo_orchestrator_service::{Config, NAME, start};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ftgo_platform::service::main(NAME, Config::local(), start).await
}
