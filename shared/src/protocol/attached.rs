//! Values beside the JSON (protocol 2): a frame is the message's JSON object, then the bytes of
//! a `change_batch`'s message bodies and headers. Each such value names its length in place
//! (`{"text_bytes": N}` or, for a BLOB body, `{"blob_bytes": N}`), and the bytes are laid out
//! **from the frame's end backwards**: the first placeholder's N bytes are the frame's last N
//! bytes, the second's the bytes just before those, and so on, each value's own bytes in order.
//!
//! Why: bodies and headers are most of a batch's bytes, and as JSON strings they were escaped
//! byte by byte by the synchronizer (12.7 % of its CPU in an initial sync), unescaped byte by
//! byte into new strings by the collector (headers carry a `\r\n` per line), and a binary BLOB
//! grew by a third as base64. Attached, a value is copied once on each side and its bytes are
//! never looked at, except for the UTF-8 check of text.
//!
//! Why backwards: the reader meets a placeholder while it parses the JSON, before it knows where
//! the JSON ends. Counting from the frame's end, it can hand the value out right there, into
//! the `String` the field is, with no second pass over the batch. When the JSON ends, what was
//! handed out must meet it exactly.
//!
//! serde passes no context down the tree, so both directions use a thread-local: the encoder's
//! sink, set up by [`encode`], collects the values that `Body`'s and the headers' `Serialize`
//! hand it; the reader's source, set up by [`decode`], is the frame the placeholders take from.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Serializer;

use super::frame::MAX_FRAME;
use super::{Message, ProtocolError};
use crate::model::{Body, UnitValue};

thread_local! {
    /// The values of the frame this thread is encoding, while it encodes one.
    static SINK: RefCell<Option<Sink>> = const { RefCell::new(None) };
    /// The frame this thread is decoding, while it decodes one.
    static SOURCE: RefCell<Option<Source>> = const { RefCell::new(None) };
    /// Set while a message whose `type` is not first is read from a buffered copy, whose
    /// fields come in another order than the values were laid out in.
    static BUFFERED: Cell<bool> = const { Cell::new(false) };
    /// The buffers of the last frame this thread sent, kept for the next one it encodes.
    static SPARE: RefCell<Buffers> = const { RefCell::new(Buffers::new()) };
    /// The packed changes of the batch this thread is encoding, while it encodes one that
    /// packs them (`packed.rs`).
    static PACKED: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// The largest buffer kept for reuse (a batch of the default size needs ~2.3 MB): a thread that
/// once sent a huge frame does not hold its memory for ever.
const MAX_SPARE: usize = 16 * 1024 * 1024;

/// The values of a frame being encoded, laid out as the frame carries them: `bytes` is sized
/// beforehand to what the message will attach ([`attached_len`]) and filled from its end
/// backwards, each value just before the one met before it. `bytes[at..]` are filled.
///
/// Why: the values are then one slice, written to the socket straight from here. Appended in
/// the order met, they were ~2,000 slices a batch to write last first, each small enough to be
/// copied into the connection's write buffer on its way: 3.9 % of the synchronizer's CPU in an
/// initial sync (`bench/PROFILE.md`, round eighteen).
struct Sink {
    bytes: Vec<u8>,
    at: usize,
}

/// The frame being decoded, and where the values not yet handed out end.
struct Source {
    frame: Rc<Frame>,
    end: usize,
}

/// A frame being decoded, checked as UTF-8 as a whole first. Most frames are (their JSON must
/// be, and text values are): the parser then reads the JSON as a `str` and checks no string
/// of it again, and an attached text value is handed out after a check of its two ends only.
/// Before, each of a batch's ~30,000 strings was checked on its own, 4 % of the collector's
/// instructions (`bench/PROFILE.md`, step 23). A frame that is not (a BLOB body that is no
/// UTF-8) is read as bytes, each string and text value checked as it is met.
pub(super) enum Frame {
    Text(String),
    Bytes(Vec<u8>),
}

impl Frame {
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Frame::Text(text) => text.as_bytes(),
            Frame::Bytes(bytes) => bytes,
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        match self {
            Frame::Text(text) => text.into_bytes(),
            Frame::Bytes(bytes) => bytes,
        }
    }
}

