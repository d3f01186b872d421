//! Limits on what a batch carries and what the collector applies: a message whose body is over
//! the store's cap is not applied, and one whose body is over [`MAX_SENT_BODY`] is not even
//! sent (its body goes as [`Body::TooLarge`]). Either is a recoverable per-item error (seed
//! 003): the item is reported with its id and the reason, its versions stay out of the learned
//! knowledge, the rest of the batch applies, and the item comes again next session (and applies
//! once the cap allows it). One huge message never stops a partnership.

use super::apply::{ImportSession, ItemError};
use super::items::ItemChange;
use super::{Store, StoreError};
use crate::model::{Body, UnitValue};

impl ImportSession {
    /// Leaves `change` unapplied for `reason`: its versions stay out of every learned knowledge
    /// of the session.
    pub fn refuse(&mut self, change: &ItemChange, reason: String) -> ItemError {
        self.excluded.extend(change.versions().cloned());
        ItemError {
            item: change.id.clone(),
            reason,
        }
    }
}

/// The largest body a batch carries. A batch travels as one frame of at most
/// [`MAX_FRAME`](crate::protocol::frame::MAX_FRAME) (64 MiB); a message alone in its batch keeps a
/// quarter of that for its headers and the rest of the frame. Before this limit, a message with
/// a larger body failed every session of its partnership, and nothing after it arrived.
pub const MAX_SENT_BODY: u64 = crate::protocol::frame::MAX_FRAME as u64 / 4 * 3;

/// On the way out: a message whose body is over [`MAX_SENT_BODY`] goes without it, as
/// [`Body::TooLarge`] with its size, for the collector to refuse.
pub(super) fn cap_for_sending(change: &mut ItemChange) {
    for unit in &mut change.units {
        if let UnitValue::Content {
            body: Some(body), ..
        } = &mut unit.value
        {
            let size = body.wire_len() as u64;
            if size > MAX_SENT_BODY {
                *body = Body::TooLarge(size);
            }
        }
    }
}

impl Store {
    /// Splits a batch into the changes to apply and the errors of those the store does not
    /// take: bodies the source did not send ([`Body::TooLarge`]), and with a cap, bodies over
    /// `max_body_bytes`. Items whose versions this store already knows need no body: those
    /// over the cap are left to the applier, which skips them, and unsent ones are dropped.
    pub fn refuse_large_bodies(
        &self,
        session: &mut ImportSession,
        changes: Vec<ItemChange>,
        max_body_bytes: Option<u64>,
    ) -> Result<(Vec<ItemChange>, Vec<ItemError>), StoreError> {
        let unsent = |c: &ItemChange| {
            c.units.iter().any(|u| {
                matches!(
                    u.value,
                    UnitValue::Content {
                        body: Some(Body::TooLarge(_)),
                        ..
                    }
                )
            })
        };
        if max_body_bytes.is_none() && !changes.iter().any(unsent) {
            return Ok((changes, Vec::new()));
        }
        let known = self.knowledge()?;
        let mut errors = Vec::new();
        let mut keep = Vec::with_capacity(changes.len());
        for change in changes {
            let size = body_size(&change);
            let reason = if unsent(&change) {
                format!(
                    "body of {} is too large to send (a batch carries bodies of at most {}); it \
                     comes again next session",
                    human_size(size),
                    human_size(MAX_SENT_BODY)
                )
            } else {
                match max_body_bytes {
                    Some(cap) if size > cap => format!(
                        "body of {} is over the cap of {}; it comes again next session",
                        human_size(size),
                        human_size(cap)
                    ),
                    _ => {
                        keep.push(change);
                        continue;
                    }
                }
            };
            if change.versions().all(|v| known.contains(v)) {
                if !unsent(&change) {
                    keep.push(change);
                }
                continue;
            }
            // The same item met again in a later phase of the session: refused once.
            if change.versions().all(|v| session.excluded.contains(v)) {
                continue;
            }
            errors.push(session.refuse(&change, reason));
        }
        Ok((keep, errors))
    }
}

/// The size of a change's body as it will be stored (decoded from base64), 0 without one.
pub fn body_size(change: &ItemChange) -> u64 {
    change
        .units
        .iter()
        .find_map(|u| match &u.value {
            UnitValue::Content {
                body: Some(body), ..
            } => Some(match body {
                Body::Text(t) | Body::Utf8(t) => t.len() as u64,
                Body::Blob(bytes) => bytes.len() as u64,
                Body::TextBytes(n) | Body::BlobBytes(n) => *n,
                Body::Withheld => 0,
                Body::TooLarge(n) => *n,
                Body::Base64(b) => {
                    let padding = b.bytes().rev().take_while(|&c| c == b'=').count() as u64;
                    (b.len() as u64 / 4 * 3).saturating_sub(padding)
                }
            }),
            _ => None,
        })
        .unwrap_or(0)
}

/// "12 MiB", "1.5 KiB", "900 bytes".
pub fn human_size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    let scaled = |unit: u64, name: &str| {
        if bytes.is_multiple_of(unit) {
            format!("{} {name}", bytes / unit)
        } else {
            format!("{:.1} {name}", bytes as f64 / unit as f64)
        }
    };
    match bytes {
        b if b >= MIB => scaled(MIB, "MiB"),
        b if b >= KIB => scaled(KIB, "KiB"),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(12 * 1024 * 1024), "12 MiB");
        assert_eq!(human_size(10 * 1024 * 1024), "10 MiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(900), "900 bytes");
    }
}
