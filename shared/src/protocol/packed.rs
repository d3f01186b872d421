//! A change batch's changes, packed (protocol 3). Inside a frame, `changes` is the placeholder
//! `{"packed_bytes": N}`: the changes are N bytes of the compact form below, the frame's first
//! attached value (its last N bytes, `attached.rs`). Each message's headers and body stay
//! attached values of their own, met in the packed changes' order, so they lie just before the
//! packed bytes, from the end backwards, as every attached value does.
//!
//! Why: read as JSON, a message's change (its id, three units with their versions and times,
//! subject, sender, folder, two placeholders; ~30 keys and strings, ~14 numbers) took ~15,900
//! instructions to decode, a quarter of the collector's instructions in an initial sync, all of
//! it on the import's path before the batch's first change (`bench/PROFILE.md`, round twenty).
//! Packed, each field is where the form says, with its length in front: no key to match, no
//! string to scan for its end, no number to parse digit by digit.
//!
//! The form (`u8` one byte, below 0x80; `uint` an unsigned number in groups of six bits, the
//! lowest first, one byte each, 0x40 set on every byte but the last, at most eleven bytes and no
//! value past `u64::MAX`; `int` a zigzag `uint`, as protobuf's `sint64`; `str` a `uint` length
//! and that many bytes of UTF-8). Every byte but a string's is ASCII, so the packed changes keep
//! a frame valid UTF-8, and the reader checks a frame whole once (`attached.rs`), not each
//! string on its own; protobuf's varints, seven bits a byte, would make every frame invalid.
//!
//! ```text
//! changes  = count:uint change{count}
//! change   = id:str kind:u8 created:version units:uint unit{units}    kind: 0 folder, 1 message
//! version  = replica:uint tick:uint                                    replica: an index into `replicas`
//! unit     = code:u8 version at:int value                              code: the store's unit codes
//! value    = name:str                                    (1 name)
//!          | 0 | 1 parent_id:str                         (2 parent: null, or the parent's id)
//!          | subject:str sender:str received_at:int
//!            headers:uint body                           (3 content; headers: attached, its length)
//!          | 0 | 1                                       (4 read: is_read)
//!          | folder_id:str                               (5 location)
//!          |                                             (8 message tombstone, 9 folder tombstone)
//! body     = 0 (NULL) | 1 (withheld) | 2 len:uint (TEXT, attached) | 3 len:uint (BLOB, attached)
//! ```
//!
//! A batch whose bodies are not all in a form the store gives (an inline base64 body, say, which
//! only a hand-written batch has) is sent as a JSON array, which the reader takes as well.

use std::ops::Range;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::attached::{self, Frame};
use crate::model::{Body, Change, ItemKind, Unit, UnitChange, UnitValue, WireVersion};

/// The placeholder's one key.
const KEY: &str = "packed_bytes";

/// The fewest bytes a change takes (a one-byte id, no units): how many changes a count may
/// claim is capped by the bytes left, so a bad count allocates nothing large.
const MIN_CHANGE: usize = 6;

/// Packs `changes` into `out` (cleared first); `false`, with `out` left unusable, when a body is
/// in a form that is not packed (inline base64, or a placeholder not yet read).
pub(super) fn pack(changes: &[Change], out: &mut Vec<u8>) -> bool {
    out.clear();
    uint(out, changes.len() as u64);
    for change in changes {
        str_(out, &change.id);
        out.push(change.kind.code() as u8);
        version(out, &change.created);
        uint(out, change.units.len() as u64);
        for unit in &change.units {
            out.push(unit.value.unit().code() as u8);
            version(out, &unit.version);
            int(out, unit.at);
            if !value(out, &unit.value) {
                return false;
            }
        }
    }
    true
}

fn value(out: &mut Vec<u8>, value: &UnitValue) -> bool {
    match value {
        UnitValue::Name { name } => str_(out, name),
        UnitValue::Parent { parent_id: None } => out.push(0),
        UnitValue::Parent {
            parent_id: Some(id),
        } => {
            out.push(1);
            str_(out, id);
        }
        UnitValue::Content {
            subject,
            sender,
            received_at,
            headers,
            body,
        } => {
            str_(out, subject);
            str_(out, sender);
            int(out, *received_at);
            uint(out, headers.len() as u64);
            match body {
                None => out.push(0),
                Some(Body::Withheld) => out.push(1),
                Some(Body::TooLarge(size)) => {
                    out.push(4);
                    uint(out, *size);
                }
                Some(Body::Text(text)) => {
                    out.push(2);
                    uint(out, text.len() as u64);
                }
                Some(Body::Utf8(text)) => {
                    out.push(3);
                    uint(out, text.len() as u64);
                }
                Some(Body::Blob(bytes)) => {
                    out.push(3);
                    uint(out, bytes.len() as u64);
                }
                Some(Body::Base64(_) | Body::TextBytes(_) | Body::BlobBytes(_)) => return false,
            }
        }
        UnitValue::Read { is_read } => out.push(u8::from(*is_read)),
        UnitValue::Location { folder_id } => str_(out, folder_id),
        UnitValue::MessageTombstone | UnitValue::FolderTombstone => {}
    }
    true
}

