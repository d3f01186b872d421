//! The collector's command line (this integration test also makes `cargo test --workspace`
//! build the binary the end-to-end tests run).
#![allow(clippy::unwrap_used)]
use std::process::Command;

#[test]
fn a_missing_argument_is_a_usage_error_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_collector"))
        .args(["--store", "x.db"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--socket <SOCKET>"));
}

#[test]
fn a_bad_log_format_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_collector"))
        .args([
            "--store",
            "x.db",
            "--socket",
            "x.sock",
            "--log-format",
            "xml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown log format \"xml\""));
}
