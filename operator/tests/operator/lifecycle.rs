use std::{collections::BTreeMap, time::Duration};

use ftgo_operator::{
    controller::{FINALIZER, status},
    crd::FtgoSystem,
};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret, Service},
    events::v1::Event,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams},
};
use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::support::{Env, RunningOperator, eventually};

const SERVICES_WITH_DATABASES: [&str; 5] = ["consumer", "kitchen", "accounting", "order", "orchestrator"];

fn secret_text(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

pub(crate) async fn database_exists(env: &Env, name: &str) -> bool {
    catalog_has(env, "SELECT 1 FROM pg_database WHERE datname = $1", name).await
}

async fn role_exists(env: &Env, name: &str) -> bool {
    catalog_has(env, "SELECT 1 FROM pg_roles WHERE rolname = $1", name).await
}

/// Whether the Postgres catalog `query` finds a row for `name` (its `$1`).
async fn catalog_has(env: &Env, query: &'static str, name: &str) -> bool {
    let mut admin = PgConnection::connect(&env.postgres.url("postgres")).await.unwrap();
    let found: Option<(i32,)> = sqlx::query_as(query).bind(name).fetch_optional(&mut admin).await.unwrap();
    found.is_some()
}

/// Every object the operator made for `system`, by kind and name, with its resourceVersion.
async fn children(env: &Env, system: &str) -> BTreeMap<String, String> {
    let params = ListParams::default().labels(&format!("app.kubernetes.io/instance={system}"));
    let mut found = BTreeMap::new();
    for o in env.api::<Secret>().list(&params).await.unwrap() {
        found.insert(format!("Secret/{}", o.name_any()), o.resource_version().unwrap());
    }
    for o in env.api::<ConfigMap>().list(&params).await.unwrap() {
        found.insert(format!("ConfigMap/{}", o.name_any()), o.resource_version().unwrap());
    }
    for o in env.api::<Deployment>().list(&params).await.unwrap() {
        found.insert(format!("Deployment/{}", o.name_any()), o.resource_version().unwrap());
    }
    for o in env.api::<Service>().list(&params).await.unwrap() {
        found.insert(format!("Service/{}", o.name_any()), o.resource_version().unwrap());
    }
    found
}

#[tokio::test]
async fn an_applied_system_gets_databases_and_owned_children_and_is_ready_once_deployments_are_available() {
    let env = Env::start("apply").await;
    let operator = RunningOperator::start(&env.client, "operator-0");
    let system = env.apply(&env.manifest("shop", json!({}))).await;

    // Not ready while no kubelet runs the pods; the condition says why.
    let pending = env.wait_ready("shop", "False").await;
    let ready = status::ready(pending.status.as_ref()).unwrap();
    assert_eq!(ready.reason, "DeploymentsProgressing", "{ready:?}");
    assert!(pending.finalizers().contains(&FINALIZER.to_owned()));

    // Databases and roles exist, and the generated credentials log in (Postgres checks passwords).
    let secrets: Api<Secret> = env.api();
    for service in SERVICES_WITH_DATABASES {
        let secret = secrets.get(&format!("shop-{service}-database")).await.unwrap();
        assert_eq!(secret_text(&secret, "database"), service);
        assert!(database_exists(&env, service).await, "{service} database");
        let url = secret_text(&secret, "url");
        let mut session = PgConnection::connect(&url).await.unwrap_or_else(|e| panic!("{service} logs in: {e}"));
        let (user, db): (String, String) = sqlx::query_as("SELECT current_user::text, current_database()::text")
            .fetch_one(&mut session)
            .await
            .unwrap();
        assert_eq!((user.as_str(), db.as_str()), (service, service));
        sqlx::query("CREATE TABLE owned_by_the_service (id int)").execute(&mut session).await.unwrap();
        let wrong = url.replace(&secret_text(&secret, "password"), "wrong");
        assert!(PgConnection::connect(&wrong).await.is_err(), "a wrong password is refused");
    }

    // Every child is owned by the system and labelled.
    let uid = system.uid().unwrap();
    let deployments: Api<Deployment> = env.api();
    for service in ["consumer", "kitchen", "accounting", "order", "orchestrator", "gateway"] {
        let name = format!("shop-{service}");
        let deployment = deployments.get(&name).await.unwrap();
        let config_map = env.api::<ConfigMap>().get(&name).await.unwrap();
        let kube_service = env.api::<Service>().get(&name).await.unwrap();
        for meta in [&deployment.metadata, &config_map.metadata, &kube_service.metadata] {
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("FtgoSystem", uid.as_str()));
            assert_eq!(meta.labels.as_ref().unwrap()["app.kubernetes.io/component"], service);
            let managers: Vec<_> = meta.managed_fields.iter().flatten().filter_map(|m| m.manager.as_deref()).collect();
            assert!(managers.contains(&"ftgo-operator"), "{name}: {managers:?}");
        }
        assert!(kube_service.spec.unwrap().cluster_ip.is_some());
    }

    // The kubelet's part: the Deployments become available, and so does the system.
    env.roll_out("shop").await;
    let ready_system = env.wait_ready("shop", "True").await;
    let status = ready_system.status.unwrap();
    assert_eq!(status.observed_generation, ready_system.metadata.generation);
    assert_eq!(status.summary.as_deref(), Some("6/6 available"));
    for condition in &status.conditions {
        assert_eq!(condition.observed_generation, ready_system.metadata.generation, "{condition:?}");
    }
    let degraded = status.conditions.iter().find(|c| c.type_ == status::DEGRADED).unwrap();
    assert_eq!(degraded.status, "False");

    // Events tell the story.
    // (The `Ready` Event follows the status write that the test has just seen.)
    let events: Api<Event> = env.api();
    eventually("the Events", Duration::from_secs(30), || async {
        let reasons: Vec<String> =
            events.list(&ListParams::default()).await.ok()?.into_iter().filter_map(|e| e.reason).collect();
        let told = ["DatabasesProvisioned", "Applied", "Registered", "RoutesWritten", "NotReady", "Ready"];
        told.iter().all(|reason| reasons.iter().any(|r| r == reason)).then_some(())
    })
    .await;
    operator.stop().await;
}

