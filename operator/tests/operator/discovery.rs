use std::time::{Duration, Instant};

use ftgo_operator::{
    controller::{CLEANUP_SKIPPED, SKIP_CLEANUP_ANNOTATION, status},
    crd::ExternalRecord,
};
use ftgo_testenv::Fabio;
use k8s_openapi::api::{discovery::v1::EndpointSlice, events::v1::Event};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::{
    lifecycle::database_exists,
    support::{Env, RunningOperator, eventually},
};

/// Plays the EndpointSlice controller: one slice for `service` (a child Service of `system`),
/// labelled as the controller labels it (the Service's labels plus the service name).
fn endpoint_slice(system: &str, service: &str, port: u16, endpoints: &[(&str, &str, bool)]) -> EndpointSlice {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(pod, ip, ready)| {
            json!({"addresses": [ip], "conditions": {"ready": ready}, "targetRef": {"kind": "Pod", "name": pod}})
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{system}-{service}-x1"),
            "labels": {
                "kubernetes.io/service-name": format!("{system}-{service}"),
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "app.kubernetes.io/instance": system,
                "app.kubernetes.io/managed-by": "ftgo-operator",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

async fn apply_slice(env: &Env, slice: &EndpointSlice) {
    let name = slice.metadata.name.clone().unwrap();
    env.api::<EndpointSlice>()
        .patch(&name, &PatchParams::apply("endpointslice-controller").force(), &Patch::Apply(slice))
        .await
        .unwrap();
}

async fn get_json(url: String) -> Option<Value> {
    reqwest::get(url).await.ok()?.json().await.ok()
}

/// The passing instances of a Consul service: (address, port, tags).
async fn passing(env: &Env, service: &str) -> Option<Vec<(String, u64, Vec<String>)>> {
    let entries = get_json(format!("{}/v1/health/service/{service}?passing=true", env.consul.http_url())).await?;
    Some(
        entries
            .as_array()?
            .iter()
            .map(|e| {
                let s = &e["Service"];
                let tags = s["Tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect();
                (s["Address"].as_str().unwrap().to_owned(), s["Port"].as_u64().unwrap(), tags)
            })
            .collect(),
    )
}

async fn kv(env: &Env, key: &str) -> Option<String> {
    let response = reqwest::get(format!("{}/v1/kv/{key}?raw", env.consul.http_url())).await.unwrap();
    if response.status() == 404 { None } else { Some(response.text().await.unwrap()) }
}

#[tokio::test]
async fn consul_holds_the_ready_endpoints_with_fabio_tags_and_fabio_routes_them() {
    let env = Env::start("discovery").await;
    let fabio = Fabio::start(&env.consul).await.unwrap();
    let operator = RunningOperator::start(&env.client, "operator-0");
    let services = json!([{"name": "order"}, {"name": "gateway"}]);
    env.apply(&env.manifest("shop", json!({"services": services}))).await;
    env.wait_ready("shop", "False").await;

    // Before any EndpointSlice exists the Service's cluster IP stands in, critical while no
    // replica is available: registered, but not routed.
    let node = format!("ftgo-{}-shop", env.namespace);
    let catalog_url = format!("{}/v1/catalog/node-services/{node}", env.consul.http_url());
    let registered = eventually("the cluster-IP stand-ins", Duration::from_secs(30), || async {
        let node = get_json(catalog_url.clone()).await?;
        let ids: Vec<String> =
            node["Services"].as_array()?.iter().map(|s| s["ID"].as_str().unwrap().to_owned()).collect();
        (ids.len() == 2).then_some(ids)
    })
    .await;
    assert!(registered.contains(&"shop-order-service".to_owned()), "{registered:?}");
    assert_eq!(passing(&env, "order-service").await.unwrap(), vec![]);

    // The EndpointSlice controller's part: two order pods (one ready), one gateway pod.
    apply_slice(
        &env,
        &endpoint_slice("shop", "order", 7104, &[("order-a", "10.1.0.5", true), ("order-b", "10.1.0.6", false)]),
    )
    .await;
    apply_slice(&env, &endpoint_slice("shop", "gateway", 8080, &[("gateway-a", "10.1.0.9", true)])).await;

    let order = eventually("the ready order pod to pass", Duration::from_secs(30), || async {
        let found = passing(&env, "order-service").await?;
        (found.len() == 1).then_some(found)
    })
    .await;
    assert_eq!(order[0].0, "10.1.0.5");
    assert_eq!(order[0].1, 7104);
    assert!(order[0].2.contains(&"urlprefix-/ftgo.order.v1.OrderService proto=grpc".to_owned()), "{order:?}");
    let all = get_json(catalog_url.clone()).await.unwrap();
    assert_eq!(all["Services"].as_array().unwrap().len(), 3, "stand-ins replaced by the pods: {all}");

    // Fabio learns the routes from those registrations, only to the ready pod.
    let routes = eventually("Fabio's routes", Duration::from_secs(30), || async {
        let routes = fabio.routes().await.ok()?;
        let grpc = routes.iter().any(|r| r["path"] == "/ftgo.order.v1.OrderService");
        let api = routes.iter().any(|r| r["path"] == "/api");
        (grpc && api).then_some(routes)
    })
    .await;
    let order_route = routes.iter().find(|r| r["path"] == "/ftgo.order.v1.OrderService").unwrap();
    // `proto=grpc` routes are reported with a grpc:// destination.
    assert_eq!(order_route["dst"], "grpc://10.1.0.5:7104", "{routes:?}");
    assert_eq!(order_route["tags"][0], format!("ftgo-system={}.shop", env.namespace), "the override pins it");
    let api_route = routes.iter().find(|r| r["path"] == "/api").unwrap();
    assert_eq!(api_route["dst"], "http://10.1.0.9:8080/");
    let key = format!("fabio/config/ftgo/{}/shop", env.namespace);
    let overrides = kv(&env, &key).await.expect("the route overrides");
    assert!(overrides.contains("route weight order-service /ftgo.order.v1.OrderService weight 1"), "{overrides}");

    // Readiness flips: the check follows, and so does Fabio.
    apply_slice(
        &env,
        &endpoint_slice("shop", "order", 7104, &[("order-a", "10.1.0.5", false), ("order-b", "10.1.0.6", true)]),
    )
    .await;
    eventually("the check to follow readiness", Duration::from_secs(30), || async {
        let found = passing(&env, "order-service").await?;
        (found.len() == 1 && found[0].0 == "10.1.0.6").then_some(())
    })
    .await;

    env.roll_out("shop").await;
    let ready = env.wait_ready("shop", "True").await;
    let registered = ready.status.unwrap().conditions.into_iter().find(|c| c.type_ == status::SERVICES_REGISTERED);
    assert_eq!(registered.unwrap().status, "True");

    // Delete: registrations, routes and overrides go, and the finalizer lets the object go.
    env.systems().delete("shop", &DeleteParams::default()).await.unwrap();
    let systems = env.systems();
    eventually("the system to be gone", Duration::from_secs(30), || async {
        systems.get_opt("shop").await.ok()?.is_none().then_some(())
    })
    .await;
    let node_after = get_json(catalog_url).await;
    assert!(node_after.as_ref().is_none_or(|n| n["Node"].is_null()), "the synthetic node is gone: {node_after:?}");
    assert_eq!(kv(&env, &key).await, None);
    eventually("Fabio to drop the routes", Duration::from_secs(30), || async {
        let routes = fabio.routes().await.ok()?;
        routes.iter().all(|r| r["path"] != "/api" && r["path"] != "/ftgo.order.v1.OrderService").then_some(())
    })
    .await;
    operator.stop().await;
}

/// `kill -STOP` / `kill -CONT`: Consul stops answering (its connections hang, as behind a dead
/// network) and later comes back with its state intact.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
    assert!(status.success());
}

/// The Warning Events about the FtgoSystem `name` with `reason`.
async fn warnings(env: &Env, name: &str, reason: &str) -> Vec<Event> {
    let events = env.api::<Event>().list(&ListParams::default()).await.unwrap();
    events
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// Waits until `name`'s status records exactly `expected` as written outside Kubernetes.
async fn wait_recorded(env: &Env, name: &str, expected: ExternalRecord) {
    let systems = env.systems();
    eventually(&format!("{name}'s record of {expected:?}"), Duration::from_secs(60), || async {
        let external = systems.get(name).await.ok()?.status?.external?;
        (external == expected).then_some(())
    })
    .await;
}

#[tokio::test]
async fn deletion_waits_for_consul_says_why_and_finishes_when_consul_returns_or_the_annotation_skips_it() {
    let mut env = Env::start("blocked").await;
    let operator = RunningOperator::start(&env.client, "operator-0");
    // `shop` waits for Consul; `left` is let go by the annotation and leaves its part behind.
    for (name, prefix) in [("shop", "shop_"), ("left", "left_")] {
        let spec = json!({"services": [{"name": "order"}], "infrastructure": {"postgres": {"databasePrefix": prefix}}});
        env.apply(&env.manifest(name, spec)).await;
    }
    let (namespace, consul) = (env.namespace.clone(), env.consul.http_url());
    let node = |name: &str| format!("ftgo-{namespace}-{name}");
    let key = |name: &str| format!("fabio/config/ftgo/{namespace}/{name}");
    let catalog_url = |name: &str| format!("{consul}/v1/catalog/node-services/{}", node(name));
    for name in ["shop", "left"] {
        // What the status records is what was written: the node, the KV key and the database.
        let expected = ExternalRecord {
            consul_node: Some(node(name)),
            fabio_routes_key: Some(key(name)),
            databases: vec![format!("{name}_order")],
        };
        wait_recorded(&env, name, expected).await;
        let registered = get_json(catalog_url(name)).await.unwrap();
        assert!(!registered["Node"].is_null(), "{name} is registered: {registered}");
        assert!(kv(&env, &key(name)).await.is_some());
    }

    let pid = env.consul.process().pid();
    signal(pid, "-STOP");
    let systems = env.systems();
    for name in ["shop", "left"] {
        systems.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["shop", "left"] {
        let blocked =
            eventually(&format!("{name}'s blocked cleanup to be reported"), Duration::from_secs(60), || async {
                let system = systems.get_opt(name).await.ok()??;
                let degraded = system.status?.conditions.into_iter().find(|c| c.type_ == status::DEGRADED)?;
                (degraded.reason == "CleanupBlocked").then_some(degraded)
            })
            .await;
        assert!(blocked.message.contains("cannot deregister from Consul"), "{}", blocked.message);
        assert!(!warnings(&env, name, "CleanupBlocked").await.is_empty(), "{name}: a CleanupBlocked Warning");
    }

    // The escape hatch: `left` goes without Consul, and a Warning says what it left there.
    let annotate = json!({"metadata": {"annotations": {SKIP_CLEANUP_ANNOTATION: "true"}}});
    systems.patch("left", &PatchParams::default(), &Patch::Merge(&annotate)).await.unwrap();
    eventually("left to be gone once annotated", Duration::from_secs(30), || async {
        systems.get_opt("left").await.ok()?.is_none().then_some(())
    })
    .await;
    let skipped = eventually("the Warning saying what was left", Duration::from_secs(10), || async {
        warnings(&env, "left", CLEANUP_SKIPPED).await.pop()
    })
    .await;
    let note = skipped.note.unwrap_or_default();
    let expected_consul = format!("Consul node {} with its service registrations (Consul at {consul})", node("left"));
    assert!(note.contains(&expected_consul), "{note}");
    assert!(note.contains(&format!("Fabio route overrides at Consul KV key {}", key("left"))), "{note}");
    assert!(note.contains("Postgres databases and roles left_order"), "{note}");
    assert!(systems.get_opt("shop").await.unwrap().is_some(), "shop still waits for Consul");

    signal(pid, "-CONT");
    eventually("shop to be gone once Consul is back", Duration::from_secs(60), || async {
        systems.get_opt("shop").await.ok()?.is_none().then_some(())
    })
    .await;
    let shop_after = get_json(catalog_url("shop")).await;
    assert!(shop_after.as_ref().is_none_or(|n| n["Node"].is_null()), "deregistered: {shop_after:?}");
    assert_eq!(kv(&env, &key("shop")).await, None);
    // (Whether `left`'s node is still in Consul now is not for this test to say: a deregistration
    // that timed out while Consul was stopped was still queued in its socket, and Consul carries
    // it out when it resumes.)
    operator.stop().await;
}

#[tokio::test]
async fn a_system_whose_consul_was_never_reachable_is_deleted_promptly() {
    let env = Env::start("unreachable").await;
    let operator = RunningOperator::start(&env.client, "operator-0");
    // Nothing listens on a free loopback port: every call to "Consul" is refused.
    let nowhere = format!("http://127.0.0.1:{}", ftgo_testenv::process::free_port().unwrap());
    let spec = json!({
        "services": [{"name": "order"}],
        "databaseReclaimPolicy": "Delete",
        "infrastructure": {"consul": {"url": nowhere}},
    });
    env.apply(&env.manifest("shop", spec)).await;
    let systems = env.systems();
    let unregistered = eventually("ServicesRegistered=False", Duration::from_secs(60), || async {
        let status = systems.get("shop").await.ok()?.status?;
        let registered = status.conditions.iter().find(|c| c.type_ == status::SERVICES_REGISTERED)?;
        (registered.status == "False").then(|| registered.reason.clone())
    })
    .await;
    assert_eq!(unregistered, "ConsulUnavailable");
    // Postgres was reached, Consul never: only the database is recorded.
    let expected = ExternalRecord { databases: vec!["order".to_owned()], ..ExternalRecord::default() };
    wait_recorded(&env, "shop", expected).await;
    assert!(database_exists(&env, "order").await);

    let deleted = Instant::now();
    systems.delete("shop", &DeleteParams::default()).await.unwrap();
    eventually("the system to be gone", Duration::from_secs(30), || async {
        systems.get_opt("shop").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(deleted.elapsed() < Duration::from_secs(30), "{:?}", deleted.elapsed());
    assert!(!database_exists(&env, "order").await, "what was recorded is still cleaned up (Delete)");
    assert!(warnings(&env, "shop", "CleanupBlocked").await.is_empty(), "nothing blocked the cleanup");
    operator.stop().await;
}
