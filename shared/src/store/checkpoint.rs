//! Checkpoints of an import connection off the import's path: a thread of its own copies the
//! WAL into the database while the next batches are applied.
//!
//! With `wal_autocheckpoint`, the commit that takes the WAL past its threshold copies the WAL
//! into the database and syncs both files before the collector can reply: at 100k messages six
//! such commits, each waiting ~90 ms for its two `fsync`s besides the copying, and 18 % of the
//! collector's CPU on its one thread (`bench/PROFILE.md`, round six). Here the import
//! connection's commits only note how many frames the WAL holds (SQLite's WAL hook). Past the
//! threshold the checkpointer thread, on its own connection, runs passive checkpoints of what is
//! committed while the import goes on appending: a passive checkpoint never blocks a writer.
//!
//! The WAL starts over from its beginning only when a write transaction begins with every frame
//! copied. A pass copies the frames committed when it began, and the import commits more while
//! it runs; so the thread passes again over those, each pass shorter than the one before, until
//! one finds only a tenth of the threshold new, at most [`MAX_PASSES`] times ([`converge`]). At
//! its next commit after the passes the import connection copies the frames committed since,
//! itself, between two transactions, and syncs the database: a small checkpoint, the bulk being
//! copied by then. Its next transaction starts the WAL over. The WAL stays bounded: past
//! [`HARD_LIMIT_FACTOR`] times the threshold, a commit waits for the running pass instead of
//! letting the WAL grow further.
//!
//! Durability is SQLite's own: a checkpoint is crash-safe from any connection, a commit is as
//! durable as before (`synchronous` is unchanged; a checkpoint only moves pages), and a pass
//! that does not reach the WAL's end leaves the WAL's frames in place until one that does has
//! synced the database.

use std::cell::Cell;
use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::hooks::Wal;
use rusqlite::Connection;

use super::error::{SqlContext, StoreError};

/// How far past the threshold the WAL may grow while a pass runs before a commit waits for it.
pub const HARD_LIMIT_FACTOR: c_int = 3;

/// Passes in a row before the thread leaves the rest to the import connection.
pub const MAX_PASSES: usize = 8;

/// The thread's last pass is the first that finds at most the threshold / this many new frames.
const FEW_FRAMES_DIVISOR: c_int = 10;

thread_local! {
    /// The frames in the WAL after the last commit on this thread, noted by the WAL hook and
    /// taken by [`Checkpointer::after_commit`]. SQLite runs the hook on the committing thread,
    /// and store work is synchronous, so the import reads its own commit's count on that thread
    /// with no other commit in between.
    static WAL_FRAMES: Cell<c_int> = const { Cell::new(0) };
}

fn note_frames(_wal: &Wal, frames: c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(frames));
    Ok(())
}

/// What the import connection and the thread share.
#[derive(Debug, Default)]
struct State {
    /// A pass is asked for and not yet started.
    wanted: bool,
    /// A pass is running.
    running: bool,
    /// The thread's passes ended since the import last caught up.
    finished: bool,
    stop: bool,
    /// Why the thread's last passes failed; the import then checkpoints itself, so an error
    /// that persists reaches the session.
    failed: Option<String>,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.0.lock().unwrap_or_else(|p| p.into_inner())
}

