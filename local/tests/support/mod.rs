//! What the tests that run `ftgo-local up` as a user would share.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// Starts `up` (an `ftgo-local up` command), echoing what it prints, and waits (two minutes at
/// most) until it says "FTGO is up". Returns the running process and the lines it prints after that.
pub fn until_up(mut up: Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = up.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("ftgo-local starts");
    let (lines_tx, lines) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            println!("up: {line}");
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(120)) {
            Ok(line) if line.starts_with("FTGO is up") => return (child, lines),
            Ok(line) => printed.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("`ftgo-local up` did not come up ({e}); it printed:\n{}", printed.join("\n"));
            }
        }
    }
}
