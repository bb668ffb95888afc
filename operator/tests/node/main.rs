//! The user's path, end to end, on a real one-node cluster: the operator installed by its Helm
//! chart and running in a pod, an `FtgoSystem` applied with `kubectl`, `kubectl wait` for `Ready`,
//! orders placed from the host through Fabio, a pod deleted, a service scaled, the system deleted.
//! Once with Managed infrastructure (everything in pods, from locally built images), once with
//! External infrastructure that runs on the host.
//!
//! One test function: a cluster with a dozen pods takes most of the machine's two cores, so the
//! two modes share one cluster and run one after the other.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use ftgo_catalog::ServiceName;
use ftgo_operator::{controller::status, crd::FtgoSystem};
use ftgo_testenv::{Consul, KubeCluster, Nats, Postgres, cluster::NODE_IP, eventually, host, images};
use futures::StreamExt as _;
use kube::{Api, runtime::watcher};
use serde_json::Value;

const TAG: &str = "0.1.0";

/// The workspace's binaries, next to this test's (`cargo test` builds them all first).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_owned()
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// `kubectl` and `helm` against the cluster, as a user runs them.
struct Cli {
    kubeconfig: PathBuf,
}

impl Cli {
    fn run(&self, tool: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(host::binary(tool).unwrap())
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(repository())
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{tool} {} failed:\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.run("kubectl", args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn helm(&self, args: &[&str]) -> String {
        self.run("helm", args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `kubectl wait --for=condition=Ready`, with the system's status and the pods in the
    /// failure message.
    fn wait_ready(&self, namespace: &str, timeout: &str) {
        let timeout = format!("--timeout={timeout}");
        if let Err(e) = self.run("kubectl", &["wait", "--for=condition=Ready", "ftgo/shop", "-n", namespace, &timeout])
        {
            let status = self.run("kubectl", &["get", "ftgo", "shop", "-n", namespace, "-o", "yaml"]);
            let pods = self.run("kubectl", &["get", "pods", "-A", "-o", "wide"]);
            let events = self.run("kubectl", &["get", "events", "-n", namespace, "--sort-by=.lastTimestamp"]);
            panic!("{e}\n{status:?}\n{pods:?}\n{events:?}");
        }
    }
}

/// Every image the operator deploys, built (if stale) and imported into the node.
fn import_images(cluster: &KubeCluster) {
    let target = target_dir();
    let mut specs: Vec<_> = ServiceName::ALL
        .into_iter()
        .map(ServiceName::binary)
        .chain(["ftgo-operator"])
        .map(|bin| images::workspace_binary(bin, &target.join(bin), TAG))
        .collect();
    specs.extend(images::infrastructure().unwrap());
    let archives = images::build_all(&specs, &host::cache_dir("images").unwrap()).unwrap();
    for (spec, archive) in specs.iter().zip(archives) {
        cluster.import_image(&archive, &spec.reference).unwrap();
    }
}

/// `just demo` against `api`: orders that end APPROVED, REJECTED (over the credit limit),
/// revised and CANCELLED.
fn demo(api: SocketAddr) {
    let out = Command::new(target_dir().join("ftgo-local"))
        .arg("demo")
        .env("FTGO_GATEWAY_URL", format!("http://{api}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for outcome in ["order is APPROVED", "order is REJECTED", "order is CANCELLED", "with total 15.00"] {
        assert!(stdout.contains(outcome), "the demo never printed {outcome:?}:\n{stdout}");
    }
}

async fn get_json(url: &str) -> Option<Value> {
    let response = reqwest::get(url).await.ok()?;
    response.status().is_success().then_some(())?;
    response.json().await.ok()
}

/// Places an order through the API and waits until it is APPROVED; returns its id.
async fn approved_order(api: SocketAddr) -> String {
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let request = http.post(format!("http://{api}{path}")).json(&body);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let consumer =
        post("/api/consumers", serde_json::json!({"name": {"firstName": "Grace", "lastName": "Hopper"}})).await;
    let restaurant = post(
        "/api/restaurants",
        serde_json::json!({"name": "Mandalay",
            "address": {"street1": "1 Main St", "city": "Berkeley", "state": "CA", "zip": "94704"},
            "menu": {"menuItems": [{"id": "1", "name": "Tea leaf salad", "price": "9.00"}]}}),
    )
    .await;
    let order = serde_json::json!({
        "consumerId": consumer["consumerId"], "restaurantId": restaurant["restaurantId"],
        "deliveryAddress": {"street1": "9 Telegraph Ave", "city": "Oakland", "state": "CA", "zip": "94612"},
        "lineItems": [{"menuItemId": "1", "quantity": 1}],
    });
    // The menu reaches the Order Service by event: a 404 until it has.
    let order_id = eventually("the order to be accepted", Duration::from_secs(30), || async {
        let response = http.post(format!("http://{api}/api/orders")).json(&order).send().await.ok()?;
        let body: Value = response.json().await.ok()?;
        body["orderId"].as_str().map(str::to_owned)
    })
    .await;
    eventually("the order to be APPROVED", Duration::from_secs(60), || async {
        let order = get_json(&format!("http://{api}/api/orders/{order_id}")).await?;
        (order["state"] == "APPROVED").then_some(())
    })
    .await;
    order_id
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_runs_ftgo_in_real_pods_managed_and_external() {
    ftgo_testenv::init_test_tracing();
    let started = Instant::now();
    let mut cluster = KubeCluster::start().await.expect("the one-node cluster starts");
    println!("node Ready after {:.1}s", started.elapsed().as_secs_f32());
    let imported = Instant::now();
    import_images(&cluster);
    println!("images built and imported in {:.1}s", imported.elapsed().as_secs_f32());
    let cli = Cli { kubeconfig: cluster.kubeconfig_path().to_owned() };

    // The operator, by its chart, in a pod.
    cli.helm(&[
        "install",
        "ftgo-operator",
        "charts/ftgo-operator",
        "-n",
        "ftgo-system",
        "--create-namespace",
        "--wait",
        "--timeout=5m",
    ]);
    let operator_pods = cli.kubectl(&["get", "pods", "-n", "ftgo-system", "-o", "name"]);
    assert!(operator_pods.lines().count() >= 1, "the operator runs in a pod: {operator_pods}");
    // The chart's own test: a pod that asks the operator's Service whether it is ready.
    let tested = cli.helm(&["test", "ftgo-operator", "-n", "ftgo-system", "--timeout=2m"]);
    assert!(tested.contains("Succeeded"), "{tested}");

    managed(&mut cluster, &cli).await;
    external(&mut cluster, &cli).await;
    println!("end to end in {:.1}s", started.elapsed().as_secs_f32());
}

/// Managed infrastructure: Postgres, NATS, Consul and Fabio in pods from local images.
async fn managed(cluster: &mut KubeCluster, cli: &Cli) {
    let applied = Instant::now();
    cli.kubectl(&["create", "namespace", "ftgo"]);
    cli.kubectl(&["apply", "-f", "examples/ftgo-system-local.yaml"]);
    cli.wait_ready("ftgo", "10m");
    println!("Managed FtgoSystem Ready after {:.1}s", applied.elapsed().as_secs_f32());
    let pods =
        cli.kubectl(&["get", "pods", "-n", "ftgo", "-o", "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}"]);
    assert_eq!(
        pods.lines().filter(|p| *p == "Running").count(),
        10,
        "six services and four infrastructure pods:\n{pods}"
    );

    let api = cluster.forward_into("127.0.0.1:0".parse().unwrap(), SocketAddr::from((NODE_IP, 30080))).await.unwrap();
    demo(api);

    // A deleted service pod: Ready turns False, then True, and no order is lost. A watch sees
    // every status the operator writes, however briefly it holds.
    let before = approved_order(api).await;
    let systems: Api<FtgoSystem> = Api::namespaced(cluster.client().await.unwrap(), "ftgo");
    let mut readiness = watcher::watch_object(systems, "shop")
        .map(|event| {
            let system = event.ok().flatten()?;
            Some(status::ready(system.status.as_ref())?.status.clone())
        })
        .boxed();
    assert_eq!(readiness.next().await.flatten().as_deref(), Some("True"));
    let deleted =
        cli.kubectl(&["delete", "pod", "-n", "ftgo", "-l", "app.kubernetes.io/name=order-service", "--wait=false"]);
    assert!(deleted.contains("deleted"), "{deleted}");
    let mut seen = Vec::new();
    let turned = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(ready) = readiness.next().await {
            let ready = ready.unwrap_or_default();
            if seen.last() != Some(&ready) {
                seen.push(ready.clone());
            }
            if seen.len() >= 2 && ready == "True" {
                return;
            }
        }
    })
    .await;
    assert!(turned.is_ok(), "Ready went {seen:?} after the Order Service's pod was deleted");
    assert_eq!(seen.first().map(String::as_str), Some("False"), "Ready went {seen:?}");
    let after = eventually("the order placed before the restart", Duration::from_secs(30), || async {
        get_json(&format!("http://{api}/api/orders/{before}")).await
    })
    .await;
    assert_eq!(after["state"], "APPROVED");
    approved_order(api).await;

    // Two Order Service pods: both registered in Consul, both behind Fabio's route.
    let system = cli.kubectl(&["get", "ftgo", "shop", "-n", "ftgo", "-o", "json"]);
    let mut system: Value = serde_json::from_str(&system).unwrap();
    let services = system["spec"]["services"].as_array_mut().unwrap();
    for service in services.iter_mut().filter(|s| s["name"] == "order") {
        service["replicas"] = 2.into();
    }
    let scaled = std::env::temp_dir().join(format!("ftgo-scaled-{}.json", std::process::id()));
    std::fs::write(&scaled, system.to_string()).unwrap();
    cli.kubectl(&["replace", "-f", scaled.to_str().unwrap()]);
    let _ = std::fs::remove_file(&scaled);
    cli.wait_ready("ftgo", "3m");
    let consul_ip = cli.kubectl(&["get", "svc", "shop-consul", "-n", "ftgo", "-o", "jsonpath={.spec.clusterIP}"]);
    let consul = cluster
        .forward_into("127.0.0.1:0".parse().unwrap(), format!("{consul_ip}:8500").parse().unwrap())
        .await
        .unwrap();
    eventually("two passing Order Service instances in Consul", Duration::from_secs(60), || async {
        let healthy = get_json(&format!("http://{consul}/v1/health/service/order-service?passing")).await?;
        (healthy.as_array()?.len() == 2).then_some(())
    })
    .await;
    let fabio_ui =
        cluster.forward_into("127.0.0.1:0".parse().unwrap(), SocketAddr::from((NODE_IP, 30998))).await.unwrap();
    eventually("Fabio to route to both Order Service pods", Duration::from_secs(60), || async {
        let routes = get_json(&format!("http://{fabio_ui}/api/routes")).await?;
        let targets: std::collections::BTreeSet<&str> = routes
            .as_array()?
            .iter()
            .filter(|route| route["service"] == "order-service")
            .filter_map(|route| route["dst"].as_str())
            .collect();
        (targets.len() == 2).then_some(())
    })
    .await;
    approved_order(api).await;

    cli.kubectl(&["delete", "ftgo", "shop", "-n", "ftgo", "--timeout=2m"]);
    cli.kubectl(&["delete", "namespace", "ftgo", "--timeout=3m"]);
}

/// External infrastructure: Postgres, NATS and Consul on the host's loopback, reached by the pods
/// through the node; Fabio runs on the node next to the cluster, as it would beside any cluster.
async fn external(cluster: &mut KubeCluster, cli: &Cli) {
    let (postgres, nats, consul) = tokio::join!(Postgres::start(), Nats::start(), Consul::start());
    let (postgres, nats, consul) = (postgres.unwrap(), nats.unwrap(), consul.unwrap());
    let pg = cluster.expose_host_port(postgres.port()).unwrap();
    let nats_port: u16 = nats.url().rsplit(':').next().unwrap().parse().unwrap();
    let nats_inside = cluster.expose_host_port(nats_port).unwrap();
    let consul_port: u16 = consul.http_url().rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap();
    let consul_inside = cluster.expose_host_port(consul_port).unwrap();
    cluster
        .run_on_node(
            "fabio",
            &host::binary("fabio").unwrap(),
            &[
                "-registry.consul.addr",
                &consul_inside.to_string(),
                "-registry.consul.register.enabled=false",
                "-proxy.addr",
                &format!("{NODE_IP}:9999;proto=http"),
                "-ui.addr",
                &format!("{NODE_IP}:9998"),
            ],
        )
        .unwrap();
    let api = cluster.forward_into("127.0.0.1:0".parse().unwrap(), SocketAddr::from((NODE_IP, 9999))).await.unwrap();

    cli.kubectl(&["create", "namespace", "shop-external"]);
    // testenv's Postgres trusts loopback connections, which is where the forward arrives from.
    cli.kubectl(&[
        "create",
        "secret",
        "generic",
        "pg-admin",
        "-n",
        "shop-external",
        "--from-literal=username=postgres",
        "--from-literal=password=trust",
    ]);
    let manifest = serde_json::json!({
        "apiVersion": "ftgo.dev/v1alpha1",
        "kind": "FtgoSystem",
        "metadata": {"name": "shop", "namespace": "shop-external"},
        "spec": {
            "databaseReclaimPolicy": "Delete",
            "infrastructure": {
                "postgres": {"host": pg.ip().to_string(), "port": pg.port(), "adminSecretName": "pg-admin"},
                "nats": {"url": format!("nats://{nats_inside}")},
                "consul": {"url": format!("http://{consul_inside}")},
            }
        }
    });
    let file = std::env::temp_dir().join(format!("ftgo-external-{}.json", std::process::id()));
    std::fs::write(&file, manifest.to_string()).unwrap();
    let applied = Instant::now();
    cli.kubectl(&["apply", "-f", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    cli.wait_ready("shop-external", "10m");
    println!("External FtgoSystem Ready after {:.1}s", applied.elapsed().as_secs_f32());
    demo(api);

    // The finalizer removes what the system wrote outside Kubernetes.
    let consul_url = consul.http_url().trim_end_matches('/').to_owned();
    let catalog_node = "ftgo-shop-external-shop";
    assert!(get_json(&format!("{consul_url}/v1/catalog/node/{catalog_node}")).await.is_some_and(|n| !n.is_null()));
    cli.kubectl(&["delete", "ftgo", "shop", "-n", "shop-external", "--timeout=2m"]);
    let node = get_json(&format!("{consul_url}/v1/catalog/node/{catalog_node}")).await;
    assert!(node.as_ref().is_none_or(Value::is_null), "the Consul registrations are gone: {node:?}");
    let routes = reqwest::get(format!("{consul_url}/v1/kv/fabio/config/ftgo/shop-external/shop")).await.unwrap();
    assert_eq!(routes.status(), reqwest::StatusCode::NOT_FOUND, "the Fabio routes are gone");
    let databases: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE '%shop%'")
        .fetch_all(&sqlx::PgPool::connect(&postgres.url("postgres")).await.unwrap())
        .await
        .unwrap();
    assert!(databases.is_empty(), "Delete drops the databases: {databases:?}");
}
