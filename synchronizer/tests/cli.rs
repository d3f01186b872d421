//! The synchronizer's command line (this integration test also makes `cargo test --workspace`
//! build the binary the end-to-end tests run).
#![allow(clippy::unwrap_used)]
use std::process::Command;

fn synchronizer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_synchronizer"))
}

#[test]
fn serving_without_a_socket_is_a_clear_usage_error() {
    let out = synchronizer().args(["--store", "x.db"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--store PATH and --socket PATH are both required"));
}

#[test]
fn info_on_a_file_that_is_not_a_store_names_it_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "hello").unwrap();
    let out = synchronizer()
        .args(["info", "--store"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("notes.txt: not an icsync store"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello");
}

#[test]
fn info_of_a_new_store_shows_an_empty_knowledge_in_the_json_form() {
    let dir = tempfile::tempdir().unwrap();
    // Made as a daemon makes it on first start; `info` itself creates nothing.
    drop(shared::store::Store::open(&dir.path().join("s.db")).unwrap());
    let out = synchronizer()
        .args(["info", "--json", "--store"])
        .arg(dir.path().join("s.db"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["knowledge"], serde_json::json!([]));
    assert_eq!(v["messages"], 0);
    assert_eq!(v["replica"].as_str().unwrap().len(), 36);
}
