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

fn agent(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(args)
        .current_dir(dir)
        .env_remove("ICSYNC_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn check_errors_name_file_line_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let stores = "state = \"s.db\"\n[stores.a]\nsynchronizer = \"a.s\"\ncollector = \"a.c\"\n[stores.b]\nsynchronizer = \"b.s\"\ncollector = \"b.c\"\n";
    let p = |extra: &str| {
        format!("{stores}[[partnerships]]\nname = \"ab\"\nsource = \"a\"\ndestination = \"b\"\n{extra}\n")
    };
    let cases = [
        ("unknown key", p("every = \"5m\"\nbatchsize = 10")),
        (
            "unknown store",
            p("every = \"5m\"").replace("destination = \"b\"", "destination = \"c\""),
        ),
        ("bad duration", p("every = \"5 minutes\"")),
        ("bad cron", p("cron = \"*/5 * * *\"")),
        (
            "a store to itself",
            p("every = \"5m\"").replace("destination = \"b\"", "destination = \"a\""),
        ),
        (
            "duplicate names",
            p("every = \"5m\"") + &p("every = \"1m\"").replace(stores, ""),
        ),
        ("no schedule", p("")),
    ];
    let mut shown = String::new();
    for (what, text) in cases {
        std::fs::write(dir.path().join("agent.toml"), text).unwrap();
        let out = agent(&["--config", "agent.toml", "check"], dir.path());
        assert_eq!(out.status.code(), Some(2), "{what}");
        assert!(out.stdout.is_empty(), "{what}");
        shown.push_str(&format!(
            "{what}:\n{}\n",
            String::from_utf8_lossy(&out.stderr)
        ));
        assert!(!dir.path().join("s.db").exists(), "{what}: nothing ran");
    }
    insta::assert_snapshot!("check_errors", shown);
}

#[test]
fn every_command_has_help() {
    let dir = tempfile::tempdir().unwrap();
    let mut shown = String::new();
    for command in [
        &["--help"][..],
        &["run", "--help"],
        &["sync", "--help"],
        &["status", "--help"],
        &["state", "--help"],
        &["history", "--help"],
        &["conflicts", "--help"],
        &["resolve", "--help"],
        &["check", "--help"],
        &["completions", "--help"],
    ] {
        let out = agent(command, dir.path());
        assert!(out.status.success(), "{command:?}");
        shown.push_str(&format!(
            "$ agent {}\n{}\n",
            command.join(" "),
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    insta::assert_snapshot!("help", shown);
}

#[test]
fn completions_are_printed_for_each_shell_and_a_bad_shell_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F _agent"),
        ("zsh", "#compdef agent"),
        ("fish", "complete -c agent"),
    ] {
        let out = agent(&["completions", shell], dir.path());
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        for command in ["run", "sync", "status", "history", "completions"] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
    }
    let out = agent(&["completions", "tcsh"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'tcsh'"));
}
