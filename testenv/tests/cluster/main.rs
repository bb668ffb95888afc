//! The one-node cluster as a user of Kubernetes sees it, and the machine after it is gone.
//!
//! One test, because a cluster takes a good part of the machine's two cores and because the
//! teardown check compares the whole machine before and after: nothing else of ours may start or
//! stop processes meanwhile.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use ftgo_testenv::{
    KubeCluster,
    cluster::NODE_IP,
    eventually, host,
    images::{self, ImageSpec},
    snapshot::HostSnapshot,
};
use k8s_openapi::api::{
    apps::v1::Deployment,
    batch::v1::Job,
    core::v1::{ConfigMap, Secret, Service},
};
use kube::{Api, api::PostParams};
use serde_json::json;

/// busybox, from Debian's `busybox-static`: a shell, `httpd` and `wget` in one static binary.
fn busybox() -> ImageSpec {
    ImageSpec {
        reference: "ftgo.local/busybox:test".to_owned(),
        files: vec![("/bin/busybox".into(), "/bin/busybox".to_owned())],
        entrypoint: vec!["/bin/busybox".to_owned()],
        user: images::NONROOT_USER.to_owned(),
        ..ImageSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_take_config_and_secrets_reach_each_other_by_service_and_dns_and_teardown_leaves_nothing() {
    ftgo_testenv::init_test_tracing();
    let before = HostSnapshot::take(&[std::process::id()]);

    let started = Instant::now();
    let mut cluster = KubeCluster::start().await.expect("the cluster starts");
    println!("cluster ready in {:.1}s", started.elapsed().as_secs_f32());
    let image = busybox();
    let archive = images::build(&image, &host::cache_dir("images").unwrap()).unwrap();
    cluster.import_image(&archive, &image.reference).unwrap();

    let client = cluster.client().await.unwrap();
    let ns = cluster.create_namespace("node").await.unwrap();
    let pp = PostParams::default();
    let config: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "web"}, "data": {"GREETING": "hello"}})).unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns).create(&pp, &config).await.unwrap();
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "web"}, "stringData": {"WORD": "secret"}})).unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns).create(&pp, &secret).await.unwrap();

    // A web server whose page is written from its ConfigMap and Secret into an emptyDir.
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "web",
                        "image": image.reference,
                        "imagePullPolicy": "Never",
                        "args": ["sh", "-c", "echo \"$GREETING $WORD\" > /www/index.html && exec httpd -f -p 8080 -h /www"],
                        "envFrom": [{"configMapRef": {"name": "web"}}, {"secretRef": {"name": "web"}}],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                        "volumeMounts": [{"name": "www", "mountPath": "/www"}],
                        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                            "capabilities": {"drop": ["ALL"]}}
                    }],
                    "volumes": [{"name": "www", "emptyDir": {}}]
                }
            }
        }
    }))
    .unwrap();
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    deployments.create(&pp, &deployment).await.unwrap();
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    let service = Api::<Service>::namespaced(client.clone(), &ns).create(&pp, &service).await.unwrap();
    let node_port = service.spec.unwrap().ports.unwrap()[0].node_port.unwrap();

    eventually("both web pods to be available", Duration::from_secs(120), || async {
        let d = deployments.get("web").await.ok()?;
        (d.status?.available_replicas? == 2).then_some(())
    })
    .await;

    // Another pod finds the Service by its DNS name and reads the page through the cluster IP.
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "client"},
        "spec": {
            "backoffLimit": 4,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "client",
                    "image": image.reference,
                    "imagePullPolicy": "Never",
                    "args": ["sh", "-c", format!("wget -q -O- http://web.{ns}.svc.cluster.local/ | grep -x 'hello secret'")]
                }]
            }}
        }
    }))
    .unwrap();
    let jobs = Api::<Job>::namespaced(client.clone(), &ns);
    jobs.create(&pp, &job).await.unwrap();
    eventually("the client pod to read the page by DNS name and cluster IP", Duration::from_secs(90), || async {
        let status = jobs.get("client").await.ok()?.status?;
        assert!(status.failed.unwrap_or(0) < 4, "the client job failed:\n{}", cluster.log_tail("coredns"));
        (status.succeeded? == 1).then_some(())
    })
    .await;

    // The host reaches the NodePort only through a forward into the cluster's network.
    let forward = cluster
        .forward_into("127.0.0.1:0".parse().unwrap(), SocketAddr::from((NODE_IP, node_port as u16)))
        .await
        .unwrap();
    let page = reqwest::get(format!("http://{forward}/")).await.unwrap().text().await.unwrap();
    assert_eq!(page.trim(), "hello secret");

    // A second cluster runs beside the first (same addresses, other namespaces), and stopping it
    // leaves the first one serving.
    let second = KubeCluster::start().await.expect("a second cluster starts beside the first");
    drop(second);
    let page = reqwest::get(format!("http://{forward}/")).await.unwrap().text().await.unwrap();
    assert_eq!(page.trim(), "hello secret", "the first cluster still serves after the second stopped");

    // A packet to a cluster address no rule catches dies inside the namespace.
    let unroutable = cluster.network().connect("10.96.255.254:80".parse().unwrap());
    let outcome = tokio::time::timeout(Duration::from_secs(10), unroutable).await;
    assert!(!matches!(outcome, Ok(Ok(_))), "nothing answers an unallocated service address");

    drop(cluster);
    let after = HostSnapshot::take(&[std::process::id()]);
    let diff = before.diff(&after);
    assert!(diff.is_empty(), "the cluster left traces:\n{}", diff.join("\n"));
}
