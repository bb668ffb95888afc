//! The gateway with Fabio in the path, as `just up` and Kubernetes run it. A service's own "not
//! found" stays a 404 through the proxy; a service with no instance behind Fabio (Fabio answers
//! `NOT_FOUND "no route found"`) is a 503 that the breaker counts, never a 404 for an order that
//! may well exist. When the service is back, the gateway serves it again within a couple of
//! seconds.

use std::time::{Duration, Instant};

use ftgo_api_gateway::Config as GatewayConfig;
use ftgo_catalog::ServiceName;
use ftgo_platform::{
    config::{CommonConfig, ConsulConfig},
    runtime::Running,
    testing::ServiceWorld,
};
use ftgo_testenv::{Consul, Fabio, eventually};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

async fn start_order_service(common: &CommonConfig) -> Running {
    let config = ftgo_order_service::Config { common: common.clone() };
    ftgo_order_service::start(config, CancellationToken::new()).await.expect("the Order Service starts")
}

/// Whether Fabio routes the Order Service's gRPC calls (it learns that from Consul's health checks).
async fn routed(fabio: &Fabio) -> bool {
    let routes = fabio.routes().await.unwrap_or_default();
    ServiceName::Order.fabio_routes().iter().all(|source| routes.iter().any(|r| r["src"] == source.as_str()))
}

async fn get(http: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let response = http.get(url).send().await.expect("the gateway answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn no_instance_behind_fabio_is_a_503_and_an_order_that_does_not_exist_is_still_a_404() {
    let world = ServiceWorld::start().await.expect("Postgres and NATS");
    let consul = Consul::start().await.expect("Consul");
    let fabio = Fabio::start(&consul).await.expect("Fabio");
    let mut common = world.config("order").await.expect("a database");
    common.base.consul = ConsulConfig { addr: consul.http_url(), register: true };
    let order = start_order_service(&common).await;

    let mut config = GatewayConfig::default();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.backends.set(ServiceName::Order, format!("http://{}", fabio.grpc_addr()));
    config.resilience.breaker_failures = 2;
    config.resilience.breaker_open_for = Duration::from_secs(2);
    let gateway = ftgo_api_gateway::start(config, CancellationToken::new()).await.expect("the gateway starts");
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/orders/{}?view=summary", gateway.addr, uuid::Uuid::new_v4());
    let health = format!("http://{}/healthz", gateway.addr);

    eventually("Fabio to route the Order Service", Duration::from_secs(30), || async {
        routed(&fabio).await.then_some(())
    })
    .await;
    let (status, body) = get(&http, &url).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the service's own answer, through Fabio: {body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");

    // The service stops and deregisters; Fabio has no route for it any more.
    order.stop().await.expect("the Order Service stops cleanly");
    eventually("Fabio to drop the Order Service's route", Duration::from_secs(30), || async {
        (!routed(&fabio).await).then_some(())
    })
    .await;
    for _ in 0..4 {
        let (status, body) = get(&http, &url).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "no instance is not 'no such order': {body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
    }
    let (_, healthz) = get(&http, &health).await;
    assert_ne!(healthz["circuits"]["order"], "closed", "the breaker counted the failures: {healthz}");

    // Back again: the gateway serves it as soon as Fabio routes it (the breaker's trial comes soon).
    let order = start_order_service(&common).await;
    eventually("Fabio to route the Order Service again", Duration::from_secs(30), || async {
        routed(&fabio).await.then_some(())
    })
    .await;
    let back = Instant::now();
    eventually("the gateway to reach the Order Service again", Duration::from_secs(10), || async {
        (get(&http, &url).await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    println!("served again {:?} after Fabio routed the restarted service", back.elapsed());
    order.stop().await.unwrap();
    gateway.stop().await.unwrap();
}