#[tokio::test]
async fn a_spec_change_scales_and_deletes_what_the_spec_no_longer_names() {
    let env = Env::start("change").await;
    let operator = RunningOperator::start(&env.client, "operator-0");
    env.apply(&env.manifest("shop", json!({"databaseReclaimPolicy": "Delete"}))).await;
    env.wait_ready("shop", "False").await;
    env.roll_out("shop").await;
    env.wait_ready("shop", "True").await;

    // Five services, order scaled to 3, gateway gone.
    let services = json!([
        {"name": "consumer"}, {"name": "kitchen"}, {"name": "accounting"},
        {"name": "order", "replicas": 3}, {"name": "orchestrator"},
    ]);
    let changed =
        env.apply(&env.manifest("shop", json!({"services": services, "databaseReclaimPolicy": "Delete"}))).await;
    let deployments: Api<Deployment> = env.api();
    eventually("the gateway's children to go", Duration::from_secs(30), || async {
        let gone = deployments.get_opt("shop-gateway").await.ok()?.is_none()
            && env.api::<Service>().get_opt("shop-gateway").await.ok()?.is_none()
            && env.api::<ConfigMap>().get_opt("shop-gateway").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    let order = deployments.get("shop-order").await.unwrap();
    assert_eq!(order.spec.unwrap().replicas, Some(3));

    // Consul forgets the gateway too: its registration is reaped and its routes leave the overrides.
    let base = env.consul.http_url();
    let node_url = format!("{base}/v1/catalog/node-services/ftgo-{}-shop", env.namespace);
    let routes_url = format!("{base}/v1/kv/fabio/config/ftgo/{}/shop?raw", env.namespace);
    eventually("the gateway to leave Consul", Duration::from_secs(30), || async {
        let node: serde_json::Value = reqwest::get(&node_url).await.ok()?.json().await.ok()?;
        let names: Vec<&str> = node["Services"].as_array()?.iter().filter_map(|s| s["Service"].as_str()).collect();
        let routes = reqwest::get(&routes_url).await.ok()?.text().await.ok()?;
        (names.len() == 5 && !names.contains(&"api-gateway") && !routes.contains("/api")).then_some(())
    })
    .await;

    // Order has one of three replicas: the system is not ready at the new generation.
    let pending = env.wait_ready("shop", "False").await;
    assert_eq!(pending.metadata.generation, changed.metadata.generation);
    let reason = status::ready(pending.status.as_ref()).unwrap().message.clone();
    assert!(reason.contains("order (1/3 available)"), "{reason}");
    env.roll_out("shop").await;
    let ready = env.wait_ready("shop", "True").await;
    assert_eq!(ready.status.unwrap().summary.as_deref(), Some("5/5 available"));

    // Removing a service with a database under Delete drops it and its Secret.
    let four = json!([{"name": "consumer"}, {"name": "kitchen"}, {"name": "order"}, {"name": "orchestrator"}]);
    env.apply(&env.manifest("shop", json!({"services": four, "databaseReclaimPolicy": "Delete"}))).await;
    let secrets: Api<Secret> = env.api();
    eventually("accounting's database and Secret to go", Duration::from_secs(30), || async {
        let gone = secrets.get_opt("shop-accounting-database").await.ok()?.is_none()
            && !database_exists(&env, "accounting").await
            && !role_exists(&env, "accounting").await;
        gone.then_some(())
    })
    .await;
    assert!(database_exists(&env, "order").await);
    // The status's record of what exists outside Kubernetes follows: the dropped database leaves it.
    let systems = env.systems();
    eventually("the record to forget accounting's database", Duration::from_secs(30), || async {
        let databases = systems.get("shop").await.ok()?.status?.external?.databases;
        (databases == ["consumer", "kitchen", "orchestrator", "order"]).then_some(())
    })
    .await;
    operator.stop().await;
}

/// Consul's modify indexes of everything the operator wrote for `system`: registrations, checks
/// and the route overrides. Any write moves one.
async fn consul_indexes(env: &Env, system: &str) -> Vec<u64> {
    let node = format!("ftgo-{}-{system}", env.namespace);
    let base = env.consul.http_url();
    let get = |url: String| async move { reqwest::get(url).await.unwrap().json::<serde_json::Value>().await.unwrap() };
    let services = get(format!("{base}/v1/catalog/node-services/{node}")).await;
    let checks = get(format!("{base}/v1/health/node/{node}")).await;
    let kv = get(format!("{base}/v1/kv/fabio/config/ftgo/{}/{system}", env.namespace)).await;
    let mut indexes: Vec<u64> =
        services["Services"].as_array().unwrap().iter().map(|s| s["ModifyIndex"].as_u64().unwrap()).collect();
    indexes.extend(checks.as_array().unwrap().iter().map(|c| c["ModifyIndex"].as_u64().unwrap()));
    indexes.extend(kv.as_array().unwrap().iter().map(|k| k["ModifyIndex"].as_u64().unwrap()));
    indexes
}

#[tokio::test]
async fn an_operator_restart_writes_nothing() {
    let env = Env::start("restart").await;
    let operator = RunningOperator::start(&env.client, "operator-0");
    env.apply(&env.manifest("shop", json!({}))).await;
    env.wait_ready("shop", "False").await;
    env.roll_out("shop").await;
    env.wait_ready("shop", "True").await;
    // Let the reconciles that the roll-out and the status write trigger settle: nothing moves
    // for two seconds.
    let snapshot = || async {
        let system = env.systems().get("shop").await.ok()?;
        Some((system.resource_version(), children(&env, "shop").await, consul_indexes(&env, "shop").await))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = snapshot().await;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = snapshot().await;
        if now.is_some() && now == last {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the system did not settle within 60s");
        last = now;
    }
    operator.stop().await;
    let before = env.systems().get("shop").await.unwrap();
    let system_version = before.resource_version();
    let children_versions = children(&env, "shop").await;
    let events = env.api::<Event>().list(&ListParams::default()).await.unwrap().items.len();
    assert_eq!(children_versions.len(), 5 + 6 * 3, "{children_versions:?}");
    let consul_before = consul_indexes(&env, "shop").await;
    assert_eq!(consul_before.len(), 6 + 6 + 1, "six registrations, six checks, one KV key");

    let restarted = RunningOperator::start(&env.client, "operator-1");
    // The new operator reconciles everything on start; once it has, give any write it might
    // make time to land.
    eventually("the restarted operator to reconcile", Duration::from_secs(30), || async {
        (restarted.metrics.reconciles() > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = env.systems().get("shop").await.unwrap();
    assert_eq!(after.resource_version(), system_version, "the FtgoSystem was not written");
    assert_eq!(children(&env, "shop").await, children_versions, "no child was written");
    assert_eq!(env.api::<Event>().list(&ListParams::default()).await.unwrap().items.len(), events, "no Event");
    assert_eq!(consul_indexes(&env, "shop").await, consul_before, "nothing written to Consul, no check flapped");
    let (was, is) = (status::ready(before.status.as_ref()).unwrap(), status::ready(after.status.as_ref()).unwrap());
    assert_eq!(was.last_transition_time, is.last_transition_time, "Ready did not flap");
    restarted.stop().await;
}

#[tokio::test]
async fn deleting_systems_drops_databases_only_under_delete_and_releases_the_finalizer() {
    let env = Env::start("delete").await;
    let operator = RunningOperator::start(&env.client, "operator-0");
    let keep = json!({"databaseReclaimPolicy": "Retain", "services": [{"name": "order"}],
        "infrastructure": {"postgres": {"databasePrefix": "kept_"}}});
    let drop = json!({"databaseReclaimPolicy": "Delete", "services": [{"name": "order"}],
        "infrastructure": {"postgres": {"databasePrefix": "dropped_"}}});
    env.apply(&env.manifest("kept", keep)).await;
    env.apply(&env.manifest("dropped", drop)).await;
    for name in ["kept", "dropped"] {
        env.wait_ready(name, "False").await;
    }
    assert!(database_exists(&env, "kept_order").await && database_exists(&env, "dropped_order").await);

    let systems = env.systems();
    for name in ["kept", "dropped"] {
        systems.delete(name, &DeleteParams::default()).await.unwrap();
    }
    eventually("both systems to be gone", Duration::from_secs(30), || async {
        let kept: Option<FtgoSystem> = systems.get_opt("kept").await.ok()?;
        let dropped: Option<FtgoSystem> = systems.get_opt("dropped").await.ok()?;
        (kept.is_none() && dropped.is_none()).then_some(())
    })
    .await;
    assert!(database_exists(&env, "kept_order").await, "Retain keeps the database");
    assert!(role_exists(&env, "kept_order").await, "Retain keeps the role");
    assert!(!database_exists(&env, "dropped_order").await, "Delete drops the database");
    assert!(!role_exists(&env, "dropped_order").await, "Delete drops the role");
    operator.stop().await;
}

#[tokio::test]
async fn a_managed_system_deploys_its_own_infrastructure_and_points_the_services_at_it() {
    let env = Env::start("managed").await;
    let operator = RunningOperator::start(&env.client, "operator-0");
    let system: FtgoSystem = serde_json::from_value(json!({
        "apiVersion": "ftgo.dev/v1alpha1",
        "kind": "FtgoSystem",
        "metadata": {"name": "shop", "namespace": env.namespace},
        "spec": {"infrastructure": {"mode": "Managed"}, "services": [{"name": "order"}]},
    }))
    .unwrap();
    let applied = env.apply(&system).await;
    let deployments: Api<Deployment> = env.api();
    let uid = applied.uid().unwrap();
    for part in ["postgres", "nats", "consul", "fabio"] {
        let name = format!("shop-{part}");
        let deployment =
            eventually(&name, Duration::from_secs(30), || async { deployments.get_opt(&name).await.ok()? }).await;
        assert_eq!(deployment.owner_references()[0].uid, uid);
        let services: Api<Service> = env.api();
        eventually(&format!("{name} Service"), Duration::from_secs(30), || async {
            services.get_opt(&name).await.ok()?.map(drop)
        })
        .await;
    }
    let admin = env.api::<Secret>().get("shop-postgres-admin").await.unwrap();
    assert_eq!(secret_text(&admin, "password").len(), 64, "a generated password");

    // Fabio is exposed on the node ports kind-config.yaml maps, which the API server accepts.
    let fabio = env.api::<Service>().get("shop-fabio").await.unwrap().spec.unwrap();
    assert_eq!(fabio.type_.as_deref(), Some("NodePort"));
    let node_port =
        |name: &str| fabio.ports.iter().flatten().find(|p| p.name.as_deref() == Some(name)).and_then(|p| p.node_port);
    assert_eq!((node_port("http"), node_port("admin")), (Some(30080), Some(30998)));
    assert!(node_port("grpc").is_some(), "the API server picks gRPC's node port");

    // The services are configured for the managed infrastructure.
    let config = env.api::<ConfigMap>().get("shop-order").await.unwrap();
    let toml = &config.data.unwrap()["order-service.toml"];
    let ns = &env.namespace;
    assert!(toml.contains(&format!("url = \"nats://shop-nats.{ns}.svc:4222\"")), "{toml}");
    assert!(toml.contains(&format!("addr = \"http://shop-consul.{ns}.svc:8500\"")), "{toml}");

    // Outside the cluster network the operator cannot reach the managed Postgres, and says so.
    let systems = env.systems();
    let message = eventually("DatabasesReady=False", Duration::from_secs(60), || async {
        let status = systems.get("shop").await.ok()?.status?;
        let databases = status.conditions.into_iter().find(|c| c.type_ == status::DATABASES_READY)?;
        (databases.status == "False" && databases.message.contains("cannot reach Postgres"))
            .then_some(databases.message)
    })
    .await;
    assert!(message.contains(&format!("shop-postgres.{ns}.svc:5432")), "{message}");
    let events: Api<Event> = env.api();
    let warning = eventually("a Warning Event saying so too", Duration::from_secs(30), || async {
        let events = events.list(&ListParams::default()).await.ok()?;
        events.items.into_iter().find(|e| e.reason.as_deref() == Some("DatabaseUnavailable"))
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));

    // Deleting it needs nothing outside Kubernetes: the infrastructure goes with it.
    systems.delete("shop", &DeleteParams::default()).await.unwrap();
    eventually("the system to be gone", Duration::from_secs(30), || async {
        systems.get_opt("shop").await.ok()?.is_none().then_some(())
    })
    .await;
    operator.stop().await;
}
