//! Smoke tests: each proves that one real server starts privately and does its job.
//! One test binary (modules below) keeps link time down.

mod consul;
mod fabio;
mod kube;
mod nats;
mod postgres;
mod process;

use ftgo_testenv::Consul;
pub use ftgo_testenv::eventually;
use std::net::SocketAddr;

/// A tiny HTTP server on a free loopback port: `/health` answers `ok`, `/smoke/hello` answers
/// `hello from <name>`. Stands in for an FTGO service behind Consul and Fabio.
pub async fn spawn_hello_server(name: &'static str) -> SocketAddr {
    use axum::{Router, routing::get};
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/smoke/hello", get(move || async move { format!("hello from {name}") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Registers the hello server at `addr` in `consul` as instance `id` of service `name`, with one
/// tag and an HTTP check of its `/health` every second, which the agent itself runs.
pub async fn register_hello_server(consul: &Consul, id: &str, name: &str, tag: &str, addr: SocketAddr) {
    let registration = serde_json::json!({
        "ID": id,
        "Name": name,
        "Address": "127.0.0.1",
        "Port": addr.port(),
        "Tags": [tag],
        "Check": {"HTTP": format!("http://{addr}/health"), "Interval": "1s", "Timeout": "1s"},
    });
    reqwest::Client::new()
        .put(format!("{}/v1/agent/service/register", consul.http_url()))
        .json(&registration)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
}
