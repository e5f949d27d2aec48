//! Helpers shared by the end-to-end tests: the `a2cid` binary, readable outputs, JSON files and
//! free ports. (Each test file uses some of them.)
#![allow(dead_code)]
use std::path::Path;
use std::process::{Command, Output};

/// The `a2cid` binary with the log levels the tests read.
pub fn a2cid() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_a2cid"));
    c.env("RUST_LOG", "warn,a2cid=info");
    c
}

/// Status, stdout and stderr of a finished command, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A JSON file, parsed.
pub fn json(path: &Path) -> serde_json::Value {
    let s = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&s).expect("valid JSON")
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Digits on 4 workers, small enough for a 2-core CI machine.
pub fn digits_run(out: &Path, method: &str, epochs: u32) -> Command {
    let mut c = a2cid();
    c.args([
        "run",
        "--workers",
        "4",
        "--graph",
        "ring",
        "--method",
        method,
    ])
    .args([
        "--dataset",
        "digits",
        "--hidden",
        "64",
        "--batch-size",
        "32",
    ])
    .args([
        "--epochs",
        &epochs.to_string(),
        "--lr",
        "0.1",
        "--seed",
        "1",
    ])
    .args(["--no-progress", "--out"])
    .arg(out);
    c
}
