//! Reading a [`UnitChange`] off the wire in one pass.
//!
//! The wire form is a flat object: `version`, `at`, the `unit` tag and that unit's fields
//! (ARCHITECTURE.md, "change_batch"). Serde's derived form for a flattened, internally tagged
//! enum first buffers every field of every unit into an intermediate tree and then copies it
//! again; for ~2 KiB bodies that buffering was a large part of an import's allocations. This
//! visitor reads each field straight into its place and checks that every field belongs to the
//! unit the tag names, so a malformed unit is refused with what is wrong. Inside a frame, an
//! attached body or headers value is taken from the frame as it is met (`protocol/attached.rs`).

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::{Body, Unit, UnitChange, UnitValue, WireVersion};
use crate::protocol::attached::{resolve_body, TextValue};

#[derive(Clone, Copy, Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    Version,
    At,
    Unit,
    Name,
    ParentId,
    Subject,
    Sender,
    ReceivedAt,
    Headers,
    Body,
    IsRead,
    FolderId,
}

impl Field {
    fn name(&self) -> &'static str {
        match self {
            Field::Version => "version",
            Field::At => "at",
            Field::Unit => "unit",
            Field::Name => "name",
            Field::ParentId => "parent_id",
            Field::Subject => "subject",
            Field::Sender => "sender",
            Field::ReceivedAt => "received_at",
            Field::Headers => "headers",
            Field::Body => "body",
            Field::IsRead => "is_read",
            Field::FolderId => "folder_id",
        }
    }

    /// Whether the field is part of `unit`'s value.
    fn belongs_to(&self, unit: Unit) -> bool {
        match self {
            Field::Version | Field::At | Field::Unit => true,
            Field::Name => unit == Unit::Name,
            Field::ParentId => unit == Unit::Parent,
            Field::Subject | Field::Sender | Field::ReceivedAt | Field::Headers | Field::Body => {
                unit == Unit::Content
            }
            Field::IsRead => unit == Unit::Read,
            Field::FolderId => unit == Unit::Location,
        }
    }
}

#[derive(Default)]
struct Fields {
    version: Option<WireVersion>,
    at: Option<i64>,
    unit: Option<Unit>,
    name: Option<String>,
    parent_id: Option<Option<String>>,
    subject: Option<String>,
    sender: Option<String>,
    received_at: Option<i64>,
    headers: Option<String>,
    body: Option<Option<Body>>,
    is_read: Option<bool>,
    folder_id: Option<String>,
    /// The fields read so far, one bit per `Field` (no allocation per unit).
    seen: u16,
}

impl Field {
    const ALL: [Field; 12] = [
        Field::Version,
        Field::At,
        Field::Unit,
        Field::Name,
        Field::ParentId,
        Field::Subject,
        Field::Sender,
        Field::ReceivedAt,
        Field::Headers,
        Field::Body,
        Field::IsRead,
        Field::FolderId,
    ];

    /// Every variant is in `ALL`, at its own index: `bit` and the stray check rely on it.
    const ALL_IS_COMPLETE: () = {
        let mut i = 0;
        while i < Field::ALL.len() {
            assert!(Field::ALL[i] as usize == i);
            i += 1;
        }
        assert!(Field::FolderId as usize + 1 == Field::ALL.len());
    };

    fn bit(self) -> u16 {
        let () = Field::ALL_IS_COMPLETE;
        1 << (self as u16)
    }
}

fn take<T, E: de::Error>(slot: Option<T>, field: &'static str) -> Result<T, E> {
    slot.ok_or_else(|| E::missing_field(field))
}

struct UnitChangeVisitor;

