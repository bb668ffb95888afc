use std::time::Duration;

use ftgo_testenv::Consul;
use serde_json::Value;

use crate::{eventually, register_hello_server, spawn_hello_server};

#[tokio::test]
async fn a_registered_service_with_a_passing_check_is_found_through_the_health_api() {
    ftgo_testenv::init_test_tracing();
    let consul = Consul::start().await.unwrap();
    let addr = spawn_hello_server("kitchen").await;
    let http = reqwest::Client::new();

    // The agent itself runs the HTTP check against our server.
    register_hello_server(&consul, "kitchen-1", "kitchen", "urlprefix-/kitchen", addr).await;

    let url = format!("{}/v1/health/service/kitchen?passing=true", consul.http_url());
    let entries: Vec<Value> = eventually("kitchen to pass its check", Duration::from_secs(20), || async {
        let entries: Vec<Value> = http.get(&url).send().await.ok()?.json().await.ok()?;
        (!entries.is_empty()).then_some(entries)
    })
    .await;
    assert_eq!(entries[0]["Service"]["ID"], "kitchen-1");
    assert_eq!(entries[0]["Service"]["Port"], addr.port());
    assert_eq!(entries[0]["Service"]["Tags"][0], "urlprefix-/kitchen");
    let checks = entries[0]["Checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["Status"] == "passing"), "{checks:?}");

    // Key/value store: the operator keeps Fabio's route overrides there.
    http.put(format!("{}/v1/kv/fabio/config", consul.http_url()))
        .body("route add x /x http://127.0.0.1:1/")
        .send()
        .await
        .unwrap();
    let raw =
        http.get(format!("{}/v1/kv/fabio/config?raw", consul.http_url())).send().await.unwrap().text().await.unwrap();
    assert_eq!(raw, "route add x /x http://127.0.0.1:1/");
}
