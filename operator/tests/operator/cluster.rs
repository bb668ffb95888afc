use std::{path::Path, process::Stdio, time::Duration};

use tokio::process::Command;

use crate::support::eventually;

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(ftgo_testenv::host::binary("kubectl").ok()?)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What a user of `just cluster-up` does: start it, apply the manifest it prints, watch the
/// operator work, and stop it from another terminal.
#[tokio::test]
async fn cluster_up_runs_the_operator_against_a_local_control_plane_and_cluster_down_stops_it() {
    ftgo_testenv::init_test_tracing();
    let state = tempfile::tempdir().unwrap();
    let mut up = Command::new(env!("CARGO_BIN_EXE_ftgo-cluster"))
        .arg("up")
        .env("FTGO_STATE_DIR", state.path())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let dir = state.path().join("cluster");
    let kubeconfig = dir.join("kubeconfig");
    let manifest = dir.join("ftgo-system.yaml");
    eventually("cluster-up to write its kubeconfig and manifest", Duration::from_secs(90), || async {
        (kubeconfig.exists() && manifest.exists()).then_some(())
    })
    .await;

    let applied = kubectl(&kubeconfig, &["apply", "-f", manifest.to_str().unwrap()]).expect("kubectl apply");
    assert!(applied.contains("ftgosystem.ftgo.dev/shop created"), "{applied}");
    let jsonpath = r#"-o=jsonpath={.status.conditions[?(@.type=="Ready")].reason}"#;
    let reason = eventually("the operator to report on the system", Duration::from_secs(60), || async {
        kubectl(&kubeconfig, &["get", "ftgo", "shop", "-n", "ftgo", jsonpath]).filter(|r| !r.is_empty())
    })
    .await;
    assert_eq!(reason, "DeploymentsProgressing", "no kubelet: nothing runs the pods");
    let deployments = kubectl(&kubeconfig, &["get", "deployments", "-n", "ftgo", "-o", "name"]).unwrap();
    assert_eq!(deployments.lines().count(), 6, "{deployments}");

    let down = Command::new(env!("CARGO_BIN_EXE_ftgo-cluster"))
        .arg("down")
        .env("FTGO_STATE_DIR", state.path())
        .output()
        .await
        .unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let status = tokio::time::timeout(Duration::from_secs(60), up.wait()).await.expect("up exits").unwrap();
    assert!(status.success());
    assert!(kubectl(&kubeconfig, &["get", "ns", "--request-timeout=2s"]).is_none(), "the API server is gone");
}
