//! The id window (`id_window.rs`): batches of messages carry slices of the id order, learn
//! exactly what they carry, and read each item when their batch is filled.
#![allow(clippy::unwrap_used)]

use super::tests::{new_store, public_rows, sync, sync_observed};
use super::*;
use crate::model::Phase;

/// 60 messages in folder `f`, inserted in an order that is not their ids' order.
fn scrambled_messages(app: &rusqlite::Connection) -> Vec<String> {
    app.execute("INSERT INTO folders (id, name) VALUES ('f', 'F')", [])
        .unwrap();
    let ids: Vec<String> = (0..60).map(|i| format!("m{:02}", (i * 37) % 60)).collect();
    for id in &ids {
        app.execute(
            "INSERT INTO messages (id, folder_id, subject) VALUES (?1, 'f', ?1)",
            [id],
        )
        .unwrap();
    }
    ids
}

/// One session from `src` into `dst` in batches of `batch`, calling `between` with the number
/// of batches applied so far after each but the last; it stops after `stop_after` batches if
/// given (a session cut short). Returns the message ids of each Contents batch.
fn session(
    src: &mut Store,
    dst: &mut Store,
    batch: usize,
    stop_after: Option<usize>,
    mut between: impl FnMut(usize),
) -> Vec<Vec<String>> {
    let mut contents = Vec::new();
    let rule = ConflictRule::NewerWins;
    sync_observed(
        src,
        dst,
        batch,
        rule,
        Vec::new(),
        |n, phase, changes, done| {
            if phase == Phase::Contents && !changes.is_empty() {
                contents.push(changes.iter().map(|c| c.id.clone()).collect());
            }
            if done || stop_after == Some(n) {
                return false;
            }
            between(n);
            true
        },
    );
    contents
}

/// Both stores hold the same rows and know the same versions.
fn assert_converged(
    a: &Store,
    app: &rusqlite::Connection,
    b: &Store,
    b_app: &rusqlite::Connection,
) {
    assert_eq!(public_rows(b_app), public_rows(app));
    assert_eq!(b.knowledge().unwrap(), a.knowledge().unwrap());
}

#[test]
fn each_batch_of_new_messages_is_a_slice_of_the_id_order_of_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app) = new_store(&dir, "a.db");
    let (mut b, b_app) = new_store(&dir, "b.db");
    let inserted = scrambled_messages(&app);
    // Batches of 5: a window holds 15 changes, so the 60 come as four windows of three batches.
    let batches = session(&mut a, &mut b, 5, None, |_| {});
    assert_eq!(batches.len(), 12);
    for (w, window) in inserted.chunks(15).enumerate() {
        let mut expected = window.to_vec();
        expected.sort();
        let its = &batches[w * 3..w * 3 + 3];
        let sent: Vec<String> = its.iter().flatten().cloned().collect();
        let mut in_order = sent.clone();
        in_order.sort();
        assert_eq!(in_order, expected, "window {w} is its 15 inserts");
        for pair in its.windows(2) {
            let last = pair[0].iter().max().unwrap();
            let first = pair[1].iter().min().unwrap();
            assert!(last < first, "{pair:?}: each batch a slice of the id order");
        }
    }
    // The knowledge fragmented while the windows went is whole again.
    assert_converged(&a, &app, &b, &b_app);
}

#[test]
fn a_session_cut_short_within_a_window_resends_nothing_it_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app) = new_store(&dir, "a.db");
    let (mut b, b_app) = new_store(&dir, "b.db");
    scrambled_messages(&app);
    // The folder's batch, then the first window's three batches and one of the second's.
    let first = session(&mut a, &mut b, 5, Some(5), |_| {});
    let applied: Vec<String> = first.iter().flatten().cloned().collect();
    assert_eq!(applied.len(), 20);
    let known = b.knowledge().unwrap();
    let own = a.replica().clone();
    assert!(
        known.get(&own).unwrap().ranges().count() > 1,
        "a window's batches teach scattered ticks: {known:?}"
    );
    let rest = session(&mut a, &mut b, 5, None, |_| {});
    let resent: Vec<&String> = rest
        .iter()
        .flatten()
        .filter(|id| applied.contains(id))
        .collect();
    assert!(resent.is_empty(), "sent again: {resent:?}");
    assert_eq!(rest.iter().flatten().count(), 40);
    assert_converged(&a, &app, &b, &b_app);
}

#[test]
fn an_item_is_read_when_its_batch_is_filled_not_when_its_window_was_walked() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app) = new_store(&dir, "a.db");
    let (mut b, b_app) = new_store(&dir, "b.db");
    scrambled_messages(&app);
    // After the first batch of the window (m00 m01 m05 m10 m14), two of its later ids change at the source.
    let edited = std::cell::Cell::new(false);
    session(&mut a, &mut b, 5, None, |n| {
        if n == 2 {
            app.execute_batch(
                "UPDATE messages SET subject = 'edited' WHERE id = 'm37';
                 DELETE FROM messages WHERE id = 'm47';",
            )
            .unwrap();
            edited.set(true);
        }
    });
    assert!(edited.get());
    let rows = public_rows(&b_app);
    assert!(rows.contains(&"M m37 f edited 0 ".to_string()), "{rows:?}");
    assert!(!rows.iter().any(|r| r.starts_with("M m47 ")), "{rows:?}");
    // The edit's and the delete's versions came after the session began: the next one brings
    // them, and both stores end the same.
    sync(&mut a, &mut b, 5, ConflictRule::NewerWins);
    assert_converged(&a, &app, &b, &b_app);
}

#[test]
fn a_window_is_three_batches_at_most_three_thousand_changes_at_least_one_batch() {
    use super::id_window::window_len;
    assert_eq!(window_len(1), 3);
    assert_eq!(window_len(1000), 3_000);
    assert_eq!(window_len(2000), 3_000);
    assert_eq!(window_len(5000), 5_000);
}

/// A batch's changes are read ahead with one statement, its room in bytes at a time: batches
/// cut by their byte cap, not their count, still carry every message once, and none that was
/// read ahead and did not fit is lost.
#[test]
fn batches_cut_by_their_bytes_carry_every_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, app) = new_store(&dir, "a.db");
    let ids = scrambled_messages(&app);
    app.execute("UPDATE messages SET body = CAST(zeroblob(300) AS TEXT)", [])
        .unwrap();
    let made_with = a.knowledge().unwrap();
    let mut dest = Knowledge::new();
    let mut cursor = EnumerationCursor::default();
    let mut sent: Vec<String> = Vec::new();
    let mut cut_by_bytes = 0;
    loop {
        let b = a
            .next_batch(&mut cursor, &made_with, &dest, 50, 2_000)
            .unwrap();
        if b.phase == Phase::Contents && !b.changes.is_empty() {
            assert!(
                b.changes.len() < 10,
                "{} changes in 2,000 bytes",
                b.changes.len()
            );
            cut_by_bytes += 1;
            sent.extend(b.changes.iter().map(|c| c.id.clone()));
        }
        dest.union_with(&made_with.project(b.versions.iter()));
        if b.done {
            break;
        }
    }
    assert!(cut_by_bytes > 5, "{cut_by_bytes} batches");
    let mut once = sent.clone();
    once.sort();
    once.dedup();
    assert_eq!(once.len(), sent.len(), "a message sent twice: {sent:?}");
    let mut all = ids;
    all.sort();
    assert_eq!(once, all);
}
