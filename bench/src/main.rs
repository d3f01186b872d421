//! `icsync-bench`: measures the real synchronizer, collector and agent against the physical
//! limit of the machine, and prints the table the README shows.
//!
//! For each N it fills a source store with N messages of about 2 KiB in ten folders through the
//! public tables (as an application would; the triggers track the changes), measures a raw
//! one-transaction insert of the same rows into a plain table (the limit) and two more reference
//! inserts (`reference`: a commit per batch; the store's own tables), then starts the
//! synchronizer on the source store and the collector on an empty destination and times
//! `agent sync`: the initial one-way sync, no-op sessions, and sessions carrying 300 changes.
//! `bench/run` builds the release binaries and runs this.

mod fill;
mod mail;
mod procs;
mod reference;
mod report;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;

use fill::Filled;
use mail::Ids;
use procs::{Agent, Binaries, Daemon, Sockets, BATCH};
use reference::Reference;
use report::{InitialSync, Measured, Repeated};

#[derive(Parser, Debug)]
#[command(about = "Benchmark the icsync binaries against a raw SQLite insert of the same rows")]
struct Args {
    /// Message counts to measure, comma separated: 10k, 100k, 1M or a plain number.
    #[arg(long, default_value = "100k", value_delimiter = ',', value_parser = parse_count)]
    n: Vec<usize>,
    /// How the source's messages are named, comma separated (one column per form and N):
    /// `exchange` (Exchange's source keys: the store's GUID and a growing counter, so new
    /// messages land at the end of the id index) or `random` (128 random bits: every batch lands
    /// all over it, the worst case).
    #[arg(long, default_value = "exchange", value_delimiter = ',', value_enum)]
    ids: Vec<Ids>,
    /// Fewer repetitions: 3 small sessions instead of 7, and one round of the limit and the
    /// initial sync instead of `--rounds`.
    #[arg(long)]
    quick: bool,
    /// Rounds of the limit and the initial sync, measured in turn (each sync into a new, empty
    /// destination); the table shows their medians and the median of the rounds' ratios.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Where the synchronizer, collector and agent binaries are (default: beside this program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Work in this directory (kept afterwards) instead of a temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Only fill DIR/nN/source.db (needs --dir), e.g. to profile a sync by hand (bench/profile).
    #[arg(long, requires = "dir")]
    fill_only: bool,
}

fn parse_count(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, factor) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1_000),
        Some((i, 'm' | 'M')) => (&t[..i], 1_000_000),
        _ => (t, 1),
    };
    match digits.parse::<usize>() {
        Ok(v) if v > 0 => Ok(v * factor),
        _ => Err(format!(
            "{s:?} is not a message count (expected e.g. 10k, 100k, 1M or 5000)"
        )),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bins = Binaries {
        dir: match &args.bin_dir {
            Some(dir) => dir.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("this program has no directory")?
                .to_path_buf(),
        },
    };
    for name in ["synchronizer", "collector", "agent"] {
        bins.path(name)?;
    }
    let temp;
    let root = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("icsync-bench").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let reps = if args.quick { 3 } else { 7 };
    let rounds = if args.quick { 1 } else { args.rounds as usize };
    let mut columns = Vec::new();
    let cases = args
        .ids
        .iter()
        .flat_map(|&ids| args.n.iter().map(move |&n| (ids, n)));
    for (ids, n) in cases {
        eprintln!(
            "icsync-bench: N = {n}, {} ids: filling the source store …",
            ids.name()
        );
        let dir = match ids {
            Ids::Exchange => root.join(format!("n{n}")),
            Ids::Random => root.join(format!("n{n}-random")),
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        if args.fill_only {
            let (filled, _) = fill::source_store(&dir.join("source.db"), n, ids)?;
            eprintln!(
                "icsync-bench: {} messages filled in {:.2} s",
                filled.messages,
                filled.took.as_secs_f64()
            );
            println!("{}", dir.display());
            continue;
        }
        let keep = args.dir.is_some();
        columns.push(measure(&bins, &dir, n, ids, rounds, reps, keep)?);
        if !keep {
            // The column's source and destination too, for the same reason.
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
    }
    if !columns.is_empty() {
        print!("{}", report::render(&columns, reps, rounds));
    }
    Ok(())
}

/// One column of the table: everything measured at one N with ids of one form. `keep`: leave
/// every store in `dir` (`--dir`), not only the source and the destination.
fn measure(
    bins: &Binaries,
    dir: &Path,
    n: usize,
    ids: Ids,
    rounds: usize,
    reps: usize,
    keep: bool,
) -> Result<Measured> {
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
    let mut peak = (0, 0);
    let mut daemons = None;
    for round in 1..=rounds {
        let limit = reference(Reference::Limit, "raw.db")?;
        // A new, empty destination, new daemons and new agent state: each round is a first sync.
        drop(daemons.take());
        remove_store(&destination)?;
        let state = dir.join("state");
        if state.exists() {
            std::fs::remove_dir_all(&state)
                .with_context(|| format!("cannot clear {}", state.display()))?;
        }
        settle_disk()?;
        let synchronizer = Daemon::start(bins, "synchronizer", &source, &sockets.source_sync, dir)?;
        let collector = Daemon::start(bins, "collector", &destination, &sockets.dest_coll, dir)?;
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
        let rss = (synchronizer.peak_rss()?, collector.peak_rss()?);
        peak = (peak.0.max(rss.0), peak.1.max(rss.1));
        daemons = Some((synchronizer, collector));
    }
    let Some((synchronizer, collector)) = daemons else {
        bail!("no round of the initial sync ran");
    };

    eprintln!("icsync-bench: N = {n}: {reps} no-op and {reps} 300-change sessions …");
    let mut noop = Repeated::default();
    for _ in 0..reps {
        settle_disk()?;
        let run = agent.sync(false)?;
        if run.sent != 0 {
            bail!("a no-op session sent {} items", run.sent);
        }
        noop.push(&run);
    }
    let mut changes = Repeated::default();
    for round in 0..reps {
        fill::three_hundred_changes(&source, &folder_ids, round as u64, ids)?;
        // Like every timed step, the session starts with no dirty pages: not the application's
        // write just made, nor what the initial syncs and the references left to write back.
        settle_disk()?;
        let run = agent.sync(false)?;
        if run.sent != 300 {
            bail!("a 300-change session sent {} items", run.sent);
        }
        changes.push(&run);
    }
    let rss = (synchronizer.peak_rss()?, collector.peak_rss()?);
    peak = (peak.0.max(rss.0), peak.1.max(rss.1));
    synchronizer.stop()?;
    collector.stop()?;
    let (src_count, dst_count) = (
        fill::message_count(&source)?,
        fill::message_count(&destination)?,
    );
    if src_count != dst_count || src_count != n + 100 * reps {
        bail!("after the sessions the source holds {src_count} messages and the destination {dst_count}");
    }
    Ok(Measured {
        n,
        ids,
        app_fill,
        per_batch,
        store_tables,
        initial,
        noop,
        changes,
        rss: peak,
        store_bytes: file_size(&destination),
    })
}

/// Removes a store and its WAL and shared-memory files, if they are there.
fn remove_store(path: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", file.display())),
        }
    }
    Ok(())
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

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
