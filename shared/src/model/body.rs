//! A message body as it travels and as SQLite stores it. A body keeps its storage class (TEXT or
//! BLOB) end to end, so it arrives exactly as it was stored.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// A message body, keeping SQLite's storage class so a body arrives exactly as it was stored.
///
/// In a frame (protocol 2, `protocol/attached.rs`) a TEXT body travels as `{"text_bytes": N}` and
/// a BLOB as `{"blob_bytes": N}`, their N bytes after the frame's JSON: no escaping on the way
/// out, no unescaping on the way in, no base64. Outside a frame (and still accepted inside
/// one) the inline forms are `{"text": "..."}` for TEXT, `{"utf8": "..."}` for a BLOB whose bytes
/// are UTF-8 and `{"base64": "..."}` for any other BLOB. `"withheld"` is a body the source kept
/// back (header-only sync, seed 002's header download): the destination holds the message
/// without it. `{"too_large": N}` is a body of N bytes too large to travel in a batch
/// (`store::MAX_SENT_BODY`): the collector refuses the item as an item error.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    Text(String),
    Utf8(String),
    Base64(String),
    Withheld,
    /// A BLOB's bytes, as read from a store or from a frame's attachments. Written inline as
    /// `utf8` or `base64`, so it has no inline form of its own.
    #[serde(skip_deserializing)]
    Blob(Vec<u8>),
    /// A TEXT body of this many bytes, attached after the frame's JSON; replaced by
    /// [`Body::Text`] as the frame is read (`unit_de`).
    TextBytes(u64),
    /// A BLOB body of this many bytes, attached after the frame's JSON; replaced by
    /// [`Body::Blob`] as the frame is read (`unit_de`).
    BlobBytes(u64),
    /// A body of this many bytes that the source did not send: more than a batch's frame
    /// carries. Never stored; the item is refused and comes again next session.
    TooLarge(u64),
}

impl Serialize for Body {
    /// Inside a frame being encoded, the body's bytes go to the frame's attachments and a
    /// placeholder with their length takes its place; elsewhere the inline form.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use crate::protocol::attached::attach;
        let len = |bytes: &[u8]| bytes.len() as u64;
        match self {
            Body::Text(text) if attach(text.as_bytes()) => {
                s.serialize_newtype_variant("Body", 5, "text_bytes", &len(text.as_bytes()))
            }
            Body::Utf8(text) if attach(text.as_bytes()) => {
                s.serialize_newtype_variant("Body", 6, "blob_bytes", &len(text.as_bytes()))
            }
            Body::Blob(bytes) if attach(bytes) => {
                s.serialize_newtype_variant("Body", 6, "blob_bytes", &len(bytes))
            }
            Body::Text(text) => s.serialize_newtype_variant("Body", 0, "text", text),
            Body::Utf8(text) => s.serialize_newtype_variant("Body", 1, "utf8", text),
            Body::Base64(b64) => s.serialize_newtype_variant("Body", 2, "base64", b64),
            Body::Withheld => s.serialize_unit_variant("Body", 3, "withheld"),
            Body::Blob(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => s.serialize_newtype_variant("Body", 1, "utf8", text),
                Err(_) => s.serialize_newtype_variant(
                    "Body",
                    2,
                    "base64",
                    &base64::engine::general_purpose::STANDARD.encode(bytes),
                ),
            },
            Body::TextBytes(n) => s.serialize_newtype_variant("Body", 5, "text_bytes", n),
            Body::BlobBytes(n) => s.serialize_newtype_variant("Body", 6, "blob_bytes", n),
            Body::TooLarge(n) => s.serialize_newtype_variant("Body", 7, "too_large", n),
        }
    }
}

/// The bytes of a `base64` body, or why it is bad.
fn decode_base64(b64: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| format!("body is not valid base64: {e}"))
}

/// Why a placeholder cannot be stored: the frame's reader replaces every one.
const UNREAD: &str = "a body attached to its frame was never read";

/// Why a body the source did not send cannot be stored.
const NOT_SENT: &str = "a body too large to send has no value to store";

/// A body as SQLite stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredBody {
    Text(String),
    Blob(Vec<u8>),
}

impl Body {
    pub fn from_stored(stored: StoredBody) -> Body {
        match stored {
            StoredBody::Text(text) => Body::Text(text),
            StoredBody::Blob(bytes) => Body::Blob(bytes),
        }
    }

