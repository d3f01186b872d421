//! Socket hygiene: owner-only files, stale sockets replaced, a live socket never taken over,
//! SIGTERM ends cleanly with the socket removed, and so does the end of a supervised daemon's
//! stdin.

use std::os::unix::fs::PermissionsExt;

use std::process::Stdio;

use icsync_e2e::{bin, wait_until, World};

#[test]
fn sockets_are_owner_only_and_removed_on_sigterm() {
    let w = World::new();
    let mut d = w.spawn("collector", "a", &[]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let status = d.terminate();
    assert!(status.success(), "SIGTERM ends with exit 0, got {status}");
    assert!(!d.socket.exists(), "the socket file is removed");
}

#[test]
fn a_stale_socket_is_replaced_but_a_live_one_is_refused() {
    let w = World::new();
    let mut first = w.spawn("synchronizer", "a", &[]);
    // A second daemon on the live socket refuses to start, with a clear error.
    let out = std::process::Command::new(bin("synchronizer"))
        .arg("--store")
        .arg(w.store_path("a"))
        .arg("--socket")
        .arg(&first.socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another daemon is already serving this socket"),
        "{err}"
    );
    assert!(first.is_running());
    // kill -9 leaves the socket file behind; the next daemon replaces it.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(first.socket.exists(), "kill -9 leaves a stale socket");
    let second = w.spawn("synchronizer", "a", &[]);
    assert!(second.socket.exists());
}

#[test]
fn a_file_that_is_not_a_store_stops_the_daemon_before_it_serves() {
    let w = World::new();
    std::fs::create_dir_all(w.path("data")).unwrap();
    std::fs::write(w.store_path("a"), b"just some text").unwrap();
    let out = std::process::Command::new(bin("collector"))
        .arg("--store")
        .arg(w.store_path("a"))
        .arg("--socket")
        .arg(w.coll_socket("a"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not an icsync store"), "{err}");
    assert_eq!(std::fs::read(w.store_path("a")).unwrap(), b"just some text");
    assert!(!w.coll_socket("a").exists());
}

/// `--supervised` (what `agent run` passes the daemons it spawns): the end of stdin, which is
/// when the agent holding the pipe's other end is gone, stops the daemon as SIGTERM does. A
/// daemon without the flag pays its stdin no attention, even at end-of-file from the start.
#[test]
fn a_supervised_daemon_stops_when_its_stdin_ends_and_an_unsupervised_one_serves_on() {
    let w = World::new();
    for which in ["synchronizer", "collector"] {
        let store = format!("{which}-store");
        let mut unsupervised = w.spawn_with_stdin(which, &store, &[], &[], Stdio::null());
        let other = format!("{which}-other");
        let mut supervised =
            w.spawn_with_stdin(which, &other, &["--supervised"], &[], Stdio::piped());
        assert!(
            supervised.is_running(),
            "{which} waits while its stdin is open"
        );
        drop(supervised.child.stdin.take());
        let status = supervised.wait_exit();
        assert!(
            status.success(),
            "{which}: exit 0 at the end of stdin, got {status}"
        );
        assert!(
            !supervised.socket.exists(),
            "{which}: the socket file is removed"
        );
        let log = supervised.log_text();
        assert!(
            log.contains(
                "shutting down: the agent that started this process is gone reason=stdin closed"
            ),
            "{log}"
        );
        // The unsupervised one, whose stdin was at its end all along, still answers.
        wait_until(
            "the unsupervised daemon to answer",
            || std::os::unix::net::UnixStream::connect(&unsupervised.socket).is_ok(),
            || unsupervised.log_text(),
        );
        assert!(
            unsupervised.is_running(),
            "{which} without --supervised serves on"
        );
    }
}

/// A socket path longer than the system takes is refused by name and length, before the daemon
/// opens (and would create) its store.
#[test]
fn a_socket_path_too_long_is_refused_before_the_store_is_made() {
    let w = World::new();
    let socket = w.path(&format!("{}/c.sock", "d".repeat(120)));
    for which in ["synchronizer", "collector"] {
        let out = std::process::Command::new(bin(which))
            .arg("--store")
            .arg(w.store_path("a"))
            .arg("--socket")
            .arg(&socket)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{which}: {err}");
        assert!(
            err.contains(&format!(
                "{}: a socket path of {} bytes is too long; the system takes at most 107",
                socket.display(),
                socket.as_os_str().len()
            )),
            "{which}: {err}"
        );
        assert!(!w.store_path("a").exists(), "{which} made the store");
    }
}
