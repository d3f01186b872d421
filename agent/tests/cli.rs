//! The agent's command line (this integration test also makes `cargo test --workspace` build
//! the binary the end-to-end tests run).
#![allow(clippy::unwrap_used)]
use std::process::Command;

#[test]
fn check_accepts_the_embedded_demo_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("check")
        .current_dir(dir.path())
        .env_remove("ICSYNC_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "<embedded demo config>: ok (2 stores, 1 partnerships)\n"
    );
}

#[test]
fn check_names_the_line_of_a_bad_duration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "state = \"s.db\"\n[stores.a]\nsynchronizer = \"a.s\"\ncollector = \"a.c\"\n[stores.b]\nsynchronizer = \"b.s\"\ncollector = \"b.c\"\n[[partnerships]]\nname = \"ab\"\nsource = \"a\"\ndestination = \"b\"\nevery = \"5 minutes\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("--config")
        .arg(&path)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:12:"), "{err}");
}