/// Reads the one message at the start of `de`'s input; also where its JSON ends.
fn read_one<'a, R: serde_json::de::Read<'a>>(
    de: serde_json::Deserializer<R>,
) -> (Option<serde_json::Result<Message>>, usize) {
    let mut stream = de.into_iter::<Message>();
    let parsed = stream.next();
    (parsed, stream.byte_offset())
}

/// A frame's buffers: its JSON and its attached values as the frame lays them out, which
/// start at `values[at..]`.
///
/// A sent frame's buffers are kept for the next frame the thread encodes ([`SPARE`]). A batch's
/// ~2.3 MB taken fresh from the allocator each time were pages the kernel had to map and zero
/// again: 107k page faults in an initial sync of 100k messages, a quarter of the synchronizer's
/// CPU (`bench/PROFILE.md`, round nine).
struct Buffers {
    json: Vec<u8>,
    values: Vec<u8>,
    at: usize,
    /// A change batch's changes, packed (`packed.rs`), before they are attached.
    packed: Vec<u8>,
}

impl Buffers {
    const fn new() -> Buffers {
        Buffers {
            json: Vec::new(),
            values: Vec::new(),
            at: 0,
            packed: Vec::new(),
        }
    }

    /// This thread's spare buffers, the JSON emptied. The values keep the last frame's bytes:
    /// the next frame sizes them to its own and overwrites all it sends, so only growth beyond
    /// the last frame is zeroed first.
    fn spare() -> Buffers {
        let mut buffers =
            SPARE.with(|spare| std::mem::replace(&mut *spare.borrow_mut(), Buffers::new()));
        buffers.json.clear();
        buffers.at = 0;
        buffers
    }
}

/// A message encoded as its frame's body: its JSON, then the values attached to it, the last met
/// first ([`Parts::slices`]), laid out in that order as they were met ([`Sink`]).
pub(super) struct Parts(Buffers);

impl Parts {
    /// The message's JSON.
    #[cfg(test)]
    fn json(&self) -> &[u8] {
        &self.0.json
    }

    /// The frame's body as the slices to write one after another: the JSON, then the attached
    /// values, the last met first.
    pub fn slices(&self) -> [&[u8]; 2] {
        let Buffers {
            json, values, at, ..
        } = &self.0;
        [json, values.get(*at..).unwrap_or_default()]
    }

    /// The attached values as they lie in the frame, after the JSON.
    #[cfg(test)]
    fn attached(&self) -> Vec<u8> {
        self.slices()[1].to_vec()
    }
}

impl Drop for Parts {
    /// Keeps the buffers for this thread's next frame, unless they grew past [`MAX_SPARE`].
    fn drop(&mut self) {
        let buffers = std::mem::replace(&mut self.0, Buffers::new());
        if [&buffers.values, &buffers.json, &buffers.packed]
            .iter()
            .all(|b| b.capacity() <= MAX_SPARE)
        {
            SPARE.with(|spare| *spare.borrow_mut() = buffers);
        }
    }
}

/// Encodes `message`, attaching the bodies and headers it carries; a change batch's changes
/// packed (`packed.rs`).
pub(super) fn encode(message: &Message) -> Result<Parts, serde_json::Error> {
    encode_with(message, true)
}

/// [`encode`], with a change batch's changes packed or, as a batch that cannot be packed is
/// written, as JSON whose bodies and headers are attached.
fn encode_with(message: &Message, pack: bool) -> Result<Parts, serde_json::Error> {
    let Buffers {
        mut json,
        mut values,
        mut packed,
        ..
    } = Buffers::spare();
    let packs = match message {
        Message::ChangeBatch(batch) if pack => super::packed::pack(&batch.changes, &mut packed),
        _ => false,
    };
    let packed_len = if packs { packed.len() } else { 0 };
    values.resize(attached_len(message).saturating_add(packed_len), 0);
    let at = values.len();
    SINK.with(|sink| *sink.borrow_mut() = Some(Sink { bytes: values, at }));
    if packs {
        PACKED.with(|p| *p.borrow_mut() = Some(std::mem::take(&mut packed)));
    }
    // Takes the sink and the packed changes down however encoding ends (a panicking
    // `Serialize` included), so no later inline write finds them set.
    let open = OnDrop(|| {
        drop(SINK.with(|sink| sink.borrow_mut().take()));
        drop(PACKED.with(|p| p.borrow_mut().take()));
    });
    let written = serde_json::to_writer(&mut json, message);
    let sink = SINK.with(|sink| sink.borrow_mut().take());
    if let Some(used) = PACKED.with(|p| p.borrow_mut().take()) {
        packed = used;
    }
    drop(open);
    let Sink { bytes, at } = sink.unwrap_or(Sink {
        bytes: Vec::new(),
        at: 0,
    });
    let parts = Parts(Buffers {
        json,
        values: bytes,
        at,
        packed,
    });
    written?;
    Ok(parts)
}

