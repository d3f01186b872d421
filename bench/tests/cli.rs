//! The benchmark's command line refuses bad input with a message naming it, before it writes
//! anything.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_icsync-bench"))
}

#[test]
fn a_count_that_is_not_one_is_refused_by_name() {
    for bad in ["10q", "0", "k", "-5", "1.5M"] {
        let out = bench().arg(format!("--n={bad}")).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{bad:?} is not a message count")),
            "{bad}: {stderr}"
        );
    }
}

#[test]
fn missing_binaries_are_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let out = bench()
        .args(["--n", "10", "--bin-dir"])
        .arg(dir.path().join("nowhere"))
        .arg("--dir")
        .arg(&work)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nowhere/synchronizer is missing"),
        "{stderr}"
    );
    assert!(!work.exists());
}

#[test]
fn fill_only_needs_a_directory_to_keep() {
    let out = bench().args(["--n", "10", "--fill-only"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dir"));
}

#[test]
fn rounds_out_of_range_are_refused_by_name() {
    for bad in ["0", "21", "x"] {
        let out = bench()
            .args(["--n", "10", "--rounds", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--rounds"), "{bad}: {stderr}");
    }
}

#[test]
fn an_unknown_form_of_ids_is_refused_by_name() {
    let out = bench()
        .args(["--n", "10", "--ids", "exchange,uuid7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'uuid7'") && stderr.contains("--ids"),
        "{stderr}"
    );
}
