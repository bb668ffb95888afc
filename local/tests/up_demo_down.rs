//! `just up`, `just demo`, `just down` as a user runs them: the real binaries, the real
//! infrastructure, the demo's orders over HTTP, and nothing left listening afterwards.
//!
//! The service binaries must have been built next to `ftgo-local` (`cargo test --workspace`
//! builds every binary before it runs any test).

mod support;

use std::{net::TcpStream, process::Command, time::Duration};

const FTGO_LOCAL: &str = env!("CARGO_BIN_EXE_ftgo-local");

#[test]
fn up_serves_the_demo_and_down_stops_everything() {
    let state = tempfile::tempdir().unwrap();
    let port = ftgo_testenv::process::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let no_collector = ftgo_testenv::process::free_port().unwrap();
    let command = |verb: &str| {
        let mut cmd = Command::new(FTGO_LOCAL);
        cmd.arg(verb).env("FTGO_STATE_DIR", state.path()).env("FTGO_GATEWAY_LISTEN", &listen);
        // Traces are exported to a collector that is not there: nothing may break because of it.
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{no_collector}"));
        cmd
    };

    let (mut up, lines) = support::until_up(command("up"));
    // The lines after "FTGO is up" say where each service listens, and where Fabio does.
    let mut service_ports = Vec::new();
    let mut fabio_http = None;
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
        if let Some(addr) = line.split("grpc://").nth(1) {
            service_ports.push(addr.trim().to_owned());
        }
        if let Some(rest) = line.trim().strip_prefix("fabio http") {
            fabio_http = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    assert_eq!(service_ports.len(), ftgo_catalog::ServiceName::back_end().count(), "every back-end service is listed");
    let fabio_http = fabio_http.expect("Fabio's HTTP address is printed");

    // The demo straight at the gateway, then through Fabio: the same API either way.
    for gateway in [format!("http://{listen}"), fabio_http] {
        let demo = command("demo").env("FTGO_GATEWAY_URL", &gateway).output().unwrap();
        let demo_out = String::from_utf8_lossy(&demo.stdout);
        println!("{demo_out}{}", String::from_utf8_lossy(&demo.stderr));
        assert!(demo.status.success(), "the demo against {gateway} failed");
        for expected in [
            "order is APPROVED",
            "order is REJECTED",
            "credit limit exceeded",
            "order is CANCELLED",
            "payment REVERSED",
        ] {
            assert!(demo_out.contains(expected), "the demo against {gateway} did not show {expected:?}");
        }
    }

    // Every service's admin API through the gateway, which calls Fabio's gRPC proxy: all five serve
    // it under one gRPC name, so each call must reach the service it names by its `dsthost` host
    // route (the gateway answers 502 when another service answers).
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let http = reqwest::Client::new();
        for service in ftgo_catalog::ServiceName::back_end() {
            let url = format!("http://{listen}/api/admin/{service}/dead-letters?waiting=true");
            let response = http.get(&url).send().await.unwrap();
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(status, reqwest::StatusCode::OK, "{url}: {body}");
            assert_eq!(body["service"], service.as_str(), "{body}");
        }
    });

    let down = command("down").output().unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let status = up.wait().unwrap();
    assert!(status.success(), "`up` exited with {status}");
    // Every service stopped cleanly: a process that exits with an error prints `Error: ...`.
    for log in std::fs::read_dir(state.path().join("logs")).unwrap() {
        let log = log.unwrap().path();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("Error: "), "{} shows a failure:\n{text}", log.display());
    }
    for addr in std::iter::once(listen.as_str()).chain(service_ports.iter().map(String::as_str)) {
        assert!(TcpStream::connect(addr).is_err(), "{addr} still accepts connections after `down`");
    }
}
