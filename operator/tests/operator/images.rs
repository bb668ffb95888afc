//! The images the operator deploys are the ones the Dockerfile can build: every service's binary
//! (and the operator's) is a `[[bin]]` of the workspace and is listed in the justfile's
//! `images_bins`, which `just docker-images` builds with Docker (`just images` builds the same set
//! without it, from the operator's catalog).

use std::path::Path;

use ftgo_operator::catalog::ServiceName;

#[test]
fn every_deployed_image_is_a_workspace_binary_that_just_images_builds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let justfile = std::fs::read_to_string(root.join("justfile")).unwrap();
    let images_line = justfile.lines().find(|l| l.starts_with("images_bins := ")).expect("images_bins in the justfile");
    let built: Vec<&str> =
        images_line.trim_start_matches("images_bins := ").trim_matches('"').split_whitespace().collect();

    let manifests = [
        "services/consumer",
        "services/kitchen",
        "services/accounting",
        "services/order",
        "services/orchestrator",
        "services/gateway",
        "operator",
    ]
    .map(|crate_dir| std::fs::read_to_string(root.join(crate_dir).join("Cargo.toml")).unwrap())
    .join("\n");
    let deployed = ServiceName::ALL.into_iter().map(ServiceName::binary).chain(["ftgo-operator"]);
    for binary in deployed {
        assert!(built.contains(&binary), "`just images` does not build {binary}");
        assert!(manifests.contains(&format!("name = \"{binary}\"")), "{binary} is not a [[bin]] of the workspace");
    }
    assert_eq!(built.len(), ServiceName::ALL.len() + 1, "`just images` builds something nothing deploys: {built:?}");
}
