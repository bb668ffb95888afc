//! The platform's one Consul client against a real Consul agent, and against one that accepts
//! connections and never answers.

use std::time::{Duration, Instant};

use ftgo_platform::{
    config,
    consul::{CatalogCheck, CatalogRegistration, CatalogService, Consul, ConsulError},
};
use serde_json::json;

#[tokio::test]
async fn kv_reads_writes_watches_and_deletes_keys_of_any_spelling() {
    let server = ftgo_testenv::Consul::start().await.unwrap();
    let consul = Consul::new(&server.http_url()).unwrap();
    let key = "ftgo/test/a key with spaces?&#";

    assert_eq!(consul.kv_get(key).await.unwrap(), None);
    consul.kv_put(key, "one").await.unwrap();
    assert_eq!(consul.kv_get(key).await.unwrap().as_deref(), Some("one"));
    // The key is stored as spelled, not as a prefix or a query.
    assert_eq!(consul.kv_get("ftgo/test/a key with spaces").await.unwrap(), None);

    // A blocking query from the current index waits for the next change, and sees it.
    let seen = consul.kv_watch(key, 0).await.unwrap();
    assert_eq!(seen.value.as_deref(), Some("one"));
    assert!(seen.index > 0);
    let writer = consul.clone();
    let change = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer.kv_put("ftgo/test/a key with spaces?&#", "two").await.unwrap();
    });
    let started = Instant::now();
    let next = consul.kv_watch(key, seen.index).await.unwrap();
    change.await.unwrap();
    assert_eq!(next.value.as_deref(), Some("two"));
    assert!(next.index > seen.index);
    assert!(started.elapsed() >= Duration::from_millis(250), "the query waited for the change");

    consul.kv_delete(key).await.unwrap();
    let gone = consul.kv_watch(key, 0).await.unwrap();
    assert_eq!(gone.value, None);
    assert!(gone.index > 0, "a missing key still has an index to wait from");
}

#[tokio::test]
async fn the_agent_and_the_catalog_register_and_forget_instances() {
    let server = ftgo_testenv::Consul::start().await.unwrap();
    let consul = Consul::new(&server.http_url()).unwrap();

    let instance = json!({"ID": "probe-1", "Name": "probe", "Address": "127.0.0.1", "Port": 1, "Tags": ["t"]});
    assert!(!consul.agent_has_service("probe-1").await.unwrap());
    consul.agent_register(&instance).await.unwrap();
    assert!(consul.agent_has_service("probe-1").await.unwrap());
    consul.agent_deregister("probe-1").await.unwrap();
    assert!(!consul.agent_has_service("probe-1").await.unwrap());

    let registration = CatalogRegistration {
        node: "probe-node".to_owned(),
        address: "127.0.0.1".to_owned(),
        node_meta: [("external-source".to_owned(), "test".to_owned())].into(),
        service: CatalogService {
            id: "probe-2".to_owned(),
            service: "probe".to_owned(),
            address: "127.0.0.2".to_owned(),
            port: 2,
            tags: vec!["urlprefix-/probe".to_owned()],
            meta: Default::default(),
        },
        checks: vec![CatalogCheck {
            check_id: "probe-2-ready".to_owned(),
            name: "ready".to_owned(),
            status: "passing".to_owned(),
            service_id: "probe-2".to_owned(),
            output: "ready".to_owned(),
        }],
        skip_node_update: false,
    };
    assert!(consul.node_services("probe-node").await.unwrap().is_empty(), "no node yet");
    consul.catalog_register(&registration).await.unwrap();
    assert_eq!(consul.node_services("probe-node").await.unwrap(), vec![registration.service.clone()]);
    let checks = consul.node_checks("probe-node").await.unwrap();
    assert_eq!(checks, registration.checks);
    consul.catalog_deregister_service("probe-node", "probe-2").await.unwrap();
    assert!(consul.node_services("probe-node").await.unwrap().is_empty());
    consul.catalog_deregister_node("probe-node").await.unwrap();

    // A refusal says what Consul said.
    let refused = consul.catalog_deregister_service("", "x").await.unwrap_err();
    assert!(matches!(refused, ConsulError::Refused { .. }), "{refused}");
    assert!(!refused.is_unreachable());
}

/// A TCP server that accepts connections and never answers: a hung Consul.
async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            connections.push(connection);
        }
    });
    (addr, held)
}

#[tokio::test]
async fn a_consul_that_never_answers_fails_every_call_within_the_timeout() {
    let (addr, held) = silent_server().await;
    let consul = Consul::with_timeout(&addr, Duration::from_millis(300)).unwrap();
    let started = Instant::now();
    for error in [
        consul.kv_get("k").await.unwrap_err(),
        consul.kv_put("k", "v").await.unwrap_err(),
        consul.agent_has_service("x").await.map(drop).unwrap_err(),
        consul.node_services("n").await.map(drop).unwrap_err(),
    ] {
        assert!(error.is_unreachable(), "{error}");
    }
    assert!(started.elapsed() < Duration::from_secs(4), "each call gave up after its timeout");

    // A service's start reads its configuration document with the default timeout: it fails
    // with a message instead of hanging.
    let started = Instant::now();
    let error = config::consul_document(&addr, "order-service").await.unwrap_err();
    let waited = started.elapsed();
    assert!(format!("{error:#}").contains("ftgo/config/order-service"), "{error:#}");
    assert!(waited >= ftgo_platform::consul::TIMEOUT - Duration::from_millis(100), "{waited:?}");
    assert!(waited < ftgo_platform::consul::TIMEOUT + Duration::from_secs(3), "{waited:?}");
    held.abort();
}