/// The checkpointer thread of one import connection; dropping it stops the thread (after a
/// running pass) and closes its connection.
pub struct Checkpointer {
    shared: Shared,
    threshold: c_int,
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl Checkpointer {
    /// Starts the thread on a connection of its own to `path`, and takes the WAL's checkpoints
    /// off `import`'s commits: from now on [`Checkpointer::after_commit`] must follow them.
    pub fn start(
        import: &Connection,
        path: &Path,
        threshold: c_int,
    ) -> Result<Checkpointer, StoreError> {
        let conn = super::wal_appends::open(path)
            .ctx(path, "cannot open the checkpointer's connection")?;
        conn.busy_timeout(Duration::from_secs(10))
            .ctx(path, "cannot set busy timeout")?;
        // A checkpoint copies frames through a buffer of its own, not the page cache.
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -64;")
            .ctx(path, "cannot set pragmas")?;
        let shared: Shared = Arc::default();
        let theirs = shared.clone();
        let few = i64::from(threshold.max(1) / FEW_FRAMES_DIVISOR);
        let thread = std::thread::Builder::new()
            .name("checkpointer".into())
            .spawn(move || run(conn, theirs, few))
            .map_err(|source| StoreError::Checkpointer {
                path: path.to_path_buf(),
                source,
            })?;
        // Replaces the hook `wal_autocheckpoint` installed: commits only note the WAL's size.
        import.wal_hook(Some(note_frames));
        Ok(Checkpointer {
            shared,
            threshold: threshold.max(1),
            path: path.to_path_buf(),
            thread: Some(thread),
        })
    }

    /// After a commit on the import connection: asks for a pass past the threshold, copies
    /// what is left after the thread's passes, and waits for a running pass past the hard limit.
    pub fn after_commit(&self, import: &Connection) -> Result<(), StoreError> {
        let frames = WAL_FRAMES.with(|f| f.replace(0));
        if frames == 0 {
            return Ok(());
        }
        let mut state = lock(&self.shared);
        if (state.running || state.wanted)
            && frames >= self.threshold.saturating_mul(HARD_LIMIT_FACTOR)
        {
            let start = Instant::now();
            while state.running || state.wanted {
                state = self.shared.1.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            tracing::debug!(
                frames,
                waited_ms = start.elapsed().as_millis() as u64,
                "the WAL reached its hard limit; waited for the checkpointer"
            );
        }
        if state.finished {
            state.finished = false;
            let failed = state.failed.take();
            drop(state);
            if let Some(error) = failed {
                tracing::warn!(store = %self.path.display(), %error, "a background checkpoint failed; checkpointing on the import connection");
            }
            // The frames committed since the passes copied their share: copied here, between
            // two transactions, so the next one starts the WAL over.
            return import
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .ctx(&self.path, "cannot checkpoint the WAL");
        }
        if !state.running && !state.wanted && frames >= self.threshold {
            state.wanted = true;
            self.shared.1.notify_all();
        }
        Ok(())
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        lock(&self.shared).stop = true;
        self.shared.1.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: waits for a request, runs its passes (see [`converge`]), reports, until told to
/// stop.
fn run(conn: Connection, shared: Shared, few: i64) {
    loop {
        let mut state = lock(&shared);
        while !state.wanted && !state.stop {
            state = shared.1.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if state.stop {
            return;
        }
        state.wanted = false;
        state.running = true;
        drop(state);
        let start = Instant::now();
        let result = passes(&conn, few);
        let mut state = lock(&shared);
        state.running = false;
        state.finished = true;
        match result {
            Ok((passes, complete)) => tracing::debug!(
                passes,
                complete,
                ms = start.elapsed().as_millis() as u64,
                "background checkpoint"
            ),
            Err(e) => state.failed = Some(e.to_string()),
        }
        shared.1.notify_all();
    }
}

/// Passive checkpoints of `conn`'s WAL until one finds at most `few` frames committed since the
/// pass before it, at most [`MAX_PASSES`]: how many ran, and whether the last copied every frame
/// it found.
fn passes(conn: &Connection, few: i64) -> Result<(usize, bool), rusqlite::Error> {
    converge(few, || {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(1)?, r.get(2)?))
        })
    })
}

/// The passes' rule, apart from SQLite: `pass` runs one and tells the frames in the WAL when it
/// began and how many of them are copied.
///
/// One pass copies what was committed when it began, ~10,000 frames in ~100 ms, and the import
/// commits a batch every ~15 ms meanwhile. The import then had to copy those frames itself,
/// before its reply: the catch-up took a batch from ~14 ms to 85-200 ms, three times in a sync
/// of 100k messages (`bench/PROFILE.md`, round nine). So the thread passes again over what came
/// meanwhile, each pass shorter than the one before, until one finds only `few` new frames: the
/// import is left a batch's worth or so.
fn converge(
    few: i64,
    mut pass: impl FnMut() -> Result<(i64, i64), rusqlite::Error>,
) -> Result<(usize, bool), rusqlite::Error> {
    let mut before: Option<i64> = None;
    let mut complete = false;
    for n in 1..=MAX_PASSES {
        let (log, copied) = pass()?;
        complete = copied >= log;
        // A WAL that started over since the pass before (log < before) has little in it.
        let new = before.map(|b| log - b);
        if complete && new.is_some_and(|new| new <= few) {
            return Ok((n, true));
        }
        before = Some(log);
    }
    Ok((MAX_PASSES, complete))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::{schema::PAGE_SIZE, Store};

    const THRESHOLD: c_int = 64;
    const COMMITS: usize = 300;
    /// Rows per commit, each a page's worth of bytes: every commit appends a few frames.
    const ROWS: usize = 4;

    fn wal_len(path: &Path) -> u64 {
        std::fs::metadata(format!("{}-wal", path.display()))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Commits `COMMITS` transactions of `ROWS` page-sized rows on `store`, each followed by
    /// `after_commit`; returns the WAL file's size afterwards (a WAL file never shrinks while
    /// it is open, so its size is the most frames it ever held).
    fn fill(store: &Store) -> u64 {
        store
            .conn
            .execute_batch("CREATE TABLE scratch (x BLOB NOT NULL)")
            .unwrap();
        let row = vec![7u8; PAGE_SIZE as usize];
        for _ in 0..COMMITS {
            store.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            for _ in 0..ROWS {
                store
                    .conn
                    .execute("INSERT INTO scratch (x) VALUES (?1)", [&row])
                    .unwrap();
            }
            store.conn.execute_batch("COMMIT").unwrap();
            store.after_commit().unwrap();
        }
        wal_len(&store.path)
    }

    /// A new store in its own directory, its checkpoints on the thread past `THRESHOLD` pages.
    fn store_with_checkpointer() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("store.db")).unwrap();
        store.checkpoint_in_background_past(THRESHOLD).unwrap();
        (dir, store)
    }