/// How many bytes `message`'s attachments take: its headers, and its bodies that `Body`'s
/// `Serialize` attaches (TEXT, BLOB and UTF-8 BLOB; not base64, withheld nor placeholders).
/// Capped at [`MAX_FRAME`]: a frame that needs more is refused when written anyway.
fn attached_len(message: &Message) -> usize {
    let Message::ChangeBatch(batch) = message else {
        return 0;
    };
    values_of(&batch.changes)
        .map(<[u8]>::len)
        .fold(0usize, usize::saturating_add)
        .min(MAX_FRAME as usize)
}

/// The values `changes` attach, in the order a reader meets them: each content unit's headers,
/// then its body's bytes when the body has any to attach (TEXT, BLOB and UTF-8 BLOB). The one
/// list [`attached_len`] counts and packed changes lay out.
fn values_of(changes: &[crate::model::Change]) -> impl Iterator<Item = &[u8]> {
    changes
        .iter()
        .flat_map(|c| &c.units)
        .flat_map(|u| match &u.value {
            UnitValue::Content { headers, body, .. } => {
                let body: Option<&[u8]> = match body {
                    Some(Body::Text(text) | Body::Utf8(text)) => Some(text.as_bytes()),
                    Some(Body::Blob(bytes)) => Some(bytes),
                    _ => None,
                };
                [Some(headers.as_bytes()), body]
            }
            _ => [None, None],
        })
        .flatten()
}

/// Lays `bytes` out just before the values of the frame being encoded on this thread; `false`,
/// and nothing done, when no frame is being encoded or the value does not fit what
/// [`attached_len`] counted (the value is then written inline, which the reader takes as well).
pub(crate) fn attach(bytes: &[u8]) -> bool {
    SINK.with(|sink| match sink.borrow_mut().as_mut() {
        Some(sink) => {
            let Some(start) = sink.at.checked_sub(bytes.len()) else {
                return false;
            };
            let Some(place) = sink.bytes.get_mut(start..sink.at) else {
                return false;
            };
            place.copy_from_slice(bytes);
            sink.at = start;
            true
        }
        None => false,
    })
}

/// Attaches the packed changes of the batch being encoded on this thread, if it packs them:
/// the packed bytes, then each message's headers and body in the order the reader meets them.
/// Their length, for the placeholder; `None` when the batch is not packed (its changes are then
/// written as JSON, their values attached as met).
pub(super) fn packed_changes(changes: &[crate::model::Change]) -> Result<Option<usize>, String> {
    PACKED.with(|packed| {
        let packed = packed.borrow();
        let Some(bytes) = packed.as_ref() else {
            return Ok(None);
        };
        if !attach(bytes) {
            return Ok(None);
        }
        if !values_of(changes).all(attach) {
            return Err("the packed changes' values do not fit the frame".into());
        }
        Ok(Some(bytes.len()))
    })
}

/// `Serialize` for a text value that may travel attached (`headers`): `{"text_bytes": N}` inside
/// a frame being encoded, the string itself elsewhere.
pub(crate) fn text_value<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    if attach(text.as_bytes()) {
        s.serialize_newtype_variant("Body", 5, "text_bytes", &(text.len() as u64))
    } else {
        s.serialize_str(text)
    }
}

