//! Helpers shared by the integration tests.

use std::time::Duration;

use ftgo_operator::crd::FtgoSystem;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, CustomResourceExt,
    api::{Patch, PatchParams},
    runtime::{conditions, wait::await_condition},
};

/// Installs the FtgoSystem CRD, exactly as `crds/` has it, and waits until it is served.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = FtgoSystem::crd();
    let name = crd.metadata.name.clone().expect("the CRD has a name");
    crds.patch(&name, &PatchParams::apply("ftgo-operator-tests").force(), &Patch::Apply(crd)).await.unwrap();
    let established = await_condition(crds, &name, conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(30), established).await.expect("CRD established in time").unwrap();
}
