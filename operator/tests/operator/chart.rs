use std::{path::Path, process::Command, time::Duration};

use k8s_openapi::api::{
    apps::v1::Deployment,
    authentication::v1::TokenRequest,
    core::v1::{Pod, PodSpec, Service, ServiceAccount},
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde::Deserialize as _;
use serde_json::json;

use crate::support::{Env, RunningOperator, eventually};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/ftgo-operator");

/// Every optional value set, as for operator pods on dedicated nodes from a private registry.
const SCHEDULING_VALUES: &str = r#"
imagePullSecrets: [{name: registry}]
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: ftgo, effect: NoSchedule}]
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector: {matchLabels: {app.kubernetes.io/name: ftgo-operator}}
podAnnotations: {prometheus.io/scrape: "true"}
podLabels: {team: platform}
"#;

fn helm(args: &[&str]) -> std::process::Output {
    Command::new(ftgo_testenv::host::binary("helm").unwrap()).args(args).output().unwrap()
}

/// `helm template` of the chart as release `ftgo` into `namespace`, CRDs and test hooks
/// included: the manifests, or helm's complaint.
fn template(namespace: &str, extra: &[&str]) -> Result<String, String> {
    let out = helm(&[&["template", "ftgo", CHART, "--namespace", namespace, "--include-crds"][..], extra].concat());
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `helm template` of the chart into `namespace`, written to a file for kubectl.
fn render(namespace: &str, dir: &Path) -> std::path::PathBuf {
    render_with(namespace, dir, &[])
}

fn render_with(namespace: &str, dir: &Path, extra: &[&str]) -> std::path::PathBuf {
    let manifests = template(namespace, extra).unwrap_or_else(|error| panic!("helm template: {error}"));
    let path = dir.join("chart.yaml");
    std::fs::write(&path, manifests).unwrap();
    path
}

/// A values file holding `yaml`, for `helm -f`.
fn values_file(dir: &Path, yaml: &str) -> String {
    let path = dir.join("values.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The rendered object of `kind` named `name`.
fn object<K: serde::de::DeserializeOwned>(manifests: &str, kind: &str, name: &str) -> K {
    let found = serde_yaml::Deserializer::from_str(manifests)
        .map(|document| serde_json::Value::deserialize(document).unwrap())
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in:\n{manifests}"));
    serde_json::from_value(found).unwrap()
}

fn pod_spec(deployment: &Deployment) -> &PodSpec {
    deployment.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn kubectl_output(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let kubectl = ftgo_testenv::host::binary("kubectl").unwrap();
    let out = Command::new(kubectl).arg("--kubeconfig").arg(kubeconfig).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn kubectl(env: &Env, kubeconfig: &Path, args: &[&str]) -> String {
    let (success, text) = kubectl_output(kubeconfig, args);
    assert!(success, "kubectl {args:?} in {}: {text}", env.namespace);
    text
}

/// The API server validates everything the chart renders, the `helm test` Pod included, in a
/// namespace that enforces the `restricted` Pod Security Standard (and warns for Deployments,
/// which enforcement does not look at). `helm install` prints NOTES with the next commands.
#[tokio::test]
async fn the_helm_chart_renders_and_the_api_server_accepts_it_in_a_dry_run() {
    let env = Env::start("chart").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = env.control_plane.kubeconfig_path();
    let restricted = ["pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/warn=restricted"];
    kubectl(&env, kubeconfig, &[&["label", "namespace", env.namespace.as_str()][..], &restricted].concat());

    let rendered = render(&env.namespace, dir.path());
    let out = kubectl(&env, kubeconfig, &["apply", "--dry-run=server", "-f", rendered.to_str().unwrap()]);
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/ftgosystems.ftgo.dev",
        "serviceaccount/ftgo",
        "clusterrole.rbac.authorization.k8s.io/ftgo",
        "role.rbac.authorization.k8s.io/ftgo-leader-election",
        "deployment.apps/ftgo",
        "service/ftgo-metrics",
        "pod/ftgo-test-ready",
    ] {
        assert!(out.contains(&format!("{object} ")), "{object} in:\n{out}");
    }
    assert!(out.contains("(server dry run)"), "{out}");
    assert!(!out.contains("PodSecurity"), "the defaults are `restricted`:\n{out}");

    let values = values_file(dir.path(), SCHEDULING_VALUES);
    let rendered = render_with(&env.namespace, dir.path(), &["-f", &values]);
    let out = kubectl(&env, kubeconfig, &["apply", "--dry-run=server", "-f", rendered.to_str().unwrap()]);
    assert!(out.contains("deployment.apps/ftgo ") && out.contains("pod/ftgo-test-ready "), "{out}");
    assert!(!out.contains("PodSecurity"), "{out}");

    // The namespace's enforcement is live, so the checks above mean something.
    let rendered = render_with(&env.namespace, dir.path(), &["--set", "securityContext.allowPrivilegeEscalation=true"]);
    let (accepted, out) = kubectl_output(kubeconfig, &["apply", "--dry-run=server", "-f", rendered.to_str().unwrap()]);
    assert!(!accepted && out.contains("violates PodSecurity \"restricted"), "{out}");

    // The NOTES `helm install` prints (only helm install renders them; it asks the cluster its
    // version even in a client-side dry run).
    let install = ["install", "ftgo-operator", CHART, "--namespace", env.namespace.as_str(), "--dry-run=client"];
    let out = helm(&[&install[..], &["--kubeconfig", kubeconfig.to_str().unwrap()]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let notes = &stdout[stdout.find("NOTES:").expect("NOTES in the install output")..];
    for command in [
        format!("helm test ftgo-operator -n {}", env.namespace),
        "kubectl create namespace ftgo".to_owned(),
        "kubectl apply -f examples/ftgo-system-local.yaml".to_owned(),
        "kubectl apply -f examples/pg-admin-secret.yaml -f examples/ftgo-system.yaml".to_owned(),
        "kubectl wait --for=condition=Ready ftgo/shop -n ftgo --timeout=10m".to_owned(),
        "kubectl get ftgo -A".to_owned(),
    ] {
        assert!(notes.contains(&command), "{command} in:\n{notes}");
    }
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

/// Also proves the schema covers values.yaml: every object in it forbids unknown keys, so a
/// value missing from the schema would fail the lint.
#[test]
fn helm_lint_strict_passes_with_the_defaults_and_with_every_optional_value_set() {
    let dir = tempfile::tempdir().unwrap();
    let values = values_file(dir.path(), SCHEDULING_VALUES);
    for extra in [&[][..], &["-f", values.as_str()][..]] {
        let out = helm(&[&["lint", "--strict", CHART][..], extra].concat());
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("1 chart(s) linted, 0 chart(s) failed"), "{extra:?}: {text}");
        assert!(!text.contains("[WARNING]") && !text.contains("[ERROR]"), "{extra:?}: {text}");
    }
}

#[test]
fn the_values_schema_refuses_bad_values_with_helms_message() {
    const SCHEMA: &str = "values don't meet the specifications of the schema(s) in the following chart(s):";
    for (set, message) in [
        ("replicas=-1", "at '/replicas': minimum: got -1, want 0"),
        ("replica=3", "at '': additional properties 'replica' not allowed"),
        (
            "image.pullPolicy=Sometimes",
            "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
        ),
        ("securityContext.readOnlyRootFilsystem=true", "additional properties 'readOnlyRootFilsystem' not allowed"),
        ("podSecurityContext.runAsUser=-1", "at '/podSecurityContext/runAsUser': minimum: got -1, want 0"),
        ("tolerations[0].operator=Maybe", "at '/tolerations/0/operator': value must be one of"),
        ("resources.limits.memory=lots", "at '/resources/limits/memory': 'lots' does not match pattern"),
        ("leaseName=Not_A_Name", "at '/leaseName': 'Not_A_Name' does not match pattern"),
        // The tag belongs in image.tag.
        (
            "image.repository=ghcr.io/ftgo-rs/ftgo-operator:0.1.0",
            "at '/image/repository': 'ghcr.io/ftgo-rs/ftgo-operator:0.1.0' does not match pattern",
        ),
    ] {
        let error = template("ftgo-system", &["--set", set]).expect_err(set);
        assert!(error.contains(SCHEMA) && error.contains(message), "--set {set}: {error}");
    }

    // Not a schema rule: the validator would report it against the wrong key.
    let error = template("ftgo-system", &["--set", r"podLabels.app\.kubernetes\.io/name=other"]).unwrap_err();
    assert!(error.contains("podLabels: app.kubernetes.io/name is a selector label the chart sets itself"), "{error}");

    // What the schema must still let through: `--set` parses a number as one, and 0 replicas
    // pauses the operator.
    for set in
        ["image.tag=42", "replicas=0", "podSecurityContext.runAsUser=null", r"logLevel=info\,ftgo_operator=debug"]
    {
        template("ftgo-system", &["--set", set]).unwrap_or_else(|error| panic!("--set {set}: {error}"));
    }
}

#[test]
fn the_deployment_runs_non_root_read_only_without_capabilities_and_carries_the_scheduling_values() {
    let deployment: Deployment = object(&template("ftgo-system", &[]).unwrap(), "Deployment", "ftgo");
    let pod = pod_spec(&deployment);
    assert_eq!(
        serde_json::to_value(&pod.security_context).unwrap(),
        json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
               "seccompProfile": {"type": "RuntimeDefault"}}),
    );
    assert_eq!(
        serde_json::to_value(&pod.containers[0].security_context).unwrap(),
        json!({"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}),
    );
    assert!(pod.node_selector.is_none() && pod.tolerations.is_none() && pod.affinity.is_none());
    assert!(pod.image_pull_secrets.is_none());

    let dir = tempfile::tempdir().unwrap();
    let values = values_file(dir.path(), SCHEDULING_VALUES);
    let deployment: Deployment = object(&template("ftgo-system", &["-f", &values]).unwrap(), "Deployment", "ftgo");
    let pod = pod_spec(&deployment);
    let expected: serde_json::Value = serde_yaml::from_str(SCHEDULING_VALUES).unwrap();
    let rendered = serde_json::to_value(pod).unwrap();
    for key in ["imagePullSecrets", "nodeSelector", "tolerations", "affinity"] {
        assert_eq!(rendered[key], expected[key], "{key}");
    }
    let metadata = deployment.spec.as_ref().unwrap().template.metadata.as_ref().unwrap();
    assert_eq!(metadata.annotations.as_ref().unwrap()["prometheus.io/scrape"], "true");
    let labels = metadata.labels.as_ref().unwrap();
    assert_eq!(labels["team"], "platform");
    assert_eq!(labels["app.kubernetes.io/name"], "ftgo-operator", "the selector labels stay");
    assert_eq!(labels["app.kubernetes.io/instance"], "ftgo");
}

#[test]
fn the_helm_test_pod_probes_readyz_through_the_service_with_the_operators_image() {
    let dir = tempfile::tempdir().unwrap();
    let values = values_file(dir.path(), SCHEDULING_VALUES);
    // Never: on a cluster with imported images the test Pod must not try to pull either.
    let set = ["-f", values.as_str(), "--set", "image.tag=1.2.3", "--set", "image.pullPolicy=Never"];
    let manifests = template("ftgo-system", &set).unwrap();
    let test: Pod = object(&manifests, "Pod", "ftgo-test-ready");
    let deployment: Deployment = object(&manifests, "Deployment", "ftgo");
    let service: Service = object(&manifests, "Service", "ftgo-metrics");

    let annotations = test.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations["helm.sh/hook"], "test");
    assert_eq!(annotations["helm.sh/hook-delete-policy"], "before-hook-creation,hook-succeeded");

    let (spec, operator) = (test.spec.as_ref().unwrap(), pod_spec(&deployment));
    let (probe, container) = (&spec.containers[0], &operator.containers[0]);
    assert_eq!(probe.image.as_deref(), Some("ghcr.io/ftgo-rs/ftgo-operator:1.2.3"));
    assert_eq!(probe.image, container.image);
    assert_eq!(probe.image_pull_policy.as_deref(), Some("Never"));
    assert_eq!(container.image_pull_policy.as_deref(), Some("Never"));
    assert_eq!(
        probe.args.as_deref(),
        Some(&["probe".to_owned(), "http://ftgo-metrics.ftgo-system.svc:8080/readyz".to_owned()][..])
    );
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(probe.security_context, container.security_context);
    assert_eq!(spec.security_context, operator.security_context);
    assert_eq!(spec.image_pull_secrets, operator.image_pull_secrets);
    assert_eq!(spec.node_selector, operator.node_selector);
    assert_eq!(spec.tolerations, operator.tolerations);

    // The URL is the Service's, and the Service does not route to the test Pod itself.
    let service = service.spec.unwrap();
    assert_eq!(service.ports.unwrap()[0].port, 8080);
    let selector = service.selector.unwrap();
    let labels = test.metadata.labels.unwrap();
    assert!(selector.iter().any(|(key, value)| labels.get(key) != Some(value)), "{labels:?} vs {selector:?}");
}

/// What the `helm test` Pod runs: the operator binary's `probe`, which needs no cluster.
#[tokio::test]
async fn the_probe_subcommand_exits_zero_only_on_a_2xx_answer() {
    use axum::{http::StatusCode, routing::get};
    let app = axum::Router::new()
        .route("/readyz", get(|| async { "ok: standby" }))
        .route("/broken", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "no") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/readyz", silent.local_addr().unwrap());
    let closed = format!("http://127.0.0.1:{}/readyz", ftgo_testenv::process::free_port().unwrap());

    let probe = |url: String| async move {
        let started = std::time::Instant::now();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ftgo-operator"))
            .args(["probe", &url])
            // Were the operator's start-up to run, it would fail here, finding no cluster.
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .await
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text, started.elapsed())
    };
    let (code, text, _) = probe(format!("{base}/readyz")).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("200 OK"), "{text}");
    let (code, text, _) = probe(format!("{base}/broken")).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("503"), "{text}");
    let (code, text, _) = probe(closed).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("Connection refused"), "says why: {text}");
    let (code, text, took) = probe(silent_url).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("operation timed out"), "{text}");
    assert!(took < Duration::from_secs(10), "gives up after its 5 s timeout, took {took:?}");
    drop(silent);
}
