//! The API's contract, checked by a fuzzer: `ftgo-local up` runs the real system, and schemathesis
//! (installed by `infra/install.sh` into `$FTGO_CACHE`) reads the gateway's `/api/openapi.json`
//! and sends it requests that follow the document and requests that break it, with every check it
//! has: no 5xx, only documented statuses, answers shaped as documented, valid input accepted,
//! invalid input refused. A fixed seed and a bounded number of cases keep the run reproducible and
//! within about two minutes.
//!
//! Settings: `schemathesis.toml` (413 counts as a refusal of invalid data) and
//! `schemathesis_hooks.py` (the two rules JSON Schema cannot state), both next to this file.

mod support;

use std::{path::PathBuf, process::Command, time::Instant};

const FTGO_LOCAL: &str = env!("CARGO_BIN_EXE_ftgo-local");
/// The version `infra/install.sh` pins (`SCHEMATHESIS_VERSION`).
const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// Reproducible runs: the same seed, the same cases.
const SEED: &str = "20260601";
/// Cases per operation and phase: enough to cover every documented rule, small enough for ~2 minutes.
const MAX_EXAMPLES: &str = "25";

/// The schemathesis `infra/install.sh` installed: `$FTGO_CACHE/bin/schemathesis`, else on PATH.
fn schemathesis() -> PathBuf {
    let cache = std::env::var_os("FTGO_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/ftgo"));
    let cached = cache.join("bin/schemathesis");
    let found = if cached.exists() { Some(cached) } else { which("schemathesis") };
    let Some(path) = found else {
        panic!(
            "schemathesis is not installed: run `infra/install.sh` (or `just infra`), which installs it into $FTGO_CACHE/bin"
        );
    };
    let version = Command::new(&path).arg("--version").output().unwrap_or_else(|e| {
        panic!("schemathesis at {} does not run ({e}): run `infra/install.sh` again", path.display())
    });
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(
        version.contains(SCHEMATHESIS_VERSION),
        "{} is schemathesis {version:?}, not the pinned {SCHEMATHESIS_VERSION}: run `infra/install.sh`",
        path.display()
    );
    path
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

#[test]
fn schemathesis_finds_nothing_against_the_running_system() {
    let schemathesis = schemathesis();
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests");
    let state = tempfile::tempdir().unwrap();
    let port = ftgo_testenv::process::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let command = |verb: &str| {
        let mut cmd = Command::new(FTGO_LOCAL);
        cmd.arg(verb).env("FTGO_STATE_DIR", state.path()).env("FTGO_GATEWAY_LISTEN", &listen);
        cmd
    };

    let (mut up, _lines) = support::until_up(command("up"));

    let started = Instant::now();
    let run = Command::new(&schemathesis)
        .arg("--config-file")
        .arg(here.join("schemathesis.toml"))
        .args(["run", &format!("http://{listen}/api/openapi.json")])
        .args(["--checks", "all", "--seed", SEED, "--max-examples", MAX_EXAMPLES])
        // Deterministic: one worker (no interleaving), no example database carried between runs.
        .args(["--workers", "1", "--generation-database", "none", "--no-color"])
        .args(["--request-timeout", "20", "--max-failures", "20"])
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("PYTHONPATH", &here)
        .current_dir(state.path())
        .output()
        .unwrap();
    let elapsed = started.elapsed();

    let down = command("down").output().unwrap();
    let _ = up.wait();
    let output = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    println!("schemathesis ran for {elapsed:?}:\n{output}");
    assert!(
        run.status.success(),
        "schemathesis found problems with the API (exit {}); its report:\n{output}",
        run.status
    );
    assert!(output.contains("passed"), "schemathesis ran no test cases:\n{output}");
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
}
