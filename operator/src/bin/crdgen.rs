//! Prints the `FtgoSystem` CustomResourceDefinition as YAML: `just crds` writes it to `crds/`.

use ftgo_operator::crd::FtgoSystem;
use kube::CustomResourceExt;

fn main() -> anyhow::Result<()> {
    print!("{}", serde_yaml::to_string(&FtgoSystem::crd())?);
    Ok(())
}
