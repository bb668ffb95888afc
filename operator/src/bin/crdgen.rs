//! Prints the `FtgoSystem` CustomResourceDefinition as YAML: `just crds` writes it to `crds/`.

fn main() -> anyhow::Result<()> {
    print!("{}", serde_yaml::to_string(&ftgo_operator::crd::crd())?);
    Ok(())
}
