//! `just bench` works end to end: the short run CI affords (the fast Postgres settings only, 2 s
//! legs at 1 and 4 clients, on the debug builds `cargo test` makes). It checks that every leg
//! measured something, the Postgres-only floor included, and that the report says what it should;
//! the figures themselves belong to `just bench` on a quiet machine.

use std::process::Command;

#[test]
fn a_quick_bench_measures_every_leg_and_writes_its_report() {
    let out = tempfile::NamedTempFile::new().unwrap();
    let run =
        Command::new(env!("CARGO_BIN_EXE_ftgo-bench")).args(["--quick", "--out"]).arg(out.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "ftgo-bench failed:\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    for leg in [
        "sagas via gateway",
        "Postgres-only floor",
        "RPC floor",
        "JetStream floor",
        "CPU ms per saga of the two floors together",
        "sagas via fabio ÷ via gateway [fast]",
        "Fabio's cost per gRPC call",
    ] {
        assert!(stdout.contains(leg), "the table has no {leg}:\n{stdout}");
    }

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path()).unwrap()).unwrap();
    let legs = report["legs"].as_array().unwrap();
    let names: Vec<(&str, u64)> =
        legs.iter().map(|l| (l["leg"].as_str().unwrap(), l["clients"].as_u64().unwrap())).collect();
    let every_leg = [
        "sagas via gateway [fast]",
        "sagas via fabio [fast]",
        "Postgres-only floor [fast]",
        "RPC floor (gRPC health Check)",
        "RPC GetOrder direct",
        "RPC GetOrder via fabio",
        "JetStream floor (11 messages)",
    ];
    for leg in every_leg {
        for clients in [1, 4] {
            assert!(names.contains(&(leg, clients)), "{leg} at {clients} clients is missing: {names:?}");
        }
    }
    for leg in legs {
        assert!(leg["completed"].as_u64().unwrap() > 0, "{leg}");
        assert!(leg["p50_ms"].as_f64().unwrap() > 0.0, "{leg}");
        assert!(leg["system_cpu_ms_per_op"].as_f64().unwrap() > 0.0, "every leg costs the system CPU: {leg}");
    }
    let saga = legs.iter().find(|l| l["leg"] == "sagas via gateway [fast]").unwrap();
    for program in ["order-service", "postgres", "nats-server"] {
        assert!(saga["cpu_ms_per_op"][program].as_f64().is_some(), "{program} used CPU for the sagas: {saga}");
    }
    assert!(saga["commits_per_op"].as_f64().unwrap() > 1.0, "a saga commits several transactions: {saga}");
    for clients in ["1", "4"] {
        assert!(report["fabio_p50_ms_added_per_grpc_call"][clients].is_f64(), "Fabio's cost at {clients} clients");
    }
    for saga in legs.iter().filter(|l| l["kind"] == "sagas") {
        assert!(saga["ratio_to_floor"].as_f64().unwrap() > 0.0, "every saga leg is compared with the floor: {saga}");
    }
    for floor in legs.iter().filter(|l| l["kind"] == "floor") {
        assert_eq!(floor["postgres"], "fast", "{floor}");
        assert!(
            floor["cpu_ms_per_op"]["postgres"].as_f64().is_some(),
            "the floor runs on the system's Postgres: {floor}"
        );
        // The model makes 17 commits per saga.
        assert!(floor["commits_per_op"].as_f64().unwrap() > 10.0, "the floor commits the saga's transactions: {floor}");
    }
    for messages in legs.iter().filter(|l| l["kind"] == "messages") {
        assert!(
            messages["cpu_ms_per_op"]["nats-server"].as_f64().is_some(),
            "the messages go through NATS: {messages}"
        );
    }
    for clients in ["1", "4"] {
        assert!(report["floors_cpu_ms_per_saga"]["fast"][clients].as_f64().unwrap() > 0.0, "{report}");
        assert!(report["fabio_over_gateway"]["fast"][clients].as_f64().unwrap() > 0.0, "{report}");
    }
}