/// Reads one frame's body, `frame`, which it gives back afterwards for the next frame: the
/// message's JSON, whose placeholders take their values from the frame's end as the parser
/// meets them. Refused as malformed: a placeholder that asks for more bytes than are left, a
/// text value that is not UTF-8, bytes between the JSON's end and the values that no
/// placeholder claims, and a placeholder that reaches into the JSON.
pub(super) fn decode(frame: &mut Vec<u8>) -> Result<Message, ProtocolError> {
    let shared = Rc::new(match String::from_utf8(std::mem::take(frame)) {
        Ok(text) => Frame::Text(text),
        Err(e) => Frame::Bytes(e.into_bytes()),
    });
    SOURCE.with(|source| {
        *source.borrow_mut() = Some(Source {
            frame: Rc::clone(&shared),
            end: shared.bytes().len(),
        })
    });
    // Takes the source down however decoding ends.
    let open = OnDrop(|| drop(SOURCE.with(|source| source.borrow_mut().take())));
    let (parsed, json_end) = match &*shared {
        Frame::Text(text) => read_one(serde_json::Deserializer::from_str(text)),
        Frame::Bytes(bytes) => read_one(serde_json::Deserializer::from_slice(bytes)),
    };
    let values_start = SOURCE.with(|source| source.borrow().as_ref().map(|s| s.end));
    drop(open);
    let result = match parsed {
        Some(Ok(message)) => check_end(shared.bytes(), json_end, values_start).map(|()| message),
        Some(Err(e)) => Err(ProtocolError::Malformed(format!(
            "not a valid message: {e}"
        ))),
        None => Err(ProtocolError::Malformed("an empty frame".into())),
    };
    *frame = Rc::try_unwrap(shared)
        .map(Frame::into_bytes)
        .unwrap_or_default();
    result
}

/// Whether the values handed out meet the JSON's end exactly.
fn check_end(
    frame: &[u8],
    json_end: usize,
    values_start: Option<usize>,
) -> Result<(), ProtocolError> {
    let values_start = values_start.unwrap_or(frame.len());
    if values_start < json_end {
        return Err(ProtocolError::Malformed(format!(
            "the attached values reach {} bytes into the message's JSON",
            json_end - values_start
        )));
    }
    let between = frame.get(json_end..values_start).unwrap_or_default();
    // A frame with nothing attached may end in whitespace, as JSON may.
    if !between.is_empty()
        && (values_start < frame.len() || !between.iter().all(u8::is_ascii_whitespace))
    {
        return Err(ProtocolError::Malformed(format!(
            "{} bytes after the message's JSON belong to no attached value",
            between.len()
        )));
    }
    Ok(())
}

/// The next attached value, `len` bytes of the frame being decoded, counting from its end.
fn take(len: u64, what: &str) -> Result<Vec<u8>, String> {
    take_with(len, what, |frame, range| Ok(frame.bytes()[range].to_vec()))
}

/// Runs `read` on a buffered copy of a message, where no attached value may be taken: the copy's
/// fields are sorted by name, not in the order the values were laid out.
pub(super) fn buffered<T>(read: impl FnOnce() -> T) -> T {
    BUFFERED.set(true);
    let _reset = OnDrop(|| BUFFERED.set(false));
    read()
}

/// Runs its closure when dropped: each thread-local above is reset however its user ends.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// An attached text value, as a `String`.
fn take_text(len: u64, what: &str) -> Result<String, String> {
    take_with(len, what, |frame, range| {
        // In a frame checked whole, a value is UTF-8 if it starts and ends between characters.
        if let Frame::Text(text) = &**frame {
            if let Some(value) = text.get(range.clone()) {
                return Ok(value.to_owned());
            }
        }
        String::from_utf8(frame.bytes()[range].to_vec()).map_err(|e| {
            format!(
                "{what} is not UTF-8 (at byte {})",
                e.utf8_error().valid_up_to()
            )
        })
    })
}

/// Hands the next attached value, `len` bytes counting from the frame's end, to `read` as the
/// frame and the value's range in it.
fn take_with<T>(
    len: u64,
    what: &str,
    read: impl FnOnce(&Rc<Frame>, std::ops::Range<usize>) -> Result<T, String>,
) -> Result<T, String> {
    SOURCE.with(|source| {
        let mut source = source.borrow_mut();
        let Some(source) = source.as_mut() else {
            return Err(format!("{what} names attached bytes outside a frame"));
        };
        if BUFFERED.get() {
            return Err(format!(
                "{what} names attached bytes in a message whose `type` is not its first field"
            ));
        }
        let start = usize::try_from(len)
            .ok()
            .and_then(|len| source.end.checked_sub(len))
            .ok_or_else(|| {
                format!(
                    "{what} names {len} attached bytes, more than the {} bytes of the frame \
                     before the values already handed out",
                    source.end
                )
            })?;
        let value = read(&source.frame, start..source.end)?;
        source.end = start;
        Ok(value)
    })
}