    fn scratch_rows(conn: &Connection) -> usize {
        conn.query_row("SELECT count(*) FROM scratch", [], |r| r.get(0))
            .unwrap()
    }

    /// Runs [`converge`] over the passes' (log, copied) in `seen`, `few` = 1000: the passes it
    /// ran and whether the last was complete.
    fn converge_over(seen: &[(i64, i64)]) -> (usize, bool) {
        let mut passes = seen.iter().copied();
        converge(1000, || {
            Ok(passes.next().expect("no more passes than given"))
        })
        .unwrap()
    }

    /// The thread passes again while the import commits much during a pass, and stops at the
    /// first pass that found few new frames: the import's catch-up is left a batch's worth.
    #[test]
    fn passes_go_on_until_one_finds_few_new_frames() {
        // Each pass finds what was committed during the one before: 5400, 2700, 1400, 800.
        let shrinking = [
            (10_000, 10_000),
            (15_400, 15_400),
            (18_100, 18_100),
            (19_500, 19_500),
            (20_300, 20_300),
        ];
        assert_eq!(converge_over(&shrinking), (5, true));
        // Nothing committed during the first pass: the second finds nothing and ends.
        assert_eq!(
            converge_over(&[(10_000, 10_000), (10_000, 10_000)]),
            (2, true)
        );
        // A WAL that started over between two passes holds little.
        assert_eq!(converge_over(&[(10_000, 10_000), (300, 300)]), (2, true));
        // A pass held back by a reader does not end the passes, however few frames were new.
        assert_eq!(
            converge_over(&[(10_000, 10_000), (10_500, 9_000), (10_600, 10_600)]),
            (3, true)
        );
    }

    /// An import that commits as fast as the passes copy gets at most [`MAX_PASSES`] of them.
    #[test]
    fn passes_stop_after_the_most_allowed() {
        let endless: Vec<(i64, i64)> = (1..=MAX_PASSES as i64)
            .map(|n| (n * 10_000, n * 10_000))
            .collect();
        assert_eq!(converge_over(&endless), (MAX_PASSES, true));
        let mut held: Vec<(i64, i64)> = endless.clone();
        if let Some(last) = held.last_mut() {
            last.1 -= 1;
        }
        assert_eq!(converge_over(&held), (MAX_PASSES, false));
    }

    /// The import's commits never checkpoint, yet the WAL starts over again and again: it
    /// never holds much more than the hard limit, while ten times that went through it.
    #[test]
    fn the_wal_stays_bounded_while_the_thread_checkpoints() {
        let (_dir, store) = store_with_checkpointer();
        let high_water = fill(&store);

        let frame = PAGE_SIZE as u64 + 24;
        // Each commit appends its rows' pages plus a few pages of the table's tree.
        let per_commit = (ROWS as u64 + 4) * frame;
        let bound = (HARD_LIMIT_FACTOR as u64 * THRESHOLD as u64) * frame + 3 * per_commit;
        let written = (COMMITS * ROWS) as u64 * frame;
        assert!(
            written > 3 * bound,
            "the test writes enough: {written} vs {bound}"
        );
        assert!(
            high_water <= bound,
            "the WAL grew to {high_water} bytes; bounded at {bound}"
        );
        assert_eq!(scratch_rows(&store.conn), COMMITS * ROWS);
    }

    /// Without the thread nothing checkpoints an import connection whose hook is replaced: the
    /// bound above is the thread's doing. (With `wal_autocheckpoint` the WAL would stay small
    /// too, so the control replaces the hook without starting the thread.)
    #[test]
    fn without_the_thread_the_wal_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Store::open(&path).unwrap();
        store.conn.wal_hook(Some(note_frames));
        let high_water = fill(&store);
        let frame = PAGE_SIZE as u64 + 24;
        assert!(
            high_water >= (COMMITS * ROWS) as u64 * frame,
            "the WAL held every commit: {high_water} bytes"
        );
    }

    /// Dropping the store stops the thread and closes its connection: the last connection's
    /// close checkpoints the WAL and removes it, and everything committed is in the database.
    #[test]
    fn dropping_the_store_stops_the_thread() {
        let (_dir, store) = store_with_checkpointer();
        let path = store.path.clone();
        fill(&store);
        drop(store);
        assert!(
            !Path::new(&format!("{}-wal", path.display())).exists(),
            "no connection is left open on the store"
        );
        assert_eq!(
            scratch_rows(&Connection::open(&path).unwrap()),
            COMMITS * ROWS
        );
    }
}
