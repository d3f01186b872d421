//! The packed changes: what a frame carries, that it reads back as sent, and that every bad
//! packed batch is refused with what is wrong and where.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;
use crate::knowledge::Knowledge;
use crate::model::Phase;
use crate::protocol::attached::{decode, encode};
use crate::protocol::{ChangeBatch, Message, ProtocolError};

fn batch(changes: Vec<Change>) -> Message {
    Message::ChangeBatch(ChangeBatch {
        seq: 1,
        phase: Phase::Contents,
        replicas: vec!["a".into(), "b".into()],
        changes,
        learned: Knowledge::new(),
        last: false,
        full: None,
        left: vec![],
    })
}

fn unit(tick: u64, at: i64, value: UnitValue) -> UnitChange {
    UnitChange {
        version: WireVersion(1, tick),
        at,
        value,
    }
}

fn message(id: &str, body: Option<Body>) -> Change {
    Change {
        id: id.into(),
        kind: ItemKind::Message,
        created: WireVersion(0, 1),
        units: vec![
            unit(
                2,
                1_732_183_300_000,
                UnitValue::Content {
                    subject: format!("subject of {id}, grüße"),
                    sender: "a@b".into(),
                    received_at: -5,
                    headers: format!("Subject: {id}\r\nX: y\r\n"),
                    body,
                },
            ),
            unit(3, 0, UnitValue::Read { is_read: true }),
            unit(
                u64::MAX,
                i64::MIN,
                UnitValue::Location {
                    folder_id: "f1".into(),
                },
            ),
        ],
    }
}

/// Every kind of unit and every body the store gives.
fn every_kind() -> Vec<Change> {
    vec![
        Change {
            id: "f1".into(),
            kind: ItemKind::Folder,
            created: WireVersion(1, 7),
            units: vec![
                unit(
                    8,
                    1,
                    UnitValue::Name {
                        name: "Inbox".into(),
                    },
                ),
                unit(9, 2, UnitValue::Parent { parent_id: None }),
            ],
        },
        Change {
            id: "f2".into(),
            kind: ItemKind::Folder,
            created: WireVersion(0, 3),
            units: vec![unit(
                4,
                3,
                UnitValue::Parent {
                    parent_id: Some("f1".into()),
                },
            )],
        },
        message("m1", Some(Body::Text("héllo \"quoted\"\n".into()))),
        message("m2", Some(Body::Blob(vec![0xff, 0x00, 0x80]))),
        message("m3", Some(Body::Utf8("plain".into()))),
        message("m4", Some(Body::Withheld)),
        message("m5", None),
        message("m6", Some(Body::Text(String::new()))),
        message("m8", Some(Body::TooLarge(70 * 1024 * 1024))),
        Change {
            id: "m7".into(),
            kind: ItemKind::Message,
            created: WireVersion(0, 2),
            units: vec![unit(10, 4, UnitValue::MessageTombstone)],
        },
        Change {
            id: "f3".into(),
            kind: ItemKind::Folder,
            created: WireVersion(0, 3),
            units: vec![unit(11, 5, UnitValue::FolderTombstone)],
        },
    ]
}

fn frame_of(message: &Message) -> (String, Vec<u8>) {
    let parts = encode(message).unwrap();
    let json = String::from_utf8(parts.slices()[0].to_vec()).unwrap();
    let frame = parts.slices().concat();
    (json, frame)
}

fn changes_of(message: Message) -> Vec<Change> {
    match message {
        Message::ChangeBatch(batch) => batch.changes,
        other => panic!("{other:?}"),
    }
}

