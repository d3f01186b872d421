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

mod column;
mod fill;
mod mail;
mod procs;
mod reference;
mod report;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

use column::{Column, Initial, Small};
use mail::Ids;
use procs::Binaries;
use report::Measured;

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
    let keep = args.dir.is_some();
    let mut columns = Vec::new();
    for &ids in &args.ids {
        // Smallest N first: its column stays alive while the larger ones are measured, so that
        // their small sessions run in turn with its own (`column.rs`).
        let mut counts = args.n.clone();
        counts.sort_unstable();
        counts.dedup();
        let mut smallest: Option<(Column, Initial, Small)> = None;
        let mut larger = Vec::new();
        for &n in &counts {
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
            let (mut column, initial) = Column::start(&bins, &dir, n, ids, rounds, keep)?;
            match &mut smallest {
                None => {
                    let small = column.small_sessions(reps, None)?;
                    smallest = Some((column, initial, small));
                }
                Some((first, _, _)) => {
                    let small = column.small_sessions(reps, Some(first))?;
                    let done = column.finish(keep)?;
                    larger.push(Measured::new(n, ids, initial, small, done));
                }
            }
        }
        if let Some((column, initial, small)) = smallest {
            let n = column.n;
            let done = column.finish(keep)?;
            columns.push(Measured::new(n, ids, initial, small, done));
        }
        columns.append(&mut larger);
    }
    if !columns.is_empty() {
        print!("{}", report::render(&columns, reps, rounds));
    }
    Ok(())
}