impl<'de> Visitor<'de> for UnitChangeVisitor {
    type Value = UnitChange;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a change unit: version, at, unit and the unit's fields")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UnitChange, A::Error> {
        let mut f = Fields::default();
        while let Some(key) = map.next_key::<Field>()? {
            let dup = match key {
                Field::Version => f.version.replace(map.next_value()?).is_some(),
                Field::At => f.at.replace(map.next_value()?).is_some(),
                Field::Unit => f.unit.replace(map.next_value()?).is_some(),
                Field::Name => f.name.replace(map.next_value()?).is_some(),
                Field::ParentId => f.parent_id.replace(map.next_value()?).is_some(),
                Field::Subject => f.subject.replace(map.next_value()?).is_some(),
                Field::Sender => f.sender.replace(map.next_value()?).is_some(),
                Field::ReceivedAt => f.received_at.replace(map.next_value()?).is_some(),
                Field::Headers => f
                    .headers
                    .replace(map.next_value::<TextValue>()?.0)
                    .is_some(),
                Field::Body => {
                    let body = map
                        .next_value::<Option<Body>>()?
                        .map(resolve_body)
                        .transpose()
                        .map_err(de::Error::custom)?;
                    f.body.replace(body).is_some()
                }
                Field::IsRead => f.is_read.replace(map.next_value()?).is_some(),
                Field::FolderId => f.folder_id.replace(map.next_value()?).is_some(),
            };
            if dup {
                return Err(de::Error::duplicate_field(key.name()));
            }
            f.seen |= key.bit();
        }
        let unit: Unit = take(f.unit, "unit")?;
        let stray = Field::ALL
            .into_iter()
            .find(|k| f.seen & k.bit() != 0 && !k.belongs_to(unit));
        if let Some(stray) = stray {
            return Err(de::Error::custom(format!(
                "field `{}` does not belong to a {:?} unit",
                stray.name(),
                unit
            )));
        }
        let value = match unit {
            Unit::Name => UnitValue::Name {
                name: take(f.name, "name")?,
            },
            Unit::Parent => UnitValue::Parent {
                parent_id: f.parent_id.flatten(),
            },
            Unit::Content => UnitValue::Content {
                subject: take(f.subject, "subject")?,
                sender: take(f.sender, "sender")?,
                received_at: take(f.received_at, "received_at")?,
                headers: take(f.headers, "headers")?,
                body: f.body.flatten(),
            },
            Unit::Read => UnitValue::Read {
                is_read: take(f.is_read, "is_read")?,
            },
            Unit::Location => UnitValue::Location {
                folder_id: take(f.folder_id, "folder_id")?,
            },
            Unit::MessageTombstone => UnitValue::MessageTombstone,
            Unit::FolderTombstone => UnitValue::FolderTombstone,
        };
        Ok(UnitChange {
            version: take(f.version, "version")?,
            at: take(f.at, "at")?,
            value,
        })
    }
}

impl<'de> Deserialize<'de> for UnitChange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UnitChange, D::Error> {
        d.deserialize_map(UnitChangeVisitor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn every_unit() -> Vec<UnitChange> {
        let values = vec![
            UnitValue::Name {
                name: "Inbox".into(),
            },
            UnitValue::Parent { parent_id: None },
            UnitValue::Parent {
                parent_id: Some("f1".into()),
            },
            UnitValue::Content {
                subject: "Hi \"you\"\n".into(),
                sender: "a@b".into(),
                received_at: 1_700_000_000,
                headers: "X: y".into(),
                body: Some(Body::Utf8("héllo".into())),
            },
            UnitValue::Content {
                subject: String::new(),
                sender: String::new(),
                received_at: 0,
                headers: String::new(),
                body: None,
            },
            UnitValue::Read { is_read: true },
            UnitValue::Location {
                folder_id: "f2".into(),
            },
            UnitValue::MessageTombstone,
            UnitValue::FolderTombstone,
        ];
        values
            .into_iter()
            .enumerate()
            .map(|(i, value)| UnitChange {
                version: WireVersion(i as u32, 7),
                at: 42,
                value,
            })
            .collect()
    }

    #[test]
    fn every_unit_reads_back_as_written() {
        for u in every_unit() {
            let json = serde_json::to_string(&u).unwrap();
            assert_eq!(
                serde_json::from_str::<UnitChange>(&json).unwrap(),
                u,
                "{json}"
            );
        }
    }

    #[test]
    fn malformed_units_are_refused_with_what_is_wrong() {
        for (json, wanted) in [
            (
                r#"{"version":[0,1],"at":1,"unit":"read"}"#,
                "missing field `is_read`",
            ),
            (r#"{"version":[0,1],"at":1}"#, "missing field `unit`"),
            (
                r#"{"version":[0,1],"at":1,"unit":"read","is_read":true,"subject":"x"}"#,
                "field `subject` does not belong to a Read unit",
            ),
            (
                r#"{"version":[0,1],"at":1,"unit":"read","is_read":true,"is_read":false}"#,
                "duplicate field `is_read`",
            ),
            (
                r#"{"version":[0,1],"at":1,"unit":"colour"}"#,
                "unknown variant `colour`",
            ),
            (
                r#"{"version":[0,1],"at":1,"unit":"read","is_red":true}"#,
                "unknown field `is_red`",
            ),
        ] {
            let err = serde_json::from_str::<UnitChange>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(wanted), "{json}: {err}");
        }
    }
}
