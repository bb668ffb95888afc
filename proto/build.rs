//! Compiles every `.proto` under `proto/ftgo/` with protox (pure Rust, no system `protoc`) and
//! generates prost messages and tonic clients/servers from the resulting descriptor set. The
//! encoded descriptor set is kept in OUT_DIR for gRPC reflection.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use prost::Message;

fn protos(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            protos(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            found.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let mut files = Vec::new();
    protos(&root.join("ftgo"), &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed=ftgo");

    let descriptors = protox::compile(&files, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("ftgo_descriptor.bin"), descriptors.encode_to_vec())?;
    // `prost::Name` on every message: its fully qualified type name travels in each NATS message's
    // `Ftgo-Message-Type` header.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure().compile_fds_with_config(descriptors, config)?;
    Ok(())
}
