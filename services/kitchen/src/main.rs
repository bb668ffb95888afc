//! The Kitchen Service binary: everything is the platform's `main` and this service's `start`.

use ftgo_kitchen_service::{Config, NAME, start};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ftgo_platform::service::main(NAME, Config::local(NAME), start).await
}
