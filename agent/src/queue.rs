//! `agent conflicts` and `agent resolve`: the operator's view of the conflict queue
//! (`state::conflicts`), in text for people and JSON for scripts.

use serde::Serialize;

use crate::report::fmt_time;
use crate::state::{Keep, QueuedConflict, ResolveError, State, StateError};

/// One queued conflict as printed: the stored row with both versions named by store.
#[derive(Clone, Debug, Serialize)]
pub struct ConflictView {
    #[serde(flatten)]
    pub conflict: QueuedConflict,
    /// `laptop5`: the local and remote versions with store names.
    pub local_named: String,
    pub remote_named: String,
}

/// The queue as printed; `all` includes settled conflicts.
pub fn conflicts(state: &State, all: bool) -> Result<Vec<ConflictView>, StateError> {
    state
        .conflicts(all)?
        .into_iter()
        .map(|c| view(state, c))
        .collect()
}

fn view(state: &State, conflict: QueuedConflict) -> Result<ConflictView, StateError> {
    Ok(ConflictView {
        local_named: state.named_version(&conflict.local_version)?,
        remote_named: state.named_version(&conflict.remote_version)?,
        conflict,
    })
}

/// Records `keep` for conflict `id` and says what happens next.
pub fn resolve(state: &State, id: i64, keep: Keep) -> Result<String, ResolveError> {
    let c = view(state, state.resolve(id, keep)?)?;
    let (store, value) = match keep {
        Keep::Local => (&c.conflict.local_store, &c.conflict.local_value),
        Keep::Remote => (&c.conflict.remote_store, &c.conflict.remote_value),
    };
    Ok(format!(
        "conflict {id}: keeping {store}'s {} ({value}) of {} {}; it reaches every store with the next session of {}\n",
        c.conflict.unit,
        c.conflict.kind,
        describe(&c.conflict),
        c.conflict.partnership
    ))
}

/// The queue in text.
pub fn render(rows: &[ConflictView]) -> String {
    if rows.is_empty() {
        return "no conflicts waiting for a decision\n".into();
    }
    let mut out = String::new();
    for r in rows {
        let c = &r.conflict;
        out.push_str(&format!(
            "#{}  {}  {} {}  {}\n",
            c.id,
            c.partnership,
            c.kind,
            describe(c),
            c.unit
        ));
        let width = c.local_store.len().max(c.remote_store.len()) + " (remote):".len();
        let local = format!("{} (local):", c.local_store);
        let remote = format!("{} (remote):", c.remote_store);
        out.push_str(&format!(
            "    {local:<width$} {:<10} {}\n",
            r.local_named, c.local_value
        ));
        out.push_str(&format!(
            "    {remote:<width$} {:<10} {}\n",
            r.remote_named, c.remote_value
        ));
        let status = match (c.status.as_str(), c.keep.as_deref()) {
            ("resolving", Some(keep)) => {
                format!("resolving: keeping {keep}, with the next session")
            }
            ("resolved", Some(keep)) => format!("resolved: kept {keep}"),
            (status, _) => status.to_string(),
        };
        out.push_str(&format!(
            "    first seen {}, seen {} time{}; {status}\n",
            fmt_time(c.first_seen),
            c.times_seen,
            if c.times_seen == 1 { "" } else { "s" }
        ));
    }
    let open = rows.iter().filter(|r| r.conflict.status == "open").count();
    out.push_str(&format!(
        "{open} open; `agent resolve ID --keep local|remote` settles one\n"
    ));
    out
}

/// `message m0001 “Budget”`: the id, and the label when there is one.
fn describe(c: &QueuedConflict) -> String {
    if c.label.is_empty() {
        c.item.clone()
    } else {
        format!("{} “{}”", c.item, c.label)
    }
}
