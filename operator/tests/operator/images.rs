//! The images the operator deploys are the ones the Dockerfile can build: every binary the service
//! catalog ships as an image is a `[[bin]]` of the workspace, and `just docker-images` builds the
//! catalog's list (`ftgo-local images`; `just images` builds the same set without Docker, through
//! `ftgo-cluster`, from the same list).

use std::path::Path;

#[test]
fn every_deployed_image_is_a_workspace_binary_that_just_docker_images_builds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members = workspace.lines().find(|l| l.starts_with("members = ")).expect("the workspace's members");
    let manifests: String = members
        .split('"')
        .skip(1)
        .step_by(2)
        .map(|member| std::fs::read_to_string(root.join(member).join("Cargo.toml")).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    for binary in ftgo_catalog::image_binaries() {
        assert!(manifests.contains(&format!("name = \"{binary}\"")), "{binary} is not a [[bin]] of the workspace");
    }

    let justfile = std::fs::read_to_string(root.join("justfile")).unwrap();
    let recipe: Vec<&str> = justfile.lines().skip_while(|l| !l.starts_with("docker-images ")).take(3).collect();
    assert!(
        recipe.iter().any(|l| l.contains("for bin in $(target/debug/ftgo-local images)")),
        "`just docker-images` builds the catalog's images: {recipe:#?}"
    );
}
