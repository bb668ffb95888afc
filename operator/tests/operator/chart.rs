use std::{path::Path, process::Command, time::Duration};

use k8s_openapi::api::{authentication::v1::TokenRequest, core::v1::ServiceAccount};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

use crate::support::{Env, RunningOperator, eventually};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/ftgo-operator");

/// `helm template` of the chart into `namespace`, CRDs included.
fn render(namespace: &str, dir: &Path) -> std::path::PathBuf {
    let helm = ftgo_testenv::host::binary("helm").unwrap();
    let out = Command::new(helm)
        .args(["template", "ftgo", CHART, "--namespace", namespace, "--include-crds"])
        .output()
        .unwrap();
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let path = dir.join("chart.yaml");
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

fn kubectl(env: &Env, kubeconfig: &Path, args: &[&str]) -> String {
    let kubectl = ftgo_testenv::host::binary("kubectl").unwrap();
    let out = Command::new(kubectl).arg("--kubeconfig").arg(kubeconfig).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubectl {args:?} in {}: {text}", env.namespace);
    text
}

#[tokio::test]
async fn the_helm_chart_renders_and_the_api_server_accepts_it_in_a_dry_run() {
    let env = Env::start("chart").await;
    let dir = tempfile::tempdir().unwrap();
    let rendered = render(&env.namespace, dir.path());
    let kubeconfig = env.control_plane.kubeconfig_path();
    let out = kubectl(&env, kubeconfig, &["apply", "--dry-run=server", "-f", rendered.to_str().unwrap()]);
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/ftgosystems.ftgo.dev",
        "serviceaccount/ftgo",
        "clusterrole.rbac.authorization.k8s.io/ftgo",
        "role.rbac.authorization.k8s.io/ftgo-leader-election",
        "deployment.apps/ftgo",
        "service/ftgo-metrics",
    ] {
        assert!(out.contains(&format!("{object} ")), "{object} in:\n{out}");
    }
    assert!(out.contains("(server dry run)"), "{out}");
}

/// A kubeconfig that authenticates as the chart's service account, with a token from the
/// TokenRequest API (what a pod's projected token is).
async fn service_account_kubeconfig(env: &Env, dir: &Path) -> std::path::PathBuf {
    let accounts: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &env.namespace);
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}})).unwrap();
    let token = accounts.create_token_request("ftgo", &PostParams::default(), &request).await.unwrap();
    let token = token.status.unwrap().token;
    let admin = std::fs::read_to_string(env.control_plane.kubeconfig_path()).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&admin).unwrap();
    config["users"] = json!([{"name": "ftgo-admin", "user": {"token": token}}]);
    let path = dir.join("operator-kubeconfig");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn the_charts_least_privilege_rbac_is_enough_to_run_the_operator() {
    let env = Env::start("rbac").await;
    let dir = tempfile::tempdir().unwrap();
    let rendered = render(&env.namespace, dir.path());
    kubectl(&env, env.control_plane.kubeconfig_path(), &["apply", "-f", rendered.to_str().unwrap()]);
    let kubeconfig = service_account_kubeconfig(&env, dir.path()).await;
    let config =
        Config::from_custom_kubeconfig(Kubeconfig::read_from(&kubeconfig).unwrap(), &KubeConfigOptions::default())
            .await
            .unwrap();
    let operator_client = Client::try_from(config).unwrap();

    // The service account may not do what the operator never needs.
    let out = Command::new(ftgo_testenv::host::binary("kubectl").unwrap())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["auth", "can-i", "delete", "namespaces"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");

    // Leader election in its own namespace.
    let lease = ftgo_operator::leader::Lease::new(
        operator_client.clone(),
        &env.namespace,
        "ftgo-operator",
        "operator-0",
        Duration::from_secs(15),
    );
    assert!(lease.try_acquire().await.unwrap(), "takes the Lease");
    assert!(lease.try_acquire().await.unwrap(), "renews it");
    lease.release().await.unwrap();

    // A whole life cycle, as the service account: apply, ready, delete with Delete.
    let operator = RunningOperator::start(&operator_client, "operator-0");
    let services = json!([{"name": "order"}, {"name": "gateway"}]);
    env.apply(&env.manifest("shop", json!({"services": services, "databaseReclaimPolicy": "Delete"}))).await;
    env.wait_ready("shop", "False").await;
    env.roll_out("shop").await;
    env.wait_ready("shop", "True").await;
    env.systems().delete("shop", &DeleteParams::default()).await.unwrap();
    let systems = env.systems();
    eventually("the system to be gone", Duration::from_secs(30), || async {
        systems.get_opt("shop").await.ok()?.is_none().then_some(())
    })
    .await;
    operator.stop().await;
}
