//! The command lines of `ftgo-local` and `ftgo-cluster`: `--help` says what each command does, and
//! a command they do not know is refused with the usage, never started.

use std::process::Command;

fn run(binary: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(binary).args(args).env("RUST_BACKTRACE", "0").output().expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

#[test]
fn help_describes_every_command_and_a_wrong_one_is_refused_with_the_usage() {
    for (binary, commands) in [
        (env!("CARGO_BIN_EXE_ftgo-local"), &["up [--replicas N]", "down", "demo", "images"][..]),
        (env!("CARGO_BIN_EXE_ftgo-cluster"), &["up", "down", "images"][..]),
    ] {
        for help in ["--help", "-h", "help"] {
            let (ok, stdout, _) = run(binary, &[help]);
            assert!(ok, "{binary} {help} succeeds");
            assert!(stdout.starts_with("usage: "), "{binary} {help}: {stdout}");
            for command in commands {
                assert!(stdout.contains(&format!("\n  {command} ")), "{binary} {help} describes {command:?}: {stdout}");
            }
        }
        for wrong in [&["upp"][..], &[]] {
            let (ok, stdout, stderr) = run(binary, wrong);
            assert!(!ok, "{binary} {wrong:?} is refused");
            assert!(stdout.is_empty(), "{binary} {wrong:?} prints nothing else: {stdout}");
            assert!(stderr.contains("usage: ") && stderr.contains("--help"), "{binary} {wrong:?}: {stderr}");
        }
    }
}
