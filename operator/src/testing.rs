//! Fixtures the unit tests share: the FtgoSystem `shop` in namespace `food`, validated.

use crate::{
    controller::validate::{System, validate},
    crd::FtgoSystem,
};

/// An `infrastructure` naming External servers (`db`, `nats`, `consul`), as spec YAML.
pub const EXTERNAL_INFRASTRUCTURE: &str = r#"
infrastructure:
  postgres: {host: db, adminSecretName: pg-admin}
  nats: {url: "nats://nats:4222"}
  consul: {url: "http://consul:8500"}
"#;

/// The system `shop` in namespace `food` with `spec`, given as YAML.
pub fn system_with(spec: &str) -> System {
    let spec: serde_json::Value = serde_yaml::from_str(spec).unwrap();
    let system: FtgoSystem = serde_json::from_value(serde_json::json!({
        "apiVersion": "ftgo.dev/v1alpha1",
        "kind": "FtgoSystem",
        "metadata": {"name": "shop", "namespace": "food", "uid": "u1", "generation": 1},
        "spec": spec,
    }))
    .unwrap();
    validate(&system).unwrap()
}

/// The system `shop` running `services` (a YAML list) on [`EXTERNAL_INFRASTRUCTURE`].
pub fn external_system(services: &str) -> System {
    system_with(&format!("services: {services}{EXTERNAL_INFRASTRUCTURE}"))
}
