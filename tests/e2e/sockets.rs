//! Socket hygiene: owner-only files, stale sockets replaced, a live socket never taken over,
//! SIGTERM ends cleanly with the socket removed.

use std::os::unix::fs::PermissionsExt;

use icsync_e2e::{bin, World};

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
