use std::{path::Path, process::Stdio, time::Duration};

use tokio::process::Command;

use ftgo_testenv::eventually;

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(ftgo_testenv::host::binary("kubectl").ok()?)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What a user of `just cluster-up` does before installing anything: start it, find a Ready node
/// with FTGO's images on it through the kubeconfig it wrote, and stop it from another terminal.
/// (`tests/node` installs the chart and runs FTGO on the same kind of cluster.)
#[tokio::test]
async fn cluster_up_runs_a_ready_node_with_ftgos_images_and_cluster_down_stops_it() {
    ftgo_testenv::init_test_tracing();
    let state = tempfile::tempdir().unwrap();
    let free = || format!("127.0.0.1:{}", ftgo_testenv::process::free_port().unwrap());
    let mut up = Command::new(env!("CARGO_BIN_EXE_ftgo-cluster"))
        .arg("up")
        .env("FTGO_STATE_DIR", state.path())
        .env("FTGO_CLUSTER_HTTP", free())
        .env("FTGO_CLUSTER_FABIO_UI", free())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let kubeconfig = state.path().join("cluster/kubeconfig");
    eventually("cluster-up to write its kubeconfig", Duration::from_secs(180), || async {
        kubeconfig.exists().then_some(())
    })
    .await;

    let ready = kubectl(
        &kubeconfig,
        &["get", "nodes", r#"-o=jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}"#],
    )
    .expect("kubectl get nodes");
    assert_eq!(ready, "True", "one Ready node");
    // The kubelet reports the node's images with its periodic status.
    let wanted =
        ["ghcr.io/ftgo-rs/order-service:0.1.0", "ghcr.io/ftgo-rs/ftgo-operator:0.1.0", "ftgo.local/postgres:15"];
    eventually("the node to report FTGO's images", Duration::from_secs(60), || async {
        let images = kubectl(&kubeconfig, &["get", "nodes", "-o=jsonpath={.items[*].status.images[*].names}"])?;
        wanted.iter().all(|image| images.contains(image)).then_some(())
    })
    .await;

    let down = Command::new(env!("CARGO_BIN_EXE_ftgo-cluster"))
        .arg("down")
        .env("FTGO_STATE_DIR", state.path())
        .output()
        .await
        .unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let status = tokio::time::timeout(Duration::from_secs(60), up.wait()).await.expect("up exits").unwrap();
    assert!(status.success());
    assert!(!kubeconfig.exists(), "the kubeconfig of a stopped cluster is removed");
}
