//! One column of the table: a source store of N messages and a destination, their daemons and
//! an agent, alive from the first initial sync to the last small session.
//!
//! The target compares a session's cost at N with the same session's at the smallest N. On a
//! shared machine whose speed drifts by a third from one quarter of an hour to the next, two
//! medians taken a column apart compare the hours as much as the stores: so the smallest N's
//! column stays alive while the larger ones are measured, and each of their small sessions runs
//! in turn with one on the smallest store ([`Column::small_sessions`]). Both columns' store
//! files are read through once before their small sessions, so both run from the kernel's page
//! cache, as the smallest column's own sessions did right after its initial sync.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::fill::{self, Filled};
use crate::mail::Ids;
use crate::procs::{Agent, AgentRun, Binaries, Daemon, Sockets, BATCH};
use crate::reference::{self, Reference};
use crate::report::{InitialSync, Repeated};

/// A column's stores, daemons and agent.
pub struct Column {
    pub n: usize,
    pub ids: Ids,
    dir: PathBuf,
    source: PathBuf,
    destination: PathBuf,
    folder_ids: Vec<String>,
    agent: Agent,
    synchronizer: Daemon,
    collector: Daemon,
    /// Rounds of 300 changes made in the source so far: the next round's seed, and what the
    /// stores must hold at the end.
    change_rounds: u64,
    /// Peak RSS of the synchronizer and the collector over the initial syncs' daemons.
    rss: (u64, u64),
}

/// What a column measured before its small sessions.
pub struct Initial {
    pub app_fill: Filled,
    pub per_batch: Filled,
    pub store_tables: Filled,
    pub rounds: Vec<InitialSync>,
}

/// A column's small sessions, and those run in turn with them on another column's stores.
pub struct Small {
    pub noop: Repeated,
    pub changes: Repeated,
    pub beside: Option<Beside>,
}

/// The same sessions on the stores of the smallest N, each right after or before its pair.
pub struct Beside {
    pub n: usize,
    pub noop: Repeated,
    pub changes: Repeated,
}

impl Column {
    /// Fills the source, measures the reference inserts, and runs `rounds` rounds of the limit
    /// and the initial sync in turn. `keep`: leave every store in `dir` (`--dir`).
    pub fn start(
        bins: &Binaries,
        dir: &Path,
        n: usize,
        ids: Ids,
        rounds: usize,
        keep: bool,
    ) -> Result<(Column, Initial)> {
        let source = dir.join("source.db");
        let destination = dir.join("destination.db");
        let (app_fill, folder_ids) = fill::source_store(&source, n, ids)?;
        // A reference store is removed once measured, unless `--dir` keeps everything: the next
        // steps (and the next column's) should find the page cache holding their own files, not
        // gigabytes of rows no one reads again.
        let reference = |how: Reference, file: &str| -> Result<Filled> {
            eprintln!("icsync-bench: N = {n}: reference insert {how:?} …");
            let path = dir.join(file);
            remove_store(&path)?;
            settle_disk()?;
            let filled = reference::run(how, &path, n, ids, &folder_ids)?;
            if !keep {
                remove_store(&path)?;
            }
            Ok(filled)
        };
        let per_batch = reference(Reference::PerBatch { batch: BATCH }, "raw-per-batch.db")?;
        let store_tables = reference(Reference::StoreTables { batch: BATCH }, "store-tables.db")?;

        let sockets = Sockets::in_dir(dir);
        let agent = Agent::write_config(bins.clone(), dir, &sockets)?;
        let items = (n + fill::FOLDER_COUNT) as i64;
        // The limit and the initial sync in turn, so that both see the machine as it is at the
        // time: on a shared machine either can vary by a third from one minute to the next.
        let mut initial = Vec::new();
        let mut rss = (0, 0);
        let mut daemons = None;
        for round in 1..=rounds {
            let limit = reference(Reference::Limit, "raw.db")?;
            // A new, empty destination, new daemons and new agent state: each round is a first
            // sync.
            drop(daemons.take());
            remove_store(&destination)?;
            let state = dir.join("state");
            if state.exists() {
                std::fs::remove_dir_all(&state)
                    .with_context(|| format!("cannot clear {}", state.display()))?;
            }
            settle_disk()?;
            let synchronizer =
                Daemon::start(bins, "synchronizer", &source, &sockets.source_sync, dir)?;
            let collector =
                Daemon::start(bins, "collector", &destination, &sockets.dest_coll, dir)?;
            eprintln!("icsync-bench: N = {n}: initial sync, round {round} of {rounds} …");
            let cpu_before = (synchronizer.cpu()?, collector.cpu()?);
            let run = agent.sync(true)?;
            let cpu_after = (synchronizer.cpu()?, collector.cpu()?);
            // What the collector's checkpointer had still to copy when the session ended: the
            // limit is timed until its rows are in the database file, so the sync is too.
            let last_checkpoint = fill::checkpoint_store(&destination)?;
            if run.sent != items {
                bail!(
                    "the initial sync sent {} items where {items} were due",
                    run.sent
                );
            }
            initial.push(InitialSync {
                limit,
                run,
                last_checkpoint,
                cpu: (
                    cpu_after.0.saturating_sub(cpu_before.0),
                    cpu_after.1.saturating_sub(cpu_before.1),
                ),
            });
            rss = max_rss(rss, (synchronizer.peak_rss()?, collector.peak_rss()?));
            daemons = Some((synchronizer, collector));
        }
        let Some((synchronizer, collector)) = daemons else {
            bail!("no round of the initial sync ran");
        };
        let column = Column {
            n,
            ids,
            dir: dir.to_path_buf(),
            source,
            destination,
            folder_ids,
            agent,
            synchronizer,
            collector,
            change_rounds: 0,
            rss,
        };
        let initial = Initial {
            app_fill,
            per_batch,
            store_tables,
            rounds: initial,
        };
        Ok((column, initial))
    }

