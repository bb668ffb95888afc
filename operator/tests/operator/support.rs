//! Helpers shared by the integration tests: the servers a test needs, an operator running
//! in-process against them, and the parts a kubelet would play.

pub use ftgo_testenv::eventually;
use std::{sync::Arc, time::Duration};

use ftgo_operator::{
    controller::{self, Context, status},
    crd::FtgoSystem,
    metrics::Metrics,
};
use ftgo_testenv::{Consul, KubeControlPlane, Postgres};
use k8s_openapi::{
    ByteString,
    api::{apps::v1::Deployment, core::v1::Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{conditions, wait::await_condition},
};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tokio::{sync::oneshot, task::JoinHandle};

/// Installs the FtgoSystem CRD, exactly as `crds/` has it, and waits until it is served.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = ftgo_operator::crd::crd();
    let name = crd.metadata.name.clone().expect("the CRD has a name");
    crds.patch(&name, &PatchParams::apply("ftgo-operator-tests").force(), &Patch::Apply(crd)).await.unwrap();
    let established = await_condition(crds, &name, conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(30), established).await.expect("CRD established in time").unwrap();
}

/// A kube-apiserver with the CRD installed, a Postgres that checks passwords, a Consul, and a
/// namespace holding the Postgres admin Secret `pg-admin`.
pub struct Env {
    pub control_plane: KubeControlPlane,
    pub postgres: Postgres,
    pub consul: Consul,
    pub client: Client,
    pub namespace: String,
}

impl Env {
    pub async fn start(prefix: &str) -> Self {
        ftgo_testenv::init_test_tracing();
        let (control_plane, postgres, consul) =
            tokio::join!(KubeControlPlane::start(), Postgres::start(), Consul::start());
        let (control_plane, postgres, consul) = (control_plane.unwrap(), postgres.unwrap(), consul.unwrap());
        require_passwords(&postgres).await;
        let client = control_plane.client().await.unwrap();
        install_crd(&client).await;
        let namespace = control_plane.create_namespace(prefix).await.unwrap();
        let admin = Secret {
            metadata: ObjectMeta { name: Some("pg-admin".to_owned()), ..ObjectMeta::default() },
            data: Some(
                [("username", "postgres"), ("password", "unused-with-trust")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(client.clone(), &namespace).create(&PostParams::default(), &admin).await.unwrap();
        Self { control_plane, postgres, consul, client, namespace }
    }

    pub fn systems(&self) -> Api<FtgoSystem> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// An FtgoSystem manifest pointing at this environment's Postgres and Consul; NATS is only
    /// passed on to the pods, which never run here.
    pub fn manifest(&self, name: &str, extra: serde_json::Value) -> FtgoSystem {
        let mut spec = json!({
            "infrastructure": {
                "postgres": {"host": "127.0.0.1", "port": self.postgres.port(), "adminSecretName": "pg-admin"},
                "nats": {"url": "nats://127.0.0.1:4222"},
                "consul": {"url": self.consul.http_url()},
            },
        });
        merge(&mut spec, extra);
        serde_json::from_value(json!({
            "apiVersion": "ftgo.dev/v1alpha1",
            "kind": "FtgoSystem",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }))
        .unwrap()
    }

    pub async fn apply(&self, system: &FtgoSystem) -> FtgoSystem {
        let ssa = PatchParams::apply("ftgo-operator-tests").force();
        self.systems().patch(&system.name_any(), &ssa, &Patch::Apply(system)).await.unwrap()
    }

    /// Waits until the system's `Ready` condition has `status` for the current generation.
    pub async fn wait_ready(&self, name: &str, expected: &str) -> FtgoSystem {
        let systems = self.systems();
        eventually(&format!("{name} Ready={expected}"), Duration::from_secs(60), || async {
            let system = systems.get(name).await.ok()?;
            let generation = system.metadata.generation;
            let ready = status::ready(system.status.as_ref())?;
            (ready.status == expected && ready.observed_generation == generation).then_some(system.clone())
        })
        .await
    }

    /// Plays the kubelet and the Deployment controller: every replica of every Deployment of
    /// `system` is up to date and available.
    pub async fn roll_out(&self, system: &str) {
        let deployments: Api<Deployment> = self.api();
        let selector = format!("app.kubernetes.io/instance={system}");
        let list = deployments.list(&kube::api::ListParams::default().labels(&selector)).await.unwrap();
        for deployment in list {
            let replicas = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let status = json!({"status": {
                "observedGeneration": deployment.metadata.generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}],
            }});
            deployments
                .patch_status(&deployment.name_any(), &PatchParams::default(), &Patch::Merge(status))
                .await
                .unwrap();
        }
    }
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

/// testenv's Postgres trusts every loopback connection; for a test that generated credentials
/// really log in, everyone but the `postgres` superuser must now present a password.
async fn require_passwords(postgres: &Postgres) {
    let mut admin = PgConnection::connect(&postgres.url("postgres")).await.unwrap();
    let (hba_file,): (String,) = sqlx::query_as("SHOW hba_file").fetch_one(&mut admin).await.unwrap();
    let rules =
        "COPY (VALUES ('host all postgres 127.0.0.1/32 trust'), ('host all all 127.0.0.1/32 scram-sha-256')) TO ";
    let copy = format!("{rules}'{}'", hba_file.replace('\'', "''"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(copy)).execute(&mut admin).await.unwrap();
    sqlx::query("SELECT pg_reload_conf()").execute(&mut admin).await.unwrap();
}

/// An operator running in this test process, as the binary would run it.
pub struct RunningOperator {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    pub metrics: Arc<Metrics>,
}

impl RunningOperator {
    pub fn start(client: &Client, instance: &str) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let metrics = Arc::new(Metrics::default());
        let ctx = Arc::new(Context::new(client.clone(), Some(instance.to_owned()), metrics.clone()));
        let task = tokio::spawn(controller::run(ctx, async move {
            let _ = stopped.await;
        }));
        Self { stop: Some(stop), task, metrics }
    }

    /// Stops it gracefully: running reconciles finish, no new ones start.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("the operator stops within 30s")
            .unwrap();
    }
}

impl Drop for RunningOperator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
