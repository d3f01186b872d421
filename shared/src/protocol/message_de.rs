//! Reading a [`Message`] without buffering it first.
//!
//! A message is one JSON object whose `type` field names it. Serde's derived form for such an
//! internally tagged enum buffers the *whole* object into an intermediate tree before it looks at
//! the tag — for a change batch, megabytes of bodies copied and allocated twice. Every sender of
//! this protocol writes `type` first, so this reader takes the tag from the first field and then
//! reads the rest of the object straight into the message's struct. An object whose `type` is not
//! first is still accepted, through the slower buffered path.

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::Message;

const TYPES: &[&str] = &[
    "hello",
    "welcome",
    "error",
    "sync_request",
    "progress",
    "completed",
    "failed",
    "begin_session",
    "session_ready",
    "change_batch",
    "batch_applied",
];

/// Reads the message named `tag` from the rest of an object.
fn read_as<'de, D: Deserializer<'de>>(tag: &str, rest: D) -> Result<Message, D::Error> {
    Ok(match tag {
        "hello" => Message::Hello(Deserialize::deserialize(rest)?),
        "welcome" => Message::Welcome(Deserialize::deserialize(rest)?),
        "error" => Message::Error(Deserialize::deserialize(rest)?),
        "sync_request" => Message::SyncRequest(Deserialize::deserialize(rest)?),
        "progress" => Message::Progress(Deserialize::deserialize(rest)?),
        "completed" => Message::Completed(Deserialize::deserialize(rest)?),
        "failed" => Message::Failed(Deserialize::deserialize(rest)?),
        "begin_session" => Message::BeginSession(Deserialize::deserialize(rest)?),
        "session_ready" => Message::SessionReady(Deserialize::deserialize(rest)?),
        "change_batch" => Message::ChangeBatch(Deserialize::deserialize(rest)?),
        "batch_applied" => Message::BatchApplied(Deserialize::deserialize(rest)?),
        other => return Err(de::Error::unknown_variant(other, TYPES)),
    })
}

struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Message;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message: an object with a `type` field")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Err(de::Error::missing_field("type"));
        };
        if first == "type" {
            let tag: String = map.next_value()?;
            return read_as(&tag, MapAccessDeserializer::new(map));
        }
        // `type` later in the object: buffer it (the derived form's way).
        let mut object = serde_json::Map::new();
        object.insert(first, map.next_value()?);
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            object.insert(key, value);
        }
        let tag = match object.remove("type") {
            Some(serde_json::Value::String(tag)) => tag,
            Some(_) => return Err(de::Error::custom("`type` must be a string")),
            None => return Err(de::Error::missing_field("type")),
        };
        super::attached::buffered(|| read_as(&tag, serde_json::Value::Object(object)))
            .map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Message, D::Error> {
        d.deserialize_map(MessageVisitor)
    }
}
