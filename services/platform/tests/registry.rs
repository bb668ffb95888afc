//! Registration in a real Consul agent, read back by a real Fabio: a serving instance appears in
//! Fabio's routing table with its gRPC route, and disappears from both when it stops.

use ftgo_testenv::eventually;
use std::time::Duration;

use ftgo_platform::{
    grpc::GrpcServer,
    registry::{self, Registration},
    runtime::Running,
};
use ftgo_testenv::{Consul, Fabio};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const PROBE: &str = "ftgo.test.v1.Probe";

async fn passing_instances(consul: &Consul, service: &str) -> Vec<Value> {
    let url = format!("{}/v1/health/service/{service}?passing=true", consul.http_url());
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_serving_instance_is_routed_by_fabio_and_removed_when_it_stops() {
    ftgo_testenv::init_test_tracing();
    let consul = Consul::start().await.unwrap();
    let fabio = Fabio::start(&consul).await.unwrap();

    let server =
        GrpcServer::bind("127.0.0.1:0".parse().unwrap(), tonic::service::Routes::default(), &[PROBE]).await.unwrap();
    let addr = server.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let mut running = Running::new(addr, shutdown.clone());
    running.spawn("grpc server", server.serve(shutdown.clone()));
    let registration = Registration::grpc("probe-service", addr, &[PROBE]);
    registry::register_while_running(&mut running, &consul.http_url(), registration.clone()).await.unwrap();

    // It serves already, so its check starts out passing rather than waiting for its first run.
    let checks: Value =
        reqwest::get(format!("{}/v1/agent/checks", consul.http_url())).await.unwrap().json().await.unwrap();
    let check = checks.as_object().unwrap().values().find(|c| c["ServiceID"] == registration.id()).unwrap();
    assert_eq!(check["Status"], "passing", "{check}");

    // Consul's gRPC health check passes, with the Fabio tag on the instance.
    let instances = eventually("a passing instance", Duration::from_secs(20), async || {
        let found = passing_instances(&consul, "probe-service").await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(instances[0]["Service"]["ID"], registration.id());
    assert_eq!(instances[0]["Service"]["Tags"][0], format!("urlprefix-/{PROBE} proto=grpc"));

    // Fabio routes the gRPC service's path to the instance.
    let route = eventually("Fabio's route", Duration::from_secs(20), async || {
        let routes = fabio.routes().await.ok()?;
        routes.into_iter().find(|r| r["path"] == format!("/{PROBE}"))
    })
    .await;
    assert_eq!(route["service"], "probe-service");
    assert_eq!(route["dst"], format!("grpc://{addr}"));

    running.stop().await.unwrap();
    assert!(passing_instances(&consul, "probe-service").await.is_empty(), "deregistered on stop");
    let catalog: Value = reqwest::get(format!("{}/v1/catalog/service/probe-service", consul.http_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(catalog, serde_json::json!([]));
    eventually("the route to go", Duration::from_secs(20), async || {
        let routes = fabio.routes().await.ok()?;
        routes.iter().all(|r| r["path"] != format!("/{PROBE}")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_service_that_cannot_reach_consul_says_so_at_start_up() {
    let port = ftgo_testenv::process::free_port().unwrap();
    let mut running = Running::new("127.0.0.1:1".parse().unwrap(), CancellationToken::new());
    let registration = Registration::grpc("probe-service", "127.0.0.1:1".parse().unwrap(), &[PROBE]);
    let error = registry::register_while_running(&mut running, &format!("http://127.0.0.1:{port}"), registration)
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("registering probe-service-127.0.0.1-1 in Consul"), "{error:#}");
}
