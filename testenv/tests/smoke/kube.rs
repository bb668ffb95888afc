use std::time::Duration;

use ftgo_testenv::KubeControlPlane;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, CustomResource, CustomResourceExt, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, conditions, wait::await_condition, watcher},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A throwaway custom resource with one validated field.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(group = "smoke.ftgo.dev", version = "v1", kind = "Widget", namespaced)]
pub struct WidgetSpec {
    /// How many; at least one.
    #[schemars(range(min = 1))]
    size: i32,
}

#[tokio::test]
async fn the_control_plane_establishes_a_crd_watches_objects_and_refuses_invalid_ones() {
    ftgo_testenv::init_test_tracing();
    let control_plane = KubeControlPlane::start().await.unwrap();
    let client = control_plane.client().await.unwrap();
    assert_eq!(client.apiserver_version().await.unwrap().git_version, "v1.36.3");

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let ssa = PatchParams::apply("ftgo-smoke").force();
    crds.patch("widgets.smoke.ftgo.dev", &ssa, &Patch::Apply(Widget::crd())).await.unwrap();
    let established = await_condition(crds, "widgets.smoke.ftgo.dev", conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(30), established).await.expect("CRD established in time").unwrap();

    let namespace = control_plane.create_namespace("smoke").await.unwrap();
    let widgets: Api<Widget> = Api::namespaced(client, &namespace);

    // Watch first, then create: the watch must see the new object.
    let mut seen = watcher(widgets.clone(), watcher::Config::default()).applied_objects().boxed();
    widgets.create(&PostParams::default(), &Widget::new("w1", WidgetSpec { size: 3 })).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), seen.try_next())
        .await
        .expect("watch event in time")
        .unwrap()
        .expect("an object");
    assert_eq!(first.name_any(), "w1");
    assert_eq!(first.spec.size, 3);

    // The generated OpenAPI schema is enforced by the API server, with a message that says why.
    let err = widgets.create(&PostParams::default(), &Widget::new("w2", WidgetSpec { size: 0 })).await.unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(status.message.contains("spec.size"), "{}", status.message);
            assert!(status.message.contains("greater than or equal to 1"), "{}", status.message);
        }
        other => panic!("expected a 422 from the API server, got {other:?}"),
    }
    assert!(widgets.get_opt("w2").await.unwrap().is_none());
}