fn uint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x40 {
        out.push((v as u8 & 0x3f) | 0x40);
        v >>= 6;
    }
    out.push(v as u8);
}

fn int(out: &mut Vec<u8>, v: i64) {
    uint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn str_(out: &mut Vec<u8>, s: &str) {
    uint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn version(out: &mut Vec<u8>, v: &WireVersion) {
    uint(out, u64::from(v.0));
    uint(out, v.1);
}

/// `Serialize` for `ChangeBatch::changes`: the placeholder when the frame being encoded packs
/// them ([`attached::packed_changes`] attaches them), the JSON array elsewhere.
pub(super) fn serialize_changes<S: Serializer>(
    changes: &[Change],
    s: S,
) -> Result<S::Ok, S::Error> {
    match attached::packed_changes(changes).map_err(serde::ser::Error::custom)? {
        Some(len) => {
            let mut map = s.serialize_map(Some(1))?;
            map.serialize_entry(KEY, &len)?;
            map.end()
        }
        None => changes.serialize(s),
    }
}

/// `Deserialize` for `ChangeBatch::changes`: a JSON array of changes, or the placeholder whose
/// packed bytes are taken from the frame being decoded.
pub(super) fn deserialize_changes<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<Change>, D::Error> {
    struct ChangesVisitor;
    impl<'de> Visitor<'de> for ChangesVisitor {
        type Value = Vec<Change>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(r#"a list of changes or {"packed_bytes": N}"#)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Change>, A::Error> {
            let mut changes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(change) = seq.next_element()? {
                changes.push(change);
            }
            Ok(changes)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Change>, A::Error> {
            #[derive(serde::Deserialize)]
            #[serde(field_identifier, rename_all = "snake_case")]
            enum Key {
                PackedBytes,
            }
            let len = match map.next_key::<Key>()? {
                Some(Key::PackedBytes) => map.next_value::<u64>()?,
                None => return Err(de::Error::missing_field(KEY)),
            };
            if map.next_key::<Key>()?.is_some() {
                return Err(de::Error::duplicate_field(KEY));
            }
            attached::take_packed(len).map_err(de::Error::custom)
        }
    }
    d.deserialize_any(ChangesVisitor)
}

/// Reads the packed changes at `range` of `frame`, taking each content unit's headers and body
/// from the frame's attached values as it meets them (`take_text`, `take_blob`).
pub(super) fn unpack(
    frame: &Frame,
    range: Range<usize>,
    mut take_text: impl FnMut(u64, &str) -> Result<String, String>,
    mut take_blob: impl FnMut(u64, &str) -> Result<Vec<u8>, String>,
) -> Result<Vec<Change>, String> {
    let bytes = frame.bytes().get(range.clone()).unwrap_or_default();
    let mut r = Reader {
        bytes,
        // In a frame checked whole, the packed strings need no check of their own.
        text: match frame {
            Frame::Text(text) => text.get(range),
            Frame::Bytes(_) => None,
        },
        at: 0,
    };
    let count = r.uint("the count of changes")?;
    let cap = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(bytes.len() / MIN_CHANGE);
    let mut changes = Vec::with_capacity(cap);
    for i in 0..count {
        let change = r
            .change(&mut take_text, &mut take_blob)
            .map_err(|e| format!("the packed changes, change {}: {e}", i + 1))?;
        changes.push(change);
    }
    if r.at != bytes.len() {
        return Err(format!(
            "the packed changes: {} bytes after the last of {count} changes",
            bytes.len() - r.at
        ));
    }
    Ok(changes)
}

#[cold]
fn refuse<T>(at: usize, what: &str) -> Result<T, String> {
    Err(format!("{what} (at byte {at} of the packed changes)"))
}

/// A cursor over the packed bytes; `text` is the same bytes as a `str` when they are known to be
/// UTF-8 (the frame was, as a whole).
struct Reader<'f> {
    bytes: &'f [u8],
    text: Option<&'f str>,
    at: usize,
}

impl Reader<'_> {
    /// Refuses the packed changes with `what`, at the next byte to read.
    fn fail<T>(&self, what: &str) -> Result<T, String> {
        refuse(self.at, what)
    }

    /// Refuses the packed changes with `what`, at the byte just read.
    fn fail_last<T>(&self, what: &str) -> Result<T, String> {
        refuse(self.at.saturating_sub(1), what)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        match self.bytes.get(self.at) {
            Some(&b) => {
                self.at += 1;
                Ok(b)
            }
            None => self.fail(&format!("{what}: the packed changes end early")),
        }
    }

    #[inline]
    fn uint(&mut self, what: &str) -> Result<u64, String> {
        let mut v: u64 = 0;
        let mut shift = 0;
        while let Some(&b) = self.bytes.get(self.at) {
            self.at += 1;
            if b < 0x40 {
                let bits = u64::from(b);
                if shift == 60 && bits > 0xf {
                    return self.fail_last(&format!("{what}: a number past 2^64"));
                }
                return Ok(v | bits << shift);
            }
            if b >= 0x80 || shift == 60 {
                return self.fail_last(&format!("{what}: byte {b:#04x} where a number goes on"));
            }
            v |= u64::from(b & 0x3f) << shift;
            shift += 6;
        }
        self.fail(&format!("{what}: the packed changes end early"))
    }

    fn int(&mut self, what: &str) -> Result<i64, String> {
        let z = self.uint(what)?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn bool(&mut self, what: &str) -> Result<bool, String> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => self.fail_last(&format!("{what}: {other} where 0 or 1 belongs")),
        }
    }

    fn str(&mut self, what: &str) -> Result<String, String> {
        let len = self.uint(what)?;
        let Some(stop) = usize::try_from(len)
            .ok()
            .and_then(|len| self.at.checked_add(len))
            .filter(|&stop| stop <= self.bytes.len())
        else {
            return self.fail(&format!("{what}: {len} bytes, more than are left"));
        };
        let range = self.at..stop;
        // A string of a text checked whole is UTF-8 if it starts and ends between characters.
        let text = match self.text {
            Some(text) => text.get(range),
            None => std::str::from_utf8(&self.bytes[range]).ok(),
        };
        match text {
            Some(text) => {
                self.at = stop;
                Ok(text.to_owned())
            }
            None => self.fail(&format!("{what} is not UTF-8")),
        }
    }

    fn version(&mut self, what: &str) -> Result<WireVersion, String> {
        let replica = self.uint(what)?;
        let Ok(replica) = u32::try_from(replica) else {
            return self.fail(&format!("{what}: replica index {replica} is too large"));
        };
        Ok(WireVersion(replica, self.uint(what)?))
    }

    fn change(
        &mut self,
        take_text: &mut impl FnMut(u64, &str) -> Result<String, String>,
        take_blob: &mut impl FnMut(u64, &str) -> Result<Vec<u8>, String>,
    ) -> Result<Change, String> {
        let id = self.str("the id")?;
        let kind = self.u8("the kind")?;
        let Some(kind) = ItemKind::from_code(i64::from(kind)) else {
            return self.fail_last(&format!(
                "{id}: kind code {kind} is neither folder nor message"
            ));
        };
        let created = self.version("the creation version")?;
        let n = self.uint("the count of units")?;
        let mut units = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(Unit::ALL.len()));
        for _ in 0..n {
            let code = self.u8("a unit's code")?;
            let Some(unit) = Unit::from_code(i64::from(code)) else {
                return self.fail_last(&format!("{id}: unit code {code} names no unit"));
            };
            let version = self.version("a unit's version")?;
            let at = self.int("a unit's time")?;
            let value = match unit {
                Unit::Name => UnitValue::Name {
                    name: self.str("the name")?,
                },
                Unit::Parent => UnitValue::Parent {
                    parent_id: match self.bool("whether there is a parent")? {
                        true => Some(self.str("the parent_id")?),
                        false => None,
                    },
                },
                Unit::Content => {
                    let subject = self.str("the subject")?;
                    let sender = self.str("the sender")?;
                    let received_at = self.int("received_at")?;
                    // Headers, then the body: the order they were attached in.
                    let headers_len = self.uint("the headers' length")?;
                    let headers = take_text(headers_len, "the attached headers")?;
                    let body = match self.u8("the body's form")? {
                        0 => None,
                        1 => Some(Body::Withheld),
                        2 => {
                            let len = self.uint("the body's length")?;
                            Some(Body::Text(take_text(len, "an attached TEXT body")?))
                        }
                        3 => {
                            let len = self.uint("the body's length")?;
                            Some(Body::Blob(take_blob(len, "an attached BLOB body")?))
                        }
                        4 => Some(Body::TooLarge(self.uint("the unsent body's size")?)),
                        other => {
                            return self
                                .fail_last(&format!("{id}: body form {other} is none of 0-4"))
                        }
                    };
                    UnitValue::Content {
                        subject,
                        sender,
                        received_at,
                        headers,
                        body,
                    }
                }
                Unit::Read => UnitValue::Read {
                    is_read: self.bool("is_read")?,
                },
                Unit::Location => UnitValue::Location {
                    folder_id: self.str("the folder_id")?,
                },
                Unit::MessageTombstone => UnitValue::MessageTombstone,
                Unit::FolderTombstone => UnitValue::FolderTombstone,
            };
            units.push(UnitChange { version, at, value });
        }
        Ok(Change {
            id,
            kind,
            created,
            units,
        })
    }
}

#[cfg(test)]
#[path = "packed_tests.rs"]
mod tests;
