//! The Order Service binary: configuration, logging, signals; everything else is `start`.

use ftgo_order_service::{Config, SERVICE, start};
use ftgo_platform::{config, runtime, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = config::load(SERVICE, Config::default()).await?;
    let _telemetry = telemetry::init(SERVICE, &config.common.log_level);
    let shutdown = runtime::shutdown_on_signals()?;
    start(config, shutdown).await?.wait().await
}
