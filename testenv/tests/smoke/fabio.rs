use std::time::Duration;

use ftgo_testenv::{Consul, Fabio};

use crate::{eventually, register_hello_server, spawn_hello_server};

#[tokio::test]
async fn fabio_routes_http_to_a_service_registered_in_consul_with_a_urlprefix_tag() {
    ftgo_testenv::init_test_tracing();
    let consul = Consul::start().await.unwrap();
    let fabio = Fabio::start(&consul).await.unwrap();
    let addr = spawn_hello_server("order-service").await;
    let http = reqwest::Client::new();

    // Nothing is registered yet: Fabio has no route and answers 404.
    let before = http.get(format!("{}/smoke/hello", fabio.http_url())).send().await.unwrap();
    assert_eq!(before.status(), 404);

    register_hello_server(&consul, "order-1", "order", "urlprefix-/smoke", addr).await;

    let url = format!("{}/smoke/hello", fabio.http_url());
    let body = eventually("Fabio to route /smoke", Duration::from_secs(30), || async {
        let response = http.get(&url).send().await.ok()?;
        response.status().is_success().then_some(())?;
        response.text().await.ok()
    })
    .await;
    assert_eq!(body, "hello from order-service");

    let routes = fabio.routes().await.unwrap();
    let route = routes.iter().find(|r| r["path"] == "/smoke").expect("a /smoke route");
    assert_eq!(route["service"], "order");
    assert_eq!(route["dst"], format!("http://{addr}/"));

    // Deregistered: the route disappears again.
    http.put(format!("{}/v1/agent/service/deregister/order-1", consul.http_url()))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    eventually("the /smoke route to go", Duration::from_secs(30), || async {
        let routes = fabio.routes().await.ok()?;
        routes.iter().all(|r| r["path"] != "/smoke").then_some(())
    })
    .await;
}
