//! Bodies beside the JSON (protocol 2): a frame is the message's JSON object, then the bytes of
//! every body of a `change_batch`, back to back, in the order the bodies appear in the JSON.
//! Each body names its length in place (`{"text_bytes": N}` or `{"blob_bytes": N}`).
//!
//! Why: message bodies are most of a batch's bytes, and as JSON strings they were escaped byte by
//! byte by the synchronizer (12 % of its CPU in an initial sync), unescaped byte by byte by the
//! collector, and a binary BLOB grew by a third as base64. Attached, a body is copied once on
//! each side and its bytes are never looked at, except for the UTF-8 check of a TEXT body.
//!
//! The encoder collects the bytes while serde writes the JSON: [`Body`]'s `Serialize` hands them
//! to the sink [`encode`] sets up on its thread (serde passes no context down the tree), and
//! writes the placeholder. The reader finds the JSON's end as it parses, then [`resolve`] puts
//! the bytes back in the same order, checking that every byte is claimed exactly once.

use std::cell::{Cell, RefCell};

use super::{Message, ProtocolError};
use crate::model::{Body, UnitValue};

thread_local! {
    /// The attachments of the frame this thread is encoding, while it encodes one.
    static SINK: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
    /// The JSON size of the last batch this thread encoded: the next one's first guess, so a
    /// batch's JSON is not grown by doubling through a dozen reallocations and copies.
    static LAST_JSON_LEN: Cell<usize> = const { Cell::new(0) };
}

/// A message as a frame's two parts: its JSON and the bodies attached after it.
pub(super) struct Parts {
    pub json: Vec<u8>,
    pub attached: Vec<u8>,
}

/// Encodes `message`, attaching the bodies it carries.
pub(super) fn encode(message: &Message) -> Result<Parts, serde_json::Error> {
    /// Takes the sink down however encoding ends (a panicking `Serialize` included), so no
    /// later inline write finds it set.
    struct Open;
    impl Drop for Open {
        fn drop(&mut self) {
            SINK.with(|sink| sink.borrow_mut().take());
        }
    }
    let attached = Vec::with_capacity(attached_len(message));
    SINK.with(|sink| *sink.borrow_mut() = Some(attached));
    let open = Open;
    let is_batch = matches!(message, Message::ChangeBatch(_));
    let mut json = Vec::with_capacity(if is_batch { LAST_JSON_LEN.get() } else { 128 });
    let written = serde_json::to_writer(&mut json, message);
    let attached = SINK
        .with(|sink| sink.borrow_mut().take())
        .unwrap_or_default();
    drop(open);
    written?;
    if is_batch {
        LAST_JSON_LEN.set(json.len() + json.len() / 8);
    }
    Ok(Parts { json, attached })
}

/// How many bytes `message`'s attachments will take.
fn attached_len(message: &Message) -> usize {
    let Message::ChangeBatch(batch) = message else {
        return 0;
    };
    batch
        .changes
        .iter()
        .flat_map(|c| &c.units)
        .map(|u| match &u.value {
            UnitValue::Content {
                body: Some(Body::Text(t) | Body::Utf8(t)),
                ..
            } => t.len(),
            UnitValue::Content {
                body: Some(Body::Blob(b)),
                ..
            } => b.len(),
            _ => 0,
        })
        .sum()
}

/// Appends `bytes` to the attachments of the frame being encoded on this thread; `false`, and
/// nothing done, when no frame is being encoded (the body is then written inline).
pub(crate) fn attach(bytes: &[u8]) -> bool {
    SINK.with(|sink| match sink.borrow_mut().as_mut() {
        Some(attached) => {
            attached.extend_from_slice(bytes);
            true
        }
        None => false,
    })
}

/// Replaces the placeholders of `message` with the bodies in `rest`, the frame's bytes after
/// its JSON. Refused as malformed: a placeholder past the end of `rest`, a TEXT body that is not
/// UTF-8, and bytes that no body claims.
pub(super) fn resolve(message: &mut Message, rest: &[u8]) -> Result<(), ProtocolError> {
    let mut at = 0usize;
    if let Message::ChangeBatch(batch) = message {
        for change in &mut batch.changes {
            for unit in &mut change.units {
                let UnitValue::Content {
                    body: Some(body), ..
                } = &mut unit.value
                else {
                    continue;
                };
                let (len, text) = match body {
                    Body::TextBytes(len) => (*len, true),
                    Body::BlobBytes(len) => (*len, false),
                    _ => continue,
                };
                let bytes = take(rest, &mut at, len).ok_or_else(|| {
                    ProtocolError::Malformed(format!(
                        "the body of {} names {len} attached bytes, but only {} follow",
                        change.id,
                        rest.len() - at
                    ))
                })?;
                *body = if text {
                    Body::Text(String::from_utf8(bytes.to_vec()).map_err(|e| {
                        ProtocolError::Malformed(format!(
                            "the TEXT body of {} is not UTF-8 (at byte {})",
                            change.id,
                            e.utf8_error().valid_up_to()
                        ))
                    })?)
                } else {
                    Body::Blob(bytes.to_vec())
                };
            }
        }
    }
    let unclaimed = &rest[at..];
    // A frame with nothing attached may end in whitespace, as JSON may.
    if !unclaimed.is_empty() && (at > 0 || !unclaimed.iter().all(u8::is_ascii_whitespace)) {
        return Err(ProtocolError::Malformed(format!(
            "{} bytes after the {} message belong to no body",
            unclaimed.len(),
            message.name()
        )));
    }
    Ok(())
}

