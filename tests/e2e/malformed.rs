//! Malformed input to each socket: the connection gets an error naming what is wrong, the
//! daemon stays up, the store is unchanged.

use icsync_e2e::{frame, public_rows, raw_exchange, read_frame, World};
use std::io::Write;

/// Error frames' messages for a list of bad inputs sent to `socket`.
fn refusals(socket: &std::path::Path, inputs: &[Vec<u8>]) -> Vec<String> {
    inputs
        .iter()
        .map(|bytes| {
            let reply = raw_exchange(socket, bytes).expect("an error frame before the close");
            assert_eq!(reply["type"], "error", "{reply}");
            reply["message"].as_str().unwrap().to_string()
        })
        .collect()
}

fn bad_inputs() -> Vec<Vec<u8>> {
    let mut garbage = frame("this is not json");
    garbage.extend_from_slice(b"\xff\xfe trailing");
    vec![
        garbage,
        0xFFFF_FFF0u32.to_be_bytes().to_vec(),
        frame(r#"{"type":"hello","protocol":"one","role":"agent"}"#),
        frame(r#"{"type":"hello","protocol":99,"role":"agent"}"#),
        frame(r#"{"type":"hello","protocol":99,"role":"synchronizer"}"#),
        frame(r#"{"type":"sync_request"}"#),
    ]
}

#[test]
fn each_daemon_refuses_bad_input_clearly_and_stays_up() {
    let mut w = World::new();
    let mut a = w.store("a");
    let mut b = w.store("b");
    a.app()
        .execute_batch("INSERT INTO folders (id, name) VALUES ('f', 'F');")
        .unwrap();
    w.config(&[("ab", "a", "b", "")]);
    w.sync_ok("ab");
    let before = (
        public_rows(&a.app()),
        public_rows(&b.app()),
        w.info("a"),
        w.info("b"),
    );

    for socket in [w.sync_socket("a"), w.coll_socket("b")] {
        let messages = refusals(&socket, &bad_inputs());
        assert!(messages[0].contains("not a valid message"), "{messages:?}");
        assert!(
            messages[1].contains("over the 67108864-byte cap"),
            "{messages:?}"
        );
        assert!(messages[2].contains("invalid type"), "{messages:?}");
        assert!(
            messages[3].contains("protocol version 99 is not supported (this side speaks 3)"),
            "{messages:?}"
        );
        assert!(messages[4].contains("protocol version 99"), "{messages:?}");
        assert!(
            messages[5].contains("expected hello") || messages[5].contains("missing field"),
            "{messages:?}"
        );
    }
    // A wrong role is refused too.
    let reply = raw_exchange(
        &w.coll_socket("b"),
        &frame(r#"{"type":"hello","protocol":3,"role":"agent"}"#),
    )
    .unwrap();
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("serves Synchronizer callers"),
        "{reply}"
    );

    assert!(a.synchronizer.as_mut().unwrap().is_running());
    assert!(b.collector.as_mut().unwrap().is_running());
    let after = (
        public_rows(&a.app()),
        public_rows(&b.app()),
        w.info("a"),
        w.info("b"),
    );
    assert_eq!(before, after, "bad input changed nothing");
    // And the daemons still work.
    let out = w.sync_ok("ab");
    assert!(out.contains("completed: 0 sent"), "{out}");
}

#[test]
fn a_bad_change_batch_is_refused_whole_and_changes_nothing() {
    let mut w = World::new();
    let _b = w.store("b");
    let path = w.store_path("b");
    let before = w.info("b");
    let mut s = open_import_session(&w, "b");
    let send =
        |s: &mut std::os::unix::net::UnixStream, json: String| s.write_all(&frame(&json)).unwrap();
    // The first change is fine; the second names a replica the batch does not list.
    send(
        &mut s,
        format!(
            r#"{{"type":"change_batch","seq":1,"phase":"hierarchy","replicas":["{REPLICA}"],"learned":[{{"replica":"{REPLICA}","upto":2,"exceptions":[]}}],"last":true,
               "changes":[
                 {{"id":"ok","kind":"folder","created":[0,1],"units":[{{"version":[0,1],"at":0,"unit":"name","name":"Fine"}},{{"version":[0,1],"at":0,"unit":"parent","parent_id":null}}]}},
                 {{"id":"bad","kind":"folder","created":[5,2],"units":[{{"version":[5,2],"at":0,"unit":"name","name":"Bad"}},{{"version":[5,2],"at":0,"unit":"parent","parent_id":null}}]}}
               ]}}"#
        ),
    );
    let reply = read_frame(&mut s).unwrap();
    assert_eq!(reply["type"], "error");
    let message = reply["message"].as_str().unwrap();
    assert!(
        message.contains("change batch 1")
            && message.contains("item bad")
            && message.contains("replica #5"),
        "{message}"
    );
    assert_eq!(w.info("b"), before, "nothing of the batch was applied");
    assert!(path.exists());
}

const REPLICA: &str = "00000000-0000-4000-8000-000000000001";

/// A connection to `store`'s collector, past `hello` and `begin_session` from [`REPLICA`].
fn open_import_session(w: &World, store: &str) -> std::os::unix::net::UnixStream {
    let mut s = std::os::unix::net::UnixStream::connect(w.coll_socket(store)).unwrap();
    s.set_read_timeout(Some(icsync_e2e::DEADLINE)).unwrap();
    s.write_all(&frame(
        r#"{"type":"hello","protocol":3,"role":"synchronizer"}"#,
    ))
    .unwrap();
    assert_eq!(read_frame(&mut s).unwrap()["type"], "welcome");
    s.write_all(&frame(&format!(
        r#"{{"type":"begin_session","source":"{REPLICA}","made_with":[{{"replica":"{REPLICA}","upto":2,"exceptions":[]}}],"rule":"defer"}}"#
    )))
    .unwrap();
    assert_eq!(read_frame(&mut s).unwrap()["type"], "session_ready");
    s
}

/// Protocol 2 attaches bodies and headers after a batch's JSON, laid out from the frame's end. A
/// body that names more bytes than follow the JSON is refused by the collector with the numbers,
/// and nothing of the batch is applied.
#[test]
fn a_batch_whose_attached_bodies_do_not_add_up_is_refused_and_changes_nothing() {
    let mut w = World::new();
    let b = w.store("b");
    let before = (w.info("b"), public_rows(&b.app()));
    let mut s = open_import_session(&w, "b");
    let unit = |body: &str| {
        format!(
            r#"{{"version":[0,2],"at":0,"unit":"content","subject":"s","sender":"x","received_at":0,"headers":"","body":{body}}}"#
        )
    };
    let json = format!(
        r#"{{"type":"change_batch","seq":1,"phase":"contents","replicas":["{REPLICA}"],"learned":[{{"replica":"{REPLICA}","upto":2,"exceptions":[]}}],"last":true,
           "changes":[
             {{"id":"f","kind":"folder","created":[0,1],"units":[{{"version":[0,1],"at":0,"unit":"name","name":"F"}},{{"version":[0,1],"at":0,"unit":"parent","parent_id":null}}]}},
             {{"id":"m1","kind":"message","created":[0,2],"units":[{u1},{{"version":[0,2],"at":0,"unit":"read","is_read":false}},{{"version":[0,2],"at":0,"unit":"location","folder_id":"f"}}]}},
             {{"id":"m2","kind":"message","created":[0,2],"units":[{u2},{{"version":[0,2],"at":0,"unit":"read","is_read":false}},{{"version":[0,2],"at":0,"unit":"location","folder_id":"f"}}]}}
           ]}}"#,
        u1 = unit(r#"{"text_bytes":3}"#),
        u2 = unit(r#"{"text_bytes":10}"#),
    );
    let mut body = json.into_bytes();
    body.extend_from_slice(b"onetwo");
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    s.write_all(&out).unwrap();
    let reply = read_frame(&mut s).unwrap();
    assert_eq!(reply["type"], "error", "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(
        message.contains("the attached values reach 7 bytes into the message's JSON"),
        "{message}"
    );
    assert_eq!((w.info("b"), public_rows(&b.app())), before);
}
