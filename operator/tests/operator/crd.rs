use std::time::Duration;

use ftgo_operator::crd::FtgoSystem;
use ftgo_testenv::KubeControlPlane;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, PostParams},
};
use serde_json::json;

use crate::support::{eventually, install_crd};

/// CI runs this: the checked-in YAML (and the Helm chart's copy) must be exactly what the Rust
/// types generate.
#[test]
fn the_checked_in_crd_matches_the_rust_types() {
    let generated = serde_yaml::to_string(&ftgo_operator::crd::crd()).unwrap();
    for path in ["crds/ftgosystem.yaml", "charts/ftgo-operator/crds/ftgosystem.yaml"] {
        let checked_in =
            std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap_or_default();
        assert!(checked_in == generated, "{path} is stale: run `just crds` and commit the result");
    }
}

/// A fresh API server with the FtgoSystem CRD installed, and a client of it.
async fn api_server_with_crd() -> (KubeControlPlane, Client) {
    ftgo_testenv::init_test_tracing();
    let control_plane = KubeControlPlane::start().await.unwrap();
    let client = control_plane.client().await.unwrap();
    install_crd(&client).await;
    (control_plane, client)
}

fn manifest(name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "ftgo.dev/v1alpha1",
        "kind": "FtgoSystem",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn external() -> serde_json::Value {
    json!({
        "postgres": {"host": "db.example", "adminSecretName": "pg-admin"},
        "nats": {"url": "nats://nats.example:4222"},
        "consul": {"url": "http://consul.example:8500"},
    })
}

#[tokio::test]
async fn the_api_server_refuses_an_invalid_manifest_and_says_what_is_wrong() {
    let (control_plane, client) = api_server_with_crd().await;
    let namespace = control_plane.create_namespace("crd").await.unwrap();
    let systems: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &ApiResource::erase::<FtgoSystem>(&()));

    let refused = [
        (
            "too-many-replicas",
            json!({"infrastructure": external(), "services": [{"name": "order", "replicas": 21}]}),
            vec!["spec.services[0].replicas", "less than or equal to 20"],
        ),
        (
            "unknown-service",
            json!({"infrastructure": external(), "services": [{"name": "payments"}]}),
            vec!["spec.services[0].name", "Unsupported value: \"payments\""],
        ),
        (
            "duplicate-service",
            json!({"infrastructure": external(), "services": [{"name": "order"}, {"name": "order"}]}),
            vec!["spec.services[1]", "Duplicate value"],
        ),
        (
            "external-without-consul",
            json!({"infrastructure": {
                "mode": "External",
                "postgres": {"host": "db.example", "adminSecretName": "pg-admin"},
                "nats": {"url": "nats://nats.example:4222"},
            }}),
            vec![
                "spec.infrastructure",
                "infrastructure.mode External needs infrastructure.postgres, infrastructure.nats and infrastructure.consul",
            ],
        ),
        (
            "managed-with-connections",
            json!({"infrastructure": {"mode": "Managed", "nats": {"url": "nats://nats.example:4222"}}}),
            vec!["spec.infrastructure", "infrastructure.mode Managed deploys its own Postgres, NATS and Consul"],
        ),
        ("no-infrastructure", json!({"services": [{"name": "order"}]}), vec!["spec.infrastructure", "Required value"]),
        (
            "external-with-images",
            json!({"infrastructure": {
                "postgres": {"host": "db.example", "adminSecretName": "pg-admin"},
                "nats": {"url": "nats://nats.example:4222"},
                "consul": {"url": "http://consul.example:8500"},
                "images": {"nats": "ftgo.local/nats:2.12.8"},
            }}),
            vec![
                "spec.infrastructure",
                "with mode External the operator deploys no infrastructure: leave out infrastructure.images",
            ],
        ),
        (
            "node-port-out-of-range",
            json!({"infrastructure": {"mode": "Managed"}, "fabio": {"httpNodePort": 8080}}),
            vec!["spec.fabio.httpNodePort", "should be greater than or equal to 30000"],
        ),
        (
            "one-node-port-twice",
            json!({"infrastructure": {"mode": "Managed"}, "fabio": {"adminNodePort": 30080}}),
            vec!["spec.fabio", "fabio.httpNodePort and fabio.adminNodePort must differ"],
        ),
        (
            "empty-image",
            json!({"infrastructure": {"mode": "Managed", "images": {"fabio": ""}}}),
            vec!["spec.infrastructure.images.fabio", "should be at least 1 chars long"],
        ),
    ];
    for (name, spec, expected) in refused {
        let err = systems.create(&PostParams::default(), &manifest(name, spec)).await.expect_err(name);
        let kube::Error::Api(status) = err else { panic!("{name}: expected an API refusal, got {err:?}") };
        assert_eq!(status.code, 422, "{name}: {status:?}");
        for fragment in expected {
            assert!(status.message.contains(fragment), "{name}: {:?} lacks {fragment:?}", status.message);
        }
    }

    // A minimal manifest is accepted and the API server fills in the defaults.
    let created = systems
        .create(&PostParams::default(), &manifest("minimal", json!({"infrastructure": external()})))
        .await
        .unwrap();
    let spec = &created.data["spec"];
    assert_eq!(spec["services"].as_array().unwrap().len(), 6, "{spec}");
    assert_eq!(spec["services"][0]["replicas"], 1);
    assert_eq!(spec["databaseReclaimPolicy"], "Retain");
    assert_eq!(spec["version"], "0.1.0");
    assert_eq!(spec["infrastructure"]["postgres"]["port"], 5432);
    assert_eq!(spec["fabio"], json!({"kvPath": "fabio/config", "httpNodePort": 30080, "adminNodePort": 30998}));
    assert_eq!(spec["infrastructure"].get("images"), None, "no images where nothing is deployed");

    // Images named for a Managed system are completed with the public ones.
    let managed = json!({"infrastructure": {"mode": "Managed", "images": {"postgres": "ftgo.local/postgres:15"}}});
    let created = systems.create(&PostParams::default(), &manifest("managed", managed)).await.unwrap();
    let images = &created.data["spec"]["infrastructure"]["images"];
    let expected = json!({
        "postgres": "ftgo.local/postgres:15",
        "nats": ftgo_operator::crd::NATS_IMAGE,
        "consul": ftgo_operator::crd::CONSUL_IMAGE,
        "fabio": ftgo_operator::crd::FABIO_IMAGE,
    });
    assert_eq!(images, &expected);
}