/// The packed changes, `len` bytes counting from the frame's end, read with the headers and
/// bodies they name, which follow them in the frame's order (`packed.rs`).
pub(super) fn take_packed(len: u64) -> Result<Vec<crate::model::Change>, String> {
    let (frame, range) = take_with(len, "the packed changes", |frame, range| {
        Ok((Rc::clone(frame), range))
    })?;
    super::packed::unpack(&frame, range, take_text, take)
}

/// A body as read off the wire with its placeholder, if it has one, replaced by its value.
pub(crate) fn resolve_body(body: Body) -> Result<Body, String> {
    Ok(match body {
        Body::TextBytes(len) => Body::Text(take_text(len, "an attached TEXT body")?),
        Body::BlobBytes(len) => Body::Blob(take(len, "an attached BLOB body")?),
        other => other,
    })
}

/// A text field that may travel attached (`headers`): a JSON string, or `{"text_bytes": N}`
/// whose value is taken from the frame being decoded.
pub(crate) struct TextValue(pub String);

impl<'de> serde::Deserialize<'de> for TextValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TextValue, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = TextValue;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"a string or {"text_bytes": N}"#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<TextValue, E> {
                Ok(TextValue(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<TextValue, E> {
                Ok(TextValue(v))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextValue, A::Error> {
                /// The placeholder's one key, read without allocating it.
                #[derive(serde::Deserialize)]
                #[serde(field_identifier, rename_all = "snake_case")]
                enum Key {
                    TextBytes,
                }
                let len = match map.next_key::<Key>()? {
                    Some(Key::TextBytes) => map.next_value::<u64>()?,
                    None => return Err(de::Error::missing_field("text_bytes")),
                };
                if map.next_key::<Key>()?.is_some() {
                    return Err(de::Error::duplicate_field("text_bytes"));
                }
                take_text(len, "the attached headers")
                    .map(TextValue)
                    .map_err(de::Error::custom)
            }
        }
        d.deserialize_any(TextVisitor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::knowledge::Knowledge;
    use crate::model::{Change, ItemKind, Phase, UnitChange, WireVersion};
    use crate::protocol::ChangeBatch;

    fn batch(headers: &str, bodies: Vec<Option<Body>>) -> Message {
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
                            headers: headers.into(),
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

    /// A frame as a batch that cannot be packed is written: its changes as JSON, their headers
    /// and bodies attached as met.
    fn encode_json(message: &Message) -> Result<Parts, serde_json::Error> {
        encode_with(message, false)
    }

    fn read(json: &[u8], attached: &[u8]) -> Result<Message, ProtocolError> {
        let mut frame = json.to_vec();
        frame.extend_from_slice(attached);
        let (len, result) = (frame.len(), decode(&mut frame));
        assert_eq!(frame.len(), len, "the frame's buffer comes back");
        result
    }

    fn contents(message: &Message) -> Vec<(String, Option<Body>)> {
        let Message::ChangeBatch(batch) = message else {
            panic!("{message:?}")
        };
        batch
            .changes
            .iter()
            .map(|c| match &c.units[0].value {
                UnitValue::Content { headers, body, .. } => (headers.clone(), body.clone()),
                _ => unreachable!(),
            })
            .collect()
    }

    /// Every storage class goes out attached and comes back as the store holds it: TEXT as
    /// text, a BLOB (UTF-8 or not) as bytes; headers as text; a withheld or missing body attaches
    /// nothing. The values lie from the frame's end backwards.
    #[test]
    fn bodies_and_headers_travel_beside_the_json_and_read_back_as_stored() {
        let headers = "Subject: \"hi\"\r\nX: y\r\n";
        let sent = batch(
            headers,
            vec![
                Some(Body::Text("héllo \"quoted\"\n".into())),
                Some(Body::Blob(vec![0xff, 0x00, 0x80])),
                Some(Body::Utf8("plain".into())),
                Some(Body::Withheld),
                None,
                Some(Body::Text(String::new())),
            ],
        );
        let parts = encode_json(&sent).unwrap();
        let json = String::from_utf8(parts.json().to_vec()).unwrap();
        assert!(json.contains(r#""headers":{"text_bytes":21}"#), "{json}");
        assert!(json.contains(r#""body":{"text_bytes":16}"#), "{json}");
        assert!(json.contains(r#""body":{"blob_bytes":3}"#), "{json}");
        assert!(
            !json.contains("héllo") && !json.contains("Subject"),
            "{json}"
        );
        let h = headers.as_bytes();
        // Met in this order: headers and body of each message (none for a withheld or missing
        // body); laid out last first.
        let met: [&[u8]; 10] = [
            h,
            "héllo \"quoted\"\n".as_bytes(),
            h,
            b"\xff\x00\x80",
            h,
            b"plain",
            h,
            h,
            h,
            b"",
        ];
        let expected: Vec<u8> = met.into_iter().rev().flatten().copied().collect();
        assert_eq!(parts.attached(), expected);
        assert_eq!(
            parts.0.at, 0,
            "what was counted is exactly what was attached"
        );
        let got = read(parts.json(), &parts.attached()).unwrap();
        let want = |body| (headers.to_string(), body);
        assert_eq!(
            contents(&got),
            vec![
                want(Some(Body::Text("héllo \"quoted\"\n".into()))),
                want(Some(Body::Blob(vec![0xff, 0x00, 0x80]))),
                want(Some(Body::Blob(b"plain".to_vec()))),
                want(Some(Body::Withheld)),
                want(None),
                want(Some(Body::Text(String::new()))),
            ]
        );
        // Outside a frame the same values are written inline.
        let inline = serde_json::to_string(&sent).unwrap();
        assert!(inline.contains(r#""body":{"base64":"/wCA"}"#), "{inline}");
        assert!(inline.contains(r#""body":{"utf8":"plain"}"#), "{inline}");
        assert!(
            inline.contains(r#""headers":"Subject: \"hi\"\r\nX: y\r\n""#),
            "{inline}"
        );
        // And read back inline, inside a frame or not.
        let inline_read = read(inline.as_bytes(), b"").unwrap();
        assert_eq!(
            contents(&inline_read)[0],
            want(Some(Body::Text("héllo \"quoted\"\n".into())))
        );
        let err = serde_json::from_str::<Message>(&json)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("names attached bytes outside a frame"),
            "{err}"
        );
    }

    /// Values are laid out from the end backwards, each just before the one met before it; one
    /// that does not fit what was counted is refused (and so written inline), and the next that
    /// fits still takes its place.
    #[test]
    fn values_are_laid_out_backwards_and_one_that_does_not_fit_stays_inline() {
        SINK.with(|sink| {
            *sink.borrow_mut() = Some(Sink {
                bytes: b"......".to_vec(),
                at: 6,
            })
        });
        assert!(attach(b"abc"));
        assert!(!attach(b"defg"), "4 bytes do not fit the 3 left");
        assert!(attach(b"hi"));
        assert!(attach(b""));
        let sink = SINK.with(|sink| sink.borrow_mut().take()).unwrap();
        assert_eq!((&sink.bytes[..], sink.at), (&b".hiabc"[..], 1));
        assert!(!attach(b"x"), "no frame is being encoded");
    }

    /// A sent frame's buffers serve the next frame: the next one's bytes are its own (nothing of
    /// the bigger frame before it is left in them), and a frame too big to keep is let go.
    #[test]
    fn a_frames_buffers_are_reused_by_the_next_and_hold_only_its_bytes() {
        let big = encode_json(&batch(
            "H: big\r\n",
            vec![Some(Body::Text("x".repeat(5000)))],
        ))
        .unwrap();
        let big_capacity = big.0.values.capacity();
        drop(big);
        let small_batch = batch("H: s\r\n", vec![Some(Body::Text("ab".into()))]);
        let small = encode_json(&small_batch).unwrap();
        assert!(
            small.0.values.capacity() >= big_capacity,
            "the spare buffer is taken"
        );
        assert_eq!(small.attached(), b"abH: s\r\n");
        let got = read(small.json(), &small.attached()).unwrap();
        assert_eq!(contents(&got), contents(&small_batch));
        drop(small);

        let mut huge = encode_json(&small_batch).unwrap();
        huge.0.values.reserve(MAX_SPARE + 1);
        drop(huge);
        let next = encode_json(&small_batch).unwrap();
        assert!(
            next.0.values.capacity() < MAX_SPARE,
            "a huge buffer is not kept"
        );
    }

    #[test]
    fn attachments_that_do_not_add_up_are_refused_by_name() {
        let parts = encode_json(&batch(
            "",
            vec![
                Some(Body::Text("abc".into())),
                Some(Body::Text("de".into())),
            ],
        ))
        .unwrap();
        assert_eq!(parts.attached(), b"deabc");
        for (attached, wanted) in [
            (
                &b"eabc"[..],
                "the attached values reach 1 bytes into the message's JSON",
            ),
            (
                &b"xdeabc"[..],
                "1 bytes after the message's JSON belong to no attached value",
            ),
            (
                &b"d\xffabc"[..],
                "an attached TEXT body is not UTF-8 (at byte 1)",
            ),
            // A frame that is UTF-8 as a whole, whose value starts inside a character.
            (
                &b"d\xc3\xa9bc"[..],
                "an attached TEXT body is not UTF-8 (at byte 0)",
            ),
        ] {
            let err = read(parts.json(), attached).unwrap_err().to_string();
            assert!(err.contains(wanted), "{err}");
        }
        let huge = String::from_utf8(parts.json().to_vec()).unwrap().replace(
            r#"{"text_bytes":3}"#,
            r#"{"text_bytes":18446744073709551615}"#,
        );
        let err = read(huge.as_bytes(), b"deabc").unwrap_err().to_string();
        assert!(
            err.contains("an attached TEXT body names 18446744073709551615 attached bytes"),
            "{err}"
        );
        // A string of the JSON that is no UTF-8, in a frame whose values are.
        let json = String::from_utf8(parts.json().to_vec()).unwrap();
        let mut bad = json.replacen(r#""m1""#, "\"m\u{1}\"", 1).into_bytes();
        let at = bad.iter().position(|&b| b == 1).unwrap();
        bad[at] = 0xff;
        let err = read(&bad, b"deabc").unwrap_err().to_string();
        assert!(
            err.contains("not a valid message") && err.contains("unicode"),
            "{err}"
        );
        let wrong = r#"{"type":"change_batch","seq":1,"phase":"contents","replicas":["a"],"changes":[{"id":"m","kind":"message","created":[0,1],"units":[{"version":[0,2],"at":5,"unit":"content","subject":"s","sender":"x","received_at":1,"headers":{"blob_bytes":1},"body":null}]}],"learned":[],"last":false}"#;
        let err = read(wrong.as_bytes(), b"x").unwrap_err().to_string();
        assert!(err.contains("unknown field `blob_bytes`"), "{err}");
    }

    /// A message read through the buffered path (`type` not first) has its fields sorted by
    /// name, so `body` would take the bytes laid out for `headers`: attached values are refused
    /// there.
    #[test]
    fn attached_values_need_type_first() {
        let parts = encode_json(&batch("H: v\r\n", vec![Some(Body::Text("abc".into()))])).unwrap();
        let json = String::from_utf8(parts.json().to_vec()).unwrap();
        let moved = json
            .replacen(r#"{"type":"change_batch","#, "{", 1)
            .replacen(
                r#""last":false}"#,
                r#""last":false,"type":"change_batch"}"#,
                1,
            );
        assert_ne!(moved, json);
        let err = read(moved.as_bytes(), &parts.attached())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("in a message whose `type` is not its first field"),
            "{err}"
        );
        assert!(read(json.as_bytes(), &parts.attached()).is_ok());
    }

    /// Bytes after a message without attached values are refused; whitespace, which JSON
    /// allows, is not.
    #[test]
    fn only_whitespace_may_follow_a_message_without_attached_values() {
        let hello = br#"{"type":"hello","protocol":3,"role":"agent"}"#;
        assert!(read(hello, b" \n").is_ok());
        let err = read(hello, b"xyz").unwrap_err().to_string();
        assert!(
            err.contains("3 bytes after the message's JSON belong to no attached value"),
            "{err}"
        );
        let err = read(b"", b"").unwrap_err().to_string();
        assert!(err.contains("an empty frame"), "{err}");
    }
}
