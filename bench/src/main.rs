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

use procs::{Agent, Binaries, Daemon, Sockets, BATCH};
use reference::Reference;
use report::{Measured, Repeated};

#[derive(Parser, Debug)]
#[command(about = "Benchmark the icsync binaries against a raw SQLite insert of the same rows")]
struct Args {
    /// Message counts to measure, comma separated: 10k, 100k, 1M or a plain number.
    #[arg(long, default_value = "100k", value_delimiter = ',', value_parser = parse_count)]
    n: Vec<usize>,
    /// Fewer repetitions of the small sessions (3 instead of 7).
    #[arg(long)]
    quick: bool,
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
    let mut columns = Vec::new();
    for &n in &args.n {
        eprintln!("icsync-bench: N = {n}: filling the source store …");
        let dir = root.join(format!("n{n}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        if args.fill_only {
            let (filled, _) = fill::source_store(&dir.join("source.db"), n)?;
            eprintln!(
                "icsync-bench: {} messages filled in {:.2} s",
                filled.messages,
                filled.took.as_secs_f64()
            );
            println!("{}", dir.display());
            continue;
        }
        columns.push(measure(&bins, &dir, n, reps)?);
    }
    if !columns.is_empty() {
        print!("{}", report::render(&columns, reps));
    }
    Ok(())
}

/// One column of the table: everything measured at one N.
fn measure(bins: &Binaries, dir: &Path, n: usize, reps: usize) -> Result<Measured> {
    let source = dir.join("source.db");
    let destination = dir.join("destination.db");
    let (app_fill, folder_ids) = fill::source_store(&source, n)?;
    let reference = |how: Reference, file: &str| {
        eprintln!("icsync-bench: N = {n}: reference insert {how:?} …");
        reference::run(how, &dir.join(file), n, &folder_ids)
    };
    let limit = reference(Reference::Limit, "raw.db")?;
    let per_batch = reference(Reference::PerBatch { batch: BATCH }, "raw-per-batch.db")?;
    let store_tables = reference(Reference::StoreTables { batch: BATCH }, "store-tables.db")?;

    let sockets = Sockets::in_dir(dir);
    let synchronizer = Daemon::start(bins, "synchronizer", &source, &sockets.source_sync, dir)?;
    let collector = Daemon::start(bins, "collector", &destination, &sockets.dest_coll, dir)?;
    let agent = Agent::write_config(bins.clone(), dir, &sockets)?;

    eprintln!("icsync-bench: N = {n}: initial sync …");
    let cpu_before = (synchronizer.cpu()?, collector.cpu()?);
    let initial = agent.sync(true)?;
    let cpu_after = (synchronizer.cpu()?, collector.cpu()?);
    let items = (n + fill::FOLDER_COUNT) as i64;
    if initial.sent != items {
        bail!(
            "the initial sync sent {} items where {items} were due",
            initial.sent
        );
    }

    eprintln!("icsync-bench: N = {n}: {reps} no-op and {reps} 300-change sessions …");
    let mut noop = Repeated::default();
    for _ in 0..reps {
        let run = agent.sync(false)?;
        if run.sent != 0 {
            bail!("a no-op session sent {} items", run.sent);
        }
        noop.push(&run);
    }
    let mut changes = Repeated::default();
    for round in 0..reps {
        fill::three_hundred_changes(&source, &folder_ids, round as u64)?;
        let run = agent.sync(false)?;
        if run.sent != 300 {
            bail!("a 300-change session sent {} items", run.sent);
        }
        changes.push(&run);
    }
    let rss = (synchronizer.peak_rss()?, collector.peak_rss()?);
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
        app_fill,
        limit,
        per_batch,
        store_tables,
        initial,
        cpu: (
            cpu_after.0.saturating_sub(cpu_before.0),
            cpu_after.1.saturating_sub(cpu_before.1),
        ),
        noop,
        changes,
        rss,
        store_bytes: file_size(&destination),
    })
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