    /// `reps` no-op sessions, then `reps` sessions carrying 300 changes each. With `beside`,
    /// each is paired with the same session on `beside`'s stores, the two run one right after
    /// the other, in alternating order so that neither always goes first.
    pub fn small_sessions(
        &mut self,
        reps: usize,
        mut beside: Option<&mut Column>,
    ) -> Result<Small> {
        let n = self.n;
        match &beside {
            Some(other) => eprintln!(
                "icsync-bench: N = {n}: {reps} no-op and {reps} 300-change sessions, \
                 each in turn with one at N = {} …",
                other.n
            ),
            None => {
                eprintln!("icsync-bench: N = {n}: {reps} no-op and {reps} 300-change sessions …")
            }
        }
        self.warm_page_cache()?;
        if let Some(other) = beside.as_deref() {
            other.warm_page_cache()?;
        }
        let (noop, noop_beside) = self.in_pairs(reps, beside.as_deref_mut(), Column::noop)?;
        let (changes, changes_beside) =
            self.in_pairs(reps, beside.as_deref_mut(), Column::three_hundred_changes)?;
        Ok(Small {
            noop,
            changes,
            beside: beside.map(|b| Beside {
                n: b.n,
                noop: noop_beside,
                changes: changes_beside,
            }),
        })
    }

    /// `reps` runs of `session` on this column, each in turn with one on `beside` if given: this
    /// column's runs, and `beside`'s.
    fn in_pairs(
        &mut self,
        reps: usize,
        mut beside: Option<&mut Column>,
        session: fn(&mut Column) -> Result<AgentRun>,
    ) -> Result<(Repeated, Repeated)> {
        let (mut own, mut other) = (Repeated::default(), Repeated::default());
        for rep in 0..reps {
            for (is_own, column) in in_turn(rep, &mut *self, beside.as_deref_mut()) {
                let run = session(column)?;
                if is_own { &mut own } else { &mut other }.push(&run);
            }
        }
        Ok((own, other))
    }