#[tokio::test]
async fn the_examples_are_accepted_by_the_api_server() {
    // The API server stops when `_control_plane` is dropped, at the end of the test.
    let (_control_plane, client) = api_server_with_crd().await;
    let namespace = k8s_openapi::api::core::v1::Namespace {
        metadata: kube::api::ObjectMeta { name: Some("ftgo".to_owned()), ..Default::default() },
        ..Default::default()
    };
    Api::all(client.clone()).create(&PostParams::default(), &namespace).await.unwrap();
    let systems: Api<FtgoSystem> = Api::namespaced(client, "ftgo");
    // Every FtgoSystem in examples/, so that a new one cannot be forgotten here.
    let dir = format!("{}/../examples", env!("CARGO_MANIFEST_DIR"));
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if path.extension().is_none_or(|e| e != "yaml") || !text.contains("\nkind: FtgoSystem\n") {
            continue;
        }
        let example = path.file_name().unwrap().to_string_lossy().into_owned();
        let system: FtgoSystem = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{example}: {e}"));
        let dry_run = PostParams { dry_run: true, ..PostParams::default() };
        systems.create(&dry_run, &system).await.unwrap_or_else(|e| panic!("{example}: {e}"));
        checked.push(example);
    }
    checked.sort();
    let expected = ["ftgo-system-full.yaml", "ftgo-system-kind.yaml", "ftgo-system-local.yaml", "ftgo-system.yaml"];
    assert_eq!(checked, expected);
}

/// The field documentation written on the Rust types is what `kubectl explain` prints.
#[tokio::test]
async fn kubectl_explain_teaches_the_fields() {
    let (control_plane, _client) = api_server_with_crd().await;
    let kubectl = ftgo_testenv::host::binary("kubectl").unwrap();
    // `None` until the API server publishes the CRD's OpenAPI, a moment after it is established.
    let explain = |field: &str| {
        let out = std::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(control_plane.kubeconfig_path())
            .args(["explain", field])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
        out.status.success().then_some(text)
    };
    let replicas = eventually("kubectl explain to know FtgoSystem", Duration::from_secs(30), || async {
        explain("ftgosystem.spec.services.replicas")
    })
    .await;
    assert!(replicas.contains("How many pods run the service, 0 to 20."), "{replicas}");
    let policy = explain("ftgosystem.spec.databaseReclaimPolicy").unwrap();
    assert!(policy.contains("`Retain` (default) keeps them, with their data; `Delete` drops them."), "{policy}");
    let nats = explain("ftgosystem.spec.infrastructure.images.nats").unwrap();
    assert!(nats.contains("the entrypoint must be `nats-server`"), "{nats}");
    let status = explain("ftgosystem.status.conditions").unwrap();
    assert!(status.contains("`ServicesRegistered` (Consul), `RoutesConfigured` (Fabio)"), "{status}");
}
