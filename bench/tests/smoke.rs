//! `just bench` works end to end: the short run CI affords (2 s legs at 1 and 4 clients, on the
//! debug builds `cargo test` makes). It checks that every leg measured something and that the
//! report says what it should; the figures themselves belong to `just bench` on a quiet machine.

use std::process::Command;

#[test]
fn a_quick_bench_measures_every_leg_and_writes_its_report() {
    let out = tempfile::NamedTempFile::new().unwrap();
    let run =
        Command::new(env!("CARGO_BIN_EXE_ftgo-bench")).args(["--quick", "--out"]).arg(out.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "ftgo-bench failed:\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("sagas via gateway") && stdout.contains("RPC floor"), "{stdout}");

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path()).unwrap()).unwrap();
    let legs = report["legs"].as_array().unwrap();
    let names: Vec<(&str, u64)> =
        legs.iter().map(|l| (l["leg"].as_str().unwrap(), l["clients"].as_u64().unwrap())).collect();
    for leg in ["sagas via gateway", "sagas via fabio", "RPC floor (gRPC health Check)"] {
        for clients in [1, 4] {
            assert!(names.contains(&(leg, clients)), "{leg} at {clients} clients is missing: {names:?}");
        }
    }
    for leg in legs {
        assert!(leg["completed"].as_u64().unwrap() > 0, "{leg}");
        assert!(leg["p50_ms"].as_f64().unwrap() > 0.0, "{leg}");
        assert!(leg["system_cpu_ms_per_op"].as_f64().unwrap() > 0.0, "every leg costs the system CPU: {leg}");
    }
    let saga = legs.iter().find(|l| l["leg"] == "sagas via gateway").unwrap();
    for program in ["order-service", "postgres", "nats-server"] {
        assert!(saga["cpu_ms_per_op"][program].as_f64().is_some(), "{program} used CPU for the sagas: {saga}");
    }
    assert!(saga["commits_per_op"].as_f64().unwrap() > 1.0, "a saga commits several transactions: {saga}");
}