    /// Reads the column's store files through once, so that its sessions find them in the
    /// kernel's page cache. The smallest N's files go cold while a larger column writes
    /// gigabytes beside them, and the larger column's own were just written: without this its
    /// paired sessions ran from disk, the first at three times the time of a warm one, and the
    /// pairs' ratio flattered the larger store (`bench/PROFILE.md`, round twenty-three).
    fn warm_page_cache(&self) -> Result<()> {
        for store in [&self.source, &self.destination] {
            for suffix in ["", "-wal"] {
                let path = with_suffix(store, suffix);
                let file = match File::open(&path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot open {}", path.display()))
                    }
                };
                std::io::copy(
                    &mut BufReader::with_capacity(1 << 20, file),
                    &mut std::io::sink(),
                )
                .with_context(|| format!("cannot read {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// One session with nothing to send.
    fn noop(&mut self) -> Result<AgentRun> {
        settle_disk()?;
        let run = self.agent.sync(false)?;
        if run.sent != 0 {
            bail!("a no-op session at N = {} sent {} items", self.n, run.sent);
        }
        Ok(run)
    }

    /// 300 changes made in the source (100 edits, 100 read flags, 100 new messages), then the
    /// session that carries them.
    fn three_hundred_changes(&mut self) -> Result<AgentRun> {
        fill::three_hundred_changes(&self.source, &self.folder_ids, self.change_rounds, self.ids)?;
        self.change_rounds += 1;
        // Like every timed step, the session starts with no dirty pages: not the application's
        // write just made, nor what the initial syncs and the references left to write back.
        settle_disk()?;
        let run = self.agent.sync(false)?;
        if run.sent != 300 {
            bail!(
                "a 300-change session at N = {} sent {} items",
                self.n,
                run.sent
            );
        }
        Ok(run)
    }

    /// Stops the daemons, checks that both stores hold every message, and removes the column's
    /// stores unless `keep`. Returns the daemons' peak RSS over the column and the destination's
    /// size.
    pub fn finish(self, keep: bool) -> Result<((u64, u64), u64)> {
        let rss = max_rss(
            self.rss,
            (self.synchronizer.peak_rss()?, self.collector.peak_rss()?),
        );
        self.synchronizer.stop()?;
        self.collector.stop()?;
        let (src_count, dst_count) = (
            fill::message_count(&self.source)?,
            fill::message_count(&self.destination)?,
        );
        let due = self.n + 100 * self.change_rounds as usize;
        if src_count != dst_count || src_count != due {
            bail!(
                "at N = {}, after the sessions the source holds {src_count} messages and the \
                 destination {dst_count}, where {due} were due",
                self.n
            );
        }
        let store_bytes = std::fs::metadata(&self.destination).map_or(0, |m| m.len());
        if !keep {
            // The column's source and destination too, for the same reason as the references.
            std::fs::remove_dir_all(&self.dir)
                .with_context(|| format!("cannot clear {}", self.dir.display()))?;
        }
        Ok((rss, store_bytes))
    }
}

/// `own` and `beside` in the order of repetition `rep`: `own` first in even ones. Each comes
/// with whether it is `own`.
fn in_turn<T>(rep: usize, own: T, beside: Option<T>) -> Vec<(bool, T)> {
    let mut order = vec![(true, own)];
    if let Some(other) = beside {
        order.push((false, other));
    }
    if rep % 2 == 1 {
        order.reverse();
    }
    order
}

fn max_rss(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (a.0.max(b.0), a.1.max(b.1))
}

/// Removes a store and its WAL and shared-memory files, if they are there.
fn remove_store(path: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let file = with_suffix(path, suffix);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", file.display())),
        }
    }
    Ok(())
}

/// The file next to a store that SQLite names by appending `suffix` to the store's name (its
/// WAL, `-wal`, and shared memory, `-shm`), without going through a lossy display string.
fn with_suffix(store: &Path, suffix: &str) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes every dirty page back to disk (`sync(1)`) before a timed step, so the pages an
/// earlier step left dirty are not written back during this one, at its expense.
fn settle_disk() -> Result<()> {
    let status = std::process::Command::new("sync")
        .status()
        .context("cannot run sync(1)")?;
    if !status.success() {
        bail!("sync(1) failed: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{in_turn, with_suffix};
    use std::path::Path;

    #[test]
    fn a_pair_takes_turns_going_first_and_a_column_alone_goes_alone() {
        let order = |rep| in_turn(rep, "own", Some("beside"));
        assert_eq!(order(0), [(true, "own"), (false, "beside")]);
        assert_eq!(order(1), [(false, "beside"), (true, "own")]);
        assert_eq!(order(2), order(0));
        assert_eq!(in_turn(1, "own", None), [(true, "own")]);
    }

    /// SQLite names a store's WAL by appending to the store's file name, not its extension.
    #[test]
    fn a_stores_wal_is_its_name_with_the_suffix_appended() {
        let store = Path::new("/tmp/n10000-random/source.db");
        assert_eq!(
            with_suffix(store, "-wal"),
            Path::new("/tmp/n10000-random/source.db-wal")
        );
        assert_eq!(with_suffix(store, ""), store);
    }
}
