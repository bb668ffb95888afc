//! No server outlives the test that started it: not when the test panics (the handle's `Drop`
//! stops it) and not when the test process dies without unwinding (the parent-death signal).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use ftgo_testenv::Nats;

use crate::eventually;

const MODE: &str = "FTGO_SMOKE_DYING_TEST";

/// Not a test of its own: the body of the child test process that the tests below run. It starts
/// NATS, reports the server's pid and directory, then dies the way `FTGO_SMOKE_DYING_TEST` says.
#[tokio::test]
#[ignore = "run by the process tests below, in a child process"]
async fn dying_test_body() {
    let Ok(mode) = std::env::var(MODE) else { return };
    let mut nats = Nats::start().await.unwrap();
    let dir = nats.process().log_path().parent().unwrap().display().to_string();
    println!("server pid={} dir={dir}", nats.process().pid());
    match mode.as_str() {
        "panic" => panic!("the test fails"),
        _ => std::process::abort(),
    }
}

/// Runs `dying_test_body` in a child process and returns the pid and directory its server had.
fn run_dying_test(mode: &str) -> (libc::pid_t, PathBuf) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "process::dying_test_body", "--nocapture"])
        .env(MODE, mode)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "the child test was meant to fail");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find(|l| l.starts_with("server pid=")).unwrap_or_else(|| {
        panic!("no server line; stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&output.stderr))
    });
    let (pid, dir) = line["server pid=".len()..].split_once(" dir=").unwrap();
    (pid.parse().unwrap(), PathBuf::from(dir))
}

fn alive(pid: libc::pid_t) -> bool {
    // A zombie still answers signal 0, but a reparented one is reaped by init at once.
    // SAFETY: signal 0 only asks whether the pid exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[tokio::test]
async fn a_panicking_test_stops_its_servers_and_removes_their_files() {
    let (pid, dir) = run_dying_test("panic");
    assert!(!alive(pid), "nats-server {pid} survived the panicking test");
    assert!(!dir.exists(), "{} was left behind", dir.display());
}

#[tokio::test]
async fn a_test_process_killed_without_unwinding_takes_its_servers_with_it() {
    let (pid, dir) = run_dying_test("abort");
    eventually("the parent-death signal to kill the server", Duration::from_secs(5), || async {
        (!alive(pid)).then_some(())
    })
    .await;
    // Nothing ran to remove the directory: clean it up ourselves.
    let _ = std::fs::remove_dir_all(dir);
}
