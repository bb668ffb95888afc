//! The API gateway binary: everything is the platform's `main` and the gateway's `start`.

use ftgo_api_gateway::{Config, NAME, start};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ftgo_platform::service::main(NAME, Config::default(), start).await
}