    /// Whether the source kept the body back.
    pub fn is_withheld(&self) -> bool {
        matches!(self, Body::Withheld)
    }

    /// Why the body cannot be stored, if it cannot: only base64 can be bad. Checks without the
    /// copy [`Body::into_stored`] makes (a copy of every body of a batch, before this).
    pub fn check(&self) -> Result<(), String> {
        match self {
            Body::Base64(b64) => decode_base64(b64).map(drop),
            Body::TextBytes(_) | Body::BlobBytes(_) => Err(UNREAD.into()),
            // A valid form; the collector refuses the item before anything would store it.
            Body::Text(_) | Body::Utf8(_) | Body::Blob(_) | Body::Withheld | Body::TooLarge(_) => {
                Ok(())
            }
        }
    }

    /// The value to store, or why the base64 is bad.
    pub fn into_stored(self) -> Result<StoredBody, String> {
        match self {
            Body::Withheld => Err("a withheld body has no value to store".into()),
            Body::Text(text) => Ok(StoredBody::Text(text)),
            Body::Utf8(text) => Ok(StoredBody::Blob(text.into_bytes())),
            Body::Blob(bytes) => Ok(StoredBody::Blob(bytes)),
            Body::TextBytes(_) | Body::BlobBytes(_) => Err(UNREAD.into()),
            Body::TooLarge(_) => Err(NOT_SENT.into()),
            Body::Base64(b64) => decode_base64(&b64).map(StoredBody::Blob),
        }
    }

    /// The value to bind in SQL, borrowed where the wire form is the stored form (text and
    /// UTF-8 bodies: no copy of the body), or why the base64 is bad.
    pub fn sql_value(&self) -> Result<rusqlite::types::ToSqlOutput<'_>, String> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match self {
            Body::Withheld => ToSqlOutput::Owned(Value::Null),
            Body::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Body::Utf8(text) => ToSqlOutput::Borrowed(ValueRef::Blob(text.as_bytes())),
            Body::Blob(bytes) => ToSqlOutput::Borrowed(ValueRef::Blob(bytes)),
            Body::TextBytes(_) | Body::BlobBytes(_) => return Err(UNREAD.into()),
            Body::TooLarge(_) => return Err(NOT_SENT.into()),
            Body::Base64(b64) => ToSqlOutput::Owned(Value::Blob(decode_base64(b64)?)),
        })
    }

    /// Its length on the wire, roughly.
    pub fn wire_len(&self) -> usize {
        match self {
            Body::Text(t) | Body::Utf8(t) | Body::Base64(t) => t.len(),
            Body::Blob(bytes) => bytes.len(),
            Body::TextBytes(n) | Body::BlobBytes(n) => usize::try_from(*n).unwrap_or(usize::MAX),
            Body::Withheld | Body::TooLarge(_) => 0,
        }
    }
}

impl rusqlite::types::FromSql for StoredBody {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        use rusqlite::types::ValueRef;
        match value {
            // Valid UTF-8 (the rule) is checked by the fast validator; only a TEXT value that
            // is not goes through the lossy one, whose byte-by-byte walk was 3.5 % of the
            // synchronizer's CPU in an initial sync.
            ValueRef::Text(t) => Ok(StoredBody::Text(match std::str::from_utf8(t) {
                Ok(text) => text.to_owned(),
                Err(_) => String::from_utf8_lossy(t).into_owned(),
            })),
            ValueRef::Blob(b) => Ok(StoredBody::Blob(b.to_vec())),
            _ => Err(rusqlite::types::FromSqlError::InvalidType),
        }
    }
}

impl rusqlite::types::ToSql for StoredBody {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            StoredBody::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            StoredBody::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A TEXT body reads back as it is; one that is not valid UTF-8 (SQLite does not check)
    /// reads with U+FFFD for the bad bytes instead of failing the export.
    #[test]
    fn a_text_body_reads_back_exactly_or_lossily() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let read = |bytes: &[u8]| -> StoredBody {
            conn.query_row("SELECT CAST(?1 AS TEXT)", [bytes], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(
            read("Grüße, body".as_bytes()),
            StoredBody::Text("Grüße, body".into())
        );
        assert_eq!(
            read(b"ok \xff end"),
            StoredBody::Text("ok \u{fffd} end".into())
        );
    }
}