/// Inside a frame the changes are packed, headers and bodies attached beside them, and read back
/// as the store gave them (a UTF-8 BLOB as a BLOB, as attached bodies always were).
#[test]
fn a_batch_travels_packed_and_reads_back_as_sent() {
    let sent = batch(every_kind());
    let (json, mut frame) = frame_of(&sent);
    assert!(json.contains(r#""changes":{"packed_bytes":"#), "{json}");
    for inline in ["Inbox", "m1", "grüße", "Subject", "héllo", "a@b"] {
        assert!(!json.contains(inline), "{inline} in {json}");
    }
    let got = changes_of(decode(&mut frame).unwrap());
    let mut want = every_kind();
    if let UnitValue::Content { body, .. } = &mut want[4].units[0].value {
        *body = Some(Body::Blob(b"plain".to_vec()));
    }
    assert_eq!(got, want);
    // Outside a frame, and read back from a frame, the changes are a JSON array still.
    let inline = serde_json::to_string(&sent).unwrap();
    assert!(inline.contains(r#""changes":[{"id":"f1""#), "{inline}");
    let mut inline_frame = inline.into_bytes();
    assert_eq!(changes_of(decode(&mut inline_frame).unwrap()).len(), 11);
}

/// The packed bytes are ASCII but for the strings' own, so a frame of UTF-8 values stays UTF-8
/// and is checked once, whole.
#[test]
fn packed_changes_keep_a_frame_of_text_values_utf8() {
    let changes: Vec<Change> = (0..300)
        .map(|i| message(&format!("m{i}"), Some(Body::Text("b".repeat(i)))))
        .collect();
    let (_, frame) = frame_of(&batch(changes.clone()));
    assert!(std::str::from_utf8(&frame).is_ok());
    let mut packed = Vec::new();
    assert!(pack(&changes, &mut packed));
    assert!(std::str::from_utf8(&packed).is_ok());
}

/// A batch with a body in a form the store never gives (inline base64) is sent as JSON, and
/// reads back.
#[test]
fn a_batch_that_cannot_be_packed_goes_as_json() {
    let sent = batch(vec![message("m1", Some(Body::Base64("/wCA".into())))]);
    let (json, mut frame) = frame_of(&sent);
    assert!(json.contains(r#""changes":[{"id":"m1""#), "{json}");
    assert_eq!(changes_of(decode(&mut frame).unwrap()), changes_of(sent));
}

/// ARCHITECTURE.md's example batch (folder `I1` renamed), packed byte for byte as it says.
#[test]
fn the_documented_example_packs_as_documented() {
    let change = Change {
        id: "I1".into(),
        kind: ItemKind::Folder,
        created: WireVersion(0, 1),
        units: vec![
            UnitChange {
                version: WireVersion(0, 5),
                at: 1_732_183_205_000,
                value: UnitValue::Name {
                    name: "one, edited".into(),
                },
            },
            UnitChange {
                version: WireVersion(0, 1),
                at: 1_732_183_100_000,
                value: UnitValue::Parent { parent_id: None },
            },
        ],
    };
    let mut packed = Vec::new();
    assert!(pack(&[change], &mut packed));
    assert_eq!(
        packed,
        b"\x01\x02I1\x00\x00\x01\x02\x01\x00\x05PdDU\\Z2\x0bone, edited\x02\x00\x01@SQT\\Z2\x00"
    );
}

/// A frame by hand: a change batch whose changes are `packed`, with `values` laid out before
/// them (from the end backwards: the first value met is the nearest to `packed`).
fn hand_frame(packed: &[u8], values: &[u8]) -> Vec<u8> {
    let mut frame = format!(
        r#"{{"type":"change_batch","seq":1,"phase":"contents","replicas":["a"],"changes":{{"packed_bytes":{}}},"learned":[],"last":false}}"#,
        packed.len()
    )
    .into_bytes();
    frame.extend_from_slice(values);
    frame.extend_from_slice(packed);
    frame
}

fn refusal(packed: &[u8], values: &[u8]) -> String {
    match decode(&mut hand_frame(packed, values)) {
        Err(ProtocolError::Malformed(what)) => what,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A folder change with its name: `kind`, `code` and the name as given.
fn folder_bytes(count: u64, kind: u8, code: u8, name: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    uint(&mut b, count);
    str_(&mut b, "f1");
    b.push(kind);
    b.extend_from_slice(&[0, 1]); // created [0, 1]
    uint(&mut b, 1);
    b.push(code);
    b.extend_from_slice(&[0, 2]); // version [0, 2]
    int(&mut b, 5);
    uint(&mut b, name.len() as u64);
    b.extend_from_slice(name);
    b
}

#[test]
fn a_hand_packed_batch_reads() {
    let changes =
        changes_of(decode(&mut hand_frame(&folder_bytes(1, 0, 1, b"Inbox"), b"")).unwrap());
    assert_eq!(
        changes,
        vec![Change {
            id: "f1".into(),
            kind: ItemKind::Folder,
            created: WireVersion(0, 1),
            units: vec![UnitChange {
                version: WireVersion(0, 2),
                at: 5,
                value: UnitValue::Name {
                    name: "Inbox".into()
                },
            }],
        }]
    );
}

#[test]
fn bad_packed_changes_are_refused_by_what_and_where() {
    let content = |form: u8, len: u64, is_read: u8| {
        let mut b = Vec::new();
        uint(&mut b, 1);
        str_(&mut b, "m1");
        b.push(1);
        b.extend_from_slice(&[0, 1]);
        uint(&mut b, 2);
        b.push(3);
        b.extend_from_slice(&[0, 2, 0]);
        for s in ["s", "x"] {
            str_(&mut b, s);
        }
        int(&mut b, 1);
        uint(&mut b, 0); // no headers
        b.push(form);
        if form == 2 {
            uint(&mut b, len);
        }
        b.push(4);
        b.extend_from_slice(&[0, 3, 0]);
        b.push(is_read);
        b
    };
    let mut past_u64 = Vec::new();
    uint(&mut past_u64, u64::MAX);
    *past_u64.last_mut().unwrap() = 0x3f;
    for (packed, values, wanted) in [
        (
            folder_bytes(2, 0, 1, b"Inbox"),
            &b""[..],
            "change 2: the id: the packed changes end early",
        ),
        (
            folder_bytes(1, 7, 1, b"Inbox"),
            b"",
            "change 1: f1: kind code 7 is neither folder nor message (at byte 4",
        ),
        (
            folder_bytes(1, 0, 6, b"Inbox"),
            b"",
            "change 1: f1: unit code 6 names no unit",
        ),
        (
            folder_bytes(1, 0, 1, b"In\xffbox"),
            b"",
            "change 1: the name is not UTF-8",
        ),
        (
            [folder_bytes(1, 0, 1, b"Inbox"), b"zz".to_vec()].concat(),
            b"",
            "2 bytes after the last of 1 changes",
        ),
        (
            content(9, 0, 0),
            b"",
            "change 1: m1: body form 9 is none of 0-4",
        ),
        (
            content(0, 0, 2),
            b"",
            "change 1: is_read: 2 where 0 or 1 belongs",
        ),
        (
            content(2, 99_999, 0),
            b"",
            "an attached TEXT body names 99999 attached bytes, more than",
        ),
        // Values that reach into the JSON are refused once the JSON ends.
        (
            content(2, 5, 0),
            b"",
            "the attached values reach 5 bytes into the message's JSON",
        ),
        (
            content(2, 3, 0),
            b"\xff\xfe\xfd",
            "an attached TEXT body is not UTF-8",
        ),
        (past_u64, b"", "the count of changes: a number past 2^64"),
        (
            vec![0x41, 0x80, 0],
            b"",
            "the count of changes: byte 0x80 where a number goes on",
        ),
    ] {
        let what = refusal(&packed, values);
        assert!(what.contains(wanted), "{what}\n  does not say: {wanted}");
    }
    // Packed bytes past the frame.
    let json = String::from_utf8(hand_frame(b"", b"")).unwrap();
    let mut frame = json
        .replace(r#""packed_bytes":0"#, r#""packed_bytes":99999"#)
        .into_bytes();
    let what = match decode(&mut frame) {
        Err(ProtocolError::Malformed(what)) => what,
        other => panic!("{other:?}"),
    };
    assert!(
        what.contains("the packed changes names 99999 attached bytes"),
        "{what}"
    );
}

proptest! {
    /// Numbers read back as written, and are written in ASCII.
    #[test]
    fn numbers_round_trip_in_ascii(u in any::<u64>(), i in any::<i64>()) {
        let mut b = Vec::new();
        uint(&mut b, u);
        int(&mut b, i);
        prop_assert!(b.iter().all(u8::is_ascii));
        let frame = Frame::Bytes(b.clone());
        let mut r = Reader { bytes: frame.bytes(), text: None, at: 0 };
        prop_assert_eq!(r.uint("u").unwrap(), u);
        prop_assert_eq!(r.int("i").unwrap(), i);
        prop_assert_eq!(r.at, b.len());
    }
}