/// The next `len` bytes of `rest` from `at`, if there are that many.
fn take<'a>(rest: &'a [u8], at: &mut usize, len: u64) -> Option<&'a [u8]> {
    let end = at.checked_add(usize::try_from(len).ok()?)?;
    let bytes = rest.get(*at..end)?;
    *at = end;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::knowledge::Knowledge;
    use crate::model::{Change, ItemKind, Phase, UnitChange, WireVersion};
    use crate::protocol::ChangeBatch;

    fn batch(bodies: Vec<Option<Body>>) -> Message {
        Message::ChangeBatch(ChangeBatch {
            seq: 1,
            phase: Phase::Contents,
            replicas: vec!["a".into()],
            changes: bodies
                .into_iter()
                .enumerate()
                .map(|(i, body)| Change {
                    id: format!("m{i}"),
                    kind: ItemKind::Message,
                    created: WireVersion(0, 1),
                    units: vec![UnitChange {
                        version: WireVersion(0, 2),
                        at: 5,
                        value: UnitValue::Content {
                            subject: "s".into(),
                            sender: "x".into(),
                            received_at: 1,
                            headers: "H: \"v\"\r\n".into(),
                            body,
                        },
                    }],
                })
                .collect(),
            learned: Knowledge::new(),
            last: false,
            full: None,
            left: vec![],
        })
    }

    fn read(json: &[u8], attached: &[u8]) -> Result<Message, ProtocolError> {
        let mut frame = json.to_vec();
        frame.extend_from_slice(attached);
        super::super::connection::decode(&frame)
    }

    /// Every storage class goes out attached and comes back as the store holds it: TEXT as
    /// text, a BLOB (UTF-8 or not) as bytes; a withheld or missing body attaches nothing.
    #[test]
    fn bodies_travel_beside_the_json_and_read_back_as_stored() {
        let sent = batch(vec![
            Some(Body::Text("héllo \"quoted\"\n".into())),
            Some(Body::Blob(vec![0xff, 0x00, 0x80])),
            Some(Body::Utf8("plain".into())),
            Some(Body::Withheld),
            None,
            Some(Body::Text(String::new())),
        ]);
        let parts = encode(&sent).unwrap();
        let json = String::from_utf8(parts.json.clone()).unwrap();
        assert!(json.contains(r#""body":{"text_bytes":16}"#), "{json}");
        assert!(json.contains(r#""body":{"blob_bytes":3}"#), "{json}");
        assert!(!json.contains("héllo"), "{json}");
        assert_eq!(
            parts.attached,
            b"h\xc3\xa9llo \"quoted\"\n\xff\x00\x80plain"
        );
        let got = read(&parts.json, &parts.attached).unwrap();
        let Message::ChangeBatch(got) = got else {
            panic!("{got:?}")
        };
        let bodies: Vec<_> = got
            .changes
            .iter()
            .map(|c| match &c.units[0].value {
                UnitValue::Content { body, .. } => body.clone(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            bodies,
            vec![
                Some(Body::Text("héllo \"quoted\"\n".into())),
                Some(Body::Blob(vec![0xff, 0x00, 0x80])),
                Some(Body::Blob(b"plain".to_vec())),
                Some(Body::Withheld),
                None,
                Some(Body::Text(String::new())),
            ]
        );
        // Outside a frame the same bodies are written inline.
        let inline = serde_json::to_string(&sent).unwrap();
        assert!(inline.contains(r#""body":{"base64":"/wCA"}"#), "{inline}");
        assert!(inline.contains(r#""body":{"utf8":"plain"}"#), "{inline}");
    }

    #[test]
    fn attachments_that_do_not_add_up_are_refused_by_name() {
        let parts = encode(&batch(vec![
            Some(Body::Text("abc".into())),
            Some(Body::Text("de".into())),
        ]))
        .unwrap();
        assert_eq!(parts.attached, b"abcde");
        for (attached, wanted) in [
            (
                &b"abcd"[..],
                "the body of m1 names 2 attached bytes, but only 1 follow",
            ),
            (
                &b"abcdef"[..],
                "1 bytes after the change_batch message belong to no body",
            ),
            (
                &b"abc\xffe"[..],
                "the TEXT body of m1 is not UTF-8 (at byte 0)",
            ),
        ] {
            let err = read(&parts.json, attached).unwrap_err().to_string();
            assert!(err.contains(wanted), "{err}");
        }
        let huge = String::from_utf8(parts.json).unwrap().replace(
            r#"{"text_bytes":3}"#,
            r#"{"text_bytes":18446744073709551615}"#,
        );
        let err = read(huge.as_bytes(), b"abcde").unwrap_err().to_string();
        assert!(
            err.contains("names 18446744073709551615 attached bytes"),
            "{err}"
        );
    }

    /// Bytes after a message without bodies are refused; whitespace, which JSON allows, is not.
    #[test]
    fn only_whitespace_may_follow_a_message_without_bodies() {
        let hello = br#"{"type":"hello","protocol":2,"role":"agent"}"#;
        assert!(read(hello, b" \n").is_ok());
        let err = read(hello, b"xyz").unwrap_err().to_string();
        assert!(
            err.contains("3 bytes after the hello message belong to no body"),
            "{err}"
        );
    }
}
