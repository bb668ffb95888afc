//! The Kitchen Service binary: the platform's `Service::main`, run with this service's `SERVICE`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ftgo_kitchen_service::SERVICE.main().await
}
